"""Monitoring after a rollout: anytime-valid confidence sequences for the paired difference, and drift checks.

A dashboard that looks at a fixed-sample 95% interval every day raises a false alarm far more often
than 5% of the time: each look is another chance to cross. A confidence sequence (CS) covers the
parameter at every time at once, so it may be looked at after every row, and stopping at the first
alarm keeps the error rate (Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Ann. Statist. 49(2); Ville's inequality applied to a mixture
supermartingale).

What is monitored, per candidate and metric: the per-row IPS difference to the baseline,
d_i = (w_cand,i - w_base,i) r_i with w = pi(a_i | x_i) / propensity_i (w_base = 1 for the logging
policy). With the logged propensity of each row, E[d_i | past] is the difference of the two
policies' values at that row's context even when the logging policy adapts over time: the terms
centred at their conditional means are martingale differences (Waudby-Smith, Wu, Ramdas,
Karampatziakis & Mineiro 2022, "Anytime-valid off-policy inference for contextual bandits"), and a
CS for their running mean covers the running average of the difference.

The boundary is the asymptotic CS of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2024),
"Time-uniform central limit theory and asymptotic confidence sequences", Ann. Statist. 52(6),
Theorem 2.2: mean_t +- sigma_t * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha)),
the two-sided normal-mixture (Robbins) boundary with the running standard deviation; rho is the
value that makes it tightest at t* rows (their eq. for rho*). It needs no bound on the terms, which
importance weights rarely have, at the price of holding asymptotically (a few hundred rows before
its first use are required by `min_rows`).

Regressions that begin mid-rollout: the running mean since the start dilutes a change on day 5 with
four good days. So a CS is also started at the beginning of every window j, at level
alpha / (j (j + 1)) (j = 1, 2, ...; these sum to alpha): a union bound over this countable family
keeps the probability of any false alarm at most alpha when the difference is never below the margin.

Drift checks compare each window with the first one: the population stability index (PSI) of every
context column and of the logging propensities, and a two-sample z test of every reward's mean.
PSI = sum_b (p_b - q_b) log(p_b / q_b) over reference-decile bins (or categories); 0.1 is commonly
read as a moderate and 0.25 as a major shift (Yurdakul 2018, "Statistical properties of population
stability index", thesis, Western Michigan University). Drift alerts are advice: they do not change
the exit code.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from livegate.datasets.errors import InputError, Problem

SCHEMA = "livegate.monitor/1"
EXIT_HEALTHY, EXIT_REGRESSION, EXIT_UNDECIDED = 0, 1, 3
PSI_ALERT = 0.25
PSI_NOTE = 0.1
MAX_WINDOWS = 1000
US = 1_000_000


@dataclass(frozen=True)
class MonitorConfig:
    every: float = 86_400.0                 # window width in seconds
    alpha: float = 0.05                     # overall false-alarm rate, split over (candidate, metric) streams
    margins: Mapping[str, float] = field(default_factory=dict)   # metric -> tolerated loss (>= 0)
    baseline: str = "logging"
    min_rows: int = 200                     # rows a CS needs before it may decide
    t_star: int | None = None               # rows where the CS is tightest; None: 2 x the first window's rows
    restarts: bool = True                   # also start a CS at every window (detects mid-rollout changes)
    seed: int = 0

    def validate(self) -> None:
        problems = []
        if not 0 < self.alpha < 1:
            problems.append(Problem("--alpha", f"must lie in (0, 1), got {self.alpha}"))
        if not self.every > 0:
            problems.append(Problem("--every", "must be a positive duration"))
        for metric, margin in self.margins.items():
            if not (math.isfinite(margin) and margin >= 0):
                problems.append(Problem("--margin", f"'{metric}': the tolerated loss must be a number >= 0"))
        if self.min_rows < 2:
            problems.append(Problem("--min-rows", "must be at least 2"))
        if problems:
            raise InputError(problems)


# --- the boundary ------------------------------------------------------------------------------

def rho_for(t_star: float, alpha: float) -> float:
    """The mixture parameter making the asymptotic CS tightest at t* rows (Waudby-Smith et al. 2024,
    Sec. 2: rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / t*)."""
    c = -2.0 * math.log(alpha)
    return math.sqrt((c + math.log(c + 1.0)) / max(float(t_star), 1.0))


def cs_radius(n, sd, alpha, rho: float):
    """Half-width of the two-sided asymptotic CS after n rows with running standard deviation sd
    (Waudby-Smith et al. 2024, Theorem 2.2). Vectorised over n, sd and alpha."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        tr = n * rho * rho
        radius = np.asarray(sd) * np.sqrt(2.0 * (tr + 1.0) / (n * n * rho * rho) * np.log(np.sqrt(tr + 1.0) / alpha))
    return np.where(n > 1, radius, np.inf)


