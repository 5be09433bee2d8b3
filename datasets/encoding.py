"""Dense integer codes of decision ids and actions, and vectorised lookups of values among them.

Codes are what make joins cheap: a policy or prediction file is mapped onto the logs by looking its
keys up among the logs' sorted distinct values once, then everything is integer indexing. Each
function picks the cheapest exact method for the data: direct addressing for dense integer ids
(the usual export), Arrow's hash lookup for strings, a binary search otherwise.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def dense_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def lookup(uniques: np.ndarray, values: np.ndarray) -> np.ndarray:
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


def _dense_int_range(values: np.ndarray, size: int) -> tuple[int, int] | None:
    """(min, max) when `values` are integers spanning a range at most twice `size` (ids 0..n-1, stream ids)."""
    if values.size == 0 or not np.issubdtype(values.dtype, np.integer):
        return None
    low, high = int(values.min()), int(values.max())
    return (low, high) if high - low < 2 * size + 1024 else None


def _offsets_if_complete(values: np.ndarray, low: int, high: int, uniques: np.ndarray) -> np.ndarray:
    """Codes of integer `values` within [low, high], `uniques` the sorted distinct values that occur.
    When every integer of the range occurs, a code is the value's offset from `low` (the values
    themselves for ids from 0: no copy at all); otherwise through a table of the occurring values."""
    if high - low + 1 == len(uniques):
        return values.astype(np.int64, copy=False) if low == 0 else np.subtract(values, low, dtype=np.int64)
    code_of = np.full(high - low + 1, -1, dtype=np.int64)
    code_of[uniques - low] = np.arange(len(uniques))
    return code_of[values - low]
