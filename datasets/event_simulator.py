"""Raw viewer events of a simulated week, and the exact feedback table they should produce.

Why: `livegate track` (datasets/events.py) turns raw events into contract logs with attribution
windows, watch-time rules, deduplication and a lateness watermark. Such a pipeline can only be
checked against a known answer, so this simulator writes the events with the noise real pipelines
see (duplicated rows, late arrivals, missing watch stops, rows out of order, events outside their
window, events that match no impression, events carrying no impression id) and, next to them, the
feedback table that the rules of docs/events.md give on the *clean* events it started from. That
table is computed here with pandas from the simulator's own record of which event is noise, an
implementation independent of track's SQL.

The world: viewers with an activity level and a device; live streams with a quality and a
popularity; a logging policy (the production ranker) that favours popular streams with
epsilon-uniform exploration over a slate; a candidate that favours quality. From the day after
`degrade_after_day`, streams of positive quality lose click probability (say, a broken thumbnail
service for them): the candidate, which shows them more, becomes worse than production. truth.json
gives the exact expected difference of the recorded click rate (candidate minus logging) per day.

Everything is vectorised NumPy/pandas driven by one `np.random.default_rng(seed)`.
"""
from __future__ import annotations

import io
import math
import pathlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__
from .errors import InputError, Problem, raise_if_any
from .validation import check_int_settings

TRUTH_SCHEMA = "livegate.event_truth/1"
START_US = int(np.datetime64("2026-01-05T00:00:00", "us").astype(np.int64))   # a Monday, UTC
DAY_US = 86_400 * 10**6
S = 10**6                                      # microseconds per second
DEVICES = ("android", "ios", "web")
HOUR_WEIGHTS = np.array([1.0, 0.7, 0.4, 0.3, 0.3, 0.3, 0.4, 0.6, 0.8, 0.9, 1.0, 1.0,
                         1.1, 1.0, 1.0, 1.0, 1.1, 1.3, 1.7, 3.0, 3.2, 3.2, 3.0, 1.6])

#: The tracking rules the expected table follows (docs/events.md); `track` defaults to the same.
WINDOWS_S = {"click": 30, "watch": 4 * 3600, "gift": 4 * 3600, "follow": 4 * 3600}
LATENESS_S = 3600
MISSING_STOP_CAP_S = 3600
SESSION_GAP_S = 30 * 60
HEARTBEAT_S = 60

LOG_EPSILON = 0.2          # logging: epsilon-uniform over the slate (weights stay below slate/epsilon)
CAND_EPSILON = 0.05
CLICK_DELAY_MEAN_S = 8.0
SLOW_CLICK_SHARE = 0.05    # clicks 31+ s after the impression: outside the 30 s window, not attributed
DEGRADE_LOGIT = -2.0       # from the change on, positive-quality streams' click logit drops by this


@dataclass(frozen=True)
class EventSimulationConfig:
    n_impressions: int = 30_000
    n_users: int = 600
    n_streams: int = 40
    slate_size: int = 6
    n_days: int = 7
    #: candidate degrades from the day after this one (1-based days); None: no change
    degrade_after_day: int | None = 4
    duplicate_share: float = 0.02
    late_share: float = 0.01
    missing_stop_share: float = 0.15
    no_impression_id_share: float = 0.3
    n_unmatched: int = 150
    seed: int = 0


@dataclass
class EventSimulation:
    config: EventSimulationConfig
    events: pd.DataFrame          # the raw events, noise included, rows shuffled
    feedback: pd.DataFrame        # the exact contract logs `track` must build from `events`
    policy: pd.DataFrame          # the candidate, long format (decision_id, action, prob)
    truth: dict
    counts: dict                  # what the tracking report must count


