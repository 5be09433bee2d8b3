"""Logged bandit feedback, candidate policies and reward predictions as validated NumPy arrays.

`load_logs` reads only the needed columns, validates them (all problems at once) and encodes the
keys once: decisions and actions become dense integer codes, so that joining a long-format policy
to the logs is a few vectorised array operations (no Python loop over rows, no pandas merge).
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import validation as v
from .errors import InputError, Problem
from .loading import column_names, missing_columns, open_dataset, read_table
from .rewards import RewardSpec
from .schema import COMPACT_PI_PREFIX, COMPACT_QPI_PREFIX, LogSchema, PolicySchema, QHatSchema


@dataclass
class LoggedData:
    """Validated logs. Row i is one (decision, position) sample."""

    source: str
    action: np.ndarray                 # original action values
    action_code: np.ndarray            # int64 code into `actions`
    actions: np.ndarray                # distinct actions; actions[code] is the value
    propensity: np.ndarray             # float64 in (0, 1]
    outcomes: dict[str, np.ndarray]    # reward columns as float64
    decision_code: np.ndarray | None = None   # int64 code of the decision id (None without decision_id)
    decision_ids: np.ndarray | None = None    # decision_ids[code] is the original id
    position: np.ndarray | None = None        # int64, None when the logs have no position column
    timestamp: np.ndarray | None = None       # datetime64[us] (UTC) or None
    #: reward-model / causal features as read (`context` is their DataFrame, made on first use: pandas
    #: is not imported by an evaluation that needs no model)
    context_table: pa.Table | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)    # compact-form pi_/qpi_/q_hat, category columns
    action_features: "pd.DataFrame | None" = None  # noqa: F821 - one row per action code (a_* columns)
    propensity_source: str = "logged"
    #: actions that policies or predictions name but the logs never show (codes len(actions) + i)
    unlogged_actions: list = field(default_factory=list)
    #: the action catalogue, when given: actions outside it and the logs are unknown
    catalogue: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.propensity)

    @property
    def n_context_columns(self) -> int:
        return 0 if self.context_table is None else self.context_table.num_columns

    @functools.cached_property
    def context(self) -> "pd.DataFrame":  # noqa: F821
        import pandas as pd
        if self.n_context_columns == 0:
            return pd.DataFrame(index=range(self.n))
        return self.context_table.to_pandas()

    @property
    def n_action_codes(self) -> int:
        return len(self.actions) + len(self.unlogged_actions)

    def encode_actions(self, values: np.ndarray, source: str, column: str) -> tuple[np.ndarray, list[Problem]]:
        """Codes of actions named by a policy or prediction file. A stream the logs never show gets
        a code of its own (a candidate may rank streams the logging policy showed with positive
        probability but never happened to pick); an action of another type than the logs', or
        outside the action catalogue, is unknown."""
        codes = _lookup(self.actions, values)
        missing = codes < 0
        if not np.any(missing):
            return codes, []
        kinds = {np.issubdtype(np.asarray(a).dtype, np.integer) for a in (self.actions[:1], values[:1])}
        if len(kinds) > 1:
            return codes, v.check_unknown(missing, values, source, column, "actions of another type than the logs'",
                                          fix=f"write {column} with the logs' type ({self.actions.dtype})")
        unknown = missing & ~np.isin(values, self.catalogue) if self.catalogue is not None \
            else np.zeros_like(missing)
        problems = v.check_unknown(unknown, values, source, column, "actions in neither the logs nor the action catalogue",
                                   fix="drop them, or add them to the catalogue (--actions)")
        missing &= ~unknown
        if not np.any(missing):
            return codes, problems
        seen = values[missing]
        _, first = np.unique(seen, return_index=True)
        known_before = set(self.unlogged_actions)
        new = [a for a in seen[np.sort(first)] if a not in known_before]  # in order of appearance
        self.unlogged_actions.extend(new)
        known = np.asarray(self.unlogged_actions, dtype=values.dtype)
        order = np.argsort(known, kind="stable")
        where = np.searchsorted(known[order], values[missing])
        codes[missing] = len(self.actions) + order[np.minimum(where, len(known) - 1)]
        return codes, problems

    @property
    def n_positions(self) -> int:
        return 1 if self.position is None else int(self.position.max()) + 1

    def reward(self, spec: RewardSpec) -> np.ndarray:
        return spec.combine(self.outcomes)

    @functools.cached_property
    def first_id_if_ordered(self) -> int | None:
        """The first decision id when row i holds integer decision id first + i (one position): then a
        decision's row is its id's offset, with no lookup at all."""
        ids = self.decision_ids
        if (ids is None or self.position is not None and self.n_positions > 1 or len(ids) != self.n
                or not np.issubdtype(ids.dtype, np.integer) or int(ids[-1]) - int(ids[0]) != self.n - 1
                or not np.array_equal(self.decision_code, np.arange(self.n))):
            return None
        return int(ids[0])

    def row_key(self) -> np.ndarray:
        """Dense int64 key of (decision, position), unique per row."""
        pos = 0 if self.position is None else self.position
        return self.decision_code * self.n_positions + pos


def _dense_int_range(values: np.ndarray, size: int) -> tuple[int, int] | None:
    """(min, max) when `values` are integers spanning a range at most twice `size` (ids 0..n-1, stream ids)."""
    if values.size == 0 or not np.issubdtype(values.dtype, np.integer):
        return None
    low, high = int(values.min()), int(values.max())
    return (low, high) if high - low < 2 * size + 1024 else None


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes 0..k-1 of `values` and the sorted distinct values (uniques[code] == value)."""
    if np.issubdtype(values.dtype, np.integer) and values.size > 1 and bool(np.all(values[1:] > values[:-1])):
        return np.arange(len(values), dtype=np.int64), values  # ids written in ascending order (the usual export)
    dense = _dense_int_range(values, len(values))
    if dense is not None:  # O(n) by direct addressing instead of hashing
        low, high = dense
        present = np.zeros(high - low + 1, dtype=bool)
        present[values - low if low else values] = True
        uniques = np.flatnonzero(present).astype(values.dtype) + low
        return _offsets_if_complete(values, low, high, uniques), uniques
    import pandas as pd  # hashing beats sorting for strings and sparse ids
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques)


