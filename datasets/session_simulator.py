"""Live-stream *session* simulator with exact ground truth: the myopic trap, measurable.

Why: a recommender that changes what the viewer does next (fatigue, boredom with one category,
leaving the app) must be judged by its value over whole sessions, E[sum_t gamma^t r_t], not by the
reward of one decision. Checking a sequential off-policy estimator needs a known answer; this module
draws viewer sessions from a small Markov decision process whose every transition probability and
expected reward is known in closed form, so each policy's session value is computed *exactly* by
backward induction (and confirmed by large Monte-Carlo rollouts with standard errors).

The MDP (one function per piece below):

* **State** (all of it is written to the log row as ``x_*`` context columns, so the process is
  Markov in the observed columns and marginalised importance sampling and fitted-Q evaluation are
  valid): the viewer's favourite category (``x_taste_<k>``, one-hot), activity level
  (``x_activity``), whether the session began at prime time (``x_hour``, ``x_prime_time``), fatigue
  (``x_fatigue``, 0..FATIGUE_MAX), the category shown at the previous step (``x_last_category``, -1
  at step 0) and the step (``x_step``). Taste, activity and hour are fixed within a session.
* **Actions**: the N_STREAMS streams on air (``action`` 0..9), each with a category
  (``a_category``); three are *clickbait*: long immediate watch time, but the viewer is then more
  likely to leave.
* **Rewards** per step: ``click`` (Bernoulli), ``watch_seconds`` (lognormal given a click, 0
  otherwise) and ``gift_value`` (rare; lognormal amount given a click and a gift).
* **Dynamics**: fatigue grows with watch time (+1 for a watch over 60 s, +1 more over 300 s) and
  lowers clicks and watch time and raises leaving; showing the same category as at the previous step
  bores (lower click and watch, higher leaving); clickbait raises leaving. After each step the viewer
  leaves with a probability that depends on the state and the shown stream; the session also ends
  after ``max_steps`` steps.

Policies are tables over the finite state space (``step`` x stationary state x stream):
``logging`` (personalised popularity softmax with a no-repeat diversity rule, exploration floor
>= 0.025 per stream), ``myopic`` (softmax on the immediate expected watch seconds), ``longterm``
(softmax on the optimal Q function of session watch time, solved exactly by backward induction),
``uniform`` and ``qlearning`` (tabular Q-learning trained on the simulator, epsilon-greedy).

The myopic trap, at the defaults (watch seconds, gamma 1): the myopic policy keeps showing the
viewer's favourite category, mostly its clickbait stream. It earns ~1.5-1.75x logging's watch time
per decision, but boredom and clickbait end its sessions after ~3 steps instead of ~6, so it loses
~17% of logging's watch time per session; the long-term policy earns less than the myopic one per
decision and ~60% more than logging per session. A per-decision evaluation ranks them the wrong
way round; a session-level one does not. That is the point of the exercise (see the LEAVE and
LOGGING_DIVERSITY parameters, and ``simulate_sessions``).

API: ``simulate_sessions(SessionSimulationConfig(...)) -> SessionSimulation`` (logs, candidate policies
in long format, truth) and ``write_session_simulation(sim, out_dir)`` (logs.parquet, actions.parquet,
policies/<name>.parquet, truth.json). For tests of estimators: ``q_function`` (the exact Q^pi at every
logged row), ``policy_matrix``, ``expected_reward``, ``sample_sessions`` (fresh on-policy sessions) and
``discounted_returns``.

Everything is vectorised NumPy: loops run over steps (at most ``max_steps``) or training
iterations, never over sessions or rows. Random numbers come from independent streams derived from
the seed, so the truth and the Q-learning agent do not depend on ``n_sessions``.
"""
from __future__ import annotations

import math
import pathlib
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.special import ndtr

from ._version import __version__
from .errors import InputError, Problem, raise_if_any
from .simulator import _linear, _sigmoid, _softmax, write_simulation_files  # one formula each
from .validation import check_int_settings

METRICS = ("click", "watch_seconds", "gift_value")
#: Candidate policies written next to the logs (the built-in ``logging`` policy is only in truth).
CANDIDATE_POLICIES = ("myopic", "longterm", "uniform", "qlearning")
ALL_POLICIES = ("logging", *CANDIDATE_POLICIES)
TRUTH_SCHEMA = "livegate.session_truth/1"
#: The metric the myopic, long-term and Q-learning policies optimise.
TARGET_METRIC = "watch_seconds"

# --- world -------------------------------------------------------------------------------------
START = np.datetime64("2026-01-05T00:00:00", "us")   # a Monday, UTC (as in datasets.simulator)
N_DAYS = 7
US_PER_HOUR = 3_600_000_000
#: Relative session start rate by hour of day (the same curve as datasets.simulator).
HOUR_WEIGHTS = np.array([1.0, 0.7, 0.4, 0.3, 0.3, 0.3, 0.4, 0.6, 0.8, 0.9, 1.0, 1.0,
                         1.1, 1.0, 1.0, 1.0, 1.1, 1.3, 1.7, 3.0, 3.2, 3.2, 3.0, 1.6])
PRIME_HOURS = (19, 20, 21, 22)
#: Seconds between the end of one watch and the next decision (the viewer scrolls the feed).
BROWSE_SECONDS = 4.0

CATEGORIES = ("gaming", "music", "chat", "outdoor")
N_CATEGORIES = len(CATEGORIES)
#: Share of viewers whose favourite category is each one: gaming and music dominate, as on most apps.
TASTE_SHARES = np.array([0.35, 0.30, 0.20, 0.15])
#: Activity levels (a multiplier of engagement) and their shares among viewers. Sessions pick their
#: viewer in proportion to activity, so active viewers hold more sessions than their head count.
ACTIVITY_LEVELS = np.array([0.5, 1.0, 2.0])
ACTIVITY_SHARES = np.array([0.3, 0.5, 0.2])
FATIGUE_MAX = 6
#: Watch-time thresholds (seconds) that each add one fatigue level: fatigue grows with watch time.
FATIGUE_THRESHOLDS = (60.0, 300.0)

