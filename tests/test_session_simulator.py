"""Tests of the session simulator: contract, observed Markov state, exact truth, the myopic trap."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from livegate.datasets import load_logs, load_policy, parse_reward
from livegate.datasets.errors import InputError
from livegate.datasets.session_simulator import (
    ALL_POLICIES,
    CANDIDATE_POLICIES,
    FATIGUE_MAX,
    FATIGUE_THRESHOLDS,
    LOGGING_EPSILON,
    METRICS,
    N_CATEGORIES,
    N_STREAMS,
    QLEARNING_EPSILON,
    STREAMS,
    SessionSimulationConfig,
    discounted_returns,
    expected_reward,
    policy_matrix,
    q_function,
    sample_sessions,
    simulate_sessions,
    write_session_simulation,
)
from livegate.datasets.session_simulator import _encode  # the state index, to check it is observed

SMALL = SessionSimulationConfig(n_sessions=2_000, n_truth_sessions=5_000, qlearning_iterations=200, seed=4)
X_STATE = [*(f"x_taste_{k}" for k in range(N_CATEGORIES)), "x_activity", "x_hour", "x_prime_time",
           "x_fatigue", "x_last_category", "x_step"]


@pytest.fixture(scope="module")
def sim():
    """The default size (20,000 sessions, 200,000 truth sessions per policy): a few seconds."""
    return simulate_sessions(SessionSimulationConfig(seed=11))


@pytest.fixture(scope="module")
def files(sim, tmp_path_factory):
    return write_session_simulation(sim, tmp_path_factory.mktemp("sessions"))


def mean_and_se(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


# ---------------------------------------------------------------------------------- determinism

def test_same_seed_gives_byte_identical_files(tmp_path):
    first = write_session_simulation(simulate_sessions(SMALL), tmp_path / "a")
    second = write_session_simulation(simulate_sessions(SMALL), tmp_path / "b")
    assert set(first) == {"logs", "actions", "truth", *(f"policies/{p}" for p in CANDIDATE_POLICIES)}
    for key, path in first.items():
        assert path.read_bytes() == second[key].read_bytes(), key
    other = simulate_sessions(replace(SMALL, seed=5))
    assert not other.logs["watch_seconds"].equals(pd.read_parquet(first["logs"])["watch_seconds"])


def test_truth_and_agent_do_not_depend_on_the_number_of_logged_sessions():
    a = simulate_sessions(SMALL)
    b = simulate_sessions(replace(SMALL, n_sessions=500))
    assert a.truth["policies"] == b.truth["policies"]
    assert a.truth["monte_carlo"] == b.truth["monte_carlo"]
    np.testing.assert_array_equal(a.model.qlearning_q, b.model.qlearning_q)


def test_config_is_validated():
    with pytest.raises(InputError, match="gamma"):
        simulate_sessions(SessionSimulationConfig(gamma=0.0))
    with pytest.raises(InputError, match="gamma"):
        simulate_sessions(SessionSimulationConfig(gamma=1.5))
    with pytest.raises(InputError, match="n_sessions"):
        simulate_sessions(SessionSimulationConfig(n_sessions=0))
    with pytest.raises(InputError, match="max_steps"):
        simulate_sessions(SessionSimulationConfig(max_steps=1.5))


# -------------------------------------------------------------------------------- data contract

def test_log_columns_and_dtypes(sim):
    logs = sim.logs
    assert list(logs.columns) == ["decision_id", "session_id", "step", "user_id", "timestamp", "action",
                                  "propensity", "click", "watch_seconds", "gift_value", *X_STATE, "a_category"]
    for col in ("decision_id", "session_id", "step", "user_id", "action", "click", "x_hour", "x_fatigue",
                "x_last_category", "x_step", "a_category"):
        assert logs[col].dtype == np.int64, col
    assert str(logs["timestamp"].dtype) == "datetime64[us, UTC]"
    assert (logs["decision_id"].to_numpy() == np.arange(len(logs))).all()
    assert logs["session_id"].nunique() == sim.config.n_sessions
    # about 6 steps per session under logging: 2e4 sessions are about 1.2e5 rows
    assert 5.0 < len(logs) / sim.config.n_sessions < 7.5


def test_sessions_are_consecutive_steps_in_time_order(sim):
    logs = sim.logs
    session, step = logs["session_id"].to_numpy(), logs["step"].to_numpy()
    assert (np.diff(session) >= 0).all()
    new = np.r_[True, session[1:] != session[:-1]]
    assert (step[new] == 0).all()
    assert (step[~new] == step[np.flatnonzero(~new) - 1] + 1).all()
    assert step.max() < sim.config.max_steps
    ts = logs["timestamp"].to_numpy()
    gap = (ts[1:] - ts[:-1])[~new[1:]] / np.timedelta64(1, "s")
    assert (gap >= 4.0 - 1e-6).all()           # a few seconds browsing, plus the watch
    first = logs.loc[new, "timestamp"]
    assert first.is_monotonic_increasing       # sessions numbered by start time
    assert first.min() >= pd.Timestamp("2026-01-05", tz="UTC") and first.max() < pd.Timestamp("2026-01-12", tz="UTC")


def test_rewards(sim):
    logs = sim.logs
    assert set(np.unique(logs["click"])) <= {0, 1}
    assert (logs["watch_seconds"] >= 0).all() and (logs["gift_value"] >= 0).all()
    assert (logs.loc[logs["click"] == 0, ["watch_seconds", "gift_value"]] == 0).all().all()
    watch = logs.loc[logs["click"] == 1, "watch_seconds"]
    assert watch.quantile(0.99) > 5 * watch.median()      # heavy-ish tail
    assert 0.05 < logs["click"].mean() < 0.4               # most streams shown are not clicked
    assert 0.005 < (logs["gift_value"] > 0).mean() < 0.05  # gifts are rare: gift_value is mostly 0


def test_propensities_are_the_logging_policys(sim):
    p = sim.logs["propensity"].to_numpy()
    assert ((p > 0) & (p <= 1)).all()
    assert p.min() >= LOGGING_EPSILON / N_STREAMS - 1e-12 >= 0.02
    probs = policy_matrix(sim, "logging")
    assert (probs.min(axis=1) >= LOGGING_EPSILON / N_STREAMS - 1e-12).all()
    np.testing.assert_allclose(probs[np.arange(len(p)), sim.logs["action"].to_numpy()], p, rtol=0, atol=1e-15)


def test_candidate_policy_files(sim):
    n_rows = len(sim.logs)
    for name in CANDIDATE_POLICIES:
        frame = sim.policies[name]
        assert list(frame.columns) == ["decision_id", "action", "prob"]
        assert (frame.dtypes == [np.int64, np.int64, np.float64]).all()
        assert ((frame["prob"] > 0) & (frame["prob"] <= 1)).all()
        assert frame["action"].between(0, N_STREAMS - 1).all()
        sums = frame.groupby("decision_id")["prob"].sum()
        assert len(sums) == n_rows and (sums.index == np.arange(n_rows)).all()
        assert np.abs(sums.to_numpy() - 1.0).max() < 1e-9
        # full support: every stream keeps positive probability at every logged step
        assert len(frame) == n_rows * N_STREAMS
        dense = frame["prob"].to_numpy().reshape(n_rows, N_STREAMS)
        np.testing.assert_allclose(dense, policy_matrix(sim, name), rtol=0, atol=0)
    q = sim.policies["qlearning"]["prob"]
    assert q.min() == pytest.approx(QLEARNING_EPSILON / N_STREAMS)
    assert q.max() == pytest.approx(1 - QLEARNING_EPSILON + QLEARNING_EPSILON / N_STREAMS)


def test_files_pass_livegate_validation(sim, files):
    logs = load_logs(files["logs"], [parse_reward(m) for m in METRICS], need_decision_id=True,
                     need_context=True, need_sessions=True)
    assert logs.sessions.n_sessions == sim.config.n_sessions
    assert logs.context_table.column_names == X_STATE
    for name in CANDIDATE_POLICIES:
        load_policy(files[f"policies/{name}"], logs, name)


def test_truth_document(sim):
    truth = sim.truth
    assert truth["gamma"] == 1.0 and truth["level"] == "session"
    assert truth["n_rows"] == len(sim.logs) and truth["n_sessions"] == sim.config.n_sessions
    sections = ("policies", "logged_starts", "monte_carlo", "per_decision", "per_decision_logged_states")
    for section in sections:
        assert set(truth[section]) == set(ALL_POLICIES), section
        for name in ALL_POLICIES:
            assert set(METRICS) <= set(truth[section][name]), (section, name)
    assert truth["monte_carlo"]["logging"]["n_sessions"] == sim.config.n_truth_sessions
    # per_decision_logged_states is the mean over the logged rows of sum_a pi(a|s) E[r|s,a]
    for name in ALL_POLICIES:
        for metric in METRICS:
            direct = np.mean(np.sum(policy_matrix(sim, name) * expected_reward(sim, metric), axis=1))
            assert truth["per_decision_logged_states"][name][metric] == pytest.approx(direct, rel=1e-9), (name, metric)


# ------------------------------------------------------------- the state is observed and Markov

def test_state_is_the_x_columns(sim):
    logs = sim.logs
    taste = logs[[f"x_taste_{k}" for k in range(N_CATEGORIES)]].to_numpy()
    assert (taste.sum(axis=1) == 1).all()
    activity = np.searchsorted([0.5, 1.0, 2.0], logs["x_activity"].to_numpy())
    last = logs["x_last_category"].to_numpy()
    index = _encode(taste.argmax(axis=1), activity, logs["x_prime_time"].to_numpy(),
                    logs["x_fatigue"].to_numpy(), np.where(last < 0, N_CATEGORIES, last))
    np.testing.assert_array_equal(index, sim.state_index)
    assert (logs["x_step"] == logs["step"]).all()
    assert (logs["x_prime_time"] == logs["x_hour"].isin([19, 20, 21, 22])).all()
    # every policy is a function of the x columns: identical states, identical distributions
    key = pd.Series(index * sim.config.max_steps + logs["step"].to_numpy())
    for name in ALL_POLICIES:
        grouped = pd.DataFrame(policy_matrix(sim, name)).groupby(key.to_numpy())
        assert (grouped.max() - grouped.min()).to_numpy().max() == 0.0, name


def test_transitions_follow_the_story(sim):
    logs = sim.logs
    same = logs["session_id"].to_numpy()[1:] == logs["session_id"].to_numpy()[:-1]
    prev, nxt = logs.iloc[:-1][same], logs.iloc[1:][same]
    # the last category is the category shown at the previous step
    assert (nxt["x_last_category"].to_numpy() == prev["a_category"].to_numpy()).all()
    assert (logs.loc[logs["step"] == 0, "x_last_category"] == -1).all()
    assert (logs.loc[logs["step"] == 0, "x_fatigue"] == 0).all()
    # fatigue grows by the number of watch thresholds passed, capped
    growth = sum((prev["watch_seconds"].to_numpy() > t).astype(int) for t in FATIGUE_THRESHOLDS)
    expect = np.minimum(prev["x_fatigue"].to_numpy() + growth, FATIGUE_MAX)
    assert (nxt["x_fatigue"].to_numpy() == expect).all()
    # viewer traits (taste, activity) belong to the viewer, the start hour to the session
    per_user = logs.groupby("user_id")[[f"x_taste_{k}" for k in range(N_CATEGORIES)] + ["x_activity"]].nunique()
    assert (per_user == 1).all().all()
    assert (logs.groupby("session_id")["x_hour"].nunique() == 1).all()


def test_bellman_identity_at_logged_rows(sim):
    """The sampled dynamics are the closed-form ones: r_t + gamma V(s_t+1) - Q(s_t, a_t) has mean 0
    under the logs, for the Q function of any policy (V = 0 after the last step)."""
    logs = sim.logs
    rows = np.arange(len(logs))
    action = logs["action"].to_numpy()
    last = np.r_[logs["session_id"].to_numpy()[1:] != logs["session_id"].to_numpy()[:-1], True]
    for name in ("logging", "longterm"):
        for metric in ("watch_seconds", "click"):
            q = q_function(sim, name, metric)
            v = np.sum(policy_matrix(sim, name) * q, axis=1)
            v_next = np.where(last, 0.0, np.r_[v[1:], 0.0])
            residual = logs[metric].to_numpy() + sim.config.gamma * v_next - q[rows, action]
            mean, se = mean_and_se(residual)
            assert abs(mean) < 4 * se, (name, metric, mean, se)
    # the exact Q at step 0 averaged over the logged sessions is the logged-starts truth
    q = q_function(sim, "logging", "watch_seconds")
    v0 = np.sum(policy_matrix(sim, "logging") * q, axis=1)[logs["step"].to_numpy() == 0]
    assert v0.mean() == pytest.approx(sim.truth["logged_starts"]["logging"]["watch_seconds"], rel=1e-12)
    # and the closed-form expected reward of the shown stream is unbiased for the logged reward
    for metric in METRICS:
        mean, se = mean_and_se(logs[metric].to_numpy() - expected_reward(sim, metric)[rows, action])
        assert abs(mean) < 4 * se, metric


# ----------------------------------------------------------------------------------- truth

def test_on_policy_logged_returns_match_the_logging_truth(sim):
    for metric in METRICS:
        returns = discounted_returns(sim.logs, metric, sim.config.gamma)
        mean, se = mean_and_se(returns)
        assert abs(mean - sim.truth["policies"]["logging"][metric]) < 4 * se, metric
        assert abs(mean - sim.truth["logged_starts"]["logging"][metric]) < 4 * se, metric


def test_monte_carlo_agrees_with_the_exact_values(sim):
    for name in ALL_POLICIES:
        mc = sim.truth["monte_carlo"][name]
        assert abs(mc["mean_steps"] - sim.truth["session_length"][name]) < 4 * mc["mean_steps_se"], name
        for metric in METRICS:
            exact = sim.truth["policies"][name][metric]
            assert abs(mc[metric]["value"] - exact) < 4 * mc[metric]["se"], (name, metric)
            per_step = sim.truth["per_decision"][name][metric]
            assert abs(mc[metric]["per_step"] - per_step) < 4 * mc[metric]["per_step_se"], (name, metric)


def test_the_myopic_trap(sim):
    """Myopic beats logging per decision by half or more, yet loses to it per session by 10% or more;
    long-term beats logging per session by 30% or more and loses to myopic per decision. (The exact
    values depend only on the model, not on the seed; the logged-states ones on the logged rows.)"""
    truth, m = sim.truth, "watch_seconds"
    session = {name: truth["policies"][name][m] for name in ALL_POLICIES}
    own = {name: truth["per_decision"][name][m] for name in ALL_POLICIES}
    logged = {name: truth["per_decision_logged_states"][name][m] for name in ALL_POLICIES}
    # per session: myopic clearly below logging, long-term clearly above both
    assert session["myopic"] < 0.9 * session["logging"]
    assert session["longterm"] > 1.3 * session["logging"]
    assert session["longterm"] > 1.5 * session["myopic"]
    # per decision, on the logged states and on its own sessions: myopic clearly above logging, and
    # above long-term, so a per-decision evaluation ranks myopic first
    assert logged["myopic"] > 1.4 * logged["logging"]
    assert own["myopic"] > 1.3 * own["logging"]
    assert logged["myopic"] > 1.2 * logged["longterm"]
    assert own["myopic"] > 1.2 * own["longterm"]
    # why: myopic sessions are about half as long (boredom and clickbait), long-term ones longer
    length = truth["session_length"]
    assert length["myopic"] < 0.6 * length["logging"] < 0.6 * length["longterm"]
    # the Monte-Carlo rollouts show the same order per session, far outside their noise
    mc = {name: truth["monte_carlo"][name][m] for name in ("logging", "myopic", "longterm")}
    assert mc["myopic"]["value"] + 4 * mc["myopic"]["se"] < 0.9 * (mc["logging"]["value"] - 4 * mc["logging"]["se"])
    assert mc["longterm"]["value"] - 4 * mc["longterm"]["se"] > 1.3 * (mc["logging"]["value"] + 4 * mc["logging"]["se"])
    # a per-decision importance-sampling evaluation of the logs ranks them the wrong way round: myopic
    # above logging (whose per-decision value is the logged rewards' mean) and above long-term
    logs = sim.logs
    rows, action = np.arange(len(logs)), logs["action"].to_numpy()
    reward, propensity = logs[m].to_numpy(), logs["propensity"].to_numpy()
    term = {name: policy_matrix(sim, name)[rows, action] / propensity * reward for name in ("myopic", "longterm")}
    diff, se = mean_and_se(term["myopic"] - term["longterm"])
    assert diff > 4 * se
    diff, se = mean_and_se(term["myopic"] - reward)
    assert diff > 4 * se


def test_logging_avoids_repeats_and_myopic_does_not(sim):
    """The mechanism: logging's diversity rule rarely shows the category just shown; myopic, which
    ranks by immediate watch time, repeats the favourite category (and its clickbait) all the time."""
    logs = sim.logs
    later = logs["step"].to_numpy() > 0
    repeat = (logs["a_category"] == logs["x_last_category"]).to_numpy()
    assert repeat[later].mean() < 0.15
    # after the favourite category: logging moves on, myopic shows it again, long-term never does
    last = logs["x_last_category"].to_numpy()
    after_favourite = last == logs[[f"x_taste_{k}" for k in range(N_CATEGORIES)]].to_numpy().argmax(axis=1)
    same = STREAMS["category"].to_numpy()[None, :] == last[:, None]
    p_repeat = {name: (policy_matrix(sim, name) * same).sum(axis=1)[after_favourite].mean()
                for name in ("logging", "myopic", "longterm")}
    assert p_repeat["myopic"] > 0.7 and p_repeat["logging"] < 0.2 and p_repeat["longterm"] < 0.05, p_repeat
    bait = STREAMS["clickbait"].to_numpy()
    share = {name: policy_matrix(sim, name)[:, bait].sum(axis=1).mean() for name in ("logging", "myopic")}
    assert share["myopic"] > 0.7 > share["logging"], share


def test_qlearning_learned_something(sim):
    truth, m = sim.truth["policies"], "watch_seconds"
    assert truth["qlearning"][m] > 1.3 * truth["uniform"][m]
    assert truth["qlearning"][m] > 1.2 * truth["logging"][m]
    # it cannot beat the exact optimum's softmax by much: both sit below the optimal value
    optimum = sim.model.session_value(
        np.eye(N_STREAMS)[sim.model.optimal_q(sim.model.expected[m]).argmax(axis=2)], sim.model.expected[m])
    assert truth["qlearning"][m] < optimum and truth["longterm"][m] < optimum


def test_discount_is_used_everywhere():
    sim = simulate_sessions(replace(SMALL, gamma=0.8))
    assert sim.truth["gamma"] == 0.8
    undiscounted = sim.model.session_value(sim.model.policies["logging"], sim.model.expected["watch_seconds"], 1.0)
    assert sim.truth["policies"]["logging"]["watch_seconds"] < 0.8 * undiscounted
    for metric in METRICS:
        mean, se = mean_and_se(discounted_returns(sim.logs, metric, 0.8))
        assert abs(mean - sim.truth["policies"]["logging"][metric]) < 4 * se, metric
        mc = sim.truth["monte_carlo"]["longterm"][metric]
        assert abs(mc["value"] - sim.truth["policies"]["longterm"][metric]) < 4 * mc["se"], metric


def test_streams_catalogue(sim):
    assert len(STREAMS) == N_STREAMS and STREAMS["clickbait"].sum() == 3
    assert (sim.actions["action"].to_numpy() == np.arange(N_STREAMS)).all()
    shown = sim.logs.groupby("action")["a_category"].first()
    assert (shown.to_numpy() == STREAMS["category"].to_numpy()[shown.index]).all()


@pytest.mark.statistical
def test_on_policy_samples_of_every_policy_match_the_truth(sim):
    for i, name in enumerate(ALL_POLICIES):
        sample = sample_sessions(sim, name, 50_000, seed=100 + i)
        assert sample["session_id"].nunique() == 50_000
        for metric in METRICS:
            mean, se = mean_and_se(discounted_returns(sample, metric, sim.config.gamma))
            assert abs(mean - sim.truth["policies"][name][metric]) < 4 * se, (name, metric)
