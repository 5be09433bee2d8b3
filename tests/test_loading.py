"""Loading Parquet input (file, directory, hive partitions, batches) and joining policies and predictions
to the logs (`load_policy`, `load_q_hat`, `logging_policy`), checked against plain pandas."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livegate.datasets import InputError, load_logs, load_policy, load_q_hat, logging_policy, parse_reward
from livegate.datasets.loading import iter_batches, open_dataset, read_table

CLICK = [parse_reward("click")]


def _logs_table(n: int, start: int = 0, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "decision_id": np.arange(start, start + n, dtype=np.int64),
        "action": rng.integers(0, 7, n),
        "propensity": rng.uniform(0.1, 1.0, n),
        "click": rng.integers(0, 2, n).astype(np.float64),
        "watch_seconds": rng.exponential(30.0, n),
        "x_activity": rng.normal(size=n),
    })


# --- reading: file, directory, partitions, batches -------------------------------------------

def test_single_file_reads_only_the_requested_columns(tmp_path):
    table = _logs_table(50)
    pq.write_table(table, tmp_path / "logs.parquet")
    got = read_table(tmp_path / "logs.parquet", ["action", "click"])
    assert got.column_names == ["action", "click"]
    assert "watch_seconds" not in got.column_names and "x_activity" not in got.column_names
    assert got.column("click").equals(table.column("click"))


def test_optional_columns_are_read_only_when_present(tmp_path):
    pq.write_table(_logs_table(10), tmp_path / "logs.parquet")
    got = read_table(tmp_path / "logs.parquet", ["action"], optional=["position", "propensity"])
    assert got.column_names == ["action", "propensity"]


def test_missing_required_columns_are_all_reported(tmp_path):
    pq.write_table(_logs_table(10), tmp_path / "logs.parquet")
    with pytest.raises(InputError) as exc:
        read_table(tmp_path / "logs.parquet", ["action", "nope_a", "nope_b"])
    assert [p.column for p in exc.value.problems] == ["nope_a", "nope_b"]
    problems = []  # collecting mode: the columns that exist are still returned
    got = read_table(tmp_path / "logs.parquet", ["action", "nope_a"], problems=problems)
    assert got.column_names == ["action"] and [p.column for p in problems] == ["nope_a"]


def test_directory_of_several_files(tmp_path):
    parts = [_logs_table(30, start=0, seed=1), _logs_table(20, start=30, seed=2), _logs_table(5, start=50, seed=3)]
    for i, part in enumerate(parts):
        pq.write_table(part, tmp_path / f"part-{i}.parquet")
    (tmp_path / "_SUCCESS").write_text("")      # markers and hidden files are not data
    (tmp_path / ".part-0.parquet.crc").write_text("x")
    got = read_table(tmp_path, ["decision_id", "click"])
    assert got.num_rows == 55
    assert got.column_names == ["decision_id", "click"]
    assert sorted(got.column("decision_id").to_pylist()) == list(range(55))
    assert pc.sum(got.column("click")).as_py() == sum(pc.sum(p.column("click")).as_py() for p in parts)


def test_hive_partitioned_directory(tmp_path):
    days = {"2026-01-05": _logs_table(12, start=0, seed=4), "2026-01-06": _logs_table(8, start=12, seed=5)}
    for day, part in days.items():
        (tmp_path / f"day={day}").mkdir()
        pq.write_table(part, tmp_path / f"day={day}" / "part-0.parquet")
    assert "day" in open_dataset(tmp_path).schema.names
    got = read_table(tmp_path, ["decision_id", "day"]).to_pandas()
    assert len(got) == 20
    assert got.groupby("day")["decision_id"].count().to_dict() == {"2026-01-05": 12, "2026-01-06": 8}
    assert set(got.loc[got["day"] == "2026-01-06", "decision_id"]) == set(range(12, 20))
    # the partition column is not read unless asked for
    assert "day" not in read_table(tmp_path, ["decision_id"]).column_names
    logs = load_logs(tmp_path, CLICK, need_decision_id=True)
    assert logs.n == 20 and logs.outcomes["click"].sum() == sum(t.column("click").to_numpy().sum()
                                                                for t in days.values())


def test_iter_batches_streams_the_same_totals_as_a_full_read(tmp_path):
    table = _logs_table(1000, seed=6)
    pq.write_table(table, tmp_path / "logs.parquet", row_group_size=128)
    batches = list(iter_batches(tmp_path / "logs.parquet", ["click", "watch_seconds"], batch_size=100))
    assert len(batches) > 1
    assert all(b.schema.names == ["click", "watch_seconds"] for b in batches)
    assert sum(b.num_rows for b in batches) == 1000
    full = read_table(tmp_path / "logs.parquet", ["click", "watch_seconds"])
    for col in ("click", "watch_seconds"):
        streamed = sum(float(pc.sum(b.column(col)).as_py()) for b in batches)
        assert streamed == pytest.approx(pc.sum(full.column(col)).as_py(), rel=1e-12)


def test_iter_batches_over_a_partitioned_directory(tmp_path):
    for i in range(3):
        (tmp_path / f"day=2026-01-0{i + 1}").mkdir()
        pq.write_table(_logs_table(40, start=40 * i, seed=i), tmp_path / f"day=2026-01-0{i + 1}" / "p.parquet",
                       row_group_size=16)
    total = sum(pc.sum(b.column("decision_id")).as_py() for b in iter_batches(tmp_path, ["decision_id"], 10))
    assert total == sum(range(120))


def test_iter_batches_names_a_missing_column(tmp_path):
    pq.write_table(_logs_table(10), tmp_path / "logs.parquet")
    with pytest.raises(InputError) as exc:
        list(iter_batches(tmp_path / "logs.parquet", ["click", "nope"]))
    assert [p.column for p in exc.value.problems] == ["nope"]


def _bad_inputs(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(_logs_table(200), good)
    data = good.read_bytes()
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "markers_only").mkdir()
    (tmp_path / "markers_only" / "_SUCCESS").write_text("")
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "truncated.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.parquet").write_text("decision_id,action\n1,2\n")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.parquet").write_bytes(data)
    (tmp_path / "mixed" / "b.parquet").write_bytes(data[: len(data) // 2])
    return {
        "missing": (tmp_path / "nope.parquet", "does not exist"),
        "empty_dir": (tmp_path / "empty_dir", "empty directory"),
        "markers_only": (tmp_path / "markers_only", "empty directory"),
        "empty_file": (tmp_path / "empty.parquet", "empty file"),
        "truncated": (tmp_path / "truncated.parquet", "not a readable Parquet file"),
        "text": (tmp_path / "text.parquet", "not a readable Parquet file"),
        "dir_with_truncated_file": (tmp_path / "mixed", "b.parquet"),
    }


@pytest.mark.parametrize("case", ["missing", "empty_dir", "markers_only", "empty_file", "truncated", "text",
                                  "dir_with_truncated_file"])
def test_unreadable_input_is_an_input_error_naming_the_file(tmp_path, case):
    path, phrase = _bad_inputs(tmp_path)[case]
    with pytest.raises(InputError) as exc:
        read_table(path, ["decision_id", "action"])
    text = str(exc.value)
    assert text.startswith(str(path)) and phrase in text
    with pytest.raises(InputError):
        list(iter_batches(path, ["decision_id"]))
    with pytest.raises(InputError):
        load_logs(path, CLICK)


# --- the join: pi_logged against a reference pandas merge -------------------------------------

def _random_case(seed: int, n_decisions: int, n_positions: int, id_kind: str, action_kind: str):
    """Random logs and a random long-format policy over them, as pandas frames."""
    rng = np.random.default_rng(seed)
    if id_kind == "consecutive":
        ids = np.arange(1000, 1000 + n_decisions, dtype=np.int64)
    elif id_kind == "sparse_int":
        ids = rng.choice(10**9, size=n_decisions, replace=False).astype(np.int64)
    else:
        ids = np.array([f"d-{i:x}" for i in rng.choice(10**6, size=n_decisions, replace=False)], dtype=object)
    pool = np.arange(3, 3 + 9, dtype=np.int64) * 11
    if action_kind == "string":
        pool = np.array([f"stream/{a}" for a in pool], dtype=object)
    logs = pd.DataFrame({
        "decision_id": np.repeat(ids, n_positions),
        "position": np.tile(np.arange(n_positions, dtype=np.int64), n_decisions),
    })
    logs["action"] = pool[rng.integers(0, len(pool), len(logs))]
    logs["propensity"] = rng.uniform(0.05, 1.0, len(logs))
    logs["click"] = rng.integers(0, 2, len(logs)).astype(float)
    if id_kind != "consecutive":
        logs = logs.sample(frac=1.0, random_state=seed).reset_index(drop=True)

    rows = []
    extra_ids = list(rng.choice(10**9, 3) + 10**9) if id_kind != "string" else ["not-in-logs-1", "not-in-logs-2"]
    unlogged = 999_999 if action_kind == "int" else "stream/never-logged"
    for dec in [*ids, *extra_ids]:
        for pos in range(n_positions):
            k = int(rng.integers(1, len(pool) + 1))
            acts = list(rng.choice(pool, size=k, replace=False))
            if rng.random() < 0.2:
                acts.append(unlogged)
            probs = rng.dirichlet(np.ones(len(acts)))
            if len(acts) > 1 and rng.random() < 0.3:
                probs[rng.integers(len(probs))] = 0.0   # listed with probability 0
                probs /= probs.sum()
            rows += [(dec, pos, a, p) for a, p in zip(acts, probs)]
    policy = pd.DataFrame(rows, columns=["decision_id", "position", "action", "prob"])
    policy = policy.sample(frac=1.0, random_state=seed + 1).reset_index(drop=True)
    if n_positions == 1 and rng.random() < 0.5:
        policy = policy.drop(columns="position")
    return logs, policy


def _write_frame(frame: pd.DataFrame, path, via_pandas: bool) -> None:
    if via_pandas:  # pandas 3 writes strings as large_string
        frame.to_parquet(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), n_decisions=st.integers(1, 40), n_positions=st.integers(1, 3),
       id_kind=st.sampled_from(["consecutive", "sparse_int", "string"]),
       action_kind=st.sampled_from(["int", "string"]), via_pandas=st.booleans())
def test_pi_logged_equals_a_pandas_merge(tmp_path, seed, n_decisions, n_positions, id_kind, action_kind, via_pandas):
    logs_df, policy_df = _random_case(seed, n_decisions, n_positions, id_kind, action_kind)
    logs_path, policy_path = tmp_path / f"logs-{seed}.parquet", tmp_path / f"policy-{seed}.parquet"
    _write_frame(logs_df, logs_path, via_pandas)
    _write_frame(policy_df, policy_path, not via_pandas)

    logs = load_logs(logs_path, CLICK, need_decision_id=True)
    policy = load_policy(policy_path, logs, "candidate")

    keys = ["decision_id", "position", "action"] if "position" in policy_df else ["decision_id", "action"]
    reference = logs_df.merge(policy_df.groupby(keys, as_index=False)["prob"].sum(), on=keys, how="left")
    expected = reference["prob"].fillna(0.0).to_numpy()
    np.testing.assert_allclose(policy.pi_logged, expected, rtol=0, atol=1e-12)
    # the expected value of a per-row quantity: sum over the policy's actions of prob * value
    assert policy.expected(np.ones(len(policy.prob)), logs.n) == pytest.approx(np.ones(logs.n))
    # rows of decisions the logs do not have play no part
    assert len(policy.row) == len(policy_df[policy_df["decision_id"].isin(set(logs_df["decision_id"]))])


def test_policy_rows_of_decisions_outside_the_logs_are_ignored(tmp_path):
    pq.write_table(_logs_table(4), tmp_path / "logs.parquet")
    policy = pa.table({"decision_id": [0, 1, 2, 3, 77, 78, -5],
                       "action": [0, 1, 2, 3, 4, 5, 6],
                       "prob": [1.0, 1.0, 1.0, 1.0, 0.3, 5.0, 1.0]})   # 5.0 would be invalid if it counted
    pq.write_table(policy, tmp_path / "policy.parquet")
    logs = load_logs(tmp_path / "logs.parquet", CLICK, need_decision_id=True)
    # prob 5.0 is still out of range as a value: the file is wrong whatever decision it belongs to
    with pytest.raises(InputError):
        load_policy(tmp_path / "policy.parquet", logs, "p")
    pq.write_table(policy.set_column(2, "prob", pa.array([1.0, 1.0, 1.0, 1.0, 0.3, 0.5, 1.0])),
                   tmp_path / "policy.parquet")
    table = load_policy(tmp_path / "policy.parquet", logs, "p")
    assert list(table.row) == [0, 1, 2, 3]
    logged = logs.action
    np.testing.assert_array_equal(table.pi_logged, (logged == np.array([0, 1, 2, 3])).astype(float))


def test_logging_policy_weights_are_exactly_one(sim_files):
    logs = load_logs(sim_files.logs, CLICK, need_decision_id=True)
    policy = logging_policy(logs)
    weights = policy.pi_logged / logs.propensity
    assert np.all(weights == 1.0)
    assert np.array_equal(policy.row, np.arange(logs.n)) and np.all(policy.prob == 1.0)
    assert np.array_equal(policy.action_code, logs.action_code)


def test_logging_replica_matches_the_logged_propensities(sim_files):
    """The simulator's logging_replica lists the logging probabilities: joined, it gives the propensities."""
    logs = load_logs(sim_files.logs, CLICK, need_decision_id=True)
    replica = load_policy(sim_files.policies["logging_replica"], logs, "logging_replica")
    np.testing.assert_allclose(replica.pi_logged, logs.propensity, rtol=1e-12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), n_positions=st.integers(1, 3), id_kind=st.sampled_from(["sparse_int", "string"]),
       action_kind=st.sampled_from(["int", "string"]))