# --- streams -----------------------------------------------------------------------------------
# One row per stream on air: category, click and watch offsets (logit / log-seconds), whether it is
# clickbait, a gift offset and its popularity (what the logging policy follows). Clickbait streams
# are the most popular and the most clicked, with ~2x the immediate watch time of a normal stream of
# their category, and they make the viewer leave: exactly what a popularity- or watch-greedy policy
# is drawn to.
STREAMS = pd.DataFrame({
    "action":     [0,    1,    2,    3,    4,    5,    6,    7,    8,    9],
    "category":   [0,    0,    0,    1,    1,    1,    2,    2,    3,    3],
    "click":      [0.0,  0.3,  0.6,  0.1, -0.2,  0.6,  0.2,  0.0,  0.1,  0.6],
    "watch":      [0.0, -0.2,  0.7,  0.1,  0.3,  0.7,  0.0,  0.2,  0.1,  0.7],
    "clickbait":  [False, False, True, False, False, True, False, False, False, True],
    "gift":       [0.0,  0.5, -1.0,  0.3,  0.0, -1.0,  0.8,  0.0,  0.2, -1.0],
    "popularity": [1.0,  0.6,  2.5,  0.8,  0.4,  2.2,  0.6,  0.4,  0.5,  2.0],
})
N_STREAMS = len(STREAMS)
_CAT = STREAMS["category"].to_numpy()
_BAIT = STREAMS["clickbait"].to_numpy().astype(np.float64)

# --- outcome model (coefficients of linear predictors) -----------------------------------------
# Inputs: affinity (1 if the stream is of the viewer's favourite category), repeat (1 if its category
# was shown at the previous step), log activity, prime time and fatigue.
# Click intercept -1.5: about a third of the streams shown are clicked (~32% under logging).
CLICK = dict(intercept=-1.5, affinity=1.2, repeat=-0.6, activity=0.4, prime=0.2, fatigue=-0.25)
WATCH = dict(intercept=3.8, affinity=0.6, repeat=-0.3, activity=0.4, prime=0.2, fatigue=-0.10)
WATCH_SIGMA = 1.0                # lognormal watch seconds given a click: E = exp(mu + sigma^2 / 2)
GIFT = dict(intercept=-3.5, affinity=0.8, activity=0.8, prime=0.3)
GIFT_AMOUNT_MU, GIFT_SIGMA = 1.5, 1.0
#: Leaving after the step (logit): fatigue, boredom and clickbait push out; a favourite-category stream
#: and an active viewer hold on. Tuned so that the myopic trap is stark (see the module docstring).
#: A rested viewer (activity 1, fatigue 0) shown varied, honest streams rarely leaves (intercept
#: -3.3: 2-4% a step), but boredom (repeat 3.0: the same category twice in a row multiplies the odds
#: of leaving by e^3 ~ 20; a repeated favourite-category stream: 31%) and clickbait (1.7: odds x5.5;
#: 17% on its own) drive viewers out; the favourite category's clickbait shown twice in a row: 71%.
#: The immediate effect of a repeat (CLICK/WATCH ``repeat``) stays mild, so a policy that ranks by
#: watch time now keeps showing the favourite category's clickbait and never sees this cost.
LEAVE = dict(intercept=-3.3, affinity=-0.5, repeat=3.0, activity=-0.4, prime=-0.1, fatigue=0.35,
             clickbait=1.7)

# --- policies ----------------------------------------------------------------------------------
LOGGING_EPSILON = 0.25           # epsilon-uniform exploration: every propensity >= 0.25 / 10 = 0.025
LOGGING_POPULARITY = 1.2         # logging logits: 1.2 log(popularity) + 1.5 affinity - 3 repeat
LOGGING_AFFINITY = 1.5           # personalised: favourite-category streams x e^1.5 ~ 4.5
#: The production feed's diversity rule: streams of the category just shown are down-weighted by
#: e^-3 ~ 0.05 (before the exploration mix), so logging rarely repeats a category (~10% of the steps
#: after the first, against ~50% for the myopic policy). This is what a watch-greedy ranker drops, and
#: why it loses per session even to logging.
LOGGING_DIVERSITY = 3.0
MYOPIC_SHARPNESS = 4.0           # myopic: pi proportional to E[watch now]^4
LONGTERM_TEMPERATURE = 8.0       # longterm: pi proportional to exp(Q*(s, a) / 8 seconds)
QLEARNING_EPSILON = 0.1          # the written Q-learning policy is 0.1-greedy: it keeps full support
QLEARNING_TRAIN_EPSILON = 0.3    # exploration while training
#: Step size of the n-th visit of (s, a): max(0.01, n^-0.8). Decaying (Robbins-Monro: sum alpha = inf,
#: sum alpha^2 < inf for a power in (0.5, 1]) averages out the heavy-tailed watch-time noise that a
#: constant step size keeps in Q; the floor keeps tracking the moving bootstrap target.
QLEARNING_ALPHA_POWER = 0.8
QLEARNING_ALPHA_MIN = 0.01


