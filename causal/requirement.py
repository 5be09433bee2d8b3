"""The gate's causal requirement: the recommendation's effect must be estimated, positive (its interval
above 0) and survive the required refutations. A rule on the `CausalResult` object, so that the gate
(ope/gate.py) combines verdicts and never reads causal documents."""
from __future__ import annotations

from collections.abc import Sequence

from .result import CausalResult


def requirement_verdict(result: CausalResult | None, refutations: Sequence[str] | None = None) -> dict:
    """{"decision": pass|fail, "reason", ...}. `refutations` are those that must pass; None: every one
    the check ran. A refutation that does not apply (passed is None) is not a failure."""
    if result is None:
        return {"required": True, "decision": "fail", "reason": "the causal effect could not be estimated"}
    base = {"required": True, "outcome": result.outcome, "treatment": result.treatment}
    ate = result.ate or {}
    if ate.get("ci_low") is None:
        return {**base, "decision": "fail", "reason": "the causal effect could not be estimated"}
    ran = {r.name: r for r in result.refutations}
    required = list(refutations) if refutations is not None else list(ran)
    base.update(required_refutations=required, ate=ate)
    missing = [name for name in required if name not in ran]
    if missing:
        return {**base, "decision": "fail", "reason": f"refutations not run: {', '.join(missing)}"}
    failed = [name for name in required if ran[name].passed is False]
    if failed:
        return {**base, "decision": "fail", "reason": f"refutations failed: {', '.join(failed)}"}
    if ate["ci_low"] <= 0:
        return {**base, "decision": "fail",
                "reason": f"the effect's interval [{ate['ci_low']:.4g}, {ate['ci_high']:.4g}] does not lie above 0"}
    return {**base, "decision": "pass",
            "reason": f"effect {ate['value']:.4g} [{ate['ci_low']:.4g}, {ate['ci_high']:.4g}] and the required "
                      "refutations passed"}
