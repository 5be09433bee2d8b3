"""Live-stream log simulator with exact ground truth.

Why a simulator: an off-policy estimate can only be checked against a known answer. This module
draws logs that look like a live-stream feed (viewers arriving over a week, streams going on and off
air, a popularity-biased logging policy, heavy-tailed watch time and rare gifts) from a model whose
expected rewards are known in closed form for every (decision, slate action). The true value of any
policy on the simulated contexts and slates is then an exact sum, never a Monte-Carlo estimate.

The generative story, one step per function below:

1. ``_draw_viewers``: each viewer has an activity level (lognormal, > 0), a taste vector in a
   small latent space, a new-or-returning flag and a device.
2. ``_draw_streams``: each stream has a category (with a category embedding in the same latent
   space), a heavy-tailed (Pareto) popularity and an on-air schedule by hour of day.
3. ``_draw_rounds``: a decision is a viewer arriving at a time in the week starting 2026-01-05 UTC;
   prime time (19:00-22:59) is busier, and active viewers arrive more often.
4. ``_draw_slates``: a retrieval stage draws ``slate_size`` distinct streams among those on air at
   that hour, popularity-biased (Gumbel top-k, i.e. Plackett-Luce sampling without replacement).
5. ``_logging_probs``: the logging policy picks a stream from the slate by a softmax that favours
   popular streams, more so for active viewers and at prime time, mixed with epsilon-uniform
   exploration so every slate action has propensity >= epsilon / slate_size.
6. ``_outcome_params``: click (Bernoulli), watch seconds given a click (lognormal) and a gift given
   a click (rare Bernoulli times a lognormal amount). Activity, popularity and prime time raise
   both the logging policy's preference and the rewards, so the logs are confounded: a naive
   comparison of popular and unpopular streams overstates the effect of popularity.

With ``n_positions > 1`` every decision has that many rows: each position is an independent draw
from the same slate (so a stream may repeat across positions) with a softer, position-specific
temperature, and every reward is discounted by the position's examination probability
``1 / log2(position + 2)`` (a click model: a viewer who does not look at a slot cannot click it).

Everything is vectorised NumPy driven by one ``np.random.default_rng(seed)``: loops run over hours
of the day, positions or policies, never over rounds.
"""
from __future__ import annotations

import io
import math
import pathlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__
from .errors import InputError, Problem, raise_if_any
from .io import write_atomic, write_json
from .schema import SUM_TO_ONE_TOL
from .validation import check_int_settings

METRICS = ("click", "watch_seconds", "gift_value")
#: Candidate policies written next to the logs (the built-in ``logging`` policy is only in truth).
CANDIDATE_POLICIES = ("better", "worse", "logging_replica", "greedy")
TRUTH_SCHEMA = "livegate.truth/1"

# --- world -------------------------------------------------------------------------------------
START = np.datetime64("2026-01-05T00:00:00", "us")   # a Monday, UTC
N_DAYS = 7
HOURS = 24
US_PER_HOUR = 3_600_000_000
#: Prime time is 19:00-22:59 UTC: more viewers, more streams, more popularity bias, longer watching.
PRIME_HOURS = (19, 20, 21, 22)
#: Relative arrival rate by hour of day: quiet nights, a daytime plateau, a prime-time peak.
HOUR_WEIGHTS = np.array([1.0, 0.7, 0.4, 0.3, 0.3, 0.3, 0.4, 0.6, 0.8, 0.9, 1.0, 1.0,
                         1.1, 1.0, 1.0, 1.0, 1.1, 1.3, 1.7, 3.0, 3.2, 3.2, 3.0, 1.6])
DEVICES = ("android", "ios", "web")
DEVICE_SHARES = (0.55, 0.30, 0.15)
LATENT_DIM = 4
NEW_VIEWER_SHARE = 0.2
ACTIVITY_SIGMA = 0.6             # activity = exp(N(0, 0.6^2)): mean 1.2, a long right tail
POPULARITY_ALPHA = 1.5           # Pareto(1.5) popularity on [1, inf): heavy tail, infinite variance
#: log(popularity) of a Pareto(alpha) with scale 1 is Exponential(alpha); centring it by its mean
#: makes "average popularity" the zero point of every linear predictor below.
LOG_POP_MEAN = 1.0 / POPULARITY_ALPHA
SHOW_HOURS = (3, 9)              # a stream is on air for 3..8 consecutive hours a day
RETRIEVAL_POP_EXPONENT = 0.8     # retrieval samples streams with weight popularity^0.8

