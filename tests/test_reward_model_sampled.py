"""The reward model fitted once on a sample of decisions and predicting partitions on their own
(issue 14: DM/DR when the logs are evaluated in partitions, on one machine or on Dask workers).

What is exact: the folds are a function of the decision id; a row is predicted by the model of its
fold, which never trained on it; a partition's predictions equal those of the whole logs at once; with
the sample = all decisions the model is the in-memory cross-fit with the same folds. What is
approximate (only): the models learnt from a sample."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from livegate.datasets import RewardPredictions, load_logs, load_policy, parse_reward
from livegate.datasets.simulator import SimulationConfig, policy_value, simulate
from livegate.ope import reward_model as rm
from livegate.ope.evaluate import EvaluationConfig, evaluate
from livegate.ope.reward_model import (decision_folds, fit_reward_model, fit_sampled_reward_model, sample_decisions,
                                       sample_rows)

POLICIES = ("better", "worse")
N_FOLDS, SEED = 3, 5


@pytest.fixture(scope="module")
def sim():
    return simulate(SimulationConfig(n_rounds=1500, n_positions=2, seed=3))


def _load(sim, keep: np.ndarray | None = None, metric: str = "watch_seconds",
          logs_frame: pd.DataFrame | None = None):
    """(LoggedData, {name: PolicyTable}) of the decisions `keep` (a mask over the sim's log rows) through the
    real loaders: action and decision codes are local to the rows loaded, as in a partition."""
    frame = sim.logs if logs_frame is None else logs_frame
    rows = frame if keep is None else frame[keep]
    logs = load_logs(rows.reset_index(drop=True), [parse_reward(metric)], need_context=True, need_decision_id=True)
    ids = set(rows["decision_id"])
    policies = {}
    for name in POLICIES:
        table = sim.policies[name]
        policies[name] = load_policy(table[table["decision_id"].isin(ids)].reset_index(drop=True), logs, name)
    return logs, policies


def _reward(logs, metric: str = "watch_seconds") -> np.ndarray:
    return logs.reward(parse_reward(metric))


@pytest.fixture(scope="module")
def full(sim):
    return _load(sim)


@pytest.fixture(scope="module")
def half_model(sim):
    """A model fitted on a sample of about half the decisions."""
    keep = sample_decisions(sim.logs["decision_id"].to_numpy(), 0.5, seed=SEED)
    sample, _ = _load(sim, keep)
    return fit_sampled_reward_model(sample, _reward(sample), n_folds=N_FOLDS, seed=SEED, record_training=True), keep


def test_with_every_decision_sampled_it_is_the_in_memory_cross_fit_with_the_same_folds(full):
    logs, policies = full
    y = _reward(logs)
    model = fit_sampled_reward_model(logs, y, n_folds=N_FOLDS, seed=SEED)
    q_logged, q_pi = model.predict_partition(logs, policies)

    # the explicit cross-fit: fit_reward_model on the rows in the model's order, with the hash folds
    order, unit, code = rm._canonical(logs)
    new_row = np.empty(logs.n, dtype=np.int64)
    new_row[order] = np.arange(logs.n)
    fold = decision_folds(logs.decision_ids, N_FOLDS, SEED)[code]
    pairs = {name: (new_row[p.row], p.action_code) for name, p in policies.items()}
    fit = fit_reward_model(logs.context.iloc[order].reset_index(drop=True), logs.action_code[order],
                           len(logs.actions), y[order], pairs, groups=unit, n_folds=N_FOLDS, seed=SEED,
                           action_features=logs.action_features, position=logs.position[order], fold=fold)
    assert logs.n_positions == 2 and model.position_feature
    np.testing.assert_array_equal(q_logged[order], fit.q_logged)            # exact: the same models, rows, folds
    for name, p in policies.items():
        explicit = np.bincount(new_row[p.row], weights=p.prob * fit.q_policy[name], minlength=logs.n)
        np.testing.assert_array_equal(q_pi[name][order], explicit)
    np.testing.assert_array_equal(q_pi["logging"], q_logged)
    # the quality report: the same out-of-fold numbers, marked as a sample's
    for key in ("skill", "skill_se", "loss_model", "loss_constant", "r2", "model_weight", "n_trees"):
        assert model.quality[key] == fit.quality[key], key
    assert model.quality["sampled"] is True and model.quality["sample_rows"] == logs.n


def test_partitions_predict_exactly_what_the_whole_logs_predict(sim, full, half_model):
    model, _ = half_model
    logs, policies = full
    q_logged, q_pi = model.predict_partition(logs, policies)
    decision = sim.logs["decision_id"].to_numpy()
    parts = [decision % 3 == j for j in range(3)]          # interleaved: every partition has its own codes
    for mask in parts:
        part, part_policies = _load(sim, mask)
        assert len(part.actions) < len(logs.actions)
        part_logged, part_pi = model.predict_partition(part, part_policies)
        np.testing.assert_array_equal(part_logged, q_logged[mask])
        for name in POLICIES:
            np.testing.assert_array_equal(part_pi[name], q_pi[name][mask])
        # predict() by local code and by value agree
        rows = np.arange(part.n)
        np.testing.assert_array_equal(model.predict(part, rows, part.action_code), part_logged)
        np.testing.assert_array_equal(model.predict(part, rows, action_values=part.action), part_logged)
    assert np.all(np.isfinite(q_logged)) and all(np.all(np.isfinite(q)) for q in q_pi.values())


def test_folds_and_the_sample_do_not_depend_on_the_partitioning_and_no_row_is_predicted_by_its_trainer(
        sim, full, half_model):
    model, keep = half_model
    logs, policies = full
    ids = sim.logs["decision_id"].to_numpy()
    fold = model.folds(logs)
    np.testing.assert_array_equal(fold, decision_folds(ids, N_FOLDS, SEED))
    for j in range(3):
        mask = ids % 3 == j
        part, _ = _load(sim, mask)
        np.testing.assert_array_equal(model.folds(part), fold[mask])
        np.testing.assert_array_equal(sample_decisions(ids[mask], 0.5, seed=SEED), keep[mask])
        np.testing.assert_array_equal(part.decision_ids[part.decision_code[sample_rows(part, 0.5, seed=SEED)]],
                                      ids[mask & keep])
    assert 0.4 < keep.mean() < 0.6 and np.bincount(fold).min() > 0.25 * len(fold)
    # fold k's model trained on the sampled decisions of the other folds only
    sampled = set(ids[keep])
    for k, trained in enumerate(model.training_ids):
        trained = set(trained.tolist())
        assert trained == {d for d in sampled if decision_folds(np.array([d]), N_FOLDS, SEED)[0] != k}
        assert not trained & set(ids[fold == k])      # so no row of fold k, sampled or not, trained it
    assert model.quality["sample_rows"] == int(keep.sum()) and model.quality["sampled"] is True
    # the same sampled rows delivered in another order (other partitions, reversed): the same model
    reversed_frame = sim.logs.iloc[::-1].reset_index(drop=True)
    again, _ = _load(sim, keep[::-1], logs_frame=reversed_frame)
    other = fit_sampled_reward_model(again, _reward(again), n_folds=N_FOLDS, seed=SEED)
    q_logged, q_pi = model.predict_partition(logs, policies)
    other_logged, other_pi = other.predict_partition(logs, policies)
    np.testing.assert_array_equal(other_logged, q_logged)
    np.testing.assert_array_equal(other_pi["better"], q_pi["better"])
    # the sample gathered from three partitions' own sampled rows (gather_sample): the same model again
    parts = [_load(sim, ids % 3 == j)[0] for j in (2, 0, 1)]
    gathered = rm.gather_sample([(part, sample_rows(part, 0.5, seed=SEED)) for part in parts])
    assert gathered.n == int(keep.sum())
    third = fit_sampled_reward_model(gathered, _reward(gathered), n_folds=N_FOLDS, seed=SEED)
    third_logged, third_pi = third.predict_partition(logs, policies)
    np.testing.assert_array_equal(third_logged, q_logged)
    np.testing.assert_array_equal(third_pi["worse"], q_pi["worse"])


def test_actions_levels_and_positions_the_sample_never_shows(sim, full):
    logs, _ = full
    frame = sim.logs
    unseen_actions = frame["action"].drop_duplicates().to_numpy()[:10]
    with_unseen = frame.groupby("decision_id")["action"].transform(lambda a: a.isin(unseen_actions).any())
    keep = ~with_unseen.to_numpy() & (frame["x_device"] != "web").to_numpy()
    sample, _ = _load(sim, keep)
    assert not np.isin(unseen_actions, sample.actions).any()
    model = fit_sampled_reward_model(sample, _reward(sample), n_folds=N_FOLDS, seed=SEED)
    q = model.predict(logs, np.arange(logs.n), logs.action_code)
    assert np.all(np.isfinite(q))
    # an unseen stream is unknown to the model (stream and stream features missing), as in memory a stream
    # no logged row shows
    rows = model._partition_actions(logs)[:len(logs.actions)]     # the logged streams' rows
    unseen = ~np.isin(logs.actions, sample.actions)
    assert np.isin(unseen_actions, logs.actions[unseen]).all()
    assert np.all(np.isnan(rows[unseen])) and np.all(np.isfinite(rows[~unseen]))
    # an unseen level of a category is a missing value: 'web' predicts like a missing device
    missing = frame.copy()
    missing["x_device"] = missing["x_device"].where(missing["x_device"] != "web", None)
    blank, _ = _load(sim, logs_frame=missing)
    np.testing.assert_array_equal(model.predict(blank, np.arange(blank.n), blank.action_code), q)
    # a dictionary-encoded (pandas categorical) column, its categories in any order: levels by value
    devices = sorted(frame["x_device"].unique())
    as_category = frame.assign(x_device=pd.Categorical(frame["x_device"], categories=devices[::-1]))
    coded, _ = _load(sim, logs_frame=as_category)
    assert isinstance(coded.context["x_device"].dtype, pd.CategoricalDtype)
    np.testing.assert_array_equal(model.predict(coded, np.arange(coded.n), coded.action_code), q)
    sample_category, _ = _load(sim, keep, logs_frame=as_category)
    same = fit_sampled_reward_model(sample_category, _reward(sample_category), n_folds=N_FOLDS, seed=SEED)
    np.testing.assert_array_equal(same.predict(logs, np.arange(logs.n), logs.action_code), q)
    # a column with more than 250 levels pools the rare ones: an unseen level is "other", missing stays missing
    levels = pd.Series([f"l{i}" for i in range(300)] * 2 + [f"l{i}" for i in range(100)])
    _, is_category, coder = rm._fit_column(levels, None, by_value=True)
    coded = coder.transform(pd.Series(["l0", "l299", "never", None]))
    assert is_category and coded[0] < rm._MAX_CATEGORIES and coded[1] == coded[2] == rm._MAX_CATEGORIES
    assert np.isnan(coded[3])
    # a position past the sample's: an unknown category, the baseline's overall mean; still finite
    late = frame.assign(position=np.where(frame["decision_id"] < 3, frame["position"] + 5, frame["position"]))
    logs_late = load_logs(late, [parse_reward("watch_seconds")], need_context=True, need_decision_id=True)
    rows = np.flatnonzero(logs_late.position >= 5)
    q_late = model.predict(logs_late, rows, logs_late.action_code[rows])
    assert len(rows) == 6 and np.all(np.isfinite(q_late))


def test_the_model_pickles_and_predicts_the_same(full, half_model):
    model, _ = half_model
    logs, policies = full
    blob = pickle.dumps(model)
    assert len(blob) < 5_000_000       # the fold models and encodings, no data
    copy = pickle.loads(blob)
    q_logged, q_pi = model.predict_partition(logs, policies)
    copy_logged, copy_pi = copy.predict_partition(logs, policies)
    np.testing.assert_array_equal(copy_logged, q_logged)
    for name in q_pi:
        np.testing.assert_array_equal(copy_pi[name], q_pi[name])


def test_a_user_model_is_cross_fitted_on_the_sample_and_pickles(full, half_model):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.impute import SimpleImputer
    logs, policies = full
    model = fit_sampled_reward_model(logs, _reward(logs), n_folds=N_FOLDS, seed=SEED,
                                     model=make_pipeline(SimpleImputer(), Ridge()))
    q_logged, _ = model.predict_partition(logs, policies)
    copy_logged, _ = pickle.loads(pickle.dumps(model)).predict_partition(logs, policies)
    np.testing.assert_array_equal(copy_logged, q_logged)
    assert model.quality["model"] == "Pipeline" and model.quality["sampled"] is True


def test_dr_with_a_sampled_model_finds_the_true_value(sim, half_model):
    """DR with the model fitted on half the decisions and predicting every row: within 4 standard errors
    of the simulator's exact value (fixed seeds: a deterministic check; 4 SE fails by chance with
    probability 6e-5)."""
    model, _ = half_model
    logs, policies = _load(sim)
    q_logged, q_pi = model.predict_partition(logs, policies)
    q_hat = {"watch_seconds": RewardPredictions("sampled model", q_logged, {n: q_pi[n] for n in POLICIES})}
    result = evaluate(logs, policies, [parse_reward("watch_seconds")],
                      EvaluationConfig(estimators=("dr",), seed=SEED), q_hat=q_hat)
    for name in POLICIES:
        estimate = result.estimate(name, "dr")
        truth = policy_value(sim, sim.policies[name], "watch_seconds")
        assert abs(estimate["value"] - truth) < 4 * estimate["se"], (name, estimate, truth)
