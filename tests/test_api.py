"""The Python API on DataFrames, Arrow tables and paths: the CLI's engine gives the CLI's numbers."""
from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

import livegate
from livegate.datasets import InputError
from livegate.datasets.io import dumps_json
from conftest import run_cli


def _without_provenance(document: dict) -> dict:
    return {k: v for k, v in document.items() if k not in ("inputs", "livegate_version")}


@pytest.fixture(scope="module")
def frames(sim_files):
    logs = pq.read_table(sim_files.logs).to_pandas()
    policies = {name: pq.read_table(path).to_pandas() for name, path in sim_files.policies.items()}
    return logs, policies


def test_dataframes_give_the_cli_document(sim_files, frames, tmp_path):
    """Same inputs as DataFrames and as files: identical evaluation documents (apart from where the
    inputs came from), including intervals, diagnostics and metric definitions."""
    logs, policies = frames
    out = tmp_path / "cli.json"
    cli = run_cli("evaluate", "--logs", sim_files.logs, "--policy", f"better={sim_files.policies['better']}",
                  "--reward", "watch_seconds", "--reward", "engagement=watch_seconds + 50*gift_value",
                  "--estimators", "ips:clip=50,snips,dr", "--seed", 3, "--out", out)
    assert cli.code == 0, cli.err
    result = livegate.evaluate(logs, {"better": policies["better"]},
                               rewards=["watch_seconds", "engagement=watch_seconds + 50*gift_value"],
                               estimators=[livegate.IPS(clip=50), livegate.SNIPS(), "dr"], seed=3)
    api_doc = json.loads(dumps_json(result.to_dict()))  # an open interval end: inf in memory, null in JSON
    cli_doc = json.loads(out.read_text())
    assert _without_provenance(api_doc) == _without_provenance(cli_doc)
    assert api_doc["metric_definitions"] == {"watch_seconds": "watch_seconds",
                                             "engagement": "watch_seconds + 50*gift_value"}
    assert api_doc["inputs"]["logs"]["kind"] == "DataFrame" and api_doc["inputs"]["logs"]["path"] is None


def test_to_frame_is_tidy_and_matches_the_document(frames):
    logs, policies = frames
    result = livegate.evaluate(logs, {"better": policies["better"], "worse": policies["worse"]},
                               rewards="watch_seconds", estimators="ips,snips")
    frame = result.to_frame()
    assert len(frame) == 3 * 2  # logging, better, worse x two estimators
    assert {"policy", "metric", "estimator", "value", "se", "ci_low", "ci_high", "difference",
            "difference_ci_low", "difference_ci_high", "ess"} <= set(frame.columns)
    row = frame[(frame.policy == "better") & (frame.estimator == "snips")].iloc[0]
    estimate = result.estimate("better", "snips")
    assert row.value == estimate["value"] and row.ci_low == estimate["ci_low"]
    logging = frame[(frame.policy == "logging") & (frame.estimator == "ips")].iloc[0]
    assert logging.value == pytest.approx(logs["watch_seconds"].mean(), rel=1e-12)  # IPS of the logging policy
    assert "<table" in result._repr_html_()


def test_estimator_objects_are_their_identifiers():
    assert livegate.IPS(clip=20).identifier == "ips:clip=20"
    assert livegate.SwitchDR(tau=5).identifier == "switch-dr:tau=5"
    assert livegate.DRos(lambda_=100).identifier == "dr-os:lambda=100"
    assert repr(livegate.IPS(clip=20)) == "IPS(clip=20.0)"
    with pytest.raises(InputError, match="clip must be positive"):
        livegate.IPS(clip=0)
    with pytest.raises(InputError, match="neither an estimator identifier nor an estimator"):
        livegate.evaluate(pd.DataFrame(), {}, estimators=[3.5])