# --- logging policy ----------------------------------------------------------------------------
EPSILON = 0.1                    # epsilon-uniform exploration over the slate
#: Popularity coefficient of the logging softmax: base + per unit of activity + at prime time.
LOG_POP_BASE, LOG_POP_ACTIVITY, LOG_POP_PRIME = 0.4, 0.6, 0.3
LOG_AFFINITY = 0.25              # a weak personalisation term, so that logging is not popularity only
POSITION_TEMPERATURE_STEP = 0.5  # position p samples at temperature 1 + 0.5 p: lower slots explore more

# --- outcome model (coefficients of linear predictors) -----------------------------------------
# Each predictor uses: affinity (taste . category embedding, ~unit variance), centred log
# popularity, log activity, prime time, new viewer and device. Activity, popularity and prime time
# all push rewards up: the same variables drive the logging policy, which is the confounding.
CLICK = dict(intercept=-2.6, affinity=0.6, popularity=0.25, activity=0.3, prime=0.2, new=-0.2)
CLICK_DEVICE = np.array([0.0, 0.1, -0.2])           # android, ios, web
WATCH = dict(intercept=3.6, affinity=0.8, popularity=0.3, activity=0.5, prime=0.3, new=-0.3)
WATCH_SIGMA = 1.0                # lognormal watch seconds given a click: E = exp(mu + sigma^2 / 2)
GIFT = dict(intercept=-5.8, affinity=0.3, popularity=0.4, activity=0.6, prime=0.3, new=-0.5)
GIFT_AMOUNT = dict(intercept=1.0, activity=0.3)
GIFT_SIGMA = 1.2

# --- candidate policies ------------------------------------------------------------------------
BETTER_SHARPNESS = 2.0           # better: pi proportional to E[watch]^2 on the slate
WORSE_SHARPNESS = 1.0            # worse: pi proportional to 1 / E[watch] on the slate
GREEDY_MASS = 0.99               # greedy: 0.99 on the best taste match, the rest spread uniformly


