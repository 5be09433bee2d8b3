"""Long-format tables keyed by (decision, position, action), i.e. policies and reward predictions,
mapped onto the logs: each of their rows becomes (log row, action code, value), validated.

A table is read whole (`keyed_table`) or batch by batch (`keyed_batches`, for predictions in decision
order: only a batch or two in memory).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import validation as v
from .arrow import to_float, to_int64, to_key
from .encoding import lookup
from .errors import InputError, Problem
from .kernels import float64, int64
from .loading import missing_columns, read_table
from .logged import LoggedData
from .schema import LogSchema

#: rows per batch when predictions are read in one pass over the file
BATCH_ROWS = 1 << 20


@dataclass(frozen=True)
class KeyColumns:
    """The column names of a keyed table: the value column (prob, q_hat) and its keys."""

    value: str
    decision_id: str
    action: str
    position: str

    @classmethod
    def resolve(cls, value: str, schema, available: Sequence[str]) -> KeyColumns:
        """Keys named by an explicit PolicySchema/QHatSchema as they are; by a LogSchema (the logs'
        mapping), the mapped name where the table has it, else the contract's."""
        if isinstance(schema, LogSchema):
            return cls(value, *(schema.keyed_column(role, available) for role in ("decision_id", "action", "position")))
        return cls(value, schema.decision_id, schema.action, schema.position)


class ReadWhole(Exception):
    """A keyed file cannot be joined batch by batch (a batch has a problem, the file is unreadable or
    out of order): it is read whole instead, and every problem of it is reported at once."""


def keyed_table(dataset, source: str, logs: LoggedData, cols: KeyColumns, *, zero_allowed: bool, probability: bool):
    """Read a long-format table keyed by (decision, position, action) and map it onto the logs:
    (log row, action code, value, problems), None for what could not be read."""
    if logs.decision_ids is None:
        raise InputError(Problem(logs.source, "is missing", column=logs.schema.decision_id,
                                 fix="policies and predictions are joined to the logs by decision_id; add it to the logs"))
    problems: list[Problem] = []
    table = read_table(source, [cols.decision_id, cols.action, cols.value], optional=[cols.position], dataset=dataset,
                       problems=problems)
    problems += v.check_not_empty(table, source)
    if table.num_rows == 0:
        raise InputError(problems)
    row, action_code, values, found = map_keyed(table, source, logs, cols, zero_allowed=zero_allowed,
                                                probability=probability)
    return row, action_code, values, problems + found


def keyed_batches(dataset, source: str, logs: LoggedData, cols: KeyColumns, *, zero_allowed: bool,
                  probability: bool) -> Iterator[tuple]:
    """(log row, action code, value) of each batch of a keyed table, validated and mapped onto the logs
    like `keyed_table` does the whole table; raises `ReadWhole` where that cannot be done. Only a batch
    or two are in memory at a time (the Arrow table of the whole file would be a second copy of it)."""
    if logs.decision_ids is None:
        raise ReadWhole
    names = dataset.schema.names
    if missing_columns(source, dataset, [cols.decision_id, cols.action, cols.value]) or dataset.count_rows() == 0:
        raise ReadWhole
    wanted = [cols.decision_id, cols.action, cols.value] + ([cols.position] if cols.position in names else [])
    try:
        for batch in dataset.to_batches(columns=wanted, batch_size=BATCH_ROWS):
            row, code, value, problems = map_keyed(pa.Table.from_batches([batch]), source, logs, cols,
                                                   zero_allowed=zero_allowed, probability=probability)
            if problems:
                raise ReadWhole
            yield int64(row), int64(code), float64(value)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError):
        raise ReadWhole from None


def map_keyed(table: pa.Table, source: str, logs: LoggedData, cols: KeyColumns, *, zero_allowed: bool,
              probability: bool):
    """Validate a keyed table (a whole file, or one batch of it) and map its rows onto the logs:
    (log row, action code, value, problems), rows of decisions the logs do not have dropped."""
    problems: list[Problem] = []
    present = set(table.column_names)
    # each column is checked on its own, and what its problems leave checkable still is: the user sees
    # every problem of the file at once. None marks what could not be read.
    found: dict[str, list[Problem]] = {}
    if cols.decision_id in present:
        found[cols.decision_id] = v.check_key(table, source, cols.decision_id, "decision id")
    if cols.action in present:
        found[cols.action] = v.check_key(table, source, cols.action, "action")
    if cols.value in present:
        found[cols.value] = v.check_numeric(table, source, cols.value, "probability" if probability else "prediction")
    has_pos = cols.position in present
    if has_pos:
        found[cols.position] = v.check_position(table, source, cols.position)
    elif logs.n_positions > 1:
        found[cols.position] = [Problem(source, f"is missing while the logs have {logs.n_positions} positions",
                                        column=cols.position,
                                        fix="give the candidate's probabilities per (decision, position)")]
    decisions = None
    if cols.decision_id in present and not found[cols.decision_id]:
        decisions = to_key(table.column(cols.decision_id))
        if np.issubdtype(decisions.dtype, np.integer) != np.issubdtype(logs.decision_ids.dtype, np.integer):
            found[cols.decision_id] = [Problem(source, f"has type {table.column(cols.decision_id).type} while the "
                                               f"logs' decision ids have type {logs.decision_ids.dtype}",
                                               column=cols.decision_id,
                                               fix=f"write {cols.decision_id} with the logs' type")]
            decisions = None
    for column_problems in found.values():
        problems += column_problems
    values = None
    if cols.value in present and not found[cols.value]:
        values = to_float(table.column(cols.value))
        if probability:
            problems += v.check_probability(values, source, cols.value, zero_allowed=zero_allowed)
    row = None
    if decisions is not None and not found.get(cols.position):
        position = to_int64(table.column(cols.position)) if has_pos else None
        if position is not None:
            problems += check_positions_in_logs(position, logs, source, cols.position)
        row = map_rows(logs, decisions, position)
    action_code = None
    if cols.action in present and not found[cols.action]:
        action_code, action_problems = logs.encode_actions(to_key(table.column(cols.action)), source, cols.action)
        problems += action_problems
    # rows of decisions outside the logs (e.g. another day) play no part; an unknown action keeps code
    # -1: it is reported, and its row still counts in the sums
    if row is None or (row.size and row.min() >= 0):
        return row, action_code, values, problems
    keep = row >= 0
    return (row[keep], None if action_code is None else action_code[keep], None if values is None else values[keep],
            problems)


def check_positions_in_logs(position: np.ndarray, logs: LoggedData, source: str, column: str) -> list[Problem]:
    outside = int(np.count_nonzero((position < 0) | (position >= logs.n_positions)))
    if not outside:
        return []
    return [Problem(source, f"have positions the logs do not have (the logs' positions are 0 to "
                    f"{logs.n_positions - 1})", column=column, rows=outside,
                    fix="number positions as the logs do, or drop the position column")]


def map_rows(logs: LoggedData, decision_values: np.ndarray, position: np.ndarray | None) -> np.ndarray:
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
    dec = lookup(ids, decision_values)
    pos = np.zeros(len(dec), dtype=np.int64) if position is None else position
    ok = (dec >= 0) & (pos >= 0) & (pos < n_pos)
    key = np.where(ok, dec * n_pos + pos, -1)
    row_of_key = np.full(len(ids) * n_pos, -1, dtype=np.int64)
    row_of_key[logs.row_key()] = np.arange(logs.n, dtype=np.int64)
    return np.where(ok, row_of_key[np.maximum(key, 0)], -1)
