"""Result documents for the report tests, shaped like the ones `ope`, `causal` and the gate write.

The numbers are made up but consistent (intervals around their values, gate decisions that follow
DESIGN.md's rule from the intervals), so a rendered report reads like a real one. Builders take
options for the cases the tests need: hostile names, no causal part, no time windows, nulls.
"""
from __future__ import annotations

import copy
from typing import Any

VERSION = "0.1.0"
HOSTILE_POLICY = "<script>alert(1)</script>"
HOSTILE_METRIC = 'watch "seconds" & more'
Z = 1.959963984540054

# Per metric: the baseline's mean and the scale of a standard error.
_METRICS = {"watch_seconds": (100.0, 2.0), "gift_value": (0.5, 0.01), "click": (0.12, 0.002)}
# Per policy: relative lift over the baseline (the baseline itself is 0).
_LIFTS = {"logging": 0.0, "better": 0.12, "worse": -0.07, "same": 0.001}
_ESTIMATOR_SE = {"ips": 1.6, "snips": 1.0, "dr": 0.8, "dm": 0.5, "sndr": 0.8}


def _estimate(value: float, se: float, method: str = "normal") -> dict:
    return {"value": value, "se": se, "ci_low": value - Z * se, "ci_high": value + Z * se, "ci_method": method}


