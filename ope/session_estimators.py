"""Session-level off-policy estimators, as per-session terms.

A policy's value over sessions is V = E[sum_t gamma^t r_t] from the logged sessions' initial states
(DESIGN section 2, "Sessions"). Every estimator here returns `Terms` with one entry per session, so
intervals, paired differences, the bootstrap and the gate treat a session as one sample, exactly as
the decision-level estimators treat a row.

Notation (sorted positions of `SessionIndex`, session i, step t = 0 .. T_i - 1): w_t = pi_e(a_t|s_t) /
pi_0(a_t|s_t) the per-decision ratio; rho_t = prod_{k <= t} w_k the cumulative weight (rho_{-1} = 1);
d_t = gamma^t; Q = Q_hat(s_t, a_t) and V = V_hat(s_t) = sum_a pi_e(a|s_t) Q_hat(s_t, a) from a fitted Q
function (fitted-Q evaluation, `sequential_models.fit_fqe`); u_t = u_hat_t(s_t) the estimated state
density ratio d^pi_t(s) / d^pi0_t(s) (`sequential_models.fit_state_ratios`).

The weighted (self-normalised) forms normalise each step t by N_t = sum_i rho_{i, min(t, T_i - 1)}:
a session that ended before t is in an absorbing state with reward 0 whose weight stays rho_{T_i - 1}
(the usual padding of variable-length episodes). Their terms are the influence-function
linearisation of that sum of ratios (`Terms.linearised`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from livegate.datasets.errors import InputError, Problem
from livegate.datasets.sessions import SessionIndex

from .estimators import Registry, Terms


@dataclass
class SessionInputs:
    """What the session estimators see of one (policy, metric); per-row arrays in sorted order."""

    index: SessionIndex
    reward: np.ndarray
    ratio: np.ndarray                    # w_t: the candidate's over the logging policy's probability
    gamma: float = 1.0
    q_logged: np.ndarray | None = None   # Q_hat(s_t, a_t)
    v: np.ndarray | None = None          # V_hat(s_t) under the candidate
    state_ratio: np.ndarray | None = None  # u_hat_t(s_t)
    unit_weight: bool = False            # the logging policy itself: w = 1 everywhere

    @property
    def n_sessions(self) -> int:
        return self.index.n_sessions

    @functools.cached_property
    def discount(self) -> np.ndarray:
        if self.gamma == 1.0:
            return np.ones(self.index.n_rows)
        return self.gamma ** self.index.step.astype(np.float64)

    @property
    def weight(self) -> np.ndarray:
        """w_t (1 everywhere for the logging policy)."""
        return np.ones(self.index.n_rows) if self.unit_weight else self.ratio

    @functools.cached_property
    def rho(self) -> np.ndarray:
        """rho_t, the cumulative weight at every step."""
        if self.unit_weight:
            return np.ones(self.index.n_rows)
        return self.index.cumulative_product(self.ratio)

    @functools.cached_property
    def rho_previous(self) -> np.ndarray:
        """rho_{t-1}, 1 at step 0."""
        return self.index.previous(self.rho, 1.0)

    @functools.cached_property
    def rho_last(self) -> np.ndarray:
        """(S,) each session's full-trajectory weight rho_{T_i - 1}."""
        return self.rho[self.index.last_position()]

    @functools.cached_property
    def discounted_return(self) -> np.ndarray:
        """(S,) G_i = sum_t gamma^t r_t."""
        return self.index.per_session(self.discount * self.reward)

    @functools.cached_property
    def step_normaliser(self) -> np.ndarray:
        """(horizon,) N_t = sum_i rho_{i, min(t, T_i - 1)}: the alive sessions' weights at t plus the
        final weights of the sessions that ended before t."""
        horizon = self.index.horizon
        alive = np.bincount(self.index.step, weights=self.rho, minlength=horizon)
        ended = np.bincount(self.index.lengths, weights=self.rho_last, minlength=horizon + 1)
        return alive + np.cumsum(ended)[:horizon]


def _clipped(weight: np.ndarray, clip: float) -> np.ndarray:
    return np.minimum(weight, clip) if math.isfinite(clip) else weight


def _need(x: SessionInputs, name: str, *arrays: str) -> None:
    missing = [a for a in arrays if getattr(x, a) is None]
    if missing:
        what = "a fitted Q function (context columns of the states)" if "v" in missing or "q_logged" in missing \
            else "state density ratios (context columns of the states)"
        raise InputError(Problem("--estimators", f"'{name}' needs {what}"))


