"""Access to the compiled joins of `_joins` (Numba): loading them in the background, and the argument
views they take."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

_JOINS_LOADING: Future | None = None


def load_joins_in_background() -> None:
    """Start importing Numba and loading the compiled joins (about a second in a new process) in a
    background thread, so that it overlaps reading the logs; `joins_module` waits for it."""
    global _JOINS_LOADING
    if _JOINS_LOADING is None:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livegate-joins")
        _JOINS_LOADING = pool.submit(_warm_joins)
        pool.shutdown(wait=False)


def joins_module():
    """The compiled joins, once loaded (waiting for `load_joins_in_background` if it was started)."""
    if _JOINS_LOADING is not None:
        _JOINS_LOADING.result()
    from . import _joins
    return _joins


def _warm_joins() -> None:
    """Call each join once on one row, with the argument types of every later call."""
    from . import _joins
    zero, one, value = int64(np.zeros(1)), int64(np.ones(1)), float64(np.ones(1))
    start = int64(np.array([0, 1]))
    _joins.policy_sums(zero, zero, value, zero, np.zeros(1), np.zeros(1, dtype=bool), np.zeros(1))
    _joins.ascending_pairs(zero, zero, -1, -1)
    _joins.row_starts(zero, 0, np.zeros(2, dtype=np.int64))
    _joins.lookup(start, one, value, one, np.zeros(1))
    _joins.expected(start, one, value, 0, zero, one, value, np.zeros(1))


def int64(a: np.ndarray) -> np.ndarray:
    """A read-only contiguous int64 view (a copy only when needed): the compiled joins then see one
    type per argument, so each is compiled, and loaded from Numba's cache, once."""
    return readonly(np.ascontiguousarray(a, dtype=np.int64))


def float64(a: np.ndarray) -> np.ndarray:
    return readonly(np.ascontiguousarray(a, dtype=np.float64))


def readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view