def test_q_hat_lookups(tmp_path, seed, n_positions, id_kind, action_kind):
    logs_df, policy_df = _random_case(seed, 12, n_positions, id_kind, action_kind)
    if "position" not in policy_df:
        policy_df["position"] = 0
    rng = np.random.default_rng(seed)
    pairs = pd.concat([policy_df[["decision_id", "position", "action"]],
                       logs_df[["decision_id", "position", "action"]]]).drop_duplicates()
    pairs = pairs.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    pairs["q_hat"] = rng.normal(size=len(pairs))
    pq.write_table(pa.Table.from_pandas(logs_df, preserve_index=False), tmp_path / "logs.parquet")
    pq.write_table(pa.Table.from_pandas(pairs, preserve_index=False), tmp_path / "q.parquet")

    logs = load_logs(tmp_path / "logs.parquet", CLICK, need_decision_id=True)
    pq.write_table(pa.Table.from_pandas(policy_df, preserve_index=False), tmp_path / "p.parquet")
    policy = load_policy(tmp_path / "p.parquet", logs, "p")
    q = load_q_hat(tmp_path / "q.parquet", logs, {"p": policy})
    expected = logs_df.merge(pairs, on=["decision_id", "position", "action"], how="left")["q_hat"].to_numpy()
    np.testing.assert_array_equal(q.logged, expected)

    # sum_a pi(a|x) q_hat(x, a) per log row, from a pandas join of the policy to the predictions
    log_rows = logs_df.reset_index().rename(columns={"index": "row"})[["decision_id", "position", "row"]]
    joined = policy_df.merge(pairs, on=["decision_id", "position", "action"]).merge(log_rows,
                                                                                     on=["decision_id", "position"])
    want = (joined["prob"] * joined["q_hat"]).groupby(joined["row"]).sum().reindex(range(logs.n), fill_value=0.0)
    np.testing.assert_allclose(q.expected["p"], want.to_numpy(), rtol=1e-12, atol=1e-12)


