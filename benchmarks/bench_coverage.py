"""Coverage of livegate's interval methods, and the gate's error rates, on the live-stream simulator.

Usage:
  OMP_NUM_THREADS=1 python benchmarks/bench_coverage.py coverage [--sizes 5000,20000] [--reps 200]
  OMP_NUM_THREADS=1 python benchmarks/bench_coverage.py candidates [--sizes 5000,20000] [--reps 200]
  OMP_NUM_THREADS=1 python benchmarks/bench_coverage.py gate [--sizes 20000,50000] [--reps 400]
  OMP_NUM_THREADS=1 python benchmarks/bench_coverage.py cost [--rows 1000000]
Each part prints Markdown tables (benchmarks/README_coverage.md has them) and, with --out-json FILE,
keeps every count.

coverage    Every interval method of livegate (normal, robust = the default, bootstrap, bernstein) on
            the paired difference candidate - logging and on each policy's value, for watch_seconds,
            gift_value and click, policies better / worse / greedy, estimators ips, snips and dr.
            One replication = one fresh simulation (seed 1,000,000 + 10,000 k + i for the k-th size);
            its truth is the simulator's exact value conditional on its contexts and slates. DR uses a
            deliberately wrong reward model, E[r | x, a] / 2 + the logging policy's value (no model fit:
            a fitted model would land between this and the exact one), as tests/test_ope_statistical.py.
            Click intervals are clipped to [0, 1] (a difference to [-1, 1]) as `evaluate` does for a
            0/1 reward; Bernstein uses the a-priori range of click terms (weights <= slate_size /
            epsilon = 80 by design) and, for watch time and gifts, which have none, the observed range.
candidates  The intervals considered for heavy tails but not adopted, on the same replications'
            paired differences of watch_seconds and gift_value (better, worse): skewness-corrected t
            (Hall 1992), the studentised Poisson bootstrap (bootstrap-t, 499 resamples, per-resample
            delta-method standard error), the percentile bootstrap, empirical likelihood for the mean of
            the IPS difference terms (Owen 1988), and the betting interval of Waudby-Smith & Ramdas
            (2023, hedged capital with their predictable plug-in bets), which needs bounded terms: its
            reward cap is the largest reward of a 1,000,000-round simulation (an oracle cap, which
            favours it), its weight bound 80.
gate        The gate under default settings (estimator snips, robust intervals -- or --ci -- alpha 0.05,
            default diagnostics thresholds), one candidate and one criterion per gate (Holm over 1 test), the
            candidate a mixture lambda better + (1 - lambda) worse whose exact value puts the true
            difference where wanted: on the boundary (watch_seconds improves with the true difference
            exactly 0; click non_inferior, 5% relative margin, with the true value exactly 95% of
            logging's) the share of passes is the false-ship rate, which must be at most alpha/2; above
            it the share of passes is the power.
cost        Seconds to compute every estimate's and paired difference's interval (4 policies x 3
            estimators) at --rows rows, per method, and of a whole `livegate.evaluate` (ips, snips) with
            normal and with robust intervals.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from statistics import NormalDist

import numpy as np

from livegate.datasets.simulator import EPSILON, SimulationConfig, policy_matrix, simulate
from livegate.ope import inference
from livegate.ope.estimators import RowInputs, dr, ips, snips
from livegate.ope.evaluate import EvaluationConfig, IntervalEngine, _intervals

ALPHA = 0.05
METRICS = ("watch_seconds", "gift_value", "click")
POLICIES = ("better", "worse", "greedy")
ESTIMATORS = {"ips": ips, "snips": snips, "dr": dr}
METHODS = ("normal", "robust", "bootstrap", "bernstein")


# --- replications ----------------------------------------------------------------------------------

def policy_inputs(sim, probs: np.ndarray, metric: str, logging: bool) -> tuple[RowInputs, float]:
    """RowInputs of a policy on the simulation's slates (DR's model deliberately wrong), and its exact value."""
    rows = np.arange(probs.shape[0])
    slot = np.argmax(sim.slates == sim.logs["action"].to_numpy()[:, None], axis=1)
    expected = sim.expected[metric]
    q_pi, q_logged = np.sum(probs * expected, axis=1), expected[rows, slot]
    offset = sim.truth["policies"]["logging"][metric]
    bounded = metric == "click"
    weight = np.ones(len(rows)) if logging else probs[rows, slot] / sim.logs["propensity"].to_numpy()
    x = RowInputs(reward=sim.logs[metric].to_numpy(np.float64), weight=weight, q_logged=q_logged / 2 + offset,
                  q_pi=q_pi / 2 + offset, reward_range=(0.0, 1.0) if bounded else None,
                  max_weight=(1.0 if logging else sim.config.slate_size / EPSILON) if bounded else None,
                  unit_weight=logging)
    return x, float(np.mean(q_pi))


def replication(n: int, seed: int) -> dict:
    """{metric: (inputs by policy, truth by policy)} of one fresh simulation."""
    sim = simulate(SimulationConfig(n_rounds=n, seed=seed))
    probs = {"logging": policy_matrix(sim, "logging"), **{p: policy_matrix(sim, p) for p in POLICIES}}
    out = {}
    for metric in METRICS:
        pairs = {p: policy_inputs(sim, m, metric, p == "logging") for p, m in probs.items()}
        out[metric] = ({p: x for p, (x, _) in pairs.items()}, {p: t for p, (_, t) in pairs.items()})
    return out


def _tally(table: dict, key: tuple, low: float, high: float, truth: float, open_end=None, cantelli_end=None) -> None:
    """Count one interval. An undefined one (NaN: e.g. a bootstrap whose estimator was undefined in more
    than 1% of resamples) makes no claim: it counts as covering, and under `undefined`."""
    row = table.setdefault(key, {"n": 0, "covered": 0, "below_low": 0, "above_high": 0, "open": 0, "cantelli": 0,
                                 "undefined": 0, "width": []})
    row["n"] += 1
    if math.isnan(low) or math.isnan(high):
        row["covered"] += 1
        row["undefined"] += 1
    else:
        row["covered"] += int(low <= truth <= high)
        row["below_low"] += int(truth < low)
        row["above_high"] += int(truth > high)
        if math.isfinite(high - low):
            row["width"].append(high - low)
    row["open"] += int(open_end is not None)
    row["cantelli"] += int(cantelli_end is not None)


# --- part 1: livegate's methods -------------------------------------------------------------------

def coverage(sizes: list[int], reps: int, n_boot: int, methods: tuple[str, ...] = METHODS) -> dict:
    table: dict = {}
    for k, n in enumerate(sizes):
        start = time.time()
        for i in range(reps):
            for metric, (inputs, truth) in replication(n, 1_000_000 + 10_000 * k + i).items():
                terms = {p: {e: fn(x) for e, fn in ESTIMATORS.items()} for p, x in inputs.items()}
                value_range = (0.0, 1.0) if metric == "click" else None
                for method in methods:
                    engine = IntervalEngine(terms, EvaluationConfig(ci=method, n_boot=n_boot, seed=i), value_range)
                    for p in POLICIES:
                        for e in ESTIMATORS:
                            if method == "bernstein" and e == "snips":
                                continue  # a ratio: Bernstein needs plain means
                            iv = engine.difference(p, "logging", e, ALPHA)
                            _tally(table, (n, metric, "difference", p, e, method), iv.ci_low, iv.ci_high,
                                   truth[p] - truth["logging"], iv.open_end, iv.cantelli_end)
                            iv = engine.interval([(p, e)], [1.0], ALPHA)
                            _tally(table, (n, metric, "value", p, e, method), iv.ci_low, iv.ci_high, truth[p],
                                   iv.open_end, iv.cantelli_end)
            if (i + 1) % 20 == 0:
                print(f"  coverage n={n}: {i + 1}/{reps} ({time.time() - start:.0f} s)", file=sys.stderr)
    return table


# --- part 2: candidates considered ------------------------------------------------------------------

def hall_interval(value: float, psi: np.ndarray, alpha: float) -> tuple[float, float]:
    """Skewness-corrected t (Hall 1992, JRSS B 54, 221-228): the monotone cubic transformation
    g(t) = t + a t^2 + a^2 t^3 / 3 + b, a = gamma / (3 sqrt n), b = gamma / (6 sqrt n), inverted in closed
    form, ((1 + 3a (x - b))^(1/3) - 1) / a."""
    n = psi.size
    m2, m3 = float(np.mean(psi ** 2)), float(np.mean(psi ** 3))
    se = math.sqrt(m2 * n / (n - 1) / n)
    gamma = m3 / m2 ** 1.5 if m2 > 0 else 0.0
    a, b = gamma / (3 * math.sqrt(n)), gamma / (6 * math.sqrt(n))
    z = NormalDist().inv_cdf(1 - alpha / 2)

    def inverse(x: float) -> float:
        return x - b if a == 0 else (np.cbrt(1 + 3 * a * (x - b)) - 1) / a

    return value - se * inverse(z), value - se * inverse(-z)


def studentised_bootstrap(terms, coefs, n_boot: int, seed: int, alpha: float) -> tuple[tuple, tuple]:
    """(bootstrap-t interval, percentile interval): every Poisson resample recomputes the contrast and its
    delta-method standard error from resampled sums and sums of products of the terms' distinct
    arrays (a ratio renormalised in every resample)."""
    n = terms[0].n
    columns, layout = inference.distinct_columns(terms)
    k = len(columns) + 1
    matrix = np.column_stack([*columns, np.ones(n)])
    upper = np.triu_indices(k)
    full = np.concatenate([matrix, matrix[:, upper[0]] * matrix[:, upper[1]]], axis=1)
    rng = np.random.default_rng(seed)
    sums = np.empty((n_boot, full.shape[1]))
    for start in range(0, n_boot, 64):
        size = min(64, n_boot - start)
        sums[start:start + size] = inference.poisson_counts(rng, (size, n)) @ full

    def statistic(s: np.ndarray):
        first = s[..., :k]
        second = np.zeros(s.shape[:-1] + (k, k))
        second[..., upper[0], upper[1]] = s[..., k:]
        second[..., upper[1], upper[0]] = s[..., k:]
        count = first[..., -1]
        mean = first / count[..., None]
        cov = second / count[..., None, None] - mean[..., :, None] * mean[..., None, :]
        grad, value = np.zeros(first.shape), np.zeros(first.shape[:-1])
        for (w, d, z), c in zip(layout, coefs):
            if z is None:
                grad[..., w] += c
                value += c * mean[..., w]
            else:
                ratio = mean[..., w] / mean[..., z]
                grad[..., w] += c / mean[..., z]
                grad[..., z] -= c * ratio / mean[..., z]
                value += c * ratio
            if d is not None:
                grad[..., d] += c
                value += c * mean[..., d]
        var = np.einsum("...i,...ij,...j->...", grad, cov, grad)
        return value, np.sqrt(np.maximum(var, 0.0) / count)

    with np.errstate(divide="ignore", invalid="ignore"):
        boot_value, boot_se = statistic(sums)
        value, se = statistic(full.sum(axis=0))
        t = (boot_value - value) / boot_se
    t = t[~np.isnan(t)]
    if t.size < 10 or not se > 0:
        return (math.nan, math.nan), (math.nan, math.nan)
    lo, hi = np.quantile(t, [alpha / 2, 1 - alpha / 2])
    p_lo, p_hi = np.quantile(boot_value[np.isfinite(boot_value)], [alpha / 2, 1 - alpha / 2])
    return (float(value - se * hi), float(value - se * lo)), (float(p_lo), float(p_hi))


def empirical_likelihood(y: np.ndarray, alpha: float) -> tuple[float, float]:
    """Owen's (1988) empirical-likelihood interval for the mean of y: {mu : 2 sum log(1 + lambda (y - mu))
    <= chi2_1(1 - alpha)}, lambda solving sum (y - mu) / (1 + lambda (y - mu)) = 0; each end by bisection
    between the mean and the sample's extreme (the interval lies in the convex hull of the data)."""
    limit = NormalDist().inv_cdf(1 - alpha / 2) ** 2

    def statistic(mu: float) -> float:
        d = y - mu
        low, high = -1.0 / d.max() + 1e-12, -1.0 / d.min() - 1e-12  # 1 + lambda d > 0 for every row
        for _ in range(100):  # sum d / (1 + lambda d) decreases in lambda
            lam = 0.5 * (low + high)
            if np.sum(d / (1 + lam * d)) > 0:
                low = lam
            else:
                high = lam
        return 2.0 * float(np.sum(np.log1p(lam * d)))

    mean = float(np.mean(y))
    ends = []
    for edge in (float(np.min(y)), float(np.max(y))):
        inside, outside = mean, edge
        for _ in range(60):
            middle = 0.5 * (inside + outside)
            if statistic(middle) <= limit:
                inside = middle
            else:
                outside = middle
        ends.append(inside)
    return ends[0], ends[1]


