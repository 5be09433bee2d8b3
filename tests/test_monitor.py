"""`livegate monitor`: anytime-valid confidence sequences, alarms after a regression, drift checks."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from livegate.api import monitor
from livegate.datasets import InputError
from livegate.datasets.event_simulator import RolloutConfig, rollout_terms, rollout_true_difference, simulate_rollout
from livegate.ope.monitor import cs_radius, fixed_sample_alarms, psi, rho_for, sequential_test

ALPHA = 0.05
DAYS = 14


def _upper_tolerance(rate: float, runs: int) -> float:
    """alpha plus three binomial standard errors: a rate above it is not sampling noise."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / runs)


def test_boundary_shape():
    rho = rho_for(1000, ALPHA)
    r = cs_radius(np.array([100, 1000, 10000]), 1.0, ALPHA, rho)
    assert np.all(np.diff(r) < 0)                                  # shrinks with more rows
    assert cs_radius(1000, 2.0, ALPHA, rho) == pytest.approx(2 * r[1])   # scales with the standard deviation
    fixed = 1.96 / math.sqrt(1000)
    assert 1.3 * fixed < r[1] < 2.0 * fixed                       # the price of looking at every time
    assert np.isinf(cs_radius(1, 1.0, ALPHA, rho))


@pytest.mark.statistical
def test_daily_looks_keep_the_error_rate_where_a_fixed_sample_interval_does_not():
    """No change: the candidate's true difference is exactly 0 every day. Over many rollouts looked at
    after every day, the CS excludes 0 at some look in at most alpha of them; the fixed-sample 95%
    interval of the same cumulative mean does so far more often."""
    runs = 300
    cs_miss = alarms = fixed_miss = 0
    for seed in range(runs):
        d, day = rollout_terms(RolloutConfig(n_days=DAYS, seed=seed))
        plain = sequential_test(d, day, DAYS, ALPHA, restarts=False)
        cs_miss += bool(np.any((plain["cs_low"] > 0) | (plain["cs_high"] < 0)))
        alarms += sequential_test(d, day, DAYS, ALPHA)["first_alarm"] is not None
        below = fixed_sample_alarms(d, day, DAYS, ALPHA)
        above = fixed_sample_alarms(-d, day, DAYS, ALPHA)
        fixed_miss += bool(np.any(below | above))
    limit = _upper_tolerance(ALPHA, runs)
    assert cs_miss / runs <= limit
    assert alarms / runs <= limit
    assert fixed_miss / runs > limit, fixed_miss / runs           # measured about 0.2 at 14 looks


@pytest.mark.statistical
def test_alarms_after_a_degradation_at_day_4_and_rarely_before():
    runs = 150
    first = []
    for seed in range(runs):
        cfg = RolloutConfig(n_days=DAYS, degrade_after_day=4, seed=10_000 + seed)
        d, day = rollout_terms(cfg)
        first.append(sequential_test(d, day, DAYS, ALPHA)["first_alarm"])
    assert rollout_true_difference(cfg, 3) == 0 and rollout_true_difference(cfg, 4) < 0
    early = sum(1 for f in first if f is not None and f < 4)
    caught = sum(1 for f in first if f is not None and f >= 4)
    assert early / runs <= _upper_tolerance(ALPHA, runs)
    assert caught / runs >= 0.95
    # and soon: within three days of the change in most runs
    assert np.median([f for f in first if f is not None]) <= 6


def test_restarted_sequences_catch_what_the_cumulative_one_misses():
    """A candidate better for four days, then worse: the running mean since the start stays positive
    for days; the sequences started at each window see the change."""
    rng = np.random.default_rng(3)
    day = np.repeat(np.arange(DAYS), 2000)
    d = rng.normal(np.where(day < 4, 0.1, -0.1), 1.0)
    with_restarts = sequential_test(d, day, DAYS, ALPHA)
    cumulative_only = sequential_test(d, day, DAYS, ALPHA, restarts=False)
    assert with_restarts["first_alarm"] is not None
    assert with_restarts["first_alarm"] <= 6
    assert cumulative_only["first_alarm"] is None or cumulative_only["first_alarm"] >= with_restarts["first_alarm"] + 2


def test_psi():
    assert psi(np.array([50.0, 50.0]), np.array([50.0, 50.0])) == pytest.approx(0.0)
    assert psi(np.array([70.0, 30.0]), np.array([40.0, 60.0])) > 0.25


def _write(tmp_path, cfg):
    logs, policy = simulate_rollout(cfg)
    logs.to_parquet(tmp_path / "logs.parquet")
    policy.to_parquet(tmp_path / "candidate.parquet")
    return tmp_path / "logs.parquet", tmp_path / "candidate.parquet"


