"""The automatic estimator choice (`auto`, ope/selection.py) as every report shows it.

Read from the document only: for each metric and policy with an `auto` estimate, the candidate chosen
for its value and, for the candidates, the one chosen for its paired difference to the baseline, why,
and what was compared. Tolerant like documents.py: a missing block renders as absent.
"""
from __future__ import annotations

from . import formatting as fmt
from .documents import as_dict, as_list, as_str, baseline_of, metrics_of, ordered_policies

AUTO = "auto"


def auto_choices(evaluation: dict) -> list[dict]:
    """One entry per (metric, policy) with an `auto` estimate: metric, policy, value and difference
    (each a choice: chosen, reason, rule, candidates, left_out, interval; None when absent)."""
    out = []
    baseline = baseline_of(evaluation)
    for metric, block in metrics_of(evaluation).items():
        policies = as_dict(block.get("policies"))
        for name in ordered_policies(policies, baseline):
            policy = as_dict(policies.get(name))
            value = as_dict(as_dict(policy.get("estimates")).get(AUTO))
            difference = as_dict(as_dict(policy.get("vs_baseline")).get(AUTO))
            if not value and not difference:
                continue
            out.append({"metric": metric, "policy": name, "is_baseline": name == baseline,
                        "value": _choice(value), "difference": _choice(difference)})
    return out


def _choice(entry: dict) -> dict | None:
    selection = as_dict(entry.get("selection"))
    if not selection:
        return None
    interval = as_dict(selection.get("interval"))
    return {"chosen": as_str(selection.get("chosen")) or as_str(entry.get("selected")) or fmt.MISSING,
            "reason": as_str(selection.get("reason")) or "",
            "rule": as_str(selection.get("rule")) or "",
            "candidates": [as_dict(c) for c in as_list(selection.get("candidates"))],
            "left_out": [str(x) for x in as_list(selection.get("left_out"))],
            "anchors": [str(x) for x in as_list(interval.get("anchors"))],
            "confidence_each": interval.get("confidence_each")}


def rule_text(evaluation: dict) -> str | None:
    """How `auto` chooses and why its intervals hold, as the document states it (None without auto)."""
    described = as_dict(evaluation.get("selection"))
    if not described:
        return None
    return f"{described.get('rule', '')}. Intervals: {described.get('intervals', '')}."