def betting_interval(y: np.ndarray, low: float, high: float, alpha: float) -> tuple[float, float]:
    """Waudby-Smith & Ramdas (2023, JRSS B 86, 1-27) hedged-capital interval for the mean of y in
    [low, high], rows in their logged order: x = (y - low) / (high - low); a candidate mean m stays in
    the interval while the capital (K+(m) + K-(m)) / 2 stays below 1 / alpha, K+/- = prod (1 +/- lambda_i
    (x_i - m)), with their predictable plug-in bets lambda_i = sqrt(2 log(2 / alpha) / (n sigma^2_{i-1}))
    truncated at 1/2 / m (1/2 / (1 - m)), sigma^2 their running variance estimate. The set is an
    interval around the sample mean; each end is found by bisection (a fixed grid is far coarser than
    the interval once the range dwarfs the spread)."""
    x = (y - low) / (high - low)
    n = x.size
    i = np.arange(1, n + 1)
    mu = (0.5 + np.cumsum(x)) / (i + 1)
    var = (0.25 + np.cumsum((x - mu) ** 2)) / (i + 1)
    bet = np.sqrt(2 * math.log(2 / alpha) / (n * np.concatenate([[0.25], var[:-1]])))

    def inside(m: float) -> bool:
        up = np.sum(np.log1p(np.minimum(bet, 0.5 / m) * (x - m)))
        down = np.sum(np.log1p(-np.minimum(bet, 0.5 / (1 - m)) * (x - m)))
        return np.logaddexp(up, down) + math.log(0.5) < math.log(1 / alpha)

    centre = float(np.mean(x))
    if not inside(centre):
        return math.nan, math.nan
    ends = []
    for edge in (1e-15, 1 - 1e-15):
        good, bad = centre, edge
        if inside(bad):
            ends.append(bad)
            continue
        for _ in range(80):
            middle = 0.5 * (good + bad)
            good, bad = (middle, bad) if inside(middle) else (good, middle)
        ends.append(good)
    return low + (high - low) * ends[0], low + (high - low) * ends[1]