def _offsets_if_complete(values: np.ndarray, low: int, high: int, uniques: np.ndarray) -> np.ndarray:
    """Codes of integer `values` within [low, high], `uniques` the sorted distinct values that occur.
    When every integer of the range occurs, a code is the value's offset from `low` (the values
    themselves for ids from 0: no copy at all); otherwise through a table of the occurring values."""
    if high - low + 1 == len(uniques):
        return values.astype(np.int64, copy=False) if low == 0 else np.subtract(values, low, dtype=np.int64)
    code_of = np.full(high - low + 1, -1, dtype=np.int64)
    code_of[uniques - low] = np.arange(len(uniques))
    return code_of[values - low]


def _lookup(uniques: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Codes of `values` in the sorted `uniques` (-1 when absent), vectorised."""
    if uniques.size == 0:
        return np.full(len(values), -1, dtype=np.int64)
    dense = _dense_int_range(uniques, len(uniques))
    if dense is not None and np.issubdtype(values.dtype, np.integer):
        low, high = dense
        if values.size and low <= values.min() and values.max() <= high:
            return _offsets_if_complete(values, low, high, uniques)
        # padded table: slot 0 and the last slot answer -1 for values below and above the range
        code_of = np.full(high - low + 3, -1, dtype=np.int64)
        code_of[uniques - low + 1] = np.arange(len(uniques))
        index = values - (low - 1)
        if index.size and (index.min() < 0 or index.max() > high - low + 2):
            np.clip(index, 0, high - low + 2, out=index)
        return code_of[index]
    if values.dtype == object or uniques.dtype == object:
        # strings: Arrow's hash lookup, about 5x faster than a binary search comparing Python strings
        import pyarrow.compute as pc
        try:
            codes = pc.index_in(pa.array(values), value_set=pa.array(uniques))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return np.full(len(values), -1, dtype=np.int64)  # mixed types (int logs, string policy): no match
        return codes.fill_null(-1).to_numpy().astype(np.int64, copy=False)
    try:
        idx = np.searchsorted(uniques, values)
    except TypeError:  # mixed types: nothing matches
        return np.full(len(values), -1, dtype=np.int64)
    idx = np.minimum(idx, uniques.size - 1)
    found = uniques[idx] == values
    return np.where(found, idx, -1).astype(np.int64)


def _to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    numbers = _fixed_width_numbers(column)
    if numbers is not None:
        return numbers
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_boolean(column.type):
        return column.to_numpy(zero_copy_only=False).astype(np.float64)
    if pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    return column.to_numpy(zero_copy_only=False)


def _fixed_width_numbers(column: pa.ChunkedArray) -> np.ndarray | None:
    """Integers or floats without nulls as NumPy, straight from the Arrow buffers (a view of a
    single chunk; several are concatenated). None for other columns. pyarrow's own to_numpy would
    import pandas, half a second of an evaluation that never uses it."""
    type_ = column.type
    if column.null_count or not (pa.types.is_integer(type_) or pa.types.is_floating(type_)):
        return None
    kind = "f" if pa.types.is_floating(type_) else ("i" if pa.types.is_signed_integer(type_) else "u")
    dtype = np.dtype(f"{kind}{type_.bit_width // 8}")
    parts = [np.frombuffer(chunk.buffers()[1], dtype=dtype, count=len(chunk), offset=chunk.offset * dtype.itemsize)
             for chunk in column.chunks if len(chunk)]
    if not parts:
        return np.empty(0, dtype=dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _float(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(_to_numpy(column), dtype=np.float64)


def load_logs(path: str | Path, rewards: Sequence[RewardSpec], *, schema: LogSchema = LogSchema(),
              need_decision_id: bool = False, need_propensity: bool = True, need_context: bool = False,
              context: Sequence[str] | None = None, extra: Sequence[str] = (),
              optional_extra: Sequence[str] = ()) -> LoggedData:
    """Read and validate the logs, reading only the columns the caller needs.

    `context` overrides the schema's context patterns with explicit column names.
    Raises `InputError` listing every problem found.
    """
    source = str(path)
    dataset = open_dataset(path)
    available = column_names(dataset)
    outcome_cols = list(dict.fromkeys(c for spec in rewards for c in spec.columns))
    ctx_cols = list(context) if context is not None else \
        (schema.context_columns(available, exclude=tuple(outcome_cols) + tuple(extra)) if need_context else [])
    import fnmatch
    act_cols = [c for c in available if need_context and c not in outcome_cols and c not in ctx_cols
                and any(fnmatch.fnmatchcase(c, p) for p in schema.action_features)]
    required = [schema.action, *outcome_cols, *extra, *ctx_cols]
    if need_propensity:
        required.append(schema.propensity)
    if need_decision_id:
        required.append(schema.decision_id)
    # decision ids group a decision's positions into one cross-fitting fold; otherwise they are not needed
    optional = [schema.position, schema.timestamp, *optional_extra, *act_cols,
                *([schema.decision_id] if need_context else [])]
    if not need_propensity:
        optional.append(schema.propensity)
    problems: list[Problem] = []
    table = read_table(source, list(dict.fromkeys(required)), optional=optional, dataset=dataset, problems=problems)
    present = set(table.column_names)
    outcome_cols = [c for c in outcome_cols if c in present]
    extra = [c for c in extra if c in present]
    ctx_cols = [c for c in ctx_cols if c in present]

    problems += v.check_not_empty(table, source)
    if table.num_rows == 0:
        raise InputError(problems)
    if schema.action in present:
        problems += v.check_key(table, source, schema.action, "action")
    has_decision = schema.decision_id in table.column_names
    if has_decision:
        problems += v.check_key(table, source, schema.decision_id, "decision id")
    for col in outcome_cols:
        problems += v.check_numeric(table, source, col, "reward")
    if schema.propensity in table.column_names:
        problems += v.check_numeric(table, source, schema.propensity, "propensity")
    for col in extra:
        problems += v.check_numeric(table, source, col, "value")
    if schema.position in table.column_names:
        problems += v.check_position(table, source, schema.position)
    if schema.timestamp in table.column_names and not pa.types.is_timestamp(table.column(schema.timestamp).type):
        problems.append(Problem(source, f"has type {table.column(schema.timestamp).type}; timestamp must be a Parquet timestamp",
                                column=schema.timestamp, fix="write timestamps as timestamp[us, tz=UTC]"))
    for col in ctx_cols:
        type_ = table.column(col).type
        if not (v._is_numeric(type_) or pa.types.is_string(type_) or pa.types.is_large_string(type_)
                or pa.types.is_dictionary(type_)):
            problems.append(Problem(source, f"has type {type_}; context must be numeric, bool or categorical",
                                    column=col, fix="encode it as a number or a string category"))
    # a column of the wrong type cannot be checked further, but the other columns still are: the user
    # sees every problem of the file at once
    unusable = {p.column for p in problems if "has type" in p.message}
    propensity = None
    if schema.propensity in table.column_names and schema.propensity not in unusable:
        propensity = _float(table.column(schema.propensity))
        problems += v.check_probability(propensity, source, schema.propensity, zero_allowed=False)
    has_position = schema.position in table.column_names
    position = None
    if has_position and schema.position not in unusable and table.column(schema.position).null_count == 0:
        position = np.asarray(_to_numpy(table.column(schema.position)), dtype=np.int64)  # negative: reported
    decision_code = decision_ids = None
    if has_decision and schema.decision_id not in unusable and table.column(schema.decision_id).null_count == 0:
        decision_code, decision_ids = _codes(_to_numpy(table.column(schema.decision_id)))
        if not has_position or position is not None:  # an unreadable position cannot tell rows apart
            slot = 0 if position is None else position - min(int(position.min()), 0)
            n_pos = 1 if position is None else int(slot.max()) + 1
            key = decision_code if position is None else decision_code * n_pos + slot
            what = "decision id and position" if position is not None else "decision id"
            problems += v.check_unique_rows(key, source, schema.decision_id, what)
    if problems:
        raise InputError(problems)

    action = _to_numpy(table.column(schema.action))
    action_code, actions = _codes(action)
    timestamp = None
    if schema.timestamp in table.column_names:
        ts = table.column(schema.timestamp)
        timestamp = ts.cast(pa.timestamp("us", tz=ts.type.tz)).to_numpy(zero_copy_only=False)
    extras = {c: _float(table.column(c)) for c in [*extra, *optional_extra] if c in table.column_names}
    # stream features: the value at each action's first logged row (they describe the stream, not the row)
    act_cols = [c for c in act_cols if c in present and v._is_numeric(table.column(c).type)]
    action_features = None
    if act_cols:
        import pandas as pd
        first_row = np.empty(len(actions), dtype=np.int64)
        first_row[action_code[::-1]] = np.arange(len(action_code) - 1, -1, -1)  # the last write is the first row
        action_features = pd.DataFrame({c: _float(table.column(c))[first_row] for c in act_cols})
    return LoggedData(
        source=source, action=action, action_code=action_code, actions=actions,
        propensity=propensity if propensity is not None else np.full(table.num_rows, np.nan),
        outcomes={c: _float(table.column(c)) for c in outcome_cols},
        decision_code=decision_code, decision_ids=decision_ids, position=position, timestamp=timestamp,
        context_table=table.select(ctx_cols) if ctx_cols else None, extra=extras, action_features=action_features,
        propensity_source="logged" if propensity is not None else "missing")


def load_catalogue(path: str | Path, logs: LoggedData, column: str = "action") -> None:
    """Attach the action catalogue (every stream that could be shown): then a policy naming an action in
    neither the logs nor the catalogue is an error, not a new stream."""
    source = str(path)
    table = read_table(source, [column], dataset=open_dataset(path))
    problems = v.check_not_empty(table, source) or v.check_key(table, source, column, "action")
    if problems:
        raise InputError(problems)
    catalogue = _to_numpy(table.column(column))
    missing = logs.actions[_lookup(np.sort(catalogue), logs.actions) < 0]
    if missing.size:
        shown = ", ".join(map(str, missing[:5].tolist()))
        raise InputError(Problem(source, f"lacks {missing.size:,} of the actions the logs show (e.g. {shown})",
                                 column=column, fix=f"use the catalogue that belongs to {logs.source}"))
    logs.catalogue = catalogue


@dataclass
class PolicyTable:
    """A candidate policy joined to the logs.

    `row[j]` is the log row that policy row j belongs to, `action_code[j]` its action, `prob[j]` its
    probability; `pi_logged[i]` is the candidate's probability of the action logged at row i.
    """

    name: str
    source: str
    row: np.ndarray
    action_code: np.ndarray
    prob: np.ndarray
    pi_logged: np.ndarray
    compact: bool = False
    #: `row` ascends (a file in decision order): the policy can be joined range of log rows by range
    in_row_order: bool = False

    def expected(self, values: np.ndarray, n: int) -> np.ndarray:
        """sum over the policy's actions of prob * values, per log row (values aligned with policy rows)."""
        return np.bincount(self.row, weights=self.prob * values, minlength=n)


def _map_rows(logs: LoggedData, decision_values: np.ndarray, position: np.ndarray | None) -> np.ndarray:
    """Log row of each (decision, position) of another table; -1 where the logs have none."""
    n_pos = logs.n_positions
    ids = logs.decision_ids
    first = logs.first_id_if_ordered
    if first is not None and (position is None or not np.any(position)) and \
            np.issubdtype(decision_values.dtype, np.integer):
        offset = decision_values.astype(np.int64, copy=False)
        offset = offset - first if first else offset
        if offset.size and (offset.min() < 0 or offset.max() >= logs.n):
            offset = np.where((offset < 0) | (offset >= logs.n), -1, offset)
        return offset
    dec = _lookup(ids, decision_values)
    pos = np.zeros(len(dec), dtype=np.int64) if position is None else position
    ok = (dec >= 0) & (pos >= 0) & (pos < n_pos)
    key = np.where(ok, dec * n_pos + pos, -1)
    row_of_key = np.full(len(ids) * n_pos, -1, dtype=np.int64)
    row_of_key[logs.row_key()] = np.arange(logs.n, dtype=np.int64)
    return np.where(ok, row_of_key[np.maximum(key, 0)], -1)


def _keyed_table(path: str | Path, logs: LoggedData, value_col: str, decision_col: str, action_col: str,
                 position_col: str, *, zero_allowed: bool, probability: bool):
    """Read a long-format table keyed by (decision, position, action) and map it onto the logs."""
    source = str(path)
    if logs.decision_ids is None:
        raise InputError(Problem(logs.source, "is missing", column=decision_col,
                                 fix="policies and predictions are joined to the logs by decision_id; add it to the logs"))
    dataset = open_dataset(path)
    problems: list[Problem] = []
    table = read_table(source, [decision_col, action_col, value_col], optional=[position_col], dataset=dataset,
                       problems=problems)
    problems += v.check_not_empty(table, source)
    if table.num_rows == 0:
        raise InputError(problems)
    row, action_code, values, found = _map_keyed(table, source, logs, value_col, decision_col, action_col,
                                                 position_col, zero_allowed=zero_allowed, probability=probability)
    return row, action_code, values, problems + found


def _map_keyed(table: pa.Table, source: str, logs: LoggedData, value_col: str, decision_col: str, action_col: str,
               position_col: str, *, zero_allowed: bool, probability: bool):
    """Validate a keyed table (a whole file, or one batch of it) and map its rows onto the logs:
    (log row, action code, value, problems), rows of decisions the logs do not have dropped."""
    problems: list[Problem] = []
    present = set(table.column_names)
    # each column is checked on its own, and what its problems leave checkable still is: the user sees
    # every problem of the file at once. None marks what could not be read.
    found: dict[str, list[Problem]] = {}
    if decision_col in present:
        found[decision_col] = v.check_key(table, source, decision_col, "decision id")
    if action_col in present:
        found[action_col] = v.check_key(table, source, action_col, "action")
    if value_col in present:
        found[value_col] = v.check_numeric(table, source, value_col, "probability" if probability else "prediction")
    has_pos = position_col in present
    if has_pos:
        found[position_col] = v.check_position(table, source, position_col)
    elif logs.n_positions > 1:
        found[position_col] = [Problem(source, f"is missing while the logs have {logs.n_positions} positions",
                                       column=position_col,
                                       fix="give the candidate's probabilities per (decision, position)")]
    decisions = None
    if decision_col in present and not found[decision_col]:
        decisions = _to_numpy(table.column(decision_col))
        if np.issubdtype(decisions.dtype, np.integer) != np.issubdtype(logs.decision_ids.dtype, np.integer):
            found[decision_col] = [Problem(source, f"has type {table.column(decision_col).type} while the logs' "
                                           f"decision ids have type {logs.decision_ids.dtype}", column=decision_col,
                                           fix=f"write {decision_col} with the logs' type")]
            decisions = None
    for column_problems in found.values():
        problems += column_problems
    values = None
    if value_col in present and not found[value_col]:
        values = _float(table.column(value_col))
        if probability:
            problems += v.check_probability(values, source, value_col, zero_allowed=zero_allowed)
    row = None
    if decisions is not None and not found.get(position_col):
        position = np.asarray(_to_numpy(table.column(position_col)), dtype=np.int64) if has_pos else None
        if position is not None:
            outside = int(np.count_nonzero((position < 0) | (position >= logs.n_positions)))
            if outside:
                problems.append(Problem(source, f"have positions the logs do not have (the logs' positions are "
                                        f"0 to {logs.n_positions - 1})", column=position_col, rows=outside,
                                        fix="number positions as the logs do, or drop the position column"))
        row = _map_rows(logs, decisions, position)
    action_code = None
    if action_col in present and not found[action_col]:
        action_code, action_problems = logs.encode_actions(_to_numpy(table.column(action_col)), source, action_col)
        problems += action_problems
    # rows of decisions outside the logs (e.g. another day) play no part; an unknown action keeps code
    # -1: it is reported, and its row still counts in the sums
    if row is None or (row.size and row.min() >= 0):
        return row, action_code, values, problems
    keep = row >= 0
    return (row[keep], None if action_code is None else action_code[keep], None if values is None else values[keep],
            problems)


class _ReadWhole(Exception):
    """A keyed file cannot be joined batch by batch (a batch has a problem, the file is unreadable or
    out of order): it is read whole instead, and every problem of it is reported at once."""


def _keyed_batches(path: str | Path, logs: LoggedData, value_col: str, decision_col: str, action_col: str,
                   position_col: str, *, zero_allowed: bool, probability: bool) -> Iterator[tuple]:
    """(log row, action code, value) of each batch of a keyed file, validated and mapped onto the logs
    like `_keyed_table` does the whole file; raises `_ReadWhole` where that cannot be done. Only a batch
    or two are in memory at a time (the Arrow table of the whole file would be a second copy of it)."""
    if logs.decision_ids is None:
        raise _ReadWhole
    dataset = open_dataset(path)
    names = dataset.schema.names
    if missing_columns(path, dataset, [decision_col, action_col, value_col]) or dataset.count_rows() == 0:
        raise _ReadWhole
    wanted = [decision_col, action_col, value_col] + ([position_col] if position_col in names else [])
    try:
        for batch in dataset.to_batches(columns=wanted, batch_size=_BATCH_ROWS):
            row, code, value, problems = _map_keyed(pa.Table.from_batches([batch]), str(path), logs, value_col,
                                                    decision_col, action_col, position_col,
                                                    zero_allowed=zero_allowed, probability=probability)
            if problems:
                raise _ReadWhole
            yield _int64(row), _int64(code), _float64(value)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError):
        raise _ReadWhole from None


