"""`livegate evaluate` end to end on simulated logs: document shape, truth coverage, determinism."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from livegate import cli
from livegate.datasets import load_logs, load_policy, parse_reward
from livegate.datasets.simulator import SimulationConfig, simulate, write_simulation
from livegate.ope import EvaluationConfig, evaluate


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-sim")
    simulation = simulate(SimulationConfig(n_rounds=30_000, seed=11))
    write_simulation(simulation, out)
    return out, simulation


def _evaluate(out: Path, *extra: str, policies=("better", "worse")) -> int:
    args = ["--quiet", "evaluate", "--logs", str(out / "logs.parquet")]
    for name in policies:
        args += ["--policy", f"{name}={out / 'policies' / f'{name}.parquet'}"]
    return cli.main(args + list(extra))


def test_document_follows_the_contract(sim, tmp_path):
    out, _ = sim
    result = tmp_path / "r.json"
    assert _evaluate(out, "--reward", "watch_seconds", "--reward", "click", "--estimators", "ips,snips,dr,ips:clip=20",
                     "--out", str(result)) == 0
    doc = json.loads(result.read_text())
    assert doc["schema"] == "livegate.evaluation/1" and doc["baseline"] == "logging"
    assert set(doc["metrics"]) == {"watch_seconds", "click"} and doc["metric"] == "watch_seconds"
    assert set(doc["policies"]) == {"logging", "better", "worse"}
    better = doc["policies"]["better"]
    assert set(better["estimates"]) == {"ips", "snips", "dr", "ips:clip=20"}
    for est in better["estimates"].values():
        assert _low(est) <= est["value"] <= _high(est) and est["se"] > 0
    for key in ("n", "ess", "max_weight", "mean_weight", "unsupported_mass"):
        assert key in better["diagnostics"]
    assert _low(better["vs_baseline"]["snips"]) <= better["vs_baseline"]["snips"]["difference"]
    assert doc["policies"]["logging"]["vs_baseline"] == {}
    assert doc["inputs"]["logs"]["fingerprint"].startswith("sha256:")
    assert doc["livegate_version"] and doc["seed"] == 0
    assert doc["time_windows"]["windows"], "the simulator's logs have timestamps"


def test_intervals_cover_the_exact_values(sim, tmp_path):
    out, simulation = sim
    result = tmp_path / "r.json"
    assert _evaluate(out, "--reward", "watch_seconds", "--estimators", "snips,dr", "--out", str(result)) == 0
    doc = json.loads(result.read_text())
    truth = simulation.truth["policies"]
    for name in ("logging", "better", "worse"):
        for est in ("snips", "dr"):
            e = doc["policies"][name]["estimates"][est]
            assert _low(e) <= truth[name]["watch_seconds"] <= _high(e), (name, est, e)


def _low(interval: dict) -> float:
    """An interval's lower end; null is an end the data cannot set (robust intervals: docs/results.md, ci_open)."""
    return -np.inf if interval["ci_low"] is None else interval["ci_low"]


def _high(interval: dict) -> float:
    return np.inf if interval["ci_high"] is None else interval["ci_high"]


def test_ips_of_logging_is_the_on_policy_mean(sim):
    out, simulation = sim
    reward = parse_reward("watch_seconds")
    logs = load_logs(out / "logs.parquet", [reward], need_decision_id=True, need_context=True)
    res = evaluate(logs, {}, [reward], EvaluationConfig(estimators=("ips", "snips", "dr")))
    mean = simulation.logs["watch_seconds"].mean()
    for est in ("ips", "snips", "dr"):
        assert res.estimate("logging", est)["value"] == pytest.approx(mean, rel=1e-12)


def test_logging_replica_matches_logging_exactly_for_ips(sim):
    out, _ = sim
    reward = parse_reward("click")
    logs = load_logs(out / "logs.parquet", [reward], need_decision_id=True)
    replica = load_policy(out / "policies" / "logging_replica.parquet", logs, "replica")
    np.testing.assert_allclose(replica.pi_logged, logs.propensity, rtol=1e-12)
    res = evaluate(logs, {"replica": replica}, [reward], EvaluationConfig(estimators=("ips",)))
    diff = res.metrics["click"]["replica"].vs_baseline["ips"]
    assert abs(diff["difference"]) < 1e-12


