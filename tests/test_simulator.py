"""Tests of the live-stream simulator: data contract, exact ground truth, confounding, determinism."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livegate.datasets.errors import InputError
from livegate.datasets.simulator import (
    CANDIDATE_POLICIES,
    DEVICES,
    EPSILON,
    METRICS,
    PRIME_HOURS,
    SimulationConfig,
    on_policy_se,
    policy_value,
    position_examination,
    sample_outcomes,
    simulate,
    write_simulation,
)

N_ROUNDS = 20_000


@pytest.fixture(scope="module")
def sim():
    return simulate(SimulationConfig(n_rounds=N_ROUNDS, seed=7))


@pytest.fixture(scope="module")
def sim2():
    return simulate(SimulationConfig(n_rounds=4_000, n_positions=2, seed=3))


def shown_slot(s):
    """Index of the logged action within each row's slate."""
    match = s.slates == s.logs["action"].to_numpy()[:, None]
    assert (match.sum(axis=1) == 1).all(), "every logged action is on its slate exactly once"
    return match.argmax(axis=1)


def mean_and_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


# --------------------------------------------------------------------------------- data contract

def test_log_columns_and_dtypes(sim):
    logs = sim.logs
    expected_columns = {
        "decision_id", "position", "timestamp", "user_id", "action", "propensity", "category_propensity",
        "click", "watch_seconds", "gift_value", "x_activity", "x_hour", "x_prime_time", "x_is_new",
        "x_device", "x_taste_0", "x_taste_1", "x_taste_2", "x_taste_3", "a_category", "a_popularity"}
    assert set(logs.columns) == expected_columns
    for col in ("decision_id", "position", "user_id", "action", "click", "x_hour", "a_category"):
        assert logs[col].dtype == np.int64, col
    for col in ("propensity", "category_propensity", "watch_seconds", "gift_value", "x_activity",
                "a_popularity", "x_taste_0", "x_taste_3"):
        assert logs[col].dtype == np.float64, col
    assert logs["x_prime_time"].dtype == bool and logs["x_is_new"].dtype == bool
    assert pd.api.types.is_string_dtype(logs["x_device"])
    assert str(logs["timestamp"].dtype) == "datetime64[us, UTC]"
    assert len(logs) == N_ROUNDS
    assert (logs["decision_id"].to_numpy() == np.arange(N_ROUNDS)).all()
    assert (logs["position"] == 0).all()


def test_log_value_ranges(sim):
    logs = sim.logs
    ts = logs["timestamp"]
    assert ts.min() >= pd.Timestamp("2026-01-05", tz="UTC")
    assert ts.max() < pd.Timestamp("2026-01-12", tz="UTC")
    assert ts.is_monotonic_increasing
    assert (logs["x_hour"] == ts.dt.hour).all()
    assert (logs["x_prime_time"] == logs["x_hour"].isin(PRIME_HOURS)).all()
    assert set(logs["x_device"].unique()) <= set(DEVICES)
    assert (logs["x_activity"] > 0).all()
    assert (logs["user_id"] >= 0).all() and (logs["user_id"] < sim.config.resolved_n_users).all()
    assert set(logs["click"].unique()) <= {0, 1}
    clicked = logs["click"] == 1
    assert (logs.loc[clicked, "watch_seconds"] > 0).all()
    assert (logs.loc[~clicked, ["watch_seconds", "gift_value"]] == 0).all().all()
    assert (logs["gift_value"] >= 0).all()
    gift_share = (logs["gift_value"] > 0).sum() / clicked.sum()
    assert 0.005 < gift_share < 0.05, "gifts are rare: a few percent of clicks"
    actions = sim.actions.set_index("action")
    assert (logs["a_category"].to_numpy() == actions.loc[logs["action"], "category"].to_numpy()).all()
    assert (logs["a_popularity"].to_numpy() == actions.loc[logs["action"], "popularity"].to_numpy()).all()


