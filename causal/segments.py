"""Segment (group average) effects: the fitted CATE averaged over the rows of each segment.

Group average treatment effects (GATES, Chernozhukov, Demirer, Duflo & Fernandez-Val 2018) computed
from the fitted EconML model: the value is the mean of the CATE over the segment's rows and the
standard error EconML's ``ate_inference`` on those rows (for LinearDML exact: the segment mean is
linear in the final-stage coefficients). Segment definitions, shared with the simulator's truth:

* boolean columns: ``col=true`` and ``col=false``;
* numeric columns with at most 10 distinct values and string / categorical columns: ``col=value``
  per value (at most 20 levels, the most frequent);
* other numeric columns: tertile tiers ``col=low`` (below the 1/3 quantile), ``col=mid``,
  ``col=high`` (at or above the 2/3 quantile).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from .estimate import z_value
from .result import SegmentEffect

MAX_LEVELS = 20
MIN_SEGMENT_ROWS = 30


def _fmt(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def segment_masks(data: pd.DataFrame, columns) -> list[tuple[str, str, np.ndarray, dict]]:
    """``(label, column, mask, definition)`` for every segment of every column."""
    out = []
    for col in columns:
        s = data[col]
        if ptypes.is_bool_dtype(s):
            v = s.to_numpy(dtype=bool)
            out += [(f"{col}=true", col, v, {"value": True}), (f"{col}=false", col, ~v, {"value": False})]
        elif ptypes.is_numeric_dtype(s) and s.nunique() > 10:
            v = s.to_numpy(dtype=float)
            q1, q2 = np.quantile(v, [1 / 3, 2 / 3])
            out += [(f"{col}=low", col, v < q1, {"below": float(q1)}),
                    (f"{col}=mid", col, (v >= q1) & (v < q2), {"from": float(q1), "below": float(q2)}),
                    (f"{col}=high", col, v >= q2, {"from": float(q2)})]
        else:
            levels = s.value_counts().index[:MAX_LEVELS]
            levels = sorted(levels, key=lambda x: (str(type(x)), x))
            values = s.to_numpy()
            out += [(f"{col}={_fmt(level)}", col, values == level, {"value": level}) for level in levels]
    return out


def segment_effects(fitted, X: np.ndarray | None, masks, alpha: float) -> tuple[list[SegmentEffect], list[str]]:
    """Average fitted CATE and interval per segment; segments with too few rows are skipped (warned)."""
    z = z_value(alpha)
    effects, warnings = [], []
    for label, col, mask, _ in masks:
        n = int(mask.sum())
        if n < MIN_SEGMENT_ROWS:
            warnings.append(f"segment {label} has {n} rows (< {MIN_SEGMENT_ROWS}); no effect reported for it")
            continue
        inference = fitted.ate_inference(X=None if X is None else X[mask], T0=0, T1=1)
        value = float(np.ravel(inference.mean_point)[0])
        se = float(np.ravel(inference.stderr_mean)[0])
        effects.append(SegmentEffect(segment=label, column=col, n=n, value=value, se=se,
                                     ci_low=value - z * se, ci_high=value + z * se))
    return effects, warnings
