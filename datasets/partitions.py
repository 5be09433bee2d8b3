"""Partitions of a large evaluation: sets of whole decisions that fit a memory budget (issue 14).

`plan_stream` reads only Parquet footers and cuts the logs (a file or a directory of files, hive
partitions allowed), each long-format policy file and each q-hat file into `Partition`s: small,
picklable descriptions (paths, row-group indices, decision-id ranges, bucket files; no data) that
`read_partition` turns into Arrow tables, in this process or on a Dask worker. A partition holds a
decision's log rows, policy rows and q-hat rows together, so that every partition is loaded and
validated by the ordinary loaders on its own, and reduced to mergeable sums.

Strategies (`StreamPlan.strategy`, with `StreamPlan.reason` saying why it was chosen):

- "row-groups": no per-decision file is joined (compact `pi_NAME` / `q_hat` columns, or only
  context-free policies): a partition is a run of consecutive row groups of the logs, in a fixed
  order (files by sorted path, then row-group order). Boundary rule, applied when the columns read
  include decision_id: a run of rows with one decision id that crosses a partition boundary belongs to
  the partition holding its first row (`read_partition` drops a partition's leading rows that continue
  the previous row group's last decision, and appends the rows of the next row groups, up to
  `FOLLOW_UNITS` of them, that continue its own last decision). Decisions whose rows are not
  consecutive are split like any rows (every per-row quantity is per row).
- "sorted-ranges": the logs and every joined file are sorted by decision_id, as seen from the
  min/max statistics of their row groups (each row group's min <= max <= the next one's min; no
  nulls; no data read). A partition is a half-open decision-id range [lo, hi) (None: unbounded; the
  ranges cover every id, so rows of a joined file for decisions absent from the logs are still read
  and reported by the loaders); each file's row groups overlapping the range are read and only the
  row groups on the range's edges are filtered (pyarrow.compute).
- "buckets": otherwise. DuckDB (memory_limit = `PARTITION_SHARE` x max_memory, at least 64 MiB;
  2 threads; spilling to a folder inside the plan's tempdir) writes the logs (the planned columns)
  and every joined file hash-partitioned by decision id into B buckets of Parquet under a temporary
  directory (`StreamPlan.tempdir`, removed by `close()`); B = the estimated working set of all the
  logs x `BUCKET_SLACK` / the partition budget. A partition is a bucket. Each bucketed row carries its original position (file index,
  row number), so `read_partition` returns a bucket's rows in their original order and every run
  gives the same numbers. With B = 1 nothing is written: the files are read whole.

Why DuckDB and not Arrow's dataset/Acero: partitioning data larger than memory needs an engine that
bounds its own memory and spills. DuckDB's buffer manager keeps a query under `memory_limit` and
spills to `temp_directory`; its `COPY ... PARTITION_BY` writes every bucket in one streaming pass
per input; and it is already a dependency (`datasets.events` uses it the same way). Acero has no
memory limit, no spilling sort or partitioned write, and `pyarrow.dataset.write_dataset` keeps a
buffered writer per open bucket without a memory bound; it would also import pandas on every worker.

Memory model: one partition's working set is estimated per log row as
`WORKING_SET_FACTOR` x (Arrow bytes of the log columns read + Arrow bytes of the joined rows per log
row) + `per_row_bytes` (the per-row float64 arrays the estimators create: 8 bytes x the number of
such arrays, default `DEFAULT_PER_ROW_BYTES`). Arrow bytes are the types' widths; a string column
counts its offsets, its mean length (from statistics / uncompressed sizes) and `STRING_OBJECT_BYTES`
for the Python object it becomes in a NumPy key array. Partitions hold at most `PARTITION_SHARE` of
`max_memory` (the rest: the interpreter and libraries, the merged sums, the next read), and never
fewer than one row group (a row group larger than the budget is one partition).
"""
from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError, Problem
from .loading import READ_ERRORS, parquet_files, short_reason, unreadable
from .schema import LogSchema, PolicySchema

#: share of max_memory one partition's working set may use
PARTITION_SHARE = 0.5
#: multiplier on the Arrow bytes read: the loaders hold the Arrow tables and their NumPy arrays
WORKING_SET_FACTOR = 2.0
#: default per-row bytes of the estimators' own arrays: 16 float64 arrays per log row
DEFAULT_PER_ROW_BYTES = 8 * 16
#: a string key becomes a Python str in an object array (to_key): about this many bytes each
STRING_OBJECT_BYTES = 64
#: default_max_memory() is this fraction of the available memory
DEFAULT_MEMORY_FRACTION = 0.25
#: the smallest --max-memory accepted
MIN_MAX_MEMORY = 16 * 2**20
#: the row-groups boundary rule looks this many row groups ahead for the rows of a decision
FOLLOW_UNITS = 8
#: bucket count slack for hash imbalance
BUCKET_SLACK = 1.25
#: at most this many buckets (files per bucket and per input are small beyond it)
MAX_BUCKETS = 4096
#: column of bucketed files holding a row's original position (file index << 40 | row number)
ORDER_COLUMN = "__livegate_order"
_BUCKET_COLUMN = "__livegate_bucket"

STRATEGIES = ("row-groups", "sorted-ranges", "buckets")


