"""The ship decision (DESIGN.md section 4): paired differences against thresholds, Holm-adjusted.

Each criterion's interval of (candidate - baseline) is compared with its threshold: pass when the
whole interval lies above, fail when the whole interval lies below, inconclusive otherwise.
Multiplicity over all candidate x criterion tests is controlled with Holm's step-down procedure
(Holm 1979): tests are taken in order of their p-values and the k-th (from 0) is judged with an
interval at level 1 - alpha / (m - k); at the first test that cannot be decided, it and every later
test are inconclusive. A candidate whose diagnostics miss the thresholds is inconclusive on every
criterion; invalid data never reaches this point (it is an input error), and degenerate intervals
(zero or undefined standard error) are inconclusive, so a gate never passes on them.

With `estimator = "auto"` each criterion is decided on the automatic choice made for the candidate's
paired difference (ope/selection.py): its interval holds at the family-wise level whichever estimator
was chosen, at every Holm level the test is asked at.

The diagnostics thresholds have safe defaults (datasets/gate_config.py, DEFAULT_*): an effective
sample size floor, absolute and relative to n; a ceiling on the unsupported mass read at its upper
bound (held back unless the data show the mass is below it); and a mean weight significantly above 1
(wrong propensities). The thresholds in force are recorded in the document (`diagnostics_thresholds`)
with the warnings about settings that cannot block a worse candidate (`warnings`).
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from livegate.datasets.errors import InputError, Problem
from livegate.datasets.gate_config import DIAGNOSTICS_DEFAULTS, GateConfig

from .diagnostics import MEAN_WEIGHT_TOLERANCE, UNSUPPORTED_Z, mean_weight_z
from .evaluate import EvaluationResult
from .selection import AUTO

SCHEMA = "livegate.gate/1"
EXIT = {"pass": 0, "fail": 1, "inconclusive": 3}


@dataclass
class GateDecision:
    """The ship decision: `decision` is pass, fail or inconclusive and `exit_code` the CLI's (0, 1, 3);
    `evaluation` and `causal_result` are the result objects it was made from."""

    decision: str
    candidates: list[dict]
    multiplicity: dict
    config: GateConfig
    causal: dict | None = None
    evaluation: object = None       # EvaluationResult
    causal_result: object = None    # livegate.causal.CausalResult, when the gate has a causal requirement
    provenance: dict = field(default_factory=dict)
    #: settings that let a worse candidate through (loosened thresholds, criteria that cannot block one)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT[self.decision]

    def to_dict(self) -> dict:
        doc = {"schema": SCHEMA, "decision": self.decision, "exit_code": self.exit_code,
               "level": self.config.level, "gamma": self.config.gamma if self.config.level == "session" else None,
               "baseline": self.config.baseline, "estimator": self.config.estimator, "alpha": self.config.alpha,
               "ci": self.config.ci, "multiplicity": self.multiplicity,
               "diagnostics_thresholds": diagnostics_thresholds(self.config), "warnings": self.warnings,
               "candidates": self.candidates, "causal": self.causal,
               "evaluation": None if self.evaluation is None else self.evaluation.to_dict(),
               "causal_result": None if self.causal_result is None else self.causal_result.to_dict(),
               "config": self.config.raw}
        doc.update(self.provenance)
        return doc

    def to_frame(self) -> "pd.DataFrame":  # noqa: F821
        """One row per candidate and criterion: the decision, the Holm-adjusted interval and its threshold."""
        import pandas as pd
        return pd.DataFrame([{"candidate": c["name"], "metric": r["metric"], "rule": r["rule"],
                              "decision": r["decision"], "difference": r["difference"], "ci_low": r.get("ci_low"),
                              "ci_high": r.get("ci_high"), "threshold": r["threshold"],
                              "confidence": r.get("confidence"), "reason": r.get("reason")}
                             for c in self.candidates for r in c["criteria"]])

    def _repr_html_(self) -> str:
        head = f"<p><b>livegate gate: {self.decision.upper()}</b> (exit code {self.exit_code})</p>"
        causal = "" if not self.causal else \
            f"<p>causal requirement: {self.causal['decision']} ({html.escape(self.causal['reason'])})</p>"
        warnings = "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings)
        return head + self.to_frame().to_html(index=False, float_format="{:.4g}".format) + causal + \
            (f"<p>Warnings:</p><ul>{warnings}</ul>" if warnings else "")


def diagnostics_thresholds(cfg: GateConfig) -> dict:
    """The diagnostics thresholds in force, how each is read, and which ones gate.toml loosened."""
    return {**cfg.diagnostics_settings,
            "unsupported_mass_bound": "upper", "unsupported_mass_z": UNSUPPORTED_Z,
            "mean_weight_tolerance": MEAN_WEIGHT_TOLERANCE,
            "defaults": dict(DIAGNOSTICS_DEFAULTS), "loosened": cfg.loosened}


def _gated_ess(diag: dict, cfg: GateConfig) -> tuple[int, float]:
    """(samples, effective sample size) the floor applies to: rows per decision; over sessions the
    sessions and the effective number of sessions, because the products of weights along a session
    are what the importance-weighted session estimators rest on (measured on the session simulator:
    at 100-700 effective sessions of 20,000-40,000 the intervals of wdr missed the truth). drl
    multiplies no weights: its corrections rest on the fitted marginal weights u_t w_t, so its floor
    reads their effective number of sessions (`marginal_ess`, ope/sessions.py)."""
    if cfg.level == "session" and cfg.estimator.split(":")[0] == "drl" and diag.get("marginal_ess") is not None:
        return diag["n"], diag["marginal_ess"]
    return diag["n"], diag["ess"]


def _required_ess(n: int, cfg: GateConfig) -> float:
    return max(cfg.min_ess, cfg.min_ess_share * n)


def _pct(x: float) -> str:
    return f"{x * 100:.3g}%"


def _ess_text(ess: float) -> str:
    return f"{ess:,.0f}" if ess >= 10 else f"{ess:.2g}"


def _diagnostic_failures(diag: dict, cfg: GateConfig) -> list[str]:
    """Which thresholds a candidate's weight diagnostics miss (each one makes it inconclusive)."""
    failures = []
    n, ess = _gated_ess(diag, cfg)
    required = _required_ess(n, cfg)
    if not ess >= required:  # NaN misses too
        which = "effective sample size" if cfg.level != "session" else \
            "effective number of sessions" + (" (drl's marginal weights)" if ess is diag.get("marginal_ess") else "")
        failures.append(f"{which} {_ess_text(ess)} < {required:,.0f} required (min_ess "
                        f"{cfg.min_ess:,.0f}; min_ess_share {_pct(cfg.min_ess_share)} of {n:,} "
                        f"{'sessions' if cfg.level == 'session' else 'rows'})")
    # the mass is estimated from the mean weight, whose noise grows with the weights: a candidate is
    # held back unless the data show (upper bound at 3 standard errors) that it is below the ceiling
    upper = diag["unsupported_mass_upper"]
    if not upper <= cfg.max_unsupported_mass:
        failures.append(f"unsupported mass upper bound {_pct(upper)} (estimate {_pct(diag['unsupported_mass'])}) > "
                        f"max_unsupported_mass {_pct(cfg.max_unsupported_mass)}")
    # E[w] <= 1 for any candidate under correct propensities: a mean clearly above 1 means they are wrong
    z, mean = mean_weight_z(diag), diag["mean_weight"]
    if z > cfg.max_mean_weight_z and mean - 1.0 > MEAN_WEIGHT_TOLERANCE:
        failures.append(f"mean importance weight {mean:.3f} is {z:.1f} standard errors above 1 (> max_mean_weight_z "
                        f"{cfg.max_mean_weight_z:.3g}): the logged propensities look wrong (too small, or not the "
                        "probability of the logged action)")
    return failures


