"""Compiled joins of (decision row, action) pairs against reward predictions held per log row.

Predictions are stored like a sparse matrix in CSR form: the predictions of log row
`first_row + r` are `code[start[r]:start[r + 1]]` (action codes, ascending) and the matching
`value`s. The form may cover all log rows or, when a file is read batch by batch, a range of
them. A lookup is a scan (or binary search) inside one row's few entries, so joining tens of
millions of policy rows costs one linear pass. NumPy has no such segmented search:
`np.searchsorted` over a global sorted key costs a cache miss per level of a 26-level search at
1e7 decisions, which made it most of the time of an evaluation. These loops are compiled by Numba
(already a dependency of DoWhy and EconML, cached on disk after the first run); each is a few
lines, and `tests/test_loading.py` checks them against pandas joins.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _find(start, code, row, action):
    """Index of `action` among local row `row`'s predictions, or -1: a scan of a row's few
    predictions, a binary search of many."""
    lo, hi = start[row], start[row + 1]
    if hi - lo <= 16:
        found = -1
        for k in range(lo, hi):  # without an early exit the compiler selects rather than branches
            found = k if code[k] == action else found
        return found
    while lo < hi:
        mid = (lo + hi) >> 1
        if code[mid] < action:
            lo = mid + 1
        else:
            hi = mid
    if lo < start[row + 1] and code[lo] == action:
        return lo
    return -1


@njit(cache=True, nogil=True)
def lookup(start, code, value, actions, out):
    """out[r] = prediction of (local row r, actions[r]), NaN where there is none; returns how many."""
    missing = 0
    for r in range(actions.size):
        k = _find(start, code, r, actions[r])
        if k < 0:
            out[r] = np.nan
            missing += 1
        else:
            out[r] = value[k]
    return missing


@njit(cache=True, nogil=True)
def expected(start, code, value, first_row, rows, actions, probs, out):
    """out[rows[j] - first_row] += probs[j] * prediction(rows[j], actions[j]) over j: sum_a pi(a|x) q_hat(x, a).
    A pair with positive probability and no prediction is counted (and returned), not summed; a pair
    with probability 0 needs none."""
    missing = 0
    for j in range(rows.size):
        if probs[j] == 0.0:
            continue
        r = rows[j] - first_row
        k = _find(start, code, r, actions[j])
        if k < 0:
            missing += 1
        else:
            out[r] += probs[j] * value[k]
    return missing


@njit(cache=True, nogil=True)
def policy_sums(rows, actions, probs, logged_action, total, covered, pi_logged):
    """Per log row: the policy's total probability, whether the policy lists it at all, and its
    probability of the logged action (accumulated into the three outputs). Returns whether the
    rows are in ascending order (a policy in decision order can be joined range by range)."""
    ascending = True
    previous = -1
    for j in range(rows.size):
        r = rows[j]
        total[r] += probs[j]
        covered[r] = True
        if actions[j] == logged_action[r]:
            pi_logged[r] += probs[j]
        ascending = ascending and r >= previous
        previous = r
    return ascending


@njit(cache=True, nogil=True)
def ascending_pairs(rows, actions, previous_row, previous_action):
    """Whether (row, action) pairs ascend strictly from (previous_row, previous_action): each row's
    predictions in action order, no pair twice."""
    for j in range(rows.size):
        r, a = rows[j], actions[j]
        if r < previous_row or (r == previous_row and a <= previous_action):
            return False
        previous_row, previous_action = r, a
    return True


@njit(cache=True, nogil=True)
def row_starts(rows, first_row, start):
    """The CSR offsets of ascending `rows` over log rows first_row .. first_row + start.size - 2."""
    start[:] = 0
    for j in range(rows.size):
        start[rows[j] - first_row + 1] += 1
    for k in range(1, start.size):
        start[k] += start[k - 1]
