"""Cross-fitted, calibrated propensity estimates for logs that carry none.

Method: K-fold cross-fitting (Chernozhukov et al. 2018, "Double/debiased machine learning", sec. 3):
a histogram-gradient-boosting classifier of the logged action on the confounders is fitted on K-1
folds and predicts the held-out fold, so no row's probability comes from a model that saw it.
The out-of-fold scores are then calibrated by Platt scaling (Platt 1999: a logistic regression on
the score's log-odds), itself cross-fitted over the same folds (the calibrator for fold k is fitted
on the other folds' scores), one-vs-rest and renormalised for more than two actions (as
scikit-learn's CalibratedClassifierCV does). Isotonic calibration was measured too: its end steps
reach exactly 0 or 1, which turned a few hundred of 100k inverse weights into 1/CLIP and biased the
weighted estimate by 20%; Platt scaling stays smooth.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from livegate.datasets.errors import InputError, Problem

from .features import encode, hgb_classifier

#: Estimated probabilities are kept inside [CLIP, 1 - CLIP]: an inverse weight of (nearly) infinity
#: says nothing useful. The number of clipped rows is reported, never silent.
CLIP = 1e-3
#: Limits of propensity estimation (see _check).
MAX_ACTIONS = 50
MIN_ROWS_PER_ACTION = 20


def _check(data: pd.DataFrame, action: str, confounders, n_folds: int, source: str) -> None:
    problems = []
    if not isinstance(data, pd.DataFrame):
        raise InputError(Problem(source, "must be a pandas DataFrame"))
    missing = [c for c in [action, *confounders] if c not in data.columns]
    for c in missing:
        problems.append(Problem(source, "is missing", column=c, fix="check the column name"))
    if problems:
        raise InputError(problems)
    for c in [action, *confounders]:
        n_na = int(data[c].isna().sum())
        if n_na:
            problems.append(Problem(source, "are missing (NaN / null)", column=c, rows=n_na,
                                    fix="drop or impute those rows"))
    if int(n_folds) < 2:
        problems.append(Problem(source, f"n_folds must be at least 2, got {n_folds}"))
    elif len(data) < 10 * int(n_folds):
        problems.append(Problem(source, f"has {len(data)} rows, too few for {n_folds}-fold cross-fitting",
                                fix="give at least 10 rows per fold"))
    if problems:
        raise InputError(problems)
    counts = data[action].value_counts()
    if len(counts) < 2:
        raise InputError(Problem(source, "takes a single value: propensities of a constant action are all 1",
                                 column=action))
    # a classifier cannot estimate the probability of an action it has (almost) never seen, and one
    # boosted model per class makes hundreds of streams impractical: both need logged propensities
    rare = counts[counts < MIN_ROWS_PER_ACTION]
    if len(counts) > MAX_ACTIONS or len(rare):
        raise InputError(Problem(source, f"has {len(counts):,} distinct actions, {len(rare):,} of them logged fewer than "
                                 f"{MIN_ROWS_PER_ACTION} times: their propensities cannot be estimated from the context",
                                 column=action, fix=f"log the propensities, or estimate them for at most {MAX_ACTIONS} "
                                                    f"actions with at least {MIN_ROWS_PER_ACTION} rows each"))


def cross_fitted_probabilities(data: pd.DataFrame, action: str, confounders, n_folds: int = 3, seed: int = 0,
                               source: str = "logs") -> tuple[np.ndarray, np.ndarray, int]:
    """Out-of-fold calibrated class probabilities.

    Returns ``(proba, codes, n_clipped)``: ``proba`` has one column per distinct action (sorted),
    ``codes`` the column index of each row's logged action, ``n_clipped`` how many of the logged
    action's probabilities were clipped to [CLIP, 1 - CLIP].
    """
    confounders = list(confounders)
    _check(data, action, confounders, n_folds, source)
    codes, classes = pd.factorize(data[action], sort=True)
    n, k = len(data), len(classes)
    X = encode(data, confounders).to_numpy() if confounders else np.zeros((n, 1))
    folds = list(KFold(n_splits=int(n_folds), shuffle=True, random_state=seed).split(X))

    raw = np.zeros((n, k))
    for train, test in folds:
        model = hgb_classifier(seed).fit(X[train], codes[train])
        proba = model.predict_proba(X[test])
        raw[np.ix_(test, model.classes_)] = proba  # classes unseen in a training fold keep probability 0

    calibrated = np.empty_like(raw)
    columns = [1] if k == 2 else range(k)
    eps = 1e-6
    for j in columns:
        z = np.log(np.clip(raw[:, j], eps, 1 - eps) / np.clip(1 - raw[:, j], eps, 1 - eps))[:, None]
        target = codes == j
        for train, test in folds:
            if target[train].all() or not target[train].any():
                calibrated[test, j] = target[train].mean()
                continue
            platt = LogisticRegression(C=1e6).fit(z[train], target[train])
            calibrated[test, j] = platt.predict_proba(z[test])[:, 1]
    if k == 2:
        calibrated[:, 0] = 1.0 - calibrated[:, 1]
    else:
        total = calibrated.sum(axis=1, keepdims=True)
        calibrated = np.where(total > 0, calibrated / np.where(total > 0, total, 1.0), 1.0 / k)
    logged = calibrated[np.arange(n), codes]
    n_clipped = int(((logged < CLIP) | (logged > 1 - CLIP)).sum())
    return np.clip(calibrated, CLIP, 1 - CLIP), codes, n_clipped


def estimate_propensities(data: pd.DataFrame, action: str, confounders, n_folds: int = 3,
                          seed: int = 0, source: str = "logs") -> np.ndarray:
    """Cross-fitted, calibrated P(logged action | confounders) for every row (out-of-fold only).

    ``data[action]`` may hold any hashable action labels (0/1, stream ids, strings); string and
    categorical confounders are one-hot encoded. Cost grows with the number of distinct actions
    (one boosted model per class): fine for tens of actions. Results that use these values must
    be marked "estimated propensities".
    """
    proba, codes, _ = cross_fitted_probabilities(data, action, confounders, n_folds, seed, source=source)
    return proba[np.arange(len(codes)), codes]
