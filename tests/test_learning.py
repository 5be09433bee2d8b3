"""`livegate learn`: off-policy learners (plugin, dr, poem), the held-out split and the record of the
training rows that the evaluation and the gate refuse to evaluate on."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from livegate.api import learn
from livegate.cli import main
from livegate.datasets import InputError
from livegate.datasets.simulator import SimulationConfig, policy_matrix, simulate
from livegate.ope import learn as L
from livegate.ope.learn import candidates as C
from livegate.ope.learn import decision as D


def _candidates(sim) -> pd.DataFrame:
    """Each simulated decision's slate: the streams its logging policy could show."""
    n, k = sim.slates.shape
    return pd.DataFrame({"decision_id": np.repeat(np.arange(n), k), "action": sim.slates.ravel()})


@pytest.fixture(scope="module")
def small_sim():
    return simulate(SimulationConfig(n_rounds=3000, seed=5))


# --- pieces -------------------------------------------------------------------------------------

def test_parse_method():
    assert L.parse_method("poem:lambda=1,clip=50").params == {"lambda": 1.0, "clip": 50.0}
    assert L.parse_method("plugin").get("temperature") == 0.0
    for bad in ("nope", "poem:lambda", "poem:gamma=1", "poem:clip=0", "dr:l2=-1", "poem:lambda=x"):
        with pytest.raises(InputError):
            L.parse_method(bad)


def test_segments_softmax_greedy_and_finish():
    cand = L.Candidates.from_pairs(np.array([0, 0, 0, 1, 1, 2]), np.array([3, 1, 2, 0, 4, 7]), 3)
    assert cand.action.tolist() == [1, 2, 3, 0, 4, 7]
    scores = np.array([1.0, 3.0, 3.0, 0.0, 0.0, 5.0])
    assert L.greedy_segments(scores, cand).tolist() == [0, 1, 0, 1, 0, 1]  # ties: the lowest code
    pi = L.softmax_segments(scores, cand)
    assert np.allclose(np.add.reduceat(pi, cand.start[:-1]), 1.0)
    keep, p = L.finish(pi, cand, epsilon=0.1, top_k=2)
    rows = cand.row[keep]
    assert np.bincount(rows).tolist() == [2, 2, 1]
    assert np.allclose(np.bincount(rows, weights=p), 1.0)
    assert p.min() >= 0.1 / 2 - 1e-12  # the exploration floor over the kept streams
    assert set(cand.action[keep][rows == 0]) == {2, 3}  # row 0 keeps its two most probable streams


def test_candidates_must_cover_every_row_and_the_logged_stream():
    with pytest.raises(InputError, match="no candidate"):
        L.Candidates.from_pairs(np.array([0, 0]), np.array([1, 2]), 2)
    cand = L.Candidates.from_pairs(np.array([0, 1]), np.array([1, 2]), 2)
    with pytest.raises(InputError, match="logged stream"):
        C._logged_entries(cand, np.array([1, 3]))


@pytest.mark.parametrize("method", ["dr", "poem"])
def test_objective_gradients_match_finite_differences(method, monkeypatch):
    """The analytic gradients of the DR value and of POEM's objective (a test that fails on a sign or
    a missing term)."""
    rng = np.random.default_rng(0)
    n, k, p, q = 40, 4, 3, 4
    cand = L.Candidates.from_pairs(np.repeat(np.arange(n), k), np.tile(np.arange(k), n), n)
    design = D._Design(X=np.column_stack([np.ones(n), rng.normal(size=(n, p - 1))]), cand=cand,
                       A=np.eye(q)[cand.action], qz=rng.normal(size=n * k) if method == "dr" else None)
    captured = {}
    monkeypatch.setattr(D, "_fit_lbfgs", lambda objective, n_params, iterations: captured.setdefault("f", objective)
                        and np.zeros(n_params))
    logged = rng.integers(0, k, n)
    if method == "dr":
        D.fit_dr(design, rng.normal(size=n * k), 1.0, l2=0.01, iterations=1)
    else:
        D.fit_poem(design, np.arange(n) * k + logged, rng.uniform(0.1, 0.5, n), rng.normal(size=n), lam=0.7,
                   clip=100.0, l2=0.01, iterations=1)
    f = captured["f"]
    theta = rng.normal(scale=0.3, size=design.n_params)
    _, grad = f(theta)
    h = 1e-6
    numeric = np.array([(f(theta + h * e)[0] - f(theta - h * e)[0]) / (2 * h) for e in np.eye(len(theta))])
    assert np.allclose(grad, numeric, rtol=1e-4, atol=1e-6)