def oracle_caps(seed: int = 0) -> dict[str, float]:
    sim = simulate(SimulationConfig(n_rounds=1_000_000, seed=seed))
    return {m: float(sim.logs[m].max()) for m in ("watch_seconds", "gift_value")}


def candidates(sizes: list[int], reps: int) -> dict:
    table: dict = {}
    caps = oracle_caps()
    w_max = 8 / EPSILON
    for k, n in enumerate(sizes):
        start = time.time()
        for i in range(reps):
            for metric, (inputs, truth) in replication(n, 1_000_000 + 10_000 * k + i).items():
                if metric == "click":
                    continue
                base = inputs["logging"]
                for p in ("better", "worse"):
                    target = truth[p] - truth["logging"]
                    x = inputs[p]
                    pair = [snips(x), snips(base)]
                    psi = pair[0].influence() - pair[1].influence()
                    value = pair[0].value() - pair[1].value()
                    se = float(np.std(psi, ddof=1) / math.sqrt(n))
                    z = NormalDist().inv_cdf(1 - ALPHA / 2)
                    found = {"normal (snips)": (value - z * se, value + z * se),
                             "hall (snips)": hall_interval(value, psi, ALPHA)}
                    found["bootstrap-t (snips)"], found["percentile (snips)"] = \
                        studentised_bootstrap(pair, [1.0, -1.0], 499, i, ALPHA)
                    y = x.weight * x.reward - base.reward  # the IPS difference's terms
                    found["empirical likelihood (ips)"] = empirical_likelihood(y, ALPHA)
                    found["betting, oracle cap (ips)"] = betting_interval(y, -caps[metric], (w_max - 1) * caps[metric], ALPHA)
                    for method, (low, high) in found.items():
                        _tally(table, (n, metric, "difference", p, method), low, high, target)
            if (i + 1) % 20 == 0:
                print(f"  candidates n={n}: {i + 1}/{reps} ({time.time() - start:.0f} s)", file=sys.stderr)
    return table


