"""The held-out split (a seeded hash of the unit id, or time) and the record of the training rows that
a learned policy file carries, with the check that refuses to evaluate it on them."""
from __future__ import annotations

import base64
import hashlib
import json
import zlib

import numpy as np

from livegate.datasets.errors import InputError, Problem

from .methods import SCHEMA, MethodSpec

#: Parquet schema metadata key of a learned policy file
METADATA_KEY = b"livegate.learn"


def split_units(ids: np.ndarray, *, rule: str, test_share: float, seed: int,
                timestamps: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Which units (decisions or sessions) train: a boolean mask over `ids`, and the rule's record.

    `random`: a unit trains when a seeded hash of its id falls above the test share, so the same id
    lands on the same side whatever file it is in and however the rows are ordered. `time`: the
    units whose (first) timestamp is before the (1 - test_share) quantile train, the later ones test
    (what a deployment would see)."""
    if not 0 < test_share < 1:
        raise InputError(Problem("--test-share", f"{test_share} is not in (0, 1)", fix="e.g. --test-share 0.3"))
    if rule == "random":
        train = _unit_hash(ids, seed) >= test_share
        record = {"rule": "random", "seed": seed, "test_share": test_share}
    elif rule == "time":
        if timestamps is None:
            raise InputError(Problem("--split", "time needs a timestamp column in the logs",
                                     fix="add timestamp (or map it with --column timestamp=NAME), or use --split random"))
        t = timestamps.astype("datetime64[us]").astype(np.int64)
        cutoff = int(np.quantile(t, 1.0 - test_share, method="lower"))
        train = t < cutoff
        record = {"rule": "time", "test_share": test_share,
                  "cutoff": str(np.datetime64(cutoff, "us")) + "Z", "train": "timestamp before the cutoff"}
    else:
        raise InputError(Problem("--split", f"unknown split '{rule}'", fix="use random or time"))
    if train.all() or not train.any():
        raise InputError(Problem("--split", f"left {'no' if train.all() else 'every'} unit out for evaluation "
                                 f"({len(ids):,} units)", fix="use more decisions or another --test-share"))
    return train, record


def _unit_hash(ids: np.ndarray, seed: int) -> np.ndarray:
    """A seeded hash of each id, uniform in [0, 1): integers through SplitMix64's finaliser (Steele,
    Lea & Flood 2014) of id XOR a key drawn from the seed; strings through pandas' keyed SipHash
    (whose integer path ignores the key, hence the two branches)."""
    import pandas as pd

    key = hashlib.sha256(f"livegate split {seed}".encode()).digest()
    if ids.dtype.kind in "iub":
        x = ids.astype(np.int64).view(np.uint64) ^ np.frombuffer(key[:8], dtype="<u8")[0]
        with np.errstate(over="ignore"):  # multiplication modulo 2^64 is the point
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
    else:
        x = pd.util.hash_array(np.asarray(ids, dtype=object).astype(str).astype(object), hash_key=key.hex()[:16])
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def encode_ids(ids: np.ndarray) -> str:
    """Ids as compact text for Parquet metadata: sorted integers delta-encoded, or strings joined by
    NUL, zlib-compressed, base64. A million consecutive ids take a few kilobytes."""
    if ids.dtype.kind in "iu":
        values = np.sort(ids.astype(np.int64))
        raw = b"i" + np.diff(values, prepend=np.int64(0)).astype("<i8").tobytes()
    else:
        raw = b"s" + "\x00".join(sorted(map(str, ids))).encode("utf-8")
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def decode_ids(text: str) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(text))
    if raw[:1] == b"i":
        return np.cumsum(np.frombuffer(raw[1:], dtype="<i8"))
    body = raw[1:].decode("utf-8")
    return np.array(body.split("\x00") if body else [], dtype=object)


def training_record(source) -> dict | None:
    """The `livegate.learn` metadata of a policy file (a Parquet path or a pyarrow Table), or None."""
    import os

    metadata = None
    try:
        if isinstance(source, (str, os.PathLike)):
            import pyarrow.dataset as ds
            metadata = ds.dataset(source, format="parquet").schema.metadata
        elif hasattr(source, "schema") and hasattr(source.schema, "metadata"):
            metadata = source.schema.metadata
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the policy loader itself
        return None
    if not metadata or METADATA_KEY not in metadata:
        return None
    try:
        return json.loads(metadata[METADATA_KEY])
    except (ValueError, UnicodeDecodeError):
        return None


def trained_rows(record: dict, decision_ids: np.ndarray, decision_code: np.ndarray | None) -> int:
    """How many log rows have a decision id among the record's training decisions."""
    train = decode_ids(record["split"]["train_decision_ids"])
    if decision_ids is None or len(train) == 0:
        return 0
    if decision_ids.dtype.kind in "iu" and train.dtype.kind in "iu":
        hit = np.isin(decision_ids.astype(np.int64), train)
    else:
        hit = np.isin(decision_ids.astype(str), train.astype(str))
    return int(hit.sum()) if decision_code is None else int(hit[decision_code].sum())


def check_not_trained_on(source, logs, name: str) -> None:
    """Raise InputError (exit 2) when the policy file `source` was learned on rows of `logs`
    (a datasets.LoggedData). Called when a policy is joined to logs for evaluation or gating."""
    record = training_record(source)
    if record is None or "split" not in record or logs.decision_ids is None:
        return
    overlap = trained_rows(record, logs.decision_ids, logs.decision_code)
    if overlap:
        raise InputError(Problem(f"policy {name}", f"was learned by livegate learn on {overlap:,} of these logs' "
                                 f"{logs.n:,} rows (split {record['split'].get('rule')}); an evaluation there "
                                 "rewards the policy for fitting their noise",
                                 fix="evaluate it on rows it never saw: the held-out logs that `livegate learn "
                                     "--heldout-out` writes, or newer logs"))


def policy_metadata(method: MethodSpec, split: dict, train_decision_ids: np.ndarray, *, epsilon: float,
                    top_k: int | None, rewards: list[str]) -> dict[bytes, bytes]:
    record = {"schema": SCHEMA, "method": method.identifier, "epsilon": epsilon, "top_k": top_k, "reward": rewards,
              "split": {**split, "n_train_decisions": int(len(train_decision_ids)),
                        "train_decision_ids": encode_ids(np.asarray(train_decision_ids))}}
    return {METADATA_KEY: json.dumps(record, sort_keys=True).encode("utf-8")}
