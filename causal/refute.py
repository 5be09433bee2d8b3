"""Refutations of the effect estimate, each with a documented pass/fail rule and the numbers behind it.

A refuter tests the *estimator's stability* under changes that should (not) move the estimate. No
refuter can show that there is no unobserved confounding: with the strongest confounders left out,
placebo, random-common-cause and data-subset refuters all still passed (STACK-NOTES). Only the
sensitivity analysis speaks to unobserved confounding, and only relative to a benchmark.

Rules (``z`` = z_{1-alpha/2}, ``se`` = standard error of the original estimate, ``k`` simulations):

* ``placebo_treatment`` (DoWhy, treatment permuted across rows): pass when
  ``|mean placebo effect| <= z * se / sqrt(k)``. A permuted treatment has no effect; the mean of
  ``k`` placebo estimates has a standard error of about ``se / sqrt(k)`` (a permuted treatment is
  balanced, so its estimate is no noisier than the original's), hence a two-sided test at ``alpha``.
* ``random_common_cause`` (DoWhy, an independent N(0,1) column added to the adjustment set): pass
  when ``|mean new estimate - estimate| <= z * se``, i.e. the new estimate stays inside the original
  interval; adjusting for noise should not move the estimate by more than its own uncertainty.
* ``data_subset`` (DoWhy, re-estimated on random subsets of a fraction ``f``): pass when
  ``|mean subset estimate - estimate| <= z * se * sqrt((1 - f) / f)``: a subset estimate differs from
  the full-sample one by sampling noise of standard deviation ``se * sqrt((1 - f) / f)``.
* ``sensitivity`` (EconML ``sensitivity_interval`` / ``robustness_value``, Chernozhukov, Cinelli,
  Newey, Sharma & Syrgkanis 2022, "Long story short: omitted variable bias in causal machine
  learning"), benchmarked against the strongest observed confounder: for each confounder ``j`` its
  partial R^2 with the outcome (``c_y``) and with the treatment (``c_t``) is measured by dropping it
  from cross-fitted first stages; the sensitivity interval is computed at the strengths of the
  strongest one. Pass when that interval excludes zero on the estimate's side: an unobserved
  confounder as strong as the strongest observed one would not erase the effect. Not applicable
  (``passed`` null) when the estimate's own interval already contains zero.

DoWhy's own p-value (normal approximation over the ``k`` simulated estimates) is reported as
``p_value`` for the three DoWhy refuters; with a handful of simulations it is coarse, so the rules
above use the estimate's standard error instead.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from livegate.ope.inference import z_quantile
from .features import hgb_classifier, hgb_regressor
from .result import Refutation

REFUTERS = ("placebo_treatment", "random_common_cause", "data_subset", "sensitivity")
SUBSET_FRACTION = 0.8
#: Rows used to benchmark confounder strength (subsampled above this, seeded).
BENCHMARK_ROWS = 20_000

CAVEAT = ("Refuters test the estimator's stability, not the absence of confounding: passing them does not prove "
          "that there is no unobserved confounder. Only the sensitivity analysis speaks to that, and only relative "
          "to the strongest observed confounder.")


def _quiet_p_value():
    """DoWhy's p-value divides by the spread of the simulated estimates, which is 0 when they agree
    exactly (numpy warns of a division by zero); the p-value is then reported as null (see _p)."""
    return np.errstate(divide="ignore", invalid="ignore")


def _p(refutation) -> float | None:
    result = getattr(refutation, "refutation_result", None)
    if not result:
        return None
    value = float(result["p_value"])
    return value if np.isfinite(value) else None


def placebo_treatment(data, estimand, estimate, treatment: str, ate: dict, *, alpha: float, simulations: int,
                      seed: int) -> Refutation:
    """DoWhy's placebo-treatment refuter with a permuted treatment (seeded; the default random
    placebo of DoWhy draws from NumPy's global generator and would not be reproducible)."""
    from dowhy.causal_refuters.placebo_treatment_refuter import PlaceboType, refute_placebo_treatment

    with _quiet_p_value():
        ref = refute_placebo_treatment(data, estimand, estimate, [treatment], num_simulations=simulations,
                                       placebo_type=PlaceboType.PERMUTE, random_state=seed)
    new = float(ref.new_effect)
    bound = z_quantile(alpha) * ate["se"] / np.sqrt(simulations)
    return Refutation(
        name="placebo_treatment", new_effect=new, p_value=_p(ref), passed=bool(abs(new) <= bound),
        rule=f"pass when |mean placebo effect| <= z_(1-alpha/2) * se / sqrt(k) = {bound:.4g} "
             f"(treatment permuted across rows, k = {simulations} simulations)",
        details={"simulations": simulations, "placebo_type": "permute", "threshold": bound,
                 "original_effect": ate["value"], "original_se": ate["se"]})


