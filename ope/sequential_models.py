"""Cross-fitted nuisance models of the session estimators: fitted-Q evaluation and MIS state ratios.

Both are fitted per policy and cross-fitted BY SESSION: the sessions are split into K folds at random
(seeded; the same split as `reward_model` with the session as the group), the whole backward (FQE) or
forward (state ratios) recursion of fold k is run on the other folds' sessions only, and its models
predict fold k's rows. Every output is therefore out of fold, which keeps the correction terms of the
doubly robust session estimators unbiased given the fit (Chernozhukov et al. 2018; Kallus & Uehara 2020).

Time-indexed, with sparse steps pooled: the recursion runs step by step, and the model of step t is
fitted on step t's rows alone while it has at least `pool_rows` (POOL_ROWS) logged rows; a sparser
step's model is fitted on its rows and those of its neighbours on the side the recursion has already
done (the later steps for FQE, which runs backward; the earlier ones for the state ratios, which run
forward) until they number `pool_rows`, with the step as a feature, and predicts step t only. Every
target is already known when it is used, so the recursion stays exact; the pooling borrows strength
from the neighbouring steps where one step's rows are too few for a good fit (see POOL_ROWS for what
it changed). FQE keeps a tail for the sparsest steps (fewer than `min_step_rows` rows; the first such
step and every step after it): one block with the step as a feature, solved by fixed-point iteration,
at most `MAX_TAIL_ITERATIONS` sweeps (one sweep carries the recursion one step further, so as many
sweeps as tail steps solve it exactly for a model that fits the targets exactly).

Features are those of `reward_model`: the state columns through `encode_context` (categories as codes,
native categorical splits in HistGradientBoosting), the action code as a categorical feature, and the
action's features when given; an action code >= n_actions (a stream no logged row shows) is missing.
With at most PER_ACTION_MAX_ACTIONS action codes, FQE fits one model per action on the state columns
instead (less smoothing of Q across actions; see that constant).
"""
from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from livegate.datasets.errors import InputError, Problem

from .reward_model import _MAX_CATEGORIES, _can_stop_early, _predict_filled, _quality, _user_model, encode_context

#: a step with fewer logged rows than this (all folds counted; every later step too) goes into the pooled
#: tail block
MIN_STEP_ROWS = 500
#: at most this many fixed-point sweeps over the tail block
MAX_TAIL_ITERATIONS = 30
#: the tail's sweeps stop early once a sweep changes the fitted values by less than this (relative RMS)
TAIL_TOLERANCE = 1e-3
#: HistGradientBoosting settings of both models (reward_model's, made faster): a larger learning rate,
#: fewer trees and a shorter patience, with early stopping on a 10% validation split wherever
#: `_can_stop_early` allows it. The one-step targets are noisy (a reward plus a fitted value) and the
#: trees stop after 8-25 rounds; prediction at every (row, action) pair of a policy costs in proportion
#: to the number of trees. On the benchmark MDP (1e5 sessions) this halved the time of reward_model's
#: settings (learning rate 0.1, patience 10) with the same held-out R^2 and the same errors.
HGB_SETTINGS = dict(max_iter=100, learning_rate=0.5, n_iter_no_change=3)
#: FQE's models wait 5 rounds without improvement instead of 3 before they stop. Early stopping on noisy
#: targets shrinks each step's Q towards the logged actions' mean, which is below the value of a candidate
#: that picks better actions, and the shortfall compounds backward over the steps. On the session
#: simulator (40k sessions, 5 seeds x 3 candidates, with POOL_ROWS) fqe's mean absolute error went from 3.0%
#: to 2.1%, and drl's intervals covered 15 of 15 truths instead of 14 (patience 10: 1.6%, 15 of 15, at 1.3x
#: the time of FQE). The behaviour policy's own FQE (its logged actions, for the logging policy's fqe) keeps
#: HGB_SETTINGS: the logged actions are the ones the regression sees most, so there is nothing to shrink away.
FQE_SETTINGS = dict(HGB_SETTINGS, n_iter_no_change=5)
#: A step with fewer logged rows than this (all folds counted) is fitted together with its neighbouring
#: steps (the later ones for FQE, the earlier ones for the state ratios) until they number this many, the
#: step being a feature. Measured on the session simulator (40k sessions, seeds 0-4, 3 candidates; steps
#: 0-9 have more rows, the later ones fewer): without pooling, FQE's V at steps 8-16 was 15-35% below the
#: exact value (each sparse step's model shrank towards the logged mean) and the state ratios of the
#: near-greedy Q-learning policy had outliers up to 70x the largest exact ratio, so that drl's interval
#: half-widths reached 100% of the value; pooled, the ratios stayed in range and drl's mean absolute error
#: was 0.9% / 1.2% / 2.1% (longterm / myopic / qlearning) with 15 of 15 intervals covering. 10,000-80,000
#: rows gave the same accuracy; the cost grows with this number (each sparse step refits that many rows).
POOL_ROWS = 20_000
#: FQE with at most this many action codes fits one model per action (on the state columns, and the step in
#: the tail) instead of one model of (state, action, action features). The one pooled regularised model
#: smooths Q across actions, which a policy concentrated on the best actions pays for at every step: on the
#: session simulator (40k sessions, 10 streams) the pooled model's FQE was 15% low for the long-horizon
#: policies (the error compounding backward over ~11 steps from 4% in the one-step reward) and 10-22% high
#: for the myopic and uniform ones; per action it was within 3-7% for all. An action with fewer than
#: PER_ACTION_MIN_ROWS training rows in a block uses a pooled model of the block instead.
PER_ACTION_MAX_ACTIONS = 16
PER_ACTION_MIN_ROWS = 100
#: fewer training rows than this in a block: the block's model is the mean of its targets
_MIN_FIT_ROWS = 30
#: share of a fit's rows held out for early stopping (`_can_stop_early` decides whether it can stop early)
_VALIDATION_FRACTION = 0.1
#: a fit or prediction on fewer rows than this runs on one OpenMP thread (the caller's limit otherwise):
#: HistGradientBoosting enters a parallel region per node, and on small blocks (the late steps, the tail's
#: sweeps) two threads barely help when the cores are free and stall at every barrier when they are not
#: (measured on a loaded 2-core machine: 108 s instead of 6 s for the same fits)
SERIAL_ROWS = 20_000
#: the same for a fit: a fit on fewer rows than this runs on one OpenMP thread. Fits gain far less from a
#: second thread than predictions (a parallel region per node of every tree, over a dozen columns): the
#: state-ratio fits of the 1e5-session benchmark (3 policies, 36k-60k rows per early step) took 19.4 s wall
#: and 17.1 s CPU with two threads on a 2-core machine with one other busy process, and 8.1 s on one.
SERIAL_FIT_ROWS = 250_000
#: prediction in chunks of this many rows: the feature matrix of a chunk stays in cache while every tree
#: walks it (about twice as fast as one call on a million pairs), and memory stays bounded
_CHUNK = 1 << 16

