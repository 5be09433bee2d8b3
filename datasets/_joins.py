"""Compiled joins of (decision row, action) pairs against reward predictions held per log row.

Predictions are stored like a sparse matrix in CSR form: the predictions of log row r are
`code[start[r]:start[r + 1]]` (action codes, ascending) and the matching `value`s. A lookup is a
binary search inside one row's few entries, so joining tens of millions of policy rows costs one
linear pass. NumPy has no such segmented search: `np.searchsorted` over a global sorted key costs
a cache miss per level of a 26-level search at 1e7 decisions, which made it most of the time of an
evaluation. These loops are compiled by Numba (already a dependency of DoWhy and EconML, cached on
disk after the first run); each is a few lines, and `tests/test_loading.py` checks them against
pandas joins.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _find(start, code, row, action):
    """Index of `action` among row `row`'s predictions, or -1: a scan of a row's few predictions, a
    binary search of many."""
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
def lookup(start, code, value, rows, actions, out):
    """out[j] = prediction of (rows[j], actions[j]), NaN where there is none; returns how many."""
    missing = 0
    for j in range(rows.size):
        k = _find(start, code, rows[j], actions[j])
        if k < 0:
            out[j] = np.nan
            missing += 1
        else:
            out[j] = value[k]
    return missing


@njit(cache=True, nogil=True)
def expected(start, code, value, rows, actions, probs, out):
    """out[r] += probs[j] * prediction(rows[j], actions[j]) over j: sum_a pi(a|x_r) q_hat(x_r, a).
    Pairs without a prediction are counted (and returned) rather than summed."""
    missing = 0
    for j in range(rows.size):
        k = _find(start, code, rows[j], actions[j])
        if k < 0:
            missing += 1
        else:
            out[rows[j]] += probs[j] * value[k]
    return missing


@njit(cache=True, nogil=True)
def policy_sums(rows, actions, probs, logged_action, total, covered, pi_logged):
    """Per log row: the policy's total probability, whether the policy lists it at all, and its
    probability of the logged action (accumulated into the three outputs)."""
    for j in range(rows.size):
        r = rows[j]
        total[r] += probs[j]
        covered[r] = True
        if actions[j] == logged_action[r]:
            pi_logged[r] += probs[j]


@njit(cache=True, nogil=True)
def count_in_order(rows, actions, previous_row, previous_action, counts):
    """counts[r + 1] += the number of predictions of row r, while (row, action) pairs ascend strictly
    from (previous_row, previous_action): each row's predictions in action order, no pair twice.
    Returns False at the first pair out of order (the counts are then unusable). The cumulative sum
    of the counts is the CSR row start."""
    for j in range(rows.size):
        r, a = rows[j], actions[j]
        if r < previous_row or (r == previous_row and a <= previous_action):
            return False
        counts[r + 1] += 1
        previous_row, previous_action = r, a
    return True
