"""The validated, encoded data the estimators read: `LoggedData` (the logs), `PolicyTable` (a
candidate policy joined to them) and `RewardPredictions` (user q-hat joined to both).

They hold NumPy arrays only; the loaders that build them are `logs.load_logs`,
`policies.load_policy` and `q_hat.load_q_hat`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from . import validation as v
from .encoding import lookup
from .errors import InputError, Problem
from .rewards import RewardSpec
from .schema import LogSchema


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
    #: the column names the logs were read with: policies and predictions are read with the same
    #: mapped names for decision_id, action and position (see `LogSchema.keyed_column`)
    schema: LogSchema = field(default_factory=LogSchema)
    #: things the user should know that do not stop the evaluation, as plain sentences
    warnings: list[str] = field(default_factory=list)
    #: the rows grouped into viewer sessions (loaded with `need_sessions`), else None
    sessions: "SessionIndex | None" = None  # noqa: F821

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
        codes = lookup(self.actions, values)
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
        new = [a for a in seen[np.sort(first)] if a not in known_before]  # distinct new streams, in order of appearance
        self.unlogged_actions.extend(new)
        known = np.asarray(self.unlogged_actions, dtype=values.dtype)
        order = np.argsort(known, kind="stable")
        where = np.searchsorted(known[order], values[missing])
        codes[missing] = len(self.actions) + order[np.minimum(where, len(known) - 1)]
        return codes, problems

    @property
    def n_positions(self) -> int:
        return 1 if self.position is None else int(self.position.max()) + 1

    @functools.cached_property
    def rows_per_position(self) -> np.ndarray:
        """How many log rows each position 0 .. n_positions - 1 has."""
        if self.position is None:
            return np.array([self.n], dtype=np.int64)
        return np.bincount(self.position, minlength=self.n_positions)

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


@dataclass(frozen=True)
class PositionDistribution:
    """A context-free policy: the same distribution over actions at every decision, one per position.
    Position p's actions with positive probability are `action_code[start[p]:start[p + 1]]`, with
    probabilities `prob[...]`; `table[p, code]` is the probability of any action code at p."""

    start: np.ndarray
    action_code: np.ndarray
    prob: np.ndarray
    table: np.ndarray
    by_position: bool   # the file has a position column (otherwise one distribution for every position)

    def at(self, position: np.ndarray | None, action_code: np.ndarray) -> np.ndarray:
        """The probability of each row's action: one gather from the small table, no per-row policy rows."""
        if position is None or not self.by_position:
            return self.table[0][action_code]
        return self.table[position, action_code]


class PolicyTable:
    """A candidate policy joined to the logs.

    `row[j]` is the log row that policy row j belongs to, `action_code[j]` its action, `prob[j]` its
    probability; `pi_logged[i]` is the candidate's probability of the action logged at row i.

    A context-free policy (`distribution` given, no decision ids in its file) keeps only its small
    per-position distribution: `pi_logged` is looked up from it, which is all the IPS family needs.
    `row`, `action_code` and `prob` (n rows x k actions) are built on first use, by a DM/DR reward
    model, a q-hat join or the MIPS weights; `materialised` tells whether they were.
    """

    def __init__(self, name: str, source: str, row: np.ndarray | None = None, action_code: np.ndarray | None = None,
                 prob: np.ndarray | None = None, pi_logged: np.ndarray | None = None, compact: bool = False,
                 in_row_order: bool = False, distribution: PositionDistribution | None = None,
                 log_position: np.ndarray | None = None):
        if distribution is None and (row is None or action_code is None or prob is None):
            raise TypeError("PolicyTable needs row, action_code and prob, or a distribution")
        self.name, self.source, self.pi_logged, self.compact = name, source, pi_logged, compact
        #: `row` ascends (a file in decision order): the policy can be joined range of log rows by range
        self.in_row_order = in_row_order or distribution is not None
        self.distribution = distribution
        self._log_position = log_position
        self._row, self._action_code, self._prob = row, action_code, prob

    def __repr__(self) -> str:
        form = "context-free" if self.distribution is not None else "compact" if self.compact else "long"
        return f"PolicyTable(name={self.name!r}, source={self.source!r}, form={form}, n={len(self.pi_logged)})"

    @property
    def context_free(self) -> bool:
        return self.distribution is not None

    @property
    def materialised(self) -> bool:
        return self._row is not None

    @property
    def row(self) -> np.ndarray:
        self._materialise()
        return self._row

    @property
    def action_code(self) -> np.ndarray:
        self._materialise()
        return self._action_code

    @property
    def prob(self) -> np.ndarray:
        self._materialise()
        return self._prob

    def expected(self, values: np.ndarray, n: int) -> np.ndarray:
        """sum over the policy's actions of prob * values, per log row (values aligned with policy rows)."""
        return np.bincount(self.row, weights=self.prob * values, minlength=n)

    def unlogged_probability(self, n_logged_actions: int) -> float:
        """The total probability, summed over log rows, on actions no log row shows (codes >=
        `n_logged_actions`); divided by n it is the diagnostics' unlogged mass. A context-free policy
        answers from its distribution, without building its per-row form."""
        d = self.distribution
        if d is None:
            return float(np.sum(self.prob[self.action_code >= n_logged_actions]))
        slot = np.repeat(np.arange(len(d.start) - 1), np.diff(d.start))
        unlogged = np.bincount(slot, weights=np.where(d.action_code >= n_logged_actions, d.prob, 0.0),
                               minlength=len(d.start) - 1)
        return float(unlogged @ self._rows_per_position())

    def _rows_per_position(self) -> np.ndarray:
        n_slots = len(self.distribution.start) - 1
        if self._log_position is None or not self.distribution.by_position:
            counts = np.zeros(n_slots)
            counts[0] = len(self.pi_logged)
            return counts
        return np.bincount(self._log_position, minlength=n_slots)[:n_slots].astype(np.float64)

    def _materialise(self) -> None:
        """The per-(log row, action) form of a context-free policy, rows ascending: n x k entries,
        only for the consumers that need a value per (row, action)."""
        if self._row is not None:
            return
        d, n = self.distribution, len(self.pi_logged)
        per_slot = np.diff(d.start)
        if self._log_position is None or not d.by_position:
            k = int(per_slot[0])
            self._row = np.repeat(np.arange(n, dtype=np.int64), k)
            self._action_code = np.tile(d.action_code[:k], n)
            self._prob = np.tile(d.prob[:k], n)
            return
        position = self._log_position
        per_row = per_slot[position]
        row = np.repeat(np.arange(n, dtype=np.int64), per_row)
        first_entry = np.cumsum(per_row) - per_row          # each log row's first entry
        entry = np.arange(len(row), dtype=np.int64)
        entry -= first_entry[row]                            # rank of the entry within its row
        entry += d.start[position][row]                      # index into the distribution
        self._row, self._action_code, self._prob = row, d.action_code[entry], d.prob[entry]


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