@dataclass(frozen=True)
class SessionSimulationConfig:
    """Size, seed and discount of a session simulation.

    ``n_users`` defaults to ``max(100, n_sessions // 4)``. ``gamma`` is the discount of the session
    value (1.0 = total per session); the long-term and Q-learning policies optimise it too.
    ``n_truth_sessions`` Monte-Carlo sessions per policy confirm the exact values.
    ``qlearning_iterations`` batched updates over ``qlearning_viewers`` parallel simulated viewers
    train the Q-learning agent.
    """

    n_sessions: int = 20_000
    seed: int = 0
    gamma: float = 1.0
    max_steps: int = 30
    n_truth_sessions: int = 200_000
    n_users: int | None = None
    qlearning_iterations: int = 3_000
    qlearning_viewers: int = 2_048

    @property
    def resolved_n_users(self) -> int:
        return self.n_users if self.n_users is not None else max(100, self.n_sessions // 4)


@dataclass
class SessionSimulation:
    """Simulated sessions, candidate policies and the truth.

    ``logs``: one row per (session, step), ordered by session then step; ``decision_id`` is the row
    number. ``policies``: candidate name -> long-format frame (decision_id, action, prob) covering
    every logged step. ``actions``: the stream catalogue. ``truth``: the document written to
    truth.json. ``model``: the exact MDP (tables, policies) behind everything, for exact Q
    functions (``q_function``) and fresh on-policy samples (``sample_sessions``). ``state_index``
    (with ``logs["step"]``) locates every log row in the model's tables.
    """

    config: SessionSimulationConfig
    logs: pd.DataFrame
    policies: dict[str, pd.DataFrame]
    actions: pd.DataFrame
    truth: dict
    model: SessionModel = field(repr=False)
    state_index: np.ndarray = field(repr=False)


# ================================================================================================
# the finite MDP
# ================================================================================================

# The stationary state (everything but the step) is a mixed-radix index over these dimensions; the
# last category has N_CATEGORIES + 1 values, the last one meaning "none yet" (step 0).
_DIMS = (N_CATEGORIES, ACTIVITY_LEVELS.size, 2, FATIGUE_MAX + 1, N_CATEGORIES + 1)
N_STATES = int(np.prod(_DIMS))
_NO_CATEGORY = N_CATEGORIES


def _encode(taste, activity, prime, fatigue, last) -> np.ndarray:
    index = np.asarray(taste, dtype=np.int64)
    for dim, part in zip(_DIMS[1:], (activity, prime, fatigue, last)):
        index = index * dim + np.asarray(part, dtype=np.int64)
    return index


def _decode(index: np.ndarray) -> dict[str, np.ndarray]:
    parts = {}
    rest = np.asarray(index, dtype=np.int64)
    for name, dim in zip(("last", "fatigue", "prime", "activity"), _DIMS[:0:-1]):
        parts[name] = rest % dim
        rest = rest // dim
    parts["taste"] = rest
    return parts


@dataclass
class SessionModel:
    """The MDP as (N_STATES, N_STREAMS) tables over stationary states, plus the policies.

    ``p_click``, ``mu_watch``, ``p_gift`` (given a click), ``p_leave``: outcome parameters.
    ``expected[metric]``: E[reward | s, a] in closed form. ``p_fatigue``: (N_STATES, N_STREAMS, 3)
    probabilities that fatigue grows by 0, 1 or 2. ``next_state``: (N_STATES, N_STREAMS, 3) the
    stationary state after each fatigue increment (taste, activity and prime time stay, the last
    category becomes the shown stream's). ``initial``: the distribution of the step-0 state.
    ``policies``: name -> (max_steps, N_STATES, N_STREAMS) probability tables.
    """

    max_steps: int
    gamma: float
    p_click: np.ndarray
    mu_watch: np.ndarray
    p_gift: np.ndarray
    p_leave: np.ndarray
    expected: dict[str, np.ndarray]
    p_fatigue: np.ndarray
    next_state: np.ndarray
    initial: np.ndarray
    policies: dict[str, np.ndarray] = field(default_factory=dict)
    qlearning_q: np.ndarray | None = None

    # --- exact dynamic programming -----------------------------------------------------------

    def evaluate(self, policy: np.ndarray, reward: np.ndarray, gamma: float | None = None) -> np.ndarray:
        """Exact Q^pi_t(s, a) for every step t, shape (max_steps, N_STATES, N_STREAMS).

        Backward induction: Q_t(s, a) = r(s, a) + gamma (1 - leave(s, a)) sum_k P(k | s, a)
        V_{t+1}(s'_k), V_t(s) = sum_a pi_t(a | s) Q_t(s, a), V_max_steps = 0 (the cap ends the
        session). Exact because the state space is finite and every probability is closed form.
        """
        gamma = self.gamma if gamma is None else gamma
        q = np.empty((self.max_steps, *reward.shape))
        v_next = np.zeros(N_STATES)
        for t in range(self.max_steps - 1, -1, -1):
            q[t] = reward + gamma * (1.0 - self.p_leave) * self._continuation(v_next)
            v_next = np.sum(policy[t] * q[t], axis=1)
        return q

    def optimal_q(self, reward: np.ndarray, gamma: float | None = None) -> np.ndarray:
        """Q*_t(s, a) by backward induction with V_{t+1} = max_a Q_{t+1}: the exact optimum."""
        gamma = self.gamma if gamma is None else gamma
        q = np.empty((self.max_steps, *reward.shape))
        v_next = np.zeros(N_STATES)
        for t in range(self.max_steps - 1, -1, -1):
            q[t] = reward + gamma * (1.0 - self.p_leave) * self._continuation(v_next)
            v_next = q[t].max(axis=1)
        return q

    def _continuation(self, v_next: np.ndarray) -> np.ndarray:
        return np.sum(self.p_fatigue * v_next[self.next_state], axis=2)

    def session_value(self, policy: np.ndarray, reward: np.ndarray, gamma: float | None = None,
                      initial: np.ndarray | None = None) -> float:
        """Exact E[sum_t gamma^t r_t] from the initial-state distribution (or the given one)."""
        q0 = self.evaluate(policy, reward, gamma)[0]
        v0 = np.sum(policy[0] * q0, axis=1)
        return float((self.initial if initial is None else initial) @ v0)


def _state_features(index: np.ndarray) -> dict[str, np.ndarray]:
    """Linear-predictor inputs of every (stationary state, stream) pair, shape (N_STATES, N_STREAMS)."""
    s = _decode(index)
    taste, last = s["taste"][:, None], s["last"][:, None]
    return dict(
        affinity=(taste == _CAT[None, :]).astype(np.float64),
        repeat=(last == _CAT[None, :]).astype(np.float64),   # "none yet" never matches a category
        activity=np.log(ACTIVITY_LEVELS[s["activity"]])[:, None] + np.zeros((1, N_STREAMS)),
        prime=s["prime"][:, None].astype(np.float64) + np.zeros((1, N_STREAMS)),
        fatigue=s["fatigue"][:, None].astype(np.float64) + np.zeros((1, N_STREAMS)),
        clickbait=np.broadcast_to(_BAIT[None, :], (index.size, N_STREAMS)),
        taste=s["taste"], activity_level=s["activity"], prime_flag=s["prime"], fatigue_level=s["fatigue"],
    )


def _build_model(config: SessionSimulationConfig) -> SessionModel:
    """Closed-form outcome and transition tables of the MDP (see the module docstring)."""
    states = np.arange(N_STATES)
    f = _state_features(states)
    stream = {c: STREAMS[c].to_numpy()[None, :] for c in ("click", "watch", "gift")}
    p_click = _sigmoid(_linear(CLICK, f) + stream["click"])
    mu_watch = _linear(WATCH, f) + stream["watch"]
    p_gift = _sigmoid(_linear(GIFT, f) + stream["gift"])
    p_leave = _sigmoid(_linear(LEAVE, f))
    # E[lognormal(mu, s)] = exp(mu + s^2 / 2); watch and gifts are 0 without a click
    expected = {
        "click": p_click,
        "watch_seconds": p_click * np.exp(mu_watch + 0.5 * WATCH_SIGMA ** 2),
        "gift_value": p_click * p_gift * math.exp(GIFT_AMOUNT_MU + 0.5 * GIFT_SIGMA ** 2),
    }
    # fatigue grows by the number of thresholds the watch time exceeds: P(W > T | click) =
    # Phi((mu - log T) / sigma) for a lognormal W; the thresholds are nested, so P(+2) <= P(>= +1)
    above = [p_click * ndtr((mu_watch - math.log(t)) / WATCH_SIGMA) for t in FATIGUE_THRESHOLDS]
    p_fatigue = np.stack([1.0 - above[0], above[0] - above[1], above[1]], axis=2)
    next_state = np.stack([
        _encode(f["taste"][:, None], f["activity_level"][:, None], f["prime_flag"][:, None],
                np.minimum(f["fatigue_level"][:, None] + k, FATIGUE_MAX), _CAT[None, :])
        for k in range(3)], axis=2)
    initial = _initial_distribution()
    return SessionModel(max_steps=config.max_steps, gamma=config.gamma, p_click=p_click, mu_watch=mu_watch,
                        p_gift=p_gift, p_leave=p_leave, expected=expected, p_fatigue=p_fatigue,
                        next_state=next_state, initial=initial)


def _prime_share() -> float:
    return float(HOUR_WEIGHTS[list(PRIME_HOURS)].sum() / HOUR_WEIGHTS.sum())


def _session_activity_shares() -> np.ndarray:
    """Activity shares among *sessions*: viewers' shares tilted by activity (size-biased), because a
    session picks its viewer in proportion to activity."""
    w = ACTIVITY_SHARES * ACTIVITY_LEVELS
    return w / w.sum()


def _initial_distribution() -> np.ndarray:
    """P(step-0 state): taste x session activity x prime time, fatigue 0, no last category."""
    prime = _prime_share()
    joint = (TASTE_SHARES[:, None, None] * _session_activity_shares()[None, :, None]
             * np.array([1.0 - prime, prime])[None, None, :])
    t, a, p = np.meshgrid(*(np.arange(n) for n in joint.shape), indexing="ij")
    initial = np.zeros(N_STATES)
    initial[_encode(t.ravel(), a.ravel(), p.ravel(), 0, _NO_CATEGORY)] = joint.ravel()
    return initial


# ================================================================================================
# policies
# ================================================================================================

def _stationary(table: np.ndarray, max_steps: int) -> np.ndarray:
    """A (N_STATES, N_STREAMS) policy that ignores the step, as a (max_steps, ...) read-only view."""
    return np.broadcast_to(table, (max_steps, *table.shape))


def _logging_policy(model: SessionModel) -> np.ndarray:
    """Popularity-led softmax with personalisation and a diversity rule (the category just shown is
    down-weighted by e^-LOGGING_DIVERSITY), mixed with epsilon-uniform exploration so that every
    stream has propensity >= LOGGING_EPSILON / N_STREAMS = 0.025 in every state."""
    f = _state_features(np.arange(N_STATES))
    logits = (LOGGING_POPULARITY * np.log(STREAMS["popularity"].to_numpy())[None, :]
              + LOGGING_AFFINITY * f["affinity"] - LOGGING_DIVERSITY * f["repeat"])
    table = (1.0 - LOGGING_EPSILON) * _softmax(logits) + LOGGING_EPSILON / N_STREAMS
    return _stationary(table, model.max_steps)


def _myopic_policy(model: SessionModel) -> np.ndarray:
    """pi proportional to E[watch now | s, a]^k: scale-free, ranks by immediate watch seconds only
    (it sees fatigue and repeats through their effect on this step, never their effect on leaving)."""
    return _stationary(_softmax(MYOPIC_SHARPNESS * np.log(model.expected[TARGET_METRIC])), model.max_steps)


def _longterm_policy(model: SessionModel) -> np.ndarray:
    """Softmax over the exact optimal Q*_t(s, a) of session watch time (backward induction at the
    config's gamma); the temperature in seconds keeps every stream possible, so it stays evaluable."""
    q_star = model.optimal_q(model.expected[TARGET_METRIC])
    return _softmax(q_star / LONGTERM_TEMPERATURE)


def _uniform_policy(model: SessionModel) -> np.ndarray:
    return _stationary(np.full((N_STATES, N_STREAMS), 1.0 / N_STREAMS), model.max_steps)


def _train_qlearning(model: SessionModel, config: SessionSimulationConfig,
                     rng: np.random.Generator) -> np.ndarray:
    """Tabular Q-learning on the stationary state (the step is left out: a discretised state), trained
    on simulated viewers with Q(s,a) <- Q(s,a) + alpha [r + gamma max_a' Q(s',a') - Q(s,a)].

    ``qlearning_viewers`` viewers act in parallel under an epsilon-greedy behaviour policy; a viewer
    who leaves (or reaches the cap) is replaced by a new one. Each iteration applies the update once
    per visited (s, a) with the mean temporal-difference error of the viewers that visited it, i.e.
    the rule above on a mini-batch: vectorised, and an (s, a) hit twice in a batch is not moved twice
    from the same stale value. alpha decays with the visits of (s, a) (QLEARNING_ALPHA_POWER).
    Reward: realised watch seconds; the target is r alone when the viewer left or hit the cap (a
    terminal transition).
    """
    n = config.qlearning_viewers
    gamma = config.gamma
    q = np.zeros((N_STATES, N_STREAMS))
    visits = np.zeros(q.size)
    state, step = _draw_initial(model, rng, n), np.zeros(n, dtype=np.int64)
    for _ in range(config.qlearning_iterations):
        # greedy actions and max_a' Q(s', a') from the whole (small) table: cheaper than per viewer
        greedy, v_max = np.argmax(q, axis=1), q.max(axis=1)
        explore = rng.random(n) < QLEARNING_TRAIN_EPSILON
        action = np.where(explore, rng.integers(0, N_STREAMS, size=n), greedy[state])
        out = _step_outcomes(model, rng, state, action, gifts=False)
        done = out["leave"] | (step + 1 >= model.max_steps)
        target = out["watch_seconds"] + np.where(done, 0.0, gamma * v_max[out["next_state"]])
        key = state * N_STREAMS + action
        td_sum = np.bincount(key, weights=target - q.ravel()[key], minlength=q.size)
        hits = np.bincount(key, minlength=q.size)
        visited = np.flatnonzero(hits)
        visits[visited] += hits[visited]
        alpha = np.maximum(QLEARNING_ALPHA_MIN, visits[visited] ** -QLEARNING_ALPHA_POWER)
        q.ravel()[visited] += alpha * td_sum[visited] / hits[visited]
        # viewers who left are replaced by new ones at step 0
        state, step = out["next_state"], step + 1
        n_done = int(done.sum())
        if n_done:
            state[done] = _draw_initial(model, rng, n_done)
            step[done] = 0
    return q


def _qlearning_policy(model: SessionModel, q: np.ndarray) -> np.ndarray:
    """Epsilon-greedy on the learned Q: 1 - eps + eps/K on the argmax, eps/K elsewhere (full support)."""
    table = np.full((N_STATES, N_STREAMS), QLEARNING_EPSILON / N_STREAMS)
    table[np.arange(N_STATES), np.argmax(q, axis=1)] += 1.0 - QLEARNING_EPSILON
    return _stationary(table, model.max_steps)


# ================================================================================================
# sampling
# ================================================================================================

def _draw_initial(model: SessionModel, rng: np.random.Generator, n: int) -> np.ndarray:
    """Fresh step-0 states drawn from the exact initial distribution (inverse CDF over the states)."""
    cdf = np.cumsum(model.initial)
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), N_STATES - 1)