def test_an_unpredicted_pair_is_an_input_error_unless_its_probability_is_zero(tmp_path):
    pq.write_table(_logs_table(3), tmp_path / "logs.parquet")
    logs = load_logs(tmp_path / "logs.parquet", CLICK, need_decision_id=True)
    action = logs.action
    pq.write_table(pa.table({"decision_id": [0, 1, 2], "action": action[:3], "prob": [1.0, 1.0, 1.0]}),
                   tmp_path / "p.parquet")
    other = action[1] if action[0] != action[1] else action[0] + 1
    pq.write_table(pa.table({"decision_id": [0, 0, 1, 2], "action": [action[0], other, action[1], action[2]],
                             "prob": [1.0, 0.0, 1.0, 1.0]}), tmp_path / "zero.parquet")
    policies = {"p": load_policy(tmp_path / "p.parquet", logs, "p"),
                "zero": load_policy(tmp_path / "zero.parquet", logs, "zero")}
    pq.write_table(pa.table({"decision_id": [0, 1], "action": action[:2], "q_hat": [0.5, 0.25]}), tmp_path / "q.parquet")
    with pytest.raises(InputError) as exc:
        load_q_hat(tmp_path / "q.parquet", logs, policies)
    problems = {p.message: p for p in exc.value.problems}
    # decision 2 is unpredicted: its logged action, and the action both policies give probability 1
    assert [p.rows for p in exc.value.problems] == [1, 1, 1]
    assert all(any(what in m for m in problems) for what in ("logged action", "policy 'p'", "policy 'zero'"))
    assert all(str(tmp_path / "q.parquet") in str(p) for p in exc.value.problems)
    # with decision 2 predicted, the zero-probability pair (0, other) needs no prediction
    pq.write_table(pa.table({"decision_id": [0, 1, 2], "action": action[:3], "q_hat": [0.5, 0.25, 0.1]}),
                   tmp_path / "q.parquet")
    q = load_q_hat(tmp_path / "q.parquet", logs, policies)
    np.testing.assert_array_equal(q.logged, [0.5, 0.25, 0.1])
    np.testing.assert_array_equal(q.expected["zero"], [0.5, 0.25, 0.1])