# ----------------------------------------------------------------------------------------------
# memory sizes

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(text: str | int | float, option: str = "--max-memory") -> int:
    """A memory size as bytes: '256MB', '2GiB', '1.5G', '512MiB' or a number of bytes. Decimal units
    (KB, MB, GB, TB; K, M, G, T) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) of 1024. At least
    `MIN_MAX_MEMORY`; a problem names `option`."""
    if isinstance(text, bool):
        raise InputError(Problem(option, f"cannot read the memory size '{text}'", fix="write e.g. 256MB or 2GiB"))
    if isinstance(text, (int, float)):
        size = float(text)
    else:
        match = _SIZE.match(str(text))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise InputError(Problem(option, f"cannot read the memory size '{text}'",
                                     fix="write a number with a unit: 512MB, 2GB, 2GiB (or a number of bytes)"))
        size = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(size) or size < MIN_MAX_MEMORY:
        raise InputError(Problem(option, f"the memory size '{text}' is too small",
                                 fix=f"give at least {MIN_MAX_MEMORY // 2**20}MiB"))
    return int(size)


def available_memory() -> int | None:
    """Bytes available to this process: MemAvailable of /proc/meminfo (else free physical pages),
    capped by the cgroup (container) limit minus its usage when there is one. None if unknown."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 2**60:
                free = int(limit) - int(Path(usage_file).read_text().strip())
                available = free if available is None else min(available, free)
            break
        except (OSError, ValueError):
            continue
    return available if available is None or available > 0 else None


def default_max_memory() -> int:
    """`DEFAULT_MEMORY_FRACTION` (1/4) of the available memory (`available_memory`), at least
    `MIN_MAX_MEMORY`; 1 GiB when the available memory cannot be read."""
    available = available_memory()
    if available is None:
        return 2**30
    return max(MIN_MAX_MEMORY, int(available * DEFAULT_MEMORY_FRACTION))


# ----------------------------------------------------------------------------------------------
# partitions (picklable descriptions, no data)

@dataclass(frozen=True)
class FileSlice:
    """Row groups of one Parquet file; `hive` holds the key=value folders above it (columns of it);
    `filter` says whether rows must be filtered to the partition's decision-id range."""

    path: str
    row_groups: tuple[int, ...]
    hive: tuple[tuple[str, str], ...] = ()
    filter: bool = False


@dataclass(frozen=True, eq=False)
class SourcePart:
    """One input's share of a partition: `label` names the input in messages (the user's path),
    `slices` are read in order; `key` is its decision-id column (None: a context-free policy, read
    whole in every partition); `columns` its columns to read (None for the logs: the caller's);
    `schema` the types of its columns (a directory's files are unified to them); `ordered` says the
    slices are bucket files whose rows are sorted back by `ORDER_COLUMN`; `origin` the file whose
    schema metadata the tables carry (a joined file's first file; e.g. a learned policy's record)."""

    label: str
    slices: tuple[FileSlice, ...]
    schema: pa.Schema
    key: str | None = None
    columns: tuple[str, ...] | None = None
    ordered: bool = False
    origin: str | None = None

    def describe(self) -> str:
        files: dict[str, list[int]] = {}
        for s in self.slices:
            files.setdefault(s.path, []).extend(s.row_groups)
        if not files:
            return f"{self.label} (no rows)"
        shown = [f"{path} row group{'s' if len(rgs) > 1 else ''} {_ranges(rgs)}"
                 for path, rgs in list(files.items())[:3]]
        more = f" and {len(files) - 3} more files" if len(files) > 3 else ""
        return ", ".join(shown) + more


@dataclass(frozen=True, eq=False)
class Partition:
    """A self-contained set of whole decisions: its log rows and the rows of every joined file for
    the same decisions. Picklable and small: paths, row-group indices, an id range, bucket files."""

    index: int
    strategy: str
    logs: SourcePart
    policies: tuple[tuple[str, SourcePart | None], ...] = ()
    q_hat: tuple[tuple[str, SourcePart], ...] = ()
    #: the logs' decision-id column (the boundary rule and id ranges use it), None without one
    decision_id: str | None = None
    #: sorted-ranges: lo <= decision id < hi (None: unbounded)
    id_range: tuple | None = None
    #: buckets: (bucket, number of buckets)
    bucket: tuple[int, int] | None = None
    #: row-groups boundary rule: the row group before this partition and the ones after it
    previous: FileSlice | None = None
    following: tuple[FileSlice, ...] = ()
    #: log rows of its row groups / bucket files (before the boundary rule and range filters)
    n_rows: int = 0

    def describe(self) -> str:
        """The file(s) it reads, for error messages."""
        where = f"partition {self.index}"
        if self.id_range is not None:
            lo, hi = self.id_range
            where += f" (decisions {'' if lo is None else repr(lo)}..{'' if hi is None else repr(hi)})"
        if self.bucket is not None:
            where += f" (bucket {self.bucket[0]} of {self.bucket[1]} by decision id hash, of {self.logs.label})"
            return where
        return f"{where}: {self.logs.describe()}"

    def files(self) -> list[str]:
        """Every file it reads."""
        parts = [self.logs, *(p for _, p in self.policies if p is not None), *(p for _, p in self.q_hat)]
        return list(dict.fromkeys(s.path for p in parts for s in p.slices))


@dataclass
class PartitionTables:
    logs: pa.Table
    policies: dict[str, pa.Table | None]
    q_hat: dict[str, pa.Table]
    source: str                   # = partition.describe()


@dataclass
class StreamPlan:
    partitions: list[Partition]
    n_rows: int                   # log rows in all
    tempdir: str | None           # DuckDB buckets (removed by close()); None when none were needed
    strategy: str = "row-groups"  # one of STRATEGIES
    reason: str = ""              # why the strategy was chosen
    max_memory: int = 0
    bytes_per_row: float = 0.0    # estimated working set per log row
    rows_per_partition: int = 0   # the budget's rows (a row group larger than it is one partition)
    columns: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        if self.tempdir is not None:
            shutil.rmtree(self.tempdir, ignore_errors=True)
            self.tempdir = None

    def __enter__(self) -> StreamPlan:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def to_dict(self) -> dict:
        """For the result document's engine section."""
        return {"strategy": self.strategy, "reason": self.reason, "partitions": len(self.partitions),
                "rows": self.n_rows, "max_memory_bytes": self.max_memory,
                "bytes_per_row_estimate": round(self.bytes_per_row, 1),
                "rows_per_partition_budget": self.rows_per_partition,
                **({"buckets": self.partitions[0].bucket[1]} if self.partitions and self.partitions[0].bucket else {}),
                "notes": list(self.notes)}