def _draw_from_cdf(rng: np.random.Generator, cdf: np.ndarray) -> np.ndarray:
    """One categorical draw per row of cumulative probabilities ``cdf`` (inverse CDF); never returns
    a zero-probability column."""
    u = rng.random(cdf.shape[0]) * cdf[:, -1]
    choice = (cdf <= u[:, None]).sum(axis=1)
    # u * total can round up to total; fall back to the last column with positive probability
    overflow = choice >= cdf.shape[1]
    if overflow.any():
        choice[overflow] = np.argmax(cdf[overflow] >= cdf[overflow, -1:], axis=1)
    return choice


def _step_outcomes(model: SessionModel, rng: np.random.Generator, state: np.ndarray,
                   action: np.ndarray, gifts: bool = True) -> dict[str, np.ndarray]:
    """Rewards, fatigue growth, leaving and the next stationary state of one step, for many viewers.

    Fatigue grows by the number of FATIGUE_THRESHOLDS the realised watch time exceeds, which is the
    event whose probability ``p_fatigue`` gives in closed form; leaving is drawn independently given
    (s, a) with probability ``p_leave``. ``gifts=False`` skips the gift draws (Q-learning's reward
    is watch time) and returns zero gifts.
    """
    n = state.size
    click = rng.random(n) < model.p_click[state, action]
    watch = np.where(click, np.exp(model.mu_watch[state, action] + WATCH_SIGMA * rng.standard_normal(n)), 0.0)
    gift = np.zeros(n)
    if gifts:
        gift = np.where(click & (rng.random(n) < model.p_gift[state, action]),
                        np.exp(GIFT_AMOUNT_MU + GIFT_SIGMA * rng.standard_normal(n)), 0.0)
    growth = sum((watch > t).astype(np.int64) for t in FATIGUE_THRESHOLDS)
    leave = rng.random(n) < model.p_leave[state, action]
    return {"click": click.astype(np.int64), "watch_seconds": watch, "gift_value": gift,
            "leave": leave, "next_state": model.next_state[state, action, growth]}


