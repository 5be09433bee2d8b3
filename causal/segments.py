"""Segment (group average) effects: the fitted CATE averaged over the rows of each segment.

Group average treatment effects (GATES, Chernozhukov, Demirer, Duflo & Fernandez-Val 2018) computed
from the fitted EconML model: the value is the mean of the CATE over the segment's rows and the
standard error EconML's ``ate_inference`` on those rows (for LinearDML exact: the segment mean is
linear in the final-stage coefficients). Segment definitions, shared with the simulator's truth:

* boolean columns: ``col=true`` and ``col=false``;
* numeric columns with at most 10 distinct values and string / categorical columns: ``col=value``
  per value (at most 20 levels, the most frequent);
* other numeric columns: tertile tiers ``col=low`` (below the 1/3 quantile), ``col=mid``,
  ``col=high`` (at or above the 2/3 quantile); each segment's ``description`` gives its range,
  e.g. ``x_popularity in [-0.41, 0.37)``. Tertiles, not quartiles: the causal simulator's segment
  truths use the same tiers, and three tiers keep about a third of the rows per segment.

When no segment columns are named and the default ones are absent, the check reports segments
of the effect modifiers with these same rules.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from livegate.ope.inference import z_quantile
from .result import SegmentEffect

MAX_LEVELS = 20
MIN_SEGMENT_ROWS = 30


def _fmt(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _range(low: float | None, high: float | None) -> str:
    left = "(-inf" if low is None else f"[{low:.4g}"
    right = "inf)" if high is None else f"{high:.4g})"
    return f"{left}, {right}"


def segment_masks(data: pd.DataFrame, columns) -> tuple[list[tuple[str, str, np.ndarray, dict]], list[str]]:
    """``(label, column, mask, definition)`` for every segment of every column, and warnings
    (levels left out of a column with more than ``MAX_LEVELS``). ``definition`` holds the value or
    the bounds and a readable ``description``."""
    out, warnings = [], []
    for col in columns:
        s = data[col]
        if ptypes.is_bool_dtype(s):
            v = s.to_numpy(dtype=bool)
            out += [(f"{col}=true", col, v, {"value": True, "description": f"{col} is true"}),
                    (f"{col}=false", col, ~v, {"value": False, "description": f"{col} is false"})]
        elif ptypes.is_numeric_dtype(s) and s.nunique() > 10:
            v = s.to_numpy(dtype=float)
            q1, q2 = (float(q) for q in np.quantile(v, [1 / 3, 2 / 3]))
            out += [(f"{col}=low", col, v < q1, {"below": q1, "description": f"{col} in {_range(None, q1)}"}),
                    (f"{col}=mid", col, (v >= q1) & (v < q2),
                     {"from": q1, "below": q2, "description": f"{col} in {_range(q1, q2)}"}),
                    (f"{col}=high", col, v >= q2, {"from": q2, "description": f"{col} in {_range(q2, None)}"})]
        else:
            counts = s.value_counts()
            if len(counts) > MAX_LEVELS:
                left_out = int(counts.iloc[MAX_LEVELS:].sum())
                warnings.append(f"segment column {col} has {len(counts)} levels: effects are reported for the "
                                f"{MAX_LEVELS} most frequent; {len(counts) - MAX_LEVELS} levels ({left_out:,} rows) "
                                f"have none")
            levels = sorted(counts.index[:MAX_LEVELS], key=lambda x: (str(type(x)), x))
            values = s.to_numpy()
            out += [(f"{col}={_fmt(level)}", col, values == level,
                     {"value": level, "description": f"{col} = {_fmt(level)}"}) for level in levels]
    return out, warnings


def segment_effects(fitted, X: np.ndarray | None, masks, alpha: float) -> tuple[list[SegmentEffect], list[str]]:
    """Average fitted CATE and interval per segment; segments with too few rows are skipped (warned)."""
    z = z_quantile(alpha)
    effects, warnings = [], []
    for label, col, mask, definition in masks:
        n = int(mask.sum())
        if n < MIN_SEGMENT_ROWS:
            warnings.append(f"segment {label} has {n} rows (< {MIN_SEGMENT_ROWS}); no effect reported for it")
            continue
        inference = fitted.ate_inference(X=None if X is None else X[mask], T0=0, T1=1)
        value = float(np.ravel(inference.mean_point)[0])
        se = float(np.ravel(inference.stderr_mean)[0])
        bounds = {k: v for k, v in definition.items() if k != "description"}
        effects.append(SegmentEffect(segment=label, column=col, n=n, value=value, se=se,
                                     ci_low=value - z * se, ci_high=value + z * se,
                                     description=definition.get("description"), definition=bounds))
    return effects, warnings
