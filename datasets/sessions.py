"""Viewer sessions in the logs: rows grouped by `session_id` and ordered by `step` (DESIGN section 2).

`SessionIndex` is all the session-level estimators need of the grouping: the rows in (session, step)
order, where each session starts, and which rows are alive at each step. It is built once, after
`validation.check_sessions` has accepted the steps.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SessionIndex:
    """Rows of the logs in (session, step) order. Arrays named `*_sorted` or indexed by sorted row
    position follow that order; `order[k]` is the logs' row at sorted position k."""

    order: np.ndarray      # (n,) logs row of each sorted position
    start: np.ndarray      # (S + 1,) offsets: session s holds sorted positions start[s] .. start[s+1] - 1
    ids: np.ndarray        # (S,) the original session ids, in the order of `start`

    @property
    def n_sessions(self) -> int:
        return len(self.start) - 1

    @property
    def n_rows(self) -> int:
        return len(self.order)

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.start)

    @property
    def horizon(self) -> int:
        """The longest session's number of steps."""
        return int(self.lengths.max()) if self.n_sessions else 0

    @functools.cached_property
    def session(self) -> np.ndarray:
        """(n,) session index 0..S-1 of each sorted position."""
        return np.repeat(np.arange(self.n_sessions, dtype=np.int64), self.lengths)

    @functools.cached_property
    def step(self) -> np.ndarray:
        """(n,) step 0, 1, ... of each sorted position (steps are validated to be consecutive from 0)."""
        return np.arange(self.n_rows, dtype=np.int64) - self.start[self.session]

    @functools.cached_property
    def next_position(self) -> np.ndarray:
        """(n,) sorted position of the same session's next step; -1 at its last step (it ends there)."""
        nxt = np.arange(1, self.n_rows + 1, dtype=np.int64)
        nxt[self.start[1:] - 1] = -1
        return nxt

    @functools.cached_property
    def alive(self) -> np.ndarray:
        """(horizon,) how many sessions have a step t, for t = 0 .. horizon - 1."""
        return np.bincount(self.step, minlength=self.horizon)

    @functools.cached_property
    def _by_length(self) -> np.ndarray:
        """Sessions, longest first: the sessions alive at step t are the first alive[t] of them."""
        return np.argsort(-self.lengths, kind="stable")

    def positions_at(self, t: int) -> np.ndarray:
        """Sorted positions of the rows at step t (one per session alive at t)."""
        return self.start[self._by_length[: self.alive[t]]] + t

    def last_position(self) -> np.ndarray:
        """(S,) sorted position of each session's last step."""
        return self.start[1:] - 1

    def sort(self, values: np.ndarray) -> np.ndarray:
        """A per-row array of the logs, in sorted order."""
        return values[self.order]

    def to_sorted_rows(self, rows: np.ndarray) -> np.ndarray:
        """Logs row indices (e.g. a policy table's `row`) as sorted positions."""
        inverse = np.empty(self.n_rows, dtype=np.int64)
        inverse[self.order] = np.arange(self.n_rows, dtype=np.int64)
        return inverse[rows]

    def per_session(self, values: np.ndarray) -> np.ndarray:
        """Sum of a per-sorted-position array over each session: (S,)."""
        return np.bincount(self.session, weights=values, minlength=self.n_sessions)

    def cumulative_product(self, values: np.ndarray) -> np.ndarray:
        """prod_{k <= t} values_k within each session, at every sorted position. One vectorised step
        per step index (not per row): exact, with zeros, where a log-space cumulative sum is not."""
        out = np.array(values, dtype=np.float64, copy=True)
        for t in range(1, self.horizon):
            at = self.positions_at(t)
            out[at] *= out[at - 1]
        return out

    def previous(self, values: np.ndarray, first: float) -> np.ndarray:
        """values at the same session's previous step; `first` at step 0."""
        out = np.empty_like(values, dtype=np.float64)
        out[1:] = values[:-1]
        out[self.start[:-1]] = first
        return out


def build_session_index(session_code: np.ndarray, session_ids: np.ndarray, step: np.ndarray) -> SessionIndex:
    """The index of validated sessions (`validation.check_sessions` accepted them)."""
    order = np.lexsort((step, session_code))
    counts = np.bincount(session_code, minlength=len(session_ids))
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return SessionIndex(order=order.astype(np.int64), start=start, ids=session_ids)