def _rollout(model: SessionModel, policy: np.ndarray, initial: np.ndarray, rng: np.random.Generator,
             gamma: float, record: bool) -> dict:
    """Run sessions from the given step-0 states under ``policy`` until each viewer leaves or the cap.

    Returns per-session discounted returns and undiscounted totals per metric and lengths; with
    ``record``, also per-row arrays (session, step, state, action, propensity, rewards) in step-major
    order. The loop runs over steps; each step is vectorised over the sessions still running.
    """
    n = initial.size
    returns = {m: np.zeros(n) for m in METRICS}
    totals = {m: np.zeros(n) for m in METRICS}
    length = np.zeros(n, dtype=np.int64)
    rows: dict[str, list] = {k: [] for k in ("session", "step", "state", "action", "propensity", *METRICS)}
    active = np.arange(n)
    state = initial.copy()
    cdf = np.cumsum(policy, axis=2)   # once per policy: the draws below only gather rows of it
    for t in range(model.max_steps):
        if active.size == 0:
            break
        action = _draw_from_cdf(rng, cdf[t][state])
        out = _step_outcomes(model, rng, state, action)
        for m in METRICS:
            returns[m][active] += gamma ** t * out[m]
            totals[m][active] += out[m]
        length[active] += 1
        if record:
            for key, value in (("session", active), ("step", np.full(active.size, t)), ("state", state),
                               ("action", action), ("propensity", policy[t][state, action])):
                rows[key].append(value)
            for m in METRICS:
                rows[m].append(out[m])
        stay = ~out["leave"]
        active, state = active[stay], out["next_state"][stay]
    result = {"returns": returns, "totals": totals, "length": length}
    if record:
        result["rows"] = {k: np.concatenate(v) if v else np.empty(0) for k, v in rows.items()}
    return result