class _PolicySums:
    """Per log row, accumulated over a policy's rows: its total probability, whether it lists the
    row, and its probability of the logged action; and whether its rows ascend."""

    def __init__(self, logs: LoggedData):
        self.logged_action = _int64(logs.action_code)
        self.total, self.covered, self.pi_logged = np.zeros(logs.n), np.zeros(logs.n, dtype=bool), np.zeros(logs.n)
        self.in_row_order, self.last_row = True, -1

    def add(self, row: np.ndarray, action_code: np.ndarray, prob: np.ndarray) -> None:
        ascending = _joins_module().policy_sums(row, action_code, prob, self.logged_action, self.total,
                                                self.covered, self.pi_logged)
        if row.size:
            self.in_row_order = self.in_row_order and ascending and int(row[0]) >= self.last_row
            self.last_row = int(row[-1])


def load_policy(path: str | Path, logs: LoggedData, name: str, schema: PolicySchema = PolicySchema()) -> PolicyTable:
    """Read a long-format policy, validate it against the logs (coverage, sum to one, known actions)."""
    row, action_code, prob, problems = _keyed_table(path, logs, schema.prob, schema.decision_id, schema.action,
                                                    schema.position, zero_allowed=True, probability=True)
    sums = _PolicySums(logs)
    if row is not None and prob is not None:
        # an unreadable action column leaves code -1: coverage and sums are still checked
        sums.add(_int64(row), _int64(action_code if action_code is not None else np.full(len(row), -1)),
                 _float64(prob))
    elif row is not None:  # without readable probabilities, coverage is still checked
        sums.total[:] = 1.0
        sums.covered[row] = True
    if row is not None:
        problems += v.check_sum_to_one(sums.total, sums.covered, str(path), schema.prob)
    if problems:
        raise InputError(problems)
    return PolicyTable(name=name, source=str(path), row=row, action_code=action_code, prob=prob,
                       pi_logged=sums.pi_logged, in_row_order=sums.in_row_order)