def test_same_seed_gives_byte_identical_json(sim, tmp_path):
    out, _ = sim
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        assert _evaluate(out, "--reward", "click", "--estimators", "snips,dr", "--ci", "bootstrap", "--n-boot", "200",
                         "--seed", "5", "--out", str(path)) == 0
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c.json"
    assert _evaluate(out, "--reward", "click", "--estimators", "snips", "--ci", "bootstrap", "--n-boot", "200",
                     "--seed", "6", "--out", str(c)) == 0
    assert json.loads(c.read_text())["policies"]["better"]["estimates"]["snips"]["ci_low"] != \
        json.loads(a.read_text())["policies"]["better"]["estimates"]["snips"]["ci_low"]


def test_compact_form_gives_the_same_ips(sim, tmp_path):
    out, _ = sim
    logs_df = pd.read_parquet(out / "logs.parquet")
    pol = pd.read_parquet(out / "policies" / "better.parquet")
    merged = logs_df.merge(pol, on=["decision_id", "action"], how="left")
    logs_df["pi_better"] = merged["prob"].fillna(0.0).to_numpy()
    logs_df.to_parquet(tmp_path / "compact.parquet")
    long_json, compact_json = tmp_path / "long.json", tmp_path / "compact.json"
    assert _evaluate(out, "--reward", "click", "--estimators", "ips,snips", "--out", str(long_json),
                     policies=("better",)) == 0
    assert cli.main(["--quiet", "evaluate", "--logs", str(tmp_path / "compact.parquet"), "--policy", "better",
                     "--reward", "click", "--estimators", "ips,snips", "--out", str(compact_json)]) == 0
    long_doc, compact_doc = json.loads(long_json.read_text()), json.loads(compact_json.read_text())
    for est in ("ips", "snips"):
        assert compact_doc["policies"]["better"]["estimates"][est]["value"] == \
            pytest.approx(long_doc["policies"]["better"]["estimates"][est]["value"], rel=1e-12)
    assert compact_doc["policies"]["better"]["diagnostics"]["compact_form"] is True


def test_estimate_propensities_marks_the_result(tmp_path):
    # a binary recommendation logged without propensities: they are estimated from the confounders
    from livegate.datasets.causal_simulator import simulate_causal

    data, _ = simulate_causal(n_rows=20_000, seed=2)
    data.drop(columns=["propensity"]).to_parquet(tmp_path / "noprop.parquet")
    pd.DataFrame({"decision_id": data["decision_id"], "action": 1, "prob": 1.0}).to_parquet(tmp_path / "always.parquet")
    result = tmp_path / "r.json"
    assert cli.main(["--quiet", "evaluate", "--logs", str(tmp_path / "noprop.parquet"), "--policy",
                     f"always={tmp_path / 'always.parquet'}", "--reward", "watch_seconds", "--estimators", "snips",
                     "--estimate-propensities", "--out", str(result)]) == 0
    doc = json.loads(result.read_text())
    assert doc["data"]["propensity"]["source"] == "estimated"
    diag = doc["policies"]["always"]["diagnostics"]
    assert diag["estimated_propensities"] is True
    assert any("estimated" in w for w in diag["warnings"])
    # the estimated propensities reweight the treated rows back to the population: the mean weight is
    # 1 within 4 standard errors (fixed seed)
    assert abs(diag["mean_weight"] - 1.0) <= 4 * diag["mean_weight_se"]


def test_missing_propensity_without_estimation_exits_2(sim, tmp_path, capsys):
    out, _ = sim
    pd.read_parquet(out / "logs.parquet").drop(columns=["propensity"]).to_parquet(tmp_path / "noprop.parquet")
    code = cli.main(["--quiet", "evaluate", "--logs", str(tmp_path / "noprop.parquet"), "--policy",
                     f"better={out / 'policies' / 'better.parquet'}", "--reward", "click"])
    assert code == 2 and "propensity" in capsys.readouterr().err