# ================================================================================================
# configuration
# ================================================================================================

def _validate(config: SessionSimulationConfig) -> None:
    problems = []

    problems += check_int_settings("session simulation config", {
        "n_sessions": (config.n_sessions, 1), "seed": (config.seed, 0), "max_steps": (config.max_steps, 1),
        "n_truth_sessions": (config.n_truth_sessions, 2), "qlearning_iterations": (config.qlearning_iterations, 0),
        "qlearning_viewers": (config.qlearning_viewers, 1)})
    if config.n_users is not None:
        problems += check_int_settings("session simulation config", {"n_users": (config.n_users, 1)})
    gamma = config.gamma
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.integer, np.floating)) \
            or not math.isfinite(gamma) or not 0.0 < gamma <= 1.0:
        problems.append(Problem("session simulation config", f"must be in (0, 1], got {gamma!r}", column="gamma",
                                fix="pass a discount such as 1.0 (total per session) or 0.95"))
    raise_if_any(problems)


# ================================================================================================
# simulation
# ================================================================================================

# independent random streams (np.random.default_rng([seed, stream])): what one part draws never
# shifts another, so the truth and the Q-learning agent do not depend on n_sessions
_STREAM_LOGS, _STREAM_QLEARNING, _STREAM_TRUTH = 1, 2, 3

LOG_SCHEMA = pa.schema([
    ("decision_id", pa.int64()), ("session_id", pa.int64()), ("step", pa.int64()),
    ("user_id", pa.int64()), ("timestamp", pa.timestamp("us", tz="UTC")),
    ("action", pa.int64()), ("propensity", pa.float64()),
    ("click", pa.int64()), ("watch_seconds", pa.float64()), ("gift_value", pa.float64()),
    *[(f"x_taste_{k}", pa.float64()) for k in range(N_CATEGORIES)],
    ("x_activity", pa.float64()), ("x_hour", pa.int64()), ("x_prime_time", pa.bool_()),
    ("x_fatigue", pa.int64()), ("x_last_category", pa.int64()), ("x_step", pa.int64()),
    ("a_category", pa.int64()),
])
POLICY_SCHEMA = pa.schema([("decision_id", pa.int64()), ("action", pa.int64()), ("prob", pa.float64())])


def _draw_users(rng: np.random.Generator, n_users: int) -> dict:
    """Viewers: a favourite category and an activity level each, fixed over all their sessions."""
    return dict(taste=rng.choice(N_CATEGORIES, size=n_users, p=TASTE_SHARES),
                activity=rng.choice(ACTIVITY_LEVELS.size, size=n_users, p=ACTIVITY_SHARES))


def _draw_session_starts(rng: np.random.Generator, config: SessionSimulationConfig, users: dict) -> dict:
    """Sessions: a viewer (in proportion to activity: active viewers come back more often) and a start
    time over the week (busier at prime time); numbered in start-time order."""
    n = config.n_sessions
    weight = ACTIVITY_LEVELS[users["activity"]]
    user = rng.choice(weight.size, size=n, p=weight / weight.sum())
    day = rng.integers(0, N_DAYS, size=n)
    hour = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    micros = (day * 24 + hour) * US_PER_HOUR + rng.integers(0, US_PER_HOUR, size=n)
    order = np.argsort(micros, kind="stable")
    return dict(user=user[order], hour=hour[order], micros=micros[order])


def _assemble_logs(starts: dict, rows: dict) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows in (session, step) order with the state written out as x_* columns; also returns each
    row's stationary state index and step (its place in the model's tables)."""
    order = np.lexsort((rows["step"], rows["session"]))
    r = {k: v[order] for k, v in rows.items()}
    n_rows = order.size
    session, step = r["session"].astype(np.int64), r["step"].astype(np.int64)
    s = _decode(r["state"])
    # timestamps: a session's step t comes BROWSE_SECONDS after the end of step t-1's watch, so
    # the offset of a row is the session's cumulative (browse + watch) time before it
    gap_us = np.round((BROWSE_SECONDS + r["watch_seconds"]) * 1e6).astype(np.int64)
    cumulative = np.cumsum(gap_us) - gap_us
    first = np.flatnonzero(step == 0)
    offset = cumulative - np.repeat(cumulative[first], np.diff(np.append(first, n_rows)))
    micros = starts["micros"][session] + offset
    user = starts["user"][session]
    action = r["action"].astype(np.int64)
    hour = starts["hour"][session].astype(np.int64)
    columns = {
        "decision_id": np.arange(n_rows, dtype=np.int64),
        "session_id": session,
        "step": step,
        "user_id": user.astype(np.int64),
        "timestamp": pd.DatetimeIndex(START + micros.astype("timedelta64[us]")).tz_localize("UTC"),
        "action": action,
        "propensity": r["propensity"],
        "click": r["click"].astype(np.int64),
        "watch_seconds": r["watch_seconds"],
        "gift_value": r["gift_value"],
        **{f"x_taste_{k}": (s["taste"] == k).astype(np.float64) for k in range(N_CATEGORIES)},
        "x_activity": ACTIVITY_LEVELS[s["activity"]],
        "x_hour": hour,
        "x_prime_time": s["prime"].astype(bool),
        "x_fatigue": s["fatigue"].astype(np.int64),
        "x_last_category": np.where(s["last"] == _NO_CATEGORY, -1, s["last"]).astype(np.int64),
        "x_step": step,
        "a_category": _CAT[action].astype(np.int64),
    }
    return pd.DataFrame(columns), r["state"], step


def _to_long(probs: np.ndarray) -> pd.DataFrame:
    """Dense (n_rows, N_STREAMS) distributions -> the contract's long format, keeping prob > 0."""
    n_rows, k = probs.shape
    columns = {"decision_id": np.repeat(np.arange(n_rows, dtype=np.int64), k),
               "action": np.tile(np.arange(k, dtype=np.int64), n_rows),
               "prob": probs.ravel()}
    keep = columns["prob"] > 0
    if not keep.all():   # the built-in policies have full support: skip the copies then
        columns = {name: values[keep] for name, values in columns.items()}
    # copy=False: the arrays are fresh and private, and pandas would otherwise copy the two int64
    # columns into one consolidated block (seconds at 10^5 sessions x 10 streams, for nothing)
    return pd.DataFrame(columns, copy=False)


