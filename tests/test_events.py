"""`livegate track`: raw events to contract logs (datasets/events.py), checked against the event
simulator's exact feedback table (datasets/event_simulator.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from livegate.datasets import InputError
from livegate.datasets.event_simulator import EventSimulationConfig, simulate_events, write_event_simulation
from livegate.datasets.events import TrackConfig, parse_duration, parse_windows, track

SMALL = EventSimulationConfig(n_impressions=4000, n_users=150, seed=5)


@pytest.fixture(scope="module")
def sim():
    return simulate_events(SMALL)


def _frame(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas()
    return frame.drop(columns=[c for c in ("day",) if c in frame]).sort_values("decision_id").reset_index(drop=True)


def _assert_same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    expected = expected.sort_values("decision_id").reset_index(drop=True)
    assert list(got.columns) == list(expected.columns)
    for column in expected.columns:
        a, b = got[column], expected[column]
        if column == "timestamp":
            a, b = a.dt.tz_convert("UTC"), b.dt.tz_convert("UTC")
        # exact equality: watch times are integer microsecond differences / 1e6, gifts whole coins
        assert np.array_equal(a.to_numpy(), b.to_numpy()), column


def test_track_reproduces_the_simulators_exact_feedback(sim):
    result = track(sim.events, config=TrackConfig(threads=1))
    _assert_same(_frame(result.report["table"]), sim.feedback)
    report = result.report
    assert report["duplicates"]["total"] == sim.counts["duplicates"] > 0
    assert report["late"]["total"] == sim.counts["late"] > 0
    assert report["unmatched"]["total"] == sim.counts["unmatched"] > 0
    assert report["rows_out"] == report["impressions"] == sim.counts["impressions"]
    assert report["events_in"] == sim.counts["events_in"]
    # the noise matters: each rule changes the table when it is switched off
    assert sim.feedback["watch_seconds"].max() <= 4 * 3600
    assert (sim.feedback["session_id"].nunique() < len(sim.feedback)) and sim.feedback["step"].max() > 0


def test_each_rule_changes_the_result(sim):
    """The exact match above is not vacuous: other settings give other tables."""
    base = _frame(track(sim.events, config=TrackConfig(threads=1)).report["table"])
    wide = _frame(track(sim.events, config=TrackConfig(threads=1, windows={**TrackConfig().windows, "click": 120.0}))
                  .report["table"])
    assert wide["click"].sum() > base["click"].sum()
    capped = _frame(track(sim.events, config=TrackConfig(threads=1, missing_stop_cap=60.0)).report["table"])
    assert capped["watch_seconds"].sum() < base["watch_seconds"].sum()
    no_late = sim.events.drop(columns=["received_at"])
    loose = track(no_late, config=TrackConfig(threads=1)).report
    assert loose["late"] == {"total": 0, "by_type": {}, "checked": False}
    assert _frame(loose["table"])["click"].sum() > base["click"].sum()   # late clicks now count


def test_dedup_without_event_id_uses_every_field_but_received_at(sim):
    events = sim.events.drop(columns=["event_id"])
    report = track(events, config=TrackConfig(threads=1)).report
    assert report["deduplicated_by"] == "every field but received_at"
    assert report["duplicates"]["total"] == sim.counts["duplicates"]
    _assert_same(_frame(report["table"]), sim.feedback)


def test_given_session_ids_are_kept_and_steps_built(sim):
    events = sim.events.copy()
    events["session_id"] = pd.array(np.where(events["type"] == "impression", events["user_id"] % 7, None),
                                    dtype="Int64")
    table = _frame(track(events, config=TrackConfig(threads=1)).report["table"])
    assert set(table["session_id"]) <= set(range(7))
    for _, group in table.sort_values(["session_id", "timestamp", "decision_id"]).groupby("session_id"):
        assert list(group["step"]) == list(range(len(group)))


def test_cli_simulate_track_evaluate(tmp_path, livegate):
    assert livegate("simulate", "--events", "--out", tmp_path / "sim", "--n-rounds", 3000, "--seed", 2).code == 0
    run = livegate("track", "--events", tmp_path / "sim" / "events.parquet", "--out", tmp_path / "logs",
                   "--threads", 1)
    assert run.code == 0, run.err
    days = sorted(p.name for p in (tmp_path / "logs").iterdir() if p.is_dir())
    assert days[0] == "day=2026-01-05" and len(days) == 7
    report = json.loads((tmp_path / "logs" / "_tracking.json").read_text())
    assert report["schema"] == "livegate.track/1" and report["rows_out"] == 3000
    got = pq.read_table(tmp_path / "logs").to_pandas()
    _assert_same(got.drop(columns=["day"]).sort_values("decision_id").reset_index(drop=True),
                 pd.read_parquet(tmp_path / "sim" / "feedback.parquet"))
    evaluated = livegate("evaluate", "--logs", tmp_path / "logs", "--policy",
                         f"candidate={tmp_path / 'sim' / 'policies' / 'candidate.parquet'}", "--reward", "click",
                         "--estimators", "ips,snips")
    assert evaluated.code == 0, evaluated.err
    # a second run replaces the output as a whole, with the same bytes
    before = {p.relative_to(tmp_path / "logs"): p.read_bytes() for p in (tmp_path / "logs").rglob("*.parquet")}
    assert livegate("track", "--events", tmp_path / "sim" / "events.parquet", "--out", tmp_path / "logs",
                    "--threads", 1).code == 0
    after = {p.relative_to(tmp_path / "logs"): p.read_bytes() for p in (tmp_path / "logs").rglob("*.parquet")}
    assert before == after


def test_bad_events_are_input_errors(tmp_path, sim, livegate):
    events = sim.events.copy()
    events.loc[events.index[events["type"] == "impression"][:3], "propensity"] = 1.5
    with pytest.raises(InputError, match="outside \\(0, 1\\]"):
        track(events)
    with pytest.raises(InputError, match="propensity.*is missing"):
        track(sim.events.drop(columns=["propensity"]))
    strings = sim.events.assign(timestamp=sim.events["timestamp"].astype(str))
    with pytest.raises(InputError, match="Parquet timestamp"):
        track(strings)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    path = tmp_path / "events.parquet"
    sim.events.to_parquet(path)
    run = livegate("track", "--events", path, "--out", foreign)
    assert run.code == 2 and "other files" in run.err and (foreign / "notes.txt").exists()
    assert livegate("track", "--events", path, "--out", tmp_path / "o", "--window", "clicks=30s").code == 2
    assert livegate("track", "--events", tmp_path / "missing.parquet", "--out", tmp_path / "o").code == 2


def test_durations():
    assert parse_duration("250ms", "x") == 0.25 and parse_duration("4h", "x") == 14400 and parse_duration(30, "x") == 30
    assert parse_windows("click=1m, gift=2h")["click"] == 60 and parse_windows(None)["watch"] == 4 * 3600
    for bad in ("", "4 hours", "-3s", "0s"):
        with pytest.raises(InputError):
            parse_duration(bad, "--lateness")


def test_simulation_is_deterministic(tmp_path):
    a = write_event_simulation(simulate_events(EventSimulationConfig(n_impressions=500, seed=9)), tmp_path / "a")
    b = write_event_simulation(simulate_events(EventSimulationConfig(n_impressions=500, seed=9)), tmp_path / "b")
    assert all(Path(a[k]).read_bytes() == Path(b[k]).read_bytes() for k in a)
