"""Causal checks on logs too large for memory: a proportional stratified sample read row group by row
group (datasets/causal_sample.py, issue 14), recorded in the result document."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from livegate.causal import CausalConfig, apply_sampling_record, attach_sampling, run_causal_check
from livegate.datasets import causal_sample as sampling
from livegate.datasets.causal_sample import read_causal_sample, read_stratified_sample, row_hash
from livegate.datasets.causal_simulator import simulate_causal
from livegate.datasets.errors import InputError

SEED = 7
QUICK = dict(refuters=(), learn_policy=False)  # one LinearDML fit, no refuters


@pytest.fixture(scope="module")
def logs():
    """20,000 simulated confounded rows, with a rare 0/1 outcome (a gift was sent: about 7%)."""
    frame, truth = simulate_causal(n_rows=20_000, seed=SEED)
    frame["gifted"] = (frame["gift_value"] > 0).astype("int64")
    return pa.Table.from_pandas(frame, preserve_index=False), truth


@pytest.fixture(scope="module")
def layouts(logs, tmp_path_factory):
    """The same rows in three layouts: one file (one row group), one file of 40 row groups, a directory of
    four files of several row groups each (sorted names: the same global row order)."""
    table, _ = logs
    root = tmp_path_factory.mktemp("layouts")
    pq.write_table(table, root / "one.parquet")
    pq.write_table(table, root / "groups.parquet", row_group_size=500)
    (root / "parts").mkdir()
    for i in range(4):
        pq.write_table(table.slice(5_000 * i, 5_000), root / "parts" / f"part-{i:03d}.parquet", row_group_size=1_200)
    return {"one": root / "one.parquet", "groups": root / "groups.parquet", "parts": root / "parts"}


def _sample(source, n=4_000, seed=SEED, outcome="gifted", **kw):
    return read_stratified_sample(source, "recommended", outcome, ["x_activity"], n, seed, **kw)


# --- allocation ------------------------------------------------------------------------------------

def test_shares_per_stratum_are_kept_to_within_one_row(logs, layouts):
    table, _ = logs
    sample, record = _sample(layouts["groups"])
    t = table["recommended"].to_numpy()
    y = table["gifted"].to_numpy()
    assert record["strata"] == ["recommended", "gifted"]  # a 0/1 outcome is a stratum too
    assert record["of"] == table.num_rows and record["rows"] == sample.num_rows
    assert record["method"] == "stratified" and record["seed"] == SEED and record["key"] == "decision_id"
    st, sy = sample["recommended"].to_numpy(), sample["gifted"].to_numpy()
    for arm in (0, 1):
        for value in (0, 1):
            total = int(((t == arm) & (y == value)).sum())
            kept = int(((st == arm) & (sy == value)).sum())
            assert record["per_stratum"][f"recommended={arm},gifted={value}"] == [kept, total]
            # proportional allocation, rounded up: ceil(N * M_s / M)
            assert 0 <= kept - 4_000 * total / table.num_rows < 1
    assert 4_000 <= sample.num_rows < 4_000 + 4
    # the rare outcome's share in each arm is the table's, to within one row
    for arm in (0, 1):
        share = y[t == arm].mean()
        assert abs(sy[st == arm].sum() - share * (st == arm).sum()) < 1 + share


def test_a_continuous_outcome_stratifies_by_arm_only(layouts):
    _, record = _sample(layouts["one"], outcome="watch_seconds")
    assert record["strata"] == ["recommended"]
    assert set(record["per_stratum"]) == {"recommended=0", "recommended=1"}


# --- determinism -----------------------------------------------------------------------------------

def test_same_seed_same_rows_whatever_the_layout(logs, layouts):
    table, _ = logs
    samples = {name: _sample(path) for name, path in layouts.items()}
    samples["table"] = _sample(table)
    samples["frame"] = _sample(table.to_pandas())
    ids = {name: s["decision_id"].to_pylist() for name, (s, _) in samples.items()}
    records = {name: r["per_stratum"] for name, (_, r) in samples.items()}
    assert all(v == ids["one"] for v in ids.values())
    assert all(v == records["one"] for v in records.values())
    assert _sample(layouts["parts"])[0].equals(samples["parts"][0])  # run to run
    other, _ = _sample(layouts["one"], seed=SEED + 1)
    assert other["decision_id"].to_pylist() != ids["one"]


def test_rows_keyed_by_position_without_decision_ids(logs, layouts):
    """Without a decision_id column the key is the global row index: still layout-free, given the row order."""
    kw = dict(outcome="watch_seconds", decision_id=None)
    one, record = _sample(layouts["one"], **kw)
    assert record["key"] == "row index"
    assert "decision_id" not in one.column_names
    for name in ("groups", "parts"):
        assert _sample(layouts[name], **kw)[0].equals(one)


def test_decision_id_keys_do_not_depend_on_the_row_order(logs, tmp_path):
    table, _ = logs
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows)))
    pq.write_table(shuffled, tmp_path / "shuffled.parquet", row_group_size=777)
    a, _ = _sample(table)
    b, _ = _sample(tmp_path / "shuffled.parquet")
    assert sorted(a["decision_id"].to_pylist()) == sorted(b["decision_id"].to_pylist())


def test_the_hash_is_keyed_by_value_not_by_type_width():
    ids = np.arange(1_000)
    assert np.array_equal(row_hash(3, pa.array(ids, pa.int32()), ids), row_hash(3, pa.array(ids, pa.int64()), ids))
    as_text = pa.array([f"d{i}" for i in ids])
    assert np.array_equal(row_hash(3, as_text, ids), row_hash(3, as_text.cast(pa.large_string()), ids))
    u = row_hash(3, pa.array(ids), ids).astype(float) / 2.0 ** 64
    assert abs(u.mean() - 0.5) < 0.05 and len(np.unique(u)) == 1_000  # about uniform, no collisions


# --- bounded memory --------------------------------------------------------------------------------

def test_reads_row_group_by_row_group_with_only_the_needed_columns(layouts, monkeypatch):
    """No call reads more than one row group; pass 1 reads only the stratification columns."""
    calls = []
    original = pq.ParquetFile.read_row_group

    def spy(self, i, columns=None, **kw):
        out = original(self, i, columns=columns, **kw)
        calls.append((tuple(columns), out.num_rows))
        return out

    def refuse(*args, **kwargs):
        raise AssertionError("a whole file was read")

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", refuse)
    monkeypatch.setattr(pq, "read_table", refuse)
    sample, _ = _sample(layouts["groups"])
    assert len(calls) == 2 * 40  # two passes over 40 row groups of 500 rows
    assert max(rows for _, rows in calls) == 500
    assert {cols for cols, _ in calls[:40]} == {("recommended", "gifted")}
    assert {cols for cols, _ in calls[40:]} == {("recommended", "gifted", "x_activity", "decision_id")}
    assert sample.num_rows > 500 * 8  # the sample is larger than any one read


def test_the_candidate_buffer_stays_near_the_sample_size(layouts, monkeypatch):
    """The rows held between row groups: at most the sample, the pending candidates (cut back above half
    the sample) and one row group."""
    peak = []
    cut = sampling._Buffer._cut

    def watch(self):
        peak.append(sum(part[0].num_rows for part in self.parts))
        cut(self)

    monkeypatch.setattr(sampling._Buffer, "_cut", watch)
    monkeypatch.setattr(sampling._Buffer, "__init__", _small_limit(sampling._Buffer.__init__))
    sample, _ = _sample(layouts["groups"], n=2_000)
    assert len(peak) > 2 and max(peak) <= 2_003 + 1_000 + 500


def _small_limit(init):
    def wrapped(self, take, n_rows):
        init(self, take, n_rows)
        self.limit = n_rows // 2  # the real floor of 1024 rows would hide the cut at this size
    return wrapped


# --- the result document ---------------------------------------------------------------------------

def test_the_document_records_the_sampling_and_the_ate_covers_the_truth(tmp_path):
    """A 20% stratified sample of 50,000 simulated rows: the AIPW ATE covers the simulation's exact ATE
    of the whole table within 3 standard errors (the sample's own SE, about 2.5 s here; a correct
    estimator misses by more than that 0.3% of the time, and the seed is fixed)."""
    frame, truth = simulate_causal(n_rows=50_000, seed=11)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "logs.parquet",
                   row_group_size=5_000)
    config = CausalConfig(treatment="recommended", outcome="watch_seconds", seed=5, **QUICK)
    sample, record = read_causal_sample(tmp_path / "logs.parquet", config, 10_000)
    assert len(sample) == record["rows"] and 10_000 <= record["rows"] <= 10_001
    result = attach_sampling(run_causal_check(sample, config), record, 10_000)
    document = json.loads(json.dumps(result.to_dict()))
    assert document["sampling"] == record and document["n_rows"] == record["rows"]
    assert record["note"] in document["notes"]
    ate, se = document["ate"]["value"], document["ate"]["se"]
    assert 0 < se < 4
    assert abs(ate - truth["estimands"]["watch_seconds"]["ate"]) < 3 * se


def test_the_whole_table_has_sampling_null(logs):
    table, _ = logs
    config = CausalConfig(treatment="recommended", outcome="watch_seconds", seed=5, **QUICK)
    small = table.slice(0, 3_000)
    frame, record = read_causal_sample(small, config, 3_000)
    assert record is None and len(frame) == 3_000
    result = attach_sampling(run_causal_check(frame, config), record, 3_000)
    document = result.to_dict()
    assert document["sampling"] is None
    assert any("whole table was analysed" in n for n in document["notes"])
    assert apply_sampling_record({"schema": "livegate.causal/1"}, {"rows": np.int64(3)})["sampling"] == {"rows": 3}


# --- faults ----------------------------------------------------------------------------------------

def test_a_corrupt_file_is_named(layouts, tmp_path):
    root = tmp_path / "logs"
    root.mkdir()
    good = pq.read_table(layouts["one"])
    pq.write_table(good, root / "part-0.parquet")
    (root / "part-1.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError) as err:
        _sample(root)
    assert str(root / "part-1.parquet") in str(err.value) and "not a readable Parquet file" in str(err.value)


def test_a_corrupt_row_group_is_named(layouts, tmp_path):
    """A readable footer over a damaged page: found while reading row group by row group, file named."""
    path = tmp_path / "damaged.parquet"
    pq.write_table(pq.read_table(layouts["one"]), path, row_group_size=1_000)
    offset = pq.read_metadata(path).row_group(3).column(1).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset:offset + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as err:
        _sample(path)
    assert str(path) in str(err.value) and "row group 3" in str(err.value)


def test_too_few_rows_per_arm_is_refused_with_the_size_that_suffices(logs):
    table, _ = logs
    t = table["recommended"].to_numpy()
    rare = np.concatenate([np.flatnonzero(t == 0), np.flatnonzero(t == 1)[:40]])  # 40 treated of ~11,100
    skewed = table.take(pa.array(np.sort(rare)))
    with pytest.raises(InputError) as err:
        _sample(skewed, n=1_000, outcome="watch_seconds")
    message = str(err.value)
    enough = math.ceil(10 * skewed.num_rows / 40)
    assert "needs at least 10 per arm" in message and f"--sample-rows {enough}" in message
    sample, record = _sample(skewed, n=enough, outcome="watch_seconds")
    assert record["per_stratum"]["recommended=1"][0] >= 10
    config = CausalConfig(treatment="recommended", outcome="watch_seconds", **QUICK)
    with pytest.raises(InputError, match="sample at least 100 rows"):
        read_causal_sample(table, config, 50)
    with pytest.raises(InputError, match="positive integer"):
        _sample(table, n=0)


def test_bad_treatment_rows_outside_the_sample_are_still_found(logs):
    """Pass 1 checks the treatment and the outcome on every row, not only on the rows drawn."""
    table, _ = logs
    t = table["recommended"].to_numpy().astype(float)
    t[[5, 6]] = np.nan
    t[7] = 2
    bad = table.set_column(table.schema.get_field_index("recommended"), "recommended", pa.array(t))
    with pytest.raises(InputError) as err:
        _sample(bad, n=100)
    message = str(err.value)
    assert "column 'recommended': 2 rows are missing (NaN / null)" in message
    assert "values other than 0/1 (seen: 2.0)" in message


# --- the command line and gate.toml ----------------------------------------------------------------

def test_the_command_line_runs_on_the_sample_and_records_it(layouts, tmp_path):
    from conftest import run_cli

    out = tmp_path / "causal.json"
    done = run_cli("causal", "--logs", layouts["groups"], "--treatment", "recommended", "--outcome", "gifted",
                   "--sample-rows", 3_000, "--seed", 2, "--out", out)
    assert done.code == 0, done.err
    document = json.loads(out.read_text())
    assert document["sampling"]["rows"] == document["n_rows"] and 3_000 <= document["n_rows"] <= 3_004
    assert document["sampling"]["seed"] == 2
    bad = run_cli("causal", "--logs", layouts["groups"], "--treatment", "recommended", "--outcome", "gifted",
                  "--sample-rows", 0)
    assert bad.code == 2 and "Traceback" not in bad.err and "sample" in bad.err


def test_gate_toml_takes_sample_rows(tmp_path):
    from livegate.datasets.errors import InputError as Error
    from livegate.datasets.gate_config import load_gate_config

    base = ('[data]\nlogs = "logs.parquet"\n[[candidate]]\nname = "a"\npolicy = "a.parquet"\n'
            '[[criterion]]\nmetric = "watch_seconds"\nrule = "improves"\nmin_effect = 0.0\n'
            '[causal]\ntreatment = "recommended"\noutcome = "watch_seconds"\n')
    path = tmp_path / "gate.toml"
    path.write_text(base + "sample_rows = 1000000\n")
    assert load_gate_config(path).causal.sample_rows == 1_000_000
    path.write_text(base + "sample_rows = -5\n")
    with pytest.raises(Error, match="sample_rows"):
        load_gate_config(path)