def test_a_user_reward_model_is_cross_fitted(frames, sim_files):
    """A scikit-learn regressor replaces the default model: DM and DR change, IPS does not, the
    document records which model it was, and DR stays consistent (its interval covers the truth,
    which DR guarantees through the logged propensities whatever the model)."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.impute import SimpleImputer

    logs, policies = frames
    kwargs = dict(rewards="watch_seconds", estimators="ips,dm,dr", context=["x_activity", "x_hour", "x_taste_*"])
    default = livegate.evaluate(logs, {"better": policies["better"]}, **kwargs)
    ridge = livegate.evaluate(logs, {"better": policies["better"]}, reward_model=make_pipeline(SimpleImputer(), Ridge()),
                              **kwargs)
    assert ridge.estimate("better", "ips") == default.estimate("better", "ips")
    assert ridge.estimate("better", "dm")["value"] != default.estimate("better", "dm")["value"]
    assert "Ridge" in ridge.to_dict()["config"]["reward_model"]
    dr = ridge.estimate("better", "dr")
    truth = sim_files.simulation.truth["policies"]["better"]["watch_seconds"]
    assert dr["ci_low"] <= truth <= dr["ci_high"]


def test_a_classifier_for_a_non_binary_reward_is_an_input_error(frames):
    from sklearn.linear_model import LogisticRegression

    logs, policies = frames
    with pytest.raises(InputError, match="classifier but the reward is not 0/1"):
        livegate.evaluate(logs, {"better": policies["better"]}, rewards="watch_seconds", estimators="dr",
                          reward_model=LogisticRegression())


def test_own_column_names_with_column_mapping(sim_files, tmp_path):
    """An analyst's logs: string ids named `impression`, streams named `stream_id`, the reward called
    `watch_time`, the timestamp `event_time`; mapped with --column alone, they give the same estimates."""
    logs = pq.read_table(sim_files.logs).to_pandas()
    policy = pq.read_table(sim_files.policies["better"]).to_pandas()
    renamed = logs.rename(columns={"decision_id": "impression", "action": "stream_id",
                                   "watch_seconds": "watch_time", "timestamp": "event_time"})
    renamed["impression"] = "imp-" + renamed["impression"].astype(str)
    own_policy = policy.rename(columns={"decision_id": "impression", "action": "stream_id"})
    own_policy["impression"] = "imp-" + own_policy["impression"].astype(str)
    renamed.to_parquet(tmp_path / "own.parquet")
    own_policy.to_parquet(tmp_path / "own_policy.parquet")
    columns = ["--column", "decision_id=impression", "--column", "action=stream_id", "--column", "timestamp=event_time"]
    check = run_cli("validate", "--logs", tmp_path / "own.parquet", "--policy", f"better={tmp_path / 'own_policy.parquet'}",
                    "--reward", "watch_time", *columns)
    assert check.code == 0, check.err
    assert "warning" not in check.out
    out = tmp_path / "own.json"
    run = run_cli("evaluate", "--logs", tmp_path / "own.parquet", "--policy", f"better={tmp_path / 'own_policy.parquet'}",
                  "--reward", "watch_time", "--estimators", "snips", *columns, "--out", out)
    assert run.code == 0, run.err
    document = json.loads(out.read_text())
    reference = livegate.evaluate(logs, {"better": policy}, rewards="watch_seconds", estimators="snips")
    assert document["policies"]["better"]["estimates"]["snips"]["value"] == \
        pytest.approx(reference.estimate("better", "snips")["value"], rel=1e-12)
    assert document["time_windows"] is not None  # event_time was used as the timestamp
    unknown = run_cli("validate", "--logs", tmp_path / "own.parquet", "--reward", "watch_time", "--column", "stream=x")
    assert unknown.code == 2 and "stream" in unknown.err and "Traceback" not in unknown.err


def _better_gate(sim_files, extra: str = "") -> str:
    """A gate.toml body: the simulator's `better` candidate must improve watch_seconds."""
    return f"""
[data]
logs = "{sim_files.logs}"
[evaluation]
estimator = "snips"
[[candidate]]
name = "better"
policy = "{sim_files.policies['better']}"
[[criterion]]
metric = "watch_seconds"
rule = "improves"
{extra}"""

