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

Logs evaluated in partitions (streaming, Dask) use the same model fitted once on a sample of whole
decisions (`sample_decisions`/`sample_rows`, `gather_sample`, `fit_sampled_reward_model`): folds and
sample by a stable hash of the decision id, encodings frozen from the sample, and a picklable
`SampledRewardModel` whose `predict_partition` gives a partition what `evaluate._model_predictions`
gives the whole logs in memory. Exact: no row is predicted by a model that trained on it, and a row's
prediction does not depend on its partition; approximate: the models learnt from a sample.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

if TYPE_CHECKING:
    from livegate.datasets import LoggedData, PolicyTable

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
    codes, uniques, _ = _level_values(column)
    return codes, len(uniques)


def _level_values(column: pd.Series) -> tuple[np.ndarray, np.ndarray, bool]:
    """(codes, the levels in code order, whether they were compared as text) of a categorical column:
    levels sorted, -1 for missing."""
    try:
        codes, uniques = pd.factorize(column, sort=True)
        as_text = False
    except TypeError:  # mixed types (e.g. numbers and strings in one object column): compare as text
        codes, uniques = pd.factorize(column.astype("string"), sort=True)
        as_text = True
    return np.asarray(codes, dtype=np.int64), np.asarray(uniques, dtype=object), as_text


def _category_mapping(codes: np.ndarray, n_levels: int, counts: np.ndarray | None = None) -> np.ndarray | None:
    """The float code of each level (see `category_codes`), or None when every level keeps its own code."""
    if n_levels <= _MAX_CATEGORIES:
        return None
    present = codes >= 0
    freq = np.bincount(codes[present], weights=None if counts is None else counts[present], minlength=n_levels)
    order = np.lexsort((np.arange(n_levels), -freq))          # most frequent first, then sorted order
    mapping = np.full(n_levels, float(_MAX_CATEGORIES))
    mapping[np.sort(order[:_MAX_CATEGORIES])] = np.arange(_MAX_CATEGORIES, dtype=np.float64)
    return mapping


def category_codes(codes: np.ndarray, n_levels: int, counts: np.ndarray | None = None) -> np.ndarray:
    """Float codes for a native categorical feature, NaN for missing (code -1). With more than
    _MAX_CATEGORIES levels, the _MAX_CATEGORIES most frequent keep a code of their own (ties: the
    first in sorted order) and the others share the code _MAX_CATEGORIES ("other"): rare levels pool
    their few rows instead of each getting an unreliable split. `counts` weighs each entry (rows per
    stream for stream features); by default each entry counts once."""
    values = codes.astype(np.float64)
    values[codes < 0] = np.nan
    mapping = _category_mapping(codes, n_levels, counts)
    if mapping is None:
        return values
    present = codes >= 0
    values[present] = mapping[codes[present]]
    return values


