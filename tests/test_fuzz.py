"""Fuzzing the command line with malformed logs, policies and gate.toml files (hypothesis).

Whatever the input, `validate`, `evaluate` and `gate` end with a decision (0, 1, 3) or with invalid
input (2): never with an internal error (4), and an exit 2 never shows a traceback. The examples are
small (at most a dozen rows) and replayed in the same order on every run (derandomize), so that CI
is deterministic; a new failure found here goes to tests/test_bad_inputs.py as a named regression.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NAN, INF = float("nan"), float("inf")
#: values that break probabilities: NaN, infinities, negative, zero, above 1, denormal
SPECIAL_FLOATS = [NAN, INF, -INF, -0.5, 0.0, 1.0, 1.5, 5e-324, 1e-12, 1e300, -1e300]


@pytest.fixture(autouse=True, scope="module")
def _one_openmp_thread():
    """Reward-model fits on a dozen rows: OpenMP's thread start-up would cost more than the fit."""
    import sklearn.ensemble  # noqa: F401 - its OpenMP runtime must be loaded to be limited
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def never_an_internal_error(result) -> None:
    assert result.code in (0, 1, 2, 3), (result.code, result.err[-3000:])
    if result.code == 2:
        assert "Traceback" not in result.err and "internal error" not in result.err, result.err[-3000:]
        assert result.err.strip(), "exit 2 without a message"


# --- strategies: logs and policies ----------------------------------------------------------------------
# Each example starts from well-formed data and breaks it in a few places: a fuzz whose every example
# fails on its first column would never reach the estimators.

def _special(draw, column: pa.Array | None, n: int) -> list:
    """A float column's values (0.5 where it has none: missing, or changed to another type by an
    earlier mutation) with some replaced by the values that break numbers: NaN, infinities,
    negative, zero, above 1, denormal, huge."""
    floating = column is not None and pa.types.is_floating(column.type)
    values = [0.5 if v is None else v for v in column.to_pylist()] if floating else [0.5] * n
    for i in draw(st.sets(st.integers(0, max(len(values) - 1, 0)), min_size=1, max_size=3)) if values else ():
        values[i] = draw(st.sampled_from(SPECIAL_FLOATS))
    return values


LOG_MUTATIONS = ["ids_str", "ids_dup", "ids_uint64", "ids_uint64_big", "ids_null", "ids_float", "ids_int8",
                 "action_str", "action_int8", "action_float", "action_null", "action_dict", "action_uint64_big",
                 "prop_special", "prop_string", "prop_null", "prop_bool", "prop_missing",
                 "reward_special", "reward_string", "reward_null", "click_weird", "reward_missing",
                 "ctx_special", "ctx_null", "ctx_bool", "ctx_dict", "ctx_all_nan",
                 "position", "position_neg", "position_float", "position_dup",
                 "timestamp", "timestamp_naive", "timestamp_str", "dup_name", "drop_column", "no_rows", "pi_column"]