def test_run_gate_returns_the_decision_the_cli_exits_with(sim_files, tmp_path):
    config = tmp_path / "gate.toml"
    config.write_text(_better_gate(sim_files))
    decision = livegate.run_gate(config)
    cli = run_cli("gate", "--config", config, "--out", tmp_path / "gate.json")
    assert cli.code == decision.exit_code
    assert decision.exit_code in (0, 1, 3) and decision.decision in ("pass", "fail", "inconclusive")
    document = json.loads((tmp_path / "gate.json").read_text())
    # through the documents' own serialiser: an open interval end (robust intervals) is inf in memory, null in JSON
    assert _without_provenance(json.loads(dumps_json(decision.to_dict()))) == _without_provenance(document)
    frame = decision.to_frame()
    assert list(frame.candidate) == ["better"] and frame.decision.iloc[0] == decision.candidates[0]["decision"]
    assert decision.evaluation.estimate("better", "snips")["value"] == \
        document["evaluation"]["policies"]["better"]["estimates"]["snips"]["value"]


def test_gate_reads_own_column_names_from_data_columns(sim_files, tmp_path):
    logs = pq.read_table(sim_files.logs).to_pandas()
    logs.rename(columns={"action": "stream_id", "decision_id": "impression"}).to_parquet(tmp_path / "own.parquet")
    policy = pq.read_table(sim_files.policies["better"]).to_pandas()
    policy.rename(columns={"decision_id": "impression"}).to_parquet(tmp_path / "better.parquet")
    body = """
[data]
logs = "own.parquet"
[data.columns]
action = "stream_id"
decision_id = "impression"
[[candidate]]
name = "better"
policy = "better.parquet"
[[criterion]]
metric = "watch_seconds"
rule = "improves"
"""
    (tmp_path / "gate.toml").write_text(body)
    own = livegate.run_gate(tmp_path / "gate.toml")
    (tmp_path / "plain.toml").write_text(body.replace("own.parquet", str(sim_files.logs))
                                         .replace('action = "stream_id"\ndecision_id = "impression"\n', "")
                                         .replace('"better.parquet"', f'"{sim_files.policies["better"]}"'))
    plain = livegate.run_gate(tmp_path / "plain.toml")
    assert own.to_frame().drop(columns="reason").equals(plain.to_frame().drop(columns="reason"))
    (tmp_path / "bad.toml").write_text(body.replace('action = "stream_id"', 'stream = "stream_id"'))
    bad = run_cli("gate", "--config", tmp_path / "bad.toml")
    assert bad.code == 2 and "[data.columns] 'stream' is not a column role" in bad.err


def test_unknown_causal_refutation_is_a_configuration_error(sim_files, tmp_path, monkeypatch):
    """A misspelt refutation used to fail the gate (exit 1, 'refutations not run'); it is exit 2,
    before any data is read."""
    from livegate import datasets
    monkeypatch.setattr(datasets, "load_logs", lambda *a, **k: pytest.fail("read the data"))
    (tmp_path / "gate.toml").write_text(_better_gate(sim_files, """[causal]
treatment = "recommended"
outcome = "watch_seconds"
refutations = ["placebo_treatment", "nosuch"]
estimator = "forest"
"""))
    result = run_cli("gate", "--config", tmp_path / "gate.toml")
    assert result.code == 2
    assert "[causal] refutations: 'nosuch' is not a refutation" in result.err
    assert "[causal] estimator: 'forest' is unknown" in result.err


def test_causal_check_on_a_dataframe_exposes_the_model_and_a_tidy_frame():
    from livegate.datasets.causal_simulator import simulate_causal

    data, _ = simulate_causal(n_rows=3000, seed=2)
    result = livegate.causal_check(data, treatment="recommended", outcome="watch_seconds", seed=2)
    frame = result.to_frame()
    effect = frame[frame.estimate == "effect"].iloc[0]
    assert effect.value == result.ate["value"] and effect.ci_low <= effect.value <= effect.ci_high
    assert hasattr(result.model, "effect")  # the fitted EconML estimator
    assert "<table" in result._repr_html_()
