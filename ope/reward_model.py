"""Cross-fitted reward model q_hat(x, a) for DM and DR.

K folds by decision: the model of fold k is trained on the other folds and predicts only fold k's
rows, for the logged action and for every action a candidate may take there. Out-of-fold
predictions keep DR's correction term unbiased given the model (Chernozhukov et al. 2018, cross-fitting).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

_MAX_CATEGORIES = 250  # HistGradientBoosting treats at most max_bins (255) categories natively


@dataclass
class RewardModelFit:
    q_logged: np.ndarray                               # (n,) prediction at the logged action
    q_policy: dict[str, np.ndarray] = field(default_factory=dict)   # policy name -> prediction per policy row
    quality: dict = field(default_factory=dict)


def encode_context(context: pd.DataFrame) -> tuple[np.ndarray, list[bool]]:
    """Numeric matrix for the trees: strings/categoricals become sorted category codes (NaN for
    missing), bools become 0/1. Returns the matrix and which columns are categorical."""
    columns, categorical = [], []
    for name in context.columns:
        col = context[name]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            columns.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
            categorical.append(False)
        else:
            codes, uniques = pd.factorize(col.astype("string"), sort=True)
            values = codes.astype(np.float64)
            values[codes < 0] = np.nan
            columns.append(values)
            categorical.append(len(uniques) <= _MAX_CATEGORIES)
    if not columns:
        return np.zeros((len(context), 0)), []
    return np.column_stack(columns), categorical


def _is_binary(y: np.ndarray) -> bool:
    return bool(np.all((y == 0) | (y == 1)))


def fit_reward_model(context: pd.DataFrame, action_code: np.ndarray, n_actions: int, reward: np.ndarray,
                     policies: Mapping[str, tuple[np.ndarray, np.ndarray]], groups: np.ndarray | None,
                     n_folds: int = 3, seed: int = 0,
                     action_features: pd.DataFrame | None = None, model=None) -> RewardModelFit:
    """Cross-fit HistGradientBoosting on (context, action, action features) and predict out of fold.

    `policies` maps a name to (row, action_code) arrays of that policy's rows; `groups` are
    decision codes so that all positions of a decision share a fold; `action_features` has one
    row per action code (stream features such as category and popularity), which lets the model
    share strength across streams instead of learning each stream id on its own. `model` replaces
    HistGradientBoosting with any scikit-learn regressor, or a classifier for 0/1 rewards (its
    predict_proba is the prediction); it is cloned per fold and sees the same numeric features
    (categories as integer codes, a stream no logged row shows as NaN).
    """
    x_ctx, categorical = encode_context(context)
    x_act = np.zeros((n_actions, 0))
    act_categorical: list[bool] = []
    if action_features is not None and action_features.shape[1]:
        x_act, act_categorical = encode_context(action_features)
    action_is_categorical = n_actions <= _MAX_CATEGORIES
    cat_mask = [*categorical, action_is_categorical, *act_categorical]
    binary = _is_binary(reward)
    n = len(reward)

    # streams no logged row shows (codes >= n_actions) are unknown to the model: missing values,
    # which the trees send down their learned default branch
    x_act = np.vstack([x_act, np.full((1, x_act.shape[1]), np.nan)])

    def features(rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        seen = actions < n_actions
        code = np.where(seen, actions, np.nan)
        return np.column_stack([x_ctx[rows], code, x_act[np.where(seen, actions, n_actions)]])

    rng = np.random.default_rng(seed)
    unit = groups if groups is not None else np.arange(n)
    fold_of_unit = rng.permutation(int(unit.max()) + 1) % n_folds
    fold = fold_of_unit[unit]

    q_logged = np.empty(n)
    q_policy = {name: np.empty(len(rows)) for name, (rows, _) in policies.items()}
    all_rows = np.arange(n)
    for k in range(n_folds):
        train, test = fold != k, fold == k
        x_train = features(all_rows[train], action_code[train])
        # a feature without any value in the training rows (all NaN, e.g. a context column that is
        # mostly missing) cannot be binned: it becomes a constant, which no split uses, in training
        # and in prediction alike
        values = np.count_nonzero(~np.isnan(x_train), axis=0)
        empty = values == 0
        x_train[:, empty] = 0.0
        fold_model = _new_model(binary, cat_mask, seed + k, _can_stop_early(reward[train], binary, values)) \
            if model is None else _user_model(model, binary)
        try:
            fold_model.fit(x_train, reward[train])
        except ValueError as exc:
            if model is None:
                raise
            from livegate.datasets import InputError, Problem  # a user's model refusing the features
            raise InputError(Problem("reward_model", f"{type(model).__name__} could not be fitted: {exc}",
                                     fix="features are the context columns, the action code and stream "
                                         "features, with NaN for missing values: use a model that accepts "
                                         "NaN (e.g. in a Pipeline with SimpleImputer)")) from None
        predict = _prediction(fold_model)
        if empty.any():
            predict = functools.partial(_predict_filled, predict, empty)
        q_logged[test] = predict(features(all_rows[test], action_code[test]))
        for name, (rows, actions) in policies.items():
            in_fold = test[rows]
            if np.any(in_fold):
                q_policy[name][in_fold] = predict(features(rows[in_fold], actions[in_fold]))
    return RewardModelFit(q_logged=q_logged, q_policy=q_policy,
                          quality=_quality(reward, q_logged, binary, n_folds))


def _user_model(model, binary: bool):
    from sklearn.base import clone, is_classifier

    from livegate.datasets import InputError, Problem
    if not (hasattr(model, "fit") and (hasattr(model, "predict") or hasattr(model, "predict_proba"))):
        raise InputError(Problem("reward_model", f"{model!r} has no fit/predict",
                                 fix="pass a scikit-learn regressor, or a classifier for 0/1 rewards"))
    if is_classifier(model) and not binary:
        raise InputError(Problem("reward_model", f"{type(model).__name__} is a classifier but the reward is not 0/1",
                                 fix="pass a regressor for this metric"))
    return clone(model)


def _predict_filled(predict, empty: np.ndarray, X: np.ndarray) -> np.ndarray:
    """`predict` of features whose `empty` columns were constant (0) in training."""
    X = X.copy()
    X[:, empty] = 0.0
    return predict(X)


def _prediction(model):
    """The expected reward: P(r = 1 | x, a) from a classifier, the regression otherwise."""
    if hasattr(model, "predict_proba") and getattr(model, "classes_", None) is not None:
        classes = list(model.classes_)
        if len(classes) == 1:  # a fold with one reward value: the classifier can only predict it
            return lambda X: np.full(len(X), float(classes[0]))
        return lambda X: model.predict_proba(X)[:, classes.index(1)]
    return model.predict


#: the share of a fold's training rows that early stopping holds out
_VALIDATION_FRACTION = 0.1
#: the fewest training rows with which early stopping holds out a validation set
_MIN_ROWS_EARLY_STOPPING = 20


def _can_stop_early(y: np.ndarray, binary: bool, values: np.ndarray | None = None) -> bool:
    """Whether HistGradientBoosting can hold out its early-stopping validation set: enough rows, for
    a classifier each class twice at least (the hold-out is stratified), and every feature with a
    value (`values`: how many rows have one) keeping one outside the hold-out (a feature without
    any value where the trees are binned fails to bin). A rare click, a tiny fold or a nearly empty
    context column trains without early stopping instead of failing."""
    if len(y) < _MIN_ROWS_EARLY_STOPPING:
        return False
    held_out = int(np.ceil(_VALIDATION_FRACTION * len(y)))
    if values is not None and np.any((values > 0) & (values <= held_out)):
        return False
    if binary:
        n_ones = int(np.count_nonzero(y == 1))
        return n_ones == 0 or n_ones == len(y) or min(n_ones, len(y) - n_ones) >= 2
    return True


def _new_model(binary: bool, categorical: list[bool], seed: int, early_stopping: bool = True):
    common = dict(max_iter=200, learning_rate=0.1, max_leaf_nodes=31, early_stopping=early_stopping,
                  validation_fraction=_VALIDATION_FRACTION, n_iter_no_change=10, random_state=seed,
                  categorical_features=np.asarray(categorical, dtype=bool) if any(categorical) else None)
    return HistGradientBoostingClassifier(**common) if binary else HistGradientBoostingRegressor(**common)


def _quality(y: np.ndarray, pred: np.ndarray, binary: bool, n_folds: int) -> dict:
    """Held-out quality of the out-of-fold predictions: R^2 always, log-loss for binary rewards."""
    sst = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / sst if sst > 0 else float("nan")
    quality = {"kind": "classifier" if binary else "regressor", "n_folds": n_folds, "r2": r2,
               "metric_name": "r2", "value": r2}
    if binary:
        p = np.clip(pred, 1e-12, 1 - 1e-12)
        log_loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        base = np.clip(y.mean(), 1e-12, 1 - 1e-12)
        quality.update(metric_name="log_loss", value=log_loss,
                       log_loss_constant=float(-(base * np.log(base) + (1 - base) * np.log(1 - base))))
    return quality
