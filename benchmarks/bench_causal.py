"""The default causal check (identify, LinearDML, three DoWhy refuters, sensitivity) on 100k confounded rows.

Usage: python benchmarks/bench_causal.py [--n-rows 100000] [--seed 0] [--defaults-rows 20000]

Prints wall time per step and the error of the naive, IPW and adjusted estimates against the
simulator's exact average effect. Target: at most 2 minutes on the 2-core reference machine.

Then, on a smaller sample (``--defaults-rows``, 0 to skip), the same identification estimated
with DoWhy's and EconML's defaults (LinearDML with its default first stages, i.e. model selection,
and DoWhy's default placebo refuter with 3 simulations) against livegate's settings on the same rows.

``--estimands SEEDS`` instead measures the coverage of every estimand (ATE, ATT, ATC, ATO) over
SEEDS simulations with poor overlap and an effect that falls with viewer activity (the case of
tests/test_causal_estimands.py), for ``--estimator`` and, with ``--estimated-propensities``, with
propensities estimated from the confounders instead of the logged ones:

    python benchmarks/bench_causal.py --estimands 60 --n-rows 10000 --estimator dr_learner
"""
from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd

from livegate.causal import CausalConfig, run_causal_check
from livegate.datasets.causal_simulator import simulate_causal


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outcome", default="watch_seconds")
    parser.add_argument("--defaults-rows", type=int, default=20_000)
    parser.add_argument("--estimands", type=int, default=0, metavar="SEEDS",
                        help="coverage of ATE/ATT/ATC/ATO over SEEDS hard simulations instead")
    parser.add_argument("--estimator", default="linear_dml")
    parser.add_argument("--estimated-propensities", action="store_true")
    args = parser.parse_args()
    if args.estimands:
        coverage(args.estimands, args.n_rows, args.estimator, args.estimated_propensities, args.outcome)
        return
    data, truth = simulate_causal(n_rows=args.n_rows, seed=args.seed)
    start = time.perf_counter()
    result = run_causal_check(data, CausalConfig(treatment="recommended", outcome=args.outcome, seed=args.seed))
    wall = time.perf_counter() - start
    true_ate = truth["ate"][args.outcome]
    print(f"{args.n_rows:,} rows, outcome {args.outcome}, true ATE {true_ate:.3f}")
    for name, est in (("naive", result.naive), ("ipw", result.ipw), ("adjusted", result.ate)):
        error = abs(est["value"] - true_ate) / abs(true_ate) if true_ate else float("nan")
        covers = est["ci_low"] <= true_ate <= est["ci_high"]
        print(f"  {name:<9} {est['value']:9.3f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}]  "
              f"error {error:6.1%}  covers {covers}")
    for r in result.refutations:
        print(f"  refuter {r.name:<20} passed={r.passed}  new effect {r.new_effect}")
    print("  timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    print(f"total wall time {wall:.1f} s (target <= 120 s)")
    if args.defaults_rows:
        compare_with_defaults(args.defaults_rows, args.seed, args.outcome)


def compare_with_defaults(n_rows: int, seed: int, outcome: str) -> None:
    """LinearDML with EconML's default first stages and DoWhy's default placebo refuter, vs livegate's."""
    from dowhy.causal_refuters.placebo_treatment_refuter import refute_placebo_treatment
    from econml.dml import LinearDML
    from threadpoolctl import threadpool_limits

    from livegate.causal import graph as graphs
    from livegate.causal.estimate import ate_with_interval, build_econml, fit_dowhy_econml
    from livegate.causal.features import encode

    data, truth = simulate_causal(n_rows=n_rows, seed=seed)
    true_ate = truth["ate"][outcome]
    confounders, modifiers = list(graphs.DEFAULT_CONFOUNDERS), list(graphs.DEFAULT_EFFECT_MODIFIERS)
    W, X = encode(data, confounders), encode(data, modifiers, drop_first=True)
    frame = pd.concat([data[["recommended", outcome]].astype(float), W,
                       X.loc[:, [c for c in X.columns if c not in W.columns]]], axis=1)
    frame["recommended"] = frame["recommended"].astype(int)
    g = graphs.default_graph("recommended", outcome, confounders, modifiers)
    print(f"\n{n_rows:,} rows: DoWhy/EconML defaults vs livegate's settings (true ATE {true_ate:.3f})")
    candidates = {
        "EconML defaults (LinearDML, first stages by model selection)": LinearDML(discrete_treatment=True,
                                                                                  random_state=seed),
        "livegate (LinearDML, HistGradientBoosting, 3 folds)": build_econml("linear_dml", seed, 3, n_rows, True),
    }
    for label, estimator in candidates.items():
        estimand = graphs.identify(g, "recommended", outcome, list(g.nodes), order=confounders)
        estimand.set_backdoor_variables(list(W.columns), key="backdoor")
        with threadpool_limits(limits=1, user_api="openmp"), warnings.catch_warnings():
            # EconML's default first stage (LogisticRegressionCV) relies on scikit-learn defaults that
            # 1.9 deprecates; the benchmark measures those defaults as shipped, so only that module's
            # FutureWarnings are filtered, here.
            warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn.linear_model._logistic")
            start = time.perf_counter()
            estimate, fitted = fit_dowhy_econml(frame, estimand, estimator, "recommended", outcome, list(X.columns))
            ate = ate_with_interval(fitted, X.to_numpy(), 0.05)
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            # DoWhy's default placebo (a random 0/1 treatment from NumPy's global generator), 3 simulations
            placebo = refute_placebo_treatment(frame, estimand, estimate, ["recommended"], num_simulations=3)
            placebo_s = time.perf_counter() - start
        error = abs(ate["value"] - true_ate) / abs(true_ate)
        covers = ate["ci_low"] <= true_ate <= ate["ci_high"]
        print(f"  {label}: estimate {ate['value']:.3f} [{ate['ci_low']:.3f}, {ate['ci_high']:.3f}] error {error:.1%} "
              f"covers {covers}; fit {fit_s:.1f} s; 3-simulation placebo {placebo_s:.1f} s "
              f"(placebo effect {float(placebo.new_effect):.3f})")


def coverage(seeds: int, n_rows: int, estimator: str, estimated: bool, outcome: str) -> None:
    """Per estimand over ``seeds`` hard simulations: mean truth and estimate, the estimates' spread
    around the truth against the mean standard error, and how often the interval (augmented, and IPW
    with the logged propensities) covers the truth."""
    import numpy as np

    from livegate.causal.estimands import ESTIMANDS, ipw_estimate

    rows = {name: [] for name in ESTIMANDS}
    start = time.perf_counter()
    for seed in range(seeds):
        data, truth = simulate_causal(n_rows=n_rows, seed=1_000 + seed, overlap="poor", activity_effect=-30.0)
        t, y = data["recommended"].to_numpy(), data[outcome].to_numpy(dtype=float)
        e = np.where(t == 1, data["propensity"], 1 - data["propensity"])
        if estimated:
            data = data.drop(columns=["propensity"])
        # one fit gives every estimand (the same cross-fitted nuisances, averaged over each population)
        result = run_causal_check(data, CausalConfig(treatment="recommended", outcome=outcome, refuters=(),
                                                     learn_policy=False, segments=(), seed=seed, estimator=estimator))
        for name in ESTIMANDS:
            block, value = result.estimands[name], truth["estimands"][outcome][name]
            ipw = None if estimated else ipw_estimate(y, t, np.clip(e, 1e-3, 1 - 1e-3), name)
            rows[name].append((value, block["value"], block["se"], block["ci_low"] <= value <= block["ci_high"],
                               np.nan if ipw is None else ipw["ci_low"] <= value <= ipw["ci_high"],
                               block["supported"]))
    wall = time.perf_counter() - start
    print(f"{seeds} seeds x {n_rows:,} rows, poor overlap, activity_effect -30, {estimator}, "
          f"{'estimated' if estimated else 'logged'} propensities ({wall:.0f} s)")
    print(f"{'estimand':<9} {'truth':>8} {'estimate':>9} {'sd':>7} {'mean se':>8} {'covers':>7} {'IPW covers':>11} "
          f"{'supported':>10}")
    for name, values in rows.items():
        truth, value, se, covers, ipw_covers, supported = (np.array(v, dtype=float) for v in zip(*values))
        ipw_text = "—" if np.isnan(ipw_covers).all() else f"{np.nanmean(ipw_covers):.0%}"
        print(f"{name:<9} {truth.mean():8.2f} {value.mean():9.2f} {np.std(value - truth):7.2f} {se.mean():8.2f} "
              f"{covers.mean():7.0%} {ipw_text:>11} {supported.mean():10.0%}")


if __name__ == "__main__":
    main()
