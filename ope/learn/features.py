"""Features of the learners: the standardised context and stream embedding of the linear policy, and
the reward model's tree features with a model fitted once on the training rows."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported by the functions that use it: the policy check runs in every evaluation
    import pandas as pd

from .candidates import Candidates

#: above this many streams the linear policy embeds streams by their a_* features, not their ids
_MAX_ONE_HOT = 64
#: an integer a_* feature with at most this many values (a category) is one-hot encoded
_MAX_LEVELS = 64


class ContextEncoder:
    """The context as a standardised numeric matrix for the linear policy: numeric and bool columns
    centred and scaled by the training rows' moments; strings one-hot on the training levels; an
    intercept column first. Missing values become 0 (the training mean)."""

    def __init__(self, frame: pd.DataFrame):
        import pandas as pd

        self.columns = list(frame.columns)
        self.levels, self.moments = {}, {}
        for name in self.columns:
            col = frame[name]
            if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
                x = col.to_numpy(dtype=np.float64, na_value=np.nan)
                sd = float(np.nanstd(x)) if np.any(np.isfinite(x)) else 0.0
                self.moments[name] = (float(np.nanmean(x)) if np.any(np.isfinite(x)) else 0.0, sd if sd > 0 else 1.0)
            else:
                counts = col.astype("string").value_counts()
                self.levels[name] = list(counts.index[:_MAX_LEVELS])

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        parts = [np.ones((len(frame), 1))]
        for name in self.columns:
            if name in self.moments:
                mean, sd = self.moments[name]
                x = (frame[name].to_numpy(dtype=np.float64, na_value=np.nan) - mean) / sd
                parts.append(np.nan_to_num(x)[:, None])
            else:
                values = frame[name].astype("string").to_numpy(dtype=object, na_value=None)
                parts.append(np.column_stack([values == level for level in self.levels[name]]).astype(np.float64)
                             if self.levels[name] else np.zeros((len(frame), 0)))
        return np.hstack(parts)


def action_embedding(n_actions: int, action_features: pd.DataFrame | None) -> np.ndarray:
    """(n_actions + 1, q): a row per stream code and a last all-zero row for streams the training
    logs never show. Few streams: one-hot ids (each stream its own coefficients). Many: the a_*
    features (few-valued integers one-hot, e.g. a category; numbers as sign(x) log(1 + |x|),
    standardised, since stream features such as popularity are heavy-tailed), and a constant."""
    import pandas as pd

    if n_actions <= _MAX_ONE_HOT or action_features is None or action_features.shape[1] == 0:
        if n_actions > _MAX_ONE_HOT:
            return np.vstack([np.ones((n_actions, 1)), np.zeros((1, 1))])  # nothing to tell streams apart
        return np.vstack([np.eye(n_actions), np.zeros((1, n_actions))])
    parts = [np.ones((n_actions, 1))]
    for name in action_features.columns:
        col = action_features[name]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            continue
        x = col.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = x[np.isfinite(x)]
        if finite.size and np.all(finite == np.round(finite)) and len(np.unique(finite)) <= _MAX_LEVELS:
            parts.append(np.column_stack([x == v for v in np.unique(finite)]).astype(np.float64))
        else:
            z = np.sign(x) * np.log1p(np.abs(x))
            sd = float(np.nanstd(z)) or 1.0
            parts.append(np.nan_to_num((z - np.nanmean(z)) / sd)[:, None])
    emb = np.hstack(parts)
    return np.vstack([emb, np.zeros((1, emb.shape[1]))])


class TreeEncoder:
    """The reward model's features as fit_reward_model builds them (context, stream code, stream
    features; strings as category codes of the training levels), for a model fitted once on all
    training rows and applied to any rows."""

    def __init__(self, frame: pd.DataFrame):
        import pandas as pd

        self.columns = list(frame.columns)
        self.levels = {name: pd.Index(sorted(frame[name].astype("string").dropna().unique()))
                       for name in self.columns
                       if not (pd.api.types.is_bool_dtype(frame[name]) or pd.api.types.is_numeric_dtype(frame[name]))}

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        cols = []
        for name in self.columns:
            if name in self.levels:
                codes = self.levels[name].get_indexer(frame[name].astype("string")).astype(np.float64)
                codes[codes < 0] = np.nan
                cols.append(codes)
            else:
                cols.append(frame[name].to_numpy(dtype=np.float64, na_value=np.nan))
        return np.column_stack(cols) if cols else np.zeros((len(frame), 0))

    @property
    def categorical(self) -> list[bool]:
        return [name in self.levels and len(self.levels[name]) <= 250 for name in self.columns]


class RewardModel:
    """q(x, a) fitted once on all training rows (HistGradientBoosting, classifier for 0/1 rewards),
    for the rows the cross-fitted `fit_reward_model` does not cover: held-out decisions and those of
    `--for` logs. Same features as fit_reward_model."""

    def __init__(self, context: pd.DataFrame, action_code: np.ndarray, n_actions: int, reward: np.ndarray,
                 action_features: pd.DataFrame | None, seed: int, model=None):
        from sklearn.base import clone
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        self.encoder = TreeEncoder(context)
        self.n_actions = n_actions
        act = np.zeros((n_actions, 0))
        act_cat: list[bool] = []
        if action_features is not None and action_features.shape[1]:
            enc = TreeEncoder(action_features)
            act, act_cat = enc.transform(action_features), enc.categorical
        self.action_matrix = np.vstack([act, np.full((1, act.shape[1]), np.nan)])
        self.binary = bool(np.all((reward == 0) | (reward == 1)))
        cat = [*self.encoder.categorical, n_actions <= 250, *act_cat]
        if model is None:
            kind = HistGradientBoostingClassifier if self.binary else HistGradientBoostingRegressor
            self.model = kind(max_iter=200, learning_rate=0.1, max_leaf_nodes=31, early_stopping=len(reward) >= 1000,
                              n_iter_no_change=10, random_state=seed,
                              categorical_features=np.asarray(cat) if any(cat) else None)
        else:
            self.model = clone(model)
        self.model.fit(self._features(self.encoder.transform(context), np.arange(len(reward)), action_code), reward)

    def _features(self, x_ctx: np.ndarray, rows: np.ndarray, actions: np.ndarray) -> np.ndarray:
        seen = actions < self.n_actions
        return np.column_stack([x_ctx[rows], np.where(seen, actions, np.nan),
                                self.action_matrix[np.where(seen, actions, self.n_actions)]])

    def predict(self, context: pd.DataFrame, cand: Candidates, chunk: int = 1 << 20) -> np.ndarray:
        x_ctx = self.encoder.transform(context)
        out = np.empty(len(cand.row))
        for lo in range(0, len(out), chunk):  # bounded memory for millions of candidate pairs
            X = self._features(x_ctx, cand.row[lo:lo + chunk], cand.action[lo:lo + chunk])
            out[lo:lo + chunk] = (self.model.predict_proba(X)[:, list(self.model.classes_).index(1)]
                                  if self.binary and len(self.model.classes_) == 2 else self.model.predict(X))
        return out