def _monte_carlo(model: SessionModel, policy: np.ndarray, n: int, rng: np.random.Generator,
                 gamma: float) -> dict:
    """Monte-Carlo session values (mean and standard error of n independent sessions) and the
    per-step average reward sum(rewards) / sum(steps), whose standard error is the delta method's
    sd(G_i - R T_i) / (mean(T) sqrt(n)) for a ratio of means."""
    out = _rollout(model, policy, _draw_initial(model, rng, n), rng, gamma, record=False)
    length = out["length"].astype(np.float64)
    result = {"n_sessions": n, "mean_steps": float(length.mean()),
              "mean_steps_se": float(length.std(ddof=1) / math.sqrt(n))}
    for m in METRICS:
        g, total = out["returns"][m], out["totals"][m]
        ratio = total.sum() / length.sum()
        result[m] = {"value": float(g.mean()), "se": float(g.std(ddof=1) / math.sqrt(n)),
                     "per_step": float(ratio),
                     "per_step_se": float((total - ratio * length).std(ddof=1) / (length.mean() * math.sqrt(n)))}
    return result


def simulate_sessions(config: SessionSimulationConfig = SessionSimulationConfig()) -> SessionSimulation:
    """Simulate logged sessions, the candidate policies at every logged step, and the truth.

    Truth (``sim.truth``), per policy (``logging`` and the candidates) and metric:

    * ``policies[name][metric]``: the exact session value E[sum_t gamma^t r_t] from the initial-state
      distribution, by backward induction on the finite MDP;
    * ``logged_starts[name][metric]``: the same averaged over the logged sessions' own step-0 states
      (the estimand conditional on the logged starts; no initial-state sampling noise);
    * ``monte_carlo[name][metric]``: ``value`` and ``se`` of n_truth_sessions fresh rollouts (an
      independent check of the exact value), and ``per_step`` (``per_step_se``): the mean reward
      per decision under the policy's own state distribution;
    * ``per_decision[name][metric]``: the exact mean reward per decision under the policy, E[sum_t
      r_t] / E[T] (undiscounted);
    * ``per_decision_logged_states[name][metric]``: the mean over logged rows of sum_a pi(a|s) E[r|s,a],
      i.e. what a per-decision (non-sequential) off-policy evaluation of the logs estimates;
    * ``session_length[name]``: the exact expected number of steps per session.
    """
    _validate(config)
    model = _build_model(config)
    model.policies["logging"] = _logging_policy(model)
    model.policies["myopic"] = _myopic_policy(model)
    model.policies["longterm"] = _longterm_policy(model)
    model.policies["uniform"] = _uniform_policy(model)
    model.qlearning_q = _train_qlearning(model, config, np.random.default_rng([config.seed, _STREAM_QLEARNING]))
    model.policies["qlearning"] = _qlearning_policy(model, model.qlearning_q)

    rng = np.random.default_rng([config.seed, _STREAM_LOGS])
    users = _draw_users(rng, config.resolved_n_users)
    starts = _draw_session_starts(rng, config, users)
    u = starts["user"]
    initial = _encode(users["taste"][u], users["activity"][u], np.isin(starts["hour"], PRIME_HOURS), 0,
                      _NO_CATEGORY)
    logged = _rollout(model, model.policies["logging"], initial, rng, config.gamma, record=True)
    logs, state_index, step = _assemble_logs(starts, logged["rows"])

    policies = {name: _to_long(model.policies[name][step, state_index]) for name in CANDIDATE_POLICIES}
    truth = _truth(config, model, logs, initial, state_index, step)
    actions = pd.DataFrame({"action": STREAMS["action"].to_numpy(np.int64),
                            "category": STREAMS["category"].to_numpy(np.int64),
                            "category_name": pd.array(np.array(CATEGORIES)[_CAT], dtype="str"),
                            "clickbait": STREAMS["clickbait"].to_numpy(bool)})
    return SessionSimulation(config=config, logs=logs, policies=policies, actions=actions, truth=truth,
                             model=model, state_index=state_index)


