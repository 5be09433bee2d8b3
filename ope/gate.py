"""The ship decision (DESIGN.md section 4): paired differences against thresholds, Holm-adjusted.

Each criterion's interval of (candidate - baseline) is compared with its threshold: pass when the
whole interval lies above, fail when the whole interval lies below, inconclusive otherwise.
Multiplicity over all candidate x criterion tests is controlled with Holm's step-down procedure
(Holm 1979): tests are taken in order of their p-values and the k-th (from 0) is judged with an
interval at level 1 - alpha / (m - k); at the first test that cannot be decided, it and every later
test are inconclusive. A candidate whose diagnostics miss the thresholds is inconclusive on every
criterion; invalid data never reaches this point (it is an input error), and degenerate intervals
(zero or undefined standard error) are inconclusive, so a gate never passes on them.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

from livegate.datasets.errors import InputError, Problem
from livegate.datasets.gate_config import GateConfig

from .evaluate import EvaluationResult

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

    @property
    def exit_code(self) -> int:
        return EXIT[self.decision]

    def to_dict(self) -> dict:
        doc = {"schema": SCHEMA, "decision": self.decision, "exit_code": self.exit_code,
               "baseline": self.config.baseline, "estimator": self.config.estimator, "alpha": self.config.alpha,
               "ci": self.config.ci, "multiplicity": self.multiplicity, "candidates": self.candidates,
               "causal": self.causal,
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
        return head + self.to_frame().to_html(index=False, float_format="{:.4g}".format) + causal


def _diagnostic_failures(diag: dict, cfg: GateConfig) -> list[str]:
    failures = []
    if diag["ess"] < cfg.min_ess:
        failures.append(f"effective sample size {diag['ess']:,.0f} < min_ess {cfg.min_ess:,.0f}")
    # the mass is estimated from the mean weight, whose noise grows with the weights: a candidate is
    # held back when the data show (lower bound at 3 standard errors) more unsupported mass than allowed
    if diag["unsupported_mass_lower"] > cfg.max_unsupported_mass:
        failures.append(f"unsupported mass {diag['unsupported_mass']:.3f} (lower bound "
                        f"{diag['unsupported_mass_lower']:.3f}) > max_unsupported_mass {cfg.max_unsupported_mass:.3f}")
    return failures


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
        entry = {"name": cand.name, "decision": None,
                 "diagnostics": {"ok": not failures, "failures": failures, "ess": diag["ess"],
                                 "unsupported_mass": diag["unsupported_mass"], "n": diag["n"]},
                 "criteria": []}
        for crit in cfg.criteria:
            result = metrics[crit.metric][cand.name]
            if estimator not in result.estimates:
                raise InputError(Problem(str(cfg.source), f"estimator '{estimator}' has no estimate for "
                                         f"'{cand.name}' on {crit.metric}", fix="see the evaluation's warnings"))
            point = result.vs_baseline[estimator]
            baseline_value = metrics[crit.metric][base].estimates[estimator]["value"]
            threshold = crit.bound(baseline_value)
            se = point["se"]
            keys, coefs, null, _ = _criterion_contrast(crit, cand.name, base, estimator, threshold, baseline_value)
            # the p-value of the interval method that decides the test, so that Holm's order is its own
            p = evaluation.engines[crit.metric].p_value(keys, coefs, null)
            degenerate = None
            if se == 0:
                degenerate = "degenerate data: the difference has no variance"
            elif se is None or not (math.isfinite(se) and math.isfinite(p)):
                degenerate = f"degenerate data: the {evaluation.config.ci} interval of the difference is undefined"
            p = 1.0 if degenerate else p
            row = {"metric": crit.metric, "rule": crit.rule, "threshold": threshold, "relative": crit.relative,
                   "difference": point["difference"], "baseline_value": baseline_value, "p_value": p}
            entry["criteria"].append(row)
            tests.append((p, row, failures, degenerate, cand.name, crit))
        candidates.append(entry)

    m = len(tests)
    stopped = False
    for k, (p, row, failures, degenerate, name, crit) in enumerate(sorted(tests, key=lambda t: t[0])):
        level_alpha = cfg.alpha / (m - k)
        low, high, method = _criterion_interval(evaluation, crit, name, base, estimator, row, level_alpha)
        row.update(ci_low=low, ci_high=high, confidence=1 - level_alpha, ci_method=method)
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
    return GateDecision(decision=_combine(decisions), candidates=candidates, multiplicity=multiplicity,
                        config=cfg, causal=causal)


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
    iv = evaluation.engines[crit.metric].interval(keys, coefs, level_alpha)
    return iv.ci_low + shift, iv.ci_high + shift, iv.method


def _combine(decisions) -> str:
    decisions = list(decisions)
    if "fail" in decisions:
        return "fail"
    if "inconclusive" in decisions or not decisions:
        return "inconclusive"
    return "pass"
