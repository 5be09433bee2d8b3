"""Evaluation on Dask (ope/execution.py, api.py's streaming path) on a real distributed LocalCluster:
2 worker processes, started once for the module.

The executor: results come back in item order, bad input found on a worker reaches the client as the
same InputError, an unreachable scheduler is an InputError within the timeout, and a worker killed
while it runs tasks changes nothing. The whole evaluation (api and CLI, --scheduler local or an
address; compact columns, policy files sorted like the logs or not) and the gate give the in-memory
path's document (numbers to 1e-12) and exactly the single-machine streamed one (but the engine block);
a corrupt partition is exit 2 naming its file; a worker killed mid-evaluation changes nothing."""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from livegate.api import evaluate
from livegate.datasets import partitions as partitions_module
from livegate.datasets.errors import InputError, Problem
from livegate.ope.execution import DaskExecutor, describe_executor, local_map


# --- module-level task functions (Dask pickles them by reference) ---------------------------------

def square_plus(x: int) -> int:
    return x * x + 1


BAD = Problem("part-00003.parquet", "is not a Parquet file (bad magic bytes)", fix="write the partition again")


def fails_on_three(x: int) -> int:
    if x == 3:
        raise InputError([BAD, Problem("part-00003.parquet", "has no column 'action'", column="action")])
    return x


def slow_square(x: int) -> tuple[int, int]:
    time.sleep(0.4)
    return x, x * x


@pytest.fixture(scope="module")
def dask_local():
    with DaskExecutor("local") as executor:
        yield executor


def test_local_map_is_the_ordered_map():
    assert local_map(square_plus, [3, 1, 2]) == [10, 2, 5]
    assert describe_executor(local_map) == {"mode": "streaming"}


def test_results_come_back_in_item_order(dask_local):
    items = list(range(40))[::-1]
    assert dask_local(square_plus, items) == [square_plus(i) for i in items]
    # two calls with equal items are two sets of tasks (unique keys), not a cached result
    assert dask_local(square_plus, items) == [square_plus(i) for i in items]
    assert dask_local(square_plus, []) == []
    info = dask_local.describe()
    assert info == {"mode": "dask", "scheduler": "local", "workers": 2, "retries": 2}


def test_input_error_in_a_task_reaches_the_client_intact(dask_local):
    with pytest.raises(InputError) as raised:
        dask_local(fails_on_three, range(6))
    expected = InputError([BAD, Problem("part-00003.parquet", "has no column 'action'", column="action")])
    assert raised.value.problems == expected.problems
    assert str(raised.value) == str(expected)
    # the cluster is still usable afterwards
    assert dask_local(square_plus, [2]) == [5]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_an_input_error_within_the_timeout():
    port = _free_port()
    start = time.monotonic()
    with pytest.raises(InputError) as raised:
        DaskExecutor(f"tcp://127.0.0.1:{port}", timeout=2.0)
    assert time.monotonic() - start < 2.0 + 5.0
    message = str(raised.value)
    assert message.startswith("--scheduler: ") and f"tcp://127.0.0.1:{port}" in message and "within 2 s" in message


@pytest.mark.parametrize("address", ["127.0.0.1:8786", "http://host:8786", "tcp://host", "tcp://host:port"])
def test_a_malformed_address_is_an_input_error(address):
    with pytest.raises(InputError, match="--scheduler: cannot read"):
        DaskExecutor(address, timeout=1.0)


def test_without_dask_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(InputError, match=r"pip install 'livegate\[dask\]'"):
        DaskExecutor("local")


def test_a_worker_killed_while_running_tasks_changes_nothing(dask_local):
    items = list(range(16))  # 16 tasks x 0.4 s on 2 workers: about 3.2 s
    expected = [(i, i * i) for i in items]
    before = dask_local.worker_pids()
    assert len(before) == 2 and all(pid != os.getpid() for pid in before.values())
    victim = sorted(before.values())[0]
    killed = threading.Event()

    def kill():
        os.kill(victim, signal.SIGKILL)  # mid-task: both workers are busy 1 s into the run
        killed.set()

    timer = threading.Timer(1.0, kill)
    timer.start()
    try:
        result = dask_local(slow_square, items)
    finally:
        timer.cancel()
    assert killed.is_set()
    assert result == expected
    # the nanny started a new worker process in place of the killed one
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        after = dask_local.worker_pids()
        if len(after) == 2 and victim not in after.values():
            break
        time.sleep(0.2)
    assert victim not in after.values() and len(after) == 2


# --- the whole evaluation on Dask (api.evaluate / the CLI with --scheduler) ----------------------

N_STREAMS = 20