def sequential_test(d: np.ndarray, window: np.ndarray, n_windows: int, alpha: float, margin: float = 0.0,
                    min_rows: int = 200, t_star: float | None = None, restarts: bool = True) -> dict:
    """Anytime-valid monitoring of the mean of `d` (rows in time order; `window` their window index,
    0..n_windows-1, non-decreasing), looked at after every window.

    Returns per look: the cumulative estimate and CS; the tightest upper bound among the CSs started
    at each window (level alpha_j = alpha/(j(j+1)) for the one started at window j = 1, 2, ...), and
    the first look at which a CS lies wholly below -margin (the alarm). The cumulative CS is the one
    started at window 1 (alpha/2) when `restarts`, else at level alpha."""
    d = np.asarray(d, dtype=float)
    cnt = np.bincount(window, minlength=n_windows).astype(float)
    s1 = np.bincount(window, weights=d, minlength=n_windows)
    s2 = np.bincount(window, weights=d * d, minlength=n_windows)
    c_n, c_1, c_2 = (np.concatenate([[0.0], np.cumsum(a)]) for a in (cnt, s1, s2))
    if t_star is None:
        first = cnt[cnt > 0]
        t_star = 2.0 * (first[0] if first.size else 1.0)
    rho = rho_for(t_star, alpha)
    starts = np.arange(n_windows) if restarts else np.array([0])
    level = alpha / ((starts + 1.0) * (starts + 2.0)) if restarts else np.array([alpha])
    # n, mean, sd of windows s..k for every start s (rows) and end k (columns); k < s is masked
    n = c_n[None, 1:] - c_n[starts][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (c_1[None, 1:] - c_1[starts][:, None]) / n
        var = ((c_2[None, 1:] - c_2[starts][:, None]) - n * mean * mean) / (n - 1)
    sd = np.sqrt(np.clip(var, 0.0, None))
    radius = cs_radius(n, sd, level[:, None], rho)
    valid = (np.arange(n_windows)[None, :] >= starts[:, None]) & (n >= min_rows)
    low = np.where(valid, mean - radius, -np.inf)
    high = np.where(valid, mean + radius, np.inf)
    best = np.argmin(high, axis=0)                    # the start whose CS reaches lowest, per look
    best_high = high[best, np.arange(n_windows)]
    alarm = best_high < -margin
    first = int(np.argmax(alarm)) if alarm.any() else None
    return {"n": n[0], "estimate": mean[0], "cs_low": low[0], "cs_high": high[0], "valid": valid[0],
            "best_high": best_high, "best_start": starts[best], "alarm": alarm, "first_alarm": first,
            "rho": rho, "t_star": float(t_star), "alpha_cumulative": float(level[0])}


def fixed_sample_alarms(d: np.ndarray, window: np.ndarray, n_windows: int, alpha: float, margin: float = 0.0,
                        min_rows: int = 200) -> np.ndarray:
    """What a dashboard does: a fixed-sample normal interval of the cumulative mean at each look.
    Returns the looks at which its upper bound is below -margin (for comparison only)."""
    from scipy.stats import norm
    cnt = np.cumsum(np.bincount(window, minlength=n_windows)).astype(float)
    s1 = np.cumsum(np.bincount(window, weights=d, minlength=n_windows))
    s2 = np.cumsum(np.bincount(window, weights=d * d, minlength=n_windows))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / cnt
        sd = np.sqrt(np.clip((s2 - cnt * mean * mean) / (cnt - 1), 0, None))
        high = mean + norm.ppf(1 - alpha / 2) * sd / np.sqrt(cnt)
    return (high < -margin) & (cnt >= min_rows)


# --- drift -------------------------------------------------------------------------------------

def psi(reference: np.ndarray, current: np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index of two histograms of counts (bins aligned)."""
    p = reference / max(reference.sum(), 1) + eps
    q = current / max(current.sum(), 1) + eps
    return float(np.sum((q - p) * np.log(q / p)))


def _numeric_bins(values: np.ndarray, ref_mask: np.ndarray) -> np.ndarray:
    """Bin index of every row by the reference window's deciles."""
    edges = np.unique(np.nanquantile(values[ref_mask], np.linspace(0.1, 0.9, 9)))   # NaN: a bin of its own
    return np.searchsorted(edges, values, side="right")


def _categorical_bins(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, codes = np.unique(values.astype(str), return_inverse=True)
    return codes, labels


def drift_checks(windows: np.ndarray, n_windows: int, labels: Sequence[str], context: "Mapping[str, np.ndarray]",
                 propensity: np.ndarray, rewards: Mapping[str, np.ndarray], alpha: float, min_rows: int) -> dict:
    """Each window against the reference (the first window with `min_rows` rows): PSI of every
    context column and of log propensity; a z test of every reward's mean (Bonferroni over windows
    and rewards, at level alpha). Returns checks and plain-language alerts."""
    from scipy.stats import norm
    counts = np.bincount(windows, minlength=n_windows)
    full = np.flatnonzero(counts >= min_rows)
    checks, alerts = [], []
    if full.size < 2:
        return {"reference": None, "checks": [], "alerts": [],
                "note": f"fewer than two windows with {min_rows} rows: nothing to compare"}
    ref = int(full[0])
    ref_mask = windows == ref
    later = [int(k) for k in full[1:]]
    features = {}
    flagged_columns: dict[str, int] = {}     # one alert per column: the first window that shifted
    for name, values in context.items():
        values = np.asarray(values)
        if values.dtype.kind in "fiu":
            features[name] = ("numeric", _numeric_bins(values.astype(float), ref_mask), None, values.astype(float))
        else:
            codes, cats = _categorical_bins(values)
            features[name] = ("categorical", codes, cats, None)
    logp = np.log(propensity)
    features["propensity"] = ("numeric", _numeric_bins(logp, ref_mask), None, propensity)
    for name, (kind, bins, cats, raw) in features.items():
        n_bins = int(bins.max()) + 1
        ref_hist = np.bincount(bins[ref_mask], minlength=n_bins).astype(float)
        for k in later:
            mask = windows == k
            hist = np.bincount(bins[mask], minlength=n_bins).astype(float)
            value = psi(ref_hist, hist)
            entry = {"kind": "propensity" if name == "propensity" else "context", "column": name,
                     "window": labels[k], "reference": labels[ref], "psi": value,
                     "level": "major" if value >= PSI_ALERT else "moderate" if value >= PSI_NOTE else "stable"}
            if kind == "numeric":
                entry.update(reference_mean=float(np.mean(raw[ref_mask])), mean=float(np.mean(raw[mask])))
                change = f"mean {entry['reference_mean']:.4g} -> {entry['mean']:.4g}"
            else:
                shares_ref, shares = ref_hist / ref_hist.sum(), hist / hist.sum()
                top = int(np.argmax(np.abs(shares - shares_ref)))
                entry.update(category=str(cats[top]), reference_share=float(shares_ref[top]), share=float(shares[top]))
                change = f"'{cats[top]}' {shares_ref[top]:.1%} -> {shares[top]:.1%} of the rows"
            checks.append(entry)
            if value >= PSI_ALERT and name not in flagged_columns:
                flagged_columns[name] = k
                if name == "propensity":
                    alerts.append(f"The logging policy's propensities shifted in the window of {labels[k]} compared "
                                  f"with {labels[ref]} ({change}; PSI {value:.2f}, above {PSI_ALERT} is a major shift): "
                                  "the logging policy changed. The logged propensities keep the estimates valid, but "
                                  "windows before and after compare different traffic.")
                else:
                    alerts.append(f"The viewers' context changed in the window of {labels[k]} compared with "
                                  f"{labels[ref]}: {name} {change} (PSI {value:.2f}, above {PSI_ALERT} is a major "
                                  "shift). Differences measured before and after describe different audiences.")
    n_tests = max(1, len(later) * len(rewards))
    z_crit = float(norm.ppf(1 - alpha / (2 * n_tests)))
    for metric, r in rewards.items():
        r_ref = r[ref_mask]
        m_ref, v_ref = float(np.mean(r_ref)), float(np.var(r_ref, ddof=1))
        for k in later:
            rk = r[windows == k]
            m, v = float(np.mean(rk)), float(np.var(rk, ddof=1))
            se = math.sqrt(v_ref / r_ref.size + v / rk.size)
            z = (m - m_ref) / se if se > 0 else 0.0
            relative = (m - m_ref) / abs(m_ref) if m_ref else math.nan
            flagged = abs(z) > z_crit
            checks.append({"kind": "reward", "column": metric, "window": labels[k], "reference": labels[ref],
                           "reference_mean": m_ref, "mean": m, "relative_change": relative, "z": z,
                           "level": "changed" if flagged else "stable"})
            if flagged and metric not in flagged_columns:
                flagged_columns[metric] = k
                alerts.append(f"The mean logged {metric} {'fell' if m < m_ref else 'rose'} in the window of {labels[k]}: "
                              f"{m:.4g} against {m_ref:.4g} on {labels[ref]} ({relative:+.1%}, z = {z:.1f}, beyond "
                              f"the {z_crit:.2f} that {n_tests} comparisons at alpha {alpha:g} allow).")
    for i, (column, k) in enumerate(flagged_columns.items()):
        n_flagged = sum(1 for c in checks if c["column"] == column and c["level"] in ("major", "changed"))
        if n_flagged > 1:
            alerts[i] += f" {n_flagged} of the {len(later)} later windows are flagged."
    return {"reference": labels[ref], "checks": checks, "alerts": alerts,
            "thresholds": {"psi_alert": PSI_ALERT, "psi_moderate": PSI_NOTE, "reward_z": z_crit}}


# --- the monitor -------------------------------------------------------------------------------

@dataclass
class MonitorResult:
    document: dict

    @property
    def exit_code(self) -> int:
        return int(self.document["exit_code"])

    @property
    def status(self) -> str:
        return self.document["status"]

    def to_dict(self) -> dict:
        return self.document


def _iso(us: int) -> str:
    return str(np.datetime_as_string(np.datetime64(int(us), "us"), unit="s")) + "Z"


def _neg(margin: float) -> str:
    return f"-{margin:g}" if margin else "0"


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def monitor(logs, policies: Mapping[str, object], rewards, config: MonitorConfig = MonitorConfig()) -> MonitorResult:
    """Monitor candidates (`policies`: name -> datasets.PolicyTable joined to `logs`, a LoggedData with
    timestamps) against the baseline over time windows; `rewards` are RewardSpecs. See the module."""
    from livegate.datasets import logging_policy
    config.validate()
    if logs.timestamp is None:
        raise InputError(Problem(logs.source, "has no timestamp column; monitoring needs the time of every row",
                                 column="timestamp", fix="add timestamp (or map it with --column timestamp=NAME)"))
    all_policies = {"logging": logging_policy(logs), **policies}
    if config.baseline not in all_policies:
        raise InputError(Problem("--baseline", f"'{config.baseline}' is not among the policies",
                                 fix=f"choose one of {', '.join(all_policies)}"))
    candidates = [name for name in all_policies if name != config.baseline]
    if not candidates:
        raise InputError(Problem("--policy", "no candidate to monitor", fix="give --policy NAME=PATH"))
    unknown = [m for m in config.margins if m not in {r.name for r in rewards}]
    if unknown:
        raise InputError(Problem("--margin", f"names metrics that are not monitored: {', '.join(unknown)}"))

    ts = logs.timestamp.astype("datetime64[us]").astype(np.int64)
    order = np.argsort(ts, kind="stable")            # the monitor reads rows in time order
    ts = ts[order]
    width = int(round(config.every * US))
    origin = (int(ts[0]) // width) * width           # windows aligned on the epoch: days start at 00:00 UTC
    window = ((ts - origin) // width).astype(np.int64)
    n_windows = int(window[-1]) + 1
    if n_windows > MAX_WINDOWS:  # the restarted sequences cost windows^2 in time and memory
        raise InputError(Problem("--every", f"cuts the logs' {(ts[-1] - ts[0]) / US / 86400:.1f} days into "
                                 f"{n_windows:,} windows; at most {MAX_WINDOWS:,} are supported",
                                 fix="choose a longer window, e.g. --every 1d or --every 6h"))
    bounds = [(origin + k * width, origin + (k + 1) * width) for k in range(n_windows)]
    labels = [_iso(a) for a, _ in bounds]
    weights = {name: (np.ones(logs.n) if name == "logging" else p.pi_logged / logs.propensity)[order]
               for name, p in all_policies.items()}
    reward_values = {spec.name: logs.reward(spec)[order] for spec in rewards}
    n_streams = len(candidates) * len(rewards)
    alpha_stream = config.alpha / n_streams          # Bonferroni over (candidate, metric) streams
    counts = np.bincount(window, minlength=n_windows)

    windows_doc = [{"start": labels[k], "end": _iso(bounds[k][1]), "n": int(counts[k]), "metrics": {},
                    "differences": {}} for k in range(n_windows)]
    streams, alerts = [], []
    from scipy.stats import norm
    z = float(norm.ppf(1 - config.alpha / 2))
    for metric, r in reward_values.items():
        margin = float(config.margins.get(metric, 0.0))
        for name, w in weights.items():       # per-window fixed-sample values (description, not decisions)
            v = w * r
            cnt = counts.astype(float)
            s1 = np.bincount(window, weights=v, minlength=n_windows)
            s2 = np.bincount(window, weights=v * v, minlength=n_windows)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = s1 / cnt
                se = np.sqrt(np.clip((s2 - cnt * mean * mean) / (cnt - 1), 0, None) / cnt)
            for k in range(n_windows):
                if counts[k] >= 2:
                    windows_doc[k]["metrics"].setdefault(metric, {})[name] = {
                        "value": _f(mean[k]), "ci_low": _f(mean[k] - z * se[k]), "ci_high": _f(mean[k] + z * se[k])}
        for name in candidates:
            d = (weights[name] - weights[config.baseline]) * r
            test = sequential_test(d, window, n_windows, alpha_stream, margin, config.min_rows, config.t_star,
                                   config.restarts)
            looks = []
            for k in range(n_windows):
                looks.append({"window": labels[k], "end": _iso(bounds[k][1]), "n": int(test["n"][k]),
                              "estimate": _f(test["estimate"][k]), "cs_low": _f(test["cs_low"][k]),
                              "cs_high": _f(test["cs_high"][k]), "decides": bool(test["valid"][k]),
                              "lowest_upper": _f(test["best_high"][k]),
                              "lowest_upper_since": labels[int(test["best_start"][k])],
                              "alarm": bool(test["alarm"][k])})
                mask = window == k
                if counts[k] >= 2:
                    dk = d[mask]
                    se_k = float(np.std(dk, ddof=1) / math.sqrt(dk.size))
                    windows_doc[k]["differences"].setdefault(metric, {})[name] = {
                        "value": float(dk.mean()), "ci_low": float(dk.mean()) - z * se_k,
                        "ci_high": float(dk.mean()) + z * se_k}
            last = looks[-1]
            first = test["first_alarm"]
            if first is not None:
                status = "regression"
                since = labels[int(test["best_start"][first])]
                message = (f"REGRESSION {name} on {metric}: by the end of the window of {labels[first]} the difference "
                           f"to {config.baseline} since {since} is below {_neg(margin)} with anytime-valid confidence "
                           f"(upper bound {test['best_high'][first]:.4g}).")
                alerts.append(message)
            elif last["decides"] and last["cs_low"] is not None and last["cs_low"] > -margin:
                status, message = "healthy", (f"healthy {name} on {metric}: the difference to {config.baseline} is "
                                              f"above {_neg(margin)} ({last['estimate']:.4g} [{last['cs_low']:.4g}, "
                                              f"{last['cs_high']:.4g}]).")
            else:
                status, message = "undecided", (f"not yet decided {name} on {metric}: the confidence sequence "
                                                f"still contains {_neg(margin)}; keep collecting.")
            streams.append({"policy": name, "metric": metric, "margin": margin, "status": status, "message": message,
                            "alpha": alpha_stream, "t_star": test["t_star"], "rho": test["rho"],
                            "first_alarm": None if first is None else {
                                "window": labels[first], "end": _iso(bounds[first][1]),
                                "since": labels[int(test["best_start"][first])],
                                "upper": float(test["best_high"][first])},
                            "looks": looks})
    statuses = {s["status"] for s in streams}
    status = "regression" if "regression" in statuses else "healthy" if statuses == {"healthy"} else "undecided"
    exit_code = {"regression": EXIT_REGRESSION, "healthy": EXIT_HEALTHY, "undecided": EXIT_UNDECIDED}[status]
    context = {c: logs.context[c].to_numpy()[order] for c in logs.context.columns} if logs.n_context_columns else {}
    drift = drift_checks(window, n_windows, labels, context, logs.propensity[order], reward_values,
                         config.alpha, config.min_rows)
    from livegate.datasets import __version__
    document = {
        "schema": SCHEMA, "status": status, "exit_code": exit_code,
        "settings": {"every_seconds": config.every, "alpha": config.alpha, "alpha_per_stream": alpha_stream,
                     "baseline": config.baseline, "margins": {r.name: float(config.margins.get(r.name, 0.0))
                                                              for r in rewards},
                     "min_rows": config.min_rows, "restarts": config.restarts, "estimator": "ips",
                     "boundary": "asymptotic confidence sequence (Waudby-Smith et al. 2024, Thm 2.2)",
                     "metric_definitions": {r.name: r.expression for r in rewards}},
        "data": {"source": logs.source, "n": int(logs.n), "start": _iso(ts[0]), "end": _iso(ts[-1]),
                 "n_windows": n_windows},
        "windows": windows_doc, "streams": streams, "drift": drift,
        "alerts": alerts + drift["alerts"],
        "provenance": {"livegate_version": __version__, "seed": config.seed},
    }
    return MonitorResult(document)