def test_propensities_are_exact(sim):
    logs = sim.logs
    probs = sim.world.logging_probs
    k = sim.config.slate_size
    assert probs.shape == sim.slates.shape == (N_ROUNDS, k)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert probs.min() >= EPSILON / k - 1e-12, "epsilon-uniform exploration floor"
    slot = shown_slot(sim)
    propensity = logs["propensity"].to_numpy()
    assert ((propensity > 0) & (propensity <= 1)).all()
    assert (propensity == probs[np.arange(N_ROUNDS), slot]).all()
    # category propensity: the logging probability of the shown stream's category on that slate
    category = sim.actions["category"].to_numpy()
    same = category[sim.slates] == logs["a_category"].to_numpy()[:, None]
    np.testing.assert_allclose(logs["category_propensity"], (probs * same).sum(axis=1), rtol=1e-12)
    assert (logs["category_propensity"] >= propensity).all()
    assert (logs["category_propensity"] <= 1 + 1e-12).all()


def test_slates_are_distinct_and_on_air(sim):
    slates = sim.slates
    assert slates.dtype == np.int64
    assert (np.diff(slates, axis=1) > 0).all(), "distinct streams, sorted by id"
    on_air = sim.world.on_air
    hours = sim.logs["x_hour"].to_numpy()
    assert on_air[slates, hours[:, None]].all()


def test_on_air_set_changes_over_the_day(sim):
    on_air = sim.world.on_air
    assert (on_air.sum(axis=0) >= sim.config.slate_size).all()
    assert len({tuple(np.flatnonzero(on_air[:, h])) for h in range(24)}) > 12
    shown_by_hour = sim.logs.groupby("x_hour")["action"].agg(lambda a: frozenset(a))
    assert shown_by_hour[4] != shown_by_hour[20]
    # a stream shown at 4 a.m. that is never on air at 8 p.m.
    assert not on_air[list(shown_by_hour[4]), 20].all()


def test_policies_are_sparse_distributions_on_the_slate(sim):
    assert set(sim.policies) == set(CANDIDATE_POLICIES)
    slate_keys = set(zip(np.repeat(np.arange(N_ROUNDS), sim.config.slate_size), sim.slates.ravel()))
    for name, frame in sim.policies.items():
        assert list(frame.columns) == ["decision_id", "action", "prob"], name
        assert (frame["prob"] > 0).all() and (frame["prob"] <= 1).all()
        sums = frame.groupby("decision_id")["prob"].sum()
        assert len(sums) == N_ROUNDS
        np.testing.assert_allclose(sums, 1.0, atol=1e-9)
        assert set(zip(frame["decision_id"], frame["action"])) <= slate_keys
    greedy_top = sim.policies["greedy"].groupby("decision_id")["prob"].max()
    np.testing.assert_allclose(greedy_top, 0.99)


# ---------------------------------------------------------------------------------- ground truth

def test_truth_document(sim):
    truth = sim.truth
    assert truth["schema"] == "livegate.truth/1"
    assert truth["seed"] == 7 and truth["config"]["n_rounds"] == N_ROUNDS
    assert set(truth["policies"]) == {"logging", *CANDIDATE_POLICIES}
    for name, values in truth["policies"].items():
        assert set(values) == set(METRICS)
        for metric in METRICS:
            reference = policy_value(sim, "logging" if name == "logging" else sim.policies[name], metric)
            assert values[metric] == reference


# The standard error of these checks is the exact one (on_policy_se): with ~10 gifts in a sample
# the sample standard deviation misses the lognormal tail and can understate the SE many-fold.

def test_exact_se_agrees_with_sample_se_where_the_latter_is_reliable(sim):
    # for clicks the sample SE is accurate; it also carries the between-context spread of E[r|x],
    # which the conditional (exact) SE leaves out, so it is slightly larger
    _, sample_se = mean_and_se(sim.logs["click"])
    assert 0.98 < sample_se / on_policy_se(sim, "logging", "click") < 1.1


def test_logging_value_matches_logged_mean(sim):
    for metric in METRICS:
        mean = sim.logs[metric].mean()
        truth = sim.truth["policies"]["logging"][metric]
        se = on_policy_se(sim, "logging", metric)
        assert abs(mean - truth) < 4 * se, (metric, mean, truth, se)


@pytest.mark.parametrize("name", ["better", "worse"])
def test_candidate_value_matches_on_policy_sample(sim, name):
    sample = sample_outcomes(sim, sim.policies[name], seed=11)
    assert len(sample) == len(sim.logs)
    # the sample's propensity is the candidate's probability of the drawn action
    merged = sample.merge(sim.policies[name], on=["decision_id", "action"], how="left")
    np.testing.assert_array_equal(merged["prob"].to_numpy(), sample["propensity"].to_numpy())
    for metric in METRICS:
        mean = sample[metric].mean()
        truth = policy_value(sim, sim.policies[name], metric)
        se = on_policy_se(sim, sim.policies[name], metric)
        assert abs(mean - truth) < 4 * se, (name, metric, mean, truth, se)


