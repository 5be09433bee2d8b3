"""Causal checks on logs too large for memory: a stratified sample, read in bounded memory (issue 14).

``read_stratified_sample(source, treatment, outcome, columns, n_rows, seed)`` draws about ``n_rows``
rows of a Parquet file or directory (or an in-memory Table / DataFrame) and returns them as a pyarrow
Table with a ``sampling`` record for the result document; ``read_causal_sample(source, config,
n_rows)`` does the same for a causal check's configuration (its columns, its seed, its checks) and
returns the checked pandas frame that ``run_causal_check`` takes; ``attach_sampling`` puts the record
on a ``CausalResult`` (document key ``sampling``: null when the whole table was analysed).

How the rows are drawn
----------------------
* **Strata**: the treatment arms; with a 0/1 outcome (bool, or numbers all 0 or 1) also the outcome's
  value, so that a rare outcome keeps its share in each arm (at most four strata).
* **Pass 1** reads only the stratification columns, row group by row group, and counts the rows of
  every stratum (it also checks the treatment and the outcome on *every* row: a null or non-0/1
  treatment, a null, non-numeric or infinite outcome anywhere in the table is an ``InputError``, not
  just in the rows that happen to be drawn).
* **Allocation**: proportional. Stratum ``s`` with ``M_s`` of the table's ``M`` rows keeps
  ``k_s = ceil(N * M_s / M)`` rows: the same fraction ``N / M`` of every stratum, rounded up (so a
  non-empty stratum keeps at least one row and the sample has between ``N`` and ``N + strata - 1``
  rows; each stratum's share of the sample differs from its share of the table by less than one row).
  Documented minimum: each treatment arm must receive at least ``MIN_ARM_ROWS`` (10, the causal
  check's own minimum per arm) rows *by proportional allocation*; when a rare arm would get fewer,
  the sampler refuses (``InputError`` naming the smallest ``N`` that suffices) instead of topping the
  arm up. Topping up would give the rare arm a larger sampling fraction: the sample would then need
  sampling weights ``M_s / k_s`` in every estimator, propensity model and refuter, which the causal
  check does not take. With proportional allocation it needs none.
* **Which rows**: within each stratum, the ``k_s`` rows with the smallest keyed hash
  ``h(seed, key)`` (ties broken by the row's position), where the key is the ``decision_id`` column
  when the data has one, else the row's global index (files in sorted path order, row groups in file
  order). The hash is a fixed function of the seed and the key (splitmix64 finaliser over integer
  keys; pandas' SipHash ``hash_array`` over strings), so the same seed and data give the same rows
  whatever the file layout: one file, many row groups or a directory of files. With decision ids the
  rows do not even depend on the order of the rows; with row indices they depend on that order only.
* **Pass 2** reads only the needed columns, row group by row group, keeping a row only while it can
  still be among its stratum's ``k_s`` smallest hashes; the buffer of candidates is cut back to
  ``k_s`` rows per stratum whenever the candidates read since the last cut exceed half the sample.
  Memory: the rows held (at most ``N`` kept + ``N / 2`` candidates + one row group's survivors,
  copied once while a cut runs) plus the row group being read: of order ``N`` rows, whatever the
  table's size. Measured: a 100,000-row sample of a 3,000,000-row file (row groups of 100,000) raised
  peak RSS by 119 MB, reading the whole file's causal columns by 647 MB.

Why the estimates stay unbiased
-------------------------------
Under proportional allocation every row of the table has the same chance ``N / M`` of being kept
(up to the rounding above): the sample is self-weighting, as a simple random sample is. Sampling on
the treatment and on the outcome is harmless exactly because the fractions are equal (unequal ones
would be case-control sampling, which biases every effect without weights). So the sample's
estimands (ATE, ATT, ATC, ATO) are unbiased for the whole table's, and the estimators target the same
quantities as on the whole table, with the precision of ``N`` rows: the standard errors are those of
the sample (slightly conservative: stratification only removes variance, and the finite-population
correction ``1 - N / M`` is left out). The rounding up changes a stratum's fraction by at most one
row in ``k_s``: a bias of order ``strata / N``, far below a standard error of order ``1 / sqrt(N)``.
Segment effects, refutations and the learned policy are computed on the sampled rows (the policy
covers the sampled decisions only).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .causal_frame import IN_MEMORY, MIN_ARM_ROWS
from .errors import InputError, Problem
from .loading import READ_ERRORS, short_reason

METHOD = "stratified"
#: rows per slice when the source is an in-memory Table or DataFrame (it has no row groups)
IN_MEMORY_SLICE = 1 << 16
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


# --- the keyed hash -------------------------------------------------------------------------------

def _mix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele, Lea & Flood 2014), vectorised over uint64."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


def _key_bits(keys: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Each key as 64 bits, and the mask of null keys. Integers (any width, signed or not) and bools
    by value, floats by their float64 bits, temporal types by their integer value, anything else
    (strings, binary, decimals) by pandas' SipHash of its Python value: the same key gives the same
    bits whatever type width a file stored it with."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks() if keys.num_chunks != 1 else keys.chunk(0)
    if pa.types.is_dictionary(keys.type):
        keys = keys.cast(keys.type.value_type)
    nulls = keys.is_null().to_numpy(zero_copy_only=False) if keys.null_count else np.zeros(len(keys), bool)
    t = keys.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        filled = pc.fill_null(keys.cast(pa.int64(), safe=False), 0) if not pa.types.is_uint64(t) else \
            pc.fill_null(keys, 0)
        return filled.to_numpy(zero_copy_only=False).astype(np.int64, copy=False).view(_U64), nulls
    if pa.types.is_floating(t):
        values = pc.fill_null(keys.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False) + 0.0  # -0.0 -> 0.0
        return values.view(_U64), nulls
    if pa.types.is_temporal(t):
        return _key_bits(keys.cast(pa.int64()))[0], nulls
    from pandas.util import hash_array
    values = keys.cast(pa.large_string()) if pa.types.is_string(t) else keys
    return hash_array(np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)).astype(_U64), nulls


def row_hash(seed: int, keys, index: np.ndarray) -> np.ndarray:
    """The sampling hash of each row: a fixed function of ``(seed, key)``, uniform on the uint64 range.

    ``keys`` is the decision-id column (an Arrow array) or None to key rows by their global ``index``
    (also used for rows whose decision id is null)."""
    index = np.asarray(index, dtype=np.int64)
    salt = _mix(_U64(int(seed) & 0xFFFFFFFFFFFFFFFF) + _GOLDEN)
    if keys is None:
        bits, nulls = index.view(_U64), np.ones(len(index), bool)
    else:
        bits, nulls = _key_bits(keys)
    with np.errstate(over="ignore"):
        by_key = _mix(_mix(bits ^ salt) + _GOLDEN)
        if nulls.any():  # keyed by position, in another domain than the keys
            by_index = _mix(_mix(index.view(_U64) ^ salt ^ _U64(0xD1B54A32D192ED03)) + _GOLDEN)
            by_key = np.where(nulls, by_index, by_key)
    return by_key


# --- the source: files, row groups ----------------------------------------------------------------

@dataclass
class _Unit:
    """One row group of one file (or one slice of an in-memory table): its rows and how to read them."""

    label: str
    rows: int
    names: frozenset[str]
    read: Callable[[list[str]], pa.Table]


@dataclass
class _Source:
    label: str
    units: list[_Unit]
    names: list[str]  # every column of any unit (files in order)
    lacking: dict[str, list[str]] = field(default_factory=dict)  # column -> files without it

    @property
    def n_rows(self) -> int:
        return sum(u.rows for u in self.units)


def _file_units(path: Path, label: str) -> _Source:
    """Every row group of a Parquet file or directory, from the footers that the streamed evaluation's
    planner reads too (datasets/partitions.py: every unreadable file named, hive keys typed alike)."""
    from .partitions import hive_key_types, open_parquet_input

    files = open_parquet_input(path, label).files
    integer_keys = {k for k, t in hive_key_types(files).items() if pa.types.is_integer(t)}
    units, names, has = [], {}, {}
    for f in files:
        stored = f.metadata.schema.to_arrow_schema().names
        constants = {k: int(v) if k in integer_keys else v for k, v in f.hive if k not in stored}
        file_names = frozenset([*stored, *constants])
        has[f.path] = file_names
        names.update(dict.fromkeys([*stored, *constants]))
        for rg in range(f.metadata.num_row_groups):
            rows = f.metadata.row_group(rg).num_rows
            if rows:
                units.append(_Unit(f.path, rows, file_names, _row_group_reader(Path(f.path), f.metadata, rg, constants)))
    lacking = {c: [f for f, n in has.items() if c not in n] for c in names} if len(has) > 1 else {}
    return _Source(label, units, list(names), {c: fs for c, fs in lacking.items() if fs})


def _row_group_reader(path: Path, metadata, rg: int, constants: dict) -> Callable[[list[str]], pa.Table]:
    def read(columns: list[str]) -> pa.Table:
        stored = [c for c in columns if c not in constants]
        try:
            table = pq.ParquetFile(path, metadata=metadata).read_row_group(rg, columns=stored, use_threads=False)
        except READ_ERRORS as exc:
            raise InputError(Problem(str(path), f"could not be read (row group {rg}: {short_reason(exc)})",
                                     fix="re-export the file, and check that it is complete")) from None
        for c in columns:
            if c in constants:
                table = table.append_column(c, pa.array([constants[c]] * table.num_rows))
        return table.select(columns)

    return read


def _memory_units(source, label: str) -> _Source:
    from .loading import _in_memory_table  # pyarrow conversion, every bad column named

    table = _in_memory_table(source, label)
    names = [str(c) for c in table.column_names]
    from .validation import check_column_names
    repeated = check_column_names(names, label)
    if repeated:
        raise InputError(repeated)
    units = []
    for start in range(0, table.num_rows, IN_MEMORY_SLICE):
        part = table.slice(start, IN_MEMORY_SLICE)
        units.append(_Unit(label, part.num_rows, frozenset(names), lambda cols, part=part: part.select(cols)))
    return _Source(label, units, names)


def _open(source, name: str | None) -> _Source:
    if isinstance(source, (str, os.PathLike)):
        return _file_units(Path(source), name or str(source))
    return _memory_units(source, name or IN_MEMORY)


# --- the strata --------------------------------------------------------------------------------------

@dataclass
class _Strata:
    """Running counts of pass 1 by treatment code (0/1) x outcome code (0, 1, or 2 for any other value)."""

    treatment: str
    outcome: str
    counts: np.ndarray = field(default_factory=lambda: np.zeros((2, 3), np.int64))
    problems: dict = field(default_factory=dict)  # (column, kind) -> [rows, examples]

    def flag(self, column: str, kind: str, rows: int, examples=()) -> None:
        entry = self.problems.setdefault((column, kind), [0, []])
        entry[0] += int(rows)
        entry[1] = list(dict.fromkeys([*entry[1], *examples]))[:5]

    @property
    def binary_outcome(self) -> bool:
        return not self.counts[:, 2].any()


def _codes(table: pa.Table, strata: _Strata, label: str, check: bool) -> tuple[np.ndarray, np.ndarray]:
    """Treatment codes (0/1; -1 where invalid) and outcome codes (0/1 when the value is 0 or 1, else 2)."""
    t_col, y_col = table.column(strata.treatment), table.column(strata.outcome)
    t_type, y_type = t_col.type, y_col.type
    if pa.types.is_dictionary(t_type):
        t_col = t_col.cast(t_type.value_type)
        t_type = t_type.value_type
    if pa.types.is_boolean(t_type) or pa.types.is_integer(t_type) or pa.types.is_floating(t_type):
        t = t_col.cast(pa.float64()).to_numpy(zero_copy_only=False)  # null -> NaN
        ok = (t == 0) | (t == 1)
        missing = np.isnan(t)  # null or NaN: "missing", as pandas (and causal_frame) count them
        t_codes = np.where(ok, np.nan_to_num(t, nan=-1.0), -1).astype(np.int8)
    else:
        t_codes = np.full(len(table), -1, np.int8)
        ok = np.zeros(len(table), bool)
        missing = np.asarray(t_col.is_null().to_numpy(zero_copy_only=False), bool)
    if check:
        if missing.any():
            strata.flag(strata.treatment, "null", int(missing.sum()))
        bad = ~ok & ~missing
        if bad.any():
            seen = pc.unique(pc.filter(t_col, pa.array(bad)))
            strata.flag(strata.treatment, "values", int(bad.sum()), [str(v) for v in seen.to_pylist()[:5]])
    numeric = pa.types.is_boolean(y_type) or pa.types.is_integer(y_type) or pa.types.is_floating(y_type)
    if numeric:
        y = y_col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        y_codes = np.where(y == 0, 0, np.where(y == 1, 1, 2)).astype(np.int8)
        if check:
            n_missing = int(np.isnan(y).sum())
            if n_missing:
                strata.flag(strata.outcome, "null", n_missing)
            n_inf = int(np.isinf(y).sum())
            if n_inf:
                strata.flag(strata.outcome, "inf", n_inf)
    else:
        y_codes = np.full(len(table), 2, np.int8)
        if check:
            strata.flag(strata.outcome, "type", len(table), [str(y_type)])
    return t_codes, y_codes


def _raise_problems(strata: _Strata, label: str) -> None:
    """The checks of ``datasets.causal_frame`` on the treatment and the outcome, over every row."""
    problems = []
    for (column, kind), (rows, examples) in strata.problems.items():
        if kind == "null":
            problems.append(Problem(label, "are missing (NaN / null)", column=column, rows=rows,
                                    fix="drop or impute those rows"))
        elif kind == "inf":
            problems.append(Problem(label, "are infinite", column=column, rows=rows,
                                    fix="drop those rows or replace the values by finite ones"))
        elif kind == "values":
            problems.append(Problem(label, f"hold values other than 0/1 (seen: {', '.join(examples)})", column=column,
                                    rows=rows, fix="the treatment must be binary: 1 = recommended/exposed, 0 = not"))
        elif kind == "type":
            problems.append(Problem(label, f"must be numeric, found {examples[0]}", column=column))
    if problems:
        raise InputError(problems)


def _labels(strata: _Strata) -> tuple[list[str], np.ndarray]:
    """The strata's labels and the map from (treatment code, outcome code) to a stratum number."""
    T, Y = strata.treatment, strata.outcome
    index = np.full((2, 3), -1, np.int64)
    labels = []
    for t in (0, 1):
        if strata.binary_outcome:
            for y in (0, 1):
                if strata.counts[t, y]:
                    index[t, y] = len(labels)
                    labels.append(f"{T}={t},{Y}={y}")
        elif strata.counts[t].any():
            index[t, :] = len(labels)
            labels.append(f"{T}={t}")
    return labels, index


