"""Cross-fitted reward model q_hat(x, a) for DM and DR.

K folds by decision: the model of fold k is trained on the other folds and predicts only fold k's
rows, for the logged action and for every action a candidate may take there. Out-of-fold
predictions keep DR's correction term unbiased given the model (Chernozhukov et al. 2018, cross-fitting).

Features: the position (a category), the context columns, the stream and the stream features
(`a_*`). Strings and categories are native categorical features of HistGradientBoosting (Fisher
1958 optimal category splits, as scikit-learn implements them), never ordered codes; a column with
more than 250 levels keeps its 250 most frequent ones and pools the rest into one "other" level.

Model (the built-in one): inside each training fold, a gradient-boosted model (Friedman 2001;
HistGradientBoosting, log-loss for 0/1 rewards, squared error otherwise) is fitted with early stopping
on a held-out part of that fold and then shrunk towards a baseline, the per-position mean:

    q = b + lambda (m - b)                           (squared error)
    logit q = logit b + lambda (logit m - logit b)   (0/1 rewards: Platt scaling, Platt 1999, with the
                                                      baseline as offset and the slope in [0, 1])

with lambda in [0, 1] minimising the held-out loss of the fold's own inner validation rows, never the
rows it predicts. lambda = 0 is the baseline: a model that does not beat the per-position mean on
data it has not seen is not used. Rare outcomes get leaves holding at least 10 informative rows (the
minority class, or the rows off the most common value) and an L2 penalty, so a leaf cannot predict
0.29 from 6 clicks in 20 rows when the click rate is 0.4%. When the inner validation rows would hold
too few informative rows to choose lambda (small logs, rare clicks), the fold uses 3-fold inner
cross-validation instead: lambda is chosen on all of the fold's rows (their inner out-of-fold
predictions) and the three inner models are averaged (bagging, Breiman 1996).

The held-out quality of the out-of-fold predictions (R^2, log-loss, calibration, and whether they beat
a cross-fitted constant) is in `RewardModelFit.quality` (`_quality`).
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

_MAX_CATEGORIES = 250  # HistGradientBoosting treats at most max_bins (255) categories natively

#: HistGradientBoosting settings of the built-in model. Why a learning rate of 0.2 and at most 150
#: trees: the cost of DM/DR at scale is predicting every (row, action) pair a candidate lists, which
#: grows with the number of trees; early stopping ends most fits after 40-110 trees at this rate.
#: See _hgb for the leaf size and the L2 penalty.
_LEARNING_RATE = 0.2
_MAX_ITER = 150
_PATIENCE = 10
_L2 = 1.0
#: a leaf holds at least this many informative rows in expectation (see _min_leaf)
_LEAF_INFORMATIVE = 10
_MIN_LEAF = 20
#: the share of a training fold held out for early stopping and for choosing lambda
_VALIDATION_FRACTION = 0.1
#: the fewest training rows with which early stopping holds out a validation set
_MIN_ROWS_EARLY_STOPPING = 20
#: a single inner validation split needs this many informative rows (lambda's standard error is then
#: a few percent); with fewer, 3-fold inner cross-validation
_VALIDATION_INFORMATIVE = 200
_INNER_FOLDS = 3
#: fewer informative training rows than this: no boosted model, the baseline alone (20 clicks cannot
#: train trees whose predictions beat the per-position click rate)
_MIN_INFORMATIVE_TO_FIT = 20
#: fits and predictions on fewer rows run on one OpenMP thread: HistGradientBoosting enters a
#: parallel region per node, which on small data costs more than it gains when cores are shared
_SERIAL_ROWS = 20_000
#: predictions in chunks of this many pairs: bounded memory, and the chunk's features stay in cache
#: while every tree walks them
_CHUNK = 1 << 16
#: progress units: fitting one row costs about as much as predicting this many pairs (measured:
#: 85 ns per row and tree to fit, 33 ns per pair and tree to predict)
_FIT_COST = 2.5

Progress = Callable[..., None]


@dataclass
class RewardModelFit:
    q_logged: np.ndarray                               # (n,) prediction at the logged action
    q_policy: dict[str, np.ndarray] = field(default_factory=dict)   # policy name -> prediction per policy row
    quality: dict = field(default_factory=dict)


# =================================================================================================
# features

def _levels(column: pd.Series) -> tuple[np.ndarray, int]:
    """(codes, number of levels) of a categorical column, levels sorted; -1 for missing."""
    try:
        codes, uniques = pd.factorize(column, sort=True)
    except TypeError:  # mixed types (e.g. numbers and strings in one object column): compare as text
        codes, uniques = pd.factorize(column.astype("string"), sort=True)
    return np.asarray(codes, dtype=np.int64), len(uniques)


def category_codes(codes: np.ndarray, n_levels: int, counts: np.ndarray | None = None) -> np.ndarray:
    """Float codes for a native categorical feature, NaN for missing (code -1). With more than
    _MAX_CATEGORIES levels, the _MAX_CATEGORIES most frequent keep a code of their own (ties: the
    first in sorted order) and the others share the code _MAX_CATEGORIES ("other"): rare levels pool
    their few rows instead of each getting an unreliable split. `counts` weighs each entry (rows per
    stream for stream features); by default each entry counts once."""
    values = codes.astype(np.float64)
    values[codes < 0] = np.nan
    if n_levels <= _MAX_CATEGORIES:
        return values
    present = codes >= 0
    freq = np.bincount(codes[present], weights=None if counts is None else counts[present], minlength=n_levels)
    order = np.lexsort((np.arange(n_levels), -freq))          # most frequent first, then sorted order
    mapping = np.full(n_levels, float(_MAX_CATEGORIES))
    mapping[np.sort(order[:_MAX_CATEGORIES])] = np.arange(_MAX_CATEGORIES, dtype=np.float64)
    values[present] = mapping[codes[present]]
    return values


def encode_context(context: pd.DataFrame, counts: np.ndarray | None = None) -> tuple[np.ndarray, list[bool]]:
    """Float64 matrix for the trees and which columns are categorical. Numbers stay numbers (NaN for
    missing), bools become 0/1, every other column (strings, pandas categories) becomes a native
    categorical feature (`category_codes`: at most _MAX_CATEGORIES levels + "other"). `counts` weighs
    the rows when choosing the most frequent levels. Float64 because HistGradientBoosting converts
    any other dtype to float64 (a copy per fit and per prediction)."""
    columns, categorical = [], []
    for name in context.columns:
        col = context[name]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            columns.append(col.to_numpy(dtype=np.float64, na_value=np.nan))
            categorical.append(False)
        else:
            codes, n_levels = _levels(col)
            columns.append(category_codes(codes, n_levels, counts))
            categorical.append(True)
    if not columns:
        return np.zeros((len(context), 0)), []
    return np.column_stack(columns), categorical


class _Design:
    """The features of (row, action) pairs: [position,] context columns, stream, stream features.

    The stream is a category: its code, or past _MAX_CATEGORIES streams the most shown ones and
    "other". A stream no logged row shows (codes >= n_actions) is unknown to the model: its stream
    and stream features are missing values, which the trees send down their learned default branch.
    The position is a category (a feed slot is no amount) up to _MAX_CATEGORIES slots, a number beyond.
    """

    def __init__(self, context: pd.DataFrame, action_code: np.ndarray, n_actions: int,
                 position: np.ndarray | None, action_features: pd.DataFrame | None):
        self.n_actions = n_actions
        self.x_ctx, ctx_categorical = encode_context(context)
        shown = np.bincount(action_code, minlength=n_actions).astype(np.float64)
        stream = category_codes(np.arange(n_actions, dtype=np.int64), n_actions, shown)
        act_columns, act_categorical = [stream[:, None]], [True]
        if action_features is not None and action_features.shape[1]:
            x_act, act_categorical_features = encode_context(action_features.iloc[:n_actions], counts=shown)
            act_columns.append(x_act)
            act_categorical += act_categorical_features
        x_act = np.hstack(act_columns)
        self.x_act = np.vstack([x_act, np.full((1, x_act.shape[1]), np.nan)])
        self.position = None
        n_positions = 1 if position is None or len(position) == 0 else int(position.max()) + 1
        if n_positions > 1:
            self.position = position.astype(np.float64)
        self.categorical = ([n_positions <= _MAX_CATEGORIES] if self.position is not None else []) \
            + list(ctx_categorical) + act_categorical
        self.names = (["position"] if self.position is not None else []) + [str(c) for c in context.columns] \
            + ["stream"] + [str(c) for c in (action_features.columns if len(act_columns) > 1 else [])]

    @property
    def n_features(self) -> int:
        return len(self.categorical)

    def __call__(self, rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        x = np.empty((len(rows), self.n_features))
        start = 0
        if self.position is not None:
            x[:, 0] = self.position[rows]
            start = 1
        end = start + self.x_ctx.shape[1]
        x[:, start:end] = self.x_ctx[rows]
        x[:, end:] = self.x_act[np.minimum(actions, self.n_actions)]
        return x


# =================================================================================================
# the (row, action) pairs to predict

class _Pairs:
    """The distinct (row, action) pairs to predict: the logged ones first (pair i is row i's logged
    action), then each policy's pairs except those equal to the row's logged pair (the logged action
    is usually among a candidate's), shared by policies whose pairs are the same arrays (candidates
    that reorder one slate list the same pairs). `index[name]` maps a policy's rows to pairs.
    Overlaps between different candidates' lists are predicted twice: finding them needs a sort or a
    hash of every pair (measured on 4e7 pairs: 11 s for np.unique, 26 s for a pandas hash table, what
    predicting a seventh of them with 60 trees costs), which pays only when the lists overlap heavily."""

    def __init__(self, action_code: np.ndarray, policies: Mapping[str, tuple[np.ndarray, np.ndarray]]):
        n = len(action_code)
        # int32 indices where they fit: at 1e7 rows and 6 candidate pairs per row they are 3 arrays of 7e7
        total = n + sum(len(r) for r, _ in policies.values())
        index = np.int32 if total < 2**31 and _n_codes(action_code, policies) < 2**31 else np.int64
        rows, actions = [np.arange(n, dtype=index)], [action_code.astype(index)]
        self.index: dict[str, np.ndarray] = {}
        distinct: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        size = n
        for name, (r, a) in policies.items():
            same = next((idx for r0, a0, idx in distinct if (r0 is r and a0 is a) or (
                len(r0) == len(r) and np.array_equal(r0, r) and np.array_equal(a0, a))), None)
            if same is not None:
                self.index[name] = same
                continue
            logged = a == action_code[r]
            new = ~logged
            idx = np.empty(len(r), dtype=index)
            idx[logged] = r[logged]
            n_new = int(np.count_nonzero(new))
            idx[new] = np.arange(size, size + n_new, dtype=index)
            size += n_new
            rows.append(r[new].astype(index))
            actions.append(a[new].astype(index))
            distinct.append((r, a, idx))
            self.index[name] = idx
        self.row = np.concatenate(rows) if len(rows) > 1 else rows[0]
        self.action = np.concatenate(actions) if len(actions) > 1 else actions[0]

    def __len__(self) -> int:
        return len(self.row)


def _n_codes(action_code: np.ndarray, policies: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> int:
    """One more than the largest action code of the logs and the policies."""
    return 1 + max([int(action_code.max()) if len(action_code) else 0]
                   + [int(a.max()) for _, a in policies.values() if len(a)])


# =================================================================================================
# the model of one training fold

def _is_binary(y: np.ndarray) -> bool:
    return bool(np.all((y == 0) | (y == 1)))


def _informative(y: np.ndarray) -> int:
    """Rows off the most common value: the minority class of a 0/1 reward, the non-zero rows of a
    zero-inflated one (gifts), nearly all rows of a continuous one. What a leaf or a validation set
    learns from."""
    n = len(y)
    if n == 0:
        return 0
    zeros = n - int(np.count_nonzero(y))
    if 2 * zeros > n:          # zero is the most common value (clicks, gifts, watch time): no sort needed
        return n - zeros
    _, counts = np.unique(y, return_counts=True)
    return int(n - counts.max())


def _min_leaf(y: np.ndarray, informative: int | None = None) -> int:
    """At least _LEAF_INFORMATIVE informative rows per leaf in expectation: 2,500 rows at a 0.4% click
    rate, scikit-learn's default of 20 for a continuous reward. A leaf's mean then has a relative
    standard error of about 1/sqrt(10), and rare outcomes cannot make a leaf predict 0.29."""
    share = (_informative(y) if informative is None else informative) / max(len(y), 1)
    return int(max(_MIN_LEAF, np.ceil(_LEAF_INFORMATIVE / share))) if share > 0 else _MIN_LEAF


def _hgb(binary: bool, categorical: list[bool], seed: int, min_leaf: int, early_stopping: bool):
    """The boosted model of the built-in reward model. L2 = 1 shrinks a leaf's Newton step
    -G / (H + L2) where its Hessian is small (a leaf of rare clicks: H ~ rows x p)."""
    kind = HistGradientBoostingClassifier if binary else HistGradientBoostingRegressor
    return kind(max_iter=_MAX_ITER, learning_rate=_LEARNING_RATE, max_leaf_nodes=31, min_samples_leaf=min_leaf,
                l2_regularization=_L2, early_stopping=early_stopping, n_iter_no_change=_PATIENCE,
                random_state=seed,
                categorical_features=np.asarray(categorical, dtype=bool) if any(categorical) else None)


def _serial(n_rows: int):
    """One OpenMP thread for small fits and predictions (see _SERIAL_ROWS); the caller's limit otherwise.
    Results are the same either way: the thread count changes only the speed."""
    if n_rows >= _SERIAL_ROWS:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="openmp")


class _Fitted:
    """A fitted model and the columns that had no value in its training rows (filled with 0, as in training)."""

    def __init__(self, model, empty: np.ndarray):
        self.model, self.empty = model, empty
        self.predict = _prediction(model)
        if empty.any():
            self.predict = functools.partial(_predict_filled, self.predict, empty)


def _fit(model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None,
         y_val: np.ndarray | None = None) -> _Fitted:
    # a feature without any value in the training rows (all NaN, e.g. a context column that is mostly
    # missing) cannot be binned: it becomes a constant, which no split uses, in training and prediction
    empty = np.count_nonzero(~np.isnan(x), axis=0) == 0
    if empty.any():
        x = x.copy()
        x[:, empty] = 0.0
        if x_val is not None:
            x_val = x_val.copy()
            x_val[:, empty] = 0.0
    with _serial(len(y)):
        if x_val is None:
            model.fit(x, y)
        else:
            model.fit(x, y, X_val=x_val, y_val=y_val)
    return _Fitted(model, empty)


def _baseline(y: np.ndarray, slot: np.ndarray, n_slots: int) -> np.ndarray:
    """Mean reward per position, shrunk towards the overall mean by empirical Bayes (Efron & Morris
    1975): position p's mean m_p over n_p rows becomes mu + tau^2 / (tau^2 + s^2 / n_p) (m_p - mu),
    with s^2 the pooled within-position variance and tau^2 the between-position variance by the method
    of moments (DerSimonian & Laird 1986). Positions that do not differ (tau^2 = 0) share the overall
    mean instead of paying for noisy means of their own: on logs with a 0.4% click rate, three
    unshrunk position means cost more held-out log-loss than the position effect is worth."""
    n = len(y)
    mean = float(np.mean(y)) if n else 0.0
    if n_slots == 1 or n == 0:
        return np.full(n_slots, mean)
    counts = np.bincount(slot, minlength=n_slots).astype(np.float64)
    sums = np.bincount(slot, weights=y, minlength=n_slots)
    seen = counts > 0
    means = np.where(seen, sums / np.maximum(counts, 1), mean)
    within = float(np.sum((y - means[slot]) ** 2)) / max(n - int(np.count_nonzero(seen)), 1)
    between = float(np.sum(counts * (means - mean) ** 2))
    spread = n - float(np.sum(counts ** 2)) / n
    tau2 = max(0.0, (between - (np.count_nonzero(seen) - 1) * within) / spread) if spread > 0 else 0.0
    if tau2 == 0.0:
        return np.full(n_slots, mean)
    shrink = tau2 / (tau2 + within / np.maximum(counts, 1)) * seen
    return mean + shrink * (means - mean)


_EPS = 1e-7


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _blend(b: np.ndarray, m: np.ndarray, weight: float, binary: bool) -> np.ndarray:
    if weight == 0.0:
        return b.astype(np.float64, copy=True)
    if binary:
        from scipy.special import expit
        lb = _logit(b)
        return expit(lb + weight * (_logit(m) - lb))
    return b + weight * (m - b)


def _blend_weight(y: np.ndarray, b: np.ndarray, m: np.ndarray, binary: bool) -> float:
    """lambda in [0, 1] minimising the mean held-out loss of the blend of baseline `b` and model `m`
    (see `_blend`). Both losses are convex in lambda: the minimum is in closed form for squared error
    and found by bisection on the derivative for log-loss. (A one-standard-error rule, the most shrunk
    lambda within one standard error of the best, was tried: on heavy-tailed watch time the standard
    error of squared-error differences is so large that it halved the held-out R^2 of the simulator's
    model, while on rare clicks it changed the held-out log-loss by less than 0.5%.)"""
    if len(y) == 0 or not np.any(m != b):
        return 0.0
    return _best_weight(y, b, m, binary)


def _best_weight(y: np.ndarray, b: np.ndarray, m: np.ndarray, binary: bool) -> float:
    if not binary:
        d = m - b
        den = float(np.sum(d * d))
        return float(np.clip(np.sum((y - b) * d) / den, 0.0, 1.0)) if den > 0 else 0.0
    from scipy.special import expit
    lb = _logit(b)
    d = _logit(m) - lb

    def slope(lam: float) -> float:
        return float(np.mean((expit(lb + lam * d) - y) * d))
    if slope(0.0) >= 0:
        return 0.0
    if slope(1.0) <= 0:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(30):   # 1e-9 on [0, 1]
        mid = 0.5 * (low + high)
        low, high = (mid, high) if slope(mid) < 0 else (low, mid)
    return 0.5 * (low + high)


@dataclass
class _FoldModel:
    """The built-in model of one training fold: the average of `models` (one, or the inner
    cross-validation's), blended with the per-position baseline by `weight` (lambda)."""

    models: list
    baseline: np.ndarray
    weight: float
    binary: bool
    n_trees: list = field(default_factory=list)
    validation: str = "none"

    def predict(self, x: np.ndarray, slot: np.ndarray) -> np.ndarray:
        b = self.baseline[slot]
        if not self.models or self.weight == 0.0:
            return b.astype(np.float64, copy=True)
        m = self.models[0].predict(x)
        for extra in self.models[1:]:
            m = m + extra.predict(x)
        if len(self.models) > 1:
            m = m / len(self.models)
        return _blend(b, m, self.weight, self.binary)


def _fit_fold(design: _Design, rows: np.ndarray, actions: np.ndarray, y: np.ndarray, slot: np.ndarray,
              n_slots: int, unit: np.ndarray, n_units: int, binary: bool, seed: int, k: int,
              report: _Report) -> _FoldModel:
    """The built-in model of one training fold (its rows `rows`; see the module docstring)."""
    baseline = _baseline(y, slot, n_slots)
    informative = _informative(y)
    if informative < _MIN_INFORMATIVE_TO_FIT:
        return _FoldModel([], baseline, 0.0, binary, validation="none: too few informative rows")
    # inner folds of whole decisions, from a generator of this fold's own
    inner_of_unit = np.random.default_rng([seed, k + 1]).permutation(n_units)
    single = _VALIDATION_FRACTION * informative >= _VALIDATION_INFORMATIVE
    if single:   # one split: 10% of the decisions
        parts = [(inner_of_unit % int(round(1 / _VALIDATION_FRACTION)) == 0)[unit]]
    else:
        inner = (inner_of_unit % _INNER_FOLDS)[unit]
        parts = [inner == j for j in range(_INNER_FOLDS)]
    categorical = design.categorical
    models, n_trees = [], []
    held_y, held_b, held_m = [], [], []
    for j, val in enumerate(parts):
        fit_rows = ~val
        y_fit, y_val = y[fit_rows], y[val]
        b_fit = _baseline(y_fit, slot[fit_rows], n_slots)
        can_fit = len(y_fit) > 0 and y_fit.min() < y_fit.max()
        stop = bool(len(y_val)) and len(y_fit) >= _MIN_ROWS_EARLY_STOPPING
        if not can_fit:
            continue
        label = f"fold {k + 1}/{report.n_folds}: fitting on {len(y_fit):,} rows" \
            + ("" if single else f" (inner {j + 1}/{len(parts)})")
        report(label)
        x_fit = design(rows[fit_rows], actions[fit_rows])
        x_val = design(rows[val], actions[val]) if len(y_val) else None
        fitted = _fit(_hgb(binary, categorical, seed + k, _min_leaf(y_fit), stop), x_fit, y_fit,
                      x_val if stop else None, y_val if stop else None)
        del x_fit
        report(label, _FIT_COST * len(y_fit))
        models.append(fitted)
        n_trees.append(int(fitted.model.n_iter_))
        if x_val is not None:
            with _serial(len(y_val)):
                held_m.append(fitted.predict(x_val))
            held_y.append(y_val)
            held_b.append(b_fit[slot[val]])
    if not models:
        return _FoldModel([], baseline, 0.0, binary, validation="none: one reward value")
    weight = _blend_weight(np.concatenate(held_y), np.concatenate(held_b), np.concatenate(held_m), binary) \
        if held_y else 1.0
    validation = "inner split" if single else f"inner {_INNER_FOLDS}-fold cross-validation"
    return _FoldModel(models, baseline, weight, binary, n_trees, validation)


# =================================================================================================
# cross-fitting

class _Report:
    """progress(message, done, total) in work units (see _FIT_COST), so that the caller's ETA weighs a
    fit and a prediction by their cost; silent without a callback."""

    def __init__(self, progress: Progress | None, total: float, n_folds: int):
        self.progress, self.total, self.done, self.n_folds = progress, max(float(total), 1.0), 0.0, n_folds

    def __call__(self, message: str, units: float = 0.0) -> None:
        self.done = min(self.done + units, self.total)
        if self.progress is not None:
            self.progress(f"reward model: {message}", int(self.done), int(self.total))


def counted_progress(progress: Progress | None, label: str = "") -> Progress | None:
    """`progress` for fit_reward_model: its messages name `label` ("reward model for click: ..."), and a
    callback that takes only the message (`progress(message)`) is called without the counts."""
    if progress is None:
        return None
    import inspect
    try:
        inspect.signature(progress).bind("", 0, 0)
        counted = True
    except TypeError:
        counted = False
    except ValueError:   # no signature to inspect (a builtin): assume the documented (message, done, total)
        counted = True
    prefix = f"reward model {label}".rstrip()

    def step(message: str, done: int, total: int) -> None:
        message = prefix + message[len("reward model"):] if message.startswith("reward model") else message
        if counted:
            progress(message, done, total)
        else:
            progress(message)
    return step


def fit_reward_model(context: pd.DataFrame, action_code: np.ndarray, n_actions: int, reward: np.ndarray,
                     policies: Mapping[str, tuple[np.ndarray, np.ndarray]], groups: np.ndarray | None,
                     n_folds: int = 3, seed: int = 0,
                     action_features: pd.DataFrame | None = None, model=None, *,
                     position: np.ndarray | None = None, progress: Progress | None = None) -> RewardModelFit:
    """Cross-fit the reward model on ([position,] context, stream, stream features) and predict out of fold.

    `policies` maps a name to (row, action_code) arrays of that policy's rows; `groups` are
    decision codes so that all positions of a decision share a fold (and an inner fold); `position`
    is each row's slot (0-based), a feature and the baseline's groups; `action_features` has one
    row per action code (stream features such as category and popularity), which lets the model
    share strength across streams instead of learning each stream id on its own. `model` replaces
    the built-in model with any scikit-learn regressor, or a classifier for 0/1 rewards (its
    predict_proba is the prediction); it is cloned per fold, fitted on the whole training fold and
    sees the same numeric features (categories as integer codes, a stream no logged row shows as
    NaN). `progress(message, done, total)` is called as folds are fitted and predicted.
    """
    n = len(reward)
    binary = _is_binary(reward)
    design = _Design(context, action_code, n_actions, position, action_features)
    pairs = _Pairs(action_code, policies)
    slot = np.zeros(n, dtype=np.int64) if design.position is None else np.asarray(position, dtype=np.int64)
    n_slots = int(slot.max()) + 1 if n else 1

    rng = np.random.default_rng(seed)
    unit = groups if groups is not None else np.arange(n)
    n_units = int(unit.max()) + 1 if n else 0
    # the smallest integer type for the fold numbers: a fold per predicted pair is an array of 7e7 at 1e7 rows
    fold_of_unit = (rng.permutation(n_units) % n_folds).astype(np.min_scalar_type(n_folds))
    fold = fold_of_unit[unit]
    pair_fold = fold[pairs.row]

    informative = _informative(reward) * (n_folds - 1) / n_folds   # of a training fold, about
    n_fits = 1 if model is not None or _VALIDATION_FRACTION * informative >= _VALIDATION_INFORMATIVE \
        else _INNER_FOLDS
    # inner cross-validation: each of 3 models is fitted on 2/3 of the fold and predicts every pair
    fit_share = 1.0 if n_fits == 1 else 2.0
    report = _Report(progress, (n_folds - 1) * n * _FIT_COST * fit_share + len(pairs) * n_fits, n_folds)

    q_pairs = np.empty(len(pairs))
    fold_models: list[_FoldModel | None] = []
    for k in range(n_folds):
        train = np.flatnonzero(fold != k)
        if model is None:
            fitted = _fit_fold(design, train, action_code[train], reward[train], slot[train], n_slots,
                               unit[train], n_units, binary, seed, k, report)
            predict = fitted.predict
            fold_models.append(fitted)
            per_pair = len(fitted.models) if fitted.weight != 0.0 else 1   # progress units per pair
        else:
            label = f"fold {k + 1}/{n_folds}: fitting on {len(train):,} rows"
            report(label)
            user = _fit_user_model(model, binary, design(train, action_code[train]), reward[train])
            report(label, _FIT_COST * len(train) * fit_share)
            predict = lambda x, _slot, fitted=user: fitted.predict(x)  # noqa: E731
            fold_models.append(None)
            per_pair = 1
        test = np.flatnonzero(pair_fold == k)
        label = f"fold {k + 1}/{n_folds}: predicting {len(test):,} (row, stream) pairs"
        report(label)
        for lo in range(0, len(test), _CHUNK):
            chunk = test[lo:lo + _CHUNK]
            rows = pairs.row[chunk]
            with _serial(len(test)):
                q_pairs[chunk] = predict(design(rows, pairs.action[chunk]), slot[rows])
            report(label, len(chunk) * per_pair)
    q_logged = q_pairs[:n]
    q_policy = {name: q_pairs[pairs.index[name]] for name in policies}
    quality = _quality(reward, q_logged, binary, n_folds, fold=fold, groups=unit)
    quality.update(_model_summary(design, fold_models, model))
    return RewardModelFit(q_logged=q_logged, q_policy=q_policy, quality=quality)


def _model_summary(design: _Design, fold_models: list, model) -> dict:
    """How the model was built: features, baseline, and per fold lambda and trees."""
    summary = {"features": design.names,
               "categorical_features": [n for n, c in zip(design.names, design.categorical) if c],
               "baseline": "per-position mean" if design.position is not None else "mean"}
    if model is None:
        summary.update(model="HistGradientBoosting shrunk towards the baseline",
                       model_weight=[round(m.weight, 6) for m in fold_models],
                       n_trees=[m.n_trees for m in fold_models],
                       validation=sorted({m.validation for m in fold_models}))
    else:
        summary["model"] = type(model).__name__
    return summary


def _fit_user_model(model, binary: bool, x: np.ndarray, y: np.ndarray) -> _Fitted:
    fold_model = _user_model(model, binary)
    try:
        return _fit(fold_model, x, y)
    except ValueError as exc:
        from livegate.datasets import InputError, Problem  # a user's model refusing the features
        raise InputError(Problem("reward_model", f"{type(model).__name__} could not be fitted: {exc}",
                                 fix="features are the position, the context columns, the action code and "
                                     "stream features, with NaN for missing values: use a model that accepts "
                                     "NaN (e.g. in a Pipeline with SimpleImputer)")) from None


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


def _can_stop_early(y: np.ndarray, binary: bool, values: np.ndarray | None = None) -> bool:
    """Whether HistGradientBoosting can hold out its own early-stopping validation set: enough rows, for
    a classifier each class twice at least (the hold-out is stratified), and every feature with a
    value (`values`: how many rows have one) keeping one outside the hold-out (a feature without
    any value where the trees are binned fails to bin). A rare click, a tiny fold or a nearly empty
    context column trains without early stopping instead of failing. (The built-in reward model
    passes its own validation rows and does not need this; the session models do.)"""
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
    """scikit-learn's HistGradientBoosting with early stopping on its own 10% split (the session models')."""
    common = dict(max_iter=200, learning_rate=0.1, max_leaf_nodes=31, early_stopping=early_stopping,
                  validation_fraction=_VALIDATION_FRACTION, n_iter_no_change=10, random_state=seed,
                  categorical_features=np.asarray(categorical, dtype=bool) if any(categorical) else None)
    return HistGradientBoostingClassifier(**common) if binary else HistGradientBoostingRegressor(**common)


# =================================================================================================
# held-out quality

_CALIBRATION_BINS = 10


def _losses(y: np.ndarray, pred: np.ndarray, binary: bool) -> np.ndarray:
    if binary:
        p = np.clip(pred, 1e-12, 1 - 1e-12)
        return -(y * np.log(p) + (1 - y) * np.log1p(-p))
    return (y - pred) ** 2


def _quality(y: np.ndarray, pred: np.ndarray, binary: bool, n_folds: int, *, fold: np.ndarray | None = None,
             groups: np.ndarray | None = None) -> dict:
    """Held-out quality of the out-of-fold predictions: R^2 always, log-loss for binary rewards.

    With the rows' `fold`, also the comparison with a cross-fitted constant (each fold predicted by
    the other folds' mean reward, the honest "no model" benchmark): `loss_model` and `loss_constant`
    (log-loss for 0/1 rewards, squared error otherwise), `skill` = 1 - loss_model / loss_constant
    with its standard error (`skill_se`, clustered by `groups`, the decisions) and
    `worse_than_constant` (skill <= 0: the model does no better than a constant on rows it has not
    seen), and the calibration: mean prediction against mean reward, overall and in
    _CALIBRATION_BINS bins of equal size ordered by the prediction, and the largest prediction."""
    n = len(y)
    sst = float(np.sum((y - y.mean()) ** 2)) if n else 0.0
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / sst if sst > 0 else float("nan")
    quality = {"kind": "classifier" if binary else "regressor", "n_folds": n_folds, "r2": r2,
               "metric_name": "r2", "value": r2}
    if binary:
        log_loss = float(np.mean(_losses(y, pred, True)))
        base = np.clip(y.mean(), 1e-12, 1 - 1e-12)
        quality.update(metric_name="log_loss", value=log_loss,
                       log_loss_constant=float(-(base * np.log(base) + (1 - base) * np.log(1 - base))))
    if fold is None or n == 0:
        return quality
    sums = np.bincount(fold, weights=y, minlength=n_folds)
    counts = np.bincount(fold, minlength=n_folds)
    constant = ((sums.sum() - sums) / np.maximum(n - counts, 1))[fold]
    loss_model, loss_constant = _losses(y, pred, binary), _losses(y, constant, binary)
    mean_model, mean_constant = float(np.mean(loss_model)), float(np.mean(loss_constant))
    skill = 1.0 - mean_model / mean_constant if mean_constant > 0 else float("nan")
    # the standard error of the mean loss difference, clustered by decision (its rows share a fold)
    unit = np.arange(n) if groups is None else groups
    diff = np.bincount(unit, weights=loss_model - loss_constant)
    size = np.bincount(unit)
    keep = size > 0
    diff, size = diff[keep], size[keep]
    g = len(diff)
    mean_diff = float(np.sum(diff)) / n
    se_diff = float(np.sqrt(g / max(g - 1, 1) * np.sum((diff - size * mean_diff) ** 2))) / n
    quality.update(loss="log_loss" if binary else "squared_error", loss_model=mean_model,
                   loss_constant=mean_constant, skill=skill,
                   skill_se=se_diff / mean_constant if mean_constant > 0 else float("nan"),
                   worse_than_constant=bool(not skill > 0), calibration=_calibration(y, pred))
    return quality


def _calibration(y: np.ndarray, pred: np.ndarray) -> dict:
    n = len(y)
    order = np.argsort(pred, kind="stable")
    edges = np.linspace(0, n, _CALIBRATION_BINS + 1).round().astype(np.int64)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi > lo:
            part = order[lo:hi]
            bins.append({"n": int(hi - lo), "mean_predicted": float(np.mean(pred[part])),
                         "mean_observed": float(np.mean(y[part]))})
    return {"mean_predicted": float(np.mean(pred)), "mean_observed": float(np.mean(y)),
            "mean_observed_se": float(np.std(y) / np.sqrt(n)) if n > 1 else float("nan"),
            "min_predicted": float(np.min(pred)), "max_predicted": float(np.max(pred)), "bins": bins}