def compact_policy(logs: LoggedData, name: str) -> PolicyTable:
    """The compact form: column pi_<NAME> of the logs is the candidate's probability of the logged action."""
    column = COMPACT_PI_PREFIX + name
    if column not in logs.extra:
        raise InputError(Problem(logs.source, f"has no column {column} for the compact policy '{name}'",
                                 column=column, fix=f"add {column}, or give the policy as {name}=PATH"))
    pi = logs.extra[column]
    problems = v.check_probability(pi, logs.source, column, zero_allowed=True)
    if problems:
        raise InputError(problems)
    empty = np.zeros(0, dtype=np.int64)
    return PolicyTable(name=name, source=f"{logs.source}#{column}", row=empty, action_code=empty,
                       prob=np.zeros(0), pi_logged=pi, compact=True)


def logging_policy(logs: LoggedData) -> PolicyTable:
    """The built-in `logging` policy: it took the logged action, so its weight is 1 on every row."""
    rows = np.arange(logs.n, dtype=np.int64)
    return PolicyTable(name="logging", source="(logged actions)", row=rows, action_code=logs.action_code,
                       prob=np.broadcast_to(1.0, logs.n), pi_logged=logs.propensity, in_row_order=True)


@dataclass
class RewardPredictions:
    """User-supplied q-hat reduced to what the estimators use, per log row: `logged[i]`, the prediction
    at the logged action, and `expected[name][i]` = sum_a pi(a|x_i) q_hat(x_i, a) under each policy the
    predictions were joined to."""

    source: str
    logged: np.ndarray
    expected: dict[str, np.ndarray]

    def under(self, name: str) -> np.ndarray:
        if name not in self.expected:
            raise InputError(Problem(self.source, f"was not joined to policy '{name}'",
                                     fix="pass every policy to be evaluated to load_q_hat"))
        return self.expected[name]