def test_plugin_is_the_greedy_policy_of_a_perfect_model(small_sim):
    """Given the simulator's exact expected rewards as its model, the plug-in learner is the greedy
    policy over each slate, mixed with the exploration floor."""
    sim = small_sim
    n, k = sim.slates.shape
    cand = L.Candidates.from_pairs(np.repeat(np.arange(n), k), np.tile(np.arange(k), n), n)  # slots as actions
    exact = sim.expected["watch_seconds"].ravel()
    fitted = L.learn(L.parse_method("plugin"), sim.logs[["x_activity"]], np.zeros(n, dtype=np.int64),
                     np.ones(n), np.zeros(n), cand, k, q_hat=exact, full_model=object())
    pi = fitted.probabilities(sim.logs[["x_activity"]], cand, q=exact).reshape(n, k)
    best = np.argmax(sim.expected["watch_seconds"], axis=1)
    assert np.array_equal(pi, np.eye(k)[best])
    keep, p = L.finish(pi.ravel(), cand, epsilon=0.2, top_k=None)
    assert np.allclose(p.reshape(n, k), 0.8 * np.eye(k)[best] + 0.2 / k)


# --- the split and the record of the training rows -------------------------------------------------

def test_random_split_is_a_seeded_hash_of_the_id():
    ids = np.arange(10_000, dtype=np.int64)
    train, record = L.split_units(ids, rule="random", test_share=0.3, seed=4)
    assert abs(train.mean() - 0.7) < 0.02
    shuffled = np.random.default_rng(0).permutation(ids)
    again, _ = L.split_units(shuffled, rule="random", test_share=0.3, seed=4)
    assert np.array_equal(again, train[shuffled])          # the same id, the same side, in any order
    other, _ = L.split_units(ids, rule="random", test_share=0.3, seed=5)
    assert not np.array_equal(other, train)
    strings, _ = L.split_units(ids.astype(str).astype(object), rule="random", test_share=0.3, seed=4)
    assert abs(strings.mean() - 0.7) < 0.02
    assert record == {"rule": "random", "seed": 4, "test_share": 0.3}


def test_time_split_holds_out_the_latest_decisions():
    t = np.datetime64("2026-01-05T00:00:00", "us") + np.arange(1000).astype("timedelta64[s]")
    train, record = L.split_units(np.arange(1000), rule="time", test_share=0.25, seed=0, timestamps=t)
    assert train[:740].all() and not train[760:].any()
    assert record["rule"] == "time" and record["cutoff"].startswith("2026-01-05T00:12")
    with pytest.raises(InputError, match="timestamp"):
        L.split_units(np.arange(10), rule="time", test_share=0.3, seed=0)


def test_training_ids_round_trip():
    ids = np.array([5, 3, 1_000_000, 7], dtype=np.int64)
    assert L.decode_ids(L.encode_ids(ids)).tolist() == [3, 5, 7, 1_000_000]
    assert sorted(L.decode_ids(L.encode_ids(np.array(["b", "a"], dtype=object)))) == ["a", "b"]
    assert len(L.encode_ids(np.arange(1_000_000))) < 20_000  # consecutive ids compress to almost nothing


# --- end to end ----------------------------------------------------------------------------------

def test_learn_writes_a_supported_sparse_policy_and_refuses_its_training_rows(small_sim, tmp_path):
    sim = small_sim
    result = learn(sim.logs, "watch_seconds", "poem", candidates=_candidates(sim), top_k=3, epsilon=0.1, seed=1,
                   estimators="snips")
    policy = result.policy
    assert policy.groupby("decision_id").size().max() == 3
    assert np.allclose(policy.groupby("decision_id")["prob"].sum(), 1.0)
    assert policy["prob"].min() >= 0.1 / 3 - 1e-12
    policy_matrix(sim, policy)  # every stream is on its decision's slate: the simulator accepts it
    doc = result.to_dict()
    assert doc["schema"] == "livegate.learn/1"
    assert doc["split"]["train"]["decisions"] + doc["split"]["heldout"]["decisions"] == 3000
    assert doc["heldout_evaluation"]["data"]["n_rows"] == doc["split"]["heldout"]["rows"] \
        if "n_rows" in doc["heldout_evaluation"]["data"] else True
    table = result.policy_table()
    record = json.loads(table.schema.metadata[L.METADATA_KEY])
    train_ids = L.decode_ids(record["split"]["train_decision_ids"])
    heldout_ids = np.asarray(result.heldout_logs.column("decision_id"))
    assert len(train_ids) == doc["split"]["train"]["decisions"]
    assert not np.isin(heldout_ids, train_ids).any()
    path = tmp_path / "learned.parquet"
    pq.write_table(table, path)
    import livegate
    with pytest.raises(InputError, match="was learned by livegate learn on"):
        livegate.evaluate(sim.logs, {"learned": str(path)}, "watch_seconds", "snips")
    # the same table in memory carries the same record
    from livegate.api import load_inputs
    with pytest.raises(InputError, match="was learned"):
        load_inputs(sim.logs, {"learned": table}, "watch_seconds")
    load_inputs(result.heldout_logs, {"learned": str(path)}, "watch_seconds")  # rows it never saw: accepted


