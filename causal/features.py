"""Turning confounder / effect-modifier columns into numeric design matrices, and shared model factories."""
from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api import types as ptypes


def is_categorical(series: pd.Series) -> bool:
    """String, object and category columns are one-hot encoded; numbers and booleans are not."""
    return not (ptypes.is_numeric_dtype(series) or ptypes.is_bool_dtype(series))


def encode(data: pd.DataFrame, columns, *, drop_first: bool = False) -> pd.DataFrame:
    """Numeric float64 design matrix of ``columns``: numbers and booleans as they are, categorical
    columns one-hot encoded as ``col=value`` (values sorted; ``drop_first`` drops the first level,
    needed when a linear final stage has an intercept). Row order and index are kept."""
    parts = []
    for col in columns:
        s = data[col]
        if is_categorical(s):
            levels = sorted(pd.unique(s.astype("str")))
            values = s.astype("str").to_numpy()
            for level in levels[1:] if drop_first else levels:
                parts.append(pd.Series((values == level).astype(np.float64), index=data.index, name=f"{col}={level}"))
        else:
            parts.append(pd.Series(s.to_numpy(dtype=np.float64), index=data.index, name=col))
    if not parts:
        return pd.DataFrame(index=data.index)
    return pd.concat(parts, axis=1)


def hgb_regressor(seed: int):
    """First-stage outcome model: histogram gradient boosting with early stopping.

    Ke et al. 2017 (LightGBM) / scikit-learn's HistGradientBoostingRegressor; on 100k rows it is
    about 50x faster than EconML's default model selection at equal or better accuracy (STACK-NOTES).
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=50,
                                         early_stopping=True, validation_fraction=0.1, n_iter_no_change=10,
                                         random_state=seed)


def hgb_classifier(seed: int):
    """First-stage treatment (propensity) model: histogram gradient boosting, log-loss, early stopping."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=50,
                                          early_stopping=True, validation_fraction=0.1, n_iter_no_change=10,
                                          random_state=seed)
