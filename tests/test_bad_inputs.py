"""Inputs that used to end in an internal error (exit 4) are invalid input (exit 2): one readable
message naming the file, option or column (and the rows, where they count), never a traceback.
Each test is one case of issue 13, item 2, run through the command line in this process."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from livegate import cli
from livegate.datasets.causal_simulator import simulate_causal


@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread():
    """Reward-model fits on a handful of rows: OpenMP's thread start-up would cost more than the fit
    (seconds on a busy machine instead of a tenth of one)."""
    import sklearn.ensemble  # noqa: F401 - its OpenMP runtime must be loaded to be limited
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def invalid(result, *fragments: str) -> str:
    """Exit 2, no traceback, every fragment in the message; returns stderr."""
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err
    for fragment in fragments:
        assert fragment in result.err, (fragment, result.err)
    return result.err


@pytest.fixture(scope="module")
def logs_table(sim_files) -> pa.Table:
    return pq.read_table(sim_files.logs)


def _with_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


# --- uint64 decision ids ---------------------------------------------------------------------------

BIG = np.uint64(2**63 + 5)  # above the int64 range


def test_uint64_decision_ids_above_int64_in_the_logs(logs_table, tmp_path, sim_files):
    ids = logs_table.column("decision_id").to_numpy().astype(np.uint64) + BIG
    path = tmp_path / "logs.parquet"
    pq.write_table(_with_column(logs_table, "decision_id", pa.array(ids)), path)
    for argv in (["validate", "--logs", path], ["evaluate", "--logs", path, "--estimators", "snips",
                                                "--policy", f"better={sim_files.policies['better']}"]):
        invalid(run_cli(*argv), f"{path}, column 'decision_id': 2,000 rows have decision ids above "
                                "9,223,372,036,854,775,807, the largest int64", "write decision_id as int64 or as strings")


def test_uint64_decision_ids_above_int64_in_a_policy(sim_files, tmp_path):
    policy = pq.read_table(sim_files.policies["better"])
    ids = policy.column("decision_id").to_numpy().astype(np.uint64) + BIG
    path = tmp_path / "policy.parquet"
    pq.write_table(_with_column(policy, "decision_id", pa.array(ids)), path)
    invalid(run_cli("validate", "--logs", sim_files.logs, "--policy", f"b={path}"),
            f"{path}, column 'decision_id': {policy.num_rows:,} rows have decision ids above")


def test_uint64_ids_within_int64_match_int64_ids(logs_table, sim_files, tmp_path):
    """Keys are compared as int64 whatever their integer type: a uint64 or int32 export joins exactly."""
    path = tmp_path / "logs.parquet"
    ids = logs_table.column("decision_id").to_numpy()
    pq.write_table(_with_column(logs_table, "decision_id", pa.array(ids.astype(np.uint64))), path)
    policy = pq.read_table(sim_files.policies["better"])
    policy_path = tmp_path / "policy.parquet"
    pq.write_table(_with_column(policy, "decision_id", policy.column("decision_id").cast(pa.int32())), policy_path)
    result = run_cli("validate", "--logs", path, "--policy", f"b={policy_path}")
    assert result.code == 0 and "OK policy b" in result.out, result.err


def test_narrow_integer_actions_do_not_wrap_around(logs_table, tmp_path):
    """int8 actions up to 127: codes computed in the column's own width used to wrap at 127 + 1."""
    actions = (logs_table.column("action").to_numpy() % 128).astype(np.int8)
    actions[:5] = 127
    path = tmp_path / "logs.parquet"
    pq.write_table(_with_column(logs_table, "action", pa.array(actions)), path)
    policy = pd.DataFrame({"decision_id": logs_table.column("decision_id").to_numpy(),
                           "action": actions, "prob": 1.0})
    policy["action"] = policy["action"].astype(np.int8)
    policy.to_parquet(tmp_path / "policy.parquet")
    result = run_cli("validate", "--logs", path, "--policy", f"replay={tmp_path / 'policy.parquet'}")
    assert result.code == 0 and "OK policy replay" in result.out, result.err


# --- Parquet layouts ----------------------------------------------------------------------------------