def random_common_cause(data, estimand, estimate, ate: dict, *, alpha: float, simulations: int,
                        seed: int) -> Refutation:
    """DoWhy's random-common-cause refuter: an independent standard-normal column joins the adjustment set."""
    from dowhy.causal_refuters.random_common_cause import refute_random_common_cause

    with _quiet_p_value():
        ref = refute_random_common_cause(data, estimand, estimate, num_simulations=simulations, random_state=seed)
    new = float(ref.new_effect)
    bound = z_quantile(alpha) * ate["se"]
    return Refutation(
        name="random_common_cause", new_effect=new, p_value=_p(ref),
        passed=bool(abs(new - ate["value"]) <= bound),
        rule=f"pass when |mean new estimate - estimate| <= z_(1-alpha/2) * se = {bound:.4g} "
             f"(the new estimate stays inside the original interval; k = {simulations} simulations)",
        details={"simulations": simulations, "change": new - ate["value"], "threshold": bound,
                 "original_effect": ate["value"], "original_se": ate["se"]})


def data_subset(data, estimand, estimate, ate: dict, *, alpha: float, simulations: int, seed: int,
                fraction: float = SUBSET_FRACTION) -> Refutation:
    """DoWhy's data-subset refuter: re-estimate on random subsets of ``fraction`` of the rows."""
    from dowhy.causal_refuters.data_subset_refuter import refute_data_subset

    with _quiet_p_value():
        ref = refute_data_subset(data, estimand, estimate, subset_fraction=fraction, num_simulations=simulations,
                                 random_state=seed)
    new = float(ref.new_effect)
    bound = z_quantile(alpha) * ate["se"] * np.sqrt((1 - fraction) / fraction)
    return Refutation(
        name="data_subset", new_effect=new, p_value=_p(ref), passed=bool(abs(new - ate["value"]) <= bound),
        rule=f"pass when |mean subset estimate - estimate| <= z_(1-alpha/2) * se * sqrt((1-f)/f) = {bound:.4g} "
             f"(subsets of f = {fraction:g} of the rows, k = {simulations} simulations)",
        details={"simulations": simulations, "subset_fraction": fraction, "change": new - ate["value"],
                 "threshold": bound, "original_effect": ate["value"], "original_se": ate["se"]})