# ----------------------------------------------------------------------------------------------
# footers

@dataclass
class _File:
    path: str
    metadata: pq.FileMetaData
    schema: pa.Schema              # the file's Arrow schema plus its hive keys
    hive: tuple[tuple[str, str], ...]

    def column_index(self, name: str) -> int | None:
        s = self.metadata.schema
        for i in range(self.metadata.num_columns):
            if s.column(i).path == name:
                return i
        return None


@dataclass
class _Unit:
    """One non-empty row group of an input."""

    file: int
    row_group: int
    rows: int
    lo: object = None
    hi: object = None
    stats: bool = False            # min/max known and no nulls


@dataclass
class _Input:
    label: str                     # the user's path
    files: list[_File]
    schema: pa.Schema              # unified over files, hive keys included
    units: list[_Unit] = field(default_factory=list)
    key: str | None = None
    columns: tuple[str, ...] = ()

    @property
    def n_rows(self) -> int:
        return sum(u.rows for u in self.units)


def open_parquet_input(source, label: str) -> _Input:
    """Every footer of a source (a file or a directory), each unreadable file named."""
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(Problem(label, f"is a {type(source).__name__}: streaming evaluation reads Parquet paths",
                                 fix="pass a path, or drop --max-memory/--scheduler to evaluate in memory"))
    path = Path(source)
    if not path.exists():
        raise InputError(Problem(str(path), "does not exist", fix="check the path"))
    paths = parquet_files(path)
    if not paths:
        raise InputError(Problem(str(path), "is an empty directory: no Parquet files found",
                                 fix="point to a Parquet file or a directory of Parquet files"))
    files, problems = [], []
    for p in paths:
        hive = tuple(tuple(part.split("=", 1)) for part in p.relative_to(path).parts[:-1] if "=" in part) \
            if path.is_dir() else ()
        try:
            if p.stat().st_size == 0:
                problems.append(Problem(str(p), "is an empty file, not Parquet", fix="re-export the file"))
                continue
            metadata = pq.read_metadata(p)
            schema = metadata.schema.to_arrow_schema()
        except READ_ERRORS as exc:
            problems.append(unreadable(str(p), exc))
            continue
        files.append(_File(str(p.absolute()), metadata, schema, hive))   # absolute: workers read it
    if problems:
        raise InputError(problems)
    from .validation import check_column_names
    for f in files:
        problems += check_column_names(f.schema.names, f.path)
    if problems:
        raise InputError(problems)
    keys = hive_key_types(files)
    if keys:
        from .loading import _check_partition_keys
        _check_partition_keys(path, paths)
    try:
        unified = pa.unify_schemas([pa.schema([fld.remove_metadata() for fld in f.schema])
                                    .with_metadata(f.schema.metadata) for f in files])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputError(Problem(str(path), f"has files whose columns disagree in type ({short_reason(exc)})",
                                 fix="write every file with the same column types")) from None
    for name, type_ in keys.items():
        if name not in unified.names:
            unified = unified.append(pa.field(name, type_))
    return _Input(str(path), files, unified)


def hive_key_types(files: list[_File]) -> dict[str, pa.DataType]:
    """The hive keys' types as pyarrow's dataset infers them: int32 when every value is an integer, else string."""
    values: dict[str, list[str]] = {}
    for f in files:
        for k, v in f.hive:
            values.setdefault(k, []).append(v)
    types = {}
    for k, vs in values.items():
        integers = all(re.fullmatch(r"-?\d+", v) and -2**31 <= int(v) < 2**31 for v in vs)
        types[k] = pa.int32() if integers else pa.string()
    return types


def _units(inp: _Input, key: str | None) -> None:
    """The input's non-empty row groups, with the key's min/max when known (and no nulls)."""
    units = []
    for i, f in enumerate(inp.files):
        column = f.column_index(key) if key is not None else None
        for rg in range(f.metadata.num_row_groups):
            meta = f.metadata.row_group(rg)
            if meta.num_rows == 0:
                continue
            unit = _Unit(i, rg, meta.num_rows)
            if column is not None:
                stats = meta.column(column).statistics
                if stats is not None and stats.has_min_max and stats.has_null_count and stats.null_count == 0:
                    try:
                        unit.lo, unit.hi, unit.stats = stats.min, stats.max, True
                    except (pa.ArrowNotImplementedError, ValueError):  # a type without a Python value
                        pass
            units.append(unit)
    inp.units = units


def _missing(inp: _Input, columns: Sequence[str]) -> list[Problem]:
    """Missing columns, named as `loading.read_table` names them (in every file, or in some of them)."""
    problems = []
    available = set(inp.schema.names)
    for c in dict.fromkeys(columns):
        if c not in available:
            names = sorted(available)
            problems.append(Problem(inp.label, "is missing", column=c,
                                    fix="add the column or map it with the matching option (available: "
                                        + ", ".join(names[:15]) + (", ..." if len(names) > 15 else "") + ")"))
            continue
        lacking = [f.path for f in inp.files if c not in f.schema.names and c not in dict(f.hive)]
        if lacking and len(inp.files) > 1:
            shown = ", ".join(sorted(lacking)[:5]) + (", ..." if len(lacking) > 5 else "")
            problems.append(Problem(inp.label, f"is missing from {len(lacking)} of its {len(inp.files)} files: {shown}",
                                    column=c, fix="add the column to every file, or remove the files that lack it"))
    return problems