def test_hive_partition_key_that_is_also_a_column(logs_table, tmp_path):
    folder = tmp_path / "logs" / "action=foo"
    folder.mkdir(parents=True)
    pq.write_table(logs_table, folder / "part.parquet")
    invalid(run_cli("validate", "--logs", tmp_path / "logs"),
            f"{tmp_path / 'logs'}, column 'action': has partition folders 'action=...' while its files also have a "
            "column 'action'", "part.parquet")


def test_hive_partition_key_of_the_same_type_never_replaces_the_column(logs_table, tmp_path):
    """x_device=ios over a string column x_device used to replace every row's value silently."""
    folder = tmp_path / "logs" / "x_device=ios"
    folder.mkdir(parents=True)
    pq.write_table(logs_table, folder / "part.parquet")
    invalid(run_cli("validate", "--logs", tmp_path / "logs"), "column 'x_device': has partition folders")


def test_hive_partitions_on_other_keys_still_work(logs_table, tmp_path):
    half = logs_table.num_rows // 2
    for day, part in (("1", logs_table.slice(0, half)), ("2", logs_table.slice(half))):
        (tmp_path / "logs" / f"day={day}").mkdir(parents=True)
        pq.write_table(part, tmp_path / "logs" / f"day={day}" / "part.parquet")
    result = run_cli("validate", "--logs", tmp_path / "logs")
    assert result.code == 0 and "2,000 rows" in result.out, result.err


def _duplicated(logs_table: pa.Table, name: str) -> pa.Table:
    keep = ["decision_id", "action", "propensity", "watch_seconds"]
    columns = [logs_table.column(c) for c in keep] + [logs_table.column(name)]
    return pa.table(columns, names=[*keep, name])


@pytest.mark.parametrize("name", ["watch_seconds", "action", "decision_id"])
def test_duplicate_column_names_in_a_parquet_file(logs_table, tmp_path, name):
    path = tmp_path / "logs.parquet"
    pq.write_table(_duplicated(logs_table, name), path)
    invalid(run_cli("validate", "--logs", path, "--reward", "watch_seconds"),
            f"{path}, column '{name}': has 2 columns named '{name}'")


def test_duplicate_column_names_in_a_file_of_a_directory(logs_table, tmp_path):
    (tmp_path / "logs").mkdir()
    pq.write_table(_duplicated(logs_table, "watch_seconds"), tmp_path / "logs" / "a.parquet")
    invalid(run_cli("validate", "--logs", tmp_path / "logs", "--reward", "watch_seconds"),
            f"{tmp_path / 'logs' / 'a.parquet'}, column 'watch_seconds': has 2 columns named 'watch_seconds'")


def test_duplicate_column_names_in_a_policy(sim_files, tmp_path):
    policy = pq.read_table(sim_files.policies["better"])
    path = tmp_path / "policy.parquet"
    pq.write_table(policy.append_column("prob", policy.column("prob")), path)
    invalid(run_cli("validate", "--logs", sim_files.logs, "--policy", f"b={path}"),
            f"{path}, column 'prob': has 2 columns named 'prob'")


def test_duplicate_column_names_in_memory(logs_table):
    from livegate.api import load_inputs
    from livegate.datasets import InputError

    frame = _duplicated(logs_table, "watch_seconds").to_pandas()
    with pytest.raises(InputError, match="logs, column 'watch_seconds': has 2 columns named 'watch_seconds'"):
        load_inputs(frame, rewards=["watch_seconds"])


# --- dr on too few rows -------------------------------------------------------------------------------

@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize("estimator", ["dr", "dm"])
def test_model_based_estimators_on_one_or_two_rows(logs_table, sim_files, tmp_path, rows, estimator):
    path = tmp_path / "logs.parquet"
    pq.write_table(logs_table.slice(0, rows), path)
    noun = "decision" if rows == 1 else "decisions"
    invalid(run_cli("evaluate", "--logs", path, "--policy", f"b={sim_files.policies['better']}",
                    "--estimators", estimator),
            f"{path}: has {rows} {noun}; the reward model of {estimator} is cross-fitted over 3 folds",
            "needs at least 3 decisions", "ips or snips")


