"""Reading logged feedback, policies and predictions from Parquet (a file or a directory, hive partitions allowed).

Only the requested columns are read; `iter_batches` streams row groups for callers that aggregate
mergeable sums. Every unreadable input becomes an `InputError` naming the file.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError, Problem


class ParquetFileSource:
    """One Parquet file, read through pyarrow.parquet: the same `schema`, `to_table` and `to_batches`
    as a pyarrow dataset, without importing pyarrow.dataset (which imports pandas: half a second of
    every command's start-up)."""

    def __init__(self, path: str):
        self._file = pq.ParquetFile(path)
        self.schema = self._file.schema_arrow

    def to_table(self, columns: Sequence[str]) -> pa.Table:
        return self._file.read(columns=list(columns), use_threads=True)

    def to_batches(self, columns: Sequence[str], batch_size: int) -> Iterator[pa.RecordBatch]:
        return self._file.iter_batches(batch_size=batch_size, columns=list(columns))

    def count_rows(self) -> int:
        return self._file.metadata.num_rows


def open_dataset(path: str | Path):
    """Open a Parquet file or a directory of them (hive partitions allowed) lazily; raise InputError
    for missing, empty or non-Parquet input. Returns an object with `schema`, `to_table(columns)`,
    `to_batches(columns, batch_size)` and `count_rows()`."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise InputError(Problem(source, "does not exist", fix="check the path"))
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))]
        if not files:
            raise InputError(Problem(source, "is an empty directory: no Parquet files found",
                                     fix="point to a Parquet file or a directory of Parquet files"))
    elif path.stat().st_size == 0:
        raise InputError(Problem(source, "is an empty file, not Parquet", fix="re-export the file"))
    try:
        if path.is_file():
            return ParquetFileSource(source)
        import pyarrow.dataset as ds
        return ds.dataset(source, format="parquet", partitioning="hive")
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise InputError(Problem(source, f"is not a readable Parquet file ({_short(exc)})",
                                 fix="write the file with pyarrow or pandas .to_parquet(), and check it is complete")) from None


def column_names(dataset) -> list[str]:
    return list(dataset.schema.names)


def missing_columns(path: str | Path, dataset, columns: Sequence[str]) -> list[Problem]:
    available = set(dataset.schema.names)
    return [Problem(str(path), "is missing", column=c,
                    fix=f"add the column or map it with the matching option (available: {_list(available)})")
            for c in columns if c not in available]


def read_table(path: str | Path, columns: Sequence[str], optional: Sequence[str] = (),
               dataset=None, problems: list[Problem] | None = None) -> pa.Table:
    """Read `columns` plus those of `optional` that exist. Missing required columns are reported
    together, one problem each: raised at once, or appended to `problems` (the caller then goes on
    checking the columns that exist, so that a user sees every problem of the file at once)."""
    dataset = dataset if dataset is not None else open_dataset(path)
    available = set(dataset.schema.names)
    missing = missing_columns(path, dataset, columns)
    if missing and problems is None:
        raise InputError(missing)
    if problems is not None:
        problems.extend(missing)
    wanted = list(dict.fromkeys([*(c for c in columns if c in available), *(c for c in optional if c in available)]))
    try:
        return dataset.to_table(columns=wanted)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise InputError(Problem(str(path), f"could not be read ({_short(exc)})",
                                 fix="check that every Parquet file is complete and has the same schema")) from None


def iter_batches(path: str | Path, columns: Sequence[str], batch_size: int = 1 << 20) -> Iterator[pa.RecordBatch]:
    """Stream the columns in record batches (row groups), for one-pass aggregation of per-row terms."""
    dataset = open_dataset(path)
    missing = missing_columns(path, dataset, columns)
    if missing:
        raise InputError(missing)
    try:
        yield from dataset.to_batches(columns=list(columns), batch_size=batch_size)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
        raise InputError(Problem(str(path), f"could not be read ({_short(exc)})",
                                 fix="check that every Parquet file is complete")) from None


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _list(names) -> str:
    names = sorted(names)
    return ", ".join(names[:15]) + (", ..." if len(names) > 15 else "")
