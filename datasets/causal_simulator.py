"""Confounded live-stream logs with a known causal effect of a binary recommendation.

The logging policy recommends popular streams to active viewers at prime time, and those viewers
would watch a lot anyway: a naive comparison of recommended and not-recommended rows credits the
recommendation with what activity, popularity and the hour did. The simulator knows the structural
expectations, so the true effects are exact (conditional on the simulated covariates):

* ``watch_seconds``: heterogeneous effect ``tau(x) = 20 + 25*new - 15*popularity + 12*prime_time``
  seconds (larger for new viewers, less popular streamers and prime time; negative for returning
  viewers of the most popular streams outside prime time, who would have found them anyway), on a heavy-tailed
  multiplicative Gamma noise: ``Y = (mu0(x) + T*tau(x)) * G`` with ``E[G] = 1``;
* ``gift_value``: zero-inflated; the recommendation raises the gifting log-odds by 0.6;
* ``click_placebo``: depends on the confounders only, so its true effect is exactly zero.

Two options make the problem harder, as real observational data can be:

* ``overlap="poor"``: a sharper logging policy, ``logit' = 2 * logit - 2.5`` with propensities kept in
  [0.005, 0.95], so that about 4 in 10 untreated rows had a propensity below 0.02 (viewers the policy
  would almost never have recommended to) while no treated row is above 0.95; the treated are a
  quarter of the rows and unlike most of the untreated, as in a comparison of programme participants
  with a general-population control group. The effect on the treated is then what the data support;
  the effects on all rows and on the untreated rest on a few heavily weighted treated rows.
* ``activity_effect=h``: the watch-time effect also varies with viewer activity, the strongest driver of
  the recommendation, by ``|h| + h * tanh(x_activity)`` (between 0 and 2|h|, rising with activity for
  h > 0, falling for h < 0): the treated, untreated and overlap populations then have clearly different
  average effects, and a linear effect model in the default effect modifiers (which leave activity
  out) is misspecified.

``truth["estimands"]`` holds, per outcome, the exact average effect on all rows (``ate``), on the
treated (``att``), on the untreated (``atc``) and on the overlap population (``ato``, the rows weighted
by e(1 - e) with the true propensity e, Li, Morgan & Zaslavsky 2018), at the simulated covariates
and treatments.

Columns: ``decision_id``, ``recommended`` (int 0/1), ``action`` (= recommended), ``propensity``
(true probability of the logged treatment), confounders ``x_activity``, ``x_hour``,
``x_prime_time`` (bool), ``x_popularity``, ``x_is_new`` (bool), ``x_device`` (string) and the three
outcomes. Segment truths use the same segment definitions as ``causal.segments`` (booleans by value,
continuous columns by tertile tiers ``low`` / ``mid`` / ``high``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .io import dumps_json, write_atomic

TREATMENT = "recommended"
OUTCOMES = ("watch_seconds", "gift_value", "click_placebo")
CONFOUNDERS = ("x_activity", "x_hour", "x_prime_time", "x_popularity", "x_is_new", "x_device")
DEVICES = np.array(["android", "ios", "web"])
_DEVICE_P = np.array([0.55, 0.30, 0.15])
_PROPENSITY_CLIP = (0.03, 0.97)
#: overlap="poor": the logging logit is sharpened and shifted, propensities kept in these bounds
_POOR_LOGIT = (2.0, -2.5)
_POOR_CLIP = (0.01, 0.95)
OVERLAPS = ("moderate", "poor")
_GAMMA_SHAPE = 2.5  # multiplicative watch-time noise: mean 1, coefficient of variation 0.63


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def watch_effect(is_new, popularity, prime_time, activity=None, activity_effect: float = 0.0) -> np.ndarray:
    """True conditional effect of the recommendation on expected watch seconds (``activity`` is
    needed when ``activity_effect`` is not 0: the ``activity_effect`` option of ``simulate_causal``)."""
    tau = (20.0 + 25.0 * np.asarray(is_new, float) - 15.0 * np.asarray(popularity, float)
           + 12.0 * np.asarray(prime_time, float))
    if activity_effect:
        # between 0 and 2|h|: never negative, so expected watch time stays positive
        tau = tau + abs(activity_effect) + activity_effect * np.tanh(np.asarray(activity, float))
    return tau


def _estimands(effect: np.ndarray, treated: np.ndarray, p_treat: np.ndarray) -> dict[str, float]:
    """Exact average effects on all rows, the treated, the untreated and the overlap population."""
    h = p_treat * (1.0 - p_treat)
    return {"ate": float(effect.mean()), "att": float(effect[treated].mean()), "atc": float(effect[~treated].mean()),
            "ato": float(np.sum(h * effect) / np.sum(h))}


def _tiers(values: np.ndarray) -> dict[str, np.ndarray]:
    """Tertile tiers, the rule of causal.segments: low < q(1/3) <= mid < q(2/3) <= high."""
    q1, q2 = np.quantile(values, [1 / 3, 2 / 3])
    return {"low": values < q1, "mid": (values >= q1) & (values < q2), "high": values >= q2}


def simulate_causal(n_rows: int = 100_000, seed: int = 0, *, overlap: str = "moderate",
                    activity_effect: float = 0.0) -> tuple[pd.DataFrame, dict]:
    """Simulate confounded recommendation logs; return ``(logs, truth)``.

    ``truth`` holds the exact average effect per outcome, overall and per segment, computed from
    the structural expectations at the simulated covariates (a conditional ATE, the estimand that
    a cross-sectional estimator targets), the exact ATE, ATT, ATC and ATO (``estimands``), plus the
    naive difference in means for reference. ``overlap`` and ``activity_effect``: module docstring
    (the defaults reproduce the logs of earlier versions draw for draw).
    """
    if int(n_rows) < 10:
        raise ValueError("n_rows must be at least 10")
    if overlap not in OVERLAPS:
        raise ValueError(f"overlap must be one of {', '.join(OVERLAPS)}, got {overlap!r}")
    if not np.isfinite(activity_effect):
        raise ValueError(f"activity_effect must be a finite number, got {activity_effect!r}")
    n = int(n_rows)
    rng = np.random.default_rng(seed)

    is_new = rng.random(n) < 0.25
    activity = np.clip(rng.normal(0.0, 1.0, n) - 0.7 * is_new, -4.0, 4.0)
    hour_weights = np.ones(24)
    hour_weights[12:19] += 0.5
    hour_weights[19:24] += 1.5
    hour = rng.choice(24, size=n, p=hour_weights / hour_weights.sum())
    prime = (hour >= 19) & (hour <= 23)
    popularity = np.clip(0.3 * prime + 0.95 * rng.normal(0.0, 1.0, n), -2.5, 2.5)
    device_idx = rng.choice(3, size=n, p=_DEVICE_P)
    device = DEVICES[device_idx]

    # Logging policy: recommends to active viewers, popular streams, prime time; less to new viewers.
    dev_t = np.array([0.0, 0.25, -0.4])[device_idx]
    logit = (-0.3 + 1.0 * activity + 0.8 * popularity + 0.7 * prime - 0.5 * is_new + dev_t
             + 0.1 * np.sin(2 * np.pi * hour / 24))
    if overlap == "poor":
        scale, shift = _POOR_LOGIT
        p_treat = np.clip(_sigmoid(scale * logit + shift), *_POOR_CLIP)
    else:
        p_treat = np.clip(_sigmoid(logit), *_PROPENSITY_CLIP)
    treated = (rng.random(n) < p_treat).astype(np.int64)

    # Watch seconds: baseline mu0 driven by the same confounders, heterogeneous effect tau.
    dev_y = np.array([0.0, 0.1, -0.2])[device_idx]
    mu0 = 80.0 * np.exp(0.45 * activity + 0.3 * popularity + 0.25 * prime - 0.15 * is_new + dev_y
                        + 0.05 * np.cos(2 * np.pi * hour / 24))
    tau = watch_effect(is_new, popularity, prime, activity, activity_effect)
    noise = rng.gamma(_GAMMA_SHAPE, 1.0 / _GAMMA_SHAPE, n)
    watch = (mu0 + treated * tau) * noise  # mu0 >= 21.8 > -min(tau) = 17.5 (activity term >= 0): never negative

    # Gifts: zero-inflated; recommendation raises the gifting log-odds by 0.6.
    gift_logit = -3.0 + 0.5 * activity + 0.3 * popularity
    amount_mean = 5.0 * np.exp(0.3 * popularity)
    q0, q1 = _sigmoid(gift_logit), _sigmoid(gift_logit + 0.6)
    gives = rng.random(n) < np.where(treated == 1, q1, q0)
    gift = gives * rng.exponential(1.0, n) * amount_mean
    gift_effect = (q1 - q0) * amount_mean

    # Placebo outcome: confounders only, no effect of the recommendation.
    click = (rng.random(n) < _sigmoid(-1.0 + 0.6 * activity + 0.4 * popularity + 0.3 * prime)).astype(np.int64)

    logs = pd.DataFrame({
        "decision_id": np.arange(n, dtype=np.int64),
        TREATMENT: treated,
        "action": treated.copy(),
        "propensity": np.where(treated == 1, p_treat, 1.0 - p_treat),
        "x_activity": activity,
        "x_hour": hour.astype(np.int64),
        "x_prime_time": prime,
        "x_popularity": popularity,
        "x_is_new": is_new,
        "x_device": pd.array(device, dtype="str"),
        "watch_seconds": watch,
        "gift_value": gift,
        "click_placebo": click,
    })

    effects = {"watch_seconds": tau, "gift_value": gift_effect, "click_placebo": np.zeros(n)}
    observed = {"watch_seconds": watch, "gift_value": gift, "click_placebo": click.astype(float)}
    masks = {"x_is_new=true": is_new, "x_is_new=false": ~is_new,
             **{f"x_popularity={k}": v for k, v in _tiers(popularity).items()},
             "x_prime_time=true": prime, "x_prime_time=false": ~prime}
    t1 = treated == 1
    truth = {
        "schema": "livegate.causal_truth/1",
        "seed": int(seed),
        "n_rows": n,
        "treatment": TREATMENT,
        "confounders": list(CONFOUNDERS),
        "effect_modifiers": ["x_is_new", "x_popularity", "x_prime_time"],
        "watch_effect_formula": "tau(x) = 20 + 25*x_is_new - 15*x_popularity + 12*x_prime_time"
                                + (f" + {abs(activity_effect):g} + {activity_effect:g}*tanh(x_activity)"
                                   if activity_effect else ""),
        "overlap": overlap,
        "activity_effect": float(activity_effect),
        "ate": {k: float(v.mean()) for k, v in effects.items()},
        "estimands": {k: _estimands(v, t1, p_treat) for k, v in effects.items()},
        "naive": {k: float(y[t1].mean() - y[~t1].mean()) for k, y in observed.items()},
        "segments": {k: {seg: {"n": int(m.sum()), "value": float(v[m].mean())} for seg, m in masks.items()}
                     for k, v in effects.items()},
        "treated_share": float(t1.mean()),
        "propensity_range": [float(p_treat.min()), float(p_treat.max())],
        "share_outside_overlap": float(np.mean((p_treat < 0.02) | (p_treat > 0.98))),
    }
    return logs, truth


def write_causal_simulation(out_dir: str | os.PathLike, n_rows: int = 100_000, seed: int = 0, *,
                            overlap: str = "moderate", activity_effect: float = 0.0) -> dict[str, Path]:
    """Write ``logs.parquet`` and ``truth.json`` into ``out_dir`` (each atomically)."""
    import io

    logs, truth = simulate_causal(n_rows, seed, overlap=overlap, activity_effect=activity_effect)
    out = Path(out_dir)
    buffer = io.BytesIO()
    logs.to_parquet(buffer, index=False)
    paths = {"logs": write_atomic(out / "logs.parquet", buffer.getvalue()),
             "truth": write_atomic(out / "truth.json", dumps_json(truth))}
    return paths


__all__ = ["simulate_causal", "write_causal_simulation", "watch_effect", "TREATMENT", "OUTCOMES", "CONFOUNDERS",
           "OVERLAPS"]
