"""The command line: usage errors, --help/--version, exit codes, `simulate` determinism and atomic
outputs, never overwriting an input, reward specifications."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livegate import cli
from livegate.api import parse_named
from conftest import run_cli
from livegate.datasets import InputError, RewardSpec, parse_reward
from livegate.datasets.io import write_atomic

ROOT = Path(__file__).resolve().parent.parent


def run_process(*argv, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, argv)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def one_line_usage_error(result) -> None:
    assert result.code == 2
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("livegate"), result.err


# --- end to end, in a fresh interpreter ---------------------------------------------------------

def test_version_and_help_from_a_checkout():
    version = run_process("--version")
    assert version.returncode == 0 and version.stdout.startswith("livegate ")
    from livegate.datasets import __version__
    assert __version__ in version.stdout
    helped = run_process("--help")
    assert helped.returncode == 0 and "example" in helped.stdout and "exit codes" in helped.stdout


def test_usage_error_from_a_checkout_is_one_line():
    result = run_process("frobnicate")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "frobnicate" in result.stderr


def test_simulate_twice_with_the_same_seed_gives_identical_files(tmp_path):
    def digests(out: Path) -> dict[str, str]:
        return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*")) if p.is_file()}

    runs = [run_process("simulate", "--out", tmp_path / name, "--n-rounds", 3000, "--seed", 5)
            for name in ("a", "b")]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    a, b = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert set(a) == {"logs.parquet", "actions.parquet", "truth.json", "candidates.parquet", "policies/better.parquet",
                      "policies/worse.parquet", "policies/logging_replica.parquet", "policies/greedy.parquet"}
    assert a == b
    # atomic writes leave no temporary file behind
    assert not [p for p in (tmp_path / "a").rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    # and the seed matters
    assert run_cli("simulate", "--out", tmp_path / "c", "--n-rounds", 3000, "--seed", 6).code == 0
    assert digests(tmp_path / "c")["logs.parquet"] != a["logs.parquet"]
    # validate accepts what simulate wrote, end to end
    policies = [f"--policy={n}={tmp_path / 'a' / 'policies' / f'{n}.parquet'}"
                for n in ("better", "worse", "logging_replica", "greedy")]
    validated = run_process("validate", "--logs", tmp_path / "a" / "logs.parquet", *policies)
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.count("OK policy") == 4


def test_invalid_input_end_to_end_has_no_traceback(tmp_path):
    (tmp_path / "logs.parquet").write_text("not parquet")
    result = run_process("validate", "--logs", tmp_path / "logs.parquet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'logs.parquet'}: is not a readable Parquet file" in result.stderr


# --- usage errors ---------------------------------------------------------------------------------

def _commands() -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


def test_the_documented_commands_exist():
    assert {"simulate", "validate", "evaluate", "causal", "report", "gate", "demo"} <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help_with_an_example(command):
    result = run_cli(command, "--help")
    assert result.code == 0 and result.err == ""
    assert "example" in result.out and f"livegate {command}" in result.out


def test_version_in_process():
    result = run_cli("--version")
    assert result.code == 0 and result.out.startswith("livegate ")


@pytest.mark.parametrize("argv", [
    ["frobnicate"],
    ["validate", "--logs", "x.parquet", "--bogus"],
    ["--bogus", "validate"],
    ["validate"],
    ["simulate"],
    ["simulate", "--out", "x", "--n-rounds", "many"],
    ["evaluate", "--logs", "x.parquet"],
    ["evaluate", "--logs", "x.parquet", "--policy", "a=b", "--alpha", "high"],
])
def test_bad_command_lines_exit_2_with_one_line(argv):
    one_line_usage_error(run_cli(*argv))


def test_no_command_prints_help_and_exits_2():
    result = run_cli()
    assert result.code == 2 and "usage" in result.out


@pytest.mark.parametrize("text", ["=x", "a=", "a b=x", "", " =x", "a/b=x", "a*=x", "...=x", "a= "])
def test_malformed_policy_arguments(tmp_path, sim_files, text):
    result = run_cli("validate", "--logs", sim_files.logs, "--policy", text)
    assert result.code == 2 and "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.startswith("  - ")]
    assert len(lines) == 1 and lines[0].startswith(f"  - --policy: cannot read '{text}'")
    assert "NAME=PATH" in lines[0]


@pytest.mark.parametrize("text, expected", [
    ("better=p/better.parquet", ("better", "p/better.parquet")),
    (" new_ranker-2.b = x.parquet ", ("new_ranker-2.b", "x.parquet")),
    ("a=b=c.parquet", ("a", "b=c.parquet")),
    ("compact", ("compact", None)),
])
def test_well_formed_policy_arguments(text, expected):
    assert parse_named(text, "--policy") == expected


@settings(max_examples=40, deadline=None)
@given(name=st.text(st.characters(codec="ascii", exclude_characters="="), max_size=8), path=st.text(max_size=8))
def test_named_path_accepts_exactly_the_documented_names(name, path):
    import re

    text = f"{name}={path}"
    valid = bool(re.fullmatch(r"[A-Za-z0-9_.\-]*[A-Za-z0-9][A-Za-z0-9_.\-]*", name.strip())) and bool(path.strip())
    if valid:
        assert parse_named(text, "--policy") == (name.strip(), path.strip())
    else:
        with pytest.raises(InputError):
            parse_named(text, "--policy")


def test_policy_name_given_twice(sim_files):
    better = sim_files.policies["better"]
    result = run_cli("validate", "--logs", sim_files.logs, "--policy", f"a={better}", "--policy", f"a={better}")
    assert result.code == 2 and "given twice" in result.err


def test_compact_policy_without_its_column(sim_files):
    result = run_cli("validate", "--logs", sim_files.logs, "--policy", "ghost")
    assert result.code == 2 and f"{sim_files.logs}, column 'pi_ghost'" in result.err


def test_missing_predictions_are_reported_by_validate_per_policy(sim_files, tmp_path):
    """q-hat for the logged actions of all but 7 decisions and nothing else: validate names both gaps."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    logs = pq.read_table(sim_files.logs, columns=["decision_id", "action"])
    q_hat = logs.append_column("q_hat", pa.array(np.ones(logs.num_rows)))
    pq.write_table(q_hat.slice(0, logs.num_rows - 7), tmp_path / "q.parquet")
    result = run_cli("validate", "--logs", sim_files.logs, "--policy", f"better={sim_files.policies['better']}",
                     "--q-hat", tmp_path / "q.parquet")
    assert result.code == 2 and "Traceback" not in result.err
    assert f"{tmp_path / 'q.parquet'}, column 'q_hat': 7 rows of the logs have no prediction" in result.err
    assert "of policy 'better' with positive probability have no prediction" in result.err