def _q_hat_frame(logs_df: pd.DataFrame, n_actions: int, seed: int) -> pd.DataFrame:
    """Predictions for the logged action and a random few others per decision, in decision order."""
    rng = np.random.default_rng(seed)
    extra = pd.DataFrame({"decision_id": np.repeat(logs_df["decision_id"].to_numpy(), 3),
                          "action": rng.integers(0, n_actions, 3 * len(logs_df))})
    pairs = pd.concat([logs_df[["decision_id", "action"]], extra]).drop_duplicates()
    pairs = pairs.sort_values(["decision_id", "action"]).reset_index(drop=True)
    pairs["q_hat"] = rng.normal(size=len(pairs))
    return pairs


def _logs_predictions_and_policy(tmp_path, n: int, start: int, seed: int):
    """Logs of n decisions from id `start`, predictions in decision order (`_q_hat_frame`) and the
    policy uniform over each decision's predicted actions, written and loaded."""
    table = _logs_table(n, start=start, seed=seed)
    pq.write_table(table, tmp_path / "logs.parquet")
    logs = load_logs(tmp_path / "logs.parquet", CLICK, need_decision_id=True)
    pairs = _q_hat_frame(table.to_pandas(), 7, seed=seed + 1)
    policy_df = pairs[["decision_id", "action"]].assign(
        prob=1.0 / pairs.groupby("decision_id")["action"].transform("size"))
    pq.write_table(pa.Table.from_pandas(policy_df, preserve_index=False), tmp_path / "p.parquet")
    return table, logs, pairs, policy_df, load_policy(tmp_path / "p.parquet", logs, "p")


