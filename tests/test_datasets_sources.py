"""Loading from memory (pandas DataFrame, pyarrow Table) through the same validation as Parquet, the
column-name mapping (LogSchema.from_mapping, parse_column_mapping) and the warnings of LoggedData."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from livegate.datasets import (ROLES, InputError, LogSchema, load_catalogue, load_logs, load_policy, load_q_hat,
                               parse_column_mapping, parse_reward)

CLICK = [parse_reward("click")]


def _frames(n_decisions: int = 40, n_positions: int = 2, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Logs with string ids and actions, a category context column, a nullable integer reward, and a
    per-decision policy over every action."""
    rng = np.random.default_rng(seed)
    n = n_decisions * n_positions
    actions = np.array(["s-a", "s-b", "s-c", "s-d"], dtype=object)
    logs = pd.DataFrame({
        "decision_id": np.repeat([f"d{i:03d}" for i in range(n_decisions)], n_positions).astype(object),
        "position": np.tile(np.arange(n_positions), n_decisions),
        "action": actions[rng.integers(0, 4, n)],
        "propensity": rng.uniform(0.2, 0.9, n),
        "click": pd.array(rng.integers(0, 2, n), dtype="Int64"),
        "watch_seconds": rng.exponential(20.0, n),
        "x_segment": pd.Categorical(rng.choice(["new", "casual", "fan"], n)),
        "x_activity": rng.normal(size=n),
        "timestamp": pd.date_range("2026-01-05", periods=n, freq="min", tz="UTC"),
    })
    probs = rng.dirichlet(np.ones(4), size=n)
    policy = pd.DataFrame({
        "decision_id": np.repeat(logs["decision_id"].to_numpy(), 4),
        "position": np.repeat(logs["position"].to_numpy(), 4),
        "action": np.tile(actions, n),
        "prob": probs.ravel(),
    })
    return logs, policy


