"""A small tabular MDP of viewer sessions with everything known exactly (tests of session-level OPE).

States (the context column `x_state`): 0 "fresh", 1 "tired", 2 "bored". Actions 0, 1, 2 (streams;
action 2 is "clickbait": a long immediate watch time, but viewers often leave after it). After the
decision at step t the viewer leaves with probability L[s, a]; otherwise the next state is drawn from
P[s, a, :]. A session has at most `horizon` steps (steps 0 .. horizon - 1). The reward of (s, a) is
R[s, a] * U with U ~ Uniform(0.5, 1.5): nonnegative, mean R[s, a].

Exact quantities (dynamic programming, finite horizon, discount gamma):
    Q_t(s, a) = R[s, a] + gamma (1 - L[s, a]) sum_s' P[s, a, s'] V_{t+1}(s'),  V_horizon = 0
    V_t(s)    = sum_a pi(a|s) Q_t(s, a)
    value     = sum_s p0(s) V_0(s)
    d^pi_0 = p0, d^pi_{t+1}(s') = sum_{s, a} d^pi_t(s) pi(a|s) (1 - L[s, a]) P[s, a, s']
(d^pi_t(s) = P(the session has a step t and is in state s there); the state density ratio of
marginalised importance sampling is d^pi_t(s) / d^mu_t(s).)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

N_STATES, N_ACTIONS = 3, 3

P0 = np.array([0.6, 0.25, 0.15])
R = np.array([[30.0, 20.0, 60.0],
              [15.0, 25.0, 40.0],
              [10.0, 35.0, 30.0]])
LEAVE = np.array([[0.10, 0.15, 0.45],
                  [0.25, 0.15, 0.55],
                  [0.30, 0.10, 0.50]])
P = np.array([[[0.6, 0.3, 0.1], [0.7, 0.2, 0.1], [0.2, 0.5, 0.3]],
              [[0.3, 0.5, 0.2], [0.5, 0.4, 0.1], [0.1, 0.6, 0.3]],
              [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [0.1, 0.4, 0.5]]])
HORIZON = 6

#: pi(a | s): rows are states
LOGGING = np.array([[0.4, 0.3, 0.3],
                    [0.3, 0.4, 0.3],
                    [0.3, 0.3, 0.4]])
POLICIES = {
    # long term: avoid the clickbait, calm tired viewers with action 1
    "longterm": np.array([[0.55, 0.35, 0.10],
                          [0.20, 0.70, 0.10],
                          [0.15, 0.75, 0.10]]),
    # myopic: greedy on the immediate reward
    "myopic": np.array([[0.15, 0.10, 0.75],
                        [0.10, 0.20, 0.70],
                        [0.10, 0.60, 0.30]]),
}

assert np.allclose(P.sum(axis=2), 1) and np.allclose(LOGGING.sum(axis=1), 1)
assert all(np.allclose(p.sum(axis=1), 1) for p in POLICIES.values())


def policy(name: str) -> np.ndarray:
    return LOGGING if name == "logging" else POLICIES[name]


def q_function(pi: np.ndarray, gamma: float, horizon: int = HORIZON) -> tuple[np.ndarray, np.ndarray]:
    """(Q, V): Q[t, s, a] and V[t, s] for t = 0 .. horizon - 1, exactly."""
    q = np.zeros((horizon, N_STATES, N_ACTIONS))
    v = np.zeros((horizon + 1, N_STATES))
    for t in range(horizon - 1, -1, -1):
        q[t] = R + gamma * (1 - LEAVE) * (P @ v[t + 1])
        v[t] = np.sum(pi * q[t], axis=1)
    return q, v[:horizon]


def exact_value(pi: np.ndarray, gamma: float, horizon: int = HORIZON) -> float:
    """E[sum_t gamma^t r_t] per session under pi, by dynamic programming."""
    _, v = q_function(pi, gamma, horizon)
    return float(P0 @ v[0])


def state_density(pi: np.ndarray, horizon: int = HORIZON) -> np.ndarray:
    """d[t, s] = P(the session reaches step t in state s) under pi."""
    d = np.zeros((horizon, N_STATES))
    d[0] = P0
    for t in range(1, horizon):
        flow = d[t - 1][:, None] * pi * (1 - LEAVE)          # (s, a)
        d[t] = np.einsum("sa,sat->t", flow, P)
    return d


def state_ratio(pi: np.ndarray, mu: np.ndarray = LOGGING, horizon: int = HORIZON) -> np.ndarray:
    """u[t, s] = d^pi_t(s) / d^mu_t(s)."""
    return state_density(pi, horizon) / state_density(mu, horizon)


def expected_length(pi: np.ndarray, horizon: int = HORIZON) -> float:
    """Expected number of steps per session under pi."""
    return float(state_density(pi, horizon).sum())


def monte_carlo_value(pi: np.ndarray, gamma: float, n: int, seed: int) -> tuple[float, float]:
    """On-policy rollouts of pi: (mean discounted return, its standard error) - checks the DP."""
    s = sample(n, seed, behaviour=pi)
    g = np.bincount(s.session, weights=gamma ** s.step * s.reward, minlength=n)
    return float(g.mean()), float(g.std(ddof=1) / np.sqrt(n))


@dataclass
class Sample:
    """Logged sessions, one entry per row, rows in step-major order (all step-0 rows first)."""

    n_sessions: int
    session: np.ndarray
    step: np.ndarray
    state: np.ndarray
    action: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray

    @property
    def n_rows(self) -> int:
        return len(self.session)

    def prob(self, pi: np.ndarray) -> np.ndarray:
        """pi(a_t | s_t) of the logged action at every row."""
        return pi[self.state, self.action]

    def ratio(self, pi: np.ndarray) -> np.ndarray:
        return self.prob(pi) / self.propensity

    def returns(self, gamma: float) -> np.ndarray:
        """(n_sessions,) discounted return of every session."""
        return np.bincount(self.session, weights=gamma ** self.step.astype(float) * self.reward,
                           minlength=self.n_sessions)

    def lengths(self) -> np.ndarray:
        return np.bincount(self.session, minlength=self.n_sessions)

    # --- the data contract -----------------------------------------------------------------
    def decision_ids(self) -> np.ndarray:
        return np.array([f"d{s}-{t}" for s, t in zip(self.session, self.step)], dtype=object)

    def logs_frame(self, start: str = "2024-05-01") -> pd.DataFrame:
        """The logs: decision_id, session_id, step, timestamp (increasing within a session), action,
        propensity, watch_seconds, x_state, x_step; rows in (session, step) order."""
        order = np.lexsort((self.step, self.session))
        t0 = np.datetime64(start, "s")
        timestamp = t0 + (self.session[order] * 1000 + self.step[order] * 30).astype("timedelta64[s]")
        return pd.DataFrame({
            "decision_id": self.decision_ids()[order],
            "session_id": np.array([f"s{s}" for s in self.session[order]], dtype=object),
            "step": self.step[order].astype(np.int64),
            "timestamp": pd.to_datetime(timestamp).tz_localize("UTC"),
            "action": np.array([f"stream{a}" for a in self.action[order]], dtype=object),
            "propensity": self.propensity[order],
            "watch_seconds": self.reward[order],
            "x_state": self.state[order].astype(np.int64),
            "x_step": self.step[order].astype(np.int64),
        })

    def policy_frame(self, pi: np.ndarray) -> pd.DataFrame:
        """The candidate in long format: decision_id, action, prob for every action at every logged step."""
        order = np.lexsort((self.step, self.session))
        ids = self.decision_ids()[order]
        state = self.state[order]
        return pd.DataFrame({
            "decision_id": np.repeat(ids, N_ACTIONS),
            "action": np.tile(np.array([f"stream{a}" for a in range(N_ACTIONS)], dtype=object), len(ids)),
            "prob": pi[state].reshape(-1),
        })


def sample(n_sessions: int, seed: int, behaviour: np.ndarray = LOGGING, horizon: int = HORIZON) -> Sample:
    """n_sessions sessions under `behaviour` (vectorised over sessions, a loop over steps)."""
    rng = np.random.default_rng(seed)
    state = rng.choice(N_STATES, size=n_sessions, p=P0)
    alive = np.arange(n_sessions)
    cols = {k: [] for k in ("session", "step", "state", "action", "propensity", "reward")}
    cum_pi = np.cumsum(behaviour, axis=1)
    cum_p = np.cumsum(P, axis=2)
    for t in range(horizon):
        s = state[alive]
        a = np.minimum((rng.random(len(alive))[:, None] > cum_pi[s]).sum(axis=1), N_ACTIONS - 1)
        r = R[s, a] * rng.uniform(0.5, 1.5, size=len(alive))
        cols["session"].append(alive)
        cols["step"].append(np.full(len(alive), t))
        cols["state"].append(s)
        cols["action"].append(a)
        cols["propensity"].append(behaviour[s, a])
        cols["reward"].append(r)
        stays = rng.random(len(alive)) >= LEAVE[s, a]
        nxt = np.minimum((rng.random(len(alive))[:, None] > cum_p[s, a]).sum(axis=1), N_STATES - 1)
        state[alive] = nxt
        alive = alive[stays]
        if not len(alive):
            break
    return Sample(n_sessions=n_sessions, **{k: np.concatenate(v).astype(np.int64 if k in ("session", "step", "state",
                                                                                          "action") else np.float64)
                                            for k, v in cols.items()})