def _validate(cfg: EventSimulationConfig) -> None:
    problems = check_int_settings("event simulation", {
        "n_impressions": (cfg.n_impressions, 10), "n_users": (cfg.n_users, 1), "n_streams": (cfg.n_streams, 2),
        "slate_size": (cfg.slate_size, 1), "n_days": (cfg.n_days, 1), "n_unmatched": (cfg.n_unmatched, 0),
        "seed": (cfg.seed, 0)})
    if cfg.slate_size > cfg.n_streams:
        problems.append(Problem("event simulation", f"slate_size {cfg.slate_size} exceeds n_streams {cfg.n_streams}"))
    for name in ("duplicate_share", "late_share", "missing_stop_share", "no_impression_id_share"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            problems.append(Problem("event simulation", f"{name} must lie in [0, 1)"))
    raise_if_any(problems)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _click_prob(quality: np.ndarray, log_activity: np.ndarray, degraded: np.ndarray) -> np.ndarray:
    logit = -2.0 + 0.5 * quality + 0.3 * log_activity + np.where(degraded & (quality > 0), DEGRADE_LOGIT, 0.0)
    return 1.0 / (1.0 + np.exp(-logit))


def recorded_click_share() -> float:
    """P(a click is recorded | the viewer clicks): its delay falls inside the 30 s window and it is
    not late. Delays are round(Exp(8 s)), plus 31 s for the slow share."""
    in_window = 1.0 - math.exp(-(WINDOWS_S["click"] + 0.5) / CLICK_DELAY_MEAN_S)
    return (1.0 - SLOW_CLICK_SHARE) * in_window


def simulate_events(config: EventSimulationConfig = EventSimulationConfig()) -> EventSimulation:
    """Simulate impressions and their interaction events, inject the noise, and compute the exact
    feedback table and tracking counts (module docstring)."""
    _validate(config)
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    n, k = cfg.n_impressions, cfg.slate_size

    # --- world -------------------------------------------------------------------------------
    activity = np.exp(rng.normal(0.0, 0.6, cfg.n_users))
    device = rng.choice(len(DEVICES), size=cfg.n_users, p=[0.55, 0.3, 0.15])
    quality = rng.normal(0.0, 1.0, cfg.n_streams)
    popularity = rng.pareto(1.5, cfg.n_streams) + 1.0

    # --- impressions: time, viewer, slate, logged stream -----------------------------------------
    hour_p = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()
    day = rng.integers(0, cfg.n_days, n)
    hour = rng.choice(24, size=n, p=hour_p)
    second = rng.integers(0, 3600, n)
    ts = START_US + day * DAY_US + hour * 3600 * S + second * S + rng.integers(0, S, n)
    order = np.argsort(ts, kind="stable")
    ts, day = ts[order], day[order]
    user = rng.choice(cfg.n_users, size=n, p=activity / activity.sum())
    slates = np.argsort(rng.random((n, cfg.n_streams)), axis=1)[:, :k]      # k distinct streams
    log_probs = (1 - LOG_EPSILON) * _softmax(0.8 * np.log(popularity[slates])) + LOG_EPSILON / k
    cand_probs = (1 - CAND_EPSILON) * _softmax(1.5 * quality[slates]) + CAND_EPSILON / k
    slot = (rng.random(n)[:, None] > np.cumsum(log_probs, axis=1)).sum(axis=1).clip(0, k - 1)
    rows = np.arange(n)
    stream = slates[rows, slot]
    propensity = log_probs[rows, slot]
    impression_id = np.arange(n, dtype=np.int64) + 1_000_000
    degraded_day = np.zeros(n, bool) if cfg.degrade_after_day is None else day >= cfg.degrade_after_day

    # --- interactions (offsets in whole seconds after the impression) --------------------------
    log_act = np.log(activity[user])
    p_click = _click_prob(quality[stream], log_act, degraded_day)
    clicked = rng.random(n) < p_click
    delay = np.round(rng.exponential(CLICK_DELAY_MEAN_S, n)).astype(np.int64)
    delay += np.where(rng.random(n) < SLOW_CLICK_SHARE, WINDOWS_S["click"] + 1, 0)
    start = delay + 1
    duration = np.clip(np.round(np.exp(rng.normal(math.log(150.0), 1.2, n))), 1, 5 * 3600).astype(np.int64)
    stop_kind = rng.random(n)
    has_stop = stop_kind >= cfg.missing_stop_share
    stop_type = np.where(stop_kind >= cfg.missing_stop_share + 0.1, "watch_stop", "exit")
    n_gifts = np.where(rng.random(n) < 0.06 * np.sqrt(activity[user]), rng.integers(1, 3, n), 0)
    follows = rng.random(n) < 0.03

    ev_imp, ev_type, ev_off, ev_value = [], [], [], []

    def add(idx, kind, offsets, values=None):
        ev_imp.append(idx)
        ev_type.append(np.full(idx.size, kind, dtype=object) if isinstance(kind, str) else kind)
        ev_off.append(offsets)
        ev_value.append(np.full(idx.size, np.nan) if values is None else values)

    c = np.flatnonzero(clicked)
    add(c, "click", delay[c])
    add(c, "watch_start", start[c])
    s_idx = c[has_stop[c]]
    add(s_idx, stop_type[s_idx], start[s_idx] + duration[s_idx])
    beats = duration[c] // HEARTBEAT_S
    hb_imp = np.repeat(c, beats)
    hb_k = np.arange(hb_imp.size) - np.repeat(np.cumsum(beats) - beats, beats) + 1
    add(hb_imp, "heartbeat", start[hb_imp] + hb_k * HEARTBEAT_S)
    g_imp = np.repeat(c, n_gifts[c])
    g_off = start[g_imp] + (rng.random(g_imp.size) * duration[g_imp]).astype(np.int64)
    g_off = g_off + np.where(rng.random(g_imp.size) < 0.05, 5 * 3600, 0)       # a few outside the window
    add(g_imp, "gift", g_off, rng.integers(1, 100, g_imp.size).astype(np.float64))  # whole coins: sums exact
    f_imp = c[follows[c]]
    add(f_imp, "follow", start[f_imp] + (rng.random(f_imp.size) * duration[f_imp]).astype(np.int64))

    imp_of = np.concatenate(ev_imp)
    kind = np.concatenate(ev_type).astype(object)
    ev_ts = ts[imp_of] + np.concatenate(ev_off) * S
    value = np.concatenate(ev_value)
    m = imp_of.size
    received = ev_ts + np.round(rng.exponential(5.0, m) * S).astype(np.int64)
    late = rng.random(m) < cfg.late_share
    # late: arrives after its impression's row was closed (impression + longest window + lateness)
    close = ts[imp_of] + (max(WINDOWS_S.values()) + LATENESS_S) * S
    received = np.where(late, np.maximum(close, ev_ts) + rng.integers(60, 3 * 3600, m) * S, received)
    late = received > close     # also the few on-time sends of events hours after their impression

    # an event may carry no impression id only where (user, stream, time) finds its impression:
    # the latest impression of that viewer and stream at or before the event (docs/events.md)
    key = user.astype(np.int64) * cfg.n_streams + stream
    by_key = np.lexsort((ts, key))
    next_ts = np.full(n, np.iinfo(np.int64).max)
    same = key[by_key][1:] == key[by_key][:-1]
    next_ts[by_key[:-1][same]] = ts[by_key[1:][same]]
    anonymous = (rng.random(m) < cfg.no_impression_id_share) & (ev_ts < next_ts[imp_of])

    # --- the exact feedback (clean, on-time events only; noise added below is dropped by design) --
    feedback = _expected_feedback(cfg, impression_id, ts, user, stream, propensity, activity, device,
                                  quality, imp_of, kind, ev_ts, value, late)

    # --- assemble the raw event table ---------------------------------------------------------
    imp_frame = pd.DataFrame({
        "event_id": np.arange(n, dtype=np.int64),
        "type": "impression", "timestamp": ts, "received_at": ts + S,
        "impression_id": impression_id, "user_id": user.astype(np.int64), "stream": stream.astype(np.int64),
        "position": np.zeros(n, np.int64), "propensity": propensity, "policy": "production",
        "value": np.nan,
        "x_activity": activity[user], "x_device": np.array(DEVICES, dtype=object)[device[user]],
        "a_quality": quality[stream]})
    ev_frame = pd.DataFrame({
        "event_id": n + np.arange(m, dtype=np.int64),
        "type": kind, "timestamp": ev_ts, "received_at": received,
        "impression_id": pd.array(np.where(anonymous, 0, impression_id[imp_of]), dtype="Int64"),
        "user_id": user[imp_of].astype(np.int64), "stream": stream[imp_of].astype(np.int64),
        "value": value})
    ev_frame.loc[anonymous, "impression_id"] = pd.NA
    # unmatched: ids of impressions the tracker never logged, and (viewer, stream) pairs never shown
    u = cfg.n_unmatched
    half = u // 2
    unmatched_ts = START_US + rng.integers(0, cfg.n_days * DAY_US, u)
    unmatched = pd.DataFrame({
        "event_id": n + m + np.arange(u, dtype=np.int64),
        "type": rng.choice(np.array(["click", "gift", "heartbeat"], dtype=object), u),
        "timestamp": unmatched_ts, "received_at": unmatched_ts + S,
        "impression_id": pd.array(np.r_[impression_id[-1] + 1 + np.arange(half), np.full(u - half, -1)],
                                  dtype="Int64"),
        "user_id": rng.integers(0, cfg.n_users, u).astype(np.int64),
        "stream": np.full(u, cfg.n_streams + 7, np.int64),     # a stream no impression shows
        "value": np.full(u, 5.0)})
    unmatched.loc[unmatched.index >= half, "impression_id"] = pd.NA
    events = pd.concat([imp_frame, ev_frame, unmatched], ignore_index=True)
    events["position"] = events["position"].astype("Int64")    # null on interaction rows
    dup = np.flatnonzero(rng.random(len(events)) < cfg.duplicate_share)
    copies = events.iloc[dup].copy()
    # a client's retry: the same event again, received a little later (the first copy is kept)
    copies["received_at"] = copies["received_at"].to_numpy() + rng.integers(1, 120, dup.size) * S
    events = pd.concat([events, copies], ignore_index=True)
    events = events.iloc[rng.permutation(len(events))].reset_index(drop=True)     # out of order
    for col in ("timestamp", "received_at"):
        events[col] = pd.to_datetime(events[col].to_numpy().astype("datetime64[us]")).tz_localize("UTC")

    late_kept = int(np.count_nonzero(late))
    counts = {"events_in": int(len(events)), "duplicates": int(dup.size), "late": late_kept,
              "unmatched": int(u), "impressions": int(n), "rows_out": int(n)}
    policy = pd.DataFrame({"decision_id": np.repeat(impression_id, k), "action": slates.reshape(-1).astype(np.int64),
                           "prob": cand_probs.reshape(-1)})
    truth = _truth(cfg, day, slates, log_probs, cand_probs, quality, log_act)
    return EventSimulation(config=cfg, events=events, feedback=feedback, policy=policy, truth=truth, counts=counts)


def _expected_feedback(cfg, impression_id, ts, user, stream, propensity, activity, device, quality,
                       imp_of, kind, ev_ts, value, late) -> pd.DataFrame:
    """docs/events.md's rules applied with pandas to the clean events (no duplicates, no strays):
    late events dropped, each type kept inside its window, watch time from start to stop (or exit),
    else to the last heartbeat capped at MISSING_STOP_CAP_S; sessions split by a 30-minute gap."""
    n = impression_id.size
    ev = pd.DataFrame({"imp": imp_of, "type": kind, "off": ev_ts - ts[imp_of], "ts": ev_ts, "value": value})
    ev = ev[~late]
    group = ev["type"].map({"click": "click", "gift": "gift", "follow": "follow"}).fillna("watch")
    ev = ev[(ev["off"] >= 0) & (ev["off"] <= group.map(WINDOWS_S) * S)]
    click = np.zeros(n, np.int64)
    click[ev.loc[ev["type"] == "click", "imp"].unique()] = 1
    follow = np.zeros(n, np.int64)
    follow[ev.loc[ev["type"] == "follow", "imp"].unique()] = 1
    gift = np.zeros(n)
    g = ev[ev["type"] == "gift"].groupby("imp")["value"].sum()
    gift[g.index.to_numpy()] = g.to_numpy()
    starts = ev[ev["type"] == "watch_start"].groupby("imp")["ts"].min()
    watch = np.zeros(n)
    w = ev.join(starts.rename("start"), on="imp", how="inner")
    w = w[w["ts"] >= w["start"]]
    stops = w[w["type"].isin(["watch_stop", "exit"])].groupby("imp")["ts"].min()
    beats = w[w["type"] == "heartbeat"].groupby("imp")["ts"].max()
    st = starts.to_frame("start").join(stops.rename("stop")).join(beats.rename("beat"))
    seconds = np.where(st["stop"].notna(), (st["stop"] - st["start"]) / S,
                       np.minimum(((st["beat"].fillna(st["start"]) - st["start"]) / S), MISSING_STOP_CAP_S))
    watch[st.index.to_numpy()] = seconds
    # sessions: a new one after more than SESSION_GAP_S without an impression of the viewer
    frame = pd.DataFrame({"decision_id": impression_id, "position": np.zeros(n, np.int64), "timestamp": ts,
                          "user_id": user.astype(np.int64), "action": stream.astype(np.int64),
                          "propensity": propensity, "policy": "production", "click": click,
                          "watch_seconds": watch, "gift_value": gift, "follow": follow,
                          "x_activity": activity[user], "x_device": np.array(DEVICES, dtype=object)[device[user]],
                          "a_quality": quality[stream]})
    frame = frame.sort_values(["user_id", "timestamp", "decision_id"], kind="stable")
    gap = frame.groupby("user_id")["timestamp"].diff()
    new = (gap.isna() | (gap > SESSION_GAP_S * S)).astype(np.int64)
    frame["_ordinal"] = new.groupby(frame["user_id"]).cumsum()
    frame["session_id"] = frame.groupby(["user_id", "_ordinal"], sort=True).ngroup().astype(np.int64)
    frame["step"] = frame.groupby("session_id").cumcount().astype(np.int64)
    frame = frame.drop(columns="_ordinal").sort_values(["timestamp", "decision_id", "position"], kind="stable")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"].to_numpy().astype("datetime64[us]")).tz_localize("UTC")
    return frame[FEEDBACK_COLUMNS].reset_index(drop=True)


FEEDBACK_COLUMNS = ["decision_id", "position", "timestamp", "user_id", "session_id", "step", "action", "propensity",
                    "policy", "click", "watch_seconds", "gift_value", "follow", "x_activity", "x_device", "a_quality"]


def _truth(cfg, day, slates, log_probs, cand_probs, quality, log_act) -> dict:
    """Exact expected recorded click rate per day under logging and candidate, conditional on the
    simulated impressions and slates (the late share and the click window scale it)."""
    share = recorded_click_share() * (1 - cfg.late_share)
    degraded = np.zeros(day.size, bool) if cfg.degrade_after_day is None else day >= cfg.degrade_after_day
    p = _click_prob(quality[slates], log_act[:, None], degraded[:, None]) * share
    v_log = (log_probs * p).sum(axis=1)
    v_cand = (cand_probs * p).sum(axis=1)
    days = []
    for d in range(cfg.n_days):
        mask = day == d
        days.append({"day": str(np.datetime64(START_US + d * DAY_US, "us").astype("datetime64[D]")),
                     "n": int(mask.sum()), "logging": float(v_log[mask].mean()), "candidate": float(v_cand[mask].mean()),
                     "difference": float((v_cand - v_log)[mask].mean())})
    return {"schema": TRUTH_SCHEMA, "seed": cfg.seed, "config": asdict(cfg),
            "generator": f"livegate {__version__} datasets.event_simulator",
            "metric": "click",
            "definition": "expected recorded click rate (click within 30 s, not late) per impression, mean over the "
                          "day's simulated impressions of sum over the slate of pi(a|x) E[click|x,a]",
            "degrade_after_day": cfg.degrade_after_day, "days": days}


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, compression="zstd")
    return buffer.getvalue()