# --- part 3: the gate -------------------------------------------------------------------------------

#: (name, metric, rule, threshold, relative, target): on the boundary the target is the true difference
#: as a share of logging's value; for power ("of better") the share of the `better` candidate's own
#: true difference, whose size varies between replications (the tables give its mean)
GATE_SCENARIOS = (
    ("watch: true difference 0 (boundary)", "watch_seconds", "improves", 0.0, False, ("logging", 0.0)),
    ("watch: 25% of better's gain", "watch_seconds", "improves", 0.0, False, ("better", 0.25)),
    ("watch: 50% of better's gain", "watch_seconds", "improves", 0.0, False, ("better", 0.50)),
    ("watch: 100% of better's gain", "watch_seconds", "improves", 0.0, False, ("better", 1.0)),
    ("watch: true difference -10%", "watch_seconds", "improves", 0.0, False, ("logging", -0.10)),
    ("click: true -5%, margin 5% (boundary)", "click", "non_inferior", 0.05, True, ("logging", -0.05)),
    ("click: true 0%, margin 5%", "click", "non_inferior", 0.05, True, ("logging", 0.0)),
    ("click: 50% of better's gain, margin 5%", "click", "non_inferior", 0.05, True, ("better", 0.5)),
    ("click: true -10%, margin 5%", "click", "non_inferior", 0.05, True, ("logging", -0.10)),
)


