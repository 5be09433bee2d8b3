"""Every validation rule of DESIGN.md section 5, through `livegate validate`: exit code 2, one message per
problem naming the file, the column and how many rows, all problems of a file together, no traceback.

The hypothesis tests start from a valid small table, apply one or more corruptions drawn by a strategy
(which column, which corruption, which rows) and check that each applied corruption is reported.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_cli

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_counter = itertools.count()


@dataclass(frozen=True)
class Expect:
    """One problem the CLI must report: `column` of `path`, a phrase of the message, the row count."""

    path: str
    column: str | None
    phrase: str
    rows: int | None = None

    def found_in(self, lines: list[str]) -> bool:
        head = f"  - {self.path}" + (f", column '{self.column}'" if self.column else "") + ": "
        for line in lines:
            if line.startswith(head) and self.phrase in line:
                if self.rows is None or line[len(head):].startswith(f"{self.rows:,} row{'s' if self.rows != 1 else ''} "):
                    return True
        return False


def problem_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("  - ")]


def assert_rejected(result, expected: list[Expect], exact: bool = True) -> None:
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and "Warning" not in result.err, result.err
    assert result.err.startswith("livegate: invalid input ("), result.err
    lines = problem_lines(result.err)
    missing = [e for e in expected if not e.found_in(lines)]
    assert not missing, f"not reported: {missing}\n{result.err}"
    if exact:
        assert len(lines) == len(expected), f"expected {len(expected)} problems:\n{result.err}"
        assert f"({len(expected)} problem" in result.err.splitlines()[0]


# --- valid base tables --------------------------------------------------------------------------

def base_logs(n_decisions: int, n_positions: int, id_kind: str, action_kind: str, with_position: bool,
              seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.arange(100, 100 + n_decisions)
    n = n_decisions * n_positions
    frame = pd.DataFrame({
        "decision_id": np.repeat([f"dec-{i}" for i in ids] if id_kind == "string" else ids, n_positions),
        "timestamp": pd.Timestamp("2026-01-05", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s"),
        "action": rng.integers(0, 6, n) * 10,
        "propensity": rng.uniform(0.05, 1.0, n),
        "click": rng.integers(0, 2, n).astype(float),
        "watch_seconds": rng.exponential(20.0, n),
        "x_activity": rng.normal(size=n),
    })
    if action_kind == "string":
        frame["action"] = "stream-" + frame["action"].astype(str)
    if with_position or n_positions > 1:
        frame.insert(1, "position", np.tile(np.arange(n_positions), n_decisions))
    return frame


def base_policy(logs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Two actions per (decision, position): the logged one and another; probabilities p and 1 - p."""
    rng = np.random.default_rng(seed)
    pool = sorted(set(logs["action"]))
    rows = []
    for rec in logs.itertuples(index=False):
        other = pool[(pool.index(rec.action) + 1) % len(pool)]
        p = float(rng.uniform(0.1, 0.9))
        key = (rec.decision_id, rec.position) if "position" in logs else (rec.decision_id,)
        rows += [(*key, rec.action, p), (*key, other, 1.0 - p)]
    columns = ["decision_id", "position", "action", "prob"] if "position" in logs else ["decision_id", "action", "prob"]
    return pd.DataFrame(rows, columns=columns)


ARROW_TYPES = {"decision_id": None, "position": pa.int64(), "timestamp": pa.timestamp("us", tz="UTC"),
               "action": None, "propensity": pa.float64(), "click": pa.float64(), "watch_seconds": pa.float64(),
               "x_activity": pa.float64(), "prob": pa.float64()}