def _allocate(totals: np.ndarray, n_rows: int, total: int) -> np.ndarray:
    """Proportional allocation rounded up: ``ceil(N * M_s / M)``, in exact integer arithmetic."""
    return np.array([-(-n_rows * int(m) // total) for m in totals], dtype=np.int64)


# --- the sample ------------------------------------------------------------------------------------

def _needed(source: _Source, treatment: str, outcome: str, columns: Sequence[str], optional: Sequence[str],
            key: str | None) -> list[str]:
    required = list(dict.fromkeys([treatment, outcome, *columns]))
    available = set(source.names)
    missing = [Problem(source.label, "is missing", column=c,
                       fix="add the column or map it with the matching option (available: "
                           + ", ".join(sorted(available)[:15]) + (", ..." if len(available) > 15 else "") + ")")
               for c in required if c not in available]
    for c in required:
        files = source.lacking.get(c)
        if files and c in available:
            shown = ", ".join(sorted(files)[:5]) + (", ..." if len(files) > 5 else "")
            missing.append(Problem(source.label, f"is missing from {len(files)} of its files: {shown}", column=c,
                                   fix="add the column to every file, or remove the files that lack it"))
    if missing:
        raise InputError(missing)
    return list(dict.fromkeys([*required, *(c for c in optional if c in available),
                               *([key] if key is not None else [])]))


def _present(unit: _Unit, columns: list[str]) -> list[str]:
    return [c for c in columns if c in unit.names]


def _concat(tables: list[pa.Table], columns: list[str]) -> pa.Table:
    """Row groups' tables as one, types promoted across files (e.g. int32 and int64) and columns that
    some files lack filled with nulls, in the order of ``columns``."""
    if not tables:
        return pa.table({})
    table = pa.concat_tables(tables, promote_options="permissive")
    present = [c for c in columns if c in table.column_names]
    return table.select(present)


def read_stratified_sample(source, treatment: str, outcome: str, columns: Sequence[str] = (),
                           n_rows: int = 100_000, seed: int = 0, *, optional: Sequence[str] = (),
                           decision_id: str | None = "decision_id", name: str | None = None
                           ) -> tuple[pa.Table, dict | None]:
    """A proportional stratified sample of about ``n_rows`` rows of ``source``, read in bounded memory.

    ``source``: a Parquet file, a directory of them (hive partitions allowed), a pyarrow Table or a
    pandas DataFrame. ``columns`` are read (and must exist in every file) besides the treatment and
    the outcome; ``optional`` ones are read when present; ``decision_id`` names the row key column
    (None, or a column the data lacks: rows are keyed by their global index). ``name`` names the
    source in messages (default: its path, or "logs").

    Returns ``(table, record)``: the sampled rows in their original order (the treatment, the outcome,
    ``columns``, the ``optional`` columns present and the ``decision_id`` column), and the
    ``sampling`` record of the result document, or ``(whole table, None)`` when ``n_rows`` is not
    below the table's rows. Strata, allocation, the hash, the memory bound and why the estimates stay
    unbiased: module docstring.

    Raises ``InputError`` for an unreadable or corrupt file (naming it), missing columns, a treatment
    that is not 0/1 or an outcome that is not a finite number on any row of the table, ``n_rows`` not
    a positive integer, or a sample that would leave a treatment arm fewer than ``MIN_ARM_ROWS`` rows
    (the message names the sample size that suffices).
    """
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 1:
        raise InputError(Problem("sample_rows", f"must be a positive integer, got {n_rows!r}",
                                 fix="use e.g. --sample-rows 1000000 (sample_rows=1_000_000)"))
    n_rows, seed = int(n_rows), int(seed)
    src = _open(source, name)
    key = decision_id if decision_id is not None and decision_id in src.names else None
    wanted = _needed(src, treatment, outcome, columns, optional, key)
    out_columns = wanted  # the key column too: it names the sampled rows
    total = src.n_rows
    if n_rows >= total:  # the whole table: nothing is sampled
        return _concat([u.read(_present(u, wanted)) for u in src.units], out_columns), None

    # pass 1: the stratification columns only, every row checked
    strata = _Strata(treatment, outcome)
    for unit in src.units:
        t_codes, y_codes = _codes(unit.read([treatment, outcome]), strata, src.label, check=True)
        valid = t_codes >= 0
        strata.counts += np.bincount(t_codes[valid].astype(np.int64) * 3 + y_codes[valid], minlength=6).reshape(2, 3)
    _raise_problems(strata, src.label)
    labels, index = _labels(strata)
    totals = np.array([strata.counts[index == s].sum() for s in range(len(labels))], dtype=np.int64)
    take = _allocate(totals, n_rows, total)
    _check_arms(labels, index, totals, take, total, n_rows, treatment, src.label)

    # pass 2: the needed columns; keep each stratum's k smallest (hash, position)
    buffer = _Buffer(take, n_rows)
    offset = 0
    for unit in src.units:
        table = unit.read(_present(unit, wanted))
        t_codes, y_codes = _codes(table, strata, src.label, check=False)
        stratum = index[t_codes, y_codes]
        positions = np.arange(offset, offset + unit.rows, dtype=np.int64)
        offset += unit.rows
        keys = table.column(key) if key is not None and key in table.column_names else None
        hashes = row_hash(seed, keys, positions)
        buffer.offer(table, stratum, hashes, positions)
    sample, kept = buffer.result(out_columns)
    if not np.array_equal(kept, take):  # the files changed between the two passes
        raise InputError(Problem(src.label, "changed while it was being sampled",
                                 fix="sample a table that is not being written to"))
    record = {
        "method": METHOD,
        "strata": [treatment, *([outcome] if strata.binary_outcome else [])],
        "rows": int(kept.sum()), "of": int(total), "requested": n_rows, "seed": seed,
        "key": key if key is not None else "row index",
        "allocation": "proportional",
        "per_stratum": {label: [int(k), int(m)] for label, k, m in zip(labels, kept, totals)},
        "min_rows_per_arm": MIN_ARM_ROWS,
        "note": _note(n_rows, total, treatment, outcome, strata.binary_outcome, key),
    }
    return sample, record


def _note(n_rows: int, total: int, treatment: str, outcome: str, binary: bool, key: str | None) -> str:
    by = f"treatment arm ({treatment}) and outcome value ({outcome})" if binary else f"treatment arm ({treatment})"
    keyed = f"the column {key}" if key is not None else "the row's position in the table"
    return (f"estimated on a stratified sample of about {n_rows:,} of the table's {total:,} rows: strata by {by}, "
            f"the same fraction of every stratum (proportional allocation, rounded up by less than one row per "
            f"stratum), rows chosen by a hash of the seed and {keyed}. Every row had the same chance of being kept, "
            f"so the sample needs no weights and the effects estimated on it are unbiased for the whole table's "
            f"(up to that rounding); standard errors and intervals are those of the sample's rows, and segment "
            f"effects, refutations and any learned policy cover the sampled rows only")


def _check_arms(labels, index, totals, take, total: int, n_rows: int, treatment: str, label: str) -> None:
    """Refuse a sample that leaves a treatment arm fewer than ``MIN_ARM_ROWS`` rows (see the module docstring)."""
    problems = []
    for arm in (0, 1):
        members = sorted(set(index[arm][index[arm] >= 0].tolist()))
        arm_total = int(totals[members].sum()) if members else 0
        arm_take = int(take[members].sum()) if members else 0
        if arm_total < MIN_ARM_ROWS:
            problems.append(Problem(label, f"has {arm_total} rows with treatment {arm}; both arms need at least "
                                    f"{MIN_ARM_ROWS} rows", column=treatment))
        elif arm_take < MIN_ARM_ROWS:
            enough = -(-MIN_ARM_ROWS * total // arm_total)
            problems.append(Problem(label, f"a stratified sample of {n_rows:,} rows would keep {arm_take} rows with "
                                    f"treatment {arm} (the arm is {arm_total / total:.3%} of the {total:,} rows); the "
                                    f"causal check needs at least {MIN_ARM_ROWS} per arm, and the sample is not topped "
                                    f"up (that would need sampling weights)", column=treatment,
                                    fix=f"sample at least {enough:,} rows (--sample-rows {enough}, "
                                        f"sample_rows={enough}), or analyse the whole table"))
    if problems:
        raise InputError(problems)


class _Buffer:
    """The candidates of pass 2: at most ``take[s]`` rows per stratum once cut back, plus those read since.

    A row is offered only while its (hash, position) is below its stratum's current cut-off, the
    largest kept pair once the stratum holds ``take[s]`` rows: no later row can displace it otherwise."""

    def __init__(self, take: np.ndarray, n_rows: int):
        self.take = take
        self.limit = max(n_rows // 2, 1024)
        self.cut_hash = np.full(len(take), np.iinfo(np.uint64).max, dtype=np.uint64)
        self.cut_pos = np.full(len(take), np.iinfo(np.int64).max, dtype=np.int64)
        self.parts: list[tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]] = []
        self.pending = 0

    def offer(self, table: pa.Table, stratum: np.ndarray, hashes: np.ndarray, positions: np.ndarray) -> None:
        ch, cp = self.cut_hash[stratum], self.cut_pos[stratum]
        keep = (hashes < ch) | ((hashes == ch) & (positions <= cp))
        if not keep.any():
            return
        self.parts.append((table.filter(pa.array(keep)), stratum[keep], hashes[keep], positions[keep]))
        self.pending += int(keep.sum())
        if self.pending > self.limit:
            self._cut()

    def _cut(self) -> None:
        tables, strata, hashes, positions = zip(*self.parts)
        stratum, h, pos = np.concatenate(strata), np.concatenate(hashes), np.concatenate(positions)
        order = np.lexsort((pos, h, stratum))  # by stratum, then hash, then position
        sorted_stratum = stratum[order]
        starts = np.searchsorted(sorted_stratum, np.arange(len(self.take)), side="left")
        ends = np.searchsorted(sorted_stratum, np.arange(len(self.take)), side="right")
        chosen = []
        for s, (a, b) in enumerate(zip(starts, ends)):
            n = min(b - a, int(self.take[s]))
            chosen.append(order[a:a + n])
            if n == self.take[s] and n:
                last = order[a + n - 1]
                self.cut_hash[s], self.cut_pos[s] = h[last], pos[last]
        chosen = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
        table = pa.concat_tables(tables, promote_options="permissive").take(pa.array(chosen))
        self.parts = [(table, stratum[chosen], h[chosen], pos[chosen])]
        self.pending = 0

    def result(self, columns: list[str]) -> tuple[pa.Table, np.ndarray]:
        if not self.parts:
            return pa.table({}), np.zeros(len(self.take), np.int64)
        self._cut()
        table, stratum, _, pos = self.parts[0]
        order = np.argsort(pos, kind="stable")  # the original row order
        kept = np.bincount(stratum, minlength=len(self.take)).astype(np.int64)
        return _concat([table.take(pa.array(order))], columns), kept


# --- the causal check's columns, and the result document -------------------------------------------

def read_causal_sample(source, config, n_rows: int | None, schema=None, *, name: str | None = None):
    """The frame of the causal check ``config`` from ``source``: a stratified sample of ``n_rows`` rows
    (seed ``config.seed``), checked like ``read_causal_frame``'s; returns ``(frame, record)``.

    ``n_rows`` None reads the whole table (``read_causal_frame``) and returns ``(frame, None)``; so does
    an ``n_rows`` not below the table's rows. Raises ``InputError`` when ``n_rows`` is below the causal
    check's minimum of rows (``max(100, 20 * n_folds)``) or leaves a treatment arm fewer than
    ``MIN_ARM_ROWS`` rows, each with the sample size that suffices.
    """
    from .causal_frame import _columns_to_read, read_causal_frame
    from .schema import LogSchema

    schema = schema if schema is not None else LogSchema()
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else IN_MEMORY)
    if n_rows is None:
        return read_causal_frame(source, config, schema, name=name), None
    min_rows = max(100, 20 * int(config.n_folds))
    if not isinstance(n_rows, bool) and isinstance(n_rows, (int, np.integer)) and 0 < n_rows < min_rows:
        raise InputError(Problem("sample_rows", f"{n_rows} rows are too few: the causal check needs at least "
                                 f"{min_rows} rows ({config.n_folds} folds)",
                                 fix=f"sample at least {min_rows} rows (--sample-rows {min_rows})"))
    src = _open(source, name) if isinstance(source, (str, os.PathLike)) else None
    available = src.names if src is not None else [str(c) for c in (
        source.column_names if hasattr(source, "column_names") else source.columns)]
    required, optional = _columns_to_read(available, config, schema)
    decision_id = getattr(config, "decision_id_column", None) or schema.decision_id
    table, record = read_stratified_sample(source, config.treatment, config.outcome, required, n_rows,
                                           int(config.seed), optional=optional, decision_id=decision_id, name=label)
    return read_causal_frame(table, config, schema, name=label), record


__all__ = ["read_stratified_sample", "read_causal_sample", "row_hash", "METHOD"]