def test_q_hat_in_decision_order_and_shuffled_give_the_same_expectations(tmp_path):
    table, logs, pairs, policy_df, policy = _logs_predictions_and_policy(tmp_path, 400, start=1000, seed=3)
    results = []
    for name, frame in (("sorted", pairs), ("shuffled", pairs.sample(frac=1.0, random_state=5))):
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / f"{name}.parquet")
        q = load_q_hat(tmp_path / f"{name}.parquet", logs, {"p": policy})
        results.append((q.logged, q.expected["p"]))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    # the reference: a pandas join, then the probability-weighted sum per decision
    joined = policy_df.merge(pairs, on=["decision_id", "action"])
    want = (joined["prob"] * joined["q_hat"]).groupby(joined["decision_id"]).sum()
    np.testing.assert_allclose(results[0][1], want.reindex(table.column("decision_id").to_numpy()).to_numpy(),
                               rtol=1e-12, atol=1e-12)


def test_a_pair_predicted_twice_is_an_input_error(tmp_path):
    pq.write_table(_logs_table(3), tmp_path / "logs.parquet")
    logs = load_logs(tmp_path / "logs.parquet", CLICK, need_decision_id=True)
    action = logs.action
    pq.write_table(pa.table({"decision_id": [0, 1, 2, 1], "action": [action[0], action[1], action[2], action[1]],
                             "q_hat": [0.5, 0.25, 0.1, 0.3]}), tmp_path / "q.parquet")
    with pytest.raises(InputError) as exc:
        load_q_hat(tmp_path / "q.parquet", logs)
    problem = exc.value.problems[0]
    assert problem.rows == 2 and problem.column == "decision_id"
    assert "share a decision id and action with another row" in problem.message


