"""Converters from public bandit datasets to livegate's data contract (DESIGN.md section 2).

Open Bandit Dataset (Saito, Aihara, Matsutani & Narita 2021; ZOZOTOWN fashion recommendations):
`{behavior_policy}/{campaign}.csv` has one row per impression with `timestamp`, `item_id`,
`position` (1, 2, 3: left, centre, right), `click`, the logging policy's probability of the item at
that position (`propensity_score`; the dataset's README calls it `action_prob`), hashed
`user_feature_*` columns and `user-item_affinity_*` scores; `item_context.csv` has `item_id` and
`item_feature_*`. Each impression becomes one logged row; its position is a feed slot (0-based).
Hashed user features become string context columns (`x_user_feature_*`) and hashed item features
string stream features (`a_item_feature_*`): categories, as the reward model treats them.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError, Problem
from .io import write_atomic

_PROPENSITY_COLUMNS = ("propensity_score", "action_prob")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(Problem(str(path), "does not exist", fix="point to an Open Bandit Dataset CSV file"))
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(Problem(str(path), f"is not a readable CSV file ({exc})")) from None
    return frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed")])


def open_bandit_to_logs(csv_path: str | Path, item_context: str | Path | None = None) -> pd.DataFrame:
    """The Open Bandit Dataset's impressions as livegate logs (a DataFrame)."""
    csv_path = Path(csv_path)
    raw = _read_csv(csv_path)
    propensity = next((c for c in _PROPENSITY_COLUMNS if c in raw.columns), None)
    missing = [c for c in ("item_id", "position", "click") if c not in raw.columns]
    if propensity is None:
        missing.append(" or ".join(_PROPENSITY_COLUMNS))
    if missing:
        raise InputError([Problem(str(csv_path), "is missing", column=c,
                                  fix="this does not look like an Open Bandit Dataset file") for c in missing])
    logs = pd.DataFrame({"decision_id": np.arange(len(raw), dtype=np.int64),
                         "action": raw["item_id"].astype(np.int64),
                         # positions 1, 2, 3 -> slots 0, 1, 2 (dense rank, as the dataset's own loader does)
                         "position": (pd.factorize(raw["position"], sort=True)[0]).astype(np.int64),
                         "propensity": raw[propensity].astype(np.float64),
                         "click": raw["click"].astype(np.int64)})
    if "timestamp" in raw.columns:
        logs.insert(1, "timestamp", pd.to_datetime(raw["timestamp"], utc=True).astype("datetime64[us, UTC]"))
    for column in raw.columns:
        if column.startswith("user_feature"):
            logs["x_" + column] = raw[column].astype(str)
        elif column.startswith("user-item_affinity") or column.startswith("user_item_affinity"):
            logs["x_affinity_" + re.sub(r"\D", "", column)] = raw[column].astype(np.float64)
    if item_context is not None:
        items = _read_csv(Path(item_context))
        if "item_id" not in items.columns:
            raise InputError(Problem(str(item_context), "is missing", column="item_id"))
        features = [c for c in items.columns if c.startswith("item_feature")]
        # hashed categories stay strings: a_* string columns are categorical stream features, which the
        # reward model splits by category, not by the order of arbitrary integer codes
        table = pd.DataFrame({"action": items["item_id"].astype(np.int64)})
        for column in features:
            values = items[column]
            table["a_" + column] = values.astype(np.float64) if pd.api.types.is_numeric_dtype(values) \
                else values.astype("string")
        logs = logs.merge(table, on="action", how="left", validate="many_to_one")
    return logs


def convert_open_bandit(csv_path: str | Path, out_path: str | Path, item_context: str | Path | None = None) -> Path:
    """Write the Open Bandit Dataset file as livegate logs (Parquet, atomically)."""
    logs = open_bandit_to_logs(csv_path, item_context)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(logs, preserve_index=False), buffer, compression="zstd")
    protected = frozenset(Path(p).resolve() for p in (csv_path, item_context) if p is not None)
    return write_atomic(out_path, buffer.getvalue(), protected)
