"""Replay of online bandit algorithms on logged data: `livegate replay`.

An online algorithm (epsilon-greedy, UCB1, Thompson sampling, LinUCB) changes as it learns, so no
fixed policy file describes it. Replay runs it through the logs instead (Li, Chu, Langford & Wang
2011, Algorithm 1): at each logged event the algorithm picks a stream; when it picks the logged one,
the event is *accepted*: its reward counts and the algorithm learns from it; otherwise the event is
skipped. On uniformly logged data the accepted events are distributed exactly as if the algorithm
had been live (about n / K of n events are accepted with K streams).

For non-uniform logging the match is thinned by rejection sampling (Dudik, Erhan, Langford & Li
2012, section 3): an event whose logged stream the algorithm picked is accepted with probability
p_min / p_t, with p_t its logged propensity and p_min the smallest propensity of the logs, so that
every stream's chance of acceptance is pi(a|x) p_min whatever the logging policy did. It is
unbiased for any logging policy with full support, at the price of accepting n p_min events in
expectation per unit of pi: the number of accepted events is reported, and is what the curves rest
on.

Algorithms update in batches, as production systems do: the algorithm's state is frozen while it
decides `batch_size` accepted events, then it learns from all of them at once. Within a batch every
event is decided with one vectorised call; the loop runs over batches.

Each algorithm is a small class with `reset(n_arms, n_features, rng)`, `select(X[, available]) ->
arms` (one arm per row of the context matrix X, drawn from its current policy, among the streams
`available` marks when the caller knows them, e.g. those on air) and `update(X, arms, rewards)`; any
object with these three methods can be replayed.

Intervals: each algorithm is replayed `runs` times, each run on a Poisson(1) bootstrap resample of
the events (kept in time order) with fresh random choices; the bands are the 2.5% and 97.5%
quantiles over runs, so they hold both the logs' sampling noise and the replay's own randomness.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from livegate.datasets.errors import InputError, Problem

SCHEMA = "livegate.replay/1"


# ================================================================================================
# algorithms: reset / select / update
# ================================================================================================

def _argmax_random_ties(values: np.ndarray, rng: np.random.Generator, available: np.ndarray | None = None) -> np.ndarray:
    """Row-wise argmax over the available streams (all when `available` is None), ties broken
    uniformly at random (a fresh algorithm's all-equal values must not always favour stream 0)."""
    if available is not None:
        values = np.where(available, values, -np.inf)
    noise = rng.random(values.shape)
    best = values >= values.max(axis=1, keepdims=True)
    return np.argmax(np.where(best, noise, -1.0), axis=1)


def _uniform_choice(n: int, k: int, rng: np.random.Generator, available: np.ndarray | None) -> np.ndarray:
    """A uniformly random stream per row, among the available ones."""
    if available is None:
        return rng.integers(0, k, n)
    return _argmax_random_ties(np.zeros((n, k)), rng, available)


class _ArmMeans:
    """Per-arm counts and reward sums, the state of the context-free algorithms."""

    def reset(self, n_arms: int, n_features: int, rng: np.random.Generator) -> None:
        self.count = np.zeros(n_arms)
        self.total = np.zeros(n_arms)
        self.total_sq = np.zeros(n_arms)
        self.rng = rng

    def update(self, X: np.ndarray, arms: np.ndarray, rewards: np.ndarray) -> None:
        k = len(self.count)
        self.count += np.bincount(arms, minlength=k)
        self.total += np.bincount(arms, weights=rewards, minlength=k)
        self.total_sq += np.bincount(arms, weights=rewards ** 2, minlength=k)

    @property
    def mean(self) -> np.ndarray:
        return np.divide(self.total, self.count, out=np.zeros_like(self.total), where=self.count > 0)


class EpsilonGreedy(_ArmMeans):
    """With probability epsilon a uniformly random stream, else the best empirical mean (Sutton &
    Barto 2018, section 2.3)."""

    def __init__(self, epsilon: float = 0.1):
        self.epsilon = epsilon

    def select(self, X: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
        n, k = len(X), len(self.count)
        greedy = _argmax_random_ties(np.broadcast_to(self.mean, (n, k)), self.rng, available)
        explore = self.rng.random(n) < self.epsilon
        return np.where(explore, _uniform_choice(n, k, self.rng, available), greedy)


class UCB1(_ArmMeans):
    """Upper confidence bound: the stream maximising mean + c sqrt(2 ln t / n_a), every stream once
    first (Auer, Cesa-Bianchi & Fischer 2002, UCB1). The guarantee assumes rewards in [0, 1]: `c`
    is the reward range for other rewards (e.g. ucb1:c=600 for watch seconds capped at 600)."""

    def __init__(self, c: float = 1.0):
        self.c = c

    def select(self, X: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
        t = max(self.count.sum(), 1.0)
        # an unplayed stream's index is infinite; kept finite (above any real index) so that masking works
        bonus = np.where(self.count > 0, self.c * np.sqrt(2.0 * np.log(t) / np.maximum(self.count, 1)), 1e300)
        return _argmax_random_ties(np.broadcast_to(self.mean + bonus, (len(X), len(self.count))), self.rng, available)


class ThompsonSampling(_ArmMeans):
    """Thompson sampling (Thompson 1933; Chapelle & Li 2011): each decision draws every stream's mean
    from its posterior and picks the largest draw. 0/1 rewards: Beta(1 + clicks, 1 + misses)
    posteriors (Agrawal & Goyal 2012); other rewards: a normal posterior N(mean, s^2 / (n + 1)) with the
    stream's sample variance s^2 (the pooled one until a stream has two rewards)."""

    def __init__(self):
        self.binary = True

    def update(self, X: np.ndarray, arms: np.ndarray, rewards: np.ndarray) -> None:
        self.binary = self.binary and bool(np.all((rewards == 0) | (rewards == 1)))
        super().update(X, arms, rewards)

    def select(self, X: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
        n, k = len(X), len(self.count)
        if self.binary:
            draws = self.rng.beta(1.0 + self.total, 1.0 + self.count - self.total, size=(n, k))
        else:
            mean = self.mean
            var = np.divide(self.total_sq, self.count, out=np.zeros(k), where=self.count > 0) - mean ** 2
            total = self.count.sum()
            pooled = (self.total_sq.sum() / total - (self.total.sum() / total) ** 2) if total > 1 else 1.0
            var = np.where(self.count >= 2, np.maximum(var, 1e-12), max(pooled, 1e-12))
            draws = mean + np.sqrt(var / (self.count + 1.0)) * self.rng.standard_normal((n, k))
        return np.argmax(draws if available is None else np.where(available, draws, -np.inf), axis=1)


class LinUCB:
    """LinUCB with disjoint linear models (Li, Chu, Langford & Schapire 2010, Algorithm 1): per stream
    a ridge regression theta_a = A_a^-1 b_a of the reward on the context, and the stream maximising
    theta_a'x + alpha sqrt(x' A_a^-1 x)."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def reset(self, n_arms: int, n_features: int, rng: np.random.Generator) -> None:
        self.A = np.broadcast_to(np.eye(n_features), (n_arms, n_features, n_features)).copy()
        self.A_inv = self.A.copy()
        self.b = np.zeros((n_arms, n_features))
        self.theta = np.zeros((n_arms, n_features))
        self.rng = rng

    def select(self, X: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
        mean = X @ self.theta.T                                            # (n, K)
        width = np.sqrt(np.maximum(np.einsum("nd,kde,ne->nk", X, self.A_inv, X), 0.0))
        return _argmax_random_ties(mean + self.alpha * width, self.rng, available)

    def update(self, X: np.ndarray, arms: np.ndarray, rewards: np.ndarray) -> None:
        touched = np.unique(arms)
        for a in touched:  # the streams played in this batch, each one small d x d solve
            Xa = X[arms == a]
            self.A[a] += Xa.T @ Xa
            self.b[a] += Xa.T @ rewards[arms == a]
        self.A_inv[touched] = np.linalg.inv(self.A[touched])
        self.theta[touched] = np.einsum("kde,ke->kd", self.A_inv[touched], self.b[touched])


class FixedPolicy:
    """A fixed distribution over the streams (not learning): replaying it must give its value, which
    makes it the check of the replay itself."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, dtype=np.float64)

    def reset(self, n_arms: int, n_features: int, rng: np.random.Generator) -> None:
        if len(self.probs) != n_arms:
            raise InputError(Problem("--algorithms", f"a fixed policy over {len(self.probs)} streams for logs with {n_arms}"))
        self.rng = rng
        self.cdf = np.cumsum(self.probs / self.probs.sum())

    def select(self, X: np.ndarray, available: np.ndarray | None = None) -> np.ndarray:
        if available is not None:  # its distribution restricted to the streams available there
            p = np.where(available, self.probs, 0.0)
            cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
            return np.minimum((self.rng.random(len(X))[:, None] > cdf).sum(axis=1), len(self.probs) - 1)
        return np.minimum(np.searchsorted(self.cdf, self.rng.random(len(X)), side="right"), len(self.cdf) - 1)

    def update(self, X, arms, rewards) -> None:
        pass


#: identifier -> (class, {parameter: (keyword, type)})
ALGORITHMS = {
    "eps-greedy": (EpsilonGreedy, {"epsilon": ("epsilon", float)}),
    "ucb1": (UCB1, {"c": ("c", float)}),
    "ts": (ThompsonSampling, {}),
    "linucb": (LinUCB, {"alpha": ("alpha", float)}),
}
_IDENT = re.compile(r"^(?P<name>[a-z0-9-]+)(?::(?P<params>.*))?$")


def parse_algorithms(text: str) -> dict[str, object]:
    """`eps-greedy:0.1,ucb1,ts,linucb:alpha=1` -> {identifier: algorithm}. A bare number after the
    colon is the algorithm's first parameter (eps-greedy:0.1)."""
    out: dict[str, object] = {}
    items = [t.strip() for t in re.split(r",(?![^:,]*=)(?=[a-z])", text) if t.strip()] if text else []
    for item in items:
        m = _IDENT.match(item)
        if not m or m.group("name") not in ALGORITHMS:
            raise InputError(Problem("--algorithms", f"unknown algorithm '{item}'",
                                     fix=f"choose from {', '.join(ALGORITHMS)}, e.g. eps-greedy:0.1,ucb1,ts,linucb:alpha=1"))
        cls, allowed = ALGORITHMS[m.group("name")]
        kwargs = {}
        for part in filter(None, (m.group("params") or "").split(",")):
            key, eq, raw = (s.strip() for s in part.partition("="))
            if not eq and allowed:  # eps-greedy:0.1
                key, raw = next(iter(allowed)), key
            if key not in allowed:
                raise InputError(Problem("--algorithms", f"'{item}': cannot read parameter '{part}'",
                                         fix=f"{m.group('name')} takes {', '.join(allowed) or 'no parameters'}"))
            try:
                value = float(raw)
            except ValueError:
                raise InputError(Problem("--algorithms", f"'{item}': '{raw}' is not a number")) from None
            if not np.isfinite(value) or value < 0 or (key == "epsilon" and value > 1):
                raise InputError(Problem("--algorithms", f"'{item}': {key} is out of range"))
            kwargs[allowed[key][0]] = value
        if item in out:
            raise InputError(Problem("--algorithms", f"'{item}' is given twice"))
        out[item] = cls(**kwargs)
    if not out:
        raise InputError(Problem("--algorithms", "names no algorithm", fix="e.g. --algorithms eps-greedy:0.1,ucb1,ts"))
    return out


# ================================================================================================
# the replay
# ================================================================================================

@dataclass
class ReplayRun:
    """One replay: the event index (in the replayed order) and reward of every accepted event."""

    accepted_event: np.ndarray
    reward: np.ndarray


def replay(algorithm, X: np.ndarray, action: np.ndarray, reward: np.ndarray, propensity: np.ndarray, n_arms: int,
           *, batch_size: int = 1, rng: np.random.Generator, p_min: float | None = None,
           available: np.ndarray | None = None) -> ReplayRun:
    """Replay `algorithm` over the events in the given order (rows of X, action codes, rewards,
    logged propensities). An event is accepted when the algorithm picks its logged stream and a
    uniform draw falls below p_min / p_t (Dudik et al. 2012; always, on uniform logs). The algorithm
    is updated after every `batch_size` accepted events. `available` (n, n_arms) marks the streams
    each event could show (e.g. those on air): the algorithm chooses among them."""
    import inspect

    masked = available is not None and "available" in inspect.signature(algorithm.select).parameters
    n = len(action)
    p_min = float(propensity.min()) if p_min is None else p_min
    keep_prob = np.minimum(p_min / propensity, 1.0)
    algorithm.reset(n_arms, X.shape[1], rng)
    accepted_idx, accepted_reward = [], []
    # events examined per call: enough for a batch at the expected acceptance rate, bounded for memory
    rate = max(float(np.mean(keep_prob)) / n_arms, 1e-6)
    chunk = int(min(max(4 * batch_size / rate, 64), 200_000))
    pending: list[np.ndarray] = []   # accepted events of the batch being filled: the state is frozen
    n_pending = pos = 0
    while pos < n:
        hi = min(pos + chunk, n)
        picked = algorithm.select(X[pos:hi], available[pos:hi]) if masked else algorithm.select(X[pos:hi])
        hit = (picked == action[pos:hi]) & (rng.random(hi - pos) < keep_prob[pos:hi])
        where = np.flatnonzero(hit)
        need = batch_size - n_pending
        if len(where) >= need:
            # the batch is full at its need-th acceptance: the chunk's later events are decided
            # again, by the updated algorithm
            where = where[:need]
            hi = pos + int(where[-1]) + 1
        if len(where):
            idx = pos + where
            pending.append(idx)
            n_pending += len(idx)
            accepted_idx.append(idx)
            accepted_reward.append(reward[idx])
        if n_pending == batch_size:
            batch = np.concatenate(pending)
            algorithm.update(X[batch], action[batch], reward[batch])
            pending, n_pending = [], 0
        pos = hi
    cat = (lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype=dtype))
    return ReplayRun(cat(accepted_idx, np.int64), cat(accepted_reward, np.float64))


def run_replays(algorithms: dict[str, object], X: np.ndarray, action: np.ndarray, reward: np.ndarray,
                propensity: np.ndarray, n_arms: int, *, batch_size: int = 1, runs: int = 10, periods: int = 20,
                bootstrap: bool = True, seed: int = 0, alpha: float = 0.05, available: np.ndarray | None = None,
                progress=lambda *_: None) -> dict:
    """Replay every algorithm `runs` times (each on a Poisson(1) bootstrap resample of the events in
    time order, with `bootstrap`) and summarise the curves: per period of the logged stream, the mean
    reward of the accepted events and the cumulative mean so far, with (alpha/2, 1 - alpha/2)
    quantiles over the runs."""
    n = len(action)
    p_min = float(propensity.min())
    uniform = bool(np.ptp(propensity) <= 1e-9 * propensity.max())
    edges = np.linspace(0, n, periods + 1).round().astype(np.int64)
    results = {}
    logging_per_period = np.array([reward[a:b].mean() if b > a else np.nan for a, b in zip(edges[:-1], edges[1:])])
    for name, algorithm in algorithms.items():
        progress(f"replaying {name}")
        per_period = np.full((runs, periods), np.nan)
        cumulative = np.full((runs, periods), np.nan)
        accepted = np.zeros((runs, periods))
        totals = np.zeros(runs)
        for r in range(runs):
            rng = np.random.default_rng([seed, r])
            events = np.repeat(np.arange(n), rng.poisson(1.0, n)) if bootstrap else np.arange(n)
            run = replay(algorithm, X[events], action[events], reward[events], propensity[events], n_arms,
                         batch_size=batch_size, rng=rng, p_min=p_min,
                         available=None if available is None else available[events])
            # the period of an accepted event: where its original event lies in the logged stream
            period = np.searchsorted(edges, events[run.accepted_event], side="right") - 1
            count = np.bincount(period, minlength=periods)
            total = np.bincount(period, weights=run.reward, minlength=periods)
            accepted[r] = count
            per_period[r] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            cum_n, cum_t = np.cumsum(count), np.cumsum(total)
            cumulative[r] = np.where(cum_n > 0, cum_t / np.maximum(cum_n, 1), np.nan)
            totals[r] = run.reward.mean() if len(run.reward) else np.nan
        q = [alpha / 2, 1 - alpha / 2]
        n_accepted = accepted.sum(axis=1)
        results[name] = {
            "accepted": {"mean": float(n_accepted.mean()), "min": int(n_accepted.min()), "max": int(n_accepted.max())},
            "value": _band(totals, q),
            "periods": [{"end_event": int(edges[i + 1]), "accepted": float(accepted[:, i].mean()),
                         "reward": _band(per_period[:, i], q), "cumulative": _band(cumulative[:, i], q)}
                        for i in range(periods)],
        }
    return {"n_events": n, "n_arms": n_arms, "uniform_logging": uniform, "p_min": p_min,
            "expected_accept_rate_uniform": 1.0 / n_arms if uniform else None,
            "period_edges": edges.tolist(), "logging": {"value": float(reward.mean()),
                                                        "periods": [None if np.isnan(v) else float(v)
                                                                    for v in logging_per_period]},
            "algorithms": results}


def _band(values: np.ndarray, q) -> dict:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": None, "low": None, "high": None, "runs": 0}
    low, high = np.quantile(finite, q)
    return {"mean": float(finite.mean()), "low": float(low), "high": float(high), "runs": int(finite.size)}