def _truth(config: SessionSimulationConfig, model: SessionModel, logs: pd.DataFrame, initial: np.ndarray,
           state_index: np.ndarray, step: np.ndarray) -> dict:
    start_counts = np.bincount(initial, minlength=N_STATES) / initial.size
    # share of the logged rows at each (step, state): the mean over rows of any function of (step,
    # state) is its dot product with these, which costs a table, not a pass over the rows
    row_share = (np.bincount(step * N_STATES + state_index, minlength=model.max_steps * N_STATES)
                 .reshape(model.max_steps, N_STATES) / max(step.size, 1))
    ones = np.ones((N_STATES, N_STREAMS))
    exact, logged_starts, per_decision, per_logged, lengths, mc = {}, {}, {}, {}, {}, {}
    for i, name in enumerate(ALL_POLICIES):
        policy = model.policies[name]
        exact[name], logged_starts[name], per_decision[name], per_logged[name] = {}, {}, {}, {}
        lengths[name] = model.session_value(policy, ones, gamma=1.0)
        for m in METRICS:
            reward = model.expected[m]
            q0 = model.evaluate(policy, reward)[0]
            v0 = np.sum(policy[0] * q0, axis=1)
            exact[name][m] = float(model.initial @ v0)
            logged_starts[name][m] = float(start_counts @ v0)
            per_decision[name][m] = model.session_value(policy, reward, gamma=1.0) / lengths[name]
            per_logged[name][m] = float(np.sum(row_share * np.sum(policy * reward, axis=2)))
        mc[name] = _monte_carlo(model, policy, config.n_truth_sessions,
                                np.random.default_rng([config.seed, _STREAM_TRUTH, i]), config.gamma)
    n_sessions = int(logs["session_id"].nunique()) if len(logs) else 0
    return {
        "schema": TRUTH_SCHEMA,
        "seed": config.seed,
        "gamma": config.gamma,
        "config": asdict(config),
        "level": "session",
        "n_sessions": n_sessions,
        "n_rows": int(len(logs)),
        "n_users": config.resolved_n_users,
        "generator": f"livegate {__version__} datasets.session_simulator",
        "target_metric": TARGET_METRIC,
        "definition": {
            "policies": "exact expected discounted return per session E[sum_t gamma^t r_t] from the "
                        "simulator's initial-state distribution, by backward induction on the finite MDP",
            "logged_starts": "exact expected discounted return per session averaged over the logged "
                             "sessions' step-0 states",
            "monte_carlo": "mean and standard error of the discounted return of n_sessions fresh "
                           "Monte-Carlo sessions; per_step = total reward / total steps (undiscounted), "
                           "standard error by the delta method",
            "per_decision": "exact mean reward per decision under the policy's own state distribution: "
                            "E[sum_t r_t] / E[T] (undiscounted)",
            "per_decision_logged_states": "mean over the logged rows of sum_a pi(a|s) E[r|s,a]: what a "
                                          "per-decision (non-sequential) evaluation of the logs estimates",
            "session_length": "exact expected number of steps per session",
        },
        "policies": exact,
        "logged_starts": logged_starts,
        "monte_carlo": mc,
        "per_decision": per_decision,
        "per_decision_logged_states": per_logged,
        "session_length": lengths,
        "actions": {str(a): {"category": CATEGORIES[c], "clickbait": bool(b)}
                    for a, c, b in zip(STREAMS["action"], _CAT, STREAMS["clickbait"])},
    }


# ================================================================================================
# exact quantities at the logged rows, and fresh on-policy samples
# ================================================================================================

def _policy_table(sim: SessionSimulation, policy: str) -> np.ndarray:
    if policy not in sim.model.policies:
        raise InputError(f"unknown policy '{policy}'; known: {', '.join(ALL_POLICIES)}", source="policy")
    return sim.model.policies[policy]


def _metric(metric: str) -> str:
    if metric not in METRICS:
        raise InputError(f"unknown metric '{metric}'; known: {', '.join(METRICS)}", source="metric")
    return metric


def policy_matrix(sim: SessionSimulation, policy: str) -> np.ndarray:
    """The policy's distribution at every logged row, shape (n_rows, N_STREAMS), column j = action j."""
    return _policy_table(sim, policy)[sim.logs["step"].to_numpy(), sim.state_index]


def q_function(sim: SessionSimulation, policy: str, metric: str, gamma: float | None = None) -> np.ndarray:
    """The exact Q^pi_t(s, a) at every logged row's state and step, shape (n_rows, N_STREAMS).

    Q^pi(s_t, a) is the expected discounted return from step t on after showing stream a, then
    following ``policy`` (gamma defaults to the simulation's). The true V^pi(s_t) of a row is
    ``(policy_matrix(sim, policy) * q).sum(axis=1)``; doubly-robust and fitted-Q estimators given
    these are unbiased.
    """
    q = sim.model.evaluate(_policy_table(sim, policy), sim.model.expected[_metric(metric)], gamma)
    return q[sim.logs["step"].to_numpy(), sim.state_index]


def expected_reward(sim: SessionSimulation, metric: str) -> np.ndarray:
    """E[reward | s, a] at every logged row's state, shape (n_rows, N_STREAMS) (closed form)."""
    return sim.model.expected[_metric(metric)][sim.state_index]


def sample_sessions(sim: SessionSimulation, policy: str, n_sessions: int, seed: int) -> pd.DataFrame:
    """Fresh on-policy sessions under ``policy`` (a name in ALL_POLICIES) from the initial-state
    distribution, in the logs' contract (``propensity`` is ``policy``'s). The mean discounted return
    is an unbiased estimate of ``sim.truth["policies"][policy][metric]``."""
    table = _policy_table(sim, policy)
    cfg = SessionSimulationConfig(n_sessions=n_sessions, seed=seed, gamma=sim.config.gamma,
                                  max_steps=sim.config.max_steps)
    rng = np.random.default_rng([seed, _STREAM_LOGS])
    users = _draw_users(rng, cfg.resolved_n_users)
    starts = _draw_session_starts(rng, cfg, users)
    u = starts["user"]
    initial = _encode(users["taste"][u], users["activity"][u], np.isin(starts["hour"], PRIME_HOURS), 0,
                      _NO_CATEGORY)
    out = _rollout(sim.model, table, initial, rng, sim.config.gamma, record=True)
    return _assemble_logs(starts, out["rows"])[0]


def discounted_returns(logs: pd.DataFrame, metric: str, gamma: float = 1.0) -> pd.Series:
    """Per-session sum_t gamma^step r_t of a session log, indexed by session_id (sorted)."""
    weights = gamma ** logs["step"].to_numpy(np.float64)
    values = logs[_metric(metric)].to_numpy(np.float64) * weights
    return pd.Series(values, index=logs["session_id"].to_numpy()).groupby(level=0).sum()


# ================================================================================================
# writing
# ================================================================================================

def write_session_simulation(sim: SessionSimulation, out_dir) -> dict[str, pathlib.Path]:
    """Write ``logs.parquet``, ``actions.parquet``, ``policies/<name>.parquet`` and ``truth.json``
    (atomically, bytes reproducible from the config: `simulator.write_simulation_files`)."""
    return write_simulation_files(out_dir, sim.logs, sim.actions, sim.policies, sim.truth, LOG_SCHEMA, POLICY_SCHEMA)