@dataclass(frozen=True)
class SimulationConfig:
    """Size and seed of a simulation. ``n_users`` defaults to ``max(100, n_rounds // 20)``."""

    n_rounds: int = 50_000
    n_streams: int = 200
    n_categories: int = 12
    slate_size: int = 8
    n_positions: int = 1
    n_users: int | None = None
    seed: int = 0

    @property
    def resolved_n_users(self) -> int:
        return self.n_users if self.n_users is not None else max(100, self.n_rounds // 20)

    @property
    def n_rows(self) -> int:
        return self.n_rounds * self.n_positions


@dataclass(frozen=True)
class World:
    """The latent state behind the logs, kept so that fresh outcomes can be drawn later.

    Per viewer: ``activity``, ``taste`` (n_users, LATENT_DIM), ``is_new``, ``device`` (index into
    DEVICES), ``affinity`` (n_users, n_categories: taste . category embedding). Per stream:
    ``category``, ``popularity``, ``on_air`` (n_streams, 24). Per decision: ``round_user``,
    ``round_hour``. Per log row: ``logging_probs`` (n_rows, slate_size), the logging policy's exact
    distribution over the row's slate.
    """

    activity: np.ndarray
    taste: np.ndarray
    is_new: np.ndarray
    device: np.ndarray
    category_embedding: np.ndarray
    affinity: np.ndarray
    category: np.ndarray
    popularity: np.ndarray
    on_air: np.ndarray
    round_user: np.ndarray
    round_hour: np.ndarray
    logging_probs: np.ndarray

    def row_user(self, n_positions: int) -> np.ndarray:
        return np.repeat(self.round_user, n_positions)

    def row_hour(self, n_positions: int) -> np.ndarray:
        return np.repeat(self.round_hour, n_positions)


@dataclass
class Simulation:
    """Simulated logs, candidate policies and their exact values.

    Log rows are ordered by decision (chronologically) then position: row ``r`` is decision
    ``r // n_positions``, position ``r % n_positions``. ``slates[r]`` lists that row's slate in
    ascending stream id, and ``expected[metric][r, j]`` is E[metric | context of row r, action
    slates[r, j], position of row r]. ``world`` holds the latent state (viewers, streams, schedule,
    logging probabilities) that ``sample_outcomes`` and ``on_policy_se`` need.
    """

    config: SimulationConfig
    logs: pd.DataFrame
    policies: dict[str, pd.DataFrame]
    expected: dict[str, np.ndarray]
    slates: np.ndarray
    actions: pd.DataFrame
    truth: dict
    world: World | None = field(default=None, repr=False)


# ================================================================================================
# configuration
# ================================================================================================

def _validate(config: SimulationConfig) -> None:
    problems = []

    problems += check_int_settings("simulation config", {
        "n_rounds": (config.n_rounds, 1), "n_streams": (config.n_streams, 1), "n_categories": (config.n_categories, 1),
        "slate_size": (config.slate_size, 1), "n_positions": (config.n_positions, 1), "seed": (config.seed, 0)})
    if config.n_users is not None:
        problems += check_int_settings("simulation config", {"n_users": (config.n_users, 1)})
    if not problems and config.n_streams < config.slate_size:
        problems.append(Problem("simulation config", f"n_streams ({config.n_streams}) is smaller than "
                                f"slate_size ({config.slate_size}): a slate needs distinct streams",
                                column="n_streams", fix="raise n_streams or lower slate_size"))
    raise_if_any(problems)


# ================================================================================================
# generative model
# ================================================================================================

def _draw_viewers(rng: np.random.Generator, n_users: int, category_embedding: np.ndarray) -> dict:
    """Viewers: activity (how much they watch and how often they come), taste, new flag, device."""
    activity = np.exp(ACTIVITY_SIGMA * rng.standard_normal(n_users))
    # taste components with variance 1/D and unit-variance embeddings give unit-variance affinity
    taste = rng.standard_normal((n_users, LATENT_DIM)) / math.sqrt(LATENT_DIM)
    is_new = rng.random(n_users) < NEW_VIEWER_SHARE
    device = rng.choice(len(DEVICES), size=n_users, p=np.array(DEVICE_SHARES))
    return dict(activity=activity, taste=taste, is_new=is_new, device=device,
                affinity=taste @ category_embedding.T)


def _draw_streams(rng: np.random.Generator, config: SimulationConfig) -> dict:
    """Streams: a category, a Pareto popularity, and the hours of the day during which they are live.

    A stream airs for a few consecutive hours starting at an hour drawn like the audience (a bit
    earlier, so shows cover prime time), hence the on-air set changes over the day. Hours with fewer
    than ``slate_size`` live streams get randomly chosen extra streams so that every slate can be
    filled with distinct on-air streams.
    """
    n, k = config.n_streams, config.slate_size
    category_embedding = rng.standard_normal((config.n_categories, LATENT_DIM))
    category = rng.integers(0, config.n_categories, size=n)
    popularity = 1.0 + rng.pareto(POPULARITY_ALPHA, size=n)
    start_weights = np.roll(HOUR_WEIGHTS, -2)
    start = rng.choice(HOURS, size=n, p=start_weights / start_weights.sum())
    duration = rng.integers(*SHOW_HOURS, size=n)
    on_air = (np.arange(HOURS)[None, :] - start[:, None]) % HOURS < duration[:, None]
    for hour in range(HOURS):  # 24 iterations: top up thin hours
        deficit = k - int(on_air[:, hour].sum())
        if deficit > 0:
            off = np.flatnonzero(~on_air[:, hour])
            on_air[rng.choice(off, size=deficit, replace=False), hour] = True
    return dict(category_embedding=category_embedding, category=category, popularity=popularity,
                on_air=on_air)


def _draw_rounds(rng: np.random.Generator, n_rounds: int, activity: np.ndarray) -> dict:
    """Decisions: arrival times over the week (prime time busier), and who arrives.

    Decisions are numbered in time order. Viewers arrive in proportion to their activity, so active
    viewers contribute more decisions, as they do in a real feed.
    """
    day = rng.integers(0, N_DAYS, size=n_rounds)
    hour = rng.choice(HOURS, size=n_rounds, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    offset = rng.integers(0, US_PER_HOUR, size=n_rounds)
    micros = (day * HOURS + hour) * US_PER_HOUR + offset
    order = np.argsort(micros, kind="stable")
    user = rng.choice(activity.size, size=n_rounds, p=activity / activity.sum())
    return dict(micros=micros[order], hour=hour[order], user=user)


def _draw_slates(rng: np.random.Generator, round_hour: np.ndarray, on_air: np.ndarray,
                 popularity: np.ndarray, slate_size: int) -> np.ndarray:
    """Retrieval: ``slate_size`` distinct on-air streams per decision, popularity-biased.

    Adding Gumbel noise to log-weights and keeping the top k samples k items without replacement
    with probabilities proportional to the weights (Plackett-Luce). Decisions are grouped by hour so
    each group only scores the streams on air then. Slates are returned sorted by stream id: the
    retrieval order carries no information the logging policy uses, and sorted rows make joining a
    policy onto the slates a single binary search.
    """
    log_weight = RETRIEVAL_POP_EXPONENT * np.log(popularity)
    slates = np.empty((round_hour.size, slate_size), dtype=np.int64)
    for hour in range(HOURS):  # 24 iterations, each vectorised over that hour's decisions
        rows = np.flatnonzero(round_hour == hour)
        if rows.size == 0:
            continue
        live = np.flatnonzero(on_air[:, hour])
        scores = log_weight[live][None, :] + rng.gumbel(size=(rows.size, live.size))
        top = np.argpartition(-scores, slate_size - 1, axis=1)[:, :slate_size]
        slates[rows] = np.sort(live[top], axis=1)
    return slates


def _features(world: World, users: np.ndarray, hours: np.ndarray, actions: np.ndarray) -> dict:
    """Broadcast the linear-predictor inputs of (viewer, hour, stream) triples to a common shape."""
    return dict(
        affinity=world.affinity[users, world.category[actions]],
        popularity=np.log(world.popularity[actions]) - LOG_POP_MEAN,
        activity=np.log(world.activity[users]),
        prime=np.isin(hours, PRIME_HOURS).astype(np.float64),
        new=world.is_new[users].astype(np.float64),
        device=world.device[users],
    )


def _linear(coef: dict, feats: dict) -> np.ndarray:
    out = coef["intercept"]
    for name, value in coef.items():
        if name != "intercept":
            out = out + value * feats[name]
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))   # overflow-free logistic


