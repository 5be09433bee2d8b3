"""A run's outputs as one set: checked before any work, written together or not at all, never mixed
between concurrent runs; a directory of Parquet files read with the union of its files' columns."""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from livegate.datasets import InputError
from livegate.datasets import io as lio
from livegate.datasets.loading import open_dataset, read_table


def _evaluate(sim_files, *outputs):
    return run_cli("evaluate", "--logs", sim_files.logs, "--policy", f"better={sim_files.policies['better']}",
                   "--estimators", "snips", *outputs)


def test_a_failure_writing_the_second_output_leaves_the_old_set(sim_files, tmp_path, monkeypatch):
    out, report = tmp_path / "result.json", tmp_path / "report.html"
    out.write_bytes(b"old json")
    report.write_bytes(b"old html")
    real, calls = tempfile.mkstemp, []

    def failing_second(*args, **kwargs):
        calls.append(kwargs.get("prefix"))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", failing_second)
    result = _evaluate(sim_files, "--out", out, "--report", report)
    assert result.code == 2 and "No space left on device" in result.err, result.err
    assert len(calls) == 2
    assert out.read_bytes() == b"old json" and report.read_bytes() == b"old html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "result.json"]  # no temporaries


def test_a_failure_while_writing_data_removes_every_temporary(tmp_path, monkeypatch):
    a, b = tmp_path / "a.json", tmp_path / "sub" / "b.html"
    a.write_bytes(b"old a")
    real, calls = os.fdopen, []

    def failing_second(fd, *args, **kwargs):
        calls.append(fd)
        if len(calls) == 2:
            os.close(fd)
            raise RuntimeError("boom")
        return real(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", failing_second)
    with pytest.raises(RuntimeError, match="boom"):
        lio.write_all_atomic([(a, "new a", "--out"), (b, b"new b", "--report")])
    assert a.read_bytes() == b"old a" and not b.exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["a.json"]
    assert list((tmp_path / "sub").iterdir()) == []


def test_a_set_is_written_whole_with_the_mode_open_gives(tmp_path):
    paths = lio.write_all_atomic([(tmp_path / "a.json", "{}\n", "--out"), (tmp_path / "b.md", b"# b\n", "--markdown")])
    assert [p.read_bytes() for p in paths] == [b"{}\n", b"# b\n"]
    umask = os.umask(0)
    os.umask(umask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in paths)


def test_the_same_path_for_out_and_report_is_rejected_before_any_work(sim_files, tmp_path, monkeypatch):
    """`--out X --report X` used to replace the JSON with the HTML silently."""
    import livegate.api as api

    def no_work(*args, **kwargs):
        raise AssertionError("the inputs were loaded before the outputs were checked")

    monkeypatch.setattr(api, "load_inputs", no_work)
    path = tmp_path / "both"
    result = _evaluate(sim_files, "--out", path, "--report", tmp_path / "." / "both")
    assert result.code == 2, result.err
    assert "--report" in result.err and "--out" in result.err and "different paths" in result.err, result.err
    assert not path.exists()


def test_the_same_path_twice_is_rejected_by_the_api(tmp_path):
    with pytest.raises(InputError, match="different paths"):
        lio.write_all_atomic([(tmp_path / "x", "a", "--out"), (tmp_path / "x", "b", "--junit")])
    assert not (tmp_path / "x").exists()


def test_two_concurrent_runs_never_leave_a_mixed_set(tmp_path, monkeypatch):
    """Each run renames its set under the lock on .livegate.lock: the two files always come from one
    run, however the renames of two threads interleave (a pause between renames widens the window)."""
    real = os.replace

    def slow_replace(src, dst):
        real(src, dst)
        time.sleep(0.001)

    monkeypatch.setattr(os, "replace", slow_replace)
    a, b = tmp_path / "a.json", tmp_path / "b.html"
    mixed = []

    def run(name):
        for i in range(40):
            tag = f"{name}-{i}"
            lio.write_all_atomic([(a, tag, "--out"), (b, tag, "--report")])
            with lio._lock(tmp_path):  # read as a set, as a run would write it
                if a.read_text() != b.read_text():
                    mixed.append((a.read_text(), b.read_text()))

    threads = [threading.Thread(target=run, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mixed, mixed[:3]
    assert a.read_text() == b.read_text()
    assert (tmp_path / lio.LOCK_NAME).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --- a directory of files with different columns ---------------------------------------------------

def test_a_column_only_in_a_later_file_is_not_dropped(tmp_path):
    pq.write_table(pa.table({"action": ["a", "b"], "reward": [1.0, 2.0]}), tmp_path / "1.parquet")
    pq.write_table(pa.table({"action": ["c"], "reward": [3.0], "extra": [7.0]}), tmp_path / "2.parquet")
    dataset = open_dataset(tmp_path)
    assert set(dataset.schema.names) == {"action", "reward", "extra"}
    table = read_table(tmp_path, ["action", "reward"], optional=["extra"])
    assert "extra" in table.column_names and sorted(table.column("extra").drop_null().to_pylist()) == [7.0]
    with pytest.raises(InputError, match=r"column 'extra': is missing from 1 of its 2 files: .*1\.parquet"):
        read_table(tmp_path, ["action", "extra"])


def _split_logs(sim_files, tmp_path, second_half) -> Path:
    """The simulated logs as a directory of two files, a.parquet and b.parquet = second_half(rest)."""
    logs = pq.read_table(sim_files.logs)
    folder = tmp_path / "logs"
    folder.mkdir()
    half = logs.num_rows // 2
    pq.write_table(logs.slice(0, half), folder / "a.parquet")
    pq.write_table(second_half(logs.slice(half)), folder / "b.parquet")
    return folder


def test_a_file_lacking_the_reward_column_is_named(sim_files, tmp_path):
    folder = _split_logs(sim_files, tmp_path, lambda rest: rest.drop_columns(["watch_seconds"]))
    result = run_cli("validate", "--logs", folder, "--reward", "watch_seconds")
    assert result.code == 2 and "Traceback" not in result.err, result.err
    assert "column 'watch_seconds'" in result.err and str(folder / "b.parquet") in result.err, result.err
    assert str(folder / "a.parquet") not in result.err


def test_files_with_the_same_columns_in_another_order_still_read(sim_files, tmp_path):
    folder = _split_logs(sim_files, tmp_path, lambda rest: rest.select(list(reversed(rest.column_names))))
    result = run_cli("validate", "--logs", folder)
    assert result.code == 0 and "2,000 rows" in result.out, result.err