def confounder_strengths(T: np.ndarray, Y: np.ndarray, groups: dict[str, np.ndarray], W: np.ndarray, *,
                         seed: int, n_folds: int = 2, max_rows: int = BENCHMARK_ROWS) -> dict[str, dict]:
    """Partial R^2 of each observed confounder with the outcome (``c_y``) and the treatment (``c_t``).

    Chernozhukov et al. 2022, section on benchmarking: ``c_y = 1 - MSE_full(Y | T, W) / MSE_without_j``
    and ``c_t = 1 - MSE_full(T | W) / MSE_without_j`` (for the partially linear model the Riesz
    representer's gain reduces to the treatment residual variance). Cross-fitted boosted models on a
    seeded subsample of at most ``max_rows`` rows; ``groups`` maps a confounder name to its columns
    in ``W`` (one-hot levels of a categorical confounder are dropped together).
    """
    rng = np.random.default_rng(seed)
    n = len(T)
    rows = np.sort(rng.choice(n, size=max_rows, replace=False)) if n > max_rows else np.arange(n)
    T, Y, W = T[rows].astype(float), Y[rows].astype(float), W[rows]
    folds = list(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(W))

    def mse(features: np.ndarray) -> tuple[float, float]:
        res_t, res_y = np.empty(len(T)), np.empty(len(T))
        XY = np.column_stack([T, features])
        for train, test in folds:
            if features.shape[1]:
                pt = hgb_classifier(seed).fit(features[train], T[train]).predict_proba(features[test])[:, 1]
            else:
                pt = np.full(len(test), T[train].mean())
            res_t[test] = T[test] - pt
            res_y[test] = Y[test] - hgb_regressor(seed).fit(XY[train], Y[train]).predict(XY[test])
        return float(np.mean(res_t ** 2)), float(np.mean(res_y ** 2))

    full_t, full_y = mse(W)
    out = {}
    for name, cols in groups.items():
        keep = np.setdiff1d(np.arange(W.shape[1]), cols)
        short_t, short_y = mse(W[:, keep])
        c_t = float(np.clip(1 - full_t / short_t, 0.0, 0.99))
        c_y = float(np.clip(1 - full_y / short_y, 0.0, 0.99))
        out[name] = {"c_y": c_y, "c_t": c_t, "bias_factor": float(np.sqrt(c_y * c_t / (1 - c_t)))}
    return out


def sensitivity(fitted, ate: dict, strengths: dict[str, dict], *, alpha: float, estimator: str) -> Refutation:
    """EconML's sensitivity interval at the strength of the strongest observed confounder."""
    args = {"T": 1} if estimator == "dr_learner" else {}
    rv = float(fitted.robustness_value(alpha=alpha, interval_type="ci", **args))
    rv_theta = float(fitted.robustness_value(alpha=alpha, interval_type="theta", **args))
    lo0, hi0 = (float(v) for v in fitted.sensitivity_interval(alpha=alpha, c_y=0.0, c_t=0.0, interval_type="ci", **args))
    details = {"robustness_value": rv, "robustness_value_theta": rv_theta,
               "theta_interval_without_confounding": [lo0, hi0], "benchmarks": strengths,
               "method": "EconML sensitivity_interval (Chernozhukov et al. 2022), rho = 1",
               "note": "theta is EconML's sensitivity target: the average effect of the partially linear "
                       "(for DML: overlap-weighted) model, which can differ slightly from the reported ATE"}
    rule = ("pass when the sensitivity interval at the partial R^2 of the strongest observed confounder "
            "(c_y, c_t) excludes zero on the estimate's side; not applicable when the estimate's own "
            "interval contains zero")
    if not strengths:
        return Refutation(name="sensitivity", new_effect=None, p_value=None, passed=None, rule=rule,
                          details={**details, "note": "no observed confounder to benchmark against"})
    name, strongest = max(strengths.items(), key=lambda kv: kv[1]["bias_factor"])
    lo, hi = (float(v) for v in fitted.sensitivity_interval(alpha=alpha, c_y=strongest["c_y"],
                                                           c_t=strongest["c_t"], interval_type="ci", **args))
    details.update({"benchmark_confounder": name, "c_y": strongest["c_y"], "c_t": strongest["c_t"],
                    "sensitivity_ci": [lo, hi]})
    if ate["ci_low"] <= 0 <= ate["ci_high"]:
        passed = None
    else:
        passed = bool(lo > 0) if ate["value"] > 0 else bool(hi < 0)
    # the bound nearest zero: how far the effect could be pushed by such a confounder
    new = lo if ate["value"] > 0 else hi
    return Refutation(name="sensitivity", new_effect=new, p_value=None, passed=passed, rule=rule, details=details)


def groups_of(columns: list[str], confounders: list[str]) -> dict[str, np.ndarray]:
    """Map each original confounder to the indices of its encoded columns (``col`` or ``col=level``)."""
    idx = pd.Index(columns)
    out = {}
    for c in confounders:
        cols = [i for i, name in enumerate(idx) if name == c or name.startswith(c + "=")]
        if cols:
            out[c] = np.asarray(cols)
    return out