def _outcome_params(world: World, users, hours, actions) -> dict:
    """Parameters of the reward distributions at position 0 (before the examination discount).

    ``p_click``: click probability; ``mu_watch``: log-scale location of watch seconds given a click
    (scale WATCH_SIGMA); ``p_gift``: gift probability given a click; ``mu_gift``: log-scale location
    of the gift amount (scale GIFT_SIGMA).
    """
    f = _features(world, users, hours, actions)
    return dict(
        p_click=_sigmoid(_linear(CLICK, f) + CLICK_DEVICE[f["device"]]),
        mu_watch=_linear(WATCH, f),
        p_gift=_sigmoid(_linear(GIFT, f)),
        mu_gift=GIFT_AMOUNT["intercept"] + GIFT_AMOUNT["activity"] * f["activity"],
    )


def _moments(params: dict, power: int) -> dict[str, np.ndarray]:
    """Closed-form E[reward^power] at position 0, for power 1 (mean) or 2 (second moment).

    A click is Bernoulli, so E[click^k] = p_click. Watch time and gift amount are lognormal given a
    click, and E[lognormal(mu, s)^k] = exp(k mu + k^2 s^2 / 2); without a click both are 0.
    """
    k = power
    click = params["p_click"]
    watch = click * np.exp(k * params["mu_watch"] + 0.5 * k * k * WATCH_SIGMA ** 2)
    gift = click * params["p_gift"] * np.exp(k * params["mu_gift"] + 0.5 * k * k * GIFT_SIGMA ** 2)
    return {"click": click, "watch_seconds": watch, "gift_value": gift}


def _slot_moments(world: World, slates_by_decision: np.ndarray, n_positions: int, power: int) -> dict:
    """E[reward^power | row, slate action] for every log row and slate slot, shape (n_rows, slate_size).

    The parameters do not depend on the position; the examination probability multiplies every
    moment (a reward is non-zero only if the slot is examined and clicked).
    """
    params = _outcome_params(world, world.round_user[:, None], world.round_hour[:, None], slates_by_decision)
    moments = _moments(params, power)
    del params
    exam = np.tile(position_examination(n_positions), slates_by_decision.shape[0])[:, None]
    return {m: np.repeat(v, n_positions, axis=0) * exam for m, v in moments.items()}


def _sample_rewards(rng: np.random.Generator, params: dict, examination: np.ndarray) -> dict:
    n = examination.size
    click = rng.random(n) < examination * params["p_click"]
    watch = np.exp(params["mu_watch"] + WATCH_SIGMA * rng.standard_normal(n))
    gift = (rng.random(n) < params["p_gift"]) * np.exp(params["mu_gift"] + GIFT_SIGMA * rng.standard_normal(n))
    return {"click": click.astype(np.int64),
            "watch_seconds": np.where(click, watch, 0.0),
            "gift_value": np.where(click, gift, 0.0)}


def position_examination(n_positions: int) -> np.ndarray:
    """Probability that a viewer looks at each position: 1 / log2(position + 2) (DCG-style)."""
    return 1.0 / np.log2(np.arange(n_positions) + 2.0)


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Over the last axis."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _logging_probs(world: World, slates: np.ndarray, n_positions: int) -> np.ndarray:
    """The logging policy's exact distribution over each row's slate, shape (n_rows, slate_size).

    A softmax over popularity whose weight grows with the viewer's activity and at prime time (the
    source of confounding), plus a weak taste term; position p uses temperature 1 + 0.5 p. Mixing
    with epsilon-uniform exploration bounds every propensity below by EPSILON / slate_size.
    """
    users = world.round_user[:, None]
    hours = world.round_hour[:, None]
    f = _features(world, users, hours, slates)
    pop_weight = LOG_POP_BASE + LOG_POP_ACTIVITY * world.activity[users] + LOG_POP_PRIME * f["prime"]
    logits = pop_weight * f["popularity"] + LOG_AFFINITY * f["affinity"]
    k = slates.shape[1]
    per_position = [(1.0 - EPSILON) * _softmax(logits / (1.0 + POSITION_TEMPERATURE_STEP * p)) + EPSILON / k
                    for p in range(n_positions)]
    return np.stack(per_position, axis=1).reshape(-1, k)