def _target(values: dict, metric: str, target: tuple[str, float]) -> float:
    """The wanted exact value of the candidate."""
    v_log = values["logging"][metric]
    anchor, share = target
    return v_log * (1 + share) if anchor == "logging" else v_log + share * (values["better"][metric] - v_log)


def gate(sizes: list[int], reps: int, ci: str) -> dict:
    import livegate
    from livegate.datasets.gate_config import Candidate, Criterion, GateConfig
    from livegate.ope.gate import decide

    table: dict = {}
    for k, n in enumerate(sizes):
        start = time.time()
        for i in range(reps):
            sim = simulate(SimulationConfig(n_rounds=n, seed=2_000_000 + 10_000 * k + i))
            better, worse = sim.policies["better"], sim.policies["worse"]
            assert better[["decision_id", "action"]].equals(worse[["decision_id", "action"]])
            values = sim.truth["policies"]
            policies, candidate_of = {}, {}
            for name, metric, rule, threshold, relative, target in GATE_SCENARIOS:
                v_b, v_w = values["better"][metric], values["worse"][metric]
                lam = (_target(values, metric, target) - v_w) / (v_b - v_w)  # the exact value is linear in the mixture
                assert 0 <= lam <= 1, (name, lam)
                mixed = better.copy()
                mixed["prob"] = lam * better["prob"].to_numpy() + (1 - lam) * worse["prob"].to_numpy()
                key = f"c{len(policies)}"
                policies[key], candidate_of[name] = mixed, key
            result = livegate.evaluate(sim.logs, policies, rewards=["watch_seconds", "click"], estimators=["snips"],
                                       seed=i, ci=ci)
            for name, metric, rule, threshold, relative, target in GATE_SCENARIOS:
                candidate = candidate_of[name]
                cfg = GateConfig(source=Path("bench.toml"), logs=Path("logs"), candidates=(Candidate(candidate, None),),
                                 criteria=(Criterion(metric, rule, threshold, relative),), rewards={}, seed=i, ci=ci)
                decision = decide(result, cfg)
                row = table.setdefault((n, name), {"n": 0, "pass": 0, "fail": 0, "inconclusive": 0, "held_back": 0,
                                                   "open": 0, "cantelli": 0, "true_relative": 0.0})
                row["n"] += 1
                row["true_relative"] += _target(values, metric, target) / values["logging"][metric] - 1
                row[decision.decision] += 1
                criterion = decision.candidates[0]["criteria"][0]
                row["held_back"] += int(not decision.candidates[0]["diagnostics"]["ok"])
                row["open"] += int("ci_open" in criterion)
                keys, coefs = _criterion_keys(candidate, metric, rule, threshold, relative, result)
                iv = result.engines[metric].interval(keys, coefs, cfg.alpha)
                row["cantelli"] += int(iv.cantelli_end is not None)
            if (i + 1) % 20 == 0:
                print(f"  gate n={n}: {i + 1}/{reps} ({time.time() - start:.0f} s)", file=sys.stderr)
    return table


