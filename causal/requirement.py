"""The gate's causal requirement: the recommendation's effect must be estimated, positive (its interval
above 0) and survive the required refutations, on a population the data support. A rule on the
`CausalResult` object, so that the gate (ope/gate.py) combines verdicts and never reads causal documents."""
from __future__ import annotations

from collections.abc import Sequence

from .result import CausalResult


def requirement_verdict(result: CausalResult | None, refutations: Sequence[str] | None = None) -> dict:
    """{"decision": pass|fail|inconclusive, "reason", ...}. `refutations` are those that must pass; None:
    every one the check ran. In order:

    * fail: no estimate, a required refutation not run or failed;
    * inconclusive: the overlap does not support the estimand (e.g. an ATE when many rows have a
      propensity near 0 or 1: the estimate rests on extrapolation; the ATT or the ATO may be supported);
    * fail: the effect's interval does not lie above 0;
    * inconclusive: a required refutation is unstable (its verdict changes with the seed);
    * pass otherwise. A refutation that does not apply (state not_applicable) is not a failure.
    """
    if result is None:
        return {"required": True, "decision": "fail", "reason": "the causal effect could not be estimated"}
    base = {"required": True, "outcome": result.outcome, "treatment": result.treatment}
    ate = result.ate or {}
    if ate.get("ci_low") is None:
        return {**base, "decision": "fail", "reason": "the causal effect could not be estimated"}
    estimand = result.estimand or {}
    label = estimand.get("label", "ATE")
    ran = {r.name: r for r in result.refutations}
    required = list(refutations) if refutations is not None else list(ran)
    base.update(required_refutations=required, ate=ate, estimand=estimand.get("name", "ate"),
                population=estimand.get("population"))
    missing = [name for name in required if name not in ran]
    if missing:
        return {**base, "decision": "fail", "reason": f"refutations not run: {', '.join(missing)}"}
    failed = [name for name in required if ran[name].state == "fail"]
    if failed:
        return {**base, "decision": "fail", "reason": f"refutations failed: {', '.join(failed)}"}
    overlap = result.overlap or {}
    if estimand.get("supported") is False:
        supported = [name for name, ok in (overlap.get("supports") or {}).items() if ok]
        low, high = overlap.get("bounds", [None, None])
        return {**base, "decision": "inconclusive",
                "reason": f"the overlap does not support the {label}: {overlap.get('share_outside', 0):.1%} of the rows "
                          f"have a propensity outside [{low}, {high}] ({overlap.get('treated_above', 0):.1%} of the "
                          f"treated above, {overlap.get('control_below', 0):.1%} of the untreated below), so the "
                          f"estimate rests on extrapolation; the data support the "
                          f"{' and the '.join(s.upper() for s in supported)} (estimand = "
                          f"{' or '.join(repr(s) for s in supported)}), or trim"}
    what = f"{label} {ate['value']:.4g} [{ate['ci_low']:.4g}, {ate['ci_high']:.4g}]"
    if ate["ci_low"] <= 0:
        return {**base, "decision": "fail", "reason": f"the {label}'s interval [{ate['ci_low']:.4g}, "
                                                      f"{ate['ci_high']:.4g}] does not lie above 0"}
    unstable = [name for name in required if ran[name].state == "unstable"]
    if unstable:
        return {**base, "decision": "inconclusive",
                "reason": f"{what}, but refutations unstable (their verdict changes with the seed): "
                          f"{', '.join(unstable)}"}
    return {**base, "decision": "pass", "reason": f"{what} and the required refutations passed"}