def write_event_simulation(sim: EventSimulation, out_dir) -> dict[str, pathlib.Path]:
    """Write events.parquet, feedback.parquet (the exact table track must build), policies/candidate.parquet
    and truth.json (with the tracking counts), all at once and atomically."""
    from .io import dumps_json, write_all_atomic
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(Problem(str(out), "exists and is not a directory", fix="choose a directory for --out"))
    truth = {**sim.truth, "tracking_counts": sim.counts}
    items = [(out / "events.parquet", _parquet(sim.events), "--out"),
             (out / "feedback.parquet", _parquet(sim.feedback), "--out"),
             (out / "policies" / "candidate.parquet", _parquet(sim.policy), "--out"),
             (out / "truth.json", dumps_json(truth), "--out")]
    paths = write_all_atomic(items)
    return dict(zip(["events", "feedback", "policies/candidate", "truth"], paths))


# ================================================================================================
# a simulated rollout for `monitor`: contract logs directly, many seeds per second
# ================================================================================================

ROLLOUT_LOGGING = np.array([0.35, 0.25, 0.2, 0.1, 0.1])     # production's context-free distribution
ROLLOUT_CANDIDATE = np.array([0.1, 0.1, 0.2, 0.25, 0.35])   # the candidate favours streams 3 and 4
ROLLOUT_CLICK = 0.1                                         # every stream's click rate before any change