class _PredictionJoin:
    """Joins predictions in CSR form (see `_joins`), for all log rows at once or range by range, to the
    logged actions and to each policy's listed actions, and counts the pairs that have no prediction."""

    LOGGED = "of the logs have no prediction for their logged action"

    def __init__(self, logs: LoggedData, policies: dict[str, PolicyTable], source: str):
        self.logs, self.policies, self.source = logs, policies, source
        self.logged = np.empty(logs.n)
        self.expected = {name: np.zeros(logs.n) for name in policies}
        self.missing = dict.fromkeys([self.LOGGED, *map(self._unpredicted, policies)], 0)

    def add(self, rows: np.ndarray, codes: np.ndarray, values: np.ndarray, first_row: int, stop: int) -> None:
        """Join the predictions of log rows first_row .. stop - 1 (`rows` ascending, in that range)."""
        _joins = _joins_module()
        start = np.empty(stop - first_row + 1, dtype=np.int64)
        _joins.row_starts(_int64(rows), first_row, start)
        start, codes, values = _readonly(start), _int64(codes), _float64(values)
        self.missing[self.LOGGED] += _joins.lookup(start, codes, values, _int64(self.logs.action_code[first_row:stop]),
                                                   self.logged[first_row:stop])
        whole = first_row == 0 and stop == self.logs.n
        for name, p in self.policies.items():
            lo, hi = (0, len(p.row)) if whole else np.searchsorted(p.row, [first_row, stop])
            self.missing[self._unpredicted(name)] += _joins.expected(
                start, codes, values, first_row, _int64(p.row[lo:hi]), _int64(p.action_code[lo:hi]),
                _float64(p.prob[lo:hi]), self.expected[name][first_row:stop])

    @staticmethod
    def _unpredicted(policy: str) -> str:
        return f"of policy '{policy}' with positive probability have no prediction"

    def add_batch(self, first: tuple, rest: tuple, first_row: int, stop: int) -> None:
        """Join log row first_row (predictions `first`) and rows first_row + 1 .. stop - 1 (`rest`)."""
        self.add(*first, first_row, first_row + 1)
        self.add(*rest, first_row + 1, stop)

    def result(self) -> RewardPredictions:
        problems = [Problem(self.source, what, column="q_hat", rows=count,
                            fix="predict q_hat for every action an evaluated policy gives positive probability, "
                                "and the logged action")
                    for what, count in self.missing.items() if count]
        if problems:
            raise InputError(problems)
        return RewardPredictions(source=self.source, logged=self.logged, expected=self.expected)


