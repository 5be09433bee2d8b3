"""Refutations of the effect estimate, each with a documented rule, a state and the numbers behind it.

A refuter tests the *estimator's stability* under changes that should (not) move the estimate. No
refuter can show that there is no unobserved confounding: with the strongest confounders left out,
placebo, random-common-cause and data-subset refuters all still passed (STACK-NOTES). Only the
sensitivity analysis speaks to unobserved confounding, and only relative to a benchmark.

States (``Refutation.state``): ``pass``, ``fail``, ``not_applicable`` (the refutation does not apply;
``passed`` is null) and ``unstable`` (its verdict changes with the seed; ``passed`` is null too, and it
is never reported as a pass).

What the three DoWhy refuters re-estimate: the learner's average CATE over the estimand's rows (DoWhy's
``target_units``: every row for the ATE and the ATO, the treated for the ATT, the untreated for the
ATC), refitted on the changed data. They are compared with that same average on the original data
(``reference``, DoWhy's value) on the scale of its standard error ``se``.

Seeds: each DoWhy refuter runs ``k`` times (``CausalConfig.refuter_simulations``), one simulation per
seed, the seeds drawn from the check's seed (``refuter_seeds``). One call with ``k`` simulations
would not do: DoWhy's data-subset refuter given an integer seed draws the *same* subset in every
simulation (measured with DoWhy 0.14), and the per-seed estimates are what shows instability.

Rules (``z`` = z_{1-alpha/2}, ``d_i`` the change of run ``i``, ``d`` their mean, ``s`` the scale of one
run's change):

* ``placebo_treatment`` (treatment permuted across rows; ``d_i`` = the placebo effect, ``s = se``):
  a permuted treatment has no effect, and the mean of ``k`` independent permutations has a standard
  error of about ``se / sqrt(k)``: pooled rule ``|d| <= z * se / sqrt(k)``.
* ``random_common_cause`` (an independent N(0,1) column joins the adjustment set; ``d_i`` = new
  estimate - reference, ``s = se``): adjusting for noise should not move the estimate by more than its
  own uncertainty: pooled rule ``|d| <= z * se`` (the new estimate stays inside the original interval).
* ``data_subset`` (re-estimated on a random subset of a fraction ``f`` of the rows; ``s = se *
  sqrt((1 - f) / f)``, the sampling noise of a subset estimate around the full-sample one): pooled
  rule ``|d| <= z * s``.
* Stability (all three): each run's own change is judged too, at ``|d_i| <= z_{1-alpha/(2k)} * s``
  (Bonferroni over the ``k`` runs, so that a stable estimator has at most an ``alpha`` chance of any
  run failing). State: ``fail`` when the pooled rule fails; ``unstable`` when it passes but a run
  fails its own check; ``pass`` otherwise. With ``k = 1`` stability is not assessed.
* ``sensitivity`` (EconML ``sensitivity_interval`` / ``robustness_value``, Chernozhukov, Cinelli,
  Newey, Sharma & Syrgkanis 2022, "Long story short: omitted variable bias in causal machine
  learning"), benchmarked against the strongest observed confounder: for each confounder ``j`` its
  partial R^2 with the outcome (``c_y``) and with the treatment (``c_t``) is measured by dropping it
  from cross-fitted first stages; the sensitivity interval is computed at the strengths of the
  strongest one. Pass when that interval excludes zero on the estimate's side: an unobserved
  confounder as strong as the strongest observed one would not erase the effect. Not applicable
  when the estimate's own interval already contains zero. Deterministic given the fit: no seeds.

``p_value`` is DoWhy's normal-approximation p-value over the ``k`` per-seed estimates (null for
``k = 1``); with a handful of runs it is coarse, so the rules above use the standard error instead.
"""
from __future__ import annotations