def write_compact_logs(folder, n_files: int = 4, rows: int = 25_000, seed: int = 3):
    """Logs in `n_files` Parquet files (row groups of 5,000 rows) in decision order, with two candidates
    in the compact form (pi_NAME, qpi_NAME) and the logged stream's prediction (q_hat)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, N_STREAMS + 1) ** 0.7
    p /= p.sum()
    q_of = lambda a: 10.0 + 1.5 * (a % 5)  # noqa: E731
    for i in range(n_files):
        action = rng.choice(N_STREAMS, size=rows, p=p)
        columns = {"decision_id": np.arange(i * rows, (i + 1) * rows, dtype=np.int64), "action": action.astype(np.int32),
                   "propensity": p[action], "click": (rng.random(rows) < 0.05 + 0.01 * (action % 4)).astype(np.int8),
                   "watch_seconds": rng.exponential(q_of(action) + 2.0)}
        for name, stride in (("cand_a", 1), ("cand_b", 3)):
            base = rng.choice(N_STREAMS, size=rows, p=p)
            streams = (base[:, None] + stride * np.arange(3)[None, :]) % N_STREAMS
            probs = np.array([0.6, 0.3, 0.1]) * 0.9
            columns[f"pi_{name}"] = 0.1 / N_STREAMS + np.sum(np.where(streams == action[:, None], probs, 0.0), axis=1)
            columns[f"qpi_{name}"] = 0.1 * np.mean(q_of(np.arange(N_STREAMS))) + np.sum(probs * q_of(streams), axis=1)
        columns["q_hat"] = q_of(action)
        pq.write_table(pa.table(columns), folder / f"part-{i:03d}.parquet", row_group_size=5_000)
    return folder


@pytest.fixture(scope="module")
def compact_logs(tmp_path_factory):
    return write_compact_logs(tmp_path_factory.mktemp("stream") / "logs")


@pytest.fixture
def small_partitions(monkeypatch):
    """Partitions of about 5,000 rows at the smallest budget (16MiB): several per file. Planning runs on
    the client (this process), so the workers need no patching."""
    monkeypatch.setattr(partitions_module, "PARTITION_SHARE", 0.005)
    return "16MiB"


POLICIES = {"cand_a": None, "cand_b": None}
OPTIONS = dict(rewards=["watch_seconds", "click"], estimators=["ips", "snips", "dr"])


def _without_engine(document: dict) -> dict:
    document = json.loads(json.dumps(document))
    document["data"].pop("engine", None)
    return document


#: the in-memory path's warning about context columns: streaming reads none (it fits no reward model)
CONTEXT_WARNING = "No context columns found"


def _in_memory_view(document: dict) -> dict:
    """The in-memory document as the streamed one reads: without the warning about context columns."""
    document = json.loads(json.dumps(document))
    document["warnings"] = [w for w in document["warnings"] if not w.startswith(CONTEXT_WARNING)]
    return document


def _assert_same_document(a, b, rel: float = 1e-12, path: str = "") -> None:
    """Equal documents (as JSON: tuples are lists), floats to `rel` relative (NaN equals NaN)."""
    if not path:
        a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, sorted(set(a) ^ set(b)))
        for key in a:
            _assert_same_document(a[key], b[key], rel, f"{path}/{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_document(x, y, rel, f"{path}/{i}")
    elif isinstance(a, float) and isinstance(b, (int, float)):
        assert (np.isnan(a) and np.isnan(b)) or a == b or abs(a - b) <= rel * max(abs(a), abs(b)), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_evaluate_on_dask_equals_the_in_memory_and_the_streamed_result(dask_local, compact_logs, small_partitions):
    memory = evaluate(str(compact_logs), POLICIES, **OPTIONS).to_dict()
    streamed = evaluate(str(compact_logs), POLICIES, **OPTIONS, max_memory=small_partitions).to_dict()
    on_dask = evaluate(str(compact_logs), POLICIES, **OPTIONS, max_memory=small_partitions,
                       scheduler=dask_local.address).to_dict()
    assert streamed["data"]["engine"]["mode"] == "streaming" and on_dask["data"]["engine"]["mode"] == "dask"
    assert on_dask["data"]["engine"]["partitions"] > 4  # several per file: the merge order matters
    assert on_dask["data"]["engine"]["workers"] == 2
    assert _without_engine(on_dask) == _without_engine(streamed)
    _assert_same_document(_in_memory_view(memory), _without_engine(on_dask))


def test_cli_with_a_local_cluster_equals_the_in_memory_result(compact_logs, small_partitions, tmp_path, livegate):
    memory = livegate("--quiet", "evaluate", "--logs", compact_logs, "--policy", "cand_a", "--policy", "cand_b",
                      "--reward", "watch_seconds", "--estimators", "ips,snips,dr", "--out", tmp_path / "memory.json")
    assert memory.code == 0, memory.err
    dask = livegate("--quiet", "evaluate", "--logs", compact_logs, "--policy", "cand_a", "--policy", "cand_b",
                    "--reward", "watch_seconds", "--estimators", "ips,snips,dr", "--max-memory", small_partitions,
                    "--scheduler", "local", "--out", tmp_path / "dask.json")
    assert dask.code == 0, dask.err
    on_dask = json.loads((tmp_path / "dask.json").read_text())
    assert on_dask["data"]["engine"]["mode"] == "dask" and on_dask["data"]["engine"]["scheduler"] == "local"
    _assert_same_document(_in_memory_view(json.loads((tmp_path / "memory.json").read_text())), _without_engine(on_dask))


def _corrupt_a_page(path, row_group: int = 1, column: str = "watch_seconds") -> None:
    """Overwrite the header of one data page: the footer stays valid (planning reads only footers), so
    the worker that reads the partition finds the damage."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    chunk = meta.row_group(row_group).column(names.index(column))
    offset = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 64)


