"""Partitions of a streaming evaluation (datasets/partitions.py): whole decisions per partition, every
input row exactly once, memory budgets, the three strategies, errors naming the file, pickling."""
from __future__ import annotations

import multiprocessing
import os
import pickle
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from livegate.datasets import InputError, LogSchema, parse_memory, plan_stream, read_partition
from livegate.datasets.partitions import MIN_MAX_MEMORY, default_max_memory

SCHEMA = LogSchema()
LOG_COLUMNS = ["decision_id", "action", "propensity", "position", "click"]
N_DECISIONS = 600
N_ACTIONS = 4


def _logs(n_decisions: int = N_DECISIONS, seed: int = 0) -> pa.Table:
    """Two positions per decision, decisions ascending (rows of a decision adjacent)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_decisions, dtype=np.int64) * 3 + 1, 2)
    return pa.table({"decision_id": ids, "action": rng.integers(0, N_ACTIONS, ids.size),
                     "propensity": rng.uniform(0.1, 1.0, ids.size), "position": np.tile([0, 1], n_decisions),
                     "click": rng.integers(0, 2, ids.size).astype(np.float64),
                     "pi_new": rng.uniform(0.0, 1.0, ids.size)})


def _long(logs: pa.Table, value: str, seed: int = 1) -> pa.Table:
    """One row per (decision, position, action), in decision order."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(logs.column("decision_id").to_numpy(), N_ACTIONS)
    return pa.table({"decision_id": ids, "position": np.repeat(logs.column("position").to_numpy(), N_ACTIONS),
                     "action": np.tile(np.arange(N_ACTIONS), logs.num_rows), value: rng.uniform(0, 1, ids.size)})


def _shuffled(table: pa.Table, seed: int = 2) -> pa.Table:
    return table.take(np.random.default_rng(seed).permutation(table.num_rows))


