"""Inputs of `livegate demo`: simulated live-stream logs, candidate policies, confounded causal logs
and a gate.toml tying them together, written into one directory; a learning chapter's gate.toml under
`learn/` (for a candidate that `livegate learn` builds from the logs, gated on the decisions it never
saw; `learned_truth` gives its exact value); and a session chapter (viewer sessions, a myopic and a
long-term candidate, and a session-level gate.toml) under `sessions/`."""
from __future__ import annotations

from pathlib import Path

from .causal_simulator import write_causal_simulation
from .io import write_atomic
from .session_simulator import SessionSimulationConfig, simulate_sessions, write_session_simulation
from .simulator import SimulationConfig, simulate, write_simulation

GATE_TOML = """\
# livegate demo gate: may the candidate rankers replace the logging policy?
[data]
logs = "logs.parquet"
actions = "actions.parquet"       # the stream catalogue: policies naming other streams are rejected

[evaluation]
estimator = "snips"
alpha = 0.05
seed = {seed}

[[candidate]]
name = "better"
policy = "policies/better.parquet"

[[candidate]]
name = "worse"
policy = "policies/worse.parquet"

[[candidate]]
name = "greedy"
policy = "policies/greedy.parquet"

[[criterion]]
metric = "watch_seconds"
rule = "improves"
min_effect = 0.0

[[criterion]]
metric = "click"
rule = "non_inferior"
margin = 0.05
relative = true

# [diagnostics] is left out: the safe defaults apply (effective sample size at least 1000 and at least
# 5% of the rows, unsupported mass at most 10% at its upper bound, mean weight not significantly above 1)

[causal]
logs = "causal/logs.parquet"
treatment = "recommended"
outcome = "watch_seconds"
# The sensitivity analysis still runs and is reported; it is not required here because it asks whether
# an unobserved confounder as strong as viewer activity -- by design the strongest driver of watch time
# in these logs -- could erase the effect, and on such data it nearly always could.
refutations = ["placebo_treatment", "random_common_cause", "data_subset"]
"""


SESSION_GATE_TOML = """\
# livegate demo, session chapter: the recommender is a sequential agent. Per decision, the myopic
# ranker (greedy on immediate watch time) looks best; over whole sessions it makes viewers leave.
# This gate compares the return per session (level = "session"), so it follows the session view.
[data]
logs = "logs.parquet"
actions = "actions.parquet"

[evaluation]
level = "session"     # value = expected total per session (gamma = 1); each session is one sample
estimator = "{estimator}"
alpha = 0.05
seed = {seed}

[[candidate]]
name = "myopic"
policy = "policies/myopic.parquet"

[[candidate]]
name = "longterm"
policy = "policies/longterm.parquet"

[[criterion]]
metric = "watch_seconds"
rule = "improves"
min_effect = 0.0
"""

#: The session gate's estimator, the gate's default there: double reinforcement learning (fitted Q
#: corrected by fitted marginal density ratios).
SESSION_ESTIMATOR = "drl"

LEARN_GATE_TOML = """\
# livegate demo, learning chapter: a candidate learned from the logs (livegate learn --method dr, choosing
# among each decision's slate in ../candidates.parquet) on a seeded {train_pct}% of the decisions, gated on
# the other {test_pct}%, which it never saw (heldout.parquet). The policy file records its training decisions:
# a gate on logs that contain them (../logs.parquet) is refused.
[data]
logs = "heldout.parquet"
actions = "../actions.parquet"

[evaluation]
estimator = "snips"
alpha = 0.05
seed = {seed}

[[candidate]]
name = "learned"
policy = "learned.parquet"

[[criterion]]
metric = "watch_seconds"
rule = "improves"
min_effect = 0.0
"""

#: The learning chapter: method, reward and held-out share of `livegate learn`.
LEARN_METHOD, LEARN_REWARD, LEARN_TEST_SHARE = "dr", "watch_seconds", 0.3


def write_demo_inputs(out_dir: str | Path, seed: int = 0, n_rounds: int = 50_000,
                      n_causal_rows: int = 50_000, n_sessions: int = 20_000, learn: bool = False) -> Path:
    """Write the demo's data (with each decision's slate in candidates.parquet) and gate.toml
    (returned), with `learn` the learning chapter's gate.toml under learn/ (`learn_gate_path`), and the
    session chapter's under sessions/ (`session_gate_path`)."""
    out = Path(out_dir)
    write_simulation(simulate(SimulationConfig(n_rounds=n_rounds, seed=seed)), out)
    if learn:
        test_pct = round(100 * LEARN_TEST_SHARE)
        write_atomic(learn_gate_path(out), LEARN_GATE_TOML.format(seed=seed, test_pct=test_pct,
                                                                  train_pct=100 - test_pct))
    write_causal_simulation(out / "causal", n_rows=n_causal_rows, seed=seed)
    if n_sessions:
        write_session_simulation(simulate_sessions(SessionSimulationConfig(n_sessions=n_sessions, seed=seed)),
                                 out / "sessions")
        write_atomic(session_gate_path(out), SESSION_GATE_TOML.format(seed=seed, estimator=SESSION_ESTIMATOR))
    return write_atomic(out / "gate.toml", GATE_TOML.format(seed=seed))


def session_gate_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / "sessions" / "gate.toml"


def learn_gate_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / "learn" / "gate.toml"


def learned_truth(policy, heldout_decisions, n_rounds: int, seed: int, metric: str = LEARN_REWARD) -> dict:
    """The exact value (the simulator's expected rewards, no sampling noise) of a policy over the demo's
    decisions, against the logging policy's: {"heldout": {...}, "all": {...}}, each with "policy",
    "logging", "difference" and "relative". The simulation is re-drawn from (n_rounds, seed): it is
    deterministic, so these are the decisions of the demo's logs."""
    import numpy as np

    from .simulator import policy_matrix

    sim = simulate(SimulationConfig(n_rounds=n_rounds, seed=seed))
    expected = sim.expected[metric]
    per_row = {"policy": np.sum(policy_matrix(sim, policy) * expected, axis=1),
               "logging": np.sum(policy_matrix(sim, "logging") * expected, axis=1)}
    rows = np.isin(np.arange(sim.slates.shape[0]) // sim.config.n_positions, np.asarray(heldout_decisions))
    out = {}
    for part, keep in (("heldout", rows), ("all", np.ones_like(rows))):
        value, logging = (float(per_row[k][keep].mean()) for k in ("policy", "logging"))
        out[part] = {"policy": value, "logging": logging, "difference": value - logging,
                     "relative": (value - logging) / logging if logging else None}
    return out