def _criterion_keys(candidate: str, metric: str, rule: str, threshold: float, relative: bool, result) -> tuple:
    """(keys, coefficients) of the criterion's contrast, as the gate forms it (ope/gate.py)."""
    from livegate.datasets.gate_config import Criterion
    from livegate.ope.gate import _criterion_contrast

    crit = Criterion(metric, rule, threshold, relative)
    base = result.estimate("logging", "snips", metric)["value"]
    keys, coefs, _, _ = _criterion_contrast(crit, candidate, "logging", "snips", crit.bound(base), base)
    return keys, coefs


# --- part 4: cost -----------------------------------------------------------------------------------

def cost(rows: int) -> dict:
    import livegate

    out = {}
    sim = simulate(SimulationConfig(n_rounds=rows, seed=3))
    inputs = {p: policy_inputs(sim, policy_matrix(sim, p), "watch_seconds", p == "logging")[0]
              for p in ("logging", *POLICIES)}
    terms = {p: {e: fn(x) for e, fn in ESTIMATORS.items()} for p, x in inputs.items()}
    # the fastest of three runs, the methods alternating: a shared machine's load and the first run's
    # warm-up fall on no method in particular
    for _ in range(3):
        for method in ("normal", "robust", "bootstrap"):
            cfg = EvaluationConfig(ci=method, seed=0)
            start = time.perf_counter()
            _intervals(IntervalEngine(terms, cfg), cfg)
            key = f"intervals of 12 estimates and 9 paired differences, {method}"
            out[key] = min(out.get(key, math.inf), time.perf_counter() - start)
        for method in ("normal", "robust"):
            start = time.perf_counter()
            livegate.evaluate(sim.logs, {p: sim.policies[p] for p in POLICIES}, rewards=["watch_seconds"],
                              estimators=["ips", "snips"], ci=method)
            key = f"livegate.evaluate (3 policies, ips and snips, from DataFrames), {method}"
            out[key] = min(out.get(key, math.inf), time.perf_counter() - start)
    return out


# --- tables -----------------------------------------------------------------------------------------

def _rate(row: dict, key: str) -> str:
    return f"{row[key] / row['n']:.3f}"


def coverage_tables(table: dict, sizes: list[int], kind: str = "difference", methods=METHODS) -> str:
    lines = []
    for metric in METRICS:
        lines.append(f"\n**{metric}**, {kind}: coverage (share of replications whose interval holds the truth); "
                     "for robust, the share with an end open and with an end set by Cantelli's inequality\n")
        lines.append("| n | policy | estimator | " + " | ".join(methods) + " | robust: open | robust: Cantelli |")
        lines.append("|---|---|---|" + "---|" * len(methods) + "---|---|")
        for n in sizes:
            for p in POLICIES:
                for e in ESTIMATORS:
                    cells = []
                    for method in methods:
                        row = table.get((n, metric, kind, p, e, method))
                        cells.append(_rate(row, "covered") if row else "-")
                    robust = table[(n, metric, kind, p, e, "robust")]
                    lines.append(f"| {n:,} | {p} | {e} | " + " | ".join(cells) +
                                 f" | {_rate(robust, 'open')} | {_rate(robust, 'cantelli')} |")
    return "\n".join(lines)