def test_dr_on_the_fewest_rows_cross_fitting_takes(logs_table, sim_files, tmp_path):
    path = tmp_path / "logs.parquet"
    pq.write_table(logs_table.slice(0, 2), path)
    result = run_cli("evaluate", "--logs", path, "--policy", f"b={sim_files.policies['better']}",
                     "--estimators", "dr", "--folds", "2", "--reward", "watch_seconds")
    assert result.code == 0, result.err


@pytest.mark.parametrize("rows, clicks", [(300, [5]), (12, [5]), (40, [38, 39])])
def test_dr_with_a_rare_click(logs_table, sim_files, tmp_path, rows, clicks):
    """A click in only one or two training rows: the reward model trains without early stopping (its
    stratified hold-out needs each class twice) instead of failing."""
    click = np.zeros(rows, dtype=np.int64)
    click[clicks] = 1
    path = tmp_path / "logs.parquet"
    pq.write_table(_with_column(logs_table.slice(0, rows), "click", pa.array(click)), path)
    result = run_cli("evaluate", "--logs", path, "--policy", f"b={sim_files.policies['better']}",
                     "--estimators", "dr", "--reward", "click")
    assert result.code == 0, result.err


@pytest.mark.parametrize("estimator", ["dr", "dm"])
def test_reward_model_with_a_context_column_without_values(logs_table, sim_files, tmp_path, estimator):
    """A context column that is all NaN (in the logs, or in one fold's training rows): scikit-learn
    cannot bin it ("window shape cannot be larger than input array shape"); it is a constant instead.
    Found by tests/test_fuzz.py."""
    table = logs_table.slice(0, 60)
    activity = np.full(60, np.nan)
    activity[-1] = 1.0  # a value in one row only: the fold predicting it trains without any
    path = tmp_path / "logs.parquet"
    pq.write_table(_with_column(table, "x_activity", pa.array(activity)), path)
    for context in ("x_activity", "x_activity,x_hour"):
        result = run_cli("evaluate", "--logs", path, "--policy", f"b={sim_files.policies['better']}",
                         "--estimators", estimator, "--reward", "watch_seconds", "--context", context)
        assert result.code == 0, result.err


# --- seeds ---------------------------------------------------------------------------------------------

def _commands_with_seed() -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(name for name, p in sub.choices.items() if any("--seed" in a.option_strings for a in p._actions))


def test_every_command_with_a_seed_is_checked():
    assert {"simulate", "evaluate", "causal", "demo"} <= set(_commands_with_seed())


def test_the_command_lines_largest_seed_is_the_apis():
    from livegate.datasets.gate_config import MAX_SEED
    assert cli._MAX_SEED == MAX_SEED


REQUIRED = {"simulate": ["--out", "never-written"], "demo": ["--out", "never-written"],
            "evaluate": ["--logs", "x.parquet", "--policy", "a=b.parquet"],
            "causal": ["--logs", "x.parquet", "--treatment", "t", "--outcome", "y"]}


@pytest.mark.parametrize("command", _commands_with_seed())
@pytest.mark.parametrize("seed", ["-1", str(2**64 + 1), str(2**31), "1.5"])
def test_seed_out_of_range_is_a_usage_error(command, seed, tmp_path):
    result = run_cli(command, *REQUIRED.get(command, []), "--seed", seed)
    err = invalid(result, f"livegate {command}: argument --seed: '{seed}' is not a seed", "from 0 to 2,147,483,647")
    assert len(err.strip().splitlines()) == 1
    assert not Path("never-written").exists()


def test_seed_out_of_range_in_the_api(sim_files, causal_logs):
    from livegate.api import causal_check, evaluate
    from livegate.datasets import InputError

    with pytest.raises(InputError, match="--seed"):
        evaluate(sim_files.logs, {"b": sim_files.policies["better"]}, seed=-1)
    with pytest.raises(InputError, match="seed: -1 is not an integer"):
        causal_check(causal_logs, "recommended", "watch_seconds", seed=-1)


# --- output paths ----------------------------------------------------------------------------------------

LONG = "a" * 300 + ".json"


def _bad_outputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("")
    return {"directory": (tmp_path / "adir", "is a directory"),
            "long name": (tmp_path / LONG, "has a name of 305 bytes; the file system takes at most"),
            "under a file": (tmp_path / "afile" / "x.json", f"is under {tmp_path / 'afile'}, which is a file")}


