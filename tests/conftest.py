"""Shared fixtures: a small simulated dataset written once per session, and an in-process CLI runner."""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from livegate import cli
from livegate.datasets.simulator import SimulationConfig, simulate, write_simulation

SIM_CONFIG = SimulationConfig(n_rounds=2000, seed=1)

# CI replays the same generated examples on every run, so that whether a change lands does not depend
# on which examples a run happens to draw; locally they vary and search for new failures
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@dataclass
class SimFiles:
    root: Path
    logs: Path
    policies: dict[str, Path]
    simulation: object


@pytest.fixture(scope="session")
def sim_files(tmp_path_factory) -> SimFiles:
    """The simulator's output (logs, four policies, truth), written once for every test module."""
    root = tmp_path_factory.mktemp("sim")
    simulation = simulate(SIM_CONFIG)
    paths = write_simulation(simulation, root)
    policies = {key.split("/", 1)[1]: Path(p) for key, p in paths.items() if key.startswith("policies/")}
    return SimFiles(root=root, logs=Path(paths["logs"]), policies=policies, simulation=simulation)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*argv) -> CliResult:
    """`cli.main` in this process (no interpreter start-up), stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def livegate():
    return run_cli