def _margin_warnings(cfg: GateConfig, metrics: dict) -> list[str]:
    """An absolute non-inferiority margin at least the baseline's own value: it cannot block a worse
    candidate (a relative one of 100% or more is warned about from the configuration alone)."""
    out = []
    for i, crit in enumerate(cfg.criteria):
        if crit.rule != "non_inferior" or crit.relative:
            continue
        base_value = metrics[crit.metric][cfg.baseline].estimates.get(cfg.estimator, {}).get("value")
        if base_value is not None and math.isfinite(base_value) and crit.threshold >= abs(base_value) > 0:
            out.append(f"[[criterion]] {i + 1} ({crit.metric} non_inferior): margin = {crit.threshold:g} is at least "
                       f"the baseline's own value ({base_value:.4g}), so it passes a candidate that loses all of it: "
                       "this criterion cannot block a worse candidate. Use a smaller margin, e.g. "
                       "relative = true with margin = 0.05")
    return out


def decide(evaluation: EvaluationResult, cfg: GateConfig, causal: dict | None = None) -> GateDecision:
    """Apply the gate's criteria to an evaluation. `causal` is the causal requirement's verdict
    (livegate.causal.requirement_verdict: a dict with "decision" pass or fail), when the gate has one."""
    estimator, base = cfg.estimator, cfg.baseline
    metrics = evaluation.metrics
    problems = [Problem(str(cfg.source), f"criterion metric '{c.metric}' was not evaluated",
                        fix=f"use one of {', '.join(metrics)} or define it under [rewards]")
                for c in cfg.criteria if c.metric not in metrics]
    if problems:
        raise InputError(problems)

    tests = []  # every candidate x criterion, with what Holm needs
    candidates = []
    for cand in cfg.candidates:
        diag = metrics[cfg.criteria[0].metric][cand.name].diagnostics
        failures = _diagnostic_failures(diag, cfg)
        # the figures the thresholds were compared with, next to the verdict
        n, ess = _gated_ess(diag, cfg)
        entry = {"name": cand.name, "decision": None,
                 "diagnostics": {"ok": not failures, "failures": failures, "ess": ess, "n": n,
                                 "ess_label": "drl ESS" if ess is diag.get("marginal_ess") else "ESS",
                                 "unit": "sessions" if cfg.level == "session" else "rows",
                                 "ess_share": ess / n if n else None, "min_ess_required": _required_ess(n, cfg),
                                 "unsupported_mass": diag["unsupported_mass"],
                                 "unsupported_mass_upper": diag["unsupported_mass_upper"],
                                 "mean_weight": diag["mean_weight"], "mean_weight_se": diag["mean_weight_se"]},
                 "criteria": []}
        for crit in cfg.criteria:
            result = metrics[crit.metric][cand.name]
            if estimator not in result.estimates:
                raise InputError(Problem(str(cfg.source), f"estimator '{estimator}' has no estimate for "
                                         f"'{cand.name}' on {crit.metric}", fix="see the evaluation's warnings"))
            point = result.vs_baseline[estimator]
            # auto: the baseline's value under the candidate chosen for the paired difference
            baseline_value = point["baseline_value"] if estimator == AUTO else \
                metrics[crit.metric][base].estimates[estimator]["value"]
            threshold = crit.bound(baseline_value)
            se = point["se"]
            keys, coefs, null, _ = _criterion_contrast(crit, cand.name, base, estimator, threshold, baseline_value)
            # the p-value of the interval method that decides the test, so that Holm's order is its own
            p = _engine(evaluation, crit.metric, cand.name, estimator).p_value(keys, coefs, null)
            degenerate = None
            if se == 0:
                degenerate = "degenerate data: the difference has no variance"
            elif se is None or not (math.isfinite(se) and math.isfinite(p)):
                degenerate = f"degenerate data: the {evaluation.config.ci} interval of the difference is undefined"
            p = 1.0 if degenerate else p
            row = {"metric": crit.metric, "rule": crit.rule, "threshold": threshold, "relative": crit.relative,
                   "difference": point["difference"], "baseline_value": baseline_value, "p_value": p}
            if estimator == AUTO:  # which candidate the automatic choice made for this difference
                row["selected"] = point["selected"]
            entry["criteria"].append(row)
            tests.append((p, row, failures, degenerate, cand.name, crit))
        candidates.append(entry)

    m = len(tests)
    stopped = False
    for k, (p, row, failures, degenerate, name, crit) in enumerate(sorted(tests, key=lambda t: t[0])):
        level_alpha = cfg.alpha / (m - k)
        low, high, method, open_end = _criterion_interval(evaluation, crit, name, base, estimator, row, level_alpha)
        row.update(ci_low=low, ci_high=high, confidence=1 - level_alpha, ci_method=method)
        if open_end:
            row["ci_open"] = open_end
        thr = row["threshold"]
        # the statistical verdict first: Holm stops at the first hypothesis it cannot reject,
        # whatever the candidate's diagnostics (they can only turn a verdict into inconclusive)
        if degenerate:
            verdict, reason = "inconclusive", degenerate
        elif stopped:
            verdict, reason = "inconclusive", (f"Holm: an earlier test could not be decided; "
                                               f"interval [{low:.4g}, {high:.4g}] vs {thr:.4g}")
        elif low > thr:
            verdict, reason = "pass", f"interval [{low:.4g}, {high:.4g}] lies above {thr:.4g}"
        elif high < thr:
            verdict, reason = "fail", f"interval [{low:.4g}, {high:.4g}] lies below {thr:.4g}"
        else:
            verdict, reason = "inconclusive", f"interval [{low:.4g}, {high:.4g}] contains {thr:.4g}"
        if open_end and not degenerate:
            reason += _OPEN_NOTE[open_end]
        if verdict == "inconclusive":
            stopped = True
        if failures:
            verdict, reason = "inconclusive", "diagnostics: " + "; ".join(failures) + f" ({reason})"
        row.update(decision=verdict, reason=reason)

    for entry in candidates:
        entry["decision"] = _combine(c["decision"] for c in entry["criteria"])
    decisions = [c["decision"] for c in candidates] + ([causal["decision"]] if causal else [])
    multiplicity = {"method": "holm", "n_tests": m,
                    "note": f"{m} tests (candidates x criteria) at family-wise level {cfg.alpha}: the test with the "
                            f"k-th smallest p-value (k = 0, 1, ...) is judged with a 1 - {cfg.alpha}/({m} - k) "
                            "interval, and testing stops at the first that cannot be decided (Holm 1979)."}
    warnings = list(dict.fromkeys([*cfg.warnings, *_margin_warnings(cfg, metrics)]))
    return GateDecision(decision=_combine(decisions), candidates=candidates, multiplicity=multiplicity,
                        config=cfg, causal=causal, warnings=warnings)