def test_unknown_estimator_and_bad_ci_exit_2(sim, capsys):
    out, _ = sim
    assert _evaluate(out, "--estimators", "ips,magic") == 2
    assert "unknown estimator 'magic'" in capsys.readouterr().err
    assert _evaluate(out, "--estimators", "snips", "--ci", "bernstein") == 2
    assert "plain-mean" in capsys.readouterr().err


def test_terminal_table_fits_100_columns(sim, capsys):
    out, _ = sim
    assert _evaluate(out, "--reward", "watch_seconds", "--reward", "engagement=watch_seconds + 50*gift_value",
                     "--estimators", "ips:clip=20,snips,switch-dr:tau=5,dr-os:lambda=10",
                     policies=("better", "worse", "greedy")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("switch-dr" in line for line in lines)
    assert max(len(line) for line in lines) <= 100


def test_positions_are_samples_of_their_own(tmp_path):
    simulation = simulate(SimulationConfig(n_rounds=15_000, n_positions=2, seed=4))
    write_simulation(simulation, tmp_path)
    result = tmp_path / "r.json"
    assert cli.main(["--quiet", "evaluate", "--logs", str(tmp_path / "logs.parquet"), "--policy",
                     f"better={tmp_path / 'policies' / 'better.parquet'}", "--reward", "click",
                     "--estimators", "ips,snips", "--out", str(result)]) == 0
    doc = json.loads(result.read_text())
    assert doc["data"]["n_positions"] == 2 and doc["data"]["n_rows"] == 30_000
    truth = simulation.truth["policies"]["better"]["click"]
    for est in ("ips", "snips"):
        e = doc["policies"]["better"]["estimates"][est]
        assert e["ci_low"] <= truth <= e["ci_high"]


def test_streams_never_logged_are_allowed_and_reported(tmp_path):
    # at 3,000 rounds many slate streams (positive logging probability) are never picked
    simulation = simulate(SimulationConfig(n_rounds=3_000, seed=0))
    write_simulation(simulation, tmp_path)
    result = tmp_path / "r.json"
    assert cli.main(["--quiet", "evaluate", "--logs", str(tmp_path / "logs.parquet"), "--policy",
                     f"better={tmp_path / 'policies' / 'better.parquet'}", "--reward", "click", "--estimators",
                     "snips,dr", "--actions", str(tmp_path / "actions.parquet"), "--out", str(result)]) == 0
    diag = json.loads(result.read_text())["policies"]["better"]["diagnostics"]
    assert 0 < diag["unlogged_mass"] < 0.5
    assert any("no logged row shows" in w for w in diag["warnings"])


def test_actions_outside_the_catalogue_are_rejected(sim, tmp_path, capsys):
    out, _ = sim
    policy = pd.read_parquet(out / "policies" / "better.parquet")
    policy.loc[policy.index[:3], "action"] = 10**6
    policy.to_parquet(tmp_path / "bad.parquet")
    code = cli.main(["--quiet", "validate", "--logs", str(out / "logs.parquet"), "--policy",
                     f"bad={tmp_path / 'bad.parquet'}", "--actions", str(out / "actions.parquet")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.parquet, column 'action': 3 rows refer to actions in neither the logs nor the " \
                          "action catalogue" in err


def test_context_patterns_never_select_the_reward(sim, tmp_path):
    # naming the reward as context would leak the logged outcome into the reward model (R^2 near 1)
    out, _ = sim
    result = tmp_path / "r.json"
    assert _evaluate(out, "--reward", "watch_seconds", "--estimators", "dr", "--context", "x_*,watch_seconds",
                     "--out", str(result), policies=("better",)) == 0
    quality = json.loads(result.read_text())["policies"]["better"]["diagnostics"]["reward_model"]
    assert quality["r2"] < 0.5