def test_debug_shows_the_traceback_of_invalid_input(tmp_path):
    result = run_cli("--debug", "validate", "--logs", tmp_path / "nope.parquet")
    assert result.code == 2 and "Traceback" in result.err and "does not exist" in result.err


def test_internal_error_exits_4_with_traceback_only_under_debug(monkeypatch, sim_files):
    def broken(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "cmd_validate", broken)
    result = run_cli("validate", "--logs", sim_files.logs)
    assert result.code == 4 and "Traceback" not in result.err
    assert "internal error: ZeroDivisionError: boom" in result.err and "--debug" in result.err
    debug = run_cli("--debug", "validate", "--logs", sim_files.logs)
    assert debug.code == 4 and "Traceback" in debug.err


# --- outputs: atomic, never over an input ----------------------------------------------------------

def test_write_atomic_refuses_to_overwrite_a_protected_input(tmp_path):
    target = tmp_path / "logs.parquet"
    target.write_bytes(b"input")
    with pytest.raises(InputError) as exc:
        write_atomic(target, b"output", protected=frozenset({target.resolve()}))
    assert "never overwrites an input" in str(exc.value)
    # the same file reached by another spelling of its path
    with pytest.raises(InputError):
        write_atomic(tmp_path / "." / "logs.parquet", "x", protected=frozenset({target.resolve()}))
    assert target.read_bytes() == b"input"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs.parquet"]


def test_write_atomic_replaces_whole_files_and_cleans_up_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out" / "result.json"
    write_atomic(target, "first")
    write_atomic(target, "second")
    assert target.read_text() == "second"

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write_atomic(target, "third")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_outputs_get_the_usual_file_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_atomic(tmp_path / "report.html", "<html></html>")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_evaluate_never_overwrites_its_input(sim_files, tmp_path):
    logs_copy = tmp_path / "logs.parquet"
    logs_copy.write_bytes(sim_files.logs.read_bytes())
    before = logs_copy.read_bytes()
    result = run_cli("--quiet", "evaluate", "--logs", logs_copy, "--policy", f"b={sim_files.policies['better']}",
                     "--reward", "watch_seconds", "--estimators", "ips,snips", "--out", logs_copy)
    assert result.code == 2 and "never overwrites an input" in result.err and "Traceback" not in result.err
    assert logs_copy.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name != "logs.parquet"]


def test_simulate_into_a_file_is_invalid_input(tmp_path):
    (tmp_path / "taken").write_text("x")
    result = run_cli("simulate", "--out", tmp_path / "taken", "--n-rounds", 100)
    assert result.code == 2 and "is not a directory" in result.err


@pytest.mark.parametrize("flag, value", [("--n-rounds", 0), ("--n-rounds", -5), ("--n-positions", 0),
                                         ("--n-streams", 1)])
def test_simulate_rejects_impossible_configurations(tmp_path, flag, value):
    result = run_cli("simulate", "--out", tmp_path / "s", flag, value)
    assert result.code == 2 and "Traceback" not in result.err and flag.lstrip("-").replace("-", "_") in result.err