def _step_normalised(x: SessionInputs, parts: list[tuple[np.ndarray, np.ndarray]]) -> Terms:
    """sum over parts p and steps k of X^p_k / N_k, where X^p_k sums the per-row values of part p over
    rows whose normalising step is k; as linearised per-session terms. The influence of session i is
    sum_rows x_r / m_{k_r} - sum_k (X_k / N_k) rho_{i, min(k, T_i - 1)} / m_k, m_k = N_k / S (the
    delta method for a ratio of means, applied step by step)."""
    idx, horizon, n_sessions = x.index, x.index.horizon, x.n_sessions
    total = np.zeros(horizon)
    for values, norm_step in parts:
        total += np.bincount(norm_step, weights=values, minlength=horizon)
    normaliser = x.step_normaliser
    mean_normaliser = normaliser / n_sessions
    with np.errstate(invalid="ignore", divide="ignore"):
        # a step where every weight is 0 has numerator 0 too (each value carries its step's weight)
        theta = np.where(normaliser > 0, total / normaliser, 0.0)
        scale = np.where(normaliser > 0, 1.0 / mean_normaliser, 0.0)
    value = float(np.sum(theta))
    influence = np.zeros(n_sessions)
    for values, norm_step in parts:
        influence += idx.per_session(values * scale[norm_step])
    c = theta * scale
    influence -= idx.per_session(c[idx.step] * x.rho)
    suffix = np.concatenate([np.cumsum(c[::-1])[::-1], [0.0]])   # suffix[j] = sum_{k >= j} c_k
    influence -= x.rho_last * suffix[idx.lengths]
    return Terms.linearised(value, influence)


def step_values(x: SessionInputs) -> np.ndarray:
    """(horizon,) the candidate's estimated discounted reward at each step, gamma^t E[r_t] (0 after the
    session ends), by weighted per-decision IS: their sum is `wpdis`. The report's per-step curve."""
    horizon = x.index.horizon
    numerator = np.bincount(x.index.step, weights=x.discount * x.rho * x.reward, minlength=horizon)
    normaliser = x.step_normaliser
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(normaliser > 0, numerator / normaliser, 0.0)


def tis(x: SessionInputs, clip: float = math.inf) -> Terms:
    """Trajectory-wise importance sampling, mean_i(rho_{T_i - 1} G_i) (Precup, Sutton & Singh 2000,
    eq. 1). Unbiased; its variance grows exponentially with the session length."""
    return Terms(weighted=_clipped(x.rho_last, clip) * x.discounted_return)


def wtis(x: SessionInputs) -> Terms:
    """Weighted trajectory-wise IS, sum_i rho_{T_i - 1} G_i / sum_i rho_{T_i - 1} (Precup et al. 2000,
    weighted form). Consistent, stays within the range of the observed returns."""
    return Terms(weighted=x.rho_last * x.discounted_return, norm=x.rho_last)


def pdis(x: SessionInputs, clip: float = math.inf) -> Terms:
    """Per-decision importance sampling, mean_i sum_t gamma^t rho_t r_t (Precup, Sutton & Singh 2000,
    eq. 3): the reward at t is weighted only by the decisions before it. Unbiased; `clip` caps rho_t."""
    return Terms(weighted=x.index.per_session(x.discount * _clipped(x.rho, clip) * x.reward))


def wpdis(x: SessionInputs) -> Terms:
    """Weighted per-decision IS, sum_t gamma^t sum_i rho_it r_it / N_t (Precup et al. 2000; Thomas 2015,
    PhD thesis, sec. 3.8, with the absorbing-state normaliser N_t). Consistent, lower variance than PDIS."""
    return _step_normalised(x, [(x.discount * x.rho * x.reward, x.index.step)])


def dr(x: SessionInputs, clip: float = math.inf) -> Terms:
    """Step-wise doubly robust, mean_i sum_t gamma^t [rho_t (r_t - Q_t) + rho_{t-1} V_t] (Jiang & Li 2016,
    eq. 7 unrolled; Thomas & Brunskill 2016, eq. 2). Unbiased when the weights are right, whatever Q;
    with Q exact its variance comes from the transitions only. `clip` caps rho_t and rho_{t-1}."""
    _need(x, "dr", "q_logged", "v")
    rho, previous = _clipped(x.rho, clip), _clipped(x.rho_previous, clip)
    return Terms(weighted=x.index.per_session(x.discount * (rho * (x.reward - x.q_logged) + previous * x.v)))


