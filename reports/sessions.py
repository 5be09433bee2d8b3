"""Reading the session-level facts of an evaluation document (`livegate evaluate --sessions`).

A session-level `livegate.evaluation/1` document records `"level": "session"` and the discount
`gamma` (top level, and again in `data` and `config`); its values are expected returns per
session, and each policy's diagnostics carry the effective number of sessions, the step at which
the importance weights collapse and per-step curves (`by_step`). The terminal table, the HTML
report and the Markdown summary all word these facts the same way, from the helpers here. Like
documents.py, this only reads: nothing is recomputed except ratios of numbers in the document.
Documents without `level` (written before sessions existed) are decision-level.
"""
from __future__ import annotations

from typing import Any

from . import formatting as fmt
from .documents import as_dict, as_list, as_str

#: The effective share of the sessions still running below which ope/sessions.py says the weights
#: have collapsed (ope.diagnostics.LOW_ESS_SHARE; tests/test_reports_sessions.py checks they agree).
#: The document records the collapse step, not the threshold, so the charts' reference line uses this.
COLLAPSE_SHARE = 0.10


def level_of(evaluation: dict) -> str:
    """"session" or "decision": the top-level `level`, else the one in `data` or `config`."""
    for block in (evaluation, as_dict(evaluation.get("data")), as_dict(evaluation.get("config"))):
        level = as_str(block.get("level"))
        if level:
            return level
    return "decision"


def is_session(evaluation: dict) -> bool:
    return level_of(evaluation) == "session"


def gamma_of(evaluation: dict) -> float | None:
    for block in (evaluation, as_dict(evaluation.get("data")), as_dict(evaluation.get("config"))):
        gamma = fmt.as_number(block.get("gamma"))
        if gamma is not None:
            return gamma
    return None


def discounting(gamma: float | None) -> str:
    """How a session's rewards add up, in words: "total over the session" or "discounted with gamma = 0.9"."""
    if gamma is None:
        return "discount not recorded"
    return "total over the session" if gamma == 1 else f"discounted with gamma = {fmt.plain(gamma)}"


def value_phrase(metric: Any, gamma: float | None) -> str:
    """What a session-level value is: "expected watch_seconds per session, total over the session"."""
    return f"expected {fmt.text(metric)} per session, {discounting(gamma)}"


def collapse_text(diagnostics: dict, short: bool = False) -> str:
    """"step 5 (9.4% effective)" (`short`: "step 5 (9.4%)"), "none", or a dash when the document does not say."""
    if "collapse_step" not in diagnostics:
        return fmt.MISSING
    step = diagnostics.get("collapse_step")
    if step is None:
        return "none"
    if not isinstance(step, int) or isinstance(step, bool):
        return fmt.text(step)
    share = step_shares(diagnostics)
    at = share[step] if 0 <= step < len(share) else None
    return f"step {step}" + (f" ({fmt.pct(at, 2)}{'' if short else ' effective'})" if at is not None else "")


def step_shares(diagnostics: dict) -> list[float | None]:
    """Per step: the effective share of the sessions still running, by_step.ess / by_step.alive."""
    by_step = as_dict(diagnostics.get("by_step"))
    shares = []
    for ess, alive in zip(as_list(by_step.get("ess")), as_list(by_step.get("alive"))):
        ess, alive = fmt.as_number(ess), fmt.as_number(alive)
        shares.append(ess / alive if ess is not None and alive else None)
    return shares


def session_facts(evaluation: dict) -> dict | None:
    """The session-level summary of an evaluation, or None for a decision-level one.

    {"gamma", "discounting", "n_sessions", "n_steps", "horizon", "mean_length"}; counts come from
    `data`, with the first policy's diagnostics (n: sessions, n_rows: steps) as a fallback."""
    if not is_session(evaluation):
        return None
    data = as_dict(evaluation.get("data"))
    first = {}
    for block in as_dict(evaluation.get("metrics")).values() or [{"policies": evaluation.get("policies")}]:
        for policy in as_dict(as_dict(block).get("policies")).values():
            first = as_dict(as_dict(policy).get("diagnostics"))
            break
        break
    gamma = gamma_of(evaluation)
    n_sessions = data.get("n_sessions", first.get("n"))
    n_steps = data.get("n_rows", first.get("n_rows"))
    return {"gamma": gamma, "discounting": discounting(gamma), "n_sessions": n_sessions, "n_steps": n_steps,
            "horizon": data.get("horizon"), "mean_length": data.get("mean_session_length")}


def size_text(facts: dict) -> str:
    """"2,000 sessions, 8,164 steps (mean length 4.08, longest 7)"."""
    text = f"{fmt.num(facts['n_sessions'])} sessions, {fmt.num(facts['n_steps'])} steps"
    details = ([f"mean length {fmt.num(facts['mean_length'])}"] if fmt.as_number(facts["mean_length"]) is not None
               else []) + ([f"longest {fmt.num(facts['horizon'])}"] if fmt.as_number(facts["horizon"]) is not None
                           else [])
    return text + (f" ({', '.join(details)})" if details else "")