@dataclass(frozen=True)
class RolloutConfig:
    """A rollout monitored daily. Before the change every stream has click rate 0.1, so the candidate's
    difference to production is exactly 0; from the day after `degrade_after_day` the candidate's
    favourite streams (3, 4) lose `drop` of click rate: the difference becomes -0.4 * drop. From
    the day after `context_shift_after_day`, 'ios' viewers go from 30% to 60% of the traffic."""

    n_days: int = 14
    rows_per_day: int = 2_000
    degrade_after_day: int | None = None
    drop: float = 0.06
    context_shift_after_day: int | None = None
    seed: int = 0


def rollout_true_difference(cfg: RolloutConfig, day: int) -> float:
    """Exact candidate-minus-production click rate on (0-based) `day`."""
    if cfg.degrade_after_day is None or day < cfg.degrade_after_day:
        return 0.0
    return -float((ROLLOUT_CANDIDATE - ROLLOUT_LOGGING)[3:].sum() * cfg.drop)


def _rollout_arrays(cfg: RolloutConfig) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_days * cfg.rows_per_day
    day = np.repeat(np.arange(cfg.n_days), cfg.rows_per_day)
    action = rng.choice(ROLLOUT_LOGGING.size, size=n, p=ROLLOUT_LOGGING)
    rate = np.full(n, ROLLOUT_CLICK)
    if cfg.degrade_after_day is not None:
        rate = np.where((day >= cfg.degrade_after_day) & (action >= 3), ROLLOUT_CLICK - cfg.drop, rate)
    click = (rng.random(n) < rate).astype(np.int64)
    return {"day": day, "action": action, "click": click, "rng": rng}


