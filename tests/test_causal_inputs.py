"""The causal check's inputs: one validation path for files and DataFrames, a given propensity column,
segments of the effect modifiers, and the fitted EconML model on the result."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from livegate import cli
from livegate.causal import CausalConfig, parse_graph, run_causal_check
from livegate.causal.segments import MAX_LEVELS, segment_masks
from livegate.datasets.causal_frame import read_causal_frame, validate_causal_frame
from livegate.datasets.causal_simulator import simulate_causal
from livegate.datasets.errors import InputError

SEED = 4
QUICK = dict(refuters=(), learn_policy=False, seed=SEED)  # one LinearDML fit, no refuters
RENAMED = {"x_is_new": "is_new_user", "x_popularity": "streamer_popularity", "x_prime_time": "prime_time"}
RENAMED_CONFOUNDERS = ("x_activity", "x_hour", "prime_time", "streamer_popularity", "is_new_user", "x_device")


@pytest.fixture(scope="module")
def sim():
    return simulate_causal(n_rows=20_000, seed=SEED)


@pytest.fixture(scope="module")
def small(sim):
    return sim[0].head(3_000).copy()


def _config(**kw) -> CausalConfig:
    return CausalConfig(**{"treatment": "recommended", "outcome": "watch_seconds", **QUICK, **kw})


# --- one validation path -------------------------------------------------------------------------

def test_file_dataframe_and_table_select_the_same_columns(small, tmp_path):
    path = tmp_path / "logs.parquet"
    small.to_parquet(path)
    config = _config()
    from_file = read_causal_frame(path, config)
    from_frame = read_causal_frame(small, config)
    from_table = read_causal_frame(pa.Table.from_pandas(small, preserve_index=False), config)
    assert list(from_file.columns) == list(from_frame.columns) == list(from_table.columns)
    # the check's columns and keys, never another outcome (it must not be adjusted for)
    assert {"recommended", "watch_seconds", "x_activity", "x_device", "decision_id",
            "propensity"} <= set(from_file.columns)
    assert "gift_value" not in from_file.columns and "click_placebo" not in from_file.columns
    pd.testing.assert_frame_equal(from_file, from_frame.reset_index(drop=True), check_dtype=False)


def test_a_missing_treatment_gives_the_same_error_for_a_file_and_a_dataframe(small, tmp_path):
    path = tmp_path / "logs.parquet"
    small.drop(columns=["recommended"]).to_parquet(path)
    config = _config()
    with pytest.raises(InputError) as from_file:
        read_causal_frame(path, config)
    with pytest.raises(InputError) as from_frame:
        read_causal_frame(small.drop(columns=["recommended"]), config, name=str(path))
    assert str(from_file.value) == str(from_frame.value)
    assert [p.column for p in from_file.value.problems] == ["recommended"]
    assert str(path) in str(from_file.value)
    # in-memory data is named "logs"; run_causal_check reports it the same way
    with pytest.raises(InputError) as direct:
        run_causal_check(small.drop(columns=["recommended"]), config)
    assert str(direct.value) == str(from_frame.value).replace(str(path), "logs")


@pytest.mark.parametrize("column, bad, message", [
    ("x_activity", np.inf, "infinite"),        # crashed inside the first stage before
    ("x_activity", np.nan, "missing"),
    ("recommended", np.nan, "missing"),
    ("watch_seconds", -np.inf, "infinite"),
])
def test_nan_and_inf_are_input_errors_naming_the_column_and_rows(small, tmp_path, column, bad, message):
    holed = small.copy()
    holed[column] = holed[column].astype(float)
    holed.loc[holed.index[:6], column] = bad
    path = tmp_path / "holed.parquet"
    holed.to_parquet(path)
    for call in (lambda: read_causal_frame(path, _config()), lambda: run_causal_check(holed, _config())):
        with pytest.raises(InputError, match=rf"column '{column}': 6 rows are {message}") as info:
            call()
        assert [p.column for p in info.value.problems] == [column]


def test_every_problem_is_reported_at_once(small):
    holed = small.assign(x_activity=small["x_activity"].where(small.index >= 3, np.inf),
                         x_popularity=small["x_popularity"].where(small.index >= 5),
                         recommended=small["recommended"] + 1)
    with pytest.raises(InputError) as info:
        validate_causal_frame(holed, _config())
    assert {(p.column, p.rows) for p in info.value.problems} >= {("x_activity", 3), ("x_popularity", 5),
                                                                   ("recommended", int(small["recommended"].sum()))}


def test_a_default_confounder_as_treatment_is_an_input_error(small, tmp_path, capsys):
    with pytest.raises(InputError, match="x_prime_time.*confounder of the default live-stream graph"):
        run_causal_check(small, _config(treatment="x_prime_time"))
    with pytest.raises(InputError, match="names the treatment 'recommended' as a confounder"):
        run_causal_check(small, _config(confounders=("x_activity", "recommended")))


def test_a_default_confounder_as_treatment_exits_2_in_the_cli(small, tmp_path, capsys):
    path = tmp_path / "logs.parquet"
    small.to_parquet(path)
    assert cli.main(["causal", "--logs", str(path), "--treatment", "x_prime_time", "--outcome", "watch_seconds"]) == 2
    err = capsys.readouterr().err
    assert "x_prime_time" in err and "Traceback" not in err


def test_graph_nodes_without_a_column_are_optional_when_reading(small):
    graph = parse_graph("digraph { x_activity -> recommended; x_activity -> watch_seconds; mood -> watch_seconds; "
                        "recommended -> watch_seconds }", "dot", treatment="recommended", outcome="watch_seconds")
    frame = read_causal_frame(small, _config(graph=graph))
    assert "mood" not in frame.columns and "x_activity" in frame.columns


def test_non_dataframe_input_is_an_input_error():
    with pytest.raises(InputError, match="must be a pandas DataFrame"):
        run_causal_check([[1, 2]], _config())
    with pytest.raises(InputError, match="must be a Parquet path, a pandas DataFrame or a pyarrow Table"):
        read_causal_frame(42, _config())


# --- a given propensity column -------------------------------------------------------------------

def _with_p_treat(data: pd.DataFrame) -> pd.DataFrame:
    """The simulator logs P(logged action|x); P(T=1|x) is that for treated rows and 1 - that otherwise."""
    treated = data["recommended"].to_numpy() == 1
    return data.assign(p_treat=np.where(treated, data["propensity"], 1 - data["propensity"]))


def test_the_ipw_estimate_uses_the_given_propensity_column(sim):
    data, truth = sim
    data = _with_p_treat(data.head(8_000)).drop(columns=["propensity"])
    result = run_causal_check(data, _config(propensity="p_treat"))
    y, t, p = data["watch_seconds"].to_numpy(), data["recommended"].to_numpy(), data["p_treat"].to_numpy()
    hajek = (np.sum(t * y / p) / np.sum(t / p)) - (np.sum((1 - t) * y / (1 - p)) / np.sum((1 - t) / (1 - p)))
    horvitz_thompson = np.mean(t * y / p - (1 - t) * y / (1 - p))
    assert result.ipw["value"] == pytest.approx(hajek, rel=1e-12)
    assert result.ipw["horvitz_thompson"]["value"] == pytest.approx(horvitz_thompson, rel=1e-12)
    # with the true propensities IPW is unbiased: within 4 of its standard errors of the true effect
    assert abs(result.ipw["value"] - truth["ate"]["watch_seconds"]) <= 4 * result.ipw["se"]
    doc = result.to_dict()
    assert doc["propensity_source"] == "column p_treat"
    assert doc["propensities"]["source"] == "column"
    assert doc["propensities"]["min"] == pytest.approx(p.min())
    assert "EconML takes no known propensities" in doc["propensities"]["learners"]
    assert not any("estimated propensities" in w for w in doc["warnings"])


@pytest.mark.parametrize("bad, message", [(np.nan, "6 rows are missing"), (0.0, "6 rows lie outside \\(0, 1\\)"),
                                          (1.0, "6 rows lie outside \\(0, 1\\)"), (1.5, "6 rows lie outside")])
def test_a_bad_propensity_column_is_an_input_error(small, bad, message):
    data = _with_p_treat(small)
    data.loc[data.index[:6], "p_treat"] = bad
    with pytest.raises(InputError, match=f"column 'p_treat': {message}"):
        run_causal_check(data, _config(propensity="p_treat"))


def test_a_propensity_column_must_exist_and_be_numeric(small):
    with pytest.raises(InputError, match="column 'p_treat': is missing"):
        run_causal_check(small, _config(propensity="p_treat"))
    with pytest.raises(InputError, match="column 'p_treat': must be numeric"):
        run_causal_check(small.assign(p_treat="high"), _config(propensity="p_treat"))


# --- segments of the effect modifiers ------------------------------------------------------------

@pytest.fixture(scope="module")
def renamed_result(sim):
    data, _ = sim
    renamed = data.rename(columns=RENAMED)
    return run_causal_check(renamed, _config(confounders=RENAMED_CONFOUNDERS,
                                             effect_modifiers=("is_new_user", "streamer_popularity", "prime_time")))


def test_without_default_segment_columns_the_effect_modifiers_are_segmented(renamed_result):
    doc = renamed_result.to_dict()
    assert doc["config"]["segments_from"] == "effect_modifiers"
    labels = [s["segment"] for s in doc["segments"]]
    assert labels == ["is_new_user=true", "is_new_user=false", "streamer_popularity=low", "streamer_popularity=mid",
                      "streamer_popularity=high", "prime_time=true", "prime_time=false"]
    mid = next(s for s in doc["segments"] if s["segment"] == "streamer_popularity=mid")
    low, high = mid["definition"]["from"], mid["definition"]["below"]
    assert mid["description"] == f"streamer_popularity in [{low:.4g}, {high:.4g})"
    assert any("effect modifiers' values" in n for n in doc["notes"])


def test_effect_modifier_segments_recover_the_true_heterogeneous_effects(sim, renamed_result):
    _, truth = sim
    seg_truth = truth["segments"]["watch_seconds"]
    back = {v: k for k, v in RENAMED.items()}
    for s in renamed_result.segments:
        column, level = s.segment.split("=")
        true = seg_truth[f"{back[column]}={level}"]["value"]
        assert abs(s.value - true) <= 4 * s.se, (s.segment, s.value, s.se, true)
    est = {s.segment: s.value for s in renamed_result.segments}
    assert est["is_new_user=true"] > est["is_new_user=false"]
    assert est["streamer_popularity=low"] > est["streamer_popularity=mid"] > est["streamer_popularity=high"]
    assert est["prime_time=true"] > est["prime_time=false"]


def test_two_effect_modifiers_of_the_issue_give_their_segments(sim):
    data, _ = sim
    result = run_causal_check(data.head(5_000).rename(columns=RENAMED),
                              _config(confounders=RENAMED_CONFOUNDERS,
                                      effect_modifiers=("is_new_user", "streamer_popularity")))
    assert {s.column for s in result.segments} == {"is_new_user", "streamer_popularity"}
    assert len(result.segments) == 5


def test_segment_rules_for_levels_and_their_cap():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"city": np.array([f"c{i:02d}" for i in range(25)])[rng.integers(0, 25, 2_000)],
                          "tier": rng.integers(0, 4, 2_000), "flag": rng.random(2_000) < 0.3})
    masks, warnings = segment_masks(frame, ["city", "tier", "flag"])
    by_column = {}
    for label, column, mask, _ in masks:
        by_column.setdefault(column, []).append(label)
    assert len(by_column["city"]) == MAX_LEVELS
    assert any("city has 25 levels" in w and f"{MAX_LEVELS} most frequent" in w for w in warnings)
    assert by_column["tier"] == ["tier=0", "tier=1", "tier=2", "tier=3"]  # few numeric values: one per value
    assert by_column["flag"] == ["flag=true", "flag=false"]


# --- the fitted EconML model ---------------------------------------------------------------------

def test_the_fitted_econml_model_is_exposed(sim):
    data, _ = sim
    frame = data.head(5_000)
    result = run_causal_check(pa.Table.from_pandas(frame, preserve_index=False), _config())
    from econml.dml import LinearDML

    assert isinstance(result.model, LinearDML)
    X = result.effect_modifier_matrix(frame)
    assert X.shape == (len(frame), len(result.model_info["X_columns"]))
    cate = result.model.effect(X, T0=0, T1=1)
    # the model's average CATE over the rows is reported next to the augmented ATE (what DoWhy reports)
    assert np.mean(cate) == pytest.approx(result.ate["cate_average"]["value"], rel=1e-9)
    assert np.mean(cate) == pytest.approx(result.ate["dowhy_value"], rel=1e-9)
    low, high = result.model.effect_interval(X, T0=0, T1=1, alpha=0.05)
    assert np.all(low <= cate) and np.all(cate <= high)
    assert result.model.sensitivity_summary() is not None
    doc = result.to_dict()
    json.dumps(doc, allow_nan=False)
    assert doc["model"]["class"] == "LinearDML"
    assert doc["model"]["X_columns"] == ["x_is_new", "x_popularity", "x_prime_time"]
    assert ", model=" not in repr(result)  # the fitted object is left out of the repr
