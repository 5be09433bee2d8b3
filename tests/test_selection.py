"""`auto`: the automatic estimator choice (ope/selection.py), its intervals, the gate and the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from livegate import cli
from livegate.datasets.simulator import SimulationConfig, simulate, write_simulation
from livegate.ope import EvaluationConfig, selection
from livegate.ope.estimators import RowInputs, parse_estimator
from livegate.ope.evaluate import IntervalEngine
from livegate.ope.inference import z_quantile

K = 5  # actions


def bandit(n: int, seed: int, model_bias: float = 0.0):
    """Logs of a uniform logging policy over K actions and 3 contexts, a target policy putting 0.6 on
    the best action, Bernoulli rewards with known means, and a reward model off by `model_bias`.
    Returns (inputs by policy, true values by policy)."""
    rng = np.random.default_rng(seed)
    mean = 0.1 + 0.2 * ((np.arange(3)[:, None] + np.arange(K)[None, :]) % 3) / 2  # 0.1, 0.2, 0.3
    target = np.full((3, K), 0.4 / (K - 1))
    target[np.arange(3), np.argmax(mean, axis=1)] = 0.6
    x = rng.integers(0, 3, n)
    a = rng.integers(0, K, n)
    r = (rng.random(n) < mean[x, a]).astype(float)
    w = target[x, a] * K
    q_logged = mean[x, a] + model_bias
    q_target = (target * mean).sum(axis=1)[x] + model_bias
    constant = np.full(n, r.mean())
    inputs = {"logging": RowInputs(reward=r, weight=np.broadcast_to(1.0, n), q_logged=q_logged, q_pi=q_logged,
                                   unit_weight=True, q_constant=constant),
              "target": RowInputs(reward=r, weight=w, q_logged=q_logged, q_pi=q_target, q_constant=constant)}
    truth = {"logging": float(mean.mean()), "target": float((target * mean).sum(axis=1).mean())}
    return inputs, truth


def _choose(inputs, model_note=None, ci="normal", seed=0):
    config = EvaluationConfig(estimators=("auto",), ci=ci, seed=seed)
    choices = selection.choose(inputs, "logging", model_note=model_note, ratios=ci != "bernstein", alpha=0.05,
                               seed=seed, method=selection.method_for(ci))
    choices.set_engine(IntervalEngine(choices.terms, config))
    return choices


def test_far_off_biased_candidates_leave_an_unbiased_choice():
    # a reward model 0.5 too high (rewards are 0/1 with means 0.1-0.3): dm, and every switched or
    # shrunk candidate leaning on it, is far from the unbiased ones
    inputs, truth = bandit(20_000, seed=1, model_bias=0.5)
    choice = _choose(inputs).value["target"]
    assert choice.chosen.split(":")[0] in selection.ANCHORS, choice.selection.reason
    estimate = selection.auto_estimate(choice, 0.05)
    assert abs(estimate["value"] - truth["target"]) < 4 * estimate["se"]
    rejected = [c for c in choice.selection.candidates if c["status"] == "rejected"]
    assert len(rejected) == 1 and "differs from" in choice.selection.reason


def test_when_all_candidates_agree_the_narrowest_is_chosen():
    # an exact reward model: every candidate is unbiased, so the walk reaches dm, the quietest
    inputs, _ = bandit(20_000, seed=2, model_bias=0.0)
    choice = _choose(inputs).value["target"]
    se = {c["estimator"]: c["se"] for c in choice.selection.candidates}
    assert choice.chosen == "dm" and se["dm"] == min(se.values())
    assert all(c["status"] == "accepted" for c in choice.selection.candidates)


def test_a_model_worse_than_a_constant_gives_way_to_the_constant_model():
    quality = {"kind": "classifier", "metric_name": "log_loss", "value": 0.40, "log_loss_constant": 0.39, "r2": -0.01}
    reward = np.array([0.0, 1.0, 0.0, 1.0])
    note = selection.model_verdict(quality, reward, np.full(4, 0.5))
    assert note and "worse than a constant on held-out folds" in note
    assert selection.model_verdict({**quality, "worse_than_constant": False}, reward, np.full(4, 0.5)) is None
    assert "no reward model" in selection.model_verdict(None, reward, None)
    # given predictions (no quality) are scored on the rows
    assert "on the logged rows" in selection.model_verdict(None, reward, 1.0 - reward)

    inputs, _ = bandit(5_000, seed=3, model_bias=0.0)
    choice = _choose(inputs, model_note=note).value["target"]
    modelled = [c["estimator"] for c in choice.selection.candidates
                if parse_estimator(c["estimator"]).name in selection.MODEL_NAMES]
    assert modelled and all(m.endswith("model=constant") for m in modelled)
    assert any("worse than a constant" in n for n in choice.selection.left_out)


def test_evaluate_leaves_out_a_reward_model_worse_than_a_constant(sim_dir):
    from sklearn.dummy import DummyRegressor

    from livegate.api import evaluate

    result = evaluate(str(sim_dir / "logs.parquet"), {"better": str(sim_dir / "policies" / "better.parquet")},
                      ["watch_seconds"], "dr,auto", reward_model=DummyRegressor(strategy="constant", constant=1e4))
    doc = result.to_dict()
    quality = doc["policies"]["better"]["diagnostics"]["reward_model"]
    assert quality.get("worse_than_constant", quality["r2"] < 0)
    choice = doc["policies"]["better"]["estimates"]["auto"]["selection"]
    assert all("model=constant" in c["estimator"] or c["estimator"] in ("ips", "snips")
               for c in choice["candidates"])
    assert "dr" in doc["policies"]["better"]["estimates"]  # a named dr is still computed, as asked


def test_bernstein_intervals_choose_among_plain_means_with_bonferroni():
    inputs, _ = bandit(5_000, seed=4, model_bias=0.05)
    choices = _choose(inputs, ci="bernstein")
    for choice in [*choices.value.values(), *choices.difference.values()]:
        assert not any(c["estimator"].split(":")[0] in ("snips", "sndr") for c in choice.selection.candidates)
        level = choice.level(choice.coefs)
        assert level.method == "bonferroni"
        assert level.per_comparison_alpha(0.05) == pytest.approx(0.05 / level.size)


def test_simultaneous_critical_value_lies_between_one_interval_and_bonferroni():
    rng = np.random.default_rng(0)
    independent = selection.SimultaneousLevel(np.eye(6), seed=0)
    sidak = z_quantile(1 - (1 - 0.05) ** (1 / 6))
    assert independent.critical(0.05) == pytest.approx(sidak, abs=0.02)
    identical = selection.SimultaneousLevel(np.ones((6, 6)), seed=0)  # one estimate, six times
    assert identical.critical(0.05) == pytest.approx(z_quantile(0.05), abs=0.02)
    a = rng.normal(size=(6, 6))
    level = selection.SimultaneousLevel(a @ a.T, seed=0)
    assert z_quantile(0.05) <= level.critical(0.05) <= z_quantile(0.05 / 6)
    # p-values adjusted consistently with the intervals: at the per-comparison level, p equals alpha
    per = level.per_comparison_alpha(0.05)
    assert level.adjusted_p(per) == pytest.approx(0.05, abs=0.004)


@pytest.mark.statistical
def test_intervals_after_selection_cover_the_truth():
    # a reward model biased by +0.04 (rewards' means 0.1-0.3, se of dr about 0.006 at 4,000 rows):
    # the rule often picks a biased candidate, yet the interval must cover the true value and the
    # true difference at 95% (tolerance: 3 binomial standard errors)
    reps, covered_value, covered_difference, biased = 150, 0, 0, 0
    for rep in range(reps):
        inputs, truth = bandit(4_000, seed=1000 + rep, model_bias=0.04)
        choices = _choose(inputs, seed=rep)
        value = selection.auto_estimate(choices.value["target"], 0.05)
        diff = selection.auto_difference(choices.difference["target"], 0.05)
        covered_value += value["ci_low"] <= truth["target"] <= value["ci_high"]
        covered_difference += diff["ci_low"] <= truth["target"] - truth["logging"] <= diff["ci_high"]
        biased += choices.value["target"].chosen.split(":")[0] not in selection.ANCHORS
    floor = 0.95 - 3 * math.sqrt(0.95 * 0.05 / reps)
    assert covered_value / reps >= floor and covered_difference / reps >= floor
    assert biased > reps // 4, "the scenario must make the rule choose biased candidates"


# --- end to end: evaluate, the gate and the CLI ---------------------------------------------------------

@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("auto-sim")
    write_simulation(simulate(SimulationConfig(n_rounds=12_000, seed=3)), out)
    return out


def _evaluate_cli(sim_dir: Path, *extra: str) -> int:
    return cli.main(["evaluate", "--logs", str(sim_dir / "logs.parquet"), "--reward", "click",
                     "--policy", f"better={sim_dir / 'policies' / 'better.parquet'}", *extra])


def test_cli_estimators_auto_exits_0_and_shows_the_choice(sim_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert _evaluate_cli(sim_dir, "--estimators", "ips,auto", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "automatic estimator choice" in printed and "click better: value " in printed
    doc = json.loads(out.read_text())
    auto = doc["policies"]["better"]["estimates"]["auto"]
    chosen = auto["selected"]
    assert chosen in [c["estimator"] for c in auto["selection"]["candidates"]]
    assert auto["ci_low"] <= auto["value"] <= auto["ci_high"]
    assert doc["policies"]["better"]["vs_baseline"]["auto"]["selected"]
    assert doc["selection"]["rule"] and "ips" in doc["policies"]["better"]["estimates"]


def test_auto_is_deterministic_given_the_seed(sim_dir, tmp_path):
    docs = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        assert _evaluate_cli(sim_dir, "--quiet", "--estimators", "auto", "--seed", "7", "--out", str(out)) == 0
        doc = json.loads(out.read_text())
        docs.append({k: doc[k] for k in ("metrics", "selection")})
    assert docs[0] == docs[1]


def test_auto_at_the_session_level_is_a_configuration_error(sim_dir, capsys):
    assert _evaluate_cli(sim_dir, "--estimators", "auto", "--sessions") == 2
    assert "'auto' chooses among the per-decision estimators" in capsys.readouterr().err


def test_gate_with_estimator_auto_decides_on_the_chosen_difference(sim_dir, tmp_path, capsys):
    config = tmp_path / "gate.toml"
    config.write_text(f'[data]\nlogs = "{sim_dir / "logs.parquet"}"\n[evaluation]\nestimator = "auto"\n'
                      f'[[candidate]]\nname = "better"\npolicy = "{sim_dir / "policies" / "better.parquet"}"\n'
                      f'[[candidate]]\nname = "worse"\npolicy = "{sim_dir / "policies" / "worse.parquet"}"\n'
                      '[[criterion]]\nmetric = "watch_seconds"\nrule = "improves"\nmin_effect = 0.0\n'
                      '[[criterion]]\nmetric = "click"\nrule = "non_inferior"\nmargin = 0.05\nrelative = true\n')
    out = tmp_path / "gate.json"
    code = cli.main(["gate", "--config", str(config), "--out", str(out), "--report", str(tmp_path / "g.html"),
                     "--markdown", str(tmp_path / "g.md")])
    printed = capsys.readouterr().out
    assert code == 1, printed  # better passes both, worse fails
    doc = json.loads(out.read_text())
    assert doc["estimator"] == "auto"
    decisions = {c["name"]: c["decision"] for c in doc["candidates"]}
    assert decisions == {"better": "pass", "worse": "fail"}
    evaluation = doc["evaluation"]["metrics"]
    for cand in doc["candidates"]:
        for crit in cand["criteria"]:
            vs = evaluation[crit["metric"]]["policies"][cand["name"]]["vs_baseline"]["auto"]
            assert crit["selected"] == vs["selected"] and crit["difference"] == pytest.approx(vs["difference"])
            low, high = (-math.inf if crit["ci_low"] is None else crit["ci_low"],  # JSON writes an open end as null
                         math.inf if crit["ci_high"] is None else crit["ci_high"])
            assert low <= crit["difference"] <= high
    assert "(auto: " in printed
    assert "Automatic estimator choice" in (tmp_path / "g.html").read_text()
    assert "Automatic estimator choice" in (tmp_path / "g.md").read_text()


def test_gate_toml_rejects_auto_for_sessions(tmp_path):
    from livegate.datasets import InputError
    from livegate.datasets.gate_config import load_gate_config

    config = tmp_path / "gate.toml"
    config.write_text('[data]\nlogs = "logs.parquet"\n[evaluation]\nestimator = "auto"\nlevel = "session"\n'
                      '[[candidate]]\nname = "a"\n[[criterion]]\nmetric = "click"\nrule = "improves"\n')
    with pytest.raises(InputError, match="chooses among the per-decision estimators"):
        load_gate_config(config)