def _as(kind: str, frame: pd.DataFrame, path):
    if kind == "dataframe":
        return frame
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if kind == "arrow":
        return table
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("kind", ["dataframe", "arrow"])
def test_dataframe_arrow_and_parquet_give_the_same_logs_policy_and_predictions(tmp_path, kind):
    logs_df, policy_df = _frames()
    q_df = policy_df[["decision_id", "position", "action"]].assign(q_hat=np.linspace(0, 1, len(policy_df)))
    on_disk = load_logs(_as("parquet", logs_df, tmp_path / "logs.parquet"), CLICK, need_decision_id=True,
                        need_context=True)
    in_memory = load_logs(_as(kind, logs_df, None), CLICK, need_decision_id=True, need_context=True, name="my logs")
    assert in_memory.source == "my logs" and on_disk.source == str(tmp_path / "logs.parquet")
    for field in ("action", "action_code", "actions", "propensity", "decision_code", "decision_ids", "position",
                  "timestamp"):
        np.testing.assert_array_equal(getattr(in_memory, field), getattr(on_disk, field), err_msg=field)
    np.testing.assert_array_equal(in_memory.outcomes["click"], on_disk.outcomes["click"])
    pd.testing.assert_frame_equal(in_memory.context, on_disk.context)
    assert in_memory.warnings == on_disk.warnings == []
    policies = {}
    for logs, source in ((on_disk, _as("parquet", policy_df, tmp_path / "p.parquet")), (in_memory, _as(kind, policy_df, None))):
        policies[logs.source] = load_policy(source, logs, "p")
    a, b = policies[on_disk.source], policies[in_memory.source]
    assert b.source == "policy p"
    for field in ("row", "action_code", "prob", "pi_logged"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    q_a = load_q_hat(_as("parquet", q_df, tmp_path / "q.parquet"), on_disk, {"p": a})
    q_b = load_q_hat(_as(kind, q_df, None), in_memory, {"p": b})
    np.testing.assert_array_equal(q_a.logged, q_b.logged)
    np.testing.assert_array_equal(q_a.expected["p"], q_b.expected["p"])
    load_catalogue(pd.DataFrame({"action": ["s-a", "s-b", "s-c", "s-d", "s-e"]}), in_memory)
    assert list(in_memory.catalogue) == ["s-a", "s-b", "s-c", "s-d", "s-e"]


def test_nan_propensity_in_a_dataframe_names_the_column_and_the_rows():
    logs, _ = _frames()
    logs.loc[[3, 7, 11], "propensity"] = np.nan
    with pytest.raises(InputError) as exc:
        load_logs(logs, CLICK, name="logs")
    [problem] = exc.value.problems
    assert (problem.source, problem.column, problem.rows) == ("logs", "propensity", 3)
    assert "logs, column 'propensity': 3 rows" in str(exc.value)


def test_an_in_memory_source_is_checked_like_a_file_every_problem_at_once():
    logs, policy = _frames()
    logs.loc[0, "propensity"] = 1.5
    logs["click"] = logs["click"].astype("Int64")
    logs.loc[[1, 2], "click"] = pd.NA
    with pytest.raises(InputError) as exc:
        load_logs(logs.drop(columns="action"), CLICK)
    assert {(p.source, p.column, p.rows) for p in exc.value.problems} == {
        ("logs", "action", None), ("logs", "click", 2), ("logs", "propensity", 1)}
    good, _ = _frames()
    loaded = load_logs(good, CLICK, need_decision_id=True)
    bad_policy = policy.assign(prob=policy["prob"] * 0.5)
    with pytest.raises(InputError) as exc:
        load_policy(bad_policy, loaded, "half", source_label="policy table 'half'")
    assert [(p.source, p.column) for p in exc.value.problems] == [("policy table 'half'", "prob")]


def test_a_column_pandas_cannot_convert_is_named():
    logs, _ = _frames()
    logs["x_mixed"] = [1, "two"] * (len(logs) // 2)
    with pytest.raises(InputError) as exc:
        load_logs(logs, CLICK, need_context=True, name="frame")
    assert [(p.source, p.column) for p in exc.value.problems] == [("frame", "x_mixed")]
    with pytest.raises(InputError, match="not a Parquet path, a pandas DataFrame or a pyarrow Table"):
        load_logs({"action": [1]}, CLICK)


def test_category_and_integer_category_keys_load_like_plain_columns():
    logs, _ = _frames()
    plain = load_logs(logs, CLICK, need_decision_id=True)
    categorical = load_logs(logs.assign(action=logs["action"].astype("category"),
                                        decision_id=logs["decision_id"].astype("category")), CLICK,
                            need_decision_id=True)
    np.testing.assert_array_equal(categorical.action_code, plain.action_code)
    np.testing.assert_array_equal(categorical.decision_code, plain.decision_code)
    as_ints = logs.assign(action=pd.Categorical(logs["action"].str[-1].map(ord)))
    np.testing.assert_array_equal(load_logs(as_ints, CLICK).action_code, plain.action_code)


# --- column mapping ----------------------------------------------------------------------------

def test_from_mapping_renames_roles_and_keeps_the_rest():
    schema = LogSchema.from_mapping({"decision_id": "impression", "step": "turn"}, context=["u_*"])
    assert (schema.decision_id, schema.step, schema.action, schema.context) == ("impression", "turn", "action", ("u_*",))
    assert "step" in ROLES and "timestamp" in ROLES and "context" not in ROLES
    assert LogSchema.from_mapping({}) == LogSchema()


def test_every_problem_of_a_mapping_is_reported_once_naming_the_source():
    with pytest.raises(InputError) as exc:
        LogSchema.from_mapping({"stream": "x", "action": " ", "user_id": "who", "session_id": "who"},
                               source="[data.columns]")
    problems = exc.value.problems
    assert len(problems) == 3 and all(p.source == "[data.columns]" for p in problems)
    unknown, empty, shared = problems
    assert "'stream' is not a column role" in unknown.message and "decision_id" in unknown.fix and "step" in unknown.fix
    assert "action" in empty.message and "empty" in empty.message
    assert "'who'" in shared.message and "user_id" in shared.message and "session_id" in shared.message


def test_parse_column_mapping_reads_role_items_and_reports_a_role_given_twice():
    schema = parse_column_mapping(["action=stream_id", " timestamp = event_time "])
    assert (schema.action, schema.timestamp) == ("stream_id", "event_time")
    with pytest.raises(InputError) as exc:
        parse_column_mapping(["action=a", "action=b", "nonsense", "bogus=c"])
    messages = [p.message for p in exc.value.problems]
    assert len(messages) == 3 and all(p.source == "--column" for p in exc.value.problems)
    assert "role 'action' is given twice" in messages[0] and "cannot read 'nonsense'" in messages[1]
    assert "'bogus' is not a column role" in messages[2]


def test_an_analysts_own_column_names_load_with_a_mapping(tmp_path):
    logs, policy = _frames(n_positions=1)
    own = logs.rename(columns={"decision_id": "impression", "action": "stream_id", "watch_seconds": "watch_time",
                               "timestamp": "event_time"}).drop(columns="position")
    own["event_time"] = own["event_time"].dt.tz_localize(None)   # naive, as many exports are
    own_policy = policy.drop(columns="position").rename(columns={"decision_id": "impression", "action": "stream_id"})
    pq.write_table(pa.Table.from_pandas(own, preserve_index=False), tmp_path / "own.parquet")
    schema = LogSchema.from_mapping({"decision_id": "impression", "action": "stream_id", "timestamp": "event_time"})
    loaded = load_logs(tmp_path / "own.parquet", [parse_reward("watch_time")], schema=schema, need_decision_id=True)
    assert loaded.schema == schema
    reference = load_logs(logs.drop(columns="position"), [parse_reward("watch_seconds")], need_decision_id=True)
    np.testing.assert_array_equal(loaded.timestamp, reference.timestamp)
    assert loaded.timestamp.dtype == np.dtype("datetime64[us]")
    assert [w for w in loaded.warnings if "without a time zone" in w and "'event_time'" in w and "UTC" in w]
    # the policy keeps the analyst's names, or the contract's: both are read with the logs' mapping
    mapped = load_policy(own_policy, loaded, "p")
    contract = load_policy(own_policy.rename(columns={"impression": "decision_id", "stream_id": "action"}), loaded, "p")
    want = load_policy(policy.drop(columns="position"), reference, "p")
    np.testing.assert_array_equal(mapped.pi_logged, want.pi_logged)
    np.testing.assert_array_equal(contract.pi_logged, want.pi_logged)


# --- warnings ----------------------------------------------------------------------------------

def test_a_naive_timestamp_is_taken_as_utc_with_a_warning():
    logs, _ = _frames()
    aware = load_logs(logs, CLICK)
    naive = load_logs(logs.assign(timestamp=logs["timestamp"].dt.tz_localize(None)), CLICK)
    np.testing.assert_array_equal(naive.timestamp, aware.timestamp)
    assert aware.warnings == []
    assert len(naive.warnings) == 1 and "taken as UTC" in naive.warnings[0] and "'timestamp'" in naive.warnings[0]
    berlin = load_logs(logs.assign(timestamp=logs["timestamp"].dt.tz_convert("Europe/Berlin")), CLICK)
    np.testing.assert_array_equal(berlin.timestamp, aware.timestamp)  # the same instants
    assert berlin.warnings == []


def test_an_unmapped_timestamp_column_is_pointed_out():
    logs, _ = _frames()
    loaded = load_logs(logs.rename(columns={"timestamp": "event_time"}), CLICK)
    assert loaded.timestamp is None
    [warning] = loaded.warnings
    assert "--column timestamp=event_time" in warning and "'event_time'" in warning
    mapped = load_logs(logs.rename(columns={"timestamp": "event_time"}), CLICK,
                       schema=LogSchema.from_mapping({"timestamp": "event_time"}))
    assert mapped.timestamp is not None and mapped.warnings == []


def test_needing_context_and_finding_none_is_a_warning_naming_the_patterns():
    logs, _ = _frames()
    without = logs.drop(columns=["x_segment", "x_activity"])
    loaded = load_logs(without, CLICK, need_context=True)
    [warning] = loaded.warnings
    assert "x_*" in warning and "--context PATTERNS" in warning and "DM" in warning and "causal" in warning
    assert load_logs(without, CLICK).warnings == []                      # not needed: nothing to say
    assert load_logs(logs, CLICK, need_context=True).warnings == []      # found
