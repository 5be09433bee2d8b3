"""The candidate streams of each row as a ragged array, and the segment operations over it: softmax,
greedy, and the written policy's top-k and exploration floor."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livegate.datasets.errors import InputError, Problem


@dataclass
class Candidates:
    """The streams each log row may choose from: entries m = start[i] .. start[i+1]-1 belong to row i,
    `action` holds their action codes (ascending within a row)."""

    row: np.ndarray
    action: np.ndarray
    start: np.ndarray

    @classmethod
    def from_pairs(cls, row: np.ndarray, action: np.ndarray, n_rows: int) -> "Candidates":
        key = np.unique(row.astype(np.int64) * (int(action.max(initial=0)) + 1) + action)
        width = int(action.max(initial=0)) + 1
        row, action = key // width, key % width
        counts = np.bincount(row, minlength=n_rows)
        if np.any(counts == 0):
            raise InputError(Problem("--candidates", f"{int(np.sum(counts == 0)):,} decisions have no candidate stream",
                                     fix="list at least one candidate stream for every decision"))
        return cls(row=row, action=action, start=np.concatenate([[0], np.cumsum(counts)]))

    @property
    def n_rows(self) -> int:
        return len(self.start) - 1

    def subset(self, rows: np.ndarray) -> "Candidates":
        """The candidates of `rows` (ascending row indices), renumbered 0 .. len(rows) - 1."""
        counts = np.diff(self.start)[rows]
        take = np.repeat(self.start[rows], counts) + _ranks(counts)
        return Candidates(row=np.repeat(np.arange(len(rows)), counts), action=self.action[take],
                          start=np.concatenate([[0], np.cumsum(counts)]))


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c-1 for each count c, concatenated."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


def _segment_sum(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    return np.add.reduceat(values, start[:-1], axis=0)


def softmax_segments(scores: np.ndarray, cand: Candidates) -> np.ndarray:
    """Softmax of `scores` within each row's candidates (max-shifted: no overflow)."""
    shift = np.maximum.reduceat(scores, cand.start[:-1])[cand.row]
    e = np.exp(scores - shift)
    return e / _segment_sum(e, cand.start)[cand.row]


def greedy_segments(scores: np.ndarray, cand: Candidates) -> np.ndarray:
    """1 on each row's highest score (the first, i.e. the lowest action code, on ties), else 0."""
    best = np.maximum.reduceat(scores, cand.start[:-1])[cand.row]
    is_best = scores >= best
    first = np.minimum.reduceat(np.where(is_best, np.arange(len(scores)), len(scores)), cand.start[:-1])
    out = np.zeros(len(scores))
    out[first] = 1.0
    return out


def finish(prob: np.ndarray, cand: Candidates, epsilon: float, top_k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The written policy: the `top_k` most probable candidates of each row (ties: lowest code),
    renormalised, mixed with epsilon-uniform exploration over them. Returns (kept entry indices,
    their probabilities)."""
    keep = np.arange(len(prob))
    counts = np.diff(cand.start)
    if top_k is not None and np.any(counts > top_k):
        order = np.lexsort((cand.action, -prob, cand.row))  # within a row: most probable first
        rank = np.empty(len(prob), dtype=np.int64)
        rank[order] = _ranks(counts)
        keep = np.flatnonzero(rank < top_k)
        counts = np.minimum(counts, top_k)
    p = prob[keep]
    start = np.concatenate([[0], np.cumsum(counts)])
    total = _segment_sum(p, start)
    row = np.repeat(np.arange(len(counts)), counts)
    # a row whose kept mass is 0 (possible only for a top-k cut of a degenerate policy) becomes uniform
    p = np.where(total[row] > 0, p / np.where(total > 0, total, 1.0)[row], 1.0 / counts[row])
    p = (1.0 - epsilon) * p + epsilon / counts[row]
    return keep, p


def _logged_entries(cand: Candidates, action_code: np.ndarray) -> np.ndarray:
    """Index of each row's logged stream among its candidates (the candidates must include it)."""
    width = int(max(cand.action.max(initial=0), action_code.max(initial=0))) + 1
    keys = cand.row * width + cand.action
    want = np.arange(len(action_code)) * width + action_code
    at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    if not np.array_equal(keys[at], want):
        raise InputError(Problem("--candidates", f"{int(np.sum(keys[at] != want)):,} rows' logged stream is not among "
                                 "their candidates", fix="list the logged stream among each decision's candidates"))
    return at
