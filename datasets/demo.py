"""Inputs of `livegate demo`: simulated live-stream logs, candidate policies, confounded causal logs
and a gate.toml tying them together, written into one directory."""
from __future__ import annotations

from pathlib import Path

from .causal_simulator import write_causal_simulation
from .io import write_atomic
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

[diagnostics]
min_ess = 2000
max_unsupported_mass = 0.01

[causal]
logs = "causal/logs.parquet"
treatment = "recommended"
outcome = "watch_seconds"
# The sensitivity analysis still runs and is reported; it is not required here because it asks whether
# an unobserved confounder as strong as viewer activity -- by design the strongest driver of watch time
# in these logs -- could erase the effect, and on such data it nearly always could.
refutations = ["placebo_treatment", "random_common_cause", "data_subset"]
"""


def write_demo_inputs(out_dir: str | Path, seed: int = 0, n_rounds: int = 50_000,
                      n_causal_rows: int = 50_000) -> Path:
    """Write the demo's data and gate.toml; returns the gate.toml path."""
    out = Path(out_dir)
    write_simulation(simulate(SimulationConfig(n_rounds=n_rounds, seed=seed)), out)
    write_causal_simulation(out / "causal", n_rows=n_causal_rows, seed=seed)
    return write_atomic(out / "gate.toml", GATE_TOML.format(seed=seed))