def _int64(a: np.ndarray) -> np.ndarray:
    """A read-only contiguous int64 view (a copy only when needed): the compiled joins then see one
    type per argument, so each is compiled, and loaded from Numba's cache, once."""
    return _readonly(np.ascontiguousarray(a, dtype=np.int64))


def _float64(a: np.ndarray) -> np.ndarray:
    return _readonly(np.ascontiguousarray(a, dtype=np.float64))


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


#: rows per batch when predictions are read in one pass over the file
_BATCH_ROWS = 1 << 20


def load_q_hat(path: str | Path, logs: LoggedData, policies: dict[str, PolicyTable] | None = None,
               column: str = "q_hat", schema: QHatSchema = QHatSchema()) -> RewardPredictions:
    """Read predictions of (decision, action) pairs and join them to the logged actions and to the
    long-format `policies`: every pair either needs must be predicted. A file in decision order (the
    usual export) joined to policies in decision order is read in one pass over its row groups and
    never held whole; any other file, and any file with a problem to report, is read whole."""
    policies = {name: p for name, p in (policies or {}).items() if not p.compact}
    try:
        return _q_hat_in_one_pass(path, logs, column, schema, policies)
    except _ReadWhole:
        pass
    row, action_code, values, problems = _keyed_table(path, logs, column, schema.decision_id, schema.action,
                                                      schema.position, zero_allowed=True, probability=False)
    if problems:
        raise InputError(problems)
    row, action_code = _int64(row), _int64(action_code)
    if not _joins_module().ascending_pairs(row, action_code, -1, -1):
        order = np.lexsort((action_code, row))
        row, action_code, values = row[order], action_code[order], values[order]
        # action codes stay below 2^31 (one per distinct stream): the key orders as (row, action)
        problems = v.check_unique_rows((row << 31) + action_code, str(path), schema.decision_id,
                                       "decision id and action")
        if problems:
            raise InputError(problems)
    join = _PredictionJoin(logs, policies, str(path))
    join.add(row, action_code, values, 0, logs.n)
    return join.result()