def test_a_corrupt_partition_is_exit_2_naming_the_file(dask_local, compact_logs, small_partitions, tmp_path, livegate):
    import shutil
    logs = tmp_path / "logs"
    shutil.copytree(compact_logs, logs)
    _corrupt_a_page(logs / "part-002.parquet")
    result = livegate("--quiet", "evaluate", "--logs", logs, "--policy", "cand_a", "--reward", "watch_seconds",
                      "--estimators", "ips,snips", "--max-memory", small_partitions, "--scheduler", dask_local.address)
    assert result.code == 2, result.err
    assert "part-002.parquet" in result.err and "internal error" not in result.err


def slow_down_loading(delay: float = 0.15) -> None:
    """On a worker: each partition takes `delay` s longer to load (a worker started after a kill is fast)."""
    import livegate.api as api
    if not getattr(api.load_partition, "slowed", False):
        original = api.load_partition

        def slow(partition, request):
            time.sleep(delay)
            return original(partition, request)

        slow.slowed, slow.original = True, original
        api.load_partition = slow


def restore_loading() -> None:
    import livegate.api as api
    api.load_partition = getattr(api.load_partition, "original", api.load_partition)


def test_a_worker_killed_mid_evaluation_leaves_the_result_unchanged(dask_local, compact_logs, small_partitions):
    streamed = evaluate(str(compact_logs), POLICIES, **OPTIONS, max_memory=small_partitions).to_dict()
    client = dask_local.client
    client.run(slow_down_loading)
    pids = dask_local.worker_pids()
    killed, done = [], threading.Event()

    def kill_a_busy_worker():
        while not done.is_set():  # the first worker seen running one of the evaluation's tasks
            busy = [w for w, keys in client.processing().items() if any(str(k).startswith("livegate-") for k in keys)]
            if busy and busy[0] in pids:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(pids[busy[0]])
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    try:
        on_dask = evaluate(str(compact_logs), POLICIES, **OPTIONS, max_memory=small_partitions,
                           scheduler=dask_local.address).to_dict()
    finally:
        done.set()
        killer.join()
        client.run(restore_loading)
    assert killed, "no worker was running the evaluation's tasks"
    assert _without_engine(on_dask) == _without_engine(streamed)
    deadline = time.monotonic() + 20  # the nanny replaces the killed worker
    while len(dask_local.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)


GATE_TOML = """
[data]
logs = "{logs}"

[evaluation]
estimator = "dr"

[[candidate]]
name = "cand_a"

[[candidate]]
name = "cand_b"

[[criterion]]
metric = "watch_seconds"
rule = "improves"
min_effect = 0.001
relative = true                 # a contrast whose coefficients need the baseline's estimate

[[criterion]]
metric = "click"
rule = "non_inferior"
margin = 0.05
relative = true
{engine}"""


def test_the_gate_on_dask_decides_as_in_memory(dask_local, compact_logs, small_partitions, tmp_path, livegate):
    memory_toml, dask_toml = tmp_path / "memory.toml", tmp_path / "dask.toml"
    memory_toml.write_text(GATE_TOML.format(logs=compact_logs, engine=""))
    dask_toml.write_text(GATE_TOML.format(logs=compact_logs, engine=f'\n[engine]\nmax_memory = "{small_partitions}"\n'
                                                                    f'scheduler = "{dask_local.address}"\n'))
    memory = livegate("--quiet", "gate", "--config", memory_toml, "--out", tmp_path / "memory.json")
    dask = livegate("--quiet", "gate", "--config", dask_toml, "--out", tmp_path / "dask.json")
    assert memory.code == dask.code and memory.code in (0, 1, 3), (memory.err, dask.err)
    expected, found = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("memory", "dask"))
    assert found["evaluation"]["data"]["engine"]["mode"] == "dask"
    found["evaluation"] = _without_engine(found["evaluation"])
    expected["evaluation"] = _in_memory_view(expected["evaluation"])
    for doc in (expected, found):  # the configuration files differ by [engine] only
        doc["inputs"].pop("config")
        doc.pop("config", None)
        for candidate in doc["candidates"]:  # the reasons print the numbers to 4 digits: a last-bit
            for criterion in candidate["criteria"]:  # difference can round the other way
                assert criterion.pop("reason")
    _assert_same_document(expected, found)