def _criterion_contrast(crit, name, base, estimator, threshold, baseline_value):
    """(keys, coefficients, null value, shift) of the criterion's paired test on the same rows.

    An absolute criterion tests candidate - baseline against its threshold. A relative threshold
    r |baseline| depends on the baseline's own estimate, so it is tested as one contrast,
    candidate - (1 + r s) baseline against 0 with s the baseline's sign, whose interval carries the
    baseline's noise too; adding `shift` = r s baseline reads that interval against the threshold in
    the difference's units.
    """
    keys = [(name, estimator), (base, estimator)]
    if not crit.relative:
        return keys, [1.0, -1.0], threshold, 0.0
    r = crit.threshold if crit.rule == "improves" else -crit.threshold
    sign = 1.0 if baseline_value >= 0 else -1.0
    return keys, [1.0, -(1.0 + r * sign)], 0.0, r * abs(baseline_value)


def _criterion_interval(evaluation, crit, name, base, estimator, row, level_alpha):
    """Interval of the criterion's paired contrast, in the units of the difference."""
    keys, coefs, _, shift = _criterion_contrast(crit, name, base, estimator, row["threshold"], row["baseline_value"])
    iv = _engine(evaluation, crit.metric, name, estimator).interval(keys, coefs, level_alpha)
    return iv.ci_low + shift, iv.ci_high + shift, iv.method, getattr(iv, "open_end", None)


#: why a robust interval's end is open (inference.TailShape.ends): the verdict cannot rest on it
_OPEN_NOTE = {side: f"; its {which} open (the metric's a-priori bound, or infinite): the terms' {tail} too "
                    "heavy or too sparse at this sample size for the data to set it"
              for side, which, tail in (("lower", "lower end is", "left tail is"),
                                        ("upper", "upper end is", "right tail is"),
                                        ("both", "ends are", "tails are"))}


def _engine(evaluation, metric: str, candidate: str, estimator: str):
    """What computes a criterion's intervals and p-values: the evaluation's engine, or for `auto` the
    choice made for the candidate's paired difference, whose intervals hold at the family-wise level
    whichever candidate estimator was chosen (ope/selection.py, FamilyChoice)."""
    if estimator == AUTO:
        return evaluation.selections[metric].difference[candidate]
    return evaluation.engines[metric]


def _combine(decisions) -> str:
    decisions = list(decisions)
    if "fail" in decisions:
        return "fail"
    if "inconclusive" in decisions or not decisions:
        return "inconclusive"
    return "pass"
