"""Arrow columns as NumPy arrays, without copies where the buffers allow it and without pandas."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A column's values: numbers straight from the buffers, booleans as float64, dictionaries
    (pandas categories) as their values, strings as an object array."""
    numbers = fixed_width_numbers(column)
    if numbers is not None:
        return numbers
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
        numbers = fixed_width_numbers(column)
        if numbers is not None:
            return numbers
    if pa.types.is_boolean(column.type):
        return column.to_numpy(zero_copy_only=False).astype(np.float64)
    if pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    return column.to_numpy(zero_copy_only=False)


def fixed_width_numbers(column: pa.ChunkedArray) -> np.ndarray | None:
    """Integers or floats without nulls as NumPy, straight from the Arrow buffers (a view of a
    single chunk; several are concatenated). None for other columns. pyarrow's own to_numpy would
    import pandas, half a second of an evaluation that never uses it."""
    type_ = column.type
    if column.null_count or not (pa.types.is_integer(type_) or pa.types.is_floating(type_)):
        return None
    kind = "f" if pa.types.is_floating(type_) else ("i" if pa.types.is_signed_integer(type_) else "u")
    dtype = np.dtype(f"{kind}{type_.bit_width // 8}")
    parts = [np.frombuffer(chunk.buffers()[1], dtype=dtype, count=len(chunk), offset=chunk.offset * dtype.itemsize)
             for chunk in column.chunks if len(chunk)]
    if not parts:
        return np.empty(0, dtype=dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def to_key(column: pa.ChunkedArray) -> np.ndarray:
    """An identifier column (decision id, action) as compared across files: integers of any width
    as int64 (ids written as int32 in one file and uint64 in another match exactly, and arithmetic
    on codes never wraps around a narrow type), strings as an object array. A uint64 above the int64
    range is rejected by `validation.check_key` before this is called."""
    values = to_numpy(column)
    if values.dtype.kind in "iu" and values.dtype != np.int64:
        return values.astype(np.int64)
    return values


def to_float(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(to_numpy(column), dtype=np.float64)


def to_int64(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(to_numpy(column), dtype=np.int64)


def timestamps_utc(column: pa.ChunkedArray) -> np.ndarray:
    """datetime64[us] in UTC. A zoned column is stored as UTC instants already; a naive one is taken
    as UTC (the loader warns). Sub-microsecond digits (pandas writes nanoseconds) are dropped rather
    than refused: no time window is that narrow."""
    import pyarrow.compute as pc
    return pc.cast(column, pa.timestamp("us", tz=column.type.tz), safe=False).to_numpy(zero_copy_only=False)