from types import SimpleNamespace

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
    exactly or when there is one (numpy warns of a division by zero); the p-value is then null."""
    return np.errstate(divide="ignore", invalid="ignore")


def refuter_seeds(seed: int, k: int) -> list[int]:
    """``k`` distinct seeds for the runs of a refuter, derived from the check's seed (NumPy's
    SeedSequence: reproducible, and unrelated to ``seed + i`` streams used elsewhere)."""
    return [int(s) for s in np.random.SeedSequence([int(seed), 0x5EED]).generate_state(int(k))]


def _p(reference: float, estimates: list[float]) -> float | None:
    from dowhy.causal_refuter import perform_normal_distribution_test

    if len(estimates) < 2:
        return None
    with _quiet_p_value():
        value = float(perform_normal_distribution_test(SimpleNamespace(value=reference), estimates))
    return value if np.isfinite(value) else None


def judge(changes: np.ndarray, scale: float, pooled_scale: float, alpha: float) -> tuple[str, dict]:
    """State of a seeded refuter from its per-run ``changes`` (rules in the module docstring)."""
    changes = np.asarray(changes, dtype=float)
    k = len(changes)
    pooled_bound = z_quantile(alpha) * pooled_scale
    run_bound = z_quantile(alpha / k) * scale
    runs_ok = np.abs(changes) <= run_bound
    if not abs(changes.mean()) <= pooled_bound:
        state = "fail"
    elif k > 1 and not runs_ok.all():
        state = "unstable"
    else:
        state = "pass"
    return state, {"threshold": pooled_bound, "run_threshold": run_bound if k > 1 else None,
                   "runs_passed": int(runs_ok.sum()), "runs": k}


def _runs(refute_once, seeds: list[int]) -> list[float]:
    with _quiet_p_value():
        return [float(refute_once(s).new_effect) for s in seeds]


def _seed_rows(seeds, estimates, changes, threshold) -> list[dict]:
    return [{"seed": s, "new_effect": v, "change": c, "passed": bool(abs(c) <= threshold)}
            for s, v, c in zip(seeds, estimates, changes)]


def _passed(state: str) -> bool | None:
    return {"pass": True, "fail": False}.get(state)


def _stability_text(state: str, info: dict) -> str:
    if info["runs"] < 2:
        return " (one seed: stability not assessed)"
    text = f"; each of the {info['runs']} seeded runs within {info['run_threshold']:.4g} (alpha/k per run)"
    if state == "unstable":
        text += f": only {info['runs_passed']} of {info['runs']} were, so the verdict changes with the seed (unstable)"
    return text


def placebo_treatment(data, estimand, estimate, treatment: str, reference: dict, *, alpha: float, seeds: list[int]
                      ) -> Refutation:
    """DoWhy's placebo-treatment refuter with a permuted treatment, one seeded run per seed (DoWhy's
    default random placebo draws from NumPy's global generator and would not be reproducible)."""
    from dowhy.causal_refuters.placebo_treatment_refuter import PlaceboType, refute_placebo_treatment

    def once(seed):
        return refute_placebo_treatment(data, estimand, estimate, [treatment], num_simulations=1,
                                        placebo_type=PlaceboType.PERMUTE, random_state=seed)

    estimates = _runs(once, seeds)
    k, se = len(seeds), reference["se"]
    state, info = judge(np.asarray(estimates), se, se / np.sqrt(k), alpha)
    new = float(np.mean(estimates))
    return Refutation(
        name="placebo_treatment", new_effect=new, p_value=_p(0.0, estimates), passed=_passed(state), state=state,
        rule=f"pass when |mean placebo effect| <= z_(1-alpha/2) * se / sqrt(k) = {info['threshold']:.4g} "
             f"(treatment permuted across rows, k = {k} seeded runs){_stability_text(state, info)}",
        details={"simulations": k, "placebo_type": "permute", **info, "original_effect": reference["value"],
                 "original_se": se,
                 "per_seed": _seed_rows(seeds, estimates, estimates, info["run_threshold"] or info["threshold"])})


def random_common_cause(data, estimand, estimate, reference: dict, *, alpha: float, seeds: list[int]
                        ) -> Refutation:
    """DoWhy's random-common-cause refuter: an independent standard-normal column joins the adjustment set."""
    from dowhy.causal_refuters.random_common_cause import refute_random_common_cause

    def once(seed):
        return refute_random_common_cause(data, estimand, estimate, num_simulations=1, random_state=seed)

    estimates = _runs(once, seeds)
    changes = np.asarray(estimates) - reference["value"]
    k, se = len(seeds), reference["se"]
    state, info = judge(changes, se, se, alpha)
    new = float(np.mean(estimates))
    return Refutation(
        name="random_common_cause", new_effect=new, p_value=_p(reference["value"], estimates), passed=_passed(state),
        state=state,
        rule=f"pass when |mean new estimate - estimate| <= z_(1-alpha/2) * se = {info['threshold']:.4g} "
             f"(the new estimate stays inside the original interval; k = {k} seeded runs)"
             f"{_stability_text(state, info)}",
        details={"simulations": k, "change": new - reference["value"], **info,
                 "original_effect": reference["value"], "original_se": se,
                 "per_seed": _seed_rows(seeds, estimates, changes, info["run_threshold"] or info["threshold"])})


def data_subset(data, estimand, estimate, reference: dict, *, alpha: float, seeds: list[int],
                fraction: float = SUBSET_FRACTION) -> Refutation:
    """DoWhy's data-subset refuter: re-estimate on a random subset of ``fraction`` of the rows, per seed."""
    from dowhy.causal_refuters.data_subset_refuter import refute_data_subset

    def once(seed):
        return refute_data_subset(data, estimand, estimate, subset_fraction=fraction, num_simulations=1,
                                  random_state=seed)

    estimates = _runs(once, seeds)
    changes = np.asarray(estimates) - reference["value"]
    k, se = len(seeds), reference["se"]
    scale = se * np.sqrt((1 - fraction) / fraction)
    state, info = judge(changes, scale, scale, alpha)
    new = float(np.mean(estimates))
    return Refutation(
        name="data_subset", new_effect=new, p_value=_p(reference["value"], estimates), passed=_passed(state),
        state=state,
        rule=f"pass when |mean subset estimate - estimate| <= z_(1-alpha/2) * se * sqrt((1-f)/f) = "
             f"{info['threshold']:.4g} (subsets of f = {fraction:g} of the rows, k = {k} seeded runs)"
             f"{_stability_text(state, info)}",
        details={"simulations": k, "subset_fraction": fraction, "change": new - reference["value"], **info,
                 "original_effect": reference["value"], "original_se": se,
                 "per_seed": _seed_rows(seeds, estimates, changes, info["run_threshold"] or info["threshold"])})


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
        return Refutation(name="sensitivity", new_effect=None, p_value=None, passed=None, state="not_applicable",
                          rule=rule, details={**details, "note": "no observed confounder to benchmark against"})
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
    state = "not_applicable" if passed is None else "pass" if passed else "fail"
    return Refutation(name="sensitivity", new_effect=new, p_value=None, passed=passed, state=state, rule=rule,
                      details=details)


def groups_of(columns: list[str], confounders: list[str]) -> dict[str, np.ndarray]:
    """Map each original confounder to the indices of its encoded columns (``col`` or ``col=level``)."""
    idx = pd.Index(columns)
    out = {}
    for c in confounders:
        cols = [i for i, name in enumerate(idx) if name == c or name.startswith(c + "=")]
        if cols:
            out[c] = np.asarray(cols)
    return out
