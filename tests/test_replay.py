"""`livegate replay`: replay of online bandit algorithms (Li et al. 2011) with rejection sampling for
non-uniform logging (Dudik et al. 2012)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from livegate.cli import main
from livegate.datasets import InputError
from livegate.ope import replay as R

MEANS = np.array([0.10, 0.20, 0.30, 0.45, 0.25])  # Bernoulli click rates of 5 streams


def bandit_logs(n: int, seed: int, probs=None) -> dict:
    """A stationary 5-armed Bernoulli bandit logged by `probs` (uniform by default)."""
    rng = np.random.default_rng(seed)
    k = len(MEANS)
    probs = np.full(k, 1.0 / k) if probs is None else np.asarray(probs)
    action = rng.choice(k, size=n, p=probs)
    return {"X": np.column_stack([np.ones(n), rng.normal(size=(n, 2))]), "action": action,
            "reward": (rng.random(n) < MEANS[action]).astype(np.float64), "propensity": probs[action]}


def test_parse_algorithms():
    algos = R.parse_algorithms("eps-greedy:0.1,ucb1,ts,linucb:alpha=1")
    assert list(algos) == ["eps-greedy:0.1", "ucb1", "ts", "linucb:alpha=1"]
    assert algos["eps-greedy:0.1"].epsilon == 0.1 and algos["linucb:alpha=1"].alpha == 1.0
    for bad in ("", "nope", "eps-greedy:2", "ucb1:alpha=1", "ts:1", "ucb1,ucb1"):
        with pytest.raises(InputError):
            R.parse_algorithms(bad)


def test_replay_accepts_about_n_over_k_events_on_uniform_logs():
    logs = bandit_logs(20_000, 0)
    rng = np.random.default_rng(1)
    run = R.replay(R.UCB1(), logs["X"], logs["action"], logs["reward"], logs["propensity"], 5, batch_size=10, rng=rng)
    # accepted ~ Binomial(n, 1/K): 4,000 +- 57
    assert abs(len(run.reward) - 4000) < 4 * np.sqrt(20_000 * 0.2 * 0.8)
    assert np.all(np.diff(run.accepted_event) > 0)


def test_batches_freeze_the_algorithm_between_updates():
    logs = bandit_logs(3000, 2)

    class Counting(R.EpsilonGreedy):
        sizes: list = []

        def update(self, X, arms, rewards):
            self.sizes.append(len(arms))
            super().update(X, arms, rewards)

    algo = Counting(0.1)
    run = R.replay(algo, logs["X"], logs["action"], logs["reward"], logs["propensity"], 5, batch_size=25,
                   rng=np.random.default_rng(0))
    assert set(algo.sizes) == {25} and len(algo.sizes) == len(run.reward) // 25


@pytest.mark.statistical
@pytest.mark.parametrize("logging", ["uniform", "skewed"])
def test_replay_of_a_fixed_policy_is_unbiased_over_seeds(logging):
    """Replaying a fixed (non-learning) policy estimates its value: on uniform logs by the plain
    replay, on skewed logs by the rejection-sampling generalisation."""
    target = np.array([0.1, 0.1, 0.2, 0.5, 0.1])
    truth = float(target @ MEANS)
    probs = None if logging == "uniform" else np.array([0.4, 0.3, 0.1, 0.1, 0.1])
    estimates = []
    for seed in range(60):
        logs = bandit_logs(4000, seed, probs)
        run = R.replay(R.FixedPolicy(target), logs["X"], logs["action"], logs["reward"], logs["propensity"], 5,
                       batch_size=20, rng=np.random.default_rng(seed + 1000))
        estimates.append(run.reward.mean())
    estimates = np.array(estimates)
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - truth) < 4 * se, (estimates.mean(), truth, se)


@pytest.mark.statistical
def test_ucb1_regret_grows_sublinearly():
    logs = bandit_logs(100_000, 3)
    run = R.replay(R.UCB1(), logs["X"], logs["action"], logs["reward"], logs["propensity"], 5, batch_size=10,
                   rng=np.random.default_rng(0))
    regret = np.cumsum(MEANS.max() - MEANS[logs["action"][run.accepted_event]])
    t = len(regret)
    quarter, full = regret[t // 4 - 1], regret[-1]
    # linear regret would quadruple from T/4 to T; UCB1's O(log T) barely grows
    assert full < 2.0 * quarter, (quarter, full)
    assert full / t < 0.05 * MEANS.max()


@pytest.mark.statistical
def test_learning_algorithms_beat_uniform_and_linucb_uses_context():
    rng = np.random.default_rng(7)
    n = 40_000
    X = np.column_stack([np.ones(n), rng.choice([-1.0, 1.0], n)])
    action = rng.integers(0, 2, n)
    # stream 0 is better when x = +1, stream 1 when x = -1: only a contextual algorithm gets both
    mean = np.where(action == (X[:, 1] < 0), 0.7, 0.3)
    reward = (rng.random(n) < mean).astype(float)
    summary = R.run_replays(R.parse_algorithms("eps-greedy:0.1,ucb1,ts,linucb:alpha=0.5"), X, action, reward,
                            np.full(n, 0.5), 2, batch_size=50, runs=3, periods=5, seed=0)
    values = {k: v["value"]["mean"] for k, v in summary["algorithms"].items()}
    assert values["linucb:alpha=0.5"] > 0.65 and max(values["ucb1"], values["ts"], values["eps-greedy:0.1"]) < 0.55
    assert abs(summary["logging"]["value"] - 0.5) < 0.02


def test_run_replays_document_shape_and_determinism():
    logs = bandit_logs(3000, 4)
    kwargs = dict(batch_size=10, runs=4, periods=6, seed=3)
    a = R.run_replays(R.parse_algorithms("ucb1,ts"), logs["X"], logs["action"], logs["reward"], logs["propensity"],
                      5, **kwargs)
    b = R.run_replays(R.parse_algorithms("ucb1,ts"), logs["X"], logs["action"], logs["reward"], logs["propensity"],
                      5, **kwargs)
    assert json.dumps(a) == json.dumps(b)
    ucb = a["algorithms"]["ucb1"]
    assert len(ucb["periods"]) == 6 and a["uniform_logging"]
    assert 400 < ucb["accepted"]["mean"] < 800
    last = ucb["periods"][-1]["cumulative"]
    assert last["low"] <= last["mean"] <= last["high"]


def test_cli_replay(tmp_path, capsys):
    logs = bandit_logs(5000, 5)
    frame = pd.DataFrame({"decision_id": np.arange(5000), "action": logs["action"], "propensity": logs["propensity"],
                          "click": logs["reward"].astype(np.int64), "x_a": logs["X"][:, 1], "x_b": logs["X"][:, 2]})
    path = tmp_path / "logs.parquet"
    frame.to_parquet(path)
    code = main(["replay", "--logs", str(path), "--reward", "click", "--algorithms", "eps-greedy:0.1,ucb1,ts,linucb:alpha=1",
                 "--batch-size", "20", "--runs", "3", "--out", str(tmp_path / "replay.json"),
                 "--report", str(tmp_path / "replay.html"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    doc = json.loads((tmp_path / "replay.json").read_text())
    assert doc["schema"] == "livegate.replay/1" and set(doc["algorithms"]) == {"eps-greedy:0.1", "ucb1", "ts",
                                                                                "linucb:alpha=1"}
    html = (tmp_path / "replay.html").read_text()
    assert "<svg" in html and "ucb1" in html
    assert "accepted" in out
    assert main(["replay", "--logs", str(path), "--reward", "click", "--algorithms", "bogus", "--quiet"]) == 2


def test_algorithms_choose_only_available_streams():
    rng = np.random.default_rng(0)
    n, k = 500, 6
    available = rng.random((n, k)) < 0.4
    available[np.arange(n), rng.integers(0, k, n)] = True
    for name, algo in {**R.parse_algorithms("eps-greedy:0.5,ucb1,ts,linucb"), "fixed": R.FixedPolicy(np.full(k, 1 / k))}.items():
        algo.reset(k, 2, np.random.default_rng(1))
        algo.update(np.ones((3, 2)), np.array([0, 1, 2]), np.array([1.0, 0.0, 1.0]))
        picked = algo.select(np.ones((n, 2)), available)
        assert available[np.arange(n), picked].all(), name


@pytest.mark.statistical
def test_replay_with_slates_is_unbiased_for_a_fixed_policy():
    """Each event offers 3 of 5 streams (its slate) and logging is uniform over the slate: replaying a
    fixed policy restricted to each slate estimates its value there."""
    target = np.array([0.1, 0.1, 0.2, 0.5, 0.1])
    estimates, truths = [], []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = 5000
        slate = np.argsort(rng.random((n, 5)), axis=1)[:, :3]
        available = np.zeros((n, 5), dtype=bool)
        available[np.arange(n)[:, None], slate] = True
        action = slate[np.arange(n), rng.integers(0, 3, n)]
        reward = (rng.random(n) < MEANS[action]).astype(float)
        pi = np.where(available, target, 0.0)
        pi /= pi.sum(axis=1, keepdims=True)
        truths.append((pi @ MEANS).mean())
        run = R.replay(R.FixedPolicy(target), np.ones((n, 1)), action, reward, np.full(n, 1 / 3), 5, batch_size=10,
                       rng=np.random.default_rng(seed + 99), available=available)
        estimates.append(run.reward.mean())
    estimates = np.array(estimates)
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - np.mean(truths)) < 4 * se