@pytest.mark.parametrize("kind", ["directory", "long name", "under a file"])
@pytest.mark.parametrize("option", ["--out", "--report"])
def test_evaluate_output_paths(sim_files, tmp_path, kind, option):
    path, message = _bad_outputs(tmp_path)[kind]
    other = "--report" if option == "--out" else "--out"
    result = run_cli("evaluate", "--logs", sim_files.logs, "--policy", f"b={sim_files.policies['better']}",
                     "--estimators", "snips", option, path, other, tmp_path / "fine")
    invalid(result, f"{option} {path}: {message}")
    assert not (tmp_path / "fine").exists()  # nothing is written when one output cannot be


@pytest.mark.parametrize("kind", ["directory", "long name", "under a file"])
@pytest.mark.parametrize("option", ["--out", "--report", "--markdown", "--junit"])
def test_gate_output_paths(sim_files, tmp_path, kind, option):
    path, message = _bad_outputs(tmp_path)[kind]
    config = tmp_path / "gate.toml"
    config.write_text(f'[data]\nlogs = "{sim_files.logs}"\n[[candidate]]\nname = "better"\n'
                      f'policy = "{sim_files.policies["better"]}"\n'
                      '[[criterion]]\nmetric = "watch_seconds"\nrule = "improves"\n')
    invalid(run_cli("gate", "--config", config, option, path), f"{option} {path}: {message}")


@pytest.mark.parametrize("kind", ["directory", "long name", "under a file"])
def test_report_output_paths(sim_files, tmp_path, kind):
    path, message = _bad_outputs(tmp_path)[kind]
    document = tmp_path / "result.json"
    assert run_cli("evaluate", "--logs", sim_files.logs, "--policy", f"b={sim_files.policies['better']}",
                   "--estimators", "snips", "--out", document).code == 0
    invalid(run_cli("report", document, "--out", path), f"--out {path}: {message}")
    invalid(run_cli("report", document, "--out", tmp_path / "r.html", "--markdown", path), f"--markdown {path}: {message}")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("command", ["simulate", "demo"])
def test_output_directory_paths(tmp_path, command):
    (tmp_path / "afile").write_text("")
    invalid(run_cli(command, "--out", tmp_path / "afile"), f"--out {tmp_path / 'afile'}: exists and is not a directory")
    invalid(run_cli(command, "--out", tmp_path / "afile" / "sub"), "which is a file, not a directory")
    invalid(run_cli(command, "--out", tmp_path / ("d" * 300)), "has a name of 300 bytes")


def test_write_atomic_names_the_path_it_cannot_write(tmp_path):
    from livegate.datasets import InputError
    from livegate.datasets.io import write_atomic

    (tmp_path / "adir").mkdir()
    with pytest.raises(InputError, match="--junit .*adir: is a directory"):
        write_atomic(tmp_path / "adir", "x", option="--junit")
    # a name just within the limit: the temporary file's name must be too
    assert write_atomic(tmp_path / ("b" * 250), "x").read_text() == "x"


def test_read_only_output_directory(sim_files, tmp_path, monkeypatch):
    # the file system refuses the temporary file, as a read-only directory does for any user but root
    # (CI runs as root, so the refusal is simulated where livegate creates the file)
    import errno

    from livegate.datasets import io as livegate_io

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(livegate_io.tempfile, "mkstemp", refuse)
    invalid(run_cli("evaluate", "--logs", sim_files.logs, "--policy", f"b={sim_files.policies['better']}",
                    "--estimators", "snips", "--out", tmp_path / "ro" / "x.json"), "cannot be written")


# --- causal ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def causal_logs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("causal") / "logs.parquet"
    simulate_causal(n_rows=400, seed=2)[0].to_parquet(path)
    return path


@pytest.mark.parametrize("treatment", ["x_activity", "x_hour", "x_prime_time", "x_is_new", "x_device"])
def test_causal_treatment_that_is_a_default_confounder(causal_logs, treatment):
    invalid(run_cli("causal", "--logs", causal_logs, "--treatment", treatment, "--outcome", "watch_seconds"),
            f"{causal_logs}, column '{treatment}': is a confounder of the default live-stream graph and cannot be "
            "the treatment", "--confounders")