def _as_float(column: pd.Series) -> np.ndarray:
    try:
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):   # e.g. an object column of bools and None in one partition
        return pd.to_numeric(column.astype(object), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


class _ColumnCoder:
    """How one feature column was encoded, frozen: applied to other rows (another partition of the same
    data) it gives every value the code it had where the coder was fitted. Numbers stay numbers; a
    categorical column keeps its levels (by value) and their float codes: a level the fitted rows never
    showed is "other" when the column pooled its rare levels, else missing (NaN, the trees' default
    branch; HistGradientBoosting treats an unknown category the same way)."""

    def __init__(self, categorical: bool, levels: np.ndarray | None = None, mapping: np.ndarray | None = None,
                 as_text: bool = False):
        self.categorical, self.levels, self.mapping, self.as_text = categorical, levels, mapping, as_text
        self._index = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_index"}

    def __setstate__(self, state):
        self.__dict__.update(state, _index=None)

    def transform(self, column: pd.Series) -> np.ndarray:
        if not self.categorical:
            return _as_float(column)
        if self._index is None:
            self._index = pd.Index(self.levels, dtype=object)
        values = column.astype("string") if self.as_text else column
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(object)
        codes = self._index.get_indexer(np.asarray(values, dtype=object))
        out = np.full(len(codes), np.nan)
        seen = codes >= 0
        out[seen] = codes[seen] if self.mapping is None else self.mapping[codes[seen]]
        if self.mapping is not None:   # pooled column: a level never seen is one more rare level
            out[~seen & np.asarray(column.notna())] = float(_MAX_CATEGORIES)
        return out


def _fit_column(column: pd.Series, counts: np.ndarray | None,
                by_value: bool) -> tuple[np.ndarray, bool, _ColumnCoder]:
    """(values, categorical, coder) of one feature column: what `encode_context` does to it, and the
    frozen coder. `by_value`: a pandas categorical column's levels are sorted by value rather than
    in its categories' order (which depends on how the rows were read)."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), False, _ColumnCoder(False)
    if by_value and isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype(object)
    codes, levels, as_text = _level_values(column)
    values = category_codes(codes, len(levels), counts)
    return values, True, _ColumnCoder(True, levels, _category_mapping(codes, len(levels), counts), as_text)


def _fit_columns(context: pd.DataFrame, counts: np.ndarray | None = None,
                 by_value: bool = False) -> tuple[np.ndarray, list[bool], list[_ColumnCoder]]:
    """`encode_context` and the coders that encode other rows the same way."""
    columns, categorical, coders = [], [], []
    for name in context.columns:
        values, is_category, coder = _fit_column(context[name], counts, by_value)
        columns.append(values)
        categorical.append(is_category)
        coders.append(coder)
    if not columns:
        return np.zeros((len(context), 0)), [], []
    return np.column_stack(columns), categorical, coders


def _apply_columns(context: pd.DataFrame, names: list, coders: list[_ColumnCoder]) -> np.ndarray:
    """The features of other rows by frozen coders (see `_ColumnCoder`); a column missing from `context`
    is missing (NaN) throughout."""
    x = np.full((len(context), len(coders)), np.nan)
    for j, (name, coder) in enumerate(zip(names, coders)):
        if name in context.columns:
            x[:, j] = coder.transform(context[name])
    return x


def encode_context(context: pd.DataFrame, counts: np.ndarray | None = None) -> tuple[np.ndarray, list[bool]]:
    """Float64 matrix for the trees and which columns are categorical. Numbers stay numbers (NaN for
    missing), bools become 0/1, every other column (strings, pandas categories) becomes a native
    categorical feature (`category_codes`: at most _MAX_CATEGORIES levels + "other"). `counts` weighs
    the rows when choosing the most frequent levels. Float64 because HistGradientBoosting converts
    any other dtype to float64 (a copy per fit and per prediction)."""
    x, categorical, _ = _fit_columns(context, counts)
    return x, categorical


class _Design:
    """The features of (row, action) pairs: [position,] context columns, stream, stream features.

    The stream is a category: its code, or past _MAX_CATEGORIES streams the most shown ones and
    "other". A stream no logged row shows (codes >= n_actions) is unknown to the model: its stream
    and stream features are missing values, which the trees send down their learned default branch.
    The position is a category (a feed slot is no amount) up to _MAX_CATEGORIES slots, a number beyond.
    """

    def __init__(self, context: pd.DataFrame, action_code: np.ndarray, n_actions: int,
                 position: np.ndarray | None, action_features: pd.DataFrame | None, by_value: bool = False):
        self.n_actions = n_actions
        self.x_ctx, ctx_categorical, self.ctx_coders = _fit_columns(context, by_value=by_value)
        self.ctx_names = list(context.columns)
        shown = np.bincount(action_code, minlength=n_actions).astype(np.float64)
        stream = category_codes(np.arange(n_actions, dtype=np.int64), n_actions, shown)
        act_columns, act_categorical = [stream[:, None]], [True]
        if action_features is not None and action_features.shape[1]:
            x_act, act_categorical_features, _ = _fit_columns(action_features.iloc[:n_actions], counts=shown,
                                                             by_value=by_value)
            act_columns.append(x_act)
            act_categorical += act_categorical_features
        x_act = np.hstack(act_columns)
        self.x_act = np.vstack([x_act, np.full((1, x_act.shape[1]), np.nan)])
        self.position = None
        n_positions = 1 if position is None or len(position) == 0 else int(position.max()) + 1
        if n_positions > 1:
            self.position = position.astype(np.float64)
        self.n_positions = n_positions
        self.categorical = ([n_positions <= _MAX_CATEGORIES] if self.position is not None else []) \
            + list(ctx_categorical) + act_categorical
        self.names = (["position"] if self.position is not None else []) + [str(c) for c in context.columns] \
            + ["stream"] + [str(c) for c in (action_features.columns if len(act_columns) > 1 else [])]

    @classmethod
    def _of(cls, x_ctx: np.ndarray, x_act: np.ndarray, position: np.ndarray | None, categorical: list[bool],
            names: list[str]) -> _Design:
        """A design of given parts: `x_act` has one row per action code and a last row of NaN (unknown)."""
        design = cls.__new__(cls)
        design.x_ctx, design.x_act, design.position = x_ctx, x_act, position
        design.n_actions, design.categorical, design.names = len(x_act) - 1, categorical, names
        return design

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
    """A fitted model and the columns that had no value in its training rows (filled with 0, as in training).
    Picklable (a reward model fitted on a sample predicts on Dask workers)."""

    def __init__(self, model, empty: np.ndarray):
        self.model, self.empty = model, empty

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.empty.any():
            return _predict_filled(_prediction(self.model), self.empty, X)
        return _prediction(self.model)(X)


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
    cost: int = 1     # progress units per predicted pair

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
                     position: np.ndarray | None = None, progress: Progress | None = None,
                     fold: np.ndarray | None = None) -> RewardModelFit:
    """Cross-fit the reward model on ([position,] context, stream, stream features) and predict out of fold.

    `policies` maps a name to (row, action_code) arrays of that policy's rows; `groups` are
    decision codes so that all positions of a decision share a fold (and an inner fold); `position`
    is each row's slot (0-based), a feature and the baseline's groups; `action_features` has one
    row per action code (stream features such as category and popularity), which lets the model
    share strength across streams instead of learning each stream id on its own. `model` replaces
    the built-in model with any scikit-learn regressor, or a classifier for 0/1 rewards (its
    predict_proba is the prediction); it is cloned per fold, fitted on the whole training fold and
    sees the same numeric features (categories as integer codes, a stream no logged row shows as
    NaN). `progress(message, done, total)` is called as folds are fitted and predicted. `fold`, when
    given, is each row's fold 0 .. n_folds - 1 (rows of a decision must share it); by default the
    decisions are dealt to folds by a random permutation of `seed`.
    """
    n = len(reward)
    binary = _is_binary(reward)
    design = _Design(context, action_code, n_actions, position, action_features)
    pairs = _Pairs(action_code, policies)
    slot = np.zeros(n, dtype=np.int64) if design.position is None else np.asarray(position, dtype=np.int64)
    n_slots = int(slot.max()) + 1 if n else 1

    unit = groups if groups is not None else np.arange(n)
    n_units = int(unit.max()) + 1 if n else 0
    if fold is None:
        rng = np.random.default_rng(seed)
        # the smallest integer type for the fold numbers: a fold per predicted pair is an array of 7e7 at 1e7 rows
        fold_of_unit = (rng.permutation(n_units) % n_folds).astype(np.min_scalar_type(n_folds))
        fold = fold_of_unit[unit]
    pair_fold = fold[pairs.row]

    fits = _CrossFit(design, fold, n_folds, action_code, reward, slot, n_slots, unit, n_units, binary, seed, model)
    report = _Report(progress, fits.fit_units + len(pairs) * fits.n_fits, n_folds)

    q_pairs = np.empty(len(pairs))
    fold_models: list = []
    for k in range(n_folds):
        fitted = fits.fit(k, report)
        fold_models.append(fitted)
        test = np.flatnonzero(pair_fold == k)
        label = f"fold {k + 1}/{n_folds}: predicting {len(test):,} (row, stream) pairs"
        report(label)
        for lo in range(0, len(test), _CHUNK):
            chunk = test[lo:lo + _CHUNK]
            rows = pairs.row[chunk]
            with _serial(len(test)):
                q_pairs[chunk] = fitted.predict(design(rows, pairs.action[chunk]), slot[rows])
            report(label, len(chunk) * fitted.cost)
    q_logged = q_pairs[:n]
    q_policy = {name: q_pairs[pairs.index[name]] for name in policies}
    quality = _quality(reward, q_logged, binary, n_folds, fold=fold, groups=unit)
    quality.update(_model_summary(design, fold_models, model))
    return RewardModelFit(q_logged=q_logged, q_policy=q_policy, quality=quality)


class _UserFold:
    """A user's model fitted on one training fold (the position is a feature, no baseline)."""

    cost = 1

    def __init__(self, fitted: _Fitted):
        self.fitted = fitted

    def predict(self, x: np.ndarray, slot: np.ndarray) -> np.ndarray:
        return self.fitted.predict(x)


class _CrossFit:
    """The fold models of one cross-fit: `fit(k)` trains fold k's model on the rows of the other folds
    (the built-in `_fit_fold`, or a clone of the user's `model`). Shared by the in-memory cross-fit
    (`fit_reward_model`) and the sampled one (`fit_sampled_reward_model`), so both train the same model
    on the same rows. `fit_units` and `n_fits` size the progress report."""

    def __init__(self, design: _Design, fold: np.ndarray, n_folds: int, action_code: np.ndarray, reward: np.ndarray,
                 slot: np.ndarray, n_slots: int, unit: np.ndarray, n_units: int, binary: bool, seed: int, model):
        self.design, self.fold, self.n_folds = design, fold, n_folds
        self.action_code, self.reward = action_code, reward
        self.slot, self.n_slots, self.unit, self.n_units = slot, n_slots, unit, n_units
        self.binary, self.seed, self.model = binary, seed, model
        n = len(reward)
        informative = _informative(reward) * (n_folds - 1) / n_folds   # of a training fold, about
        self.n_fits = 1 if model is not None or _VALIDATION_FRACTION * informative >= _VALIDATION_INFORMATIVE \
            else _INNER_FOLDS
        # inner cross-validation: each of 3 models is fitted on 2/3 of the fold and predicts every pair
        self.fit_share = 1.0 if self.n_fits == 1 else 2.0
        self.fit_units = (n_folds - 1) * n * _FIT_COST * self.fit_share

    def train_rows(self, k: int) -> np.ndarray:
        return np.flatnonzero(self.fold != k)

    def fit(self, k: int, report: _Report) -> _FoldModel | _UserFold:
        """Fold k's model; `.predict(x, slot)` predicts, `.cost` is its progress units per pair."""
        train = self.train_rows(k)
        if self.model is None:
            fitted = _fit_fold(self.design, train, self.action_code[train], self.reward[train], self.slot[train],
                               self.n_slots, self.unit[train], self.n_units, self.binary, self.seed, k, report)
            fitted.cost = len(fitted.models) if fitted.weight != 0.0 else 1
            return fitted
        label = f"fold {k + 1}/{self.n_folds}: fitting on {len(train):,} rows"
        report(label)
        x = self.design(train, self.action_code[train])
        user = _fit_user_model(self.model, self.binary, x, self.reward[train])
        report(label, _FIT_COST * len(train) * self.fit_share)
        return _UserFold(user)


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
# a reward model fitted once on a sample of decisions, predicting any partition on its own

#: the default size of the sample that fits the reward model when the logs are evaluated in
#: partitions (streaming, Dask): about this many log rows, whole decisions. Measured on the simulator's
#: logs (1e6 rows, clicks, one OpenMP thread on an idle core): 15.5 s for the 3 fold models (70-85 trees
#: each) and their out-of-fold predictions; predicting then costs what it does in memory, 3.5e5
#: (row, stream) pairs per second and thread. (Two OpenMP threads on cores another process also uses
#: were 6-10 times slower: a worker should run HistGradientBoosting with OMP_NUM_THREADS=1 per core.)
DEFAULT_SAMPLE_ROWS = 1_000_000
# salts of the two uses of a decision's hash: the sample and the folds are independent draws
_SAMPLE_SALT = 0x5A3F1E00D1CE5EED
_FOLD_SALT = 0xF01DC0DEB0A710AD
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (wrapping uint64 arithmetic)."""
    z = z.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def decision_keys(decision_id_values) -> np.ndarray:
    """Stable uint64 keys of decision ids: pandas.util.hash_array of the id values (the bootstrap's keys,
    `inference.bootstrap_keys`): the same on every machine, run and partitioning."""
    from pandas.util import hash_array
    return hash_array(np.asarray(decision_id_values))


def _seeded(keys: np.ndarray, seed: int, salt: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        offset = _mix(np.array([(int(seed) * _GOLDEN + salt) % 2**64], dtype=np.uint64))[0]
    return _mix(keys ^ offset)


def folds_of_keys(keys: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """The fold 0 .. n_folds - 1 of decisions by their `decision_keys`."""
    return (_seeded(keys, seed, _FOLD_SALT) % np.uint64(n_folds)).astype(np.int64)


def decision_folds(decision_id_values, n_folds: int, seed: int) -> np.ndarray:
    """The cross-fitting fold of each decision id: a stable hash of the id value mixed with the seed, mod
    n_folds. A function of the id alone: the same on every partition and machine, whatever the partitioning."""
    return folds_of_keys(decision_keys(decision_id_values), n_folds, seed)


def sample_fraction(n_rows: int, max_rows: int = DEFAULT_SAMPLE_ROWS) -> float:
    """The share of decisions to sample so that about `max_rows` of `n_rows` log rows are drawn (1: all)."""
    return 1.0 if n_rows <= max_rows else max_rows / n_rows


def sample_decisions(decision_id_values, fraction_or_rows: float | int = DEFAULT_SAMPLE_ROWS, seed: int = 0, *,
                     total_rows: int | None = None) -> np.ndarray:
    """A bool mask over `decision_id_values`: whether each id's decision is in the sample.

    Decision d is drawn when u(d) < fraction, u(d) in [0, 1) the top 53 bits of a stable hash of its id
    mixed with `seed` (independent of the fold hash): the sample is a Bernoulli sample of whole decisions,
    the same whatever the partitioning, the row order or the machine; a partition computes its own part
    of it. `fraction_or_rows`: a float in (0, 1] is the share of decisions; an int is a number of log
    rows to aim at (about: the sample's size is random), out of `total_rows` (the rows of the whole
    data, e.g. `StreamPlan.n_rows`; by default len(decision_id_values), right only when they are all of
    the data). Default: DEFAULT_SAMPLE_ROWS rows."""
    ids = np.asarray(decision_id_values)
    if isinstance(fraction_or_rows, (int, np.integer)) and not isinstance(fraction_or_rows, bool):
        if fraction_or_rows < 1:
            raise ValueError(f"sample of {fraction_or_rows} rows: give at least 1")
        fraction = sample_fraction(len(ids) if total_rows is None else total_rows, int(fraction_or_rows))
    else:
        fraction = float(fraction_or_rows)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"sample fraction {fraction}: give a share in (0, 1]")
    if fraction >= 1.0:
        return np.ones(len(ids), dtype=bool)
    u = (_seeded(decision_keys(ids), seed, _SAMPLE_SALT) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return u < fraction


def sample_rows(logs: LoggedData, fraction_or_rows: float | int = DEFAULT_SAMPLE_ROWS, seed: int = 0, *,
                total_rows: int | None = None) -> np.ndarray:
    """The log rows of `logs` (a LoggedData, e.g. one partition's) whose decision is in the sample
    (`sample_decisions`), ascending. Hashes each distinct decision id once."""
    ids = _decision_ids(logs)
    keep = sample_decisions(ids, fraction_or_rows, seed, total_rows=logs.n if total_rows is None else total_rows)
    return np.flatnonzero(keep[logs.decision_code])


def gather_sample(parts: Sequence[tuple[LoggedData, np.ndarray]]) -> LoggedData:
    """The sampled rows of several partitions as one LoggedData, for `fit_sampled_reward_model`.

    `parts`: (logs, rows) pairs, a partition's LoggedData and its sampled rows (`sample_rows`), e.g. in
    partition order (the fitted model does not depend on the order: see `fit_sampled_reward_model`).
    Carries what the model reads, re-encoded for the sample: the actions (codes of the sample's own
    sorted action values), the decision ids, positions, propensities, outcomes, the context columns
    and the stream features (each stream's values from the first partition that logs it)."""
    import pyarrow as pa

    from livegate.datasets import LoggedData
    from livegate.datasets.encoding import dense_codes
    parts = [(logs, np.asarray(rows, dtype=np.int64)) for logs, rows in parts]
    if not parts:
        raise ValueError("no partitions to gather a sample from")
    first = parts[0][0]

    def joined(arrays: list[np.ndarray]) -> np.ndarray:
        kinds = {a.dtype for a in arrays}
        return np.concatenate(arrays if len(kinds) == 1 else [a.astype(object) for a in arrays])

    action = joined([logs.actions[logs.action_code[r]] for logs, r in parts])
    ids = joined([_decision_ids(logs)[logs.decision_code[r]] for logs, r in parts])
    action_code, actions = dense_codes(action)
    decision_code, decision_ids = dense_codes(ids)
    position = None if first.position is None else np.concatenate(
        [np.zeros(len(r), dtype=np.int64) if logs.position is None else logs.position[r] for logs, r in parts])
    context_table = None
    if first.context_table is not None:
        tables = [logs.context_table.take(pa.array(r)) for logs, r in parts]
        try:
            context_table = pa.concat_tables(tables)
        except (pa.ArrowInvalid, pa.ArrowTypeError):   # a column typed differently in some partition
            context_table = pa.concat_tables(tables, promote_options="permissive")
    action_features = None
    if first.action_features is not None:
        frames = []
        for logs, r in parts:
            if logs.action_features is not None and len(r):
                shown = np.unique(logs.action_code[r])
                frame = logs.action_features.iloc[shown].reset_index(drop=True)
                frames.append(frame.assign(__action__=logs.actions[shown]))
        table = pd.concat(frames, ignore_index=True).drop_duplicates("__action__", keep="first")
        where = pd.Index(table["__action__"].to_numpy()).get_indexer(actions)
        action_features = table.drop(columns="__action__").iloc[where].reset_index(drop=True)
    return LoggedData(
        source=f"sample of {len(parts)} partition(s)", action=action, action_code=action_code, actions=actions,
        propensity=np.concatenate([logs.propensity[r] for logs, r in parts]),
        outcomes={c: np.concatenate([logs.outcomes[c][r] for logs, r in parts]) for c in first.outcomes},
        decision_code=decision_code, decision_ids=decision_ids, position=position,
        context_table=context_table, action_features=action_features, schema=first.schema)

def _decision_ids(logs: LoggedData) -> np.ndarray:
    if logs.decision_ids is None or logs.decision_code is None:
        from livegate.datasets import InputError, Problem
        raise InputError(Problem(logs.source, "has no decision ids: a reward model fitted on a sample assigns "
                                              "folds and the sample by decision id",
                                 fix="add a decision_id column (or evaluate in memory)"))
    return logs.decision_ids


def _canonical(sample: LoggedData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row order, decision rank per ordered row, decision code per ordered row): the sample's rows
    ordered by (hash of the decision id, decision id, position). The model fitted on the reordered rows
    depends only on the set of sampled rows, not on the order in which partitions delivered them
    (HistGradientBoosting's bin thresholds and the inner folds depend on the row order)."""
    keys = decision_keys(_decision_ids(sample))
    position = np.zeros(sample.n, dtype=np.int64) if sample.position is None else sample.position
    # decision_code ranks the ids by value (`dense_codes` sorts them): the tie-break of equal hashes
    order = np.lexsort((position, sample.decision_code, keys[sample.decision_code]))
    code = sample.decision_code[order]
    new = np.ones(len(code), dtype=bool)
    new[1:] = code[1:] != code[:-1]
    unit = np.cumsum(new) - 1
    return order, unit, code


@dataclass
class SampledRewardModel:
    """A cross-fitted reward model fitted once on a sample of decisions (`fit_sampled_reward_model`)
    that predicts the rows of any partition of the same logs on its own: picklable, small (the fold
    models and the frozen encodings), no reference to the data. Row i of a partition is predicted by
    the model of its decision's fold (`decision_folds`), which was trained on the sample's decisions of
    the other folds and so never saw row i."""

    n_folds: int
    seed: int
    binary: bool
    fold_models: list
    actions: np.ndarray                 # the sample's actions (values, sorted); the stream vocabulary
    x_act: np.ndarray                   # their features: stream code and stream features
    ctx_names: list
    ctx_coders: list
    n_positions: int                    # the sample's; a position at or past it is unseen
    position_feature: bool
    position_categorical: bool
    categorical: list
    names: list
    quality: dict = field(default_factory=dict)
    #: per fold, the decision ids its model was trained on (kept only with record_training=True)
    training_ids: list | None = None

    # ---------------------------------------------------------------- folds
    def folds(self, logs: LoggedData) -> np.ndarray:
        """The fold of each row of `logs` (a LoggedData): a function of its decision id alone."""
        return folds_of_keys(decision_keys(_decision_ids(logs)), self.n_folds, self.seed)[logs.decision_code]

    # ---------------------------------------------------------------- features
    def _action_rows(self, values: np.ndarray) -> np.ndarray:
        """Features of actions given by value, one row each plus a last row of NaN. An action of the
        sample has its frozen row; any other is an unseen stream, unknown to the model: its stream and
        stream features are missing (NaN), as for a stream no logged row shows in memory. (Its a_*
        values in a partition are not used: a partition that only lists it in a policy has none, and
        the prediction must not depend on the partition.)"""
        rows = np.full((len(values) + 1, self.x_act.shape[1]), np.nan)
        try:
            where = pd.Index(self.actions).get_indexer(values)
        except (TypeError, ValueError):
            where = pd.Index(self.actions, dtype=object).get_indexer(np.asarray(values, dtype=object))
        seen = where >= 0
        rows[:-1][seen] = self.x_act[where[seen]]
        return rows

    def _design(self, logs: LoggedData, x_act: np.ndarray) -> tuple[_Design, np.ndarray]:
        """The design of `logs`' rows with the frozen encodings, and each row's baseline slot."""
        x_ctx = _apply_columns(logs.context, self.ctx_names, self.ctx_coders) if self.ctx_names \
            else np.zeros((logs.n, 0))
        position, slot = None, np.zeros(logs.n, dtype=np.int64)
        if self.position_feature:
            raw = np.zeros(logs.n, dtype=np.int64) if logs.position is None else np.asarray(logs.position, np.int64)
            unseen = raw >= self.n_positions
            position = raw.astype(np.float64)
            if self.position_categorical:
                position[unseen] = np.nan       # an unknown category (HistGradientBoosting: missing)
            slot = np.where(unseen, self.n_positions, raw)   # the baseline's last entry: the overall mean
        return _Design._of(x_ctx, x_act, position, self.categorical, self.names), slot

    def _partition_actions(self, logs: LoggedData) -> np.ndarray:
        values = np.asarray(logs.actions)
        if logs.unlogged_actions:
            extra = np.asarray(logs.unlogged_actions)
            values = np.concatenate([values, extra]) if extra.dtype == values.dtype \
                else np.concatenate([values.astype(object), extra.astype(object)])
        return self._action_rows(values)

    # ---------------------------------------------------------------- predictions
    def _predict(self, design: _Design, slot: np.ndarray, fold: np.ndarray, rows: np.ndarray,
                 codes: np.ndarray) -> np.ndarray:
        q = np.empty(len(rows))
        pair_fold = fold[rows]
        for k, fitted in enumerate(self.fold_models):
            test = np.flatnonzero(pair_fold == k)
            for lo in range(0, len(test), _CHUNK):
                chunk = test[lo:lo + _CHUNK]
                r = rows[chunk]
                with _serial(len(test)):
                    q[chunk] = fitted.predict(design(r, codes[chunk]), slot[r])
        return q

    def predict(self, logs: LoggedData, rows: np.ndarray, action_codes: np.ndarray | None = None, *,
                action_values: np.ndarray | None = None) -> np.ndarray:
        """q(x_row, a) for each pair (rows[j], action j) of `logs` (a LoggedData, e.g. one partition's): the
        action as the logs' own code (`action_codes`, local to `logs`, unlogged actions' codes included)
        or as a value (`action_values`, any action, seen in the sample or not). Each pair is predicted by
        the model of its row's fold."""
        rows = np.asarray(rows, dtype=np.int64)
        if (action_codes is None) == (action_values is None):
            raise TypeError("give action_codes or action_values")
        if action_codes is not None:
            x_act, codes = self._partition_actions(logs), np.asarray(action_codes, dtype=np.int64)
        else:
            codes, uniques = pd.factorize(np.asarray(action_values))
            x_act = self._action_rows(np.asarray(uniques))
        design, slot = self._design(logs, x_act)
        return self._predict(design, slot, self.folds(logs), rows, codes)

    def predict_partition(self, logs: LoggedData,
                          policies: Mapping[str, PolicyTable]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(q_logged, {policy: q_pi}) for one partition, what `evaluate._model_predictions` returns in memory
        from a fitted model: q_logged[i] = q(x_i, a_i) at the logged action, and for each long-format
        policy q_pi[i] = sum_a pi(a|x_i) q(x_i, a) (pairs of probability 0 are not predicted); the
        logging policy's entry is q_logged; compact-form policies get none (as in memory)."""
        from livegate.datasets.schema import LOGGING_POLICY
        long_form = {name: p for name, p in policies.items() if not p.compact and name != LOGGING_POLICY}
        listed = {name: None if bool(np.all(p.prob > 0)) else np.flatnonzero(p.prob > 0)
                  for name, p in long_form.items()}
        lists = {name: (p.row, p.action_code) if listed[name] is None
                 else (p.row[listed[name]], p.action_code[listed[name]]) for name, p in long_form.items()}
        pairs = _Pairs(logs.action_code, lists)
        design, slot = self._design(logs, self._partition_actions(logs))
        q_pairs = self._predict(design, slot, self.folds(logs), pairs.row, pairs.action)
        q_logged = q_pairs[:logs.n]
        q_pi = {}
        for name, p in long_form.items():
            q = q_pairs[pairs.index[name]]
            if listed[name] is not None:
                full = np.zeros(len(p.row))
                full[listed[name]] = q
                q = full
            q_pi[name] = p.expected(q, logs.n)
        q_pi[LOGGING_POLICY] = q_logged
        return q_logged, q_pi


def fit_sampled_reward_model(sample: LoggedData, reward: np.ndarray, *, n_folds: int = 3, seed: int = 0, model=None,
                             progress: Progress | None = None,
                             record_training: bool = False) -> SampledRewardModel:
    """Cross-fit the reward model once on a sample of decisions (`sample`: a LoggedData of whole
    decisions, e.g. `gather_sample` of every partition's `sample_rows`; `reward`: its rewards) for logs
    evaluated in partitions (streaming, Dask). The returned model predicts any partition on its own
    (`SampledRewardModel.predict_partition` in place of `evaluate._model_predictions`).

    Folds: decision d's fold is a stable hash of its id mixed with `seed`, mod `n_folds`
    (`decision_folds`), the same on every partition and machine. Fold model k is the model of
    `fit_reward_model` (the built-in one, or a clone of `model`) trained on the sample's decisions of
    the other folds; every row, in the sample or not, is predicted by the model of its own fold, which
    never saw it: out of fold for the sample's rows, out of sample for the others.

    Frozen from the sample (in memory they come from the whole data): the context and stream-feature
    columns' kinds and category levels (the 250 most frequent, the rest "other"; a level the sample
    never shows is "other" in a pooled column, else missing); the stream vocabulary, by action value
    (codes are local to each partition), an action the sample never shows being an unseen stream
    (stream code and stream features missing, as for a stream no logged row shows in memory); the
    positions (one at or past the sample's largest is an unseen category whose baseline is
    the fold's overall mean); the per-position baseline; whether the reward is 0/1 (the model's loss).
    A categorical column's levels are ordered by value, and the sample's rows by (hash of the decision
    id, decision id, position) before fitting: the model depends on the set of sampled rows only, not
    on the partitioning or the order in which partitions delivered them.

    What is exact and what is approximate: given the model, DR's correction term is unbiased exactly as
    with in-memory cross-fitting (no row is predicted by a model that saw it), and the predictions of a
    row do not depend on the partition it is read in (a partition's predictions equal those of the
    whole logs at once, to the bit). Approximate is only that the models learnt from a sample rather
    than from all rows (a noisier q-hat: DM's bias and DR's variance may be a little larger), and the
    frozen encodings (levels and streams seen only outside the sample are pooled or missing). With the
    sample = all decisions the predictions are those of `fit_reward_model` on the sample's rows in this
    order with these folds (`fold=`), to the bit.

    `quality` is the held-out quality (`_quality`) of the sample's out-of-fold predictions, with
    "sampled": true, "sample_rows" and "sample_decisions". `record_training` keeps, per fold, the
    decision ids its model trained on (`training_ids`; for audits and tests: they are as large as the
    sample)."""
    n = sample.n
    reward = np.asarray(reward, dtype=np.float64)
    if len(reward) != n:
        raise ValueError(f"reward has {len(reward)} values for {n} sample rows")
    order, unit, code = _canonical(sample)
    n_units = int(unit[-1]) + 1 if n else 0
    fold = folds_of_keys(decision_keys(sample.decision_ids), n_folds, seed)[code]
    y = reward[order]
    binary = _is_binary(y)
    action_code = sample.action_code[order]
    n_actions = len(sample.actions)
    context = sample.context.iloc[order].reset_index(drop=True) if sample.n_context_columns \
        else pd.DataFrame(index=range(n))
    position = None if sample.position is None else sample.position[order]
    design = _Design(context, action_code, n_actions, position, sample.action_features, by_value=True)
    slot = np.zeros(n, dtype=np.int64) if design.position is None else np.asarray(position, dtype=np.int64)
    n_slots = int(slot.max()) + 1 if n else 1

    fits = _CrossFit(design, fold, n_folds, action_code, y, slot, n_slots, unit, n_units, binary, seed, model)
    report = _Report(progress, fits.fit_units + n * fits.n_fits, n_folds)
    oof = np.empty(n)
    fold_models, training = [], []
    for k in range(n_folds):
        fitted = fits.fit(k, report)
        if isinstance(fitted, _FoldModel):
            train = fits.train_rows(k)
            # a position the sample never shows: the fold's overall mean (what _baseline gives an empty slot)
            fitted.baseline = np.append(fitted.baseline, float(np.mean(y[train])) if len(train) else 0.0)
        fold_models.append(fitted)
        if record_training:
            training.append(sample.decision_ids[np.unique(code[fits.train_rows(k)])])
        test = np.flatnonzero(fold == k)
        label = f"fold {k + 1}/{n_folds}: predicting {len(test):,} sampled rows out of fold"
        report(label)
        for lo in range(0, len(test), _CHUNK):
            chunk = test[lo:lo + _CHUNK]
            with _serial(len(test)):
                oof[chunk] = fitted.predict(design(chunk, action_code[chunk]), slot[chunk])
            report(label, len(chunk) * fitted.cost)
    quality = _quality(y, oof, binary, n_folds, fold=fold, groups=unit)
    quality.update(_model_summary(design, fold_models, model))
    quality.update(sampled=True, sample_rows=int(n), sample_decisions=int(n_units),
                   folds="stable hash of decision_id", held_out="out-of-fold predictions of the sample's rows")
    return SampledRewardModel(
        n_folds=n_folds, seed=seed, binary=binary, fold_models=fold_models, actions=np.asarray(sample.actions),
        x_act=design.x_act[:-1],
        ctx_names=design.ctx_names, ctx_coders=design.ctx_coders, n_positions=design.n_positions,
        position_feature=design.position is not None,
        position_categorical=design.position is not None and design.n_positions <= _MAX_CATEGORIES,
        categorical=design.categorical, names=design.names, quality=quality,
        training_ids=training if record_training else None)


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