def wdr(x: SessionInputs) -> Terms:
    """Weighted doubly robust (Thomas & Brunskill 2016, eq. 4): DR with rho_t replaced by the step-
    normalised rho_t / mean_i rho_it. Consistent; far lower variance than DR on long sessions."""
    _need(x, "wdr", "q_logged", "v")
    idx = x.index
    later = idx.step > 0
    residual = (x.discount * x.rho * (x.reward - x.q_logged), idx.step)
    # rho_{t-1} V_t is normalised by N_{t-1}; at t = 0 (rho_{-1} = 1 for every session) it is mean_i V(s_i0)
    baseline = (np.where(later, x.discount * x.rho_previous * x.v, 0.0), np.maximum(idx.step - 1, 0))
    terms = _step_normalised(x, [residual, baseline])
    start_value = x.v[idx.start[:-1]]
    return Terms.linearised(terms.value() + float(np.mean(start_value)),
                            terms.weighted - terms.value() + start_value - np.mean(start_value))


def fqe(x: SessionInputs) -> Terms:
    """Fitted-Q evaluation, mean_i V_hat(s_i0) (Le, Voloshin & Yue 2019, Algorithm 3): the direct method
    for sessions. Consistent when the Q function class holds the Bellman targets."""
    _need(x, "fqe", "v")
    return Terms(weighted=np.zeros(x.n_sessions), direct=x.v[x.index.start[:-1]])


def mis(x: SessionInputs, clip: float = math.inf) -> Terms:
    """Marginalised importance sampling, mean_i sum_t gamma^t u_t(s_t) w_t r_t (Xie, Ma & Wang 2019,
    eq. 4): the state density ratio u_t replaces the product of the earlier weights, so the variance
    does not grow exponentially with the horizon. Consistent when u is; `clip` caps u_t w_t."""
    _need(x, "mis", "state_ratio")
    return Terms(weighted=x.index.per_session(x.discount * _clipped(x.state_ratio * x.weight, clip) * x.reward))


def drl(x: SessionInputs, clip: float = math.inf) -> Terms:
    """Double reinforcement learning (Kallus & Uehara 2020, "Double reinforcement learning for
    efficient off-policy evaluation in Markov decision processes", JMLR, the DRL estimator with
    marginal ratios): mean_i [V_hat(s_i0) + sum_t gamma^t u_t(s_t) w_t (r_t + gamma V_hat(s_t+1) - Q_t)],
    with V_hat = 0 after the session ends. The fitted-Q value corrected by the Bellman residuals,
    weighted by the state density ratio times one decision's ratio instead of the product of all
    earlier ones: consistent if either the Q function or the ratios are, and its variance does not grow
    exponentially with the session length. `clip` caps u_t w_t.

    The gate's default at the session level. Its terms are the efficient influence function evaluated
    at the fitted models, so its interval is a valid one when both models converge (the error of the
    value is then the product of theirs); it does not include the models' own error. On the session
    simulator (benchmarks/README_sessions.md, 4e4 sessions, 5 seeds, 3 candidates) its normal intervals
    covered the exact value 15 times of 15, with a mean absolute error of 1.4% (largest 3.9%), where
    wdr's covered 14 of 15 with a 5.2% error (trajectory weights with an effective sample of a few
    hundred sessions) and pdis missed the Q-learning agent's value by 41%."""
    _need(x, "drl", "q_logged", "v", "state_ratio")
    nxt = x.index.next_position
    next_value = np.where(nxt >= 0, x.v[np.maximum(nxt, 0)], 0.0)
    residual = x.reward + x.gamma * next_value - x.q_logged
    weight = _clipped(x.state_ratio * x.weight, clip)
    return Terms(weighted=x.index.per_session(x.discount * weight * residual), direct=x.v[x.index.start[:-1]])


SESSION_REGISTRY = Registry(
    functions={"tis": (tis, {"clip": ("clip", float)}), "wtis": (wtis, {}),
               "pdis": (pdis, {"clip": ("clip", float)}), "wpdis": (wpdis, {}),
               "dr": (dr, {"clip": ("clip", float)}), "wdr": (wdr, {}), "fqe": (fqe, {}),
               "mis": (mis, {"clip": ("clip", float)}), "drl": (drl, {"clip": ("clip", float)})},
    needs_model=frozenset({"dr", "wdr", "fqe", "drl"}),
    self_normalised=frozenset({"wtis", "wpdis", "wdr"}),
    needs_state_ratios=frozenset({"mis", "drl"}))

SESSION_ESTIMATOR_NAMES = tuple(SESSION_REGISTRY.functions)