def test_causal_outcome_that_is_a_default_confounder(causal_logs):
    invalid(run_cli("causal", "--logs", causal_logs, "--treatment", "recommended", "--outcome", "x_activity"),
            "column 'x_activity': is a confounder of the default live-stream graph and cannot be the outcome")


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_causal_infinite_confounder(causal_logs, tmp_path, value):
    frame = pd.read_parquet(causal_logs)
    frame.loc[[3, 7], "x_activity"] = value
    path = tmp_path / "logs.parquet"
    frame.to_parquet(path)
    invalid(run_cli("causal", "--logs", path, "--treatment", "recommended", "--outcome", "watch_seconds"),
            f"{path}, column 'x_activity': 2 rows are infinite")


def test_causal_infinite_confounder_chosen_by_a_graph(causal_logs, tmp_path):
    """The graph picks the adjustment set after identification: its message names the file too."""
    frame = pd.read_parquet(causal_logs)
    frame.loc[[3], "x_activity"] = np.inf
    path = tmp_path / "logs.parquet"
    frame.to_parquet(path)
    graph = tmp_path / "g.dot"
    graph.write_text("digraph { x_activity -> recommended; x_activity -> watch_seconds; "
                     "recommended -> watch_seconds }")
    invalid(run_cli("causal", "--logs", path, "--treatment", "recommended", "--outcome", "watch_seconds",
                    "--graph", graph), f"{path}, column 'x_activity': 1 row is infinite")


# --- report ----------------------------------------------------------------------------------------------

def test_report_of_a_deeply_nested_json(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    invalid(run_cli("report", path, "--out", tmp_path / "r.html"), f"{path}: is not a JSON result document")
    path.write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    invalid(run_cli("report", path, "--out", tmp_path / "r.html"), f"{path}: is not a JSON result document")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("text, message", [
    ('{"hello": 1}', 'has no "schema" field, so it is not a livegate result document'),
    ("[1, 2]", "is not a livegate result document (a JSON object was expected, got list)"),
    ('"text"', "is not a livegate result document"),
    ('{"schema": 42}', "has schema 42, which livegate reports cannot render"),
    ('{"schema": "livegate.evaluation/1"}', "is an incomplete livegate.evaluation/1 document"),
    ("not json", "is not a JSON result document (JSONDecodeError)"),
])
def test_report_of_a_json_that_is_not_a_livegate_document(tmp_path, text, message):
    path = tmp_path / "doc.json"
    path.write_text(text)
    invalid(run_cli("report", path, "--out", tmp_path / "r.html"), f"{path}: {message}")


def test_report_of_a_document_with_a_deep_extra_field(sim_files, tmp_path):
    document = tmp_path / "result.json"
    assert run_cli("evaluate", "--logs", sim_files.logs, "--policy", f"b={sim_files.policies['better']}",
                   "--estimators", "snips", "--out", document).code == 0
    text = document.read_text().rstrip()
    assert text.endswith("}")
    document.write_text(text[:-1] + ', "deep": ' + "[" * 500 + "]" * 500 + "}")
    assert run_cli("report", document, "--out", tmp_path / "r.html").code == 0
    json.loads(document.read_text())


@pytest.mark.parametrize("where", ["window metrics", "window", "interval"])
def test_report_of_a_document_with_malformed_fields(sim_files, tmp_path, where):
    """A livegate document whose fields have the wrong type or impossible values (an interval that
    does not hold its estimate) renders what it can instead of failing in the charts. Found by
    mutating documents."""
    document = tmp_path / "result.json"
    assert run_cli("evaluate", "--logs", sim_files.logs, "--policy", f"b={sim_files.policies['better']}",
                   "--estimators", "snips", "--out", document).code == 0
    doc = json.loads(document.read_text())
    windows = doc["time_windows"]["windows"]
    if where == "window metrics":
        windows[0]["metrics"]["click"] = 1e308
    elif where == "window":
        windows[1] = "not a window"
    else:
        doc["metrics"]["gift_value"]["policies"]["logging"]["estimates"]["snips"]["value"] = -1
    document.write_text(json.dumps(doc))
    result = run_cli("report", document, "--out", tmp_path / "r.html", "--markdown", tmp_path / "r.md")
    assert result.code == 0, result.err
