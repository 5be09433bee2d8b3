"""Context-free policies (`action, prob[, position]`, no decision_id): one distribution for every
decision, validated like a per-decision policy, never expanded per decision for the IPS family."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from livegate.datasets import InputError, load_logs, load_policy, load_q_hat, parse_reward
from livegate.ope import EvaluationConfig, evaluate

CLICK = [parse_reward("click")]


def _logs(n_decisions: int, n_positions: int, n_actions: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_decisions * n_positions
    return pd.DataFrame({
        "decision_id": np.repeat(np.arange(n_decisions, dtype=np.int64), n_positions),
        "position": np.tile(np.arange(n_positions, dtype=np.int64), n_decisions),
        "action": rng.integers(0, n_actions, n) * 10,       # stream ids 0, 10, 20, ...
        "propensity": rng.uniform(0.1, 0.9, n),
        "click": rng.integers(0, 2, n).astype(np.float64),
        "x_activity": rng.normal(size=n),
    })


def _expanded(logs: pd.DataFrame, distribution: pd.DataFrame, by_position: bool) -> pd.DataFrame:
    """The per-decision form of a context-free policy: its rows repeated for every log row."""
    keys = logs[["decision_id", "position"]]
    if by_position:
        return keys.merge(distribution, on="position").sort_values(["decision_id", "position"], kind="stable")
    return keys.merge(distribution, how="cross")


def test_a_uniform_policy_gives_the_weights_and_estimates_of_its_expanded_form():
    logs_df = _logs(300, 1)
    uniform = pd.DataFrame({"action": np.arange(5) * 10, "prob": np.full(5, 0.2)})
    logs = load_logs(logs_df, CLICK, need_decision_id=True, need_context=True)
    free = load_policy(uniform, logs, "uniform")
    listed = load_policy(_expanded(logs_df, uniform, by_position=False), logs, "uniform")
    assert free.context_free and not listed.context_free
    np.testing.assert_array_equal(free.pi_logged, np.full(logs.n, 0.2))
    np.testing.assert_array_equal(free.pi_logged, listed.pi_logged)
    config = EvaluationConfig(estimators=("ips", "snips", "dm", "dr"), n_folds=2)
    a = evaluate(logs, {"uniform": free}, CLICK, config)
    b = evaluate(logs, {"uniform": listed}, CLICK, config)
    for estimator in ("ips", "snips"):
        assert a.estimate("uniform", estimator) == b.estimate("uniform", estimator)
    for estimator in ("dm", "dr"):   # the reward model sees the same (row, action) pairs, maybe summed in another order
        for key, value in a.estimate("uniform", estimator).items():
            if isinstance(value, str):
                assert value == b.estimate("uniform", estimator)[key]
                continue
            assert value == pytest.approx(b.estimate("uniform", estimator)[key], rel=1e-9, abs=1e-12), (estimator, key)


def test_a_per_position_policy_matches_its_expanded_form_row_by_row():
    logs_df = _logs(200, 3, seed=1)
    rng = np.random.default_rng(2)
    # position 0 favours stream 0, position 2 never shows stream 40; stream 30 is listed twice at position 1
    dist = pd.DataFrame({
        "position": [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2],
        "action": [0, 10, 20, 30, 40, 0, 30, 30, 40, 0, 10, 20, 30],
        "prob": [0.6, 0.1, 0.1, 0.1, 0.1, 0.25, 0.25, 0.25, 0.25, 0.4, 0.3, 0.2, 0.1],
    }).sample(frac=1.0, random_state=3)
    logs = load_logs(logs_df, CLICK, need_decision_id=True)
    free = load_policy(dist, logs, "by_slot")
    listed = load_policy(_expanded(logs_df, dist, by_position=True), logs, "by_slot")
    np.testing.assert_allclose(free.pi_logged, listed.pi_logged, rtol=0, atol=1e-15)
    values = rng.normal(size=len(free.row))
    # the materialised form lists each row's positive entries in row order; per row it is the listed form
    assert np.all(np.diff(free.row) >= 0) and free.in_row_order
    q = {(r, a): v for r, a, v in zip(free.row, free.action_code, values)}
    listed_values = np.array([q.get((r, a), 0.0) for r, a in zip(listed.row, listed.action_code)])
    np.testing.assert_allclose(free.expected(values, logs.n), listed.expected(listed_values, logs.n), atol=1e-12)
    assert free.unlogged_probability(len(logs.actions)) == listed.unlogged_probability(len(logs.actions)) == 0.0


def test_predictions_join_to_a_context_free_policy_like_to_its_expanded_form():
    logs_df = _logs(100, 2, seed=4)
    dist = pd.DataFrame({"action": [0, 20, 40], "prob": [0.5, 0.3, 0.2]})
    logs = load_logs(logs_df, CLICK, need_decision_id=True)
    free = load_policy(dist, logs, "p")
    listed = load_policy(_expanded(logs_df, dist, by_position=False), logs, "p")
    pairs = logs_df[["decision_id", "position"]].merge(pd.DataFrame({"action": np.arange(5) * 10}), how="cross")
    pairs["q_hat"] = np.random.default_rng(5).uniform(size=len(pairs))
    a = load_q_hat(pairs, logs, {"p": free})
    b = load_q_hat(pairs, logs, {"p": listed})
    np.testing.assert_allclose(a.expected["p"], b.expected["p"], rtol=1e-14)


def test_a_million_rows_get_their_weights_without_per_decision_policy_rows():
    n = 1_000_000
    rng = np.random.default_rng(6)
    logs_df = pd.DataFrame({"decision_id": np.arange(n, dtype=np.int64), "action": rng.integers(0, 50, n),
                            "propensity": np.full(n, 1 / 50), "click": rng.integers(0, 2, n).astype(np.float64)})
    logs = load_logs(logs_df, CLICK, need_decision_id=True)
    probs = rng.dirichlet(np.ones(60))   # 10 streams the logs never show
    policy = load_policy(pd.DataFrame({"action": np.arange(60), "prob": probs}), logs, "wide")
    weight = policy.pi_logged / logs.propensity
    ips = float(np.mean(weight * logs.outcomes["click"]))
    unlogged = policy.unlogged_probability(len(logs.actions)) / logs.n
    assert not policy.materialised, "the IPS family must not expand a context-free policy"
    assert policy.distribution.table.size == 60                     # one position x 60 action codes
    np.testing.assert_array_equal(policy.pi_logged, probs[logs_df["action"].to_numpy()])
    assert unlogged == pytest.approx(probs[50:].sum(), rel=1e-12)
    assert ips == pytest.approx(np.mean(probs[logs_df["action"]] * 50 * logs_df["click"]), rel=1e-12)


@pytest.mark.parametrize("case", ["sum", "negative", "unlisted_position", "position_outside", "unknown_action"])
def test_a_context_free_policy_is_validated_with_one_problem_each(case):
    logs = load_logs(_logs(20, 2, seed=7), CLICK, need_decision_id=True, name="logs")
    good = pd.DataFrame({"position": [0, 0, 1, 1], "action": [0, 10, 0, 10], "prob": [0.5, 0.5, 0.5, 0.5]})
    mutate, column, phrase, rows = {
        "sum": (lambda p: p.assign(prob=[0.5, 0.4, 0.5, 0.5]), "prob", "do not sum to 1 at position 0", 2),
        "negative": (lambda p: p.assign(prob=[1.5, -0.5, 0.5, 0.5]), "prob", "negative", 1),
        "unlisted_position": (lambda p: p[p["position"] == 0], "position", "positions this policy does not list (1)", 20),
        "position_outside": (lambda p: p.assign(position=[0, 0, 1, 5]), "position", "positions the logs do not have", 1),
        "unknown_action": (lambda p: p.assign(action=["a", "b", "a", "b"]), "action", "another type", 4),
    }[case]
    with pytest.raises(InputError) as exc:
        load_policy(mutate(good), logs, "cf")
    problems = [p for p in exc.value.problems if p.column == column and phrase in p.message]
    assert len(problems) == 1 and problems[0].rows == rows
    assert len(exc.value.problems) == (2 if case == "negative" else 1)
    assert all(p.source == "policy cf" for p in exc.value.problems)
    if case == "negative":   # -0.5 and 1.5: each bound once, and the sums still hold
        assert sorted(p.message.split(";")[0] for p in exc.value.problems) == ["are above 1", "are negative"]


def test_without_a_position_column_one_distribution_serves_every_position():
    logs_df = _logs(30, 3, seed=8)
    logs = load_logs(logs_df, CLICK, need_decision_id=True)
    policy = load_policy(pd.DataFrame({"action": [0, 10, 20, 30, 40], "prob": [0.2] * 5}), logs, "flat")
    np.testing.assert_array_equal(policy.pi_logged, np.full(logs.n, 0.2))
    assert len(policy.row) == 5 * logs.n and np.array_equal(np.bincount(policy.row), np.full(logs.n, 5))