def test_learn_for_other_logs(small_sim):
    sim = small_sim
    other = simulate(SimulationConfig(n_rounds=500, seed=6))
    result = learn(sim.logs, "click", "dr", candidates=_candidates(sim), for_logs=other.logs,
                   for_candidates=_candidates(other), seed=0, estimators="snips")
    assert set(result.policy["decision_id"]) == set(range(500))
    # streams of `other` never shown in `sim` cannot be learned about: they are left out
    policy_matrix(other, result.policy)


def test_learn_input_errors(small_sim):
    with pytest.raises(InputError, match="--method"):
        learn(small_sim.logs, "click", "bandit")
    with pytest.raises(InputError, match="session_id"):
        learn(small_sim.logs, "click", "fqi")  # fqi needs viewer sessions
    with pytest.raises(InputError, match="--epsilon"):
        learn(small_sim.logs, "click", "dr", epsilon=1.5)
    with pytest.raises(InputError, match="--test-share"):
        learn(small_sim.logs, "click", "dr", test_share=1.0)


def test_cli_learn_then_evaluate(small_sim, tmp_path, capsys):
    sim = small_sim
    logs, cands = tmp_path / "logs.parquet", tmp_path / "cands.parquet"
    sim.logs.to_parquet(logs)
    _candidates(sim).to_parquet(cands)
    out, heldout = tmp_path / "learned.parquet", tmp_path / "heldout.parquet"
    code = main(["learn", "--logs", str(logs), "--reward", "click", "--method", "dr", "--candidates", str(cands),
                 "--out", str(out), "--heldout-out", str(heldout), "--result", str(tmp_path / "learn.json"),
                 "--estimators", "snips", "--quiet"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "HELD-OUT evaluation" in text and "in-sample" in text
    assert json.loads((tmp_path / "learn.json").read_text())["schema"] == "livegate.learn/1"
    assert main(["evaluate", "--logs", str(logs), "--policy", f"l={out}", "--reward", "click", "--quiet"]) == 2
    assert "was learned by livegate learn" in capsys.readouterr().err
    # the gate refuses it on the rows it was trained on, and gates it on the held-out rows
    config = tmp_path / "gate.toml"
    for data, expected in ((logs, 2), (heldout, None)):
        config.write_text(f'[data]\nlogs = "{data.name}"\n[[candidate]]\nname = "learned"\npolicy = "{out.name}"\n'
                          '[[criterion]]\nmetric = "click"\nrule = "non_inferior"\nmargin = 0.5\n')
        code = main(["gate", "--config", str(config), "--quiet"])
        err = capsys.readouterr().err
        if expected == 2:
            assert code == 2 and "was learned by livegate learn" in err
        else:
            assert code in (0, 1, 3), err
    # output over an input: refused before any work
    assert main(["learn", "--logs", str(logs), "--out", str(logs), "--quiet"]) == 2


def test_learn_is_deterministic(small_sim):
    a = learn(small_sim.logs, "click", "poem", candidates=_candidates(small_sim), seed=3, estimators="snips")
    b = learn(small_sim.logs, "click", "poem", candidates=_candidates(small_sim), seed=3, estimators="snips")
    pd.testing.assert_frame_equal(a.policy, b.policy)


# --- the learned policies beat logging in the simulator's truth, on rows they never saw ----------

@pytest.mark.statistical
@pytest.mark.parametrize("method", ["plugin", "dr", "poem"])
def test_learned_policy_beats_logging_in_truth_on_heldout_rows(method):
    sim = simulate(SimulationConfig(n_rounds=20_000, seed=11))
    result = learn(sim.logs, "watch_seconds", method, candidates=_candidates(sim), seed=0, estimators="snips")
    heldout = np.isin(np.arange(sim.config.n_rounds), np.asarray(result.heldout_logs.column("decision_id")))
    expected = sim.expected["watch_seconds"]
    value = (policy_matrix(sim, result.policy) * expected).sum(axis=1)[heldout].mean()
    logging = (sim.world.logging_probs * expected).sum(axis=1)[heldout].mean()
    # measured at seed 11: plugin +13%, dr +40%, poem +46% (the plug-in's gradient-boosting model of the
    # heavy-tailed watch time is noisy, and greedy acts on its noise); the best stream of each slate: +85%
    # (over all rows)
    assert value > {"plugin": 1.05, "dr": 1.25, "poem": 1.25}[method] * logging, (method, value, logging)


# --- sessions: fitted-Q iteration ----------------------------------------------------------------

def _tabular_sessions(n_sessions: int, seed: int, behaviour=None):
    """The small tabular MDP of tests/session_mdp.py as logs, with each row's next step."""
    import session_mdp as M  # tests/ is on the path, as for test_sessions.py

    sample = M.sample(n_sessions, seed, **({"behaviour": behaviour} if behaviour is not None else {}))
    frame = sample.logs_frame()
    session = frame["session_id"].to_numpy()
    n = len(frame)
    next_row = np.where(np.r_[session[1:] == session[:-1], False], np.arange(1, n + 1), -1)
    action = frame["action"].str.replace("stream", "").astype(int).to_numpy()
    return M, frame, action, next_row


def _optimal_q(M) -> np.ndarray:
    q, v = np.zeros((M.HORIZON, 3, 3)), np.zeros((M.HORIZON + 1, 3))
    for t in range(M.HORIZON - 1, -1, -1):
        q[t] = M.R + (1 - M.LEAVE) * (M.P @ v[t + 1])
        v[t] = q[t].max(axis=1)
    return q


def _q_grid(policy, M) -> np.ndarray:
    grid = pd.DataFrame({"x_state": np.tile(np.arange(3), M.HORIZON), "x_step": np.repeat(np.arange(M.HORIZON), 3)})
    return policy.q.predict_all(policy.q.encoder.transform(grid)).reshape(M.HORIZON, 3, 3)


def test_fqi_recovers_the_optimal_q_of_a_tabular_mdp():
    """With a tabular regressor (a tree on state and step), fitted-Q iteration is batch Q-learning on
    the MDP's cells: its Q must match Q* from dynamic programming, and its greedy action the optimal one
    wherever the optimum is clear."""
    from sklearn.tree import DecisionTreeRegressor

    M, frame, action, next_row = _tabular_sessions(8000, 0)
    policy = L.fit_fqi(L.parse_method("fqi"), frame[["x_state", "x_step"]], action, frame["watch_seconds"].to_numpy(),
                       next_row, 3, model=DecisionTreeRegressor(min_samples_leaf=20))
    q_star, q_hat = _optimal_q(M), _q_grid(policy, M)
    assert policy.iterations_run <= M.HORIZON
    assert np.max(np.abs(q_hat - q_star) / q_star) < 0.08
    top2 = np.sort(q_star, axis=2)
    clear = (top2[..., -1] - top2[..., -2]) > 0.08 * top2[..., -1]
    assert np.array_equal(q_hat.argmax(axis=2)[clear], q_star.argmax(axis=2)[clear])


def test_pessimistic_fqi_devalues_actions_the_logs_rarely_show():
    from sklearn.tree import DecisionTreeRegressor

    rare = np.array([[0.49, 0.49, 0.02], [0.49, 0.49, 0.02], [0.49, 0.49, 0.02]])  # stream 2 almost never shown
    M, frame, action, next_row = _tabular_sessions(4000, 1, behaviour=rare)
    args = (frame[["x_state", "x_step"]], action, frame["watch_seconds"].to_numpy(), next_row, 3)
    tree = DecisionTreeRegressor(min_samples_leaf=5)
    plain = L.fit_fqi(L.parse_method("fqi"), *args, model=tree)
    pessimistic = L.fit_fqi(L.parse_method("pessimistic-fqi:kappa=0.5"), *args, model=tree)
    states = frame[["x_state", "x_step"]]
    plain_pick = plain.scores(states).argmax(axis=1)
    pess_pick = pessimistic.scores(states).argmax(axis=1)
    # plain FQI trusts the rarely shown clickbait stream where its few rewards look high; the
    # pessimistic variant picks it less often (measured: 26% of the logged states -> 18%)
    assert np.mean(pess_pick == 2) < 0.8 * np.mean(plain_pick == 2)
    assert np.mean(plain_pick == 2) > 0.2


def test_learn_fqi_on_sessions_end_to_end():
    from sklearn.tree import DecisionTreeRegressor

    M, frame, _, _ = _tabular_sessions(1500, 2)
    result = learn(frame, "watch_seconds", "fqi", reward_model=DecisionTreeRegressor(min_samples_leaf=20),
                   estimators="pdis,wpdis", seed=0)
    doc = result.to_dict()
    assert doc["level"] == "session" and doc["split"]["unit"] == "session_id"
    assert doc["split"]["train"]["sessions"] + doc["split"]["heldout"]["sessions"] == 1500
    assert doc["heldout_evaluation"]["level"] == "session"
    heldout_sessions = set(result.heldout_logs.column("session_id").to_pylist())
    train_sessions = set(frame["session_id"]) - heldout_sessions
    assert len(train_sessions) == doc["split"]["train"]["sessions"]
    assert np.allclose(result.policy.groupby("decision_id")["prob"].sum(), 1.0)
    assert len(result.policy) == 3 * len(frame)   # every stream at every logged step
