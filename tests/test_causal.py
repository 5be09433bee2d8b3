"""The causal check against a confounded simulator with a known, heterogeneous effect."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from livegate import cli
from livegate.causal import CausalConfig, estimate_propensities, parse_graph, run_causal_check
from livegate.datasets.causal_simulator import simulate_causal
from livegate.datasets.errors import InputError

N_ROWS, SEED = 40_000, 3


@pytest.fixture(scope="module")
def confounded():
    return simulate_causal(n_rows=N_ROWS, seed=SEED)


@pytest.fixture(scope="module")
def watch_result(confounded):
    data, _ = confounded
    return run_causal_check(data, CausalConfig(treatment="recommended", outcome="watch_seconds", seed=SEED))


def test_naive_difference_is_badly_confounded(confounded, watch_result):
    _, truth = confounded
    true_ate = truth["ate"]["watch_seconds"]
    assert abs(watch_result.naive["value"] - true_ate) > 0.3 * abs(true_ate)


def test_default_estimate_recovers_the_true_effect(confounded, watch_result):
    _, truth = confounded
    true_ate = truth["ate"]["watch_seconds"]
    ate = watch_result.ate
    assert abs(ate["value"] - true_ate) <= 0.10 * abs(true_ate)
    assert ate["ci_low"] <= true_ate <= ate["ci_high"]
    # the IPW estimate with the logged propensities is consistent too: within 4 of its standard errors
    assert abs(watch_result.ipw["value"] - true_ate) <= 4 * watch_result.ipw["se"]


def test_placebo_refutation_finds_about_zero(watch_result):
    placebo = next(r for r in watch_result.refutations if r.name == "placebo_treatment")
    assert placebo.passed is True
    # a permuted treatment has no effect: within 3 standard errors of the original estimate
    assert abs(placebo.new_effect) <= 3 * watch_result.ate["se"]
    names = {r.name for r in watch_result.refutations}
    assert names == {"placebo_treatment", "random_common_cause", "data_subset", "sensitivity"}
    for r in watch_result.refutations:
        assert r.rule, r.name


def test_segment_effects_are_ordered_as_the_truth(confounded, watch_result):
    _, truth = confounded
    seg_truth = truth["segments"]["watch_seconds"]
    est = {s.segment if hasattr(s, "segment") else s["segment"]: s for s in watch_result.segments}
    value = lambda s: s.value if hasattr(s, "value") else s["value"]  # noqa: E731
    for higher, lower in [("x_is_new=true", "x_is_new=false"), ("x_popularity=low", "x_popularity=high"),
                          ("x_prime_time=true", "x_prime_time=false")]:
        assert seg_truth[higher]["value"] > seg_truth[lower]["value"]
        assert value(est[higher]) > value(est[lower]), (higher, lower)


def test_an_outcome_without_effect_is_not_significant(confounded):
    data, truth = confounded
    assert truth["ate"]["click_placebo"] == 0.0
    result = run_causal_check(data, CausalConfig(treatment="recommended", outcome="click_placebo", refuters=(),
                                                 learn_policy=False, seed=SEED))
    assert result.ate["ci_low"] <= 0.0 <= result.ate["ci_high"]
    # while the naive comparison would declare one
    assert result.naive["ci_low"] > 0


def test_document_and_learned_policy_through_the_cli(confounded, tmp_path):
    data, _ = confounded
    data.head(20_000).to_parquet(tmp_path / "logs.parquet")
    out, policy = tmp_path / "causal.json", tmp_path / "targeted.parquet"
    assert cli.main(["--quiet", "causal", "--logs", str(tmp_path / "logs.parquet"), "--treatment", "recommended",
                     "--outcome", "watch_seconds", "--out", str(out), "--policy-out", str(policy),
                     "--seed", "1"]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "livegate.causal/1"
    for key in ("treatment", "outcome", "confounders", "naive", "ate", "refutations", "segments",
                "identified_estimand", "livegate_version", "inputs"):
        assert key in doc, key
    assert "x_activity" in doc["confounders"]
    frame = pd.read_parquet(policy)
    assert set(frame.columns) >= {"decision_id", "action", "prob"}
    sums = frame.groupby("decision_id")["prob"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-9)
    # the bridge to off-policy evaluation: livegate evaluate scores the learned policy on the same logs
    result = tmp_path / "eval.json"
    assert cli.main(["--quiet", "evaluate", "--logs", str(tmp_path / "logs.parquet"), "--policy",
                     f"targeted={policy}", "--reward", "watch_seconds", "--estimators", "snips",
                     "--out", str(result)]) == 0
    assert "targeted" in json.loads(result.read_text())["policies"]


def test_non_binary_treatment_and_missing_columns_exit_2(confounded, tmp_path, capsys):
    data, _ = confounded
    bad = data.head(2_000).assign(recommended=lambda d: d["recommended"] * 2 + 1)
    bad.to_parquet(tmp_path / "bad.parquet")
    assert cli.main(["causal", "--logs", str(tmp_path / "bad.parquet"), "--treatment", "recommended",
                     "--outcome", "watch_seconds"]) == 2
    err = capsys.readouterr().err
    assert "recommended" in err and "Traceback" not in err
    assert cli.main(["causal", "--logs", str(tmp_path / "bad.parquet"), "--treatment", "nope",
                     "--outcome", "watch_seconds"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("text, fmt", [("graph [ node [ id 0 label \"a\" ] edge [ source 0 target 9 ] ]", "gml"),
                                       ("digraph { recommended -> ", "dot"),
                                       ("digraph { a -> b }", "dot")])
def test_malformed_or_unrelated_graphs_are_input_errors(text, fmt):
    with pytest.raises(InputError):
        parse_graph(text, fmt, treatment="recommended", outcome="watch_seconds")


def test_a_user_graph_replaces_the_default(confounded):
    data, truth = confounded
    dot = ("digraph { x_activity -> recommended; x_activity -> watch_seconds; x_popularity -> recommended; "
           "x_popularity -> watch_seconds; x_is_new -> recommended; x_is_new -> watch_seconds; "
           "x_prime_time -> recommended; x_prime_time -> watch_seconds; x_hour -> recommended; "
           "x_hour -> watch_seconds; x_device -> recommended; x_device -> watch_seconds; recommended -> watch_seconds }")
    graph = parse_graph(dot, "dot", treatment="recommended", outcome="watch_seconds")
    result = run_causal_check(data.head(20_000), CausalConfig(treatment="recommended", outcome="watch_seconds",
                                                              graph=graph, refuters=(), learn_policy=False))
    assert set(result.confounders) == {"x_activity", "x_popularity", "x_is_new", "x_prime_time", "x_hour", "x_device"}
    assert result.ate["ci_low"] <= truth["ate"]["watch_seconds"] * 1.15


def test_estimated_propensities_are_calibrated(confounded):
    data, _ = confounded
    sample = data.head(20_000)
    p = estimate_propensities(sample, "recommended", ["x_activity", "x_popularity", "x_prime_time", "x_is_new",
                                                      "x_device"], seed=0)
    treated = sample["recommended"].to_numpy() == 1
    p_treat = np.where(treated, p, 1 - p)  # P(T=1|x) from P(logged action|x)
    # calibration: the mean predicted probability matches the observed share within 4 standard errors
    se = np.sqrt(treated.mean() * (1 - treated.mean()) / len(p))
    assert abs(p_treat.mean() - treated.mean()) <= 4 * se
    # and they track the true propensities the simulator logged
    true_treat = np.where(treated, sample["propensity"], 1 - sample["propensity"])
    assert np.corrcoef(p_treat, true_treat)[0, 1] > 0.9


def test_same_seed_gives_byte_identical_documents(confounded):
    from livegate.datasets.io import dumps_json

    data, _ = confounded
    config = CausalConfig(treatment="recommended", outcome="watch_seconds", seed=5)
    first = dumps_json(run_causal_check(data.head(6_000), config).to_dict())
    second = dumps_json(run_causal_check(data.head(6_000), config).to_dict())
    assert first == second


def test_api_input_errors_name_the_column_and_the_rows(confounded):
    data, _ = confounded
    small = data.head(2_000)
    config = CausalConfig(treatment="recommended", outcome="watch_seconds", refuters=(), learn_policy=False)
    # NaN in the outcome: the message names the column and how many rows
    holed = small.assign(watch_seconds=small["watch_seconds"].where(small.index >= 7))
    with pytest.raises(InputError, match=r"watch_seconds.*7 rows"):
        run_causal_check(holed, config)
    # a non-binary treatment
    with pytest.raises(InputError, match="recommended"):
        run_causal_check(small.assign(recommended=small["recommended"] + 1), config)
    # missing columns, every one listed
    with pytest.raises(InputError) as info:
        run_causal_check(small.drop(columns=["watch_seconds"]),
                         CausalConfig(treatment="recommended", outcome="watch_seconds", confounders=("x_nope",)))
    assert {p.column for p in info.value.problems} >= {"watch_seconds", "x_nope"}
    # unknown estimator and refuter names are configuration errors, not crashes
    with pytest.raises(InputError, match="estimator"):
        run_causal_check(small, CausalConfig(treatment="recommended", outcome="watch_seconds", estimator="ols"))
    with pytest.raises(InputError, match="refuter"):
        run_causal_check(small, CausalConfig(treatment="recommended", outcome="watch_seconds", refuters=("magic",)))


def test_document_is_json_ready_and_marks_estimated_propensities(confounded):
    data, _ = confounded
    logs = data.head(8_000).drop(columns=["propensity"])
    result = run_causal_check(logs, CausalConfig(treatment="recommended", outcome="gift_value",
                                                 refuters=("placebo_treatment",), seed=SEED),
                              progress=lambda step, done, total: steps.append((step, done, total)))
    doc = result.to_dict()
    json.dumps(doc, allow_nan=False)  # no NaN anywhere
    assert doc["propensities"]["source"] == "estimated"
    assert any("estimated propensities" in w for w in doc["warnings"])
    assert any("not the absence of confounding" in w for w in doc["warnings"])
    assert {e for e in doc["graph"]["nodes"]} >= {"recommended", "gift_value", "x_activity"}
    assert "backdoor" in doc["identified_estimand"]
    assert [s for s, _, _ in steps][:2] == ["identify", "propensities"]
    assert set(result.policy["action"].unique()) == {0, 1}


steps: list = []


@pytest.mark.statistical
@pytest.mark.parametrize("estimator", ["dr_learner", "causal_forest"])
def test_other_estimators_recover_the_true_effect(confounded, estimator):
    data, truth = confounded
    true_ate = truth["ate"]["watch_seconds"]
    result = run_causal_check(data, CausalConfig(treatment="recommended", outcome="watch_seconds",
                                                 estimator=estimator, refuters=("sensitivity",), seed=SEED))
    assert abs(result.ate["value"] - true_ate) <= 0.10 * abs(true_ate)
    # within 3 standard errors (a wider band than the interval: forests' standard errors are approximate)
    assert abs(result.ate["value"] - true_ate) <= 3 * result.ate["se"]
    seg = {s.segment: s.value for s in result.segments}
    assert seg["x_is_new=true"] > seg["x_is_new=false"]
    assert seg["x_popularity=low"] > seg["x_popularity=high"]


@pytest.mark.statistical
def test_learned_policy_gains_over_recommending_everyone_under_the_truth(confounded, watch_result):
    from livegate.datasets.causal_simulator import watch_effect

    data, _ = confounded
    tau = watch_effect(data["x_is_new"], data["x_popularity"], data["x_prime_time"])
    pi = watch_result.policy[watch_result.policy["action"] == 1].set_index("decision_id")["prob"]
    pi = pi.reindex(data["decision_id"]).to_numpy()
    # true value of the learned policy minus recommending to everybody: it withholds where tau < 0
    assert watch_result.policy_summary["share_recommended"] < 1.0
    assert np.mean((pi - 1.0) * tau) > 0