def rollout_terms(cfg: RolloutConfig = RolloutConfig()) -> tuple[np.ndarray, np.ndarray]:
    """The per-row IPS difference terms (w_candidate - 1) * click of `simulate_rollout` and each row's
    day, without building the table (for Monte-Carlo checks of the monitor over many seeds)."""
    a = _rollout_arrays(cfg)
    weight = ROLLOUT_CANDIDATE[a["action"]] / ROLLOUT_LOGGING[a["action"]]
    return (weight - 1.0) * a["click"], a["day"]


def simulate_rollout(cfg: RolloutConfig = RolloutConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contract logs (decision_id, timestamp, action, propensity, click, x_device, x_hour) of a rollout
    and the candidate as a context-free policy (action, prob)."""
    a = _rollout_arrays(cfg)
    rng, day, action = a["rng"], a["day"], a["action"]
    n = day.size
    ts = START_US + day * DAY_US + np.sort(rng.integers(0, DAY_US, n).reshape(cfg.n_days, -1), axis=1).reshape(-1)
    shifted = np.zeros(n, bool) if cfg.context_shift_after_day is None else day >= cfg.context_shift_after_day
    ios = rng.random(n) < np.where(shifted, 0.6, 0.3)
    device = np.where(ios, "ios", np.where(rng.random(n) < 0.7, "android", "web"))
    logs = pd.DataFrame({
        "decision_id": np.arange(n, dtype=np.int64),
        "timestamp": pd.to_datetime(ts.astype("datetime64[us]")).tz_localize("UTC"),
        "action": action.astype(np.int64), "propensity": ROLLOUT_LOGGING[action], "click": a["click"],
        "x_device": device, "x_hour": ((ts // (3600 * S)) % 24).astype(np.int64)})
    policy = pd.DataFrame({"action": np.arange(ROLLOUT_CANDIDATE.size, dtype=np.int64), "prob": ROLLOUT_CANDIDATE})
    return logs, policy