def _draw_slots(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs`` (inverse CDF); never returns a zero-probability slot."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cdf[:, -1]
    slot = (cdf <= u[:, None]).sum(axis=1)
    # u * total can round up to total; fall back to the last slot with positive probability
    overflow = slot >= probs.shape[1]
    if overflow.any():
        last_positive = probs.shape[1] - 1 - np.argmax(probs[overflow, ::-1] > 0, axis=1)
        slot[overflow] = last_positive
    return slot


# ================================================================================================
# policies
# ================================================================================================

def _candidate_probs(world: World, slates: np.ndarray, expected: dict, n_positions: int) -> dict:
    """Dense (n_rows, slate_size) distributions of the candidate policies.

    better / worse: proportional to E[watch]^2 / E[watch]^-1 on the slate: they know the true watch
        model, so they are clearly better / worse than logging (about +30% / -90% watch time at
        the defaults) while keeping enough overlap with logging for importance weighting.
    logging_replica: the logging probabilities, copied; its value equals logging's exactly.
    greedy: 0.99 on the slate's best taste match (ignores popularity, unlike logging), the rest
        uniform; near-deterministic on actions logging rarely favours, so importance weights are
        large and the effective sample size small.
    """
    log_watch = np.log(expected["watch_seconds"])
    k = slates.shape[1]
    affinity = world.affinity[world.row_user(n_positions)[:, None], world.category[slates]]
    best = np.argmax(affinity, axis=1)
    greedy = np.full(slates.shape, (1.0 - GREEDY_MASS) / (k - 1) if k > 1 else 0.0)
    greedy[np.arange(slates.shape[0]), best] = GREEDY_MASS if k > 1 else 1.0
    return {
        "better": _softmax(BETTER_SHARPNESS * log_watch),
        "worse": _softmax(-WORSE_SHARPNESS * log_watch),
        "logging_replica": world.logging_probs.copy(),
        "greedy": greedy,
    }


def _to_long(probs: np.ndarray, slates: np.ndarray, n_positions: int) -> pd.DataFrame:
    """Dense per-row distributions -> the contract's long format, keeping only prob > 0."""
    n_rows, k = probs.shape
    row = np.repeat(np.arange(n_rows, dtype=np.int64), k)
    keep = probs.ravel() > 0
    row = row[keep]
    columns = {"decision_id": row // n_positions}
    if n_positions > 1:
        columns["position"] = row % n_positions
    columns["action"] = slates.ravel()[keep]
    columns["prob"] = probs.ravel()[keep]
    return pd.DataFrame(columns)


def _require_world(sim: Simulation) -> None:
    if sim.world is None:
        raise InputError("this Simulation carries no world state; build it with simulate()", source="simulation")


def policy_matrix(sim: Simulation, policy: pd.DataFrame | str) -> np.ndarray:
    """A policy as a dense (n_rows, slate_size) matrix aligned with ``sim.slates``.

    Accepts a long-format frame (decision_id, action, prob, optional position; without a position
    column in multi-position logs the same distribution applies to every position), the name of one
    of ``sim.policies``, or ``"logging"``. The join is vectorised: slates are sorted by stream id, so
    the key ``row * n_streams + action`` is sorted over the flattened slates and a binary search
    finds each listed action's slot. Raises InputError if a decision or position is unknown, an
    action with positive probability is not on the slate, or a row's probabilities do not sum to 1.
    """
    if isinstance(policy, str):
        if policy == "logging":
            _require_world(sim)
            return sim.world.logging_probs
        if policy not in sim.policies:
            raise InputError(f"unknown policy '{policy}'; known: logging, {', '.join(sorted(sim.policies))}",
                             source="policy")
        policy = sim.policies[policy]
    cfg = sim.config
    n_rows, k = sim.slates.shape
    missing = [c for c in ("decision_id", "action", "prob") if c not in policy.columns]
    if missing:
        raise InputError(Problem("policy", f"missing column(s) {', '.join(missing)}",
                                 fix="give decision_id, action and prob columns"))
    problems = []

    def column(name: str, dtype) -> np.ndarray:
        try:
            return policy[name].to_numpy(dtype=dtype)
        except (TypeError, ValueError):
            problems.append(Problem("policy", f"must be {np.dtype(dtype).name} without missing values "
                                    "(the simulator's ids are integers)", name))
            return np.zeros(len(policy), dtype=dtype)

    decision = column("decision_id", np.int64)
    action = column("action", np.int64)
    prob = column("prob", np.float64)
    position = column("position", np.int64) if "position" in policy.columns else None
    bad = (decision < 0) | (decision >= cfg.n_rounds)
    if bad.any():
        problems.append(Problem("policy", "refer to decisions not in the simulation", "decision_id", int(bad.sum())))
    bad_prob = ~np.isfinite(prob) | (prob < 0) | (prob > 1)
    if bad_prob.any():
        problems.append(Problem("policy", "have a probability outside [0, 1]", "prob", int(bad_prob.sum())))
    if position is not None:
        bad = (position < 0) | (position >= cfg.n_positions)
        if bad.any():
            problems.append(Problem("policy", "have a position outside the logs' positions", "position",
                                    int(bad.sum())))
    else:
        # one distribution per decision, applied to each of its positions
        decision = np.repeat(decision, cfg.n_positions)
        action = np.repeat(action, cfg.n_positions)
        prob = np.repeat(prob, cfg.n_positions)
        position = np.tile(np.arange(cfg.n_positions), policy.shape[0])
    raise_if_any(problems)
    row = decision * cfg.n_positions + position
    slate_keys = (np.arange(n_rows, dtype=np.int64)[:, None] * cfg.n_streams + sim.slates).ravel()
    keys = row * cfg.n_streams + action
    at = np.minimum(np.searchsorted(slate_keys, keys), slate_keys.size - 1)
    found = slate_keys[at] == keys
    off_slate = ~found & (prob > 0)
    if off_slate.any():
        raise InputError(Problem("policy", "give positive probability to a stream that is not on the "
                                 "decision's slate", "action", int(off_slate.sum()),
                                 fix="only list actions from the decision's slate"))
    dense = np.bincount(at[found], weights=prob[found], minlength=n_rows * k).reshape(n_rows, k)
    bad_sum = np.abs(dense.sum(axis=1) - 1.0) > SUM_TO_ONE_TOL
    if bad_sum.any():
        raise InputError(Problem("policy", "(decision, position) rows have probabilities that do not sum "
                                 "to 1 (or are missing)", "prob", int(bad_sum.sum()),
                                 fix="list every decision and normalise its probabilities"))
    return dense


def _value(sim: Simulation, probs: np.ndarray, metric: str) -> float:
    if metric not in sim.expected:
        raise InputError(f"unknown metric '{metric}'; known: {', '.join(METRICS)}", source="metric")
    return float(np.mean(np.sum(probs * sim.expected[metric], axis=1)))


def policy_value(sim: Simulation, policy: pd.DataFrame | str, metric: str) -> float:
    """Exact value of ``policy`` on the simulated contexts and slates.

    The mean over log rows of sum_a pi(a | x) E[metric | x, a]: conditional on the drawn contexts and
    slates, with no sampling noise. ``policy`` is a long-format frame or a policy name (see
    ``policy_matrix``).
    """
    return _value(sim, policy_matrix(sim, policy), metric)


def on_policy_se(sim: Simulation, policy: pd.DataFrame | str, metric: str) -> float:
    """Exact standard error of the mean reward of an on-policy sample on the simulated contexts.

    An on-policy sample (the logs for ``logging``, ``sample_outcomes`` for a candidate) draws each
    row's action and reward independently given the row's context and slate, so the variance of its
    mean is sum_r Var(r_r | x_r) / n^2 with Var(r | x) = sum_a pi(a|x) E[r^2|x,a] - (sum_a pi(a|x)
    E[r|x,a])^2. Unlike the sample standard deviation, this is reliable for rare, heavy-tailed
    rewards such as gifts, whose few observed values understate the tail.
    """
    _require_world(sim)
    probs = policy_matrix(sim, policy)
    if metric not in sim.expected:
        raise InputError(f"unknown metric '{metric}'; known: {', '.join(METRICS)}", source="metric")
    p = sim.config.n_positions
    second = _slot_moments(sim.world, sim.slates[::p], p, power=2)[metric]
    mean = np.sum(probs * sim.expected[metric], axis=1)
    variance = np.sum(probs * second, axis=1) - mean ** 2
    return float(math.sqrt(max(float(variance.sum()), 0.0)) / probs.shape[0])


# ================================================================================================
# assembling the outputs
# ================================================================================================

LOG_SCHEMA = pa.schema([
    ("decision_id", pa.int64()), ("position", pa.int64()), ("timestamp", pa.timestamp("us", tz="UTC")),
    ("user_id", pa.int64()), ("action", pa.int64()), ("propensity", pa.float64()),
    ("category_propensity", pa.float64()),
    ("click", pa.int64()), ("watch_seconds", pa.float64()), ("gift_value", pa.float64()),
    ("x_activity", pa.float64()), ("x_hour", pa.int64()), ("x_prime_time", pa.bool_()),
    ("x_is_new", pa.bool_()), ("x_device", pa.string()),
    *[(f"x_taste_{i}", pa.float64()) for i in range(LATENT_DIM)],
    ("a_category", pa.int64()), ("a_popularity", pa.float64()),
])


def _shown_columns(world: World, slates: np.ndarray, probs: np.ndarray, slot: np.ndarray) -> dict:
    """Columns that depend on the shown stream: action, its propensity and category propensity."""
    rows = np.arange(slot.size)
    action = slates[rows, slot]
    slate_category = world.category[slates]
    same_category = slate_category == world.category[action][:, None]
    return {
        "action": action,
        "propensity": probs[rows, slot],
        # the policy's probability of showing any stream of the shown stream's category (MIPS)
        "category_propensity": np.where(same_category, probs, 0.0).sum(axis=1),
        "a_category": world.category[action],
        "a_popularity": world.popularity[action],
    }


def _draw_outcomes(rng: np.random.Generator, world: World, slates: np.ndarray, probs: np.ndarray,
                   n_positions: int) -> dict:
    """Draw one slot per row from ``probs`` and sample its rewards; return the shown-stream columns."""
    slot = _draw_slots(rng, probs)
    columns = _shown_columns(world, slates, probs, slot)
    params = _outcome_params(world, world.row_user(n_positions), world.row_hour(n_positions), columns["action"])
    exam = np.tile(position_examination(n_positions), world.round_user.size)
    columns.update(_sample_rewards(rng, params, exam))
    return columns


def simulate(config: SimulationConfig = SimulationConfig()) -> Simulation:
    """Simulate logs, candidate policies and the exact value of every policy (see module docstring)."""
    _validate(config)
    rng = np.random.default_rng(config.seed)
    n, p = config.n_rounds, config.n_positions
    streams = _draw_streams(rng, config)
    viewers = _draw_viewers(rng, config.resolved_n_users, streams["category_embedding"])
    rounds = _draw_rounds(rng, n, viewers["activity"])
    slates_by_decision = _draw_slates(rng, rounds["hour"], streams["on_air"], streams["popularity"],
                                      config.slate_size)
    # the logging policy is a function of the world, so the world is built first without it
    world = World(round_user=rounds["user"], round_hour=rounds["hour"], logging_probs=np.empty((0, 0)),
                  **viewers, **streams)
    world = replace(world, logging_probs=_logging_probs(world, slates_by_decision, p))
    slates = np.repeat(slates_by_decision, p, axis=0)

    # exact expectations for every (row, slate action): position-0 parameters times the discount
    expected = _slot_moments(world, slates_by_decision, p, power=1)

    shown = _draw_outcomes(rng, world, slates, world.logging_probs, p)
    logs = _assemble_logs(config, world, rounds["micros"], shown)

    dense = _candidate_probs(world, slates, expected, p)
    sim = Simulation(config=config, logs=logs, policies={}, expected=expected, slates=slates,
                     actions=pd.DataFrame({"action": np.arange(config.n_streams, dtype=np.int64),
                                           "category": world.category.astype(np.int64),
                                           "popularity": world.popularity}),
                     truth={}, world=world)
    values = {"logging": {m: _value(sim, world.logging_probs, m) for m in METRICS}}
    for name in CANDIDATE_POLICIES:
        values[name] = {m: _value(sim, dense[name], m) for m in METRICS}
        sim.policies[name] = _to_long(dense[name], slates, p)
    del dense
    sim.truth = {
        "schema": TRUTH_SCHEMA,
        "seed": config.seed,
        "config": asdict(config),
        "n_users": config.resolved_n_users,
        "n_rows": config.n_rows,
        "generator": f"livegate {__version__} datasets.simulator",
        "definition": "exact policy values: mean over log rows of sum over slate actions of "
                      "pi(a|x) E[reward|x,a], conditional on the simulated contexts and slates",
        "policies": values,
    }
    return sim


def _assemble_logs(config: SimulationConfig, world: World, micros: np.ndarray, shown: dict) -> pd.DataFrame:
    p = config.n_positions
    user = world.row_user(p)
    hour = world.row_hour(p)
    taste = world.taste[user]
    devices = np.array(DEVICES, dtype=object)
    columns = {
        "decision_id": np.repeat(np.arange(config.n_rounds, dtype=np.int64), p),
        "position": np.tile(np.arange(p, dtype=np.int64), config.n_rounds),
        "timestamp": pd.DatetimeIndex(START + np.repeat(micros, p).astype("timedelta64[us]")).tz_localize("UTC"),
        "user_id": user.astype(np.int64),
        "action": shown["action"],
        "propensity": shown["propensity"],
        "category_propensity": shown["category_propensity"],
        "click": shown["click"],
        "watch_seconds": shown["watch_seconds"],
        "gift_value": shown["gift_value"],
        "x_activity": world.activity[user],
        "x_hour": hour.astype(np.int64),
        "x_prime_time": np.isin(hour, PRIME_HOURS),
        "x_is_new": world.is_new[user],
        "x_device": pd.array(devices[world.device[user]], dtype="str"),
        **{f"x_taste_{i}": taste[:, i] for i in range(LATENT_DIM)},
        "a_category": shown["a_category"].astype(np.int64),
        "a_popularity": shown["a_popularity"],
    }
    return pd.DataFrame(columns)


def sample_outcomes(sim: Simulation, policy: pd.DataFrame | str, seed: int) -> pd.DataFrame:
    """An on-policy sample: the logs as if ``policy`` had been the logging policy.

    Same decisions, contexts and slates as ``sim.logs``; the action of every row is drawn from
    ``policy`` and its rewards from the simulator's outcome model, with ``propensity`` and
    ``category_propensity`` those of ``policy``. The mean reward of the result is an unbiased
    estimate of ``policy_value(sim, policy, metric)``.
    """
    _require_world(sim)
    probs = policy_matrix(sim, policy)
    rng = np.random.default_rng(seed)
    shown = _draw_outcomes(rng, sim.world, sim.slates, probs, sim.config.n_positions)
    out = sim.logs.copy()
    for name, values in shown.items():
        out[name] = values
    return out


def _parquet_bytes(frame: pd.DataFrame, schema: pa.Schema | None = None) -> bytes:
    """Parquet bytes of a frame; identical input gives identical bytes (no timestamps are embedded)."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


#: ``candidates.parquet``: each decision's slate, the streams on air that the logging policy chose from
CANDIDATE_SCHEMA = pa.schema([("decision_id", pa.int64()), ("action", pa.int64())])


def candidate_streams(sim: Simulation) -> pd.DataFrame:
    """Each decision's slate (the on-air streams retrieval offered; every policy of the simulation
    chooses among them) in long form, one row per (decision_id, action), in decision then stream
    order: the ``--candidates`` input of ``livegate learn`` and ``livegate replay``."""
    p, k = sim.config.n_positions, sim.slates.shape[1]
    return pd.DataFrame({"decision_id": np.repeat(np.arange(sim.config.n_rounds, dtype=np.int64), k),
                         "action": sim.slates[::p].ravel().astype(np.int64)})


def write_simulation(sim: Simulation, out_dir) -> dict[str, pathlib.Path]:
    """Write ``logs.parquet``, ``actions.parquet``, ``policies/<name>.parquet`` and ``truth.json``
    (see `write_simulation_files`), and ``candidates.parquet``: each decision's slate
    (`candidate_streams`)."""
    paths = write_simulation_files(out_dir, sim.logs, sim.actions, sim.policies, sim.truth, LOG_SCHEMA)
    paths["candidates"] = write_atomic(pathlib.Path(out_dir) / "candidates.parquet",
                                       _parquet_bytes(candidate_streams(sim), CANDIDATE_SCHEMA))
    return paths


def write_simulation_files(out_dir, logs: pd.DataFrame, actions: pd.DataFrame, policies: dict[str, pd.DataFrame],
                           truth: dict, log_schema: pa.Schema, policy_schema: pa.Schema | None = None
                           ) -> dict[str, pathlib.Path]:
    """Write a simulation's ``logs.parquet``, ``actions.parquet``, ``policies/<name>.parquet`` and
    ``truth.json`` (the single-decision and the session simulator alike).

    Every file is written atomically (temporary file, then rename) and the bytes depend only on the
    simulation, so the same seed and config reproduce the same files. Returns the paths by key:
    ``logs``, ``actions``, ``truth`` and ``policies/<name>``.
    """
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(Problem(str(out), "exists and is not a directory", fix="choose a directory for --out"))
    paths = {"logs": write_atomic(out / "logs.parquet", _parquet_bytes(logs, log_schema)),
             "actions": write_atomic(out / "actions.parquet", _parquet_bytes(actions))}
    for name, frame in policies.items():
        paths[f"policies/{name}"] = write_atomic(out / "policies" / f"{name}.parquet",
                                                 _parquet_bytes(frame, policy_schema))
    paths["truth"] = write_json(out / "truth.json", truth)
    return paths