@pytest.mark.parametrize("kind", ["ascending", "shuffled", "gaps", "offset", "negative", "sparse"])
def test_action_and_decision_codes_match_a_sorted_factorisation(tmp_path, kind):
    """Every encoding path (ascending ids, dense ranges with and without gaps, sparse ids) gives the
    codes of a sorted factorisation, and the policy's codes agree with the logs'."""
    rng = np.random.default_rng(len(kind))
    n = 300
    ids = {"ascending": np.arange(n), "shuffled": rng.permutation(n), "gaps": np.sort(rng.choice(3 * n, n, replace=False)),
           "offset": np.arange(n) + 10**6, "negative": rng.permutation(n) - 150,
           "sparse": rng.choice(10**12, n, replace=False)}[kind].astype(np.int64)
    actions = {"gaps": rng.choice([3, 5, 11], n), "negative": rng.integers(-4, 4, n),
               "sparse": rng.choice([7, 10**10], n), "offset": rng.integers(100, 110, n)}.get(kind, rng.integers(0, 6, n))
    table = _logs_table(n).set_column(0, "decision_id", pa.array(ids)).set_column(1, "action", pa.array(actions))
    pq.write_table(table, tmp_path / "logs.parquet")
    logs = load_logs(tmp_path / "logs.parquet", CLICK, need_decision_id=True)
    for codes, uniques, values in ((logs.decision_code, logs.decision_ids, ids), (logs.action_code, logs.actions, actions)):
        want_codes, want_uniques = pd.factorize(values, sort=True)
        np.testing.assert_array_equal(codes, want_codes)
        np.testing.assert_array_equal(uniques, want_uniques)
    pq.write_table(pa.table({"decision_id": ids, "action": actions, "prob": np.ones(n)}), tmp_path / "p.parquet")
    policy = load_policy(tmp_path / "p.parquet", logs, "p")
    np.testing.assert_array_equal(policy.pi_logged, np.ones(n))
    np.testing.assert_array_equal(logs.action_code[policy.row], policy.action_code)


def test_a_fingerprint_hashed_ahead_is_the_file_as_it_is_when_asked(tmp_path):
    import hashlib
    import os

    from livegate.datasets.io import fingerprint, prefetch_fingerprints
    path = tmp_path / "logs.parquet"
    path.write_bytes(b"first version")
    prefetch_fingerprints(path, None, tmp_path / "missing.parquet")
    assert fingerprint(path) == "sha256:" + hashlib.sha256(b"first version").hexdigest()
    prefetch_fingerprints(path)
    path.write_bytes(b"second, longer version")
    os.utime(path, ns=(1, 1))  # a changed file is a different file even within the clock's resolution
    assert fingerprint(path) == "sha256:" + hashlib.sha256(b"second, longer version").hexdigest()


def test_predictions_in_decision_order_are_read_in_one_pass_batch_by_batch(tmp_path, monkeypatch):
    """Batches that split a decision's predictions, and predictions of decisions outside the logs,
    give the joins of the whole-file path; the whole table is never read."""
    from livegate.datasets import keyed
    _, logs, pairs, _, policy = _logs_predictions_and_policy(tmp_path, 300, start=50, seed=8)
    policies = {"p": policy}
    assert policies["p"].in_row_order
    outside = pd.DataFrame({"decision_id": [10, 11, 400], "action": [1, 2, 3], "q_hat": [9.0, 9.0, 9.0]})
    pairs = pd.concat([outside[:2], pairs, outside[2:]]).reset_index(drop=True)
    pq.write_table(pa.Table.from_pandas(pairs, preserve_index=False), tmp_path / "sorted.parquet", row_group_size=7)
    pq.write_table(pa.Table.from_pandas(pairs.sample(frac=1.0, random_state=1), preserve_index=False),
                   tmp_path / "shuffled.parquet")
    whole = load_q_hat(tmp_path / "shuffled.parquet", logs, policies)
    for batch_rows in (1, 5, 1000):
        monkeypatch.setattr(keyed, "BATCH_ROWS", batch_rows)
        monkeypatch.setattr(keyed, "keyed_table", lambda *a, **k: pytest.fail("read the whole table"))
        streamed = load_q_hat(tmp_path / "sorted.parquet", logs, policies)
        np.testing.assert_array_equal(streamed.logged, whole.logged)
        np.testing.assert_array_equal(streamed.expected["p"], whole.expected["p"])
    assert not np.isnan(whole.logged).any() and np.all(whole.expected["p"] != 0)


def test_string_lookups_find_codes_and_miss_absent_and_mistyped_values():
    from livegate.datasets.encoding import lookup as _lookup
    uniques = np.array(["a", "b", "d", "zz"], dtype=object)
    values = np.array(["d", "a", "c", None, "zz", "b"], dtype=object)
    np.testing.assert_array_equal(_lookup(uniques, values), [2, 0, -1, -1, 3, 1])
    assert _lookup(uniques, values).dtype == np.int64
    np.testing.assert_array_equal(_lookup(np.array([1, 5, 9]), values), [-1] * 6)   # int ids, string keys
    np.testing.assert_array_equal(_lookup(uniques, np.array([1, 2])), [-1, -1])       # string ids, int keys
