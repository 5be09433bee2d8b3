"""`load_q_hat`: user reward-model predictions of (decision, action) pairs joined to the logged
actions and to each long-format policy, reduced to per-log-row arrays (`RewardPredictions`)."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from . import keyed
from . import validation as v
from .errors import InputError, Problem
from .kernels import float64, int64, joins_module, readonly
from .loading import column_names, open_dataset, source_name
from .logged import LoggedData, PolicyTable, RewardPredictions
from .schema import LogSchema, QHatSchema


def load_q_hat(source, logs: LoggedData, policies: dict[str, PolicyTable] | None = None,
               column: str = "q_hat", schema: QHatSchema | LogSchema | None = None, *,
               name: str | None = None) -> RewardPredictions:
    """Read predictions of (decision, action) pairs and join them to the logged actions and to the
    long-format `policies`: every pair either needs must be predicted.

    `source` is a Parquet path, a pandas DataFrame or a pyarrow Table (`name` names it in messages,
    default "predictions"). Keys are read under the logs' mapped names where the table has them,
    else the contract's (see `load_policy`); an explicit `QHatSchema` names them exactly. A table in
    decision order (the usual export) joined to policies in decision order is read in one pass over
    its row groups and never held whole; any other, and any with a problem to report, is read whole.
    """
    label = source_name(source, name, "predictions")
    dataset = open_dataset(source, label)
    cols = keyed.KeyColumns.resolve(column, logs.schema if schema is None else schema, column_names(dataset))
    policies = {n: p for n, p in (policies or {}).items() if not p.compact}
    try:
        return _q_hat_in_one_pass(dataset, label, logs, cols, policies)
    except keyed.ReadWhole:
        pass
    row, action_code, values, problems = keyed.keyed_table(dataset, label, logs, cols, zero_allowed=True,
                                                           probability=False)
    if problems:
        raise InputError(problems)
    row, action_code = int64(row), int64(action_code)
    if not joins_module().ascending_pairs(row, action_code, -1, -1):
        order = np.lexsort((action_code, row))
        row, action_code, values = row[order], action_code[order], values[order]
        # action codes stay below 2^31 (one per distinct stream): the key orders as (row, action)
        problems = v.check_unique_rows((row << 31) + action_code, label, cols.decision_id, "decision id and action")
        if problems:
            raise InputError(problems)
    join = _PredictionJoin(logs, policies, label, cols.value)
    join.add(row, action_code, values, 0, logs.n)
    return join.result()


class _PredictionJoin:
    """Joins predictions in CSR form (see `_joins`), for all log rows at once or range by range, to the
    logged actions and to each policy's listed actions, and counts the pairs that have no prediction."""

    LOGGED = "of the logs have no prediction for their logged action"

    def __init__(self, logs: LoggedData, policies: dict[str, PolicyTable], source: str, column: str):
        self.logs, self.policies, self.source, self.column = logs, policies, source, column
        self.logged = np.empty(logs.n)
        self.expected = {name: np.zeros(logs.n) for name in policies}
        self.missing = dict.fromkeys([self.LOGGED, *map(self._unpredicted, policies)], 0)

    def add(self, rows: np.ndarray, codes: np.ndarray, values: np.ndarray, first_row: int, stop: int) -> None:
        """Join the predictions of log rows first_row .. stop - 1 (`rows` ascending, in that range)."""
        _joins = joins_module()
        start = np.empty(stop - first_row + 1, dtype=np.int64)
        _joins.row_starts(int64(rows), first_row, start)
        start, codes, values = readonly(start), int64(codes), float64(values)
        self.missing[self.LOGGED] += _joins.lookup(start, codes, values, int64(self.logs.action_code[first_row:stop]),
                                                   self.logged[first_row:stop])
        whole = first_row == 0 and stop == self.logs.n
        for name, p in self.policies.items():
            lo, hi = (0, len(p.row)) if whole else np.searchsorted(p.row, [first_row, stop])
            self.missing[self._unpredicted(name)] += _joins.expected(
                start, codes, values, first_row, int64(p.row[lo:hi]), int64(p.action_code[lo:hi]),
                float64(p.prob[lo:hi]), self.expected[name][first_row:stop])

    @staticmethod
    def _unpredicted(policy: str) -> str:
        return f"of policy '{policy}' with positive probability have no prediction"

    def add_batch(self, first: tuple, rest: tuple, first_row: int, stop: int) -> None:
        """Join log row first_row (predictions `first`) and rows first_row + 1 .. stop - 1 (`rest`)."""
        self.add(*first, first_row, first_row + 1)
        self.add(*rest, first_row + 1, stop)

    def result(self) -> RewardPredictions:
        problems = [Problem(self.source, what, column=self.column, rows=count,
                            fix="predict q_hat for every action an evaluated policy gives positive probability, "
                                "and the logged action")
                    for what, count in self.missing.items() if count]
        if problems:
            raise InputError(problems)
        return RewardPredictions(source=self.source, logged=self.logged, expected=self.expected)


def _q_hat_in_one_pass(dataset, source: str, logs: LoggedData, cols: keyed.KeyColumns,
                       policies: dict[str, PolicyTable]) -> RewardPredictions:
    """The predictions of a table in (decision, action) order, joined batch by batch: each batch's
    complete log rows are joined, and the predictions of its last row wait for the next batch, which
    may continue them. A batch is joined (compiled, without the GIL) in a second thread while the next
    one is read and mapped; each log row is joined once, so the result does not depend on timing.
    Raises `ReadWhole` when the table or a policy is not in order."""
    if logs.first_id_if_ordered is None or not all(p.in_row_order for p in policies.values()):
        raise keyed.ReadWhole
    _joins = joins_module()
    join = _PredictionJoin(logs, policies, source, cols.value)
    held = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))  # row `first_row`'s, so far
    first_row, last_code = 0, -1
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="livegate-q-hat") as pool:
        joining: Future | None = None
        for row, code, value in keyed.keyed_batches(dataset, source, logs, cols, zero_allowed=True, probability=False):
            if not _joins.ascending_pairs(row, code, first_row if held[0].size else -1, last_code):
                raise keyed.ReadWhole
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