def _q_hat_in_one_pass(path: str | Path, logs: LoggedData, column: str, schema: QHatSchema,
                       policies: dict[str, PolicyTable]) -> RewardPredictions:
    """The predictions of a file in (decision, action) order, joined batch by batch: each batch's
    complete log rows are joined, and the predictions of its last row wait for the next batch, which
    may continue them. A batch is joined (compiled, without the GIL) in a second thread while the next
    one is read and mapped; each log row is joined once, so the result does not depend on timing.
    Raises `_ReadWhole` when the file or a policy is not in order."""
    if logs.first_id_if_ordered is None or not all(p.in_row_order for p in policies.values()):
        raise _ReadWhole
    _joins = _joins_module()
    join = _PredictionJoin(logs, policies, str(path))
    held = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))  # row `first_row`'s, so far
    first_row, last_code = 0, -1
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="livegate-q-hat") as pool:
        joining: Future | None = None
        for row, code, value in _keyed_batches(path, logs, column, schema.decision_id, schema.action,
                                               schema.position, zero_allowed=True, probability=False):
            if not _joins.ascending_pairs(row, code, first_row if held[0].size else -1, last_code):
                raise _ReadWhole
            if not row.size:
                continue
            last_code, last = int(code[-1]), int(row[-1])
            cont = int(np.searchsorted(row, first_row, side="right"))  # entries that continue the held row
            if last > first_row:
                split = int(np.searchsorted(row, last))
                completed = tuple(np.concatenate([h, b[:cont]]) for h, b in zip(held, (row, code, value)))
                if joining is not None:
                    joining.result()  # one batch in flight: memory stays a few batches
                joining = pool.submit(join.add_batch, completed, (row[cont:split], code[cont:split],
                                                                  value[cont:split]), first_row, last)
                held, first_row = (row[split:], code[split:], value[split:]), last
            else:
                held = tuple(np.concatenate([h, b]) for h, b in zip(held, (row, code, value)))
        if joining is not None:
            joining.result()
    join.add(*held, first_row, logs.n)
    return join.result()