@st.composite
def logs_tables(draw) -> pa.Table:
    """Small logs: the contract's columns, then 0 to 3 of LOG_MUTATIONS."""
    n = draw(st.sampled_from([1, 2, 3, 5, 8, 12, 12, 12]))
    ids = list(range(n))
    actions = [draw(st.integers(0, 3)) for _ in range(n)]
    columns: dict[str, pa.Array] = {
        "decision_id": pa.array(ids, pa.int64()),
        "action": pa.array(actions, pa.int64()),
        "propensity": pa.array(draw(st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n)), pa.float64()),
        "watch_seconds": pa.array(draw(st.lists(st.floats(0, 100), min_size=n, max_size=n)), pa.float64()),
        "click": pa.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), pa.int64()),
        "x_a": pa.array(draw(st.lists(st.floats(-5, 5), min_size=n, max_size=n)), pa.float64()),
        "x_s": pa.array([f"s{i % 2}" for i in range(n)], pa.string()),
    }
    repeated = False
    count = draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3]))
    for mutation in draw(st.lists(st.sampled_from(LOG_MUTATIONS), min_size=count, max_size=count)):
        if mutation.startswith("ids_"):
            kind = mutation[4:]
            columns["decision_id"] = {
                "str": lambda: pa.array([f"d{i}" for i in ids]),
                "dup": lambda: pa.array([i // 2 for i in ids], pa.int64()),
                "uint64": lambda: pa.array(ids, pa.uint64()),
                "uint64_big": lambda: pa.array([2**63 + i for i in ids], pa.uint64()),
                "null": lambda: pa.array([None, *ids[1:]][:n], pa.int64()),
                "float": lambda: pa.array([i + 0.5 for i in ids], pa.float64()),
                "int8": lambda: pa.array([i % 128 for i in ids], pa.int8()),
            }[kind]()
        elif mutation.startswith("action_"):
            kind = mutation[7:]
            columns["action"] = {
                "str": lambda: pa.array([f"a{a}" for a in actions]),
                "int8": lambda: pa.array([127 - a for a in actions], pa.int8()),
                "float": lambda: pa.array([a + 0.5 for a in actions], pa.float64()),
                "null": lambda: pa.nulls(n, pa.int64()),
                "dict": lambda: pa.array([f"a{a}" for a in actions]).dictionary_encode(),
                "uint64_big": lambda: pa.array([2**64 - 1 - a for a in actions], pa.uint64()),
            }[kind]()
        elif mutation == "prop_special":
            columns["propensity"] = pa.array(_special(draw, columns.get("propensity"), n), pa.float64())
        elif mutation == "prop_string":
            columns["propensity"] = pa.array(["0.5"] * n)
        elif mutation == "prop_null":
            columns["propensity"] = pa.array(([None] + [0.5] * (n - 1))[:n], pa.float64())
        elif mutation == "prop_bool":
            columns["propensity"] = pa.array([True] * n)
        elif mutation == "reward_special":
            columns["watch_seconds"] = pa.array(_special(draw, columns.get("watch_seconds"), n), pa.float64())
        elif mutation == "reward_string":
            columns["watch_seconds"] = pa.array([str(v) for v in _special(draw, columns.get("watch_seconds"), n)])
        elif mutation == "reward_null":
            columns["watch_seconds"] = pa.nulls(n)
        elif mutation == "click_weird":
            columns["click"] = pa.array([draw(st.sampled_from([0, 1, 2, -1])) for _ in range(n)], pa.int64())
        elif mutation in ("prop_missing", "reward_missing"):
            columns.pop("propensity" if mutation == "prop_missing" else "watch_seconds", None)
        elif mutation == "ctx_special":
            columns["x_a"] = pa.array(_special(draw, columns.get("x_a"), n), pa.float64())
        elif mutation == "ctx_null":
            columns["x_a"] = pa.nulls(n)
        elif mutation == "ctx_bool":
            columns["x_a"] = pa.array([i % 2 == 0 for i in ids])
        elif mutation == "ctx_dict":
            columns["x_s"] = pa.array([f"s{i % 2}" for i in ids]).dictionary_encode()
        elif mutation == "ctx_all_nan":
            columns["x_a"] = pa.array([NAN] * n, pa.float64())
        elif mutation.startswith("position"):
            columns["position"] = {
                "position": lambda: pa.array([0] * n, pa.int64()),
                "position_neg": lambda: pa.array([-1] * n, pa.int64()),
                "position_float": lambda: pa.array([0.5] * n, pa.float64()),
                "position_dup": lambda: pa.array([i % 2 for i in ids], pa.int64()),
            }[mutation]()
            if mutation == "position_dup":
                columns["decision_id"] = pa.array([i // 2 for i in ids], pa.int64())
        elif mutation.startswith("timestamp"):
            stamps = np.arange(n).astype("datetime64[s]")
            columns["timestamp"] = {
                "timestamp": lambda: pa.array(stamps).cast(pa.timestamp("us", tz="UTC")),
                "timestamp_naive": lambda: pa.array(stamps.astype("datetime64[ns]")),
                "timestamp_str": lambda: pa.array([str(s) for s in stamps]),
            }[mutation]()
        elif mutation == "dup_name":
            repeated = True
        elif mutation == "drop_column" and columns:
            columns.pop(draw(st.sampled_from(sorted(columns))))
        elif mutation == "no_rows":
            columns = {k: v.slice(0, 0) for k, v in columns.items()}
            n, ids, actions = 0, [], []
        elif mutation == "pi_column":
            columns["pi_cand"] = pa.array(_special(draw, None, n) if draw(st.booleans()) else [0.5] * n, pa.float64())
    names = list(columns)
    arrays = [columns[c] for c in names]
    if repeated and names:
        which = draw(st.sampled_from(names))
        names.append(which)
        arrays.append(columns[which])
    return pa.table(arrays, names=names) if names else pa.table({"unrelated": pa.array([1] * n, pa.int64())})


def _array(values: list) -> pa.Array:
    """Values taken from the logs as Arrow infers them; mixed ones (ints and strings, uint64 beyond
    int64 with small ints) as uint64 or as strings."""
    for build in (lambda: pa.array(values, None if values else pa.int64()), lambda: pa.array(values, pa.uint64()),
                  lambda: pa.array([str(v) for v in values])):
        try:
            return build()
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    raise AssertionError(values)


POLICY_MUTATIONS = ["missing_decision", "unknown_decision", "unknown_action", "broken_probs", "not_summing",
                    "string_ids", "string_prob", "no_prob", "no_decision_id", "position", "position_neg",
                    "duplicate_row", "no_rows", "dup_name", "null_prob"]


@st.composite
def policy_tables(draw, logs: pa.Table) -> pa.Table:
    """A candidate policy for `logs` (a distribution over the logged actions per decision), then 0 to 2
    of POLICY_MUTATIONS: decisions missing or unknown, unknown actions, probabilities that are NaN,
    negative, or do not sum to one, ids of another type, context-free, per position."""
    names = logs.column_names  # a repeated name is looked up by its first position
    decisions = logs.column(names.index("decision_id")).to_pylist() if "decision_id" in names else [0, 1]
    actions = logs.column(names.index("action")).to_pylist() if "action" in names else [0, 1]
    decisions = list(dict.fromkeys(d for d in decisions if d is not None)) or [0]
    known = list(dict.fromkeys(a for a in actions if a is not None)) or [0]
    rows = []
    for d in decisions:
        listed = draw(st.lists(st.sampled_from(known), min_size=1, max_size=3, unique=True))
        rows += [[d, a, 1.0 / len(listed)] for a in listed]
    count = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    mutations = draw(st.lists(st.sampled_from(POLICY_MUTATIONS), min_size=count, max_size=count))
    for mutation in mutations:
        if mutation == "missing_decision" and len(rows) > 1:
            rows = [r for r in rows if r[0] != rows[0][0]]
        elif mutation == "unknown_decision":
            rows.append([10**6, known[0], 1.0])
        elif mutation == "unknown_action":
            rows[0][1] = "zz" if isinstance(known[0], str) else 999
        elif mutation == "broken_probs":
            for r, p in zip(rows, _special(draw, pa.array([r[2] for r in rows], pa.float64()), len(rows))):
                r[2] = p
        elif mutation == "not_summing":
            rows[-1][2] *= 1.5
        elif mutation == "duplicate_row":
            rows.append(list(rows[0]))
        elif mutation == "null_prob":
            rows[0][2] = None
    table = {"decision_id": _array([r[0] for r in rows]), "action": _array([r[1] for r in rows]),
             "prob": pa.array([r[2] for r in rows], pa.float64())}
    if "string_ids" in mutations:
        table["decision_id"] = pa.array([str(r[0]) for r in rows])
    if "string_prob" in mutations:
        table["prob"] = pa.array([str(r[2]) for r in rows])
    if "no_prob" in mutations:
        del table["prob"]
    if "no_decision_id" in mutations:  # context-free: one distribution for every decision
        listed = draw(st.lists(st.sampled_from(known), min_size=1, max_size=3, unique=True))
        table = {"action": _array(listed), "prob": pa.array([1.0 / len(listed)] * len(listed), pa.float64())}
    if "position" in mutations or "position_neg" in mutations:
        size = len(next(iter(table.values())))
        table["position"] = pa.array([-1 if "position_neg" in mutations else 0] * size, pa.int64())
    result = pa.table(table)
    if "no_rows" in mutations:
        result = result.slice(0, 0)
    if "dup_name" in mutations:
        result = pa.table([*result.columns, result.column(0)], names=[*result.column_names, result.column_names[0]])
    return result


@st.composite
def logs_and_policy(draw):
    logs = draw(logs_tables())
    return logs, draw(policy_tables(logs))


def _write(directory: Path, logs: pa.Table, policy: pa.Table | None) -> tuple[Path, Path | None]:
    pq.write_table(logs, directory / "logs.parquet")
    if policy is None:
        return directory / "logs.parquet", None
    pq.write_table(policy, directory / "policy.parquet")
    return directory / "logs.parquet", directory / "policy.parquet"


# --- validate and evaluate ------------------------------------------------------------------------------

@FUZZ
@given(case=logs_and_policy(), reward=st.sampled_from([None, "watch_seconds", "click", "x_a",
                                                       "m=watch_seconds + 2*click", "nosuch"]),
       with_policy=st.sampled_from(["file", "file", "compact", "none"]))
def test_validate_never_fails_internally(case, reward, with_policy):
    logs, policy = case
    with tempfile.TemporaryDirectory() as tmp:
        logs_path, policy_path = _write(Path(tmp), logs, policy)
        argv = ["validate", "--logs", logs_path]
        if with_policy == "file":
            argv += ["--policy", f"cand={policy_path}"]
        elif with_policy == "compact":
            argv += ["--policy", "cand"]
        if reward:
            argv += ["--reward", reward]
        never_an_internal_error(run_cli(*argv))


@FUZZ
@given(case=logs_and_policy(),
       estimators=st.sampled_from(["ips,snips", "dr", "dm,sndr", "switch-dr:tau=2,dr-os:lambda=1", "ips:clip=2",
                                   "pm-ips", "mips"]),
       ci=st.sampled_from([["--ci", "normal"], ["--ci", "bootstrap", "--n-boot", "200"],
                           ["--ci", "bernstein", "--reward-range", "watch_seconds=0,1"]]),
       extra=st.sampled_from([[], [], ["--folds", "2"], ["--estimate-propensities"], ["--max-weight", "3"],
                              ["--reward", "watch_seconds"], ["--context", "x_*,nosuch"], ["--q-hat", "Q"]]),
       q_hat=st.lists(st.one_of(st.floats(0, 100), st.sampled_from(SPECIAL_FLOATS)), min_size=40, max_size=40))
def test_evaluate_never_fails_internally(case, estimators, ci, extra, q_hat):
    logs, policy = case
    with tempfile.TemporaryDirectory() as tmp:
        logs_path, policy_path = _write(Path(tmp), logs, policy)
        if "Q" in extra:  # predictions at the policy's (decision, action) rows, some of them broken
            names = policy.column_names  # a repeated name: its first column
            wanted = [c for c in ("decision_id", "action") if c in names]
            keys = pa.table([policy.column(names.index(c)) for c in wanted], names=wanted) if wanted else \
                pa.table({"x": [1]})
            values = (q_hat * (keys.num_rows // len(q_hat) + 1))[:keys.num_rows]
            pq.write_table(keys.append_column("q_hat", pa.array(values, pa.float64())), Path(tmp) / "q.parquet")
            extra = [Path(tmp) / "q.parquet" if a == "Q" else a for a in extra]
        never_an_internal_error(run_cli("--quiet", "evaluate", "--logs", logs_path, "--policy",
                                        f"cand={policy_path}", "--estimators", estimators, *ci, *extra,
                                        "--out", Path(tmp) / "out.json", "--report", Path(tmp) / "r.html"))


# --- gate.toml ---------------------------------------------------------------------------------------------

def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_text(tables: dict) -> str:
    """TOML of {section: {key: value}} and {section: [ {key: value}, ... ]} (arrays of tables)."""
    lines = []
    for section, body in tables.items():
        if isinstance(body, list):
            for entry in body:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in entry.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


#: wrong types and edge values any key may get
WRONG = [NAN, INF, -INF, -1, 0, -1e9, 1e308, 2**63 - 1, "", "x", [], [1, 2], ["x", 3], True, {"a": 1}]

#: the keys of gate.toml (docs/gate-toml.md) with values a configuration may well hold
GOOD = {
    "data": {"logs": ["logs.parquet"], "context": [["x_*"], ["x_a", "x_s"], ["nosuch"]],
             "actions": ["policy.parquet", "nosuch.parquet"], "q_hat": ["nosuch.parquet"]},
    "data.columns": {"action": ["action", "x_s"], "propensity": ["propensity", "x_a"], "decision_id": ["nosuch"]},
    "rewards": {"engagement": ["watch_seconds + 2*click", "-1*watch_seconds", "x_a", "nosuch * 2"],
                "watch_seconds": ["2*watch_seconds"]},
    "reward_range": {"watch_seconds": [[0, 100], [1, 0], [0, 1e308]], "click": [[0, 1]], "engagement": [[0, 300]]},
    "evaluation": {"estimator": ["snips", "ips", "dr", "dm", "ips:clip=2", "switch-dr:tau=2", "ips:clip=-1", "bogus"],
                   "ci": ["normal", "bootstrap", "bernstein", "x"], "alpha": [0.05, 0.5, 0.999, 1e-300],
                   "seed": [0, 7, 2**31 - 1, 2**31], "n_boot": [200, 250, 199], "baseline": ["logging", "cand"],
                   "max_weight": [3.0, 1.0, 1e6, 0.5]},
    "diagnostics": {"min_ess": [0, 5, 1e9], "min_ess_share": [0.0, 0.1, 1.0],
                    "max_unsupported_mass": [1.0, 0.0, 0.5], "max_mean_weight_z": [3.0, 0.0, 100.0]},
    "causal": {"treatment": ["click", "x_a"], "outcome": ["watch_seconds"], "refutations": [["placebo_treatment"]],
               "estimator": ["linear_dml"], "required": [True, False], "confounders": [["x_a"], ["click"]]},
    "output": {"out": ["gate.json", "sub/gate.json", "."], "report": ["r.html"], "markdown": ["m.md"],
               "junit": ["j.xml", "logs.parquet"]},
    # streaming in bounded memory; a malformed scheduler address fails fast (a reachable one would start
    # a cluster, an unreachable one waits for its timeout: tests/test_distributed.py has those)
    "engine": {"max_memory": ["64MB", "1GiB", 100_000_000, "1KB", "lots"], "scheduler": ["not an address"]},
}
CANDIDATE = {"name": ["cand", "cand", "cand", "logging", "a b"],
             "policy": ["policy.parquet", "policy.parquet", "nosuch.parquet"]}
CRITERION = {"metric": ["watch_seconds", "watch_seconds", "click", "engagement", "x_a", "nosuch"],
             "rule": ["improves", "non_inferior", "non_inferior", "bogus"], "relative": [False, True]}
THRESHOLD = {"improves": ("min_effect", [0.0, -1000.0, 0.5, 1e308]), "non_inferior": ("margin", [0.1, 0.0, 2.0]),
             "bogus": ("margin", [0.1])}
GATE_MUTATIONS = ["wrong_value", "wrong_value", "drop_key", "drop_table", "unknown_key", "unknown_table",
                  "no_candidate", "no_criterion", "second_candidate", "second_criterion"]


def _table(draw, keys: dict, required: tuple = ()) -> dict:
    """Some of a table's keys (always the required ones), each with its first (usual) value or, one
    time in four, any of its values."""
    chosen = [k for k in keys if k in required or draw(st.booleans())]
    return {k: keys[k][0] if draw(st.integers(0, 3)) else draw(st.sampled_from(keys[k])) for k in chosen}


def _criterion(draw) -> dict:
    """A [[criterion]]: a metric, a rule and (mostly) the rule's own threshold key."""
    entry = _table(draw, CRITERION, ("metric", "rule"))
    name, values = THRESHOLD[entry["rule"]]
    if draw(st.integers(0, 3)):
        entry[name] = values[0] if draw(st.booleans()) else draw(st.sampled_from(values))
    return entry


@st.composite
def gate_configs(draw) -> str:
    """A gate.toml: a working configuration (logs, a candidate, a criterion) with some optional tables,
    then 0 to 3 of GATE_MUTATIONS (wrong types, NaN, negative numbers, missing keys and tables)."""
    tables: dict = {"data": _table(draw, GOOD["data"], ("logs",)),
                    "candidate": [{"name": "cand", "policy": "policy.parquet"}],
                    "criterion": [{"metric": "watch_seconds", "rule": "improves"}]}
    for section in draw(st.sets(st.sampled_from([s for s in GOOD if s != "data"]), max_size=2)):
        if section != "causal" or not draw(st.integers(0, 3)):  # the causal check is slow: rarely
            tables[section] = _table(draw, GOOD[section], ("treatment", "outcome"))
    tables["criterion"] = [_criterion(draw)]
    tables["candidate"][0].update(_table(draw, CANDIDATE))
    count = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    for mutation in draw(st.lists(st.sampled_from(GATE_MUTATIONS), min_size=count, max_size=count)):
        plain = [s for s in tables if isinstance(tables[s], dict)]
        if mutation in ("wrong_value", "drop_key", "unknown_key"):
            section = draw(st.sampled_from(sorted(tables)))
            entry = tables[section] if isinstance(tables[section], dict) else \
                (tables[section][0] if tables[section] else {})
            if mutation == "unknown_key":
                entry[draw(st.sampled_from(["nosuch", "min-ess", "Logs"]))] = draw(st.sampled_from(WRONG))
            elif entry:
                name = draw(st.sampled_from(sorted(entry)))
                if mutation == "drop_key":
                    del entry[name]
                else:
                    entry[name] = draw(st.sampled_from(WRONG))
        elif mutation == "drop_table" and plain:
            del tables[draw(st.sampled_from(sorted(plain)))]
        elif mutation == "unknown_table":
            tables[draw(st.sampled_from(["unknown", "criteria", "data.nosuch"]))] = {"x": 1}
        elif mutation in ("no_candidate", "no_criterion"):
            tables.pop(mutation[3:], None)
        elif mutation == "second_candidate":
            tables.setdefault("candidate", []).append(_table(draw, CANDIDATE, ("name",)))
        elif mutation == "second_criterion":
            tables.setdefault("criterion", []).append(_criterion(draw))
    return toml_text(tables)


@st.composite
def gate_cases(draw):
    logs, policy = draw(logs_and_policy())
    return logs, policy, draw(gate_configs())


@FUZZ
@given(case=gate_cases(), use_good_data=st.booleans())
def test_gate_never_fails_internally(case, use_good_data, sim_files):
    logs, policy, text = case
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        if use_good_data:  # a well-formed dataset, so that the configuration's own problems are reached
            good = pq.read_table(sim_files.logs).slice(0, 40)
            pq.write_table(good, directory / "logs.parquet")
            pq.write_table(pq.read_table(sim_files.policies["better"]).rename_columns(["decision_id", "action", "prob"]),
                           directory / "policy.parquet")
        else:
            _write(directory, logs, policy)
        config = directory / "gate.toml"
        config.write_text(text)
        never_an_internal_error(run_cli("--quiet", "gate", "--config", config))