_SOURCE = "sessions"

Progress = Callable[[str], None]
Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class FQEFit:
    q_logged: np.ndarray                          # (n,) out-of-fold Q^(s_t, a_t) at the logged action
    v: np.ndarray                                 # (n,) out-of-fold V^(s_t) = sum_a pi_e(a|s_t) Q^(s_t, a)
    quality: dict = field(default_factory=dict)   # held-out fit of the one-step Bellman target


def session_folds(session: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of every row: whole sessions are dealt to folds at random, exactly as `fit_reward_model`
    deals its groups (so passing groups=session there gives the same split)."""
    fold_of_session = np.random.default_rng(seed).permutation(int(session.max()) + 1) % n_folds
    return fold_of_session[session]


# =================================================================================================
# fitted-Q evaluation

def fit_fqe(features: pd.DataFrame, action_code: np.ndarray, n_actions: int, reward: np.ndarray,
            session: np.ndarray, step: np.ndarray, next_row: np.ndarray,
            policies: Mapping[str, Pairs], *, gamma: float = 1.0, n_folds: int = 3, seed: int = 0,
            action_features: pd.DataFrame | None = None, model=None, progress: Progress | None = None,
            min_step_rows: int = MIN_STEP_ROWS, next_action: str = "sample",
            pool_rows: int = POOL_ROWS) -> dict[str, FQEFit]:
    """Fitted-Q evaluation (Le, Voloshin & Yue 2019, "Batch policy learning under constraints", ICML,
    algorithm FQE) in its finite-horizon, time-indexed form, cross-fitted by session.

    Backward over the steps t = T-1, ..., 0, with Q_T = 0:

        Q_t = argmin_f  sum over rows i at step t of ( r_i + gamma * V_{t+1}(s'_i) - f(s_i, a_i) )^2,
        V_{t+1}(s') = sum_a pi_e(a | s') Q_{t+1}(s', a),

    where s'_i is the state of the session's next row and V_{t+1}(s'_i) = 0 when the session ends
    at row i (next_row == -1). The policy value is then the mean of V_0 over the sessions' initial
    rows. A step with fewer than `pool_rows` rows is regressed together with the following steps'
    rows (their targets are already known) until they number `pool_rows`, with the step as a feature,
    the model predicting step t only (POOL_ROWS; 0 turns the pooling off). The tail block (steps
    with fewer than `min_step_rows` rows, pooled with the step as a feature) iterates
    Q^(k+1)_t = fit of r_t + gamma V^(k)_{t+1}(s'), from Q^(0) = 0, for at most
    min(tail steps, MAX_TAIL_ITERATIONS) sweeps, stopping earlier once a sweep changes the fitted
    values by less than TAIL_TOLERANCE (relative RMS).

    The regression targets' V_{t+1}(s') (training rows only) use, by default (next_action="sample"),
    Q_{t+1}(s', a') at one action a' ~ pi_e(.|s') drawn per row (seeded): its conditional mean is
    the sum above, so the regression estimates the same Q_t, at the cost of a little noise in the
    targets, and it needs one prediction per training row instead of one per (row, action) pair,
    which at 10 actions and 3 folds cuts the predictions of a fit by 2.5 times. next_action=
    "expectation" uses the exact sum. The returned V (every row, out of fold) is always the exact sum.

    `policies` maps a name to (row, action_code, prob): pi_e(a|s_row) > 0 for every row (long
    format; each row's probabilities sum to 1). For the logging policy pass (arange(n), action_code,
    ones): V is then Q at the logged action, and FQE becomes SARSA-style fitted evaluation of the
    behaviour policy. `model` is any scikit-learn regressor, cloned per fit (None: HistGradientBoosting
    with FQE_SETTINGS); it sees the state columns (categories as integer codes), the action code, the
    action features (NaN for a stream no logged row shows) and, where steps are pooled, the step.

    Returns, per policy, out-of-fold Q^(s_t, a_t) and V^(s_t) at every row (for each fold the whole
    backward recursion runs on the other folds' sessions), and `quality`: the held-out R^2 of
    Q^(s, a) against the one-step Bellman target r + gamma V^(s') (both out of fold), next to the
    held-out R^2 of a constant (each fold's training mean of that target) as a baseline.
    """
    n = _check_common(features, reward, session, step, next_row, gamma, n_folds, min_step_rows, pool_rows)
    if next_action not in ("sample", "expectation"):
        raise InputError(Problem(_SOURCE, f"next_action = {next_action!r}: expected 'sample' or 'expectation'"))
    action_code = _check_actions(action_code, n, n_actions, action_features)
    pairs_by_policy = {name: _check_pairs(name, pairs, n) for name, pairs in policies.items()}
    report = progress or (lambda _msg: None)

    step = np.asarray(step, dtype=np.int64)
    design = _Design(features, step, n_actions, action_features)
    blocks = _Blocks(step, min_step_rows)
    fold = session_folds(session, n_folds, seed)
    reward = np.asarray(reward, dtype=np.float64)
    next_row = np.asarray(next_row, dtype=np.int64)

    fits: dict[str, FQEFit] = {}
    for name, pairs in pairs_by_policy.items():
        grouped = blocks.group_pairs(pairs)
        sampled = None
        if next_action == "sample" and len(pairs[0]) > n:      # one action per row: the sample is that action
            sampled = _sample_actions(pairs, n, np.random.default_rng([seed, zlib.crc32(name.encode())]))
        q_logged, v = np.empty(n), np.empty(n)
        sweeps: list[int] = []
        # the behaviour policy itself (its logged action with probability 1): no better actions to shrink away
        behaviour = len(pairs[0]) == n and np.array_equal(pairs[0], np.arange(n)) and \
            np.array_equal(pairs[1], action_code) and np.all(pairs[2] == 1.0)
        settings = HGB_SETTINGS if behaviour else FQE_SETTINGS
        for k in range(n_folds):
            report(f"fitted-Q evaluation of '{name}': fold {k + 1} of {n_folds}")
            q_k, v_k, n_sweeps = _fqe_fold(design, blocks, grouped, sampled, fold != k, action_code, reward,
                                           next_row, float(gamma), _Models(model, design.q_categorical, seed + k,
                                                  per_action=design.per_action_columns, settings=settings),
                                           pool_rows)
            test = fold == k
            q_logged[test], v[test] = q_k[test], v_k[test]
            sweeps.append(n_sweeps)
        fits[name] = FQEFit(q_logged=q_logged, v=v,
                            quality=_fqe_quality(reward, next_row, float(gamma), q_logged, v, fold, n_folds,
                                                 blocks, sweeps, next_action, pool_rows))
    return fits


def _fqe_fold(design: _Design, blocks: _Blocks, grouped: list[Pairs], sampled: np.ndarray | None, train: np.ndarray,
              action_code: np.ndarray, reward: np.ndarray, next_row: np.ndarray, gamma: float, models: _Models,
              pool_rows: int):
    """One fold's backward recursion. Returns (q, v, tail sweeps): Q at the logged action and V (exact, over the
    policy's pairs) at every test row; v at the training rows holds the regression targets' V(s') (at the
    sampled next action, or exact when `sampled` is None)."""
    n = len(reward)
    q, v = np.full(n, np.nan), np.zeros(n)
    has_next = next_row >= 0
    is_next = blocks.step > 0                     # the row is some row's next state
    no_rows = np.zeros(0, dtype=np.int64)

    def bellman(rows: np.ndarray) -> np.ndarray:
        y = reward[rows].copy()
        cont = has_next[rows]
        y[cont] += gamma * v[next_row[rows[cont]]]
        return y

    def predict_block(fitted, rows: np.ndarray, pairs: Pairs, with_step: bool, output: bool, targets: bool) -> None:
        """One batched prediction for a block: with `output`, Q at the logged action of its test rows and V
        at them over the policy's pairs; with `targets`, V at its training rows that are next states (the
        regression targets of the step before)."""
        p_row, p_action, p_prob = pairs
        keep = ~train[p_row] if output else np.zeros(len(p_row), dtype=bool)
        target_rows = rows[train[rows] & is_next[rows]] if targets else no_rows
        if sampled is None:
            if targets:
                keep |= train[p_row] & is_next[p_row]
            v_row, v_action, v_prob = p_row[keep], p_action[keep], p_prob[keep]
        else:
            v_row = np.concatenate([p_row[keep], target_rows])
            v_action = np.concatenate([p_action[keep], sampled[target_rows]])
            v_prob = np.concatenate([p_prob[keep], np.ones(len(target_rows))])
        test = rows[~train[rows]] if output else no_rows
        rows_x, actions_x = np.concatenate([test, v_row]), np.concatenate([action_code[test], v_action])
        pred = _predict(fitted, lambda part: design.q_features(rows_x[part], actions_x[part], with_step), len(rows_x))
        q[test] = pred[:len(test)]
        v[v_row] = 0.0
        v[:] += np.bincount(v_row, weights=v_prob * pred[len(test):], minlength=n)

    # the tail first (the last steps), solved by fixed-point sweeps from Q = 0
    sweeps = 0
    tail = blocks.tail
    if len(tail):
        tail_train = tail[train[tail]]
        x_train = design.q_features(tail_train, action_code[tail_train], with_step=True)
        previous = v[tail_train]
        for sweeps in range(1, min(blocks.tail_steps, MAX_TAIL_ITERATIONS) + 1):
            fitted = models.fit(x_train, bellman(tail_train), with_step=True)
            predict_block(fitted, tail, grouped[-1], with_step=True, output=False, targets=True)
            current = v[tail_train]
            if _converged(previous, current):
                break
            previous = current
        predict_block(fitted, tail, grouped[-1], with_step=True, output=True, targets=False)

    # then one model per step, backward; a sparse step's model also learns from the later steps' rows, whose
    # targets (the sampled V of their next rows) are already in v
    for t in range(blocks.tail_start - 1, -1, -1):
        rows = blocks.per_step[t]
        pooled = blocks.later_rows(t, pool_rows)
        fit_rows = rows if pooled is None else pooled
        fit_rows = fit_rows[train[fit_rows]]
        with_step = pooled is not None
        fitted = models.fit(design.q_features(fit_rows, action_code[fit_rows], with_step), bellman(fit_rows),
                            with_step=with_step)
        predict_block(fitted, rows, grouped[t], with_step=with_step, output=True, targets=True)
    return q, v, sweeps


def _fqe_quality(reward, next_row, gamma, q_logged, v, fold, n_folds, blocks, sweeps, next_action, pool_rows) -> dict:
    has_next = next_row >= 0
    target = reward.copy()
    target[has_next] += gamma * v[next_row[has_next]]
    quality = _quality(target, q_logged, False, n_folds)
    constant = np.empty_like(target)
    for k in range(n_folds):
        constant[fold == k] = target[fold != k].mean() if np.any(fold != k) else 0.0
    sst = float(np.sum((target - target.mean()) ** 2))
    quality.update(
        target="one-step Bellman target r + gamma V(s')",
        r2_constant=1.0 - float(np.sum((target - constant) ** 2)) / sst if sst > 0 else float("nan"),
        next_action=next_action, steps_fitted_separately=blocks.tail_start, tail_start_step=blocks.tail_start,
        tail_steps=blocks.tail_steps, tail_rows=int(len(blocks.tail)), tail_sweeps=sweeps,
        pool_rows=int(pool_rows), pooled_from_step=blocks.first_pooled(pool_rows))
    return quality


# =================================================================================================
# marginalised importance sampling: state density ratios

def fit_state_ratios(features: pd.DataFrame, session: np.ndarray, step: np.ndarray, next_row: np.ndarray,
                     ratios: Mapping[str, np.ndarray], *, n_folds: int = 3, seed: int = 0, model=None,
                     progress: Progress | None = None, pool_rows: int = POOL_ROWS) -> dict[str, np.ndarray]:
    """State density ratios w_t(s) = d^pi_t(s) / d^mu_t(s) at every row, for marginalised importance
    sampling (Xie, Ma & Wang 2019, "Towards optimal off-policy evaluation for reinforcement learning
    with marginalized importance sampling", NeurIPS), by regression and cross-fitted by session.

    d^pi_t is the (sub-probability) distribution of the state at step t of a session that is still
    running under pi, d^mu_t the same under the logging policy. The paper's recursion
    d^pi_{t+1}(s') = sum_{s,a} d^pi_t(s) pi(a|s) P(s'|s,a), divided by d^mu_{t+1}(s'), reads

        w_0 = 1,    w_{t+1}(s') = E_mu[ w_t(s_t) rho_t | s_{t+1} = s' ],   rho_t = pi(a_t|s_t) / mu(a_t|s_t),

    estimated by regressing the target w^_t(s_t) rho_t of the rows at step t that have a next row on
    the state features of that next row. A session that ends at step t contributes no transition, so
    termination that depends on the policy is accounted for (w_t is then not mean 1). A step with
    fewer than `pool_rows` rows (POOL_ROWS; 0: never) is regressed together with the earlier steps'
    rows (their targets are already known, the recursion running forward) until they number
    `pool_rows`, with the step as a feature, the model predicting step t only. MIS then estimates the
    value as mean over sessions of sum_t gamma^t w^_t(s_t) rho_t r_t.

    The fitted ratios are NOT clipped at 0: a least-squares fit keeps the mean of its targets, which is
    what the doubly robust estimators need (their bias is the fitted Q's error weighted by the error of
    this regression; a Q function that is off by a constant at a step costs nothing while the ratios
    keep the targets' mean there). Clipping the negative predictions raises that mean, and the error
    compounds step after step: on the session simulator, clipping made drl 1-5% high for the
    near-greedy candidates. A ratio slightly below 0 is an estimate of one close to 0.

    `ratios` maps a policy name to rho of the logged action at every row; a policy whose ratio is 1 at
    every row (the logging policy) gets ones without fitting. `model`: any scikit-learn regressor,
    cloned per fit (None: HistGradientBoosting with HGB_SETTINGS); it sees the state columns (and the
    step, where steps are pooled).
    """
    n = _check_common(features, None, session, step, next_row, 1.0, n_folds, 1, pool_rows)
    checked = {name: _check_ratio(name, ratio, n) for name, ratio in ratios.items()}
    report = progress or (lambda _msg: None)

    step = np.asarray(step, dtype=np.int64)
    design = _Design(features, step, 0, None)
    blocks = _Blocks(step, 1)            # no tail: every step its own block, sparse ones pooled with earlier ones
    fold = session_folds(session, n_folds, seed)

    out: dict[str, np.ndarray] = {}
    for name, ratio in checked.items():
        if np.all(ratio == 1.0):
            out[name] = np.ones(n)
            continue
        w = np.empty(n)
        for k in range(n_folds):
            report(f"state density ratios of '{name}': fold {k + 1} of {n_folds}")
            w_k = _ratio_fold(design, blocks, fold != k, ratio, _Models(model, design.state_categorical, seed + k),
                              pool_rows)
            w[fold == k] = w_k[fold == k]
        out[name] = w
    return out


def _ratio_fold(design: _Design, blocks: _Blocks, train: np.ndarray, ratio: np.ndarray, models: _Models,
                pool_rows: int) -> np.ndarray:
    """One fold's forward recursion; w at every row (the test rows' values are the out-of-fold output).

    Why regressing on the next state alone is valid: by the per-decision importance sampling identity,
    d^pi_{t+1}(s') / d^mu_{t+1}(s') = E_mu[rho_0 ... rho_t | s_{t+1} = s']. Under the logging policy the
    process is Markov: given s_t, the action a_t ~ mu(.|s_t) and s_{t+1} ~ P(.|s_t, a_t) are independent
    of the past (s_0, a_0, ..., s_{t-1}, a_{t-1}), hence of the past ratios rho_0 ... rho_{t-1}. By the tower
    rule the product of past ratios can be replaced by its conditional mean given s_t, which is w_t(s_t):
    E_mu[rho_0 ... rho_t | s_{t+1}] = E_mu[ E_mu[rho_0 ... rho_{t-1} | s_t] rho_t | s_{t+1} ] =
    E_mu[w_t(s_t) rho_t | s_{t+1}]. So each step needs only the previous step's fitted w^_t, not the
    product of weights (no curse of horizon), at the cost of requiring the state columns to be Markov.
    The rows of a session are consecutive: the previous row of a row at step t >= 1 is the row before it.
    """
    w = np.ones(len(ratio))                      # w_0 = 1

    def target(rows: np.ndarray) -> np.ndarray:  # w_{t-1}(s_{t-1}) rho_{t-1} of the previous rows
        return w[rows - 1] * ratio[rows - 1]

    for t in range(1, blocks.tail_start):
        rows = blocks.per_step[t]
        pooled = blocks.earlier_rows(t, pool_rows)
        fit_rows = rows if pooled is None else pooled
        fit_rows = fit_rows[train[fit_rows]]
        with_step = pooled is not None
        fitted = models.fit(design.state_features(fit_rows, with_step), target(fit_rows), with_step=with_step)
        w[rows] = _predict(fitted, lambda part: design.state_features(rows[part], with_step), len(rows))
    return w


# =================================================================================================
# shared machinery

class _Design:
    """The numeric features: state columns, action code, action features and (tail only) the step."""

    def __init__(self, features: pd.DataFrame, step: np.ndarray, n_actions: int,
                 action_features: pd.DataFrame | None):
        self.x_state, state_categorical = encode_context(features)
        self.step = step.astype(np.float64)
        x_act = np.zeros((n_actions, 0))
        act_categorical: list[bool] = []
        if action_features is not None and action_features.shape[1]:
            x_act, act_categorical = encode_context(action_features.iloc[:n_actions])
        # codes >= n_actions (streams no logged row shows): missing values, as in reward_model
        self.x_act = np.vstack([x_act, np.full((1, x_act.shape[1]), np.nan)])
        self.n_actions = n_actions
        self.state_categorical = list(state_categorical)
        # one model per action (see PER_ACTION_MAX_ACTIONS): the action code's column, and the columns such a
        # model drops (the action code and the action's features, constant within one action)
        n_state = len(state_categorical)
        self.per_action_columns = (n_state, np.arange(n_state, n_state + 1 + x_act.shape[1])) \
            if 1 < n_actions <= PER_ACTION_MAX_ACTIONS else None
        self.q_categorical = [*state_categorical, n_actions <= _MAX_CATEGORIES, *act_categorical]

    def state_features(self, rows: np.ndarray, with_step: bool = False) -> np.ndarray:
        x = self.x_state[rows]
        return np.column_stack([x, self.step[rows]]) if with_step else x

    def q_features(self, rows: np.ndarray, actions: np.ndarray, with_step: bool = False) -> np.ndarray:
        seen = actions < self.n_actions
        columns = [self.x_state[rows], np.where(seen, actions, np.nan),
                   self.x_act[np.where(seen, actions, self.n_actions)]]
        if with_step:
            columns.append(self.step[rows])
        return np.column_stack(columns)


class _Blocks:
    """Rows grouped by step: one block per step below `tail_start`, one pooled tail block after."""

    def __init__(self, step: np.ndarray, min_step_rows: int):
        self.step = step
        counts = np.bincount(step)
        sparse = np.flatnonzero(counts < min_step_rows)
        self.tail_start = int(sparse[0]) if len(sparse) else len(counts)
        self.tail_steps = len(counts) - self.tail_start
        order = np.argsort(step, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(counts)])
        self.per_step = [order[bounds[t]:bounds[t + 1]] for t in range(self.tail_start)]
        self.tail = np.sort(order[bounds[self.tail_start]:])

    def later_rows(self, t: int, pool_rows: int) -> np.ndarray | None:
        """The rows of steps t, t+1, ... (the tail's too, when reached) until they number `pool_rows`; None
        when step t has that many rows itself (its own block is fitted)."""
        if len(self.per_step[t]) >= pool_rows:
            return None
        parts, total, k = [], 0, t
        while total < pool_rows and k < self.tail_start:
            parts.append(self.per_step[k])
            total += len(self.per_step[k])
            k += 1
        if total < pool_rows and k == self.tail_start:
            parts.append(self.tail)
        return np.concatenate(parts)

    def earlier_rows(self, t: int, pool_rows: int) -> np.ndarray | None:
        """The rows of steps t, t-1, ..., 1 until they number `pool_rows` (step 0 has no previous row, hence
        no target); None when step t has that many rows itself."""
        if len(self.per_step[t]) >= pool_rows:
            return None
        parts, total, k = [], 0, t
        while total < pool_rows and k >= 1:
            parts.append(self.per_step[k])
            total += len(self.per_step[k])
            k -= 1
        return np.concatenate(parts[::-1])

    def first_pooled(self, pool_rows: int) -> int | None:
        """The first step (before the tail) fitted with its neighbours, None if none is."""
        sparse = [t for t in range(self.tail_start) if len(self.per_step[t]) < pool_rows]
        return sparse[0] if sparse else None

    def group_pairs(self, pairs: Pairs) -> list[Pairs]:
        """A policy's (row, action, prob) pairs split like the rows: per step, then the tail (last)."""
        row, action, prob = pairs
        pair_step = np.minimum(self.step[row], self.tail_start)
        # a radix sort on the narrowest integer type (the blocks are few)
        order = np.argsort(pair_step.astype(np.min_scalar_type(self.tail_start)), kind="stable")
        bounds = np.searchsorted(pair_step[order], np.arange(self.tail_start + 2))
        return [tuple(a[order[bounds[t]:bounds[t + 1]]] for a in (row, action, prob))
                for t in range(self.tail_start + 1)]


class _Models:
    """A fresh regressor per fit: HistGradientBoosting with `settings`, or a clone of the user's model."""

    def __init__(self, model, categorical: list[bool], seed: int, per_action: tuple[int, np.ndarray] | None = None,
                 settings: dict = HGB_SETTINGS):
        self.model, self.categorical, self.seed, self.settings = model, categorical, seed, settings
        self.per_action = per_action if model is None else None
        if model is not None:
            from sklearn.base import is_classifier
            if is_classifier(model):
                raise InputError(Problem("model", f"{type(model).__name__} is a classifier, but fitted-Q evaluation "
                                         "and state density ratios regress continuous targets",
                                         fix="pass a scikit-learn regressor"))
            _user_model(model, False)        # fails early, with the reward model's message, if it cannot fit

    def fit(self, x: np.ndarray, y: np.ndarray, with_step: bool = False):
        if self.per_action is None or len(y) < _MIN_FIT_ROWS:
            return self._fit(x, y, with_step)
        column, dropped = self.per_action
        action = x[:, column]
        codes, counts = np.unique(action[~np.isnan(action)], return_counts=True)
        kept = np.setdiff1d(np.arange(x.shape[1]), dropped)
        categorical = [self.categorical[j] for j in kept if j < len(self.categorical)]
        models, weights = {}, {}
        for code, count in zip(codes, counts):
            if count >= PER_ACTION_MIN_ROWS:
                mine = action == code
                models[code] = self._fit(x[mine][:, kept], y[mine], with_step, categorical)
                weights[code] = count
        # the actions with too few rows here share one model of every row
        pooled = self._fit(x, y, with_step) if len(models) < len(codes) or not models else None
        return _PerAction(models, weights, pooled, column, kept)

    def _fit(self, x: np.ndarray, y: np.ndarray, with_step: bool, categorical: list[bool] | None = None):
        if len(y) < _MIN_FIT_ROWS or x.shape[1] == 0:
            return _Constant(float(y.mean()) if len(y) else 0.0)
        # a column without any value in this block's training rows (a context column missing at late
        # steps) cannot be binned: a constant 0 in training and prediction alike, as in reward_model
        values = np.count_nonzero(~np.isnan(x), axis=0)
        empty = values == 0
        if empty.any():
            x = x.copy()
            x[:, empty] = 0.0
        if self.model is None:
            categorical = self.categorical if categorical is None else categorical
            categorical = [*categorical, False] if with_step else categorical
            fitted = _new_model(categorical, self.seed, _can_stop_early(y, False, values), self.settings)
            with _threads_for(len(y), SERIAL_FIT_ROWS):
                fitted.fit(x, y)
            return _Filled(fitted, empty) if empty.any() else fitted
        fitted = _user_model(self.model, False)
        try:
            with _threads_for(len(y), SERIAL_FIT_ROWS):
                fitted.fit(x, y)
            return _Filled(fitted, empty) if empty.any() else fitted
        except ValueError as exc:
            raise InputError(Problem("model", f"{type(self.model).__name__} could not be fitted: {exc}",
                                     fix="features are the state columns, the action code, stream features and "
                                         "the step, with NaN for missing values: use a model that accepts NaN "
                                         "(e.g. in a Pipeline with SimpleImputer)")) from None


def _new_model(categorical: list[bool], seed: int, early_stopping: bool, settings: dict):
    """HistGradientBoosting with every setting spelt out here (the reward model's may change on their own)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    params = dict(max_leaf_nodes=31, min_samples_leaf=20, validation_fraction=_VALIDATION_FRACTION,
                  early_stopping=early_stopping, random_state=seed,
                  categorical_features=np.asarray(categorical, dtype=bool) if any(categorical) else None)
    params.update(settings)
    return HistGradientBoostingRegressor(**params)


class _PerAction:
    """One model per action code (fitted on its columns `kept`, without the action's constant ones); an action
    fitted without its own model goes to `pooled`, and one no training row shows (a code only a policy names,
    or a missing code) gets the row-weighted mean of the per-action models (or `pooled`, when there is one)."""

    def __init__(self, models: dict, weights: dict, pooled, column: int, kept: np.ndarray):
        self.models, self.weights, self.pooled, self.column, self.kept = models, weights, pooled, column, kept

    def predict(self, x: np.ndarray) -> np.ndarray:
        action = x[:, self.column]
        out = np.full(len(x), np.nan)
        state = x[:, self.kept]
        for code, model in self.models.items():
            mine = np.flatnonzero(action == code)
            if len(mine):
                out[mine] = model.predict(state[mine])
        rest = np.flatnonzero(np.isnan(out))
        if len(rest):
            if self.pooled is not None:
                out[rest] = self.pooled.predict(x[rest])
            else:
                total = sum(self.weights.values())
                out[rest] = sum(w * self.models[c].predict(state[rest]) for c, w in self.weights.items()) / total
        return out


class _Filled:
    """A model fitted with its `empty` columns set to 0: predicts with them set to 0 too."""

    def __init__(self, fitted, empty: np.ndarray):
        self.fitted, self.empty = fitted, empty

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _predict_filled(self.fitted.predict, self.empty, x)


class _Constant:
    def __init__(self, value: float):
        self.value = value

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.value)


def _predict(fitted, build: Callable[[slice], np.ndarray], n: int) -> np.ndarray:
    """fitted.predict on n feature rows that build(slice) makes, built and predicted _CHUNK rows at a time."""
    out = np.empty(n)
    with _threads_for(n):
        for start in range(0, n, _CHUNK):
            part = slice(start, start + _CHUNK)
            out[part] = fitted.predict(build(part))
    return out


def _threads_for(n_rows: int, serial_below: int | None = None):
    """One OpenMP thread for a small fit or prediction (see SERIAL_ROWS, SERIAL_FIT_ROWS); the caller's setting
    otherwise. Results are the same either way: the thread count changes only the speed."""
    serial = n_rows < (SERIAL_ROWS if serial_below is None else serial_below)
    return _thread_controller().limit(limits=1, user_api="openmp") if serial else nullcontext()


@functools.cache
def _thread_controller():
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


def _sample_actions(pairs: Pairs, n: int, rng: np.random.Generator) -> np.ndarray:
    """One action per row drawn from the policy's distribution there (vectorised inverse-CDF sampling)."""
    row, action, prob = pairs
    if np.any(row[1:] < row[:-1]):
        order = np.argsort(row, kind="stable")
        row, action, prob = row[order], action[order], prob[order]
    cumulative = np.cumsum(prob)
    first = np.searchsorted(row, np.arange(n))
    last = np.searchsorted(row, np.arange(n), side="right") - 1
    before = np.where(first > 0, cumulative[np.maximum(first - 1, 0)], 0.0)
    draw = before + rng.random(n) * (cumulative[last] - before)
    return action[np.clip(np.searchsorted(cumulative, draw, side="right"), first, last)]


def _converged(previous: np.ndarray, current: np.ndarray) -> bool:
    if not len(current):
        return True
    scale = float(np.sqrt(np.mean(current ** 2)))
    return float(np.sqrt(np.mean((current - previous) ** 2))) <= TAIL_TOLERANCE * max(scale, 1e-12)


# =================================================================================================
# input checks: InputError with every problem found

def _check_common(features, reward, session, step, next_row, gamma, n_folds, min_step_rows, pool_rows=0) -> int:
    problems: list[Problem] = []
    if not isinstance(features, pd.DataFrame):
        raise InputError(Problem(_SOURCE, f"features must be a pandas DataFrame, got {type(features).__name__}"))
    n = len(features)
    arrays = {"session": session, "step": step, "next_row": next_row}
    if reward is not None:
        arrays["reward"] = reward
    for label, values in arrays.items():
        if np.ndim(values) != 1 or len(values) != n:
            problems.append(Problem(_SOURCE, f"{label} has shape {np.shape(values)}, expected ({n},): one value "
                                    "per row of the features"))
    if not (isinstance(n_folds, int | np.integer) and n_folds >= 2):
        problems.append(Problem(_SOURCE, f"n_folds = {n_folds!r}: cross-fitting needs at least 2 folds"))
    if not (isinstance(min_step_rows, int | np.integer) and min_step_rows >= 1):
        problems.append(Problem(_SOURCE, f"min_step_rows = {min_step_rows!r} must be a positive integer"))
    if not (isinstance(pool_rows, int | np.integer) and pool_rows >= 0):
        problems.append(Problem(_SOURCE, f"pool_rows = {pool_rows!r} must be a non-negative integer (0: no pooling)"))
    if not (isinstance(gamma, int | float | np.floating) and 0.0 < gamma <= 1.0):
        problems.append(Problem(_SOURCE, f"gamma = {gamma!r} is not in (0, 1]", fix="use e.g. 1.0 (total per session)"))
    if problems:
        raise InputError(problems)
    if n == 0:
        raise InputError(Problem(_SOURCE, "no rows", fix="pass at least one session"))
    if reward is not None and not np.all(np.isfinite(np.asarray(reward, dtype=np.float64))):
        problems.append(Problem(_SOURCE, "have a missing or infinite reward", column="reward",
                                rows=int(np.sum(~np.isfinite(np.asarray(reward, dtype=np.float64))))))
    session, step, next_row = (np.asarray(a) for a in (session, step, next_row))
    for label, values in (("session", session), ("step", step), ("next_row", next_row)):
        if not np.issubdtype(values.dtype, np.integer):
            problems.append(Problem(_SOURCE, f"{label} must be integers, got dtype {values.dtype}"))
    if problems:
        raise InputError(problems)

    if session[0] != 0 or np.any(np.diff(session) < 0) or np.any(np.diff(session) > 1):
        raise InputError(Problem(_SOURCE, "session must number the sessions 0, 1, ..., S-1 with the rows sorted by "
                                 "(session, step)", column="session"))
    n_sessions = int(session[-1]) + 1
    if n_sessions < n_folds:
        raise InputError(Problem(_SOURCE, f"{n_sessions:,} session{'s' if n_sessions != 1 else ''} for {n_folds} "
                                 "cross-fitting folds: every fold needs at least one session",
                                 fix="log more sessions or use fewer folds"))
    first = np.concatenate([[True], session[1:] != session[:-1]])
    expected = np.where(first, 0, np.concatenate([[0], step[:-1] + 1]))
    wrong = np.flatnonzero(step != expected)
    if len(wrong):
        i = int(wrong[0])
        example = (f"session {int(session[i])} starts at step {int(step[i])}" if first[i] else
                   f"session {int(session[i])} has step {int(step[i])} after step {int(step[i - 1])} at row {i}")
        problems.append(Problem(_SOURCE, f"have a step out of sequence (first: {example}): a session's steps must be "
                                "0, 1, 2, ... in row order", column="step", rows=len(wrong)))
    last = np.concatenate([session[1:] != session[:-1], [True]])
    expected_next = np.where(last, -1, np.arange(1, n + 1))
    bad = int(np.sum(next_row != expected_next))
    if bad:
        problems.append(Problem(_SOURCE, "have a wrong next row: it must be the following row within the session "
                                "and -1 at the session's last row", column="next_row", rows=bad))
    if problems:
        raise InputError(problems)
    return n


def _check_actions(action_code, n: int, n_actions: int, action_features) -> np.ndarray:
    action_code = np.asarray(action_code)
    problems: list[Problem] = []
    if np.ndim(action_code) != 1 or len(action_code) != n:
        raise InputError(Problem(_SOURCE, f"action_code has shape {np.shape(action_code)}, expected ({n},)"))
    if not np.issubdtype(action_code.dtype, np.integer):
        raise InputError(Problem(_SOURCE, f"action_code must be integers, got dtype {action_code.dtype}"))
    bad = int(np.sum((action_code < 0) | (action_code >= n_actions)))
    if bad:
        problems.append(Problem(_SOURCE, f"have a logged action code outside 0..{n_actions - 1}", column="action_code",
                                rows=bad))
    if action_features is not None and len(action_features) < n_actions:
        problems.append(Problem(_SOURCE, f"action_features has {len(action_features):,} rows for {n_actions:,} action "
                                "codes: it needs one row per action code"))
    if problems:
        raise InputError(problems)
    return action_code.astype(np.int64, copy=False)


def _check_pairs(name: str, pairs, n: int) -> Pairs:
    try:
        row, action, prob = (np.asarray(a) for a in pairs)
    except (TypeError, ValueError):
        raise InputError(Problem(_SOURCE, f"policy '{name}': expected (row, action_code, prob) arrays")) from None
    source = f"policy '{name}'"
    if not (row.ndim == action.ndim == prob.ndim == 1 and len(row) == len(action) == len(prob)):
        raise InputError(Problem(source, "row, action_code and prob must be 1-d arrays of one length"))
    if not (np.issubdtype(row.dtype, np.integer) and np.issubdtype(action.dtype, np.integer)):
        raise InputError(Problem(source, "row and action_code must be integers"))
    prob = prob.astype(np.float64)
    problems: list[Problem] = []
    bad = int(np.sum((row < 0) | (row >= n)))
    if bad:
        problems.append(Problem(source, f"have a row index outside 0..{n - 1}", rows=bad))
    bad = int(np.sum(action < 0))
    if bad:
        problems.append(Problem(source, "have a negative action code", rows=bad))
    bad = int(np.sum(~np.isfinite(prob) | (prob < 0)))
    if bad:
        problems.append(Problem(source, "have a missing, infinite or negative probability", rows=bad))
    if problems:
        raise InputError(problems)
    total = np.bincount(row, weights=prob, minlength=n)
    bad = int(np.sum(np.abs(total - 1.0) > 1e-6))
    if bad:
        raise InputError(Problem(source, "have probabilities that do not sum to 1 (a row without any action is 0)",
                                 rows=bad, fix="give the policy's distribution at every logged step"))
    positive = prob > 0                      # a zero-probability pair adds nothing to V: not predicted
    return row[positive].astype(np.int64), action[positive].astype(np.int64), prob[positive]


def _check_ratio(name: str, ratio, n: int) -> np.ndarray:
    ratio = np.asarray(ratio, dtype=np.float64)
    if ratio.shape != (n,):
        raise InputError(Problem(f"policy '{name}'", f"ratio has shape {ratio.shape}, expected ({n},): one per row"))
    bad = int(np.sum(~np.isfinite(ratio) | (ratio < 0)))
    if bad:
        raise InputError(Problem(f"policy '{name}'", "have a missing, infinite or negative importance ratio",
                                 rows=bad))
    return ratio