def _write(table: pa.Table, path: Path, row_group_size: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _rows(table: pa.Table) -> Counter:
    return Counter(zip(*(table.column(c).to_pylist() for c in sorted(table.column_names))))


def _all(plan, columns=LOG_COLUMNS):
    return [read_partition(p, columns) for p in plan.partitions]


def _check_whole_decisions(parts, role_tables):
    """Every decision's rows of logs, policies and q-hat are in one partition; each row exactly once."""
    owner: dict = {}
    for i, t in enumerate(parts):
        tables = [("logs", t.logs)] + [(f"policy {n}", p) for n, p in t.policies.items() if p is not None] + \
                 [(f"q_hat {n}", q) for n, q in t.q_hat.items()]
        for role, table in tables:
            for d in set(table.column("decision_id").to_pylist()):
                assert owner.setdefault(d, i) == i, f"decision {d} of {role} in partitions {owner[d]} and {i}"
    for role, expected in role_tables.items():
        got = [t.logs if role == "logs" else
               (t.policies.get(role[7:]) if role.startswith("policy ") else t.q_hat[role[6:]]) for t in parts]
        assert _rows(pa.concat_tables(got)) == _rows(expected.select(got[0].column_names)), role


def test_parse_memory():
    assert parse_memory("256MB") == 256 * 10**6
    assert parse_memory("2GiB") == 2 * 2**30
    assert parse_memory(" 1.5 g ") == 1_500_000_000
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory(str(2**30)) == 2**30
    for bad in ("lots", "12XB", "-5MB", ""):
        with pytest.raises(InputError, match="--max-memory"):
            parse_memory(bad)
    with pytest.raises(InputError, match="too small"):
        parse_memory("1KB")
    assert default_max_memory() >= MIN_MAX_MEMORY


def test_row_groups_cover_every_row_and_budget_sets_the_count(tmp_path):
    logs = _logs()
    path = _write(logs, tmp_path / "logs.parquet", row_group_size=50)
    columns = [*LOG_COLUMNS, "pi_new"]
    counts = []
    for budget in (60_000, 200_000, 10**9):
        with plan_stream(path, {"new": None}, {}, schema=SCHEMA, columns=columns, max_memory=budget) as plan:
            assert plan.strategy == "row-groups" and plan.tempdir is None and plan.n_rows == logs.num_rows
            parts = _all(plan, columns)
            assert all(t.policies == {"new": None} and t.q_hat == {} for t in parts)
            # the original order, every row once
            assert pa.concat_tables([t.logs for t in parts]).equals(logs.select(columns))
            counts.append(len(plan.partitions))
    assert counts[0] > counts[1] > counts[2] == 1
    # never fewer than one row group per partition, however small the budget
    with plan_stream(path, {}, {}, schema=SCHEMA, columns=columns, max_memory=1) as plan:
        assert len(plan.partitions) == pq.ParquetFile(path).metadata.num_row_groups


def test_row_groups_keep_a_decision_that_straddles_row_groups_together(tmp_path):
    logs = _logs(200)
    path = _write(logs, tmp_path / "logs.parquet", row_group_size=7)   # odd: decisions cross row groups
    with plan_stream(path, {}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=20_000) as plan:
        assert len(plan.partitions) > 5
        parts = _all(plan)
    _check_whole_decisions(parts, {"logs": logs})
    assert pa.concat_tables([t.logs for t in parts]).equals(logs.select(LOG_COLUMNS))
    # without decision_id among the columns, partitions are plain row groups
    with plan_stream(path, {}, {}, schema=SCHEMA, columns=["click"], max_memory=20_000) as plan:
        tables = [read_partition(p, ["click"]).logs for p in plan.partitions]
    assert [t.num_rows for t in tables[:-1]] == [p.n_rows for p in plan.partitions[:-1]]


def test_directory_with_hive_keys(tmp_path):
    logs = _logs(300)
    root = tmp_path / "logs"
    half = logs.num_rows // 2
    _write(logs.slice(0, half).drop_columns(["pi_new"]), root / "day=1" / "a.parquet", 40)
    _write(logs.slice(half).drop_columns(["pi_new"]), root / "day=2" / "b.parquet", 40)
    (root / "_SUCCESS").write_text("")
    columns = [*LOG_COLUMNS, "day"]
    with plan_stream(root, {}, {}, schema=SCHEMA, columns=columns, max_memory=30_000) as plan:
        assert len(plan.partitions) > 2
        got = pa.concat_tables([t.logs for t in _all(plan, columns)])
    assert got.column("day").type == pa.int32()   # as pyarrow's dataset reads the folders
    assert got.column("day").to_pylist() == [1] * half + [2] * (logs.num_rows - half)
    assert got.drop_columns(["day"]).equals(logs.select(LOG_COLUMNS))
    # bucketed by DuckDB: the same rows and types
    policy = _write(_shuffled(_long(logs, "prob")), tmp_path / "p.parquet", 300)
    with plan_stream(root, {"new": str(policy)}, {}, schema=SCHEMA, columns=columns, max_memory=30_000) as plan:
        assert plan.strategy == "buckets" and len(plan.partitions) > 2
        parts = _all(plan, columns)
    assert parts[0].logs.schema.equals(got.schema)
    assert _rows(pa.concat_tables([t.logs for t in parts])) == _rows(got)


def test_sorted_ranges(tmp_path):
    logs = _logs()
    policy, q_hat = _long(logs, "prob"), _long(logs, "q_hat", seed=3)
    paths = {"logs": _write(logs, tmp_path / "logs.parquet", 64), "policy": _write(policy, tmp_path / "p.parquet", 333),
             "q": _write(q_hat, tmp_path / "q.parquet", 250)}
    counts = []
    for budget in (100_000, 400_000):
        with plan_stream(paths["logs"], {"new": str(paths["policy"]), "compact": None}, {"click": str(paths["q"])},
                         schema=SCHEMA, columns=LOG_COLUMNS, max_memory=budget) as plan:
            assert plan.strategy == "sorted-ranges" and plan.tempdir is None, plan.reason
            assert "sorted" in plan.reason and plan.to_dict()["strategy"] == "sorted-ranges"
            parts = _all(plan)
            counts.append(len(parts))
            assert all(t.policies["compact"] is None for t in parts)
            assert set(parts[0].policies["new"].column_names) == {"decision_id", "position", "action", "prob"}
            _check_whole_decisions(parts, {"logs": logs, "policy new": policy, "q_hat click": q_hat})
            assert pa.concat_tables([t.logs for t in parts]).equals(logs.select(LOG_COLUMNS))
    assert counts[0] > counts[1] > 1


def test_sorted_ranges_read_rows_of_decisions_absent_from_the_logs(tmp_path):
    logs = _logs(100)
    policy = _long(logs, "prob")
    extra = pa.table({"decision_id": pa.array([-5, 10**6], pa.int64()), "position": [0, 0], "action": [0, 0],
                      "prob": [1.0, 1.0]})
    policy = pa.concat_tables([extra.slice(0, 1), policy, extra.slice(1)])
    lp, pp = _write(logs, tmp_path / "logs.parquet", 20), _write(policy, tmp_path / "p.parquet", 50)
    with plan_stream(lp, {"new": str(pp)}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=30_000) as plan:
        assert plan.strategy == "sorted-ranges" and len(plan.partitions) > 2
        assert plan.notes == []
        parts = _all(plan)
    _check_whole_decisions(parts, {"logs": logs, "policy new": policy})
    # a policy in one big row group is read by every partition: correct, and noted
    big = _write(policy, tmp_path / "big.parquet", 10**6)
    with plan_stream(lp, {"new": str(big)}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=30_000) as plan:
        assert plan.strategy == "sorted-ranges" and "read" in plan.notes[0] and "big.parquet" in plan.notes[0]
        _check_whole_decisions(_all(plan), {"logs": logs, "policy new": policy})


def test_unsorted_joined_files_are_bucketed(tmp_path):
    logs = _shuffled(_logs(), seed=5)       # logs out of order too: their rows keep their order per bucket
    n = logs.num_rows
    logs = logs.append_column("a_category", pa.array(np.array(["x", "y", "z"])[np.arange(n) % 3]).dictionary_encode())
    logs = logs.append_column("timestamp", pa.array(np.arange(n) * 10**6, pa.timestamp("us", tz="UTC")))
    columns = [*LOG_COLUMNS, "a_category", "timestamp"]
    policy, q_hat = _shuffled(_long(logs, "prob")), _shuffled(_long(logs, "q_hat"), seed=4)
    # an int32 id column in one file: hashed like the logs' int64
    q_hat = q_hat.set_column(0, "decision_id", q_hat.column("decision_id").cast(pa.int32()))
    lp = _write(logs, tmp_path / "logs.parquet", 128)
    pp, qp = _write(policy, tmp_path / "p.parquet", 500), _write(q_hat, tmp_path / "q.parquet", 500)
    with plan_stream(lp, {"new": str(pp)}, {"click": str(qp)}, schema=SCHEMA, columns=columns,
                     max_memory=100_000, tempdir=str(tmp_path)) as plan:
        assert plan.strategy == "buckets" and "not sorted" in plan.reason
        tempdir = Path(plan.tempdir)
        assert tempdir.is_dir() and tempdir.parent == tmp_path and len(plan.partitions) > 3
        parts = _all(plan, columns)
        assert parts[0].logs.schema.equals(logs.select(columns).schema)
        assert parts[0].q_hat["click"].column("decision_id").type == pa.int32()
        _check_whole_decisions(parts, {"logs": logs, "policy new": policy, "q_hat click": q_hat})
        # within a bucket, the logs' rows are in their original order
        position = {d: i for i, d in enumerate(zip(logs.column("decision_id").to_pylist(),
                                                   logs.column("position").to_pylist()))}
        for t in parts:
            keys = list(zip(t.logs.column("decision_id").to_pylist(), t.logs.column("position").to_pylist()))
            assert [position[k] for k in keys] == sorted(position[k] for k in keys)
        assert "bucket" in plan.partitions[0].describe()
        # the same plan read again gives the same tables
        assert read_partition(plan.partitions[1], columns).logs.equals(parts[1].logs)
        # a subset of the planned columns, in the order asked
        subset = read_partition(plan.partitions[1], ["click", "action"]).logs
        assert subset.equals(parts[1].logs.select(["click", "action"]))
        with pytest.raises(InputError, match="column 'pi_new': was not among the columns planned"):
            read_partition(plan.partitions[1], ["pi_new"])
    assert not tempdir.exists()
    # a budget that holds everything: one partition, the files read whole, nothing written
    with plan_stream(lp, {"new": str(pp)}, {"click": str(qp)}, schema=SCHEMA, columns=LOG_COLUMNS,
                     max_memory=10**9) as plan:
        assert plan.strategy == "buckets" and plan.tempdir is None and len(plan.partitions) == 1
        (only,) = _all(plan)
        assert only.logs.equals(logs.select(LOG_COLUMNS)) and only.policies["new"].equals(policy.select(
            only.policies["new"].column_names))


def test_context_free_policy_is_read_whole_by_every_partition(tmp_path):
    logs = _logs(200)
    lp = _write(logs, tmp_path / "logs.parquet", 40)
    free = pa.table({"action": np.arange(N_ACTIONS), "prob": np.full(N_ACTIONS, 1 / N_ACTIONS)})
    fp = _write(free, tmp_path / "free.parquet")
    with plan_stream(lp, {"uniform": str(fp)}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=30_000) as plan:
        assert plan.strategy == "row-groups" and len(plan.partitions) > 1
        for t in _all(plan):
            assert t.policies["uniform"].equals(free)


def test_partitions_pickle_and_read_in_another_process(tmp_path):
    logs = _logs(300)
    logs = logs.replace_schema_metadata({b"big": b"x" * 100_000})   # never travels with a partition
    policy = _shuffled(_long(logs, "prob")).replace_schema_metadata({b"livegate.learn": b"{}"})
    lp, pp = _write(logs, tmp_path / "logs.parquet", 60), _write(policy, tmp_path / "p.parquet", 200)
    with plan_stream(lp, {"new": str(pp)}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=60_000) as plan:
        assert plan.strategy == "buckets"
        partition = plan.partitions[1]
        blob = pickle.dumps(partition)
        assert len(blob) < 10_000
        again = pickle.loads(blob)
        expected = read_partition(partition, LOG_COLUMNS)
        assert read_partition(again, LOG_COLUMNS).logs.equals(expected.logs)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            remote = pool.submit(read_partition, partition, LOG_COLUMNS).result()
        assert remote.logs.equals(expected.logs) and remote.policies["new"].equals(expected.policies["new"])
        assert remote.source == partition.describe()
        # a joined file's tables carry its metadata (a learned policy's record), as when read whole
        assert remote.policies["new"].schema.metadata == {b"livegate.learn": b"{}"}


def _corrupt(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep is not None else b"not parquet at all" * 10)


def test_unreadable_files_are_named(tmp_path):
    logs = _logs(100)
    good = _write(logs, tmp_path / "dir" / "a.parquet", 50)
    bad = _write(logs, tmp_path / "dir" / "b.parquet", 50)
    _corrupt(bad, keep=200)                               # truncated: no footer
    with pytest.raises(InputError, match="b.parquet: is not a readable Parquet file") as err:
        plan_stream(tmp_path / "dir", {}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=10**8)
    assert "a.parquet" not in str(err.value) and str(good) != str(bad)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all" * 10)
    policy = _write(_long(logs, "prob"), tmp_path / "p.parquet")
    with pytest.raises(InputError, match="junk.parquet: is not a readable Parquet file"):
        plan_stream(good, {"new": str(junk)}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=10**8)
    with pytest.raises(InputError, match="missing.parquet: does not exist"):
        plan_stream(good, {"new": str(policy)}, {"click": str(tmp_path / "missing.parquet")}, schema=SCHEMA,
                    columns=LOG_COLUMNS, max_memory=10**8)
    # corrupted after planning: reading the partition names the file
    victim = _write(logs, tmp_path / "victim.parquet", 50)
    with plan_stream(victim, {}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=30_000) as plan:
        size = victim.stat().st_size
        victim.write_bytes(victim.read_bytes()[:4] + b"\0" * (size - 8) + victim.read_bytes()[-4:])
        with pytest.raises(InputError, match="victim.parquet: is not a readable Parquet file"):
            for p in plan.partitions:
                read_partition(p, LOG_COLUMNS)
        os.remove(victim)
        with pytest.raises(InputError, match="victim.parquet: does not exist"):
            read_partition(plan.partitions[0], LOG_COLUMNS)


def test_missing_columns_and_empty_input(tmp_path):
    logs = _logs(50)
    lp = _write(logs, tmp_path / "logs.parquet")
    with pytest.raises(InputError, match=r"logs.parquet, column 'reward': is missing"):
        plan_stream(lp, {}, {}, schema=SCHEMA, columns=[*LOG_COLUMNS, "reward"], max_memory=10**8)
    policy = _write(_long(logs, "prob").drop_columns(["prob"]), tmp_path / "p.parquet")
    with pytest.raises(InputError, match=r"p.parquet, column 'prob': is missing"):
        plan_stream(lp, {"new": str(policy)}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=10**8)
    no_id = _write(logs.drop_columns(["decision_id"]), tmp_path / "noid.parquet")
    q = _write(_long(logs, "q_hat"), tmp_path / "q.parquet")
    with pytest.raises(InputError, match=r"noid.parquet, column 'decision_id': is missing"):
        plan_stream(no_id, {}, {"click": str(q)}, schema=SCHEMA, columns=["click"], max_memory=10**8)
    # a column that only some files of a directory have
    _write(logs, tmp_path / "d" / "a.parquet")
    _write(logs.drop_columns(["click"]), tmp_path / "d" / "b.parquet")
    with pytest.raises(InputError, match=r"column 'click': is missing from 1 of its 2 files: .*b.parquet"):
        plan_stream(tmp_path / "d", {}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=10**8)
    empty = _write(logs.slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(InputError, match="empty.parquet: has no rows"):
        plan_stream(empty, {}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=10**8)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="no Parquet files"):
        plan_stream(tmp_path / "nothing", {}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=10**8)


@pytest.mark.parametrize("shuffle", [False, True])
def test_string_decision_ids(tmp_path, shuffle):
    logs = _logs(300)
    ids = pa.array([f"d{i:06d}" for i in logs.column("decision_id").to_pylist()])
    logs = logs.set_column(0, "decision_id", ids)
    policy = _long(logs.set_column(0, "decision_id", pa.array(np.arange(logs.num_rows))), "prob")
    policy = policy.set_column(0, "decision_id", ids.take(policy.column("decision_id")))
    policy = _shuffled(policy) if shuffle else policy
    lp, pp = _write(logs, tmp_path / "logs.parquet", 50), _write(policy, tmp_path / "p.parquet", 400)
    said = []
    with plan_stream(lp, {"new": str(pp)}, {}, schema=SCHEMA, columns=LOG_COLUMNS, max_memory=60_000,
                     progress=said.append) as plan:
        assert plan.strategy == ("buckets" if shuffle else "sorted-ranges") and len(plan.partitions) > 2
        assert said[0] == "planning partitions" and "partitions" in said[-1]
        _check_whole_decisions(_all(plan), {"logs": logs, "policy new": policy})
