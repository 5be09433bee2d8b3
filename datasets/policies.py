"""Candidate policies joined to the logs: `load_policy` (long format, per decision or context-free),
`compact_policy` (pi_<NAME> columns of the logs) and `logging_policy` (the built-in one)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import validation as v
from .arrow import to_float, to_int64, to_key
from .errors import InputError, Problem
from .keyed import KeyColumns, check_positions_in_logs, keyed_table
from .kernels import float64, int64, joins_module
from .loading import column_names, open_dataset, read_table, source_name
from .logged import LoggedData, PolicyTable, PositionDistribution
from .schema import COMPACT_PI_PREFIX, COMPACT_QPI_PREFIX, LogSchema, PolicySchema


def load_policy(source, logs: LoggedData, name: str, schema: PolicySchema | LogSchema | None = None, *,
                source_label: str | None = None) -> PolicyTable:
    """Read a long-format policy, validate it against the logs (coverage, sum to one, known actions).

    `source` is a Parquet path, a pandas DataFrame or a pyarrow Table (named "policy NAME" in
    messages unless `source_label` is given). Its columns are `decision_id, action, prob[, position]`,
    by default under the names the logs were read with (`logs.schema`) where the table has them, else
    the contract's; an explicit `PolicySchema` names them exactly. Without a decision id column the
    policy is context-free: its distribution applies to every decision (per position when it has a
    position column), and it is never expanded to one row per decision unless a consumer asks for
    `row`/`action_code`/`prob`.
    """
    label = source_name(source, source_label, f"policy {name}")
    dataset = open_dataset(source, label)
    available = column_names(dataset)
    if b"livegate.learn" in (getattr(dataset.schema, "metadata", None) or {}):  # learned: it records its training rows
        from livegate.ope.learn.split import check_not_trained_on
        check_not_trained_on(dataset, logs, name)
    cols = KeyColumns.resolve(PolicySchema.prob if schema is None or isinstance(schema, LogSchema) else schema.prob,
                              logs.schema if schema is None else schema, available)
    if cols.decision_id not in available and cols.action in available and cols.value in available:
        return _context_free_policy(dataset, label, logs, name, cols)
    return _per_decision_policy(dataset, label, logs, name, cols)


class _PolicySums:
    """Per log row, accumulated over a policy's rows: its total probability, whether it lists the
    row, and its probability of the logged action; and whether its rows ascend."""

    def __init__(self, logs: LoggedData):
        self.logged_action = int64(logs.action_code)
        self.total, self.covered, self.pi_logged = np.zeros(logs.n), np.zeros(logs.n, dtype=bool), np.zeros(logs.n)
        self.in_row_order, self.last_row = True, -1

    def add(self, row: np.ndarray, action_code: np.ndarray, prob: np.ndarray) -> None:
        ascending = joins_module().policy_sums(row, action_code, prob, self.logged_action, self.total,
                                               self.covered, self.pi_logged)
        if row.size:
            self.in_row_order = self.in_row_order and ascending and int(row[0]) >= self.last_row
            self.last_row = int(row[-1])


def _per_decision_policy(dataset, source: str, logs: LoggedData, name: str, cols: KeyColumns) -> PolicyTable:
    row, action_code, prob, problems = keyed_table(dataset, source, logs, cols, zero_allowed=True, probability=True)
    sums = _PolicySums(logs)
    if row is not None and prob is not None:
        # an unreadable action column leaves code -1: coverage and sums are still checked
        sums.add(int64(row), int64(action_code if action_code is not None else np.full(len(row), -1)),
                 float64(prob))
    elif row is not None:  # without readable probabilities, coverage is still checked
        sums.total[:] = 1.0
        sums.covered[row] = True
    if row is not None:
        problems += v.check_sum_to_one(sums.total, sums.covered, source, cols.value)
    if problems:
        raise InputError(problems)
    return PolicyTable(name=name, source=source, row=row, action_code=action_code, prob=prob,
                       pi_logged=sums.pi_logged, in_row_order=sums.in_row_order)


def _context_free_policy(dataset, source: str, logs: LoggedData, name: str, cols: KeyColumns) -> PolicyTable:
    """`action, prob[, position]`: one distribution per position (or one for all), validated like a
    per-decision policy; `pi_logged` is one gather from the (positions x actions) table."""
    problems: list[Problem] = []
    table = read_table(source, [cols.action, cols.value], optional=[cols.position], dataset=dataset,
                       problems=problems)
    problems += v.check_not_empty(table, source)
    if table.num_rows == 0:
        raise InputError(problems)
    by_position = cols.position in table.column_names
    column_problems = {cols.action: v.check_key(table, source, cols.action, "action"),
                       cols.value: v.check_numeric(table, source, cols.value, "probability"),
                       cols.position: v.check_position(table, source, cols.position) if by_position else []}
    for found in column_problems.values():
        problems += found
    prob = action_code = position = None
    if not column_problems[cols.value]:
        prob = to_float(table.column(cols.value))
        problems += v.check_probability(prob, source, cols.value, zero_allowed=True)
    if not column_problems[cols.action]:
        action_code, found = logs.encode_actions(to_key(table.column(cols.action)), source, cols.action)
        problems += found
    if by_position and not column_problems[cols.position]:
        position = to_int64(table.column(cols.position))
        problems += check_positions_in_logs(position, logs, source, cols.position)
    if problems or prob is None or action_code is None or (by_position and position is None):
        raise InputError(problems)
    slot = position if by_position else np.zeros(len(prob), dtype=np.int64)
    n_slots = logs.n_positions if by_position else 1
    policy_rows = np.bincount(slot, minlength=n_slots)
    log_rows = logs.rows_per_position if by_position else np.array([logs.n])
    problems += v.check_distribution_sums(np.bincount(slot, weights=prob, minlength=n_slots), policy_rows > 0,
                                          log_rows, policy_rows, source, cols.value,
                                          cols.position if by_position else None)
    if problems:
        raise InputError(problems)
    distribution = _distribution(slot, action_code, prob, n_slots, logs.n_action_codes, by_position)
    return PolicyTable(name=name, source=source, pi_logged=distribution.at(logs.position, logs.action_code),
                       distribution=distribution, log_position=logs.position)


def _distribution(slot: np.ndarray, action_code: np.ndarray, prob: np.ndarray, n_slots: int, n_codes: int,
                  by_position: bool) -> PositionDistribution:
    """The (positions x actions) table, an action listed twice at a position getting the sum of its
    probabilities (as in a per-decision policy), and its positive entries by position."""
    table = np.bincount(slot * n_codes + action_code, weights=prob, minlength=n_slots * n_codes).reshape(n_slots, n_codes)
    at, code = np.nonzero(table > 0)   # row-major: by position, then action code
    start = np.searchsorted(at, np.arange(n_slots + 1))
    return PositionDistribution(start=start.astype(np.int64), action_code=code.astype(np.int64),
                                prob=table[at, code], table=table, by_position=by_position)


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


def compact_columns(names: Sequence[str]) -> list[str]:
    """The logs' columns of compact policies `names`: pi_<NAME> and qpi_<NAME> of each."""
    return [p + n for n in names for p in (COMPACT_PI_PREFIX, COMPACT_QPI_PREFIX)]


def logging_policy(logs: LoggedData) -> PolicyTable:
    """The built-in `logging` policy: it took the logged action, so its weight is 1 on every row."""
    rows = np.arange(logs.n, dtype=np.int64)
    return PolicyTable(name="logging", source="(logged actions)", row=rows, action_code=logs.action_code,
                       prob=np.broadcast_to(1.0, logs.n), pi_logged=logs.propensity, in_row_order=True)
