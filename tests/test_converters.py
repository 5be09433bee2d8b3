"""Open Bandit Dataset conversion: a small file in the dataset's published layout."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from livegate import cli
from livegate.datasets import load_logs, parse_reward
from livegate.datasets.converters import open_bandit_to_logs


@pytest.fixture
def obd_files(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    raw = pd.DataFrame({
        "timestamp": pd.date_range("2019-11-24", periods=n, freq="min").astype(str),
        "item_id": rng.integers(0, 10, n), "position": rng.integers(1, 4, n), "click": rng.integers(0, 2, n),
        "propensity_score": np.full(n, 0.1),
        "user_feature_0": rng.choice(["81ce123cbb5bd8ce818f60fb3586bba5", "cef3390ed299c09874189c387777674a"], n),
        "user-item_affinity_0": rng.random(n), "user-item_affinity_1": rng.random(n)})
    raw.index.name = ""
    raw.to_csv(tmp_path / "all.csv")  # the dataset's CSVs carry an unnamed index column
    items = pd.DataFrame({"item_id": range(10), "item_feature_0": rng.random(10),
                          "item_feature_1": rng.choice(["a1b2", "c3d4"], 10)})
    items.to_csv(tmp_path / "item_context.csv")
    return tmp_path, raw


def test_open_bandit_rows_become_logged_samples(obd_files):
    directory, raw = obd_files
    logs = open_bandit_to_logs(directory / "all.csv", directory / "item_context.csv")
    assert len(logs) == len(raw) and logs["decision_id"].is_unique
    assert sorted(logs["position"].unique()) == [0, 1, 2]
    np.testing.assert_array_equal(logs["position"], raw["position"] - 1)
    np.testing.assert_array_equal(logs["action"], raw["item_id"])
    assert {"x_user_feature_0", "x_affinity_0", "x_affinity_1", "a_item_feature_0", "a_item_feature_1"} <= set(logs)
    assert str(logs["timestamp"].dtype).startswith("datetime64[us, UTC]")


def test_converted_file_passes_validation_and_evaluates(obd_files, tmp_path):
    directory, _ = obd_files
    out = tmp_path / "obd.parquet"
    assert cli.main(["--quiet", "convert", "--format", "open-bandit", "--input", str(directory / "all.csv"),
                     "--item-context", str(directory / "item_context.csv"), "--out", str(out)]) == 0
    assert cli.main(["--quiet", "validate", "--logs", str(out), "--reward", "click"]) == 0
    logs = load_logs(out, [parse_reward("click")], need_context=True)
    assert logs.n_positions == 3 and logs.context.shape[1] == 3


def test_a_file_that_is_not_open_bandit_exits_2(tmp_path, capsys):
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "x.csv", index=False)
    assert cli.main(["convert", "--format", "open-bandit", "--input", str(tmp_path / "x.csv"),
                     "--out", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "x.csv, column 'item_id': is missing" in err and "Traceback" not in err