def test_cli_regression_exit_1_with_document_and_report(tmp_path, livegate):
    logs, policy = _write(tmp_path, RolloutConfig(n_days=10, degrade_after_day=4, context_shift_after_day=7, seed=4))
    run = livegate("monitor", "--logs", logs, "--policy", f"candidate={policy}", "--reward", "click",
                   "--out", tmp_path / "m.json", "--report", tmp_path / "m.html")
    assert run.code == 1, run.err
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["schema"] == "livegate.monitor/1" and doc["status"] == "regression" and doc["exit_code"] == 1
    stream = doc["streams"][0]
    assert stream["first_alarm"]["window"] >= "2026-01-09"       # day 5 (0-based 4) or later, never before
    assert len(doc["windows"]) == 10 and all(w["n"] == 2000 for w in doc["windows"])
    drift = [a for a in doc["alerts"] if "x_device" in a]
    assert len(drift) == 1 and "2026-01-12" in drift[0]          # the injected shift, from its first day
    assert not any(c["column"] == "x_device" and c["level"] == "major" and c["window"] < "2026-01-12"
                   for c in doc["drift"]["checks"])
    html = (tmp_path / "m.html").read_text()
    assert "<svg" in html and "REGRESSION" in html
    # deterministic: the same inputs give the same document
    again = livegate("monitor", "--logs", logs, "--policy", f"candidate={policy}", "--reward", "click",
                     "--out", tmp_path / "m2.json")
    assert (tmp_path / "m.json").read_bytes() == (tmp_path / "m2.json").read_bytes() and again.code == 1
    # livegate report renders the monitoring document as a chapter, in HTML and Markdown
    made = livegate("report", tmp_path / "m.json", "--out", tmp_path / "r.html", "--markdown", tmp_path / "r.md")
    assert made.code == 0, made.err
    page = (tmp_path / "r.html").read_text()
    assert 'id="monitor-1"' in page and "Monitoring after rollout" in page and "<svg" in page
    assert "REGRESSION (exit 1)" in page and "Drift against" in page
    assert "### Monitoring after rollout" in (tmp_path / "r.md").read_text()


def test_exit_3_undecided_and_0_healthy(tmp_path):
    logs, policy = simulate_rollout(RolloutConfig(n_days=5, seed=8))
    undecided = monitor(logs, {"candidate": policy}, ["click"])
    assert undecided.exit_code == 3 and undecided.status == "undecided"
    healthy = monitor(logs, {"candidate": policy}, ["click"], margins={"click": 0.03})
    assert healthy.exit_code == 0 and healthy.status == "healthy"
    assert not healthy.to_dict()["drift"]["alerts"]


def test_bad_inputs(tmp_path, livegate):
    logs, policy = simulate_rollout(RolloutConfig(n_days=3, seed=1))
    with pytest.raises(InputError, match="timestamp"):
        monitor(logs.drop(columns=["timestamp"]), {"candidate": policy}, ["click"])
    with pytest.raises(InputError, match="tolerated loss"):
        monitor(logs, {"candidate": policy}, ["click"], margins={"click": -1})
    with pytest.raises(InputError, match="not monitored"):
        monitor(logs, {"candidate": policy}, ["click"], margins={"watch": 1})
    logs_path, policy_path = _write(tmp_path, RolloutConfig(n_days=3, seed=1))
    assert livegate("monitor", "--logs", logs_path, "--policy", f"c={policy_path}", "--every", "soon").code == 2
    assert livegate("monitor", "--logs", logs_path, "--policy", f"c={policy_path}", "--margin", "click").code == 2


def test_drift_checks_flag_shifted_propensities_and_rewards_only():
    from livegate.ope.monitor import drift_checks
    rng = np.random.default_rng(0)
    window = np.repeat(np.arange(4), 3000)
    labels = [f"2026-01-0{5 + k}" for k in range(4)]
    propensity = np.where(window >= 2, rng.uniform(0.3, 0.9, window.size), rng.uniform(0.05, 0.6, window.size))
    rewards = {"click": (rng.random(window.size) < np.where(window == 3, 0.05, 0.1)).astype(float),
               "watch": rng.exponential(60.0, window.size)}
    context = {"x_hour": rng.integers(0, 24, window.size), "x_device": rng.choice(["a", "b"], window.size)}
    result = drift_checks(window, 4, labels, context, propensity, rewards, 0.05, 200)
    text = " ".join(result["alerts"])
    assert "propensities shifted in the window of 2026-01-07" in text
    assert "mean logged click fell in the window of 2026-01-08" in text
    assert "x_hour" not in text and "x_device" not in text and "watch" not in text


@pytest.mark.parametrize("degrade, code", [(4, 1), (None, 0)])
def test_from_raw_events_to_a_monitoring_verdict(tmp_path, degrade, code):
    """The issue's whole path: raw events -> track -> monitor. The candidate is better than production
    until the change (truth: +0.04 click rate) and worse after it (-0.016)."""
    from livegate.datasets.event_simulator import EventSimulationConfig, simulate_events
    from livegate.datasets.events import TrackConfig, track
    sim = simulate_events(EventSimulationConfig(degrade_after_day=degrade, seed=11))
    track(sim.events, tmp_path / "logs", TrackConfig(threads=1))
    result = monitor(tmp_path / "logs", {"candidate": sim.policy}, ["click"])
    assert result.exit_code == code
    stream = result.to_dict()["streams"][0]
    if degrade is None:
        assert stream["first_alarm"] is None
        truth = np.mean([d["difference"] for d in sim.truth["days"]])
        last = stream["looks"][-1]
        assert last["cs_low"] <= truth <= last["cs_high"]
    else:
        assert stream["first_alarm"]["window"] >= "2026-01-09"     # the first degraded day, or later


def test_too_many_windows_is_an_input_error():
    logs, policy = simulate_rollout(RolloutConfig(n_days=2, rows_per_day=300, seed=1))
    with pytest.raises(InputError, match="windows"):
        monitor(logs, {"candidate": policy}, ["click"], every="1m")
