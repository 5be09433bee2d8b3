"""Reading logged feedback, policies and predictions: from Parquet (a file or a directory, hive
partitions allowed) or from memory (a pandas DataFrame or a pyarrow Table).

Every source is opened as an object with `schema`, `to_table(columns)`, `to_batches(columns,
batch_size)` and `count_rows()`, so that the loaders and their one validation do not care where the
data came from. Only the requested columns are read; `iter_batches` streams row groups for callers
that aggregate mergeable sums. Every unreadable input becomes an `InputError` naming the source.
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


class TableSource:
    """A pyarrow Table held in memory, with the interface of `ParquetFileSource` (selecting columns
    of a Table is zero-copy)."""

    def __init__(self, table: pa.Table):
        self._table = table
        self.schema = table.schema

    def to_table(self, columns: Sequence[str]) -> pa.Table:
        return self._table.select(list(columns))

    def to_batches(self, columns: Sequence[str], batch_size: int) -> Iterator[pa.RecordBatch]:
        return iter(self._table.select(list(columns)).to_batches(max_chunksize=batch_size))

    def count_rows(self) -> int:
        return self._table.num_rows


def is_path(source) -> bool:
    return isinstance(source, (str, Path))


def source_name(source, name: str | None = None, default: str = "input") -> str:
    """How messages name a source: its path, else `name`, else `default` (e.g. "logs")."""
    if is_path(source):
        return str(source)
    return name or default


def open_dataset(source, name: str | None = None):
    """Open a Parquet file or a directory of them (hive partitions allowed) lazily, or wrap a pandas
    DataFrame or a pyarrow Table; raise InputError for missing, empty, non-Parquet or unconvertible
    input. Returns an object with `schema`, `to_table(columns)`, `to_batches(columns, batch_size)`
    and `count_rows()`. `name` names an in-memory source in messages."""
    if isinstance(source, (TableSource, ParquetFileSource)):
        return source
    if not is_path(source):
        return _checked_names(TableSource(_in_memory_table(source, source_name(source, name))),
                              source_name(source, name))
    path = Path(source)
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
            return _checked_names(ParquetFileSource(source), source)
        import pyarrow.dataset as ds
        _check_partition_keys(path, files)
        return _checked_names(_unified_dataset(ds, source), source)
    except READ_ERRORS as exc:
        if path.is_dir() and "duplicate field names" in str(exc):  # name the file and the column
            for file in sorted(files):
                _checked_names(ParquetFileSource(str(file)), str(file))
        raise InputError(unreadable(source, exc)) from None


def _unified_dataset(ds, source: str):
    """A directory's dataset with the union of its files' columns (pyarrow.unify_schemas over each
    file's schema, the partition keys included): a column only some files have is read, as null where
    a file lacks it, instead of being dropped because the first file lacks it. `read_table` reports a
    required column some files lack, naming them."""
    dataset = ds.dataset(source, format="parquet", partitioning="hive")
    schemas = [dataset.schema, *(fragment.physical_schema for fragment in dataset.get_fragments())]
    unified = pa.unify_schemas(schemas)
    if unified.equals(dataset.schema):
        return dataset
    return ds.dataset(source, format="parquet", partitioning="hive", schema=unified)


def missing_in_files(source: str | Path, dataset, columns: Sequence[str]) -> list[Problem]:
    """For a directory dataset: one problem per required column of the (unified) schema that some of
    its files lack, naming those files (a file within a `key=value` folder has the column `key`)."""
    if not hasattr(dataset, "get_fragments"):
        return []
    import pyarrow.dataset as ds
    wanted = [c for c in dict.fromkeys(columns) if c in dataset.schema.names]
    lacking: dict[str, list[str]] = {c: [] for c in wanted}
    n_files = 0
    for fragment in dataset.get_fragments():
        n_files += 1
        names = set(fragment.physical_schema.names) | set(ds.get_partition_keys(fragment.partition_expression))
        for c in wanted:
            if c not in names:
                lacking[c].append(fragment.path)
    problems = []
    for c, files in lacking.items():
        if files:
            shown = ", ".join(sorted(files)[:5]) + (", ..." if len(files) > 5 else "")
            problems.append(Problem(str(source), f"is missing from {len(files)} of its {n_files} files: {shown}",
                                    column=c, fix="add the column to every file, or remove the files that lack it"))
    return problems


def _checked_names(dataset, source: str):
    """The opened source, once each of its column names is unique."""
    from .validation import check_column_names
    problems = check_column_names(dataset.schema.names, source)
    if problems:
        raise InputError(problems)
    return dataset


def _check_partition_keys(root: Path, files: Sequence[Path]) -> None:
    """Hive partition folders (`key=value`) whose key is also a column of a file below them are an error
    (the folder's value would replace the column's): the keys of `root`'s folders against the columns
    of every file under such a folder (only their footers are read)."""
    from .validation import check_partition_keys
    keys_of = {f: [part.split("=", 1)[0] for part in f.relative_to(root).parts[:-1] if "=" in part] for f in files}
    keys = [k for ks in keys_of.values() for k in ks]
    if not keys:
        return
    columns = {str(f): pq.read_schema(f).names for f, ks in keys_of.items() if ks}
    problems = check_partition_keys(keys, columns, str(root))
    if problems:
        raise InputError(problems)


def _in_memory_table(data, source: str) -> pa.Table:
    """A pyarrow Table of a DataFrame or Table. pandas conversion (NaN and nullable dtypes become
    nulls, category becomes dictionary, object strings become string) is pyarrow's; a column it
    cannot convert (e.g. mixed strings and numbers) is reported by name, every such column at once."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    import sys
    pd = sys.modules.get("pandas")  # a DataFrame means pandas is imported already: never import it here
    if pd is None or not isinstance(data, pd.DataFrame):
        raise InputError(Problem(source, f"is a {type(data).__name__}, not a Parquet path, a pandas DataFrame "
                                 "or a pyarrow Table", fix="pass a path, a DataFrame or a pyarrow Table"))
    from .validation import check_column_names
    repeated = check_column_names([str(c) for c in data.columns], source)
    if repeated:
        raise InputError(repeated)
    try:
        return pa.Table.from_pandas(data, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError, TypeError):
        pass
    problems = []
    for column in data.columns:
        try:
            pa.Table.from_pandas(data[[column]], preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError, TypeError) as exc:
            problems.append(Problem(source, f"cannot be converted to Arrow ({short_reason(exc)})", column=str(column),
                                    fix="give the column one type (numbers, strings or timestamps)"))
    if not problems:  # e.g. duplicated column names: no single column is at fault
        problems.append(Problem(source, "cannot be converted to Arrow",
                                fix="give the columns distinct string names and one type each"))
    raise InputError(problems)


def column_names(dataset) -> list[str]:
    return list(dataset.schema.names)


def missing_columns(source: str | Path, dataset, columns: Sequence[str]) -> list[Problem]:
    """One problem per missing column; `source` is the path or the name of an in-memory source."""
    available = set(dataset.schema.names)
    return [Problem(str(source), "is missing", column=c,
                    fix=f"add the column or map it with the matching option (available: {_list(available)})")
            for c in columns if c not in available]


def read_table(path, columns: Sequence[str], optional: Sequence[str] = (),
               dataset=None, problems: list[Problem] | None = None) -> pa.Table:
    """Read `columns` plus those of `optional` that exist. Missing required columns are reported
    together, one problem each: raised at once, or appended to `problems` (the caller then goes on
    checking the columns that exist, so that a user sees every problem of the file at once).
    `path` is the source (a path, or with `dataset` given, the name messages use)."""
    label = source_name(path)
    dataset = dataset if dataset is not None else open_dataset(path)
    available = set(dataset.schema.names)
    missing = missing_columns(label, dataset, columns) + missing_in_files(label, dataset, columns)
    if missing and problems is None:
        raise InputError(missing)
    if problems is not None:
        problems.extend(missing)
    wanted = list(dict.fromkeys([*(c for c in columns if c in available), *(c for c in optional if c in available)]))
    try:
        return dataset.to_table(columns=wanted)
    except READ_ERRORS as exc:
        raise InputError(Problem(label, f"could not be read ({short_reason(exc)})",
                                 fix="check that every Parquet file is complete and has the same schema")) from None


def iter_batches(path, columns: Sequence[str], batch_size: int = 1 << 20) -> Iterator[pa.RecordBatch]:
    """Stream the columns in record batches (row groups), for one-pass aggregation of per-row terms."""
    label = source_name(path)
    dataset = open_dataset(path)
    missing = missing_columns(label, dataset, columns) + missing_in_files(label, dataset, columns)
    if missing:
        raise InputError(missing)
    try:
        yield from dataset.to_batches(columns=list(columns), batch_size=batch_size)
    except READ_ERRORS as exc:
        raise InputError(Problem(label, f"could not be read ({short_reason(exc)})",
                                 fix="check that every Parquet file is complete")) from None


#: what pyarrow raises on a file that is not (complete, readable) Parquet
READ_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, pa.ArrowIOError, OSError)
_UNREADABLE_FIX = "write the file with pyarrow or pandas .to_parquet(), and check it is complete"


def short_reason(exc: Exception) -> str:
    """An exception's first line (at most 300 characters), for the parenthesis of a message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def unreadable(path: str, exc: Exception) -> Problem:
    """The one message for a file that cannot be read as Parquet."""
    return Problem(path, f"is not a readable Parquet file ({short_reason(exc)})", fix=_UNREADABLE_FIX)


def parquet_files(path: Path) -> list[Path]:
    """A source's files as pyarrow's dataset lists them: hidden and `_` files and folders skipped,
    sorted by path (the order every streamed reader follows)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))


def _list(names) -> str:
    names = sorted(names)
    return ", ".join(names[:15]) + (", ..." if len(names) > 15 else "")