# ----------------------------------------------------------------------------------------------
# sizes

def _type_bytes(type_: pa.DataType, mean_length: float) -> float:
    if pa.types.is_dictionary(type_):
        return _type_bytes(type_.value_type, mean_length)
    if pa.types.is_boolean(type_):
        return 1.0   # as float64 later: the working-set factor covers it
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_binary(type_) \
            or pa.types.is_large_binary(type_):
        offsets = 8 if pa.types.is_large_string(type_) or pa.types.is_large_binary(type_) else 4
        return offsets + mean_length + STRING_OBJECT_BYTES
    try:
        return type_.bit_width / 8 + 0.125
    except ValueError:           # nested and other variable-width types
        return 8 + mean_length


def _column_bytes(inp: _Input, column: str) -> float:
    """Estimated Arrow bytes per row of a column (plus a string's Python object)."""
    type_ = inp.schema.field(column).type
    length, rows = 0.0, 0
    if _variable(type_):
        for f in inp.files:
            i = f.column_index(column)
            if i is None:
                continue
            for rg in range(f.metadata.num_row_groups):
                meta = f.metadata.row_group(rg)
                chunk = meta.column(i)
                guess = chunk.total_uncompressed_size / max(meta.num_rows, 1) - 4
                stats = chunk.statistics
                if stats is not None and stats.has_min_max:
                    try:
                        guess = max(guess, (len(stats.min) + len(stats.max)) / 2)
                    except TypeError:
                        pass
                length += max(guess, 0.0) * meta.num_rows
                rows += meta.num_rows
    return _type_bytes(type_, length / rows if rows else 16.0)


def _variable(type_: pa.DataType) -> bool:
    if pa.types.is_dictionary(type_):
        return True
    try:
        type_.bit_width
        return False
    except ValueError:
        return True


def _row_bytes(inp: _Input, columns: Sequence[str]) -> float:
    return sum(_column_bytes(inp, c) for c in dict.fromkeys(columns) if c in inp.schema.names)


# ----------------------------------------------------------------------------------------------
# planning