def summary_table(table: dict, sizes: list[int], methods=METHODS) -> str:
    """Worst and mean coverage over policies x estimators, per metric, size and method (differences)."""
    lines = ["| metric | n | " + " | ".join(f"{m}: min / mean" for m in methods) + " | robust: max miss below the lower end |",
             "|---|---|" + "---|" * len(methods) + "---|"]
    for metric in METRICS:
        for n in sizes:
            cells = []
            for method in methods:
                rows = [r for (n_, m_, k_, p, e, me), r in table.items()
                        if (n_, m_, k_, me) == (n, metric, "difference", method)]
                cov = [r["covered"] / r["n"] for r in rows]
                cells.append(f"{min(cov):.3f} / {np.mean(cov):.3f}")
            below = max(r["below_low"] / r["n"] for (n_, m_, k_, p, e, me), r in table.items()
                        if (n_, m_, k_, me) == (n, metric, "difference", "robust"))
            lines.append(f"| {metric} | {n:,} | " + " | ".join(cells) + f" | {below:.3f} |")
    return "\n".join(lines)


def candidate_table(table: dict, sizes: list[int]) -> str:
    methods = list(dict.fromkeys(key[4] for key in table))
    lines = ["| metric | n | policy | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    for metric in ("watch_seconds", "gift_value"):
        for n in sizes:
            for p in ("better", "worse"):
                cells = []
                for method in methods:
                    row = table[(n, metric, "difference", p, method)]
                    width = f", width {np.median(row['width']):.3g}" if row["width"] else ""
                    cells.append(f"{_rate(row, 'covered')} ({_rate(row, 'above_high')} above{width})")
                lines.append(f"| {metric} | {n:,} | {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gate_table(table: dict, sizes: list[int]) -> str:
    lines = ["| scenario | n | mean true difference | pass (95% upper bound) | fail | inconclusive | held back by diagnostics | an end open | an end by Cantelli (at 95%) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, *_ in GATE_SCENARIOS:
        for n in sizes:
            row = table[(n, name)]
            lines.append(f"| {name} | {n:,} | {row['true_relative'] / row['n']:+.1%} | "
                         f"{_rate(row, 'pass')} ({wilson_upper(row['pass'], row['n']):.3f}) | "
                         f"{_rate(row, 'fail')} | {_rate(row, 'inconclusive')} | {_rate(row, 'held_back')} | "
                         f"{_rate(row, 'open')} | {_rate(row, 'cantelli')} |")
    return "\n".join(lines)


def wilson_upper(k: int, n: int, z: float = 1.959964) -> float:
    """Upper end of the Wilson (1927) score interval of a binomial proportion k / n (two-sided 95%)."""
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre + half) / (1 + z * z / n)


def _jsonable(table: dict) -> list:
    return [{"key": list(k), **{f: (float(np.median(v)) if v else None) if f == "width" else v for f, v in row.items()}}
            for k, row in table.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("coverage", "candidates", "gate", "cost"))
    parser.add_argument("--sizes", default=None, help="comma-separated rounds per simulation")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--methods", default=",".join(METHODS), help="coverage: the methods to measure")
    parser.add_argument("--ci", default=inference.DEFAULT_CI, help="gate: the interval method (default: the gate's)")
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args(argv)
    default_sizes = "20000,50000" if args.part == "gate" else "5000,20000"
    sizes = [int(s) for s in (args.sizes or default_sizes).split(",")]
    reps = args.reps or (400 if args.part == "gate" else 200)
    start = time.time()
    if args.part == "coverage":
        methods = tuple(args.methods.split(","))
        table = coverage(sizes, reps, args.n_boot, methods)
        print(summary_table(table, sizes, methods))
        print(coverage_tables(table, sizes, "difference", methods))
        print(coverage_tables(table, sizes, "value", methods))
    elif args.part == "candidates":
        table = candidates(sizes, reps)
        print(candidate_table(table, sizes))
    elif args.part == "gate":
        table = gate(sizes, reps, args.ci)
        print(gate_table(table, sizes))
    else:
        table = cost(args.rows)
        print("| step | seconds |\n|---|---|\n" + "\n".join(f"| {k} | {v:.2f} |" for k, v in table.items()))
    print(f"\n({args.part}: {time.time() - start:.0f} s)", file=sys.stderr)
    if args.out_json:
        args.out_json.write_text(json.dumps({"part": args.part, "sizes": sizes, "reps": reps,
                                             "table": table if args.part == "cost" else _jsonable(table)}, indent=1))


if __name__ == "__main__":
    main()