_JOINS_LOADING: Future | None = None


def load_joins_in_background() -> None:
    """Start importing Numba and loading the compiled joins (about a second in a new process) in a
    background thread, so that it overlaps reading the logs; `_joins_module` waits for it."""
    global _JOINS_LOADING
    if _JOINS_LOADING is None:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livegate-joins")
        _JOINS_LOADING = pool.submit(_warm_joins)
        pool.shutdown(wait=False)


def _warm_joins() -> None:
    """Call each join once on one row, with the argument types of every later call."""
    from . import _joins
    zero, one, value = _int64(np.zeros(1)), _int64(np.ones(1)), _float64(np.ones(1))
    start = _int64(np.array([0, 1]))
    _joins.policy_sums(zero, zero, value, zero, np.zeros(1), np.zeros(1, dtype=bool), np.zeros(1))
    _joins.ascending_pairs(zero, zero, -1, -1)
    _joins.row_starts(zero, 0, np.zeros(2, dtype=np.int64))
    _joins.lookup(start, one, value, one, np.zeros(1))
    _joins.expected(start, one, value, 0, zero, one, value, np.zeros(1))


def _joins_module():
    if _JOINS_LOADING is not None:
        _JOINS_LOADING.result()
    from . import _joins
    return _joins


def compact_columns(names: Sequence[str]) -> list[str]:
    return [p + n for n in names for p in (COMPACT_PI_PREFIX, COMPACT_QPI_PREFIX)]