def write(frame: pd.DataFrame, path) -> str:
    """Write with Arrow types inferred from pandas, except that object columns holding a corrupted
    column's values (None for nulls among numbers) keep their base type where the values allow."""
    arrays = {}
    for col in frame.columns:
        series = frame[col]
        if series.dtype != object:
            arrays[col] = pa.Array.from_pandas(series)
            continue
        values = series.tolist()
        type_ = ARROW_TYPES.get(col)
        try:
            arrays[col] = pa.array(values, type=type_, from_pandas=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            arrays[col] = pa.array(values)
    pq.write_table(pa.table(arrays), path)
    return str(path)


# --- corruption of logs -------------------------------------------------------------------------

LOG_CORRUPTIONS = {
    "propensity": ["zero", "negative", "above_one", "nan", "null", "text", "drop"],
    "click": ["nan", "null", "inf", "text", "drop"],
    "watch_seconds": ["nan", "null", "inf", "text", "drop"],
    "decision_id": ["duplicate", "null", "float", "drop"],
    "action": ["null", "float", "drop"],
    "position": ["negative", "null", "float"],
    "timestamp": ["text"],
    "x_activity": ["nested"],
}
# message phrase and whether the message gives a row count
PHRASES = {"zero": ("zero or negative", True), "negative": ("zero or negative", True),
           "above_one": ("above 1; probabilities must lie in", True), "nan": ("NaN", True), "null": ("(null)", True),
           "inf": ("infinite", True), "text": ("string; ", False), "float": ("has type double", False),
           "drop": ("is missing", False), "nested": ("has type list", False)}


def corrupt_column(frame: pd.DataFrame, column: str, kind: str, rows: list[int], rng) -> None:
    idx = frame.index[rows]
    if kind == "drop":
        del frame[column]
    elif kind == "text":
        frame[column] = frame[column].astype(str)
    elif kind == "float":
        frame[column] = np.arange(len(frame), dtype=float) + 0.5
    elif kind == "nested":
        frame[column] = [[1, 2]] * len(frame)
    else:
        values = frame[column].astype(object).copy()
        if kind == "null":
            values[idx] = None
        elif kind == "nan":
            values[idx] = float("nan")
        elif kind == "inf":
            values[idx] = float("inf")
        elif kind == "zero":
            values[idx] = 0.0
        elif kind == "negative":
            values[idx] = -1 if column == "position" else -0.5
        elif kind == "above_one":
            values[idx] = 1.5
        else:  # pragma: no cover
            raise AssertionError(kind)
        frame[column] = values


@st.composite
def corrupted_logs(draw):
    n_decisions = draw(st.integers(4, 12))
    n_positions = draw(st.sampled_from([1, 1, 2]))
    shape = dict(n_decisions=n_decisions, n_positions=n_positions,
                 id_kind=draw(st.sampled_from(["int", "string"])), action_kind=draw(st.sampled_from(["int", "string"])),
                 with_position=draw(st.booleans()))
    frame = base_logs(**shape, seed=draw(st.integers(0, 1000)))
    n = len(frame)
    columns = [c for c in LOG_CORRUPTIONS if c in frame.columns]
    chosen = draw(st.lists(st.sampled_from(columns), min_size=1, max_size=4, unique=True))
    plan = []
    for column in chosen:
        kind = draw(st.sampled_from(LOG_CORRUPTIONS[column]))
        rows = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
        plan.append((column, kind, sorted(rows)))
    return shape, frame, plan


def apply_log_plan(frame: pd.DataFrame, plan, path: str) -> list[Expect]:
    rng = np.random.default_rng(0)
    base = frame.copy()
    expected = []
    for column, kind, rows in plan:
        if kind == "duplicate":
            # each chosen row takes the decision id of another row at the same position
            pos = base["position"] if "position" in base else pd.Series(0, index=base.index)
            ids = frame["decision_id"].copy()
            for r in rows:
                # an unchosen row's id, when there is one: two chosen rows must not merely swap ids
                others = [j for j in range(len(base)) if j not in rows and pos.iloc[j] == pos.iloc[r]] \
                    or [j for j in range(len(base)) if j != r and pos.iloc[j] == pos.iloc[r]]
                ids.iloc[r] = base["decision_id"].iloc[others[0]]
            frame["decision_id"] = ids
            continue
        corrupt_column(frame, column, kind, rows, rng)
        phrase, counted = PHRASES[kind]
        if column == "position" and kind == "negative":
            phrase = "negative position"
        expected.append(Expect(path, column, phrase, len(rows) if counted else None))
    kinds = dict((c, k) for c, k, _ in plan)
    # duplicates can come from the ids or from positions made equal (two rows set to -1): pandas counts them
    if kinds.get("decision_id") in (None, "duplicate") and kinds.get("position") not in ("null", "float"):
        keys = ["decision_id", "position"] if "position" in frame else ["decision_id"]
        n_dup = int(frame.duplicated(subset=keys, keep=False).sum())
        if n_dup:
            expected.append(Expect(path, "decision_id", "with another row", n_dup))
    return expected


@SETTINGS
@given(case=corrupted_logs())
def test_corrupted_logs_are_rejected_with_every_problem(tmp_path, case):
    shape, frame, plan = case
    path = str(tmp_path / f"logs-{next(_counter)}.parquet")
    expected = apply_log_plan(frame, plan, path)
    write(frame, path)
    policy = write(base_policy(base_logs(**shape)), tmp_path / "policy.parquet")
    result = run_cli("validate", "--logs", path, "--reward", "click", "--reward", "watch_seconds",
                     "--policy", f"candidate={policy}")
    assert_rejected(result, expected)


# --- corruption of policies ---------------------------------------------------------------------

POLICY_CORRUPTIONS = {
    "prob": ["sum", "negative", "above_one", "nan", "null", "text", "drop"],
    # without decision_id a policy is context-free (test_datasets_context_free.py), not incomplete
    "decision_id": ["uncovered", "null", "float", "other_type"],
    "action": ["unknown", "null", "float", "drop"],
    "position": ["negative", "null", "float", "drop"],
}


@st.composite
def corrupted_policies(draw):
    n_positions = draw(st.sampled_from([1, 1, 2]))
    shape = dict(n_decisions=draw(st.integers(4, 10)), n_positions=n_positions,
                 id_kind=draw(st.sampled_from(["int", "string"])), action_kind=draw(st.sampled_from(["int", "string"])),
                 with_position=draw(st.booleans()))
    logs = base_logs(**shape)
    policy = base_policy(logs, seed=draw(st.integers(0, 1000)))
    columns = [c for c in POLICY_CORRUPTIONS if c in policy.columns]
    chosen = draw(st.lists(st.sampled_from(columns), min_size=1, max_size=4, unique=True))
    plan = {c: draw(st.sampled_from([k for k in POLICY_CORRUPTIONS[c]
                                     if not (c == "position" and k == "drop" and n_positions == 1)]))
            for c in chosen}
    keys = ["decision_id", "position"] if "position" in policy else ["decision_id"]
    groups = [tuple(k) for k in policy[keys].drop_duplicates().itertuples(index=False)]
    order = draw(st.permutations(range(len(groups))))
    n_uncovered = draw(st.integers(1, len(groups) - 1)) if plan.get("decision_id") == "uncovered" else 0
    n_prob = draw(st.integers(1, len(groups) - n_uncovered))
    uncovered = [groups[i] for i in order[:n_uncovered]]
    prob_groups = [groups[i] for i in order[n_uncovered:n_uncovered + n_prob]]
    kept = [i for i in range(len(policy))
            if tuple(policy.iloc[i][keys]) not in set(uncovered)]
    row_picks = {c: sorted(draw(st.lists(st.sampled_from(kept), min_size=1, max_size=len(kept), unique=True)))
                 for c in plan}
    return shape, logs, policy, plan, uncovered, prob_groups, row_picks


def apply_policy_plan(policy: pd.DataFrame, logs: pd.DataFrame, plan, uncovered, prob_groups, row_picks, path):
    keys = ["decision_id", "position"] if "position" in policy else ["decision_id"]
    group_of = [tuple(k) for k in policy[keys].itertuples(index=False)]
    expected = []
    mapped = plan.get("decision_id") in (None, "uncovered") and plan.get("position") is None
    rng = np.random.default_rng(0)
    for column, kind in plan.items():
        rows = row_picks[column]
        if column == "prob" and kind in ("sum", "negative", "above_one"):
            prob = policy["prob"].copy()
            for g in prob_groups:
                first, second = [i for i, k in enumerate(group_of) if k == g]
                if kind == "sum":
                    prob.iloc[[first, second]] *= 0.5
                elif kind == "negative":
                    prob.iloc[first], prob.iloc[second] = -0.25, 1.25
                else:
                    prob.iloc[first] = 1.5
            policy["prob"] = prob
            k = len(prob_groups)
            if kind == "negative":
                expected += [Expect(path, "prob", "negative; probabilities", k), Expect(path, "prob", "above 1", k)]
            if kind == "above_one":
                expected.append(Expect(path, "prob", "above 1", k))
            if kind in ("sum", "above_one") and mapped:
                expected.append(Expect(path, "prob", "do not sum to 1", k))
        elif kind == "uncovered":
            if mapped:
                expected.append(Expect(path, "decision_id", "no row in this policy", len(uncovered)))
        elif kind == "other_type":
            ids = policy["decision_id"]
            policy["decision_id"] = ids.astype(str) if pd.api.types.is_integer_dtype(ids) else \
                ids.str.replace("dec-", "").astype(np.int64)
            expected.append(Expect(path, "decision_id", "while the logs' decision ids have type", None))
        elif kind == "unknown":
            values = policy["action"].astype(object).copy()
            for i in rows:
                values.iloc[i] = 10**6 + i if pd.api.types.is_integer_dtype(policy["action"]) else f"ghost-{i}"
            policy["action"] = values
            expected.append(Expect(path, "action", "neither the logs nor the action catalogue", len(rows)))
        elif kind == "drop" and column == "position":
            del policy[column]
            expected.append(Expect(path, "position", "is missing while the logs have 2 positions", None))
        else:
            corrupt_column(policy, column, kind, rows, rng)
            phrase, counted = PHRASES[kind]
            if column == "position" and kind == "negative":
                phrase = "negative position"
            expected.append(Expect(path, column, phrase, len(rows) if counted else None))
    keep = [g not in set(uncovered) for g in group_of]
    return policy[keep], expected


@SETTINGS
@given(case=corrupted_policies())
def test_corrupted_policies_are_rejected_with_every_problem(tmp_path, case):
    shape, logs, policy, plan, uncovered, prob_groups, row_picks = case
    n = next(_counter)
    logs_path = write(logs, tmp_path / f"logs-{n}.parquet")
    path = str(tmp_path / f"policy-{n}.parquet")
    policy, expected = apply_policy_plan(policy, logs, plan, uncovered, prob_groups, row_picks, path)
    write(policy, path)
    catalogue = write(pd.DataFrame({"action": sorted(set(logs["action"]))}), tmp_path / f"actions-{n}.parquet")
    good = write(base_policy(logs), tmp_path / f"good-{n}.parquet")
    result = run_cli("validate", "--logs", logs_path, "--actions", catalogue,
                     "--policy", f"good={good}", "--policy", f"bad={path}")
    assert_rejected(result, expected)


# --- every rule, one at a time, with its message ------------------------------------------------

@pytest.fixture
def small(tmp_path):
    logs = base_logs(6, 1, "int", "int", with_position=True)
    return tmp_path, logs, base_policy(logs)


def _mutated(frame, mutate):
    result = mutate(frame)
    return result if isinstance(result, pd.DataFrame) else frame


def _rows(frame, column, rows, value):
    frame[column] = frame[column].astype(object)
    frame.loc[frame.index[rows], column] = value


LOG_RULES = {
    "nan_reward": (lambda f: _rows(f, "click", [0, 3], float("nan")), "click", "reward NaN", 2),
    "null_reward": (lambda f: _rows(f, "watch_seconds", [1], None), "watch_seconds", "has no reward (null)", 1),
    "propensity_zero": (lambda f: _rows(f, "propensity", [0, 1, 2], 0.0), "propensity", "zero or negative", 3),
    "propensity_negative": (lambda f: _rows(f, "propensity", [5], -0.1), "propensity", "zero or negative", 1),
    "propensity_above_one": (lambda f: _rows(f, "propensity", [2, 4], 1.01), "propensity", "above 1", 2),
    "propensity_text": (lambda f: f.__setitem__("propensity", f["propensity"].astype(str)), "propensity",
                        "string; propensity must be numeric", None),
    "propensity_missing": (lambda f: f.drop(columns="propensity"), "propensity", "is missing", None),
    "action_float": (lambda f: f.__setitem__("action", f["action"] + 0.5), "action", "has type double", None),
    "duplicate_ids": (lambda f: _rows(f, "decision_id", [1, 2], 100), "decision_id", "share a decision id and position with another row", 3),
    "negative_position": (lambda f: _rows(f, "position", [3], -1), "position", "has a negative position", 1),
    "timestamp_text": (lambda f: f.__setitem__("timestamp", f["timestamp"].astype(str)), "timestamp",
                       "timestamp must be a Parquet timestamp", None),
}


@pytest.mark.parametrize("rule", LOG_RULES)
def test_each_log_rule(small, rule):
    tmp_path, logs, _ = small
    mutate, column, phrase, rows = LOG_RULES[rule]
    logs = _mutated(logs, mutate)
    path = write(logs, tmp_path / "logs.parquet")
    result = run_cli("validate", "--logs", path)
    assert_rejected(result, [Expect(path, column, phrase, rows)])
    assert "Fix: " in result.err


def test_duplicated_decision_and_position(tmp_path):
    logs = base_logs(4, 2, "string", "string", with_position=True)
    _rows(logs, "position", [1], 0)        # decision dec-100 now has position 0 twice
    path = write(logs, tmp_path / "logs.parquet")
    assert_rejected(run_cli("validate", "--logs", path),
                    [Expect(path, "decision_id", "share a decision id and position", 2)])


def test_null_position_does_not_make_every_row_a_duplicate(tmp_path):
    logs = base_logs(4, 2, "int", "int", with_position=True)
    _rows(logs, "position", [3], None)
    path = write(logs, tmp_path / "logs.parquet")
    assert_rejected(run_cli("validate", "--logs", path), [Expect(path, "position", "has no position (null)", 1)])


POLICY_RULES = {
    "not_summing": (lambda p: _rows(p, "prob", [0], 0.1), "prob", "do not sum to 1 (e.g. ", 1),
    "negative": (lambda p: (_rows(p, "prob", [0], -0.5), _rows(p, "prob", [1], 1.5)), "prob", "negative; probabilities", 1),
    "prob_nan": (lambda p: _rows(p, "prob", [4], float("nan")), "prob", "has probability NaN", 1),
    "uncovered": (lambda p: p.drop(index=p.index[[2, 3, 6, 7]]), "decision_id",
                  "no row in this policy", 2),
    "prob_text": (lambda p: p.__setitem__("prob", p["prob"].astype(str)), "prob", "string; probability must be numeric", None),
    "missing_prob": (lambda p: p.drop(columns="prob"), "prob", "is missing", None),
    "position_float": (lambda p: p.__setitem__("position", p["position"] + 0.0), "position",
                       "position must be an integer", None),
    "ids_as_text": (lambda p: p.__setitem__("decision_id", p["decision_id"].astype(str)), "decision_id",
                    "string while the logs' decision ids have type int64", None),
    "actions_of_another_type": (lambda p: p.__setitem__("action", "s" + p["action"].astype(str)), "action",
                                "actions of another type than the logs'", 12),
}


@pytest.mark.parametrize("rule", POLICY_RULES)
def test_each_policy_rule(small, rule):
    tmp_path, logs, policy = small
    mutate, column, phrase, rows = POLICY_RULES[rule]
    policy = _mutated(policy, mutate)
    logs_path = write(logs, tmp_path / "logs.parquet")
    path = write(policy, tmp_path / "policy.parquet")
    result = run_cli("validate", "--logs", logs_path, "--policy", f"p={path}")
    expected = [Expect(path, column, phrase, rows)]
    if rule == "negative":
        expected.append(Expect(path, "prob", "above 1", 1))
    assert_rejected(result, expected)


def test_unknown_actions_need_a_catalogue_and_are_then_rejected(small):
    tmp_path, logs, policy = small
    _rows(policy, "action", [0, 5], 12345)
    policy["action"] = policy["action"].astype(np.int64)
    logs_path = write(logs, tmp_path / "logs.parquet")
    path = write(policy, tmp_path / "policy.parquet")
    # without a catalogue a stream the logs never show is allowed (the logging policy may not have picked it)
    ok = run_cli("validate", "--logs", logs_path, "--policy", f"p={path}")
    assert ok.code == 0 and "of its probability is on streams no logged row shows" in ok.out
    catalogue = write(pd.DataFrame({"action": sorted(set(logs["action"]))}), tmp_path / "actions.parquet")
    result = run_cli("validate", "--logs", logs_path, "--actions", catalogue, "--policy", f"p={path}")
    assert_rejected(result, [Expect(path, "action", "neither the logs nor the action catalogue (e.g. 12345)", 2)])


def test_a_file_with_three_problems_lists_three(small):
    tmp_path, logs, _ = small
    _rows(logs, "propensity", [0, 1], 0.0)
    _rows(logs, "click", [2], float("nan"))
    _rows(logs, "decision_id", [4], 100)
    path = write(logs, tmp_path / "logs.parquet")
    assert_rejected(run_cli("validate", "--logs", path), [
        Expect(path, "propensity", "zero or negative", 2), Expect(path, "click", "has reward NaN", 1),
        Expect(path, "decision_id", "with another row", 2)])


def test_a_wrong_type_does_not_hide_the_other_problems(small):
    tmp_path, logs, _ = small
    logs["action"] = logs["action"] + 0.5                      # wrong type
    _rows(logs, "propensity", [0], 2.0)                       # range
    _rows(logs, "decision_id", [1], 100)                      # duplicate
    del logs["watch_seconds"]                                # missing (asked for)
    path = write(logs, tmp_path / "logs.parquet")
    assert_rejected(run_cli("validate", "--logs", path, "--reward", "click", "--reward", "watch_seconds"), [
        Expect(path, "action", "has type double", None), Expect(path, "propensity", "above 1", 1),
        Expect(path, "decision_id", "with another row", 2), Expect(path, "watch_seconds", "is missing", None)])


def test_missing_columns_are_all_reported(small):
    tmp_path, logs, _ = small
    path = write(logs.drop(columns=["action", "propensity", "decision_id"]), tmp_path / "logs.parquet")
    policy = write(base_policy(base_logs(6, 1, "int", "int", True)), tmp_path / "p.parquet")
    result = run_cli("validate", "--logs", path, "--policy", f"p={policy}")
    assert_rejected(result, [Expect(path, c, "is missing", None) for c in ("action", "propensity", "decision_id")])


def test_policy_missing_columns_are_all_reported(small):
    tmp_path, logs, policy = small
    logs_path = write(logs, tmp_path / "logs.parquet")
    path = write(policy[["position"]], tmp_path / "policy.parquet")
    result = run_cli("validate", "--logs", logs_path, "--policy", f"p={path}")
    assert_rejected(result, [Expect(path, c, "is missing", None) for c in ("decision_id", "action", "prob")])


def test_problems_of_several_policies_are_reported_together(small):
    tmp_path, logs, policy = small
    logs_path = write(logs, tmp_path / "logs.parquet")
    a = policy.copy()
    _rows(a, "prob", [0], 0.2)
    b = policy.drop(index=policy.index[:2])
    pa_, pb = write(a, tmp_path / "a.parquet"), write(b, tmp_path / "b.parquet")
    result = run_cli("validate", "--logs", logs_path, "--policy", f"a={pa_}", "--policy", f"b={pb}")
    assert_rejected(result, [Expect(pa_, "prob", "do not sum to 1", 1),
                             Expect(pb, "decision_id", "no row in this policy", 1)])


# --- empty, truncated and non-Parquet input ------------------------------------------------------

def _unreadable(tmp_path, kind: str, template: pd.DataFrame) -> tuple[str, str]:
    good = write(template, tmp_path / f"template-{kind}.parquet")
    data = open(good, "rb").read()
    if kind == "empty_table":
        return write(template.iloc[:0], tmp_path / "empty_table.parquet"), "has no rows"
    if kind == "truncated":
        (tmp_path / "truncated.parquet").write_bytes(data[: len(data) // 2])
        return str(tmp_path / "truncated.parquet"), "is not a readable Parquet file"
    if kind == "not_parquet":
        (tmp_path / "text.parquet").write_text(template.to_csv(index=False))
        return str(tmp_path / "text.parquet"), "is not a readable Parquet file"
    if kind == "empty_file":
        (tmp_path / "empty.parquet").write_bytes(b"")
        return str(tmp_path / "empty.parquet"), "is an empty file"
    if kind == "empty_dir":
        (tmp_path / "empty_dir").mkdir()
        return str(tmp_path / "empty_dir"), "is an empty directory"
    if kind == "missing":
        return str(tmp_path / "nope.parquet"), "does not exist"
    if kind == "dir_with_truncated":
        (tmp_path / "parts").mkdir()
        (tmp_path / "parts" / "a.parquet").write_bytes(data)
        (tmp_path / "parts" / "b.parquet").write_bytes(data[:-20])
        return str(tmp_path / "parts"), "b.parquet"
    raise AssertionError(kind)


UNREADABLE = ["empty_table", "truncated", "not_parquet", "empty_file", "empty_dir", "missing", "dir_with_truncated"]


@pytest.mark.parametrize("kind", UNREADABLE)
def test_unreadable_logs(small, kind):
    tmp_path, logs, _ = small
    path, phrase = _unreadable(tmp_path, kind, logs)
    assert_rejected(run_cli("validate", "--logs", path), [Expect(path, None, phrase)])


@pytest.mark.parametrize("kind", UNREADABLE)
def test_unreadable_policy(small, kind):
    tmp_path, logs, policy = small
    logs_path = write(logs, tmp_path / "logs.parquet")
    path, phrase = _unreadable(tmp_path, kind, policy)
    assert_rejected(run_cli("validate", "--logs", logs_path, "--policy", f"p={path}"), [Expect(path, None, phrase)])


def test_simulator_output_is_valid(sim_files):
    args = ["validate", "--logs", sim_files.logs]
    for name, path in sorted(sim_files.policies.items()):
        args += ["--policy", f"{name}={path}"]
    assert sorted(sim_files.policies) == ["better", "greedy", "logging_replica", "worse"]
    result = run_cli(*args, "--actions", sim_files.root / "actions.parquet")
    assert result.code == 0, result.err
    assert result.err == ""
    assert result.out.startswith(f"OK {sim_files.logs}: 2,000 rows")
    assert sum(line.startswith("OK policy ") for line in result.out.splitlines()) == 4