def plan_stream(logs, policies: Mapping[str, str | None], q_hat: Mapping[str, str], *,
                schema: LogSchema, columns: Sequence[str], max_memory: int,
                per_row_bytes: int = DEFAULT_PER_ROW_BYTES, tempdir: str | None = None,
                progress=None) -> StreamPlan:
    """Cut the logs and the joined files into partitions of whole decisions that fit `max_memory`.

    `logs` is a Parquet file or directory; `policies` maps a name to a long-format Parquet path, or to
    None for the compact pi_NAME column; `q_hat` maps a metric to a Parquet path of predictions.
    `columns` are the log columns any pass will read (with the "buckets" strategy only these are
    written to the buckets); `per_row_bytes` the estimators' own bytes per log row; `tempdir` the
    folder under which the buckets' temporary directory is made (default: the system's). Only
    footers are read, except by the "buckets" strategy, which writes the buckets (DuckDB).
    Raises InputError for a missing or unreadable file (named), a missing column, or empty logs."""
    say = progress or (lambda message: None)
    columns = tuple(dict.fromkeys(columns))
    max_memory = int(max_memory)
    if max_memory <= 0:
        raise InputError(Problem("--max-memory", "must be positive", fix="give e.g. 256MB"))
    say("planning partitions")
    log_input = open_parquet_input(logs, str(logs) if isinstance(logs, (str, os.PathLike)) else "logs")
    problems = _missing(log_input, columns)
    joined: list[tuple[str, str, _Input]] = []          # (role, name, input)
    for name, source in policies.items():
        joined.append(("policy", name, None if source is None else open_parquet_input(
            source, str(source) if isinstance(source, (str, os.PathLike)) else f"policy {name}")))
    for metric, source in q_hat.items():
        joined.append(("q_hat", metric, open_parquet_input(source, str(source) if isinstance(source, (str, os.PathLike))
                                                    else f"predictions {metric}")))
    keyed = []
    for role, name, inp in joined:
        if inp is None:
            continue
        available = inp.schema.names
        value = PolicySchema.prob if role == "policy" else "q_hat"
        key = schema.keyed_column("decision_id", available)
        action = schema.keyed_column("action", available)
        position = schema.keyed_column("position", available)
        context_free = role == "policy" and key not in available and action in available and value in available
        required = [action, value] if context_free else [key, action, value]
        problems += _missing(inp, required)
        inp.key = None if context_free else key
        inp.columns = tuple(c for c in (*required, position) if c in available)
        if inp.key is not None:
            keyed.append(inp)
    if keyed and schema.decision_id not in log_input.schema.names:
        problems.append(Problem(log_input.label, "is missing", column=schema.decision_id,
                                fix="policies and predictions are joined to the logs by decision_id; "
                                    "add it to the logs"))
    if problems:
        raise InputError(problems)

    decision_id = schema.decision_id if schema.decision_id in log_input.schema.names else None
    _units(log_input, decision_id)
    if log_input.n_rows == 0:
        raise InputError(Problem(log_input.label, "has no rows",
                                 fix="check the export; an empty table cannot be evaluated"))
    for inp in keyed:
        _units(inp, inp.key)
    broadcast = [inp for _, _, inp in joined if inp is not None and inp.key is None]
    for inp in broadcast:
        _units(inp, None)

    n = log_input.n_rows
    read_columns = tuple(dict.fromkeys(c for c in (*columns, *([decision_id] if keyed else [])) if c is not None))
    log_bytes = _row_bytes(log_input, read_columns)
    joined_bytes = sum(_row_bytes(inp, inp.columns) * inp.n_rows for inp in keyed) / n
    fixed = WORKING_SET_FACTOR * sum(_row_bytes(inp, inp.columns) * inp.n_rows for inp in broadcast)
    bytes_per_row = WORKING_SET_FACTOR * (log_bytes + joined_bytes) + max(0, int(per_row_bytes))
    budget = max(1.0, max_memory * PARTITION_SHARE - fixed)
    rows_per_partition = max(1, int(budget // bytes_per_row))

    plan = StreamPlan(partitions=[], n_rows=n, tempdir=None, max_memory=max_memory, bytes_per_row=bytes_per_row,
                      rows_per_partition=rows_per_partition, columns=read_columns)
    if fixed > max_memory * PARTITION_SHARE:
        plan.notes.append("the context-free policies alone exceed the partition budget")
    joined_parts = _joined_parts(joined)
    if not keyed:
        plan.strategy = "row-groups"
        plan.reason = ("no policy or q-hat file is joined by decision: partitions are runs of consecutive row "
                       "groups of the logs") if not broadcast else \
            ("only context-free policies are joined (read whole by every partition): partitions are runs of "
             "consecutive row groups of the logs")
        plan.partitions = _row_group_partitions(log_input, rows_per_partition, decision_id, joined, joined_parts)
    else:
        unsorted = _why_unsorted(log_input, keyed)
        if unsorted is None:
            plan.strategy = "sorted-ranges"
            plan.reason = ("the logs and every joined file are sorted by decision id (row-group statistics): "
                           "partitions are decision-id ranges")
            plan.partitions = _range_partitions(log_input, rows_per_partition, decision_id, joined, joined_parts)
            plan.notes += _amplification(plan.partitions, joined)
        else:
            plan.strategy = "buckets"
            total = n * bytes_per_row * BUCKET_SLACK
            buckets = min(MAX_BUCKETS, max(1, math.ceil(total / budget)))
            if buckets == 1:
                plan.reason = f"{unsorted}; everything fits one partition: the files are read whole"
                plan.partitions = [_whole_partition(log_input, decision_id, joined, joined_parts)]
            else:
                plan.reason = (f"{unsorted}: DuckDB hash-partitions the logs and the joined files by decision id "
                               f"into {buckets} buckets")
                plan.tempdir = os.path.abspath(tempfile.mkdtemp(prefix="livegate-buckets-", dir=tempdir))
                try:
                    plan.partitions = _bucket_partitions(log_input, read_columns, decision_id, joined, joined_parts,
                                                         buckets, plan.tempdir, max_memory, say)
                except BaseException:
                    plan.close()
                    raise
    say(f"{len(plan.partitions)} partitions ({plan.strategy})")
    return plan


def _slice(inp: _Input, unit: _Unit, filter_: bool = False) -> FileSlice:
    f = inp.files[unit.file]
    return FileSlice(f.path, (unit.row_group,), f.hive, filter_)


def _slices(inp: _Input, units: Sequence[_Unit], filters: Sequence[bool] | None = None) -> tuple[FileSlice, ...]:
    """Consecutive row groups of one file (with the same filter flag) as one slice."""
    out: list[FileSlice] = []
    for i, u in enumerate(units):
        flag = bool(filters[i]) if filters is not None else False
        f = inp.files[u.file]
        if out and out[-1].path == f.path and out[-1].filter == flag:
            out[-1] = FileSlice(f.path, (*out[-1].row_groups, u.row_group), f.hive, flag)
        else:
            out.append(FileSlice(f.path, (u.row_group,), f.hive, flag))
    return tuple(out)


def _part(inp: _Input, slices: tuple[FileSlice, ...], columns: tuple[str, ...] | None = None,
          ordered: bool = False) -> SourcePart:
    names = columns if columns is not None else inp.schema.names
    fields = [inp.schema.field(c) for c in dict.fromkeys(names) if c in inp.schema.names]
    # no schema metadata travels with a partition (a learned policy's can be large): a joined file's
    # tables get their file's metadata when read (`origin`), as the loaders read it from the file
    origin = inp.files[0].path if columns is not None and inp.schema.metadata else None
    return SourcePart(inp.label, slices, pa.schema(fields), key=inp.key, columns=columns, ordered=ordered,
                      origin=origin)


def _joined_parts(joined) -> dict:
    """Context-free policies: read whole by every partition."""
    return {(role, name): _part(inp, _slices(inp, inp.units), inp.columns)
            for role, name, inp in joined if inp is not None and inp.key is None}


def _groups(units: Sequence[_Unit], rows: int) -> list[list[int]]:
    """Consecutive units in runs of at most `rows` rows (at least one unit each)."""
    groups: list[list[int]] = []
    total = 0
    for i, u in enumerate(units):
        if groups and total + u.rows <= rows:
            groups[-1].append(i)
            total += u.rows
        else:
            groups.append([i])
            total = u.rows
    return groups


def _assemble(joined, joined_parts, keyed_parts) -> tuple[tuple, tuple]:
    """(policies, q_hat) of a partition, in the order given; a compact policy (no input) is None."""
    policies, q_hat = [], []
    for role, name, inp in joined:
        part = None if inp is None else (joined_parts.get((role, name)) or keyed_parts[(role, name)])
        (policies if role == "policy" else q_hat).append((name, part))
    return tuple(policies), tuple(q_hat)


def _row_group_partitions(log_input: _Input, rows: int, decision_id: str | None, joined,
                          joined_parts: dict) -> list[Partition]:
    units = log_input.units
    policies, q_hat = _assemble(joined, joined_parts, {})
    partitions = []
    for index, group in enumerate(_groups(units, rows)):
        first, last = group[0], group[-1]
        # row groups whose id ranges (statistics) do not meet share no decision: nothing to look at
        joins_previous = first > 0 and _may_share(units[first - 1], units[first])
        joins_next = last + 1 < len(units) and _may_share(units[last], units[last + 1])
        partitions.append(Partition(
            index=index, strategy="row-groups", logs=_part(log_input, _slices(log_input, [units[i] for i in group])),
            policies=policies, q_hat=q_hat, decision_id=decision_id,
            previous=_slice(log_input, units[first - 1]) if joins_previous else None,
            following=tuple(_slice(log_input, u) for u in units[last + 1:last + 1 + FOLLOW_UNITS])
            if joins_next else (),
            n_rows=sum(units[i].rows for i in group)))
    return partitions


def _may_share(a: _Unit, b: _Unit) -> bool:
    """Whether consecutive row groups may hold rows of one decision (unknown without statistics)."""
    if not (a.stats and b.stats):
        return True
    try:
        return not (a.hi < b.lo or b.hi < a.lo)
    except TypeError:
        return True


def _why_unsorted(log_input: _Input, keyed: list[_Input]) -> str | None:
    """None when the logs and every keyed file are sorted by decision id according to their row-group
    statistics, else the reason they are not."""
    inputs = [log_input, *keyed]
    for inp in inputs:
        previous = None
        for u in inp.units:
            where = f"{inp.files[u.file].path} row group {u.row_group}"
            if not u.stats:
                return f"{where} has no decision-id statistics (or has null ids)"
            try:
                if u.lo > u.hi or (previous is not None and previous.hi > u.lo):
                    return f"{inp.label} is not sorted by decision id ({where})"
            except TypeError:
                return f"{inp.label} has decision ids that do not compare ({where})"
            previous = u
    try:
        firsts = [inp.units[0].lo for inp in inputs if inp.units]
        sorted(firsts)
    except TypeError:
        return "the joined files' decision ids are not of the logs' type"
    return None


def _range_partitions(log_input: _Input, rows: int, decision_id: str, joined, joined_parts) -> list[Partition]:
    units = log_input.units
    splits = []
    for group in _groups(units, rows)[1:]:
        value = units[group[0]].lo
        if not splits or value > splits[-1]:
            if value > units[0].lo:
                splits.append(value)
    bounds = [None, *splits, None]
    partitions = []
    for index in range(len(bounds) - 1):
        lo, hi = bounds[index], bounds[index + 1]
        log_units, log_filters = _overlapping(log_input, lo, hi)
        keyed_parts = {}
        for role, name, inp in joined:
            if inp is not None and inp.key is not None:
                u, flags = _overlapping(inp, lo, hi)
                keyed_parts[(role, name)] = _part(inp, _slices(inp, u, flags), inp.columns)
        policies, q_hat = _assemble(joined, joined_parts, keyed_parts)
        partitions.append(Partition(index=index, strategy="sorted-ranges",
                                    logs=_part(log_input, _slices(log_input, log_units, log_filters)),
                                    policies=policies, q_hat=q_hat, decision_id=decision_id,
                                    id_range=(lo, hi), n_rows=sum(u.rows for u in log_units)))
    return partitions


def _amplification(partitions: list[Partition], joined) -> list[str]:
    """Notes on joined files whose row groups are read by several partitions (row groups larger than
    the partitions' id ranges): each such row group is read, and filtered, once per partition."""
    notes = []
    for role, name, inp in joined:
        if inp is None or inp.key is None or not inp.n_rows:
            continue
        rows = {(f.path, rg): f.metadata.row_group(rg).num_rows
                for f in inp.files for rg in range(f.metadata.num_row_groups)}
        parts = [dict(p.policies if role == "policy" else p.q_hat)[name] for p in partitions]
        read = sum(rows[(s.path, rg)] for part in parts for s in part.slices for rg in s.row_groups)
        if read > 2 * inp.n_rows:
            notes.append(f"{inp.label}: its row groups are read {read / inp.n_rows:.1f} times over (they are larger "
                         "than the partitions' decision ranges); write it with smaller row groups")
    return notes


def _overlapping(inp: _Input, lo, hi) -> tuple[list[_Unit], list[bool]]:
    """The units whose ids meet [lo, hi), and whether each needs filtering (it crosses an edge)."""
    units, flags = [], []
    for u in inp.units:
        if (hi is not None and u.lo >= hi) or (lo is not None and u.hi < lo):
            continue
        units.append(u)
        flags.append((lo is not None and u.lo < lo) or (hi is not None and u.hi >= hi))
    return units, flags


def _whole_partition(log_input: _Input, decision_id: str | None, joined, joined_parts) -> Partition:
    keyed_parts = {(role, name): _part(inp, _slices(inp, inp.units), inp.columns)
                   for role, name, inp in joined if inp is not None and inp.key is not None}
    policies, q_hat = _assemble(joined, joined_parts, keyed_parts)
    return Partition(index=0, strategy="buckets", logs=_part(log_input, _slices(log_input, log_input.units)),
                     policies=policies, q_hat=q_hat, decision_id=decision_id, n_rows=log_input.n_rows)


# ----------------------------------------------------------------------------------------------
# buckets (DuckDB)

def _connect(tempdir: str, max_memory: int):
    try:
        import duckdb
    except ImportError:  # pragma: no cover - a dependency
        raise InputError(Problem("--max-memory", "needs the duckdb package", fix="pip install duckdb")) from None
    limit = max(64 * 2**20, int(max_memory * PARTITION_SHARE))
    con = duckdb.connect(":memory:", config={"memory_limit": f"{limit}B"})
    spill = Path(tempdir) / ".spill"
    spill.mkdir(parents=True, exist_ok=True)
    con.execute("SET enable_progress_bar = false")
    con.execute("SET threads = 2")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{_sql_str(str(spill))}'")
    return con


def _key_expression(type_: pa.DataType, column: str) -> str:
    """The decision id as hashed: every integer width as BIGINT (ids written as int32 in one file and
    int64 in another land in the same bucket, as the loaders match them), anything else as text."""
    if pa.types.is_integer(type_):
        return f"TRY_CAST({_q(column)} AS BIGINT)"
    return f"CAST({_q(column)} AS VARCHAR)"


def _write_buckets(con, inp: _Input, columns: Sequence[str], key: str, buckets: int, out: Path) -> None:
    listing = ", ".join(f"'{_sql_str(f.path)}'" for f in inp.files)
    # hive keys are read as text (then cast to the types pyarrow's dataset would give them)
    hive = "true, hive_types_autocast = false" if any(f.hive for f in inp.files) else "false"
    selected = ", ".join(_q(c) for c in columns)
    sql = (f"COPY (SELECT {selected}, "
           f"(list_position([{listing}], __livegate_file) - 1)::BIGINT * 1099511627776 + file_row_number "
           f"AS {ORDER_COLUMN}, "
           f"hash({_key_expression(inp.schema.field(key).type, key)}) % {buckets} AS {_BUCKET_COLUMN} "
           f"FROM read_parquet([{listing}], filename = '__livegate_file', file_row_number = true, "
           f"union_by_name = true, hive_partitioning = {hive})) "
           f"TO '{_sql_str(str(out))}' (FORMAT parquet, PARTITION_BY ({_BUCKET_COLUMN}), OVERWRITE_OR_IGNORE)")
    try:
        con.execute(sql)
    except Exception as exc:  # duckdb.Error: a file that cannot be read past its footer, or the disk
        named = next((f.path for f in inp.files if f.path in str(exc)), inp.label)
        raise InputError(unreadable(named, exc)) from None


def _bucket_files(out: Path, bucket: int) -> list[Path]:
    folder = out / f"{_BUCKET_COLUMN}={bucket}"
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def _bucket_part(inp: _Input, out: Path, bucket: int, columns: tuple[str, ...] | None) -> tuple[SourcePart, int]:
    slices, rows = [], 0
    for p in _bucket_files(out, bucket):
        metadata = pq.read_metadata(p)
        rows += metadata.num_rows
        if metadata.num_row_groups:
            slices.append(FileSlice(str(p), tuple(range(metadata.num_row_groups))))
    return _part(inp, tuple(slices), columns, ordered=True), rows


def _bucket_partitions(log_input: _Input, read_columns: tuple[str, ...], decision_id: str, joined, joined_parts,
                       buckets: int, tempdir: str, max_memory: int, say) -> list[Partition]:
    con = _connect(tempdir, max_memory)
    try:
        say(f"partitioning the logs by decision into {buckets} buckets (DuckDB)")
        log_out = Path(tempdir) / "logs"
        _write_buckets(con, log_input, read_columns, decision_id, buckets, log_out)
        outs = {}
        for i, (role, name, inp) in enumerate(joined):
            if inp is None or inp.key is None:
                continue
            say(f"partitioning {role} {name} by decision into {buckets} buckets (DuckDB)")
            outs[(role, name)] = Path(tempdir) / f"joined-{i}"
            _write_buckets(con, inp, inp.columns, inp.key, buckets, outs[(role, name)])
    finally:
        con.close()
    shutil.rmtree(Path(tempdir) / ".spill", ignore_errors=True)
    partitions = []
    for bucket in range(buckets):
        logs, rows = _bucket_part(log_input, log_out, bucket, read_columns)
        keyed_parts, joined_rows = {}, 0
        for role, name, inp in joined:
            if inp is not None and inp.key is not None:
                part, r = _bucket_part(inp, outs[(role, name)], bucket, inp.columns)
                keyed_parts[(role, name)] = part
                joined_rows += r
        if rows == 0 and joined_rows == 0:
            continue
        policies, q_hat = _assemble(joined, joined_parts, keyed_parts)
        partitions.append(Partition(index=len(partitions), strategy="buckets", logs=logs, policies=tuple(policies),
                                    q_hat=tuple(q_hat), decision_id=decision_id, bucket=(bucket, buckets),
                                    n_rows=rows))
    return partitions


# ----------------------------------------------------------------------------------------------
# reading

def read_partition(partition: Partition, columns: Sequence[str]) -> PartitionTables:
    """The partition's tables: its log rows (`columns`, in their original order), and the rows of
    each long-format policy (None for a compact one) and q-hat file for the same decisions. With the
    "buckets" strategy `columns` must be among the plan's columns. A corrupt or unreadable file raises
    InputError naming the file; works in any process (paths only)."""
    columns = list(dict.fromkeys(columns))
    logs = _read_logs(partition, columns)
    policies = {name: None if part is None else _read_part(part, list(part.columns or ()), partition.id_range)
                for name, part in partition.policies}
    q_hat = {name: _read_part(part, list(part.columns or ()), partition.id_range) for name, part in partition.q_hat}
    return PartitionTables(logs=logs, policies=policies, q_hat=q_hat, source=partition.describe())


def _read_logs(partition: Partition, columns: list[str]) -> pa.Table:
    part = partition.logs
    missing = [c for c in columns if c not in part.schema.names]
    if missing:
        why = "was not among the columns planned for the buckets" if part.ordered else "is missing"
        raise InputError([Problem(part.label, why, column=c, fix="add the column, or list it when planning")
                          for c in missing])
    key = partition.decision_id
    boundary = partition.strategy == "row-groups" and key is not None and key in columns
    table = _read_part(part, columns, partition.id_range, key=key)
    if boundary:
        table = _boundary_rule(partition, table, columns)
    return table


def _read_part(part: SourcePart, columns: list[str], id_range: tuple | None, key: str | None = None) -> pa.Table:
    """A source part's rows of `columns`, in order: bucket files sorted back to their original order,
    edge row groups filtered to the id range."""
    key = key if key is not None else part.key
    filtering = id_range is not None and key is not None and any(s.filter for s in part.slices)
    wanted = list(columns)
    if filtering and key not in wanted:
        wanted.append(key)
    if part.ordered:
        wanted.append(ORDER_COLUMN)
    schema = pa.schema([part.schema.field(c) if c in part.schema.names else pa.field(c, pa.int64()) for c in wanted],
                       metadata=_origin_metadata(part))
    tables = []
    for s in part.slices:
        t = _read_slice(s, wanted, schema, part.label)
        if filtering and s.filter:
            t = _filter_range(t, key, id_range)
        tables.append(t)
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if part.ordered:
        import pyarrow.compute as pc
        order = pc.sort_indices(table.column(ORDER_COLUMN))
        table = table.drop_columns([ORDER_COLUMN]).take(order)
    if table.num_columns != len(columns):
        table = table.select(columns)
    return table


def _origin_metadata(part: SourcePart) -> dict | None:
    if part.origin is None:
        return None
    try:
        return pq.read_schema(part.origin).metadata
    except FileNotFoundError:
        raise InputError(Problem(part.origin, "does not exist (it was there when the partitions were planned)",
                                 fix="keep the input files in place during the evaluation")) from None
    except READ_ERRORS as exc:
        raise InputError(unreadable(part.origin, exc)) from None


def _read_slice(s: FileSlice, columns: list[str], schema: pa.Schema, label: str) -> pa.Table:
    try:
        with pq.ParquetFile(s.path) as f:
            names = set(f.schema_arrow.names)
            table = f.read_row_groups(list(s.row_groups), columns=[c for c in columns if c in names],
                                      use_threads=True)
    except FileNotFoundError:
        raise InputError(Problem(s.path, "does not exist (it was there when the partitions were planned)",
                                 fix="keep the input files in place during the evaluation")) from None
    except (*READ_ERRORS, IndexError) as exc:
        raise InputError(unreadable(s.path, exc)) from None
    hive = dict(s.hive)
    arrays = []
    for c in columns:
        type_ = schema.field(c).type
        if c in table.column_names:
            column = table.column(c)
        elif c in hive:
            column = pa.chunked_array([pa.repeat(pa.scalar(hive[c]).cast(type_), table.num_rows)], type=type_)
        else:
            column = pa.chunked_array([pa.nulls(table.num_rows, type_)], type=type_)
        if not column.type.equals(type_):
            try:
                column = column.cast(type_)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise InputError(Problem(s.path, f"cannot be read as {type_} like the other files", column=c,
                                         fix="write every file with the same column types")) from None
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)


def _filter_range(table: pa.Table, key: str, id_range: tuple) -> pa.Table:
    import pyarrow.compute as pc
    lo, hi = id_range
    column = table.column(key)
    mask = None
    if lo is not None:
        mask = pc.greater_equal(column, _scalar(lo, column.type))
    if hi is not None:
        upper = pc.less(column, _scalar(hi, column.type))
        mask = upper if mask is None else pc.and_(mask, upper)
    return table if mask is None else table.filter(mask)


def _scalar(value, type_: pa.DataType):
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    try:
        return pa.scalar(value, type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.scalar(value)


def _boundary_rule(partition: Partition, table: pa.Table, columns: list[str]) -> pa.Table:
    """Row-groups strategy: a run of one decision id across a boundary goes to the partition holding
    its first row (see the module docstring)."""
    key = partition.decision_id
    part = partition.logs
    key_schema = pa.schema([part.schema.field(key)])
    if partition.previous is not None and table.num_rows:
        before = _read_slice(partition.previous, [key], key_schema, part.label).column(key)
        if len(before):
            last = before[len(before) - 1]
            skip = _run_length(table.column(key), last)
            if skip:
                table = table.slice(skip)
    if not table.num_rows:
        return table
    last = table.column(key)[table.num_rows - 1]
    extra = []
    for s in partition.following:
        ids = _read_slice(s, [key], key_schema, part.label).column(key)
        run = _run_length(ids, last)
        if run:
            extra.append(_read_slice(s, columns, table.schema, part.label).slice(0, run))
        if run < len(ids):
            break
    return pa.concat_tables([table, *extra]) if extra else table


def _run_length(ids: pa.ChunkedArray, value: pa.Scalar) -> int:
    """How many leading entries of `ids` equal `value`."""
    import pyarrow.compute as pc
    value = value.as_py()
    if value is None or not len(ids):
        return 0
    if pa.types.is_dictionary(ids.type):
        ids = ids.cast(ids.type.value_type)
    different = pc.fill_null(pc.not_equal(ids, _scalar(value, ids.type)), True)
    first = pc.index(different, True).as_py()
    return len(ids) if first < 0 else first


# ----------------------------------------------------------------------------------------------

def _ranges(values: Sequence[int]) -> str:
    values = sorted(values)
    spans, start = [], values[0]
    for a, b in zip(values, values[1:] + [None]):
        if b != a + 1:
            spans.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(spans)


def _sql_str(text: str) -> str:
    return str(text).replace("'", "''")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