def _diagnostics(policy: str, index: int, n: int, metric: str, reward_model: bool) -> dict:
    baseline = policy == "logging"
    ess = float(n) if baseline else n / (3.0 + 4 * index)
    edges = [0.0, 1.0] if baseline else [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    counts = [n] if baseline else [int(n * f) for f in (0.45, 0.2, 0.15, 0.1, 0.06, 0.035, 0.005)]
    warnings = [] if baseline or ess > n / 5 else [
        f"effective sample size is {ess:,.0f} of {n:,} rows: a few heavily weighted rows carry the estimate"]
    return {
        "n": n, "ess": ess, "max_weight": 1.0 if baseline else 31.2, "mean_weight": 1.0 if baseline else 0.998,
        "unsupported_mass": 0.0 if baseline else 0.0004 * index,
        "unsupported_mass_lower": 0.0 if baseline else 0.0001 * index,
        "unsupported_mass_upper": 0.0 if baseline else 0.0123 * index,
        "weight_quantiles": {"0.5": 1.0, "0.9": 1.0, "0.99": 1.0} if baseline else {"0.5": 0.7, "0.9": 3.1, "0.99": 12.4},
        "weight_histogram": {"edges": edges, "counts": counts},
        "reward_model": ({"kind": "regressor", "metric_name": "r2", "value": 0.31 if metric == "watch_seconds" else 0.12,
                          "n_folds": 3} if reward_model else None),
        "compact_form": False, "estimated_propensities": False, "warnings": warnings,
    }


def _windows(metrics: list[str], policies: list[str], estimator: str) -> dict:
    windows = []
    for day in range(7):
        window: dict[str, Any] = {"start": f"2026-01-{5 + day:02d}T00:00:00+00:00",
                                  "end": f"2026-01-{6 + day:02d}T00:00:00+00:00", "n": 7000 + 100 * day, "metrics": {}}
        for metric in metrics:
            base, se = _METRICS.get(metric, (1.0, 0.05))
            wobble = 1 + 0.03 * ((day * 7) % 5 - 2)
            window["metrics"][metric] = {
                p: {"value": base * (1 + _LIFTS.get(p, 0.05)) * wobble,
                    "ci_low": base * (1 + _LIFTS.get(p, 0.05)) * wobble - 2.6 * se * Z,
                    "ci_high": base * (1 + _LIFTS.get(p, 0.05)) * wobble + 2.6 * se * Z}
                for p in policies}
        windows.append(window)
    return {"estimator": estimator, "windows": windows}


def evaluation_document(policies: tuple[str, ...] = ("logging", "better", "worse"),
                        metrics: tuple[str, ...] = ("watch_seconds", "gift_value"),
                        estimators: tuple[str, ...] = ("ips", "snips", "dr"),
                        time_windows: bool = True, reward_model: bool = True, n: int = 50_000,
                        definitions: dict[str, str] | None = None) -> dict:
    """`definitions` (metric -> expression) is written as `metric_definitions`; None leaves the key
    out, as documents written before it existed do."""
    baseline = policies[0]
    blocks = {}
    for metric in metrics:
        base, scale = _METRICS.get(metric, (1.0, 0.05))
        entries = {}
        for index, policy in enumerate(policies):
            lift = _LIFTS.get(policy, 0.05)
            value = base * (1 + lift)
            estimates = {e: _estimate(value * (1 + 0.002 * k), scale * _ESTIMATOR_SE.get(e, 1.0) * (1 if index else 0.5))
                         for k, e in enumerate(estimators)}
            vs = {} if policy == baseline else {
                e: {"difference": estimates[e]["value"] - base, "se": scale * 0.6,
                    "ci_low": estimates[e]["value"] - base - Z * scale * 0.6,
                    "ci_high": estimates[e]["value"] - base + Z * scale * 0.6,
                    "relative": (estimates[e]["value"] - base) / base}
                for e in estimators}
            entries[policy] = {"estimates": estimates, "diagnostics": _diagnostics(policy, index, n, metric, reward_model),
                               "vs_baseline": vs}
        blocks[metric] = {"policies": entries}
    metric = metrics[0]
    return {
        "schema": "livegate.evaluation/1",
        "livegate_version": VERSION,
        "inputs": {"logs": {"path": "logs.parquet", "fingerprint": "sha256:" + "ab" * 32},
                   "policies": {p: {"path": f"policies/{p}.parquet", "fingerprint": "sha256:" + f"{i:02d}" * 32}
                                for i, p in enumerate(policies) if p != "logging"},
                   "q_hat": None},
        "seed": 0,
        "config": {"estimators": list(estimators), "ci": "normal", "alpha": 0.05, "baseline": baseline,
                   "rewards": {m: m for m in metrics}},
        "data": {
            "n_rows": n, "n_decisions": n, "n_actions": 200, "n_positions": 1,
            "period": {"start": "2026-01-05T00:00:00+00:00", "end": "2026-01-11T23:59:59+00:00"},
            "propensity": {"min": 0.01, "max": 0.9, "source": "logged"},
            "rewards": {m: {"mean": _METRICS.get(m, (1.0, 0))[0], "std": 3 * _METRICS.get(m, (1.0, 0))[0], "min": 0.0,
                            "max": 40 * _METRICS.get(m, (1.0, 0))[0], "zero_fraction": 0.62,
                            "quantiles": {"0.5": 0.0, "0.9": 2.5 * _METRICS.get(m, (1.0, 0))[0],
                                          "0.99": 15 * _METRICS.get(m, (1.0, 0))[0]}} for m in metrics},
        },
        "baseline": baseline,
        "metric": metric,
        "policies": copy.deepcopy(blocks[metric]["policies"]),
        "metrics": blocks,
        "time_windows": _windows(list(metrics), list(policies), "snips" if "snips" in estimators else estimators[0])
        if time_windows else None,
        "warnings": ["propensities below 0.01 were found in 12 rows; estimates lean on them"],
        **({"metric_definitions": dict(definitions)} if definitions is not None else {}),
    }


def causal_document(treatment: str = "recommended", outcome: str = "watch_seconds",
                    all_refutations_pass: bool = False) -> dict:
    """Shaped like causal/result.py's document; by default the sensitivity analysis fails."""
    confounders = ["x_viewer_activity", "x_prime_time", "x_streamer_popularity", "x_is_new", "x_device"]
    modifiers = ["x_is_new", "x_streamer_popularity"]
    document = {
        "schema": "livegate.causal/1",
        "livegate_version": VERSION,
        "inputs": {"logs": {"path": "logs.parquet", "fingerprint": "sha256:" + "ab" * 32}},
        "seed": 0,
        # causal/result.py calls its configuration "settings".
        "settings": {"estimator": "linear_dml", "first_stage": "hist_gradient_boosting", "cv": 3, "seed": 0,
                     "refuters": ["placebo_treatment", "random_common_cause", "data_subset", "sensitivity",
                                  "bootstrap"]},
        "treatment": treatment, "outcome": outcome, "confounders": confounders, "effect_modifiers": modifiers,
        "identified_estimand": "Estimand type: EstimandType.NONPARAMETRIC_ATE\n### Estimand : 1\n"
                               "Estimand name: backdoor\nEstimand expression:\n  d/d[recommended](E[watch_seconds|"
                               "x_viewer_activity,x_prime_time,x_streamer_popularity,x_is_new,x_device])",
        "graph": {"nodes": sorted(confounders + [treatment, outcome]),
                  "edges": sorted([[c, treatment] for c in confounders] + [[c, outcome] for c in confounders]
                                  + [[treatment, outcome]])},
        "n_rows": 50000, "n_treated": 21000,
        "bias_of_naive": {"difference": 100.8, "relative": 2.447},
        "refutations_passed": False,
        "naive": {"value": 142.0, "se": 3.1, "ci_low": 135.9, "ci_high": 148.1},
        "ipw": {"value": 61.0, "se": 9.5, "ci_low": 42.4, "ci_high": 79.6},
        "ate": {"estimator": "LinearDML", "value": 41.2, "se": 2.4, "ci_low": 36.5, "ci_high": 45.9},
        "refutations": [
            {"name": "placebo_treatment", "new_effect": 0.4, "p_value": 0.71, "passed": True,
             "rule": "passes when the placebo effect's interval contains 0", "details": {"simulations": 3}},
            {"name": "random_common_cause", "new_effect": 41.0, "p_value": 0.88, "passed": True,
             "rule": "passes when the new effect is within 2 SE of the estimate", "details": {"simulations": 3}},
            {"name": "data_subset", "new_effect": 40.1, "p_value": 0.62, "passed": True,
             "rule": "passes when the new effect is within 2 SE of the estimate", "details": {"fraction": 0.8}},
            {"name": "sensitivity", "new_effect": -3.0, "p_value": None, "passed": False,
             "rule": "passes when a confounder as strong as the strongest measured one leaves the sign unchanged",
             "details": {"benchmark": "x_viewer_activity", "robustness_value": 0.08}},
            {"name": "bootstrap", "new_effect": None, "p_value": None, "passed": None,
             "rule": "not applicable: the estimator's own intervals are used", "details": {}},
        ],
        "segments": [
            {"segment": "x_is_new=true", "column": "x_is_new", "n": 12000, "value": 62.0, "se": 5.0,
             "ci_low": 52.2, "ci_high": 71.8},
            {"segment": "x_is_new=false", "column": "x_is_new", "n": 38000, "value": 34.5, "se": 2.7,
             "ci_low": 29.2, "ci_high": 39.8},
            {"segment": "x_prime_time=true", "column": "x_prime_time", "n": 15000, "value": 45.0, "se": 4.1,
             "ci_low": 37.0, "ci_high": 53.0},
        ],
        "propensities": {"source": "logged"},
        "warnings": ["the sensitivity analysis shows a confounder as strong as viewer activity would flip the sign",
                     "refutation failed: sensitivity (see each refutation's rule and numbers)"],
        "notes": ["sensitivity: robustness value 0.08 (partial R^2 of an unobserved confounder that would remove "
                  "the effect)"],
        "timings": {"identify": 0.4, "estimate": 3.1, "refute": 21.7},
        "policy": {"share_recommended": 0.64, "logged_share_recommended": 0.42, "estimated_gain_vs_logged": 6.1},
    }
    if all_refutations_pass:
        document["refutations"][3].update(new_effect=12.0, passed=True)
        document["refutations_passed"] = True
        document["warnings"] = []
    return document


def _decide(low: float, high: float, threshold: float) -> str:
    if low > threshold:
        return "pass"
    if high < threshold:
        return "fail"
    return "inconclusive"


def gate_document(candidates: tuple[str, ...] = ("better", "worse"), with_causal: bool = True,
                  min_ess: float | None = None, metrics: tuple[str, ...] = ("watch_seconds", "gift_value")) -> dict:
    """A gate over `evaluation_document`, deciding each criterion from the embedded intervals.
    With `min_ess` above a candidate's ESS, that candidate is inconclusive on every criterion."""
    evaluation = evaluation_document(policies=("logging",) + tuple(candidates), metrics=metrics)
    # (metric, rule, min_effect or -margin, relative): as in gate.toml
    rules = [(metrics[0], "improves", 0.0, False)] + [(m, "non_inferior", -0.01, True) for m in metrics[1:]]
    n_tests = len(candidates) * len(rules)
    entries = []
    for name in candidates:
        ess = evaluation["metrics"][metrics[0]]["policies"][name]["diagnostics"]["ess"]
        failures = [f"effective sample size {ess:,.0f} < min_ess {min_ess:,.0f}"] if min_ess and ess < min_ess else []
        criteria = []
        for metric, rule, bound, relative in rules:
            vs = evaluation["metrics"][metric]["policies"][name]["vs_baseline"]["snips"]
            base = evaluation["metrics"][metric]["policies"]["logging"]["estimates"]["snips"]["value"]
            # Like ope/gate.py: a relative margin becomes an absolute threshold on the difference.
            threshold = bound * base if relative else bound
            # Holm widens the intervals a little.
            low, high = vs["ci_low"] - 0.3 * vs["se"], vs["ci_high"] + 0.3 * vs["se"]
            decision = "inconclusive" if failures else _decide(low, high, threshold)
            reason = ("diagnostics: " + "; ".join(failures) if failures else
                      {"pass": f"interval [{low:.4g}, {high:.4g}] lies above {threshold:.4g}",
                       "fail": f"interval [{low:.4g}, {high:.4g}] lies below {threshold:.4g}",
                       "inconclusive": f"interval [{low:.4g}, {high:.4g}] contains {threshold:.4g}"}[decision])
            criteria.append({"metric": metric, "rule": rule, "threshold": threshold, "relative": relative,
                             "difference": vs["difference"], "baseline_value": base, "ci_low": low, "ci_high": high,
                             "ci_method": "normal", "confidence": 1 - 0.05 / n_tests,
                             "p_value": 0.0004 if decision == "pass" else 0.31, "decision": decision,
                             "reason": reason})
        decisions = {c["decision"] for c in criteria}
        entries.append({"name": name,
                        "decision": "fail" if "fail" in decisions else "inconclusive" if "inconclusive" in decisions else "pass",
                        "diagnostics": {"ok": not failures, "failures": failures, "ess": ess, "n": 50_000,
                                        "unsupported_mass": evaluation["metrics"][metrics[0]]["policies"][name]
                                        ["diagnostics"]["unsupported_mass"]},
                        "criteria": criteria})
    causal = causal_document(all_refutations_pass=True) if with_causal else None
    causal_requirement = ({"required": True, "decision": "pass", "outcome": "watch_seconds",
                           "treatment": "recommended", "ate": causal["ate"],
                           "reason": "effect 41.2 [36.5, 45.9] and every refutation passed"}
                          if with_causal else None)
    decisions = {c["decision"] for c in entries} | ({causal_requirement["decision"]} if causal_requirement else set())
    decision = "fail" if "fail" in decisions else "inconclusive" if "inconclusive" in decisions else "pass"
    return {
        "schema": "livegate.gate/1",
        "livegate_version": VERSION,
        "inputs": {"config": {"path": "gate.toml", "fingerprint": "sha256:" + "cd" * 32},
                   "logs": {"path": "logs.parquet", "fingerprint": "sha256:" + "ab" * 32}},
        "seed": 0,
        "config": {"data": {"logs": "logs.parquet"}, "evaluation": {"estimator": "snips", "alpha": 0.05},
                   "candidate": [{"name": c, "policy": f"policies/{c}.parquet"} for c in candidates],
                   "criterion": [{"metric": m, "rule": r, **({"min_effect": -t} if r == "improves" else
                                                             {"margin": -t, "relative": rel})}
                                 for m, r, t, rel in rules],
                   "diagnostics": {"min_ess": min_ess or 500, "max_unsupported_mass": 0.01}},
        "decision": decision,
        "exit_code": {"pass": 0, "fail": 1, "inconclusive": 3}[decision],
        "baseline": "logging", "estimator": "snips", "alpha": 0.05, "ci": "normal",
        "multiplicity": {"method": "holm", "n_tests": n_tests,
                         "note": f"intervals are adjusted with Holm's method for {n_tests} tests"},
        "candidates": entries,
        "causal": causal_requirement,
        "evaluation": evaluation,
        "causal_result": causal,
    }


def rename(document: Any, old: str, new: str) -> Any:
    """Rename a policy or metric everywhere: dict keys and string values equal to `old`."""
    if isinstance(document, dict):
        return {(new if k == old else k): rename(v, old, new) for k, v in document.items()}
    if isinstance(document, list):
        return [rename(v, old, new) for v in document]
    return new if document == old else document


def nullify(document: Any, keep: tuple[str, ...] = ("schema",)) -> Any:
    """Every number replaced by null (as a producer writes NaN or an undefined estimate), lists of
    histogram counts included: the report must still render, with dashes."""
    if isinstance(document, dict):
        return {k: (v if k in keep else nullify(v, keep)) for k, v in document.items()}
    if isinstance(document, list):
        return [nullify(v, keep) for v in document]
    if isinstance(document, (int, float)) and not isinstance(document, bool):
        return None
    return document