def test_policy_ordering_and_replica(sim):
    values = sim.truth["policies"]
    assert values["better"]["watch_seconds"] > 1.2 * values["logging"]["watch_seconds"]
    assert values["worse"]["watch_seconds"] < 0.5 * values["logging"]["watch_seconds"]
    for metric in METRICS:
        replica = policy_value(sim, sim.policies["logging_replica"], metric)
        assert abs(replica - values["logging"][metric]) <= 1e-12 * max(1.0, abs(replica))


def test_greedy_has_poor_overlap(sim):
    greedy = sim.policies["greedy"].merge(sim.logs[["decision_id", "action", "propensity"]],
                                          on=["decision_id", "action"], how="right").fillna({"prob": 0.0})
    weights = greedy["prob"] / greedy["propensity"]
    ess_share = weights.sum() ** 2 / (weights ** 2).sum() / len(weights)
    assert len(weights) == N_ROUNDS
    assert ess_share < 0.1


# ----------------------------------------------------------------------------------- confounding

def test_confounding_activity_drives_both_choice_and_reward(sim):
    logs = sim.logs
    log_activity = np.log(logs["x_activity"])
    # active viewers are shown more popular streams by the logging policy ...
    assert np.corrcoef(log_activity, np.log(logs["a_popularity"]))[0, 1] > 0.05
    # ... and watch longer whatever they are shown: the uniform-over-slate expected watch time
    # (no selection involved) rises with activity
    uniform_watch = sim.expected["watch_seconds"].mean(axis=1)
    assert np.corrcoef(log_activity, np.log(uniform_watch))[0, 1] > 0.2
    # popular streams are watched longer for the same viewer: within each row, expected watch
    # time increases with the stream's popularity on average
    popularity = np.log(sim.actions["popularity"].to_numpy()[sim.slates])
    centred = popularity - popularity.mean(axis=1, keepdims=True)
    log_watch = np.log(sim.expected["watch_seconds"])
    assert (centred * (log_watch - log_watch.mean(axis=1, keepdims=True))).sum() > 0
    # prime time: more popularity bias and longer watching
    prime = logs["x_prime_time"]
    assert np.log(logs.loc[prime, "a_popularity"]).mean() > np.log(logs.loc[~prime, "a_popularity"]).mean()
    assert uniform_watch[prime].mean() > uniform_watch[~prime].mean()
    assert prime.mean() > 4 / 24, "prime time is busier than its share of the day"


# ------------------------------------------------------------------------------------- positions

def test_two_positions(sim2):
    cfg = sim2.config
    logs = sim2.logs
    n = cfg.n_rounds
    assert len(logs) == 2 * n
    assert (logs["decision_id"].to_numpy() == np.repeat(np.arange(n), 2)).all()
    assert (logs["position"].to_numpy() == np.tile([0, 1], n)).all()
    # both positions of a decision share the viewer, the time and the slate
    assert (logs["user_id"].to_numpy()[0::2] == logs["user_id"].to_numpy()[1::2]).all()
    assert (sim2.slates[0::2] == sim2.slates[1::2]).all()
    probs = sim2.world.logging_probs
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert not np.allclose(probs[0::2], probs[1::2]), "position-specific temperature"
    slot = shown_slot(sim2)
    assert (logs["propensity"].to_numpy() == probs[np.arange(2 * n), slot]).all()
    assert (logs["category_propensity"] >= logs["propensity"]).all()
    # the examination discount: position 1 expects 1/log2(3) of position 0's rewards
    discount = position_examination(2)[1]
    for metric in METRICS:
        np.testing.assert_allclose(sim2.expected[metric][1::2], discount * sim2.expected[metric][0::2], rtol=1e-12)
    for name, frame in sim2.policies.items():
        assert list(frame.columns) == ["decision_id", "position", "action", "prob"], name
        sums = frame.groupby(["decision_id", "position"])["prob"].sum()
        assert len(sums) == 2 * n
        np.testing.assert_allclose(sums, 1.0, atol=1e-9)
    for metric in METRICS:
        replica = policy_value(sim2, sim2.policies["logging_replica"], metric)
        assert abs(replica - sim2.truth["policies"]["logging"][metric]) <= 1e-12 * max(1.0, replica)
    # a policy without a position column applies to every position; `better` is the same softmax
    # at both positions (the discount scales E[watch] and cancels), so its value is unchanged
    per_decision = sim2.policies["better"].query("position == 0").drop(columns="position")
    np.testing.assert_allclose(policy_value(sim2, per_decision, "click"),
                               sim2.truth["policies"]["better"]["click"], rtol=1e-12)
    sample = sample_outcomes(sim2, sim2.policies["better"], seed=1)
    assert (sample["position"] == logs["position"]).all()
    clicks_by_position = sample.groupby("position")["click"].mean()
    assert clicks_by_position[0] > clicks_by_position[1]