def test_engine_settings_of_gate_toml_are_checked(compact_logs, tmp_path, livegate):
    from livegate.datasets.gate_config import load_gate_config
    path = tmp_path / "gate.toml"
    path.write_text(GATE_TOML.format(logs="logs", engine='\n[engine]\nmax_memory = "2GiB"\nscheduler = "local"\n'))
    cfg = load_gate_config(path)
    assert cfg.max_memory == 2 * 2**30 and cfg.scheduler == "local"
    path.write_text(GATE_TOML.format(logs="logs", engine='\n[engine]\nmax_memory = "1KB"\nworkers = 3\n'))
    result = livegate("gate", "--config", path)
    assert result.code == 2
    assert "[engine] max_memory" in result.err and "[engine] has an unknown key 'workers'" in result.err
    # the command line overrides [engine], and a problem with a flag names the flag
    path.write_text(GATE_TOML.format(logs=compact_logs, engine='\n[engine]\nscheduler = "local"\n'))
    result = livegate("gate", "--config", path, "--scheduler", "localhost")
    assert result.code == 2 and "  - --scheduler: cannot read 'localhost'" in result.err
    path.write_text(GATE_TOML.format(logs=compact_logs, engine='\n[engine]\nscheduler = "localhost"\n'))
    result = livegate("gate", "--config", path)
    assert result.code == 2 and "[engine] scheduler: cannot read 'localhost'" in result.err


@pytest.mark.parametrize("shuffled", [False, True], ids=["sorted-ranges", "buckets"])
def test_long_format_policies_on_dask_equal_the_in_memory_result(dask_local, sim_files, small_partitions, shuffled,
                                                                   tmp_path):
    """Policy files joined by decision: read by decision-id ranges when sorted like the logs, else
    hash-partitioned into buckets (DuckDB, in a temporary directory the local workers share)."""
    logs = tmp_path / "logs.parquet"  # row groups of 500 rows: a partition is at least one row group
    pq.write_table(pq.read_table(sim_files.logs), logs, row_group_size=500)
    policies = {name: str(path) for name, path in list(sim_files.policies.items())[:2]}
    if shuffled:
        for name, path in policies.items():
            table = pq.read_table(path)
            order = np.random.default_rng(0).permutation(table.num_rows)
            policies[name] = str(tmp_path / f"{name}.parquet")
            pq.write_table(table.take(order), policies[name], row_group_size=2_000)
    options = dict(rewards=["watch_seconds"], estimators=["ips", "snips"])
    memory = evaluate(str(logs), policies, **options).to_dict()
    on_dask = evaluate(str(logs), policies, **options, max_memory=small_partitions,
                       scheduler=dask_local.address).to_dict()
    plan = on_dask["data"]["engine"]["plan"]
    assert plan["strategy"] == ("buckets" if shuffled else "sorted-ranges") and plan["partitions"] > 1
    _assert_same_document(_in_memory_view(memory), _without_engine(on_dask))


def test_dr_with_a_sampled_reward_model_on_dask_equals_the_streamed_result(dask_local, sim_files, small_partitions,
                                                                           tmp_path):
    """DR without predictions: the reward model is cross-fitted once on the client from the partitions'
    sampled decisions (here every decision: the logs are small) and sent to the workers, which predict their
    own rows: the document equals the single-machine streamed one exactly (but the execution fields)."""
    logs = tmp_path / "logs.parquet"
    pq.write_table(pq.read_table(sim_files.logs), logs, row_group_size=500)
    policies = {name: str(path) for name, path in list(sim_files.policies.items())[:2]}
    options = dict(rewards=["watch_seconds", "click"], estimators=["ips", "dm", "dr"], max_memory=small_partitions)
    streamed = evaluate(str(logs), policies, **options).to_dict()
    on_dask = evaluate(str(logs), policies, **options, scheduler=dask_local.address).to_dict()
    assert on_dask["data"]["engine"]["mode"] == "dask" and on_dask["data"]["engine"]["partitions"] > 1
    model = on_dask["data"]["engine"]["reward_model"]
    assert model == streamed["data"]["engine"]["reward_model"]
    assert model["sampled"] and model["sample_rows"] == sim_files.simulation.config.n_rows and model["fraction"] == 1.0
    assert _without_engine(on_dask) == _without_engine(streamed)