# --- reward specifications -----------------------------------------------------------------------

@pytest.mark.parametrize("text, name, weights", [
    ("click", "click", {"click": 1.0}),
    ("watch_seconds + 50*gift_value", "watch_seconds + 50*gift_value", {"watch_seconds": 1.0, "gift_value": 50.0}),
    ("engagement=watch_seconds + 50*gift_value", "engagement", {"watch_seconds": 1.0, "gift_value": 50.0}),
    ("  e = 2*a - b*0.5 ", "e", {"a": 2.0, "b": -0.5}),
    ("1e-3*watch_seconds", "1e-3*watch_seconds", {"watch_seconds": 0.001}),
    ("a*1E+2 - 2.5e-1*b", "a*1E+2 - 2.5e-1*b", {"a": 100.0, "b": -0.25}),
    ("a + a", "a + a", {"a": 2.0}),
    (".5*a", ".5*a", {"a": 0.5}),
    ("5.*a", "5.*a", {"a": 5.0}),
    ("-click", "-click", {"click": -1.0}),
    ("net = - click + watch_seconds", "net", {"click": -1.0, "watch_seconds": 1.0}),
    ("+click", "click", {"click": 1.0}),
    ("x1e-3*a", "x1e-3*a", {"x1e": 1.0, "a": -3.0}),   # x1e is a column name, not a number
    ("=click", "click", {"click": 1.0}),
])
def test_parse_valid_rewards(text, name, weights):
    spec = parse_reward(text)
    assert spec.name == name and dict(spec.weights) == weights
    assert spec.columns == list(weights)


@pytest.mark.parametrize("text", ["", "  ", "x=", "a +", "a -", "a b", "3", "a*b", "a**2", "*a", "a==b", "a=b=c",
                                  "a,b", "--a", "a + -b", "2*", "sum(a)", "a/2"])
def test_parse_invalid_rewards(text):
    with pytest.raises(InputError) as exc:
        parse_reward(text)
    assert str(exc.value).startswith("--reward: ")


@settings(max_examples=40, deadline=None)
@given(terms=st.lists(st.tuples(st.sampled_from(["click", "watch_seconds", "gift_value", "x_1", "a.b"]),
                                st.floats(-1e3, 1e3, allow_nan=False).filter(lambda w: abs(w) > 1e-9)),
                      min_size=1, max_size=4, unique_by=lambda t: t[0]))
def test_reward_expressions_round_trip(terms):
    """Writing weights as an expression and parsing it back gives the same weights and the same reward."""
    expr = " + ".join(f"{w!r}*{c}" for c, w in terms).replace("+ -", "- ")
    spec = parse_reward(expr)
    assert dict(spec.weights) == pytest.approx(dict(terms))
    again = parse_reward(spec.expression)
    assert dict(again.weights) == pytest.approx(dict(terms), rel=1e-12)
    columns = {c: np.arange(3.0) + i for i, (c, _) in enumerate(terms)}
    np.testing.assert_allclose(spec.combine(columns), sum(w * columns[c] for c, w in terms))


def test_reward_spec_combines_columns():
    spec = RewardSpec("r", (("a", 2.0), ("b", -1.0)))
    np.testing.assert_array_equal(spec.combine({"a": np.array([1.0, 2.0]), "b": np.array([0.5, 4.0])}), [1.5, 0.0])
    assert spec.expression == "2*a - b"


@pytest.mark.parametrize("reward, column", [("nonexistent", "nonexistent"), ("watch_seconds + 2*bogus", "bogus"),
                                            ("eng=watch_seconds + 50*gifts", "gifts")])
def test_reward_naming_a_missing_column_exits_2_through_evaluate(sim_files, reward, column):
    result = run_cli("--quiet", "evaluate", "--logs", sim_files.logs, "--policy", f"b={sim_files.policies['better']}",
                     "--reward", reward, "--estimators", "ips")
    assert result.code == 2 and "Traceback" not in result.err
    assert f"{sim_files.logs}, column '{column}': is missing" in result.err


def test_unreadable_reward_through_evaluate(sim_files):
    result = run_cli("--quiet", "evaluate", "--logs", sim_files.logs, "--policy", f"b={sim_files.policies['better']}",
                     "--reward", "watch seconds", "--estimators", "ips")
    assert result.code == 2 and "cannot read the reward term 'watch seconds'" in result.err


def test_logs_without_any_default_reward(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"decision_id": [1, 2], "action": [1, 2], "propensity": [0.5, 0.5], "score": [1.0, 2.0]}),
                   tmp_path / "logs.parquet")
    result = run_cli("validate", "--logs", tmp_path / "logs.parquet")
    assert result.code == 2 and "--reward" in result.err and "Traceback" not in result.err
    assert run_cli("validate", "--logs", tmp_path / "logs.parquet", "--reward", "score").code == 0