# ---------------------------------------------------------------------------------------- output

def test_write_simulation_is_deterministic(tmp_path):
    config = SimulationConfig(n_rounds=2_000, n_streams=50, seed=5)
    paths_a = write_simulation(simulate(config), tmp_path / "a")
    paths_b = write_simulation(simulate(config), tmp_path / "b")
    assert set(paths_a) == {"logs", "actions", "truth", "candidates", *(f"policies/{n}" for n in CANDIDATE_POLICIES)}
    for key, path in paths_a.items():
        assert path.read_bytes() == paths_b[key].read_bytes(), key
    assert not list((tmp_path / "a").rglob("*.tmp")), "no temporary files left behind"

    other = write_simulation(simulate(SimulationConfig(n_rounds=2_000, n_streams=50, seed=6)), tmp_path / "c")
    assert other["logs"].read_bytes() != paths_a["logs"].read_bytes()

    schema = pq.read_schema(paths_a["logs"])
    assert str(schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("x_device").type) == "string"
    truth = json.loads(paths_a["truth"].read_text())
    assert truth["schema"] == "livegate.truth/1" and truth["seed"] == 5
    assert truth["config"]["n_streams"] == 50
    roundtrip = pd.read_parquet(paths_a["policies/better"])
    assert list(roundtrip.columns) == ["decision_id", "action", "prob"]


# -------------------------------------------------------------------------------- bad input, edges

@pytest.mark.parametrize("kwargs", [dict(n_rounds=0), dict(n_rounds=-5), dict(slate_size=0),
                                    dict(n_streams=5, slate_size=8), dict(seed=-1), dict(n_users=0),
                                    dict(n_positions=0), dict(n_rounds=10.5)])
def test_invalid_config_is_input_error(kwargs):
    with pytest.raises(InputError):
        simulate(SimulationConfig(**kwargs))


def test_policy_value_rejects_bad_policies(sim):
    policy = sim.policies["better"]
    with pytest.raises(InputError, match="not on the decision's slate"):
        off = policy.copy()
        off.loc[0, "action"] = next(a for a in range(sim.config.n_streams) if a not in sim.slates[0])
        policy_value(sim, off, "click")
    with pytest.raises(InputError, match="do not sum"):
        policy_value(sim, policy[policy["decision_id"] != 3], "click")
    with pytest.raises(InputError, match="unknown metric"):
        policy_value(sim, policy, "likes")
    with pytest.raises(InputError, match="unknown policy"):
        policy_value(sim, "nope", "click")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_rounds=st.integers(1, 60), slate_size=st.integers(1, 5), extra_streams=st.integers(0, 10),
       n_positions=st.integers(1, 3), n_categories=st.integers(1, 6), seed=st.integers(0, 2**32))
def test_small_configs_keep_the_invariants(n_rounds, slate_size, extra_streams, n_positions, n_categories, seed):
    config = SimulationConfig(n_rounds=n_rounds, n_streams=slate_size + extra_streams, n_categories=n_categories,
                              slate_size=slate_size, n_positions=n_positions, seed=seed)
    s = simulate(config)
    assert len(s.logs) == n_rounds * n_positions == s.slates.shape[0]
    np.testing.assert_allclose(s.world.logging_probs.sum(axis=1), 1.0, atol=1e-12)
    assert (s.logs["propensity"] >= EPSILON / slate_size - 1e-12).all()
    assert (s.logs["category_propensity"] >= s.logs["propensity"]).all()
    for name in CANDIDATE_POLICIES:
        for metric in METRICS:
            assert np.isfinite(s.truth["policies"][name][metric])
    assert s.truth["policies"]["logging_replica"] == s.truth["policies"]["logging"]
