"""Plain-text summaries for the terminal (at most 100 columns). Renders documents; computes nothing."""
from __future__ import annotations

import math

from . import formatting as fmt
from .sessions import COLLAPSE_SHARE, collapse_text, session_facts, size_text


def _num(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{x:,.{min(decimals, 6)}f}"


def _signed(x) -> str:
    text = _num(x)
    return text if text == "—" or text.startswith("-") else "+" + text


def _ci(low, high) -> str:
    return f"[{_num(low)}, {_num(high)}]"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def evaluation_table(doc: dict) -> str:
    cfg = doc.get("config", {})
    level = f"{1 - cfg.get('alpha', 0.05):.0%}"
    base = doc.get("baseline", "logging")
    lines = []
    definitions = {k: v for k, v in (doc.get("metric_definitions") or {}).items() if str(v) != str(k)}
    # Session level (ope/sessions.py): every value is a return per session, said before the numbers.
    session = session_facts(doc)
    if session:
        gamma = "—" if session["gamma"] is None else fmt.plain(session["gamma"])
        lines.append("")
        lines.append(_wrap(f"per session (gamma = {gamma}): {size_text(session)}; values are expected returns "
                           f"per session, {session['discounting']}"))
    if definitions:
        lines.append("")
        lines += [_wrap(f"metric {name} = {definition}") for name, definition in definitions.items()]
    for metric, block in doc["metrics"].items():
        lines.append("")
        what = f"{metric} per session" if session else metric  # the discount is in the line above
        lines.append(_clip(f"{what}  ({level} {cfg.get('ci', 'normal')} intervals; difference vs {base})", 100))
        value = "return" if session else "value"
        header = f"{'policy':<14} {'estimator':<10} {value:>10} {'interval':<21} {'difference':>11} {'interval':<21} {'rel.':>7}"
        lines.append(header)
        lines.append("-" * len(header))
        for name, result in block["policies"].items():
            for ident, est in result["estimates"].items():
                vs = result["vs_baseline"].get(ident)
                diff = (f"{_signed(vs['difference']):>11} {_ci(vs['ci_low'], vs['ci_high']):<21} "
                        f"{_pct(vs.get('relative')):>7}") if vs else f"{'—':>11}"
                lines.append(f"{_clip(name, 14):<14} {_clip(ident, 10):<10} {_num(est['value']):>10} "
                             f"{_ci(est['ci_low'], est['ci_high']):<21} {diff}")
    lines += _auto_lines(doc)
    lines.append("")
    first = next(iter(doc["metrics"].values()))["policies"]
    warnings = []
    if session:
        lines += _session_diagnostics(first)
    else:
        lines.append("diagnostics")
        lines.append(f"{'policy':<16} {'n':>10} {'ESS':>10} {'max w':>9} {'mean w':>8} {'unsupported':>11}")
    for name, result in first.items():
        d = result["diagnostics"]
        if not session:
            lines.append(f"{_clip(name, 16):<16} {d['n']:>10,} {d['ess']:>10,.0f} {_num(d['max_weight'], 3):>9} "
                         f"{d['mean_weight']:>8.3f} {d['unsupported_mass']:>11.3f}")
        warnings += [f"{name}: {w}" for w in d.get("warnings", [])]
    for metric, block in doc["metrics"].items():
        quality = next(iter(block["policies"].values()))["diagnostics"].get("reward_model")
        if quality:
            lines.append(f"reward model for {metric}: held-out R^2 {_num(quality.get('r2'), 3)}"
                         + (f", log-loss {_num(quality['value'], 3)}" if quality.get("metric_name") == "log_loss" else ""))
    for w in list(dict.fromkeys(warnings + doc.get("warnings", []))):
        lines.append(_wrap(f"WARNING: {w}"))
    return "\n".join(lines)


def _auto_lines(doc: dict) -> list[str]:
    """The automatic choice (`auto`): per metric and policy the candidate chosen for the value and for
    the paired difference, with the rule's reason."""
    from .selection import auto_choices

    choices = auto_choices(doc)
    if not choices:
        return []
    lines = ["", _wrap("automatic estimator choice (SLOPE: the narrowest candidate that agrees with every wider "
                       "one; the auto interval also holds the intersection of the unbiased candidates' intervals, "
                       "so it covers the truth whichever was chosen)")]
    for c in choices:
        value, difference = c["value"], c["difference"]
        what = [f"value {value['chosen']} of {len(value['candidates'])}" if value else None,
                f"difference {difference['chosen']} of {len(difference['candidates'])}" if difference else None]
        lines.append(_wrap(f"  {c['metric']} {c['policy']}: " + "; ".join(w for w in what if w)))
        for label, choice in (("value", value), ("difference", difference)):
            if choice and choice["reason"]:
                lines.append(_wrap(f"    {label}: {choice['reason']}"))
        for note in (value or difference or {}).get("left_out", []):
            lines.append(_wrap(f"    left out: {note}"))
    return lines


def _session_diagnostics(policies: dict) -> list[str]:
    """Session-level diagnostics: sessions and effective sessions (ESS), the effective number of
    whole trajectories (what trajectory-wise IS rests on), per-step weight statistics, and the step
    from which the effective share of the sessions still running is below 10% (weights collapse).
    `drl ESS`: the effective number of sessions of the fitted marginal weights drl rests on (when fitted).
    The steps are the same for every policy: the header line above the table gives them."""
    lines = [_wrap("diagnostics per session (ESS: effective number of sessions; the weights collapse at the first "
                   f"step where less than {COLLAPSE_SHARE:.0%} of the sessions still running are effective)"),
             f"{'policy':<16} {'sessions':>9} {'ESS':>9} {'traj. ESS':>9} {'drl ESS':>9} {'max w':>8} {'mean w':>7} "
             f"{'unsupp.':>7} {'weights collapse':>17}"]
    for name, result in policies.items():
        d = result["diagnostics"]
        lines.append(f"{_clip(str(name), 16):<16} {_count(d.get('n')):>9} {_count(d.get('ess')):>9} "
                     f"{_count(d.get('trajectory_ess')):>9} {_count(d.get('marginal_ess')):>9} "
                     f"{_num(d.get('max_weight'), 3):>8} {_num(d.get('mean_weight'), 3):>7} "
                     f"{_num(d.get('unsupported_mass'), 3):>7} {_clip(collapse_text(d, short=True), 17):>17}")
    return lines


def _count(x) -> str:
    number = fmt.as_number(x)
    return "—" if number is None else f"{number:,.0f}"


def _pct(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:+.1%}"


def _wrap(text: str, width: int = 100) -> str:
    """Wrapped to `width` columns, continuation lines indented two more than the first."""
    import textwrap
    indent = " " * (len(text) - len(text.lstrip(" ")) + 2)
    return "\n".join(textwrap.wrap(text, width=width, subsequent_indent=indent, break_on_hyphens=False))


def gate_summary(doc: dict) -> str:
    lines = [f"gate: {doc['decision'].upper()} (exit {doc['exit_code']}); estimator {doc['estimator']}, "
             f"baseline {doc['baseline']}, Holm over {doc['multiplicity']['n_tests']} tests"]
    from .documents import gate_candidates, gate_thresholds_text, gate_warnings

    thresholds = gate_thresholds_text(doc)
    if thresholds:  # the thresholds in force, printed with the verdict
        lines.append(_wrap(f"  {thresholds}"))
    for w in gate_warnings(doc):
        lines.append(_wrap(f"  WARNING: {w}"))

    summaries = {c["name"]: c for c in gate_candidates(doc)}
    for cand in doc["candidates"]:
        summary = summaries.get(str(cand["name"]), {})
        passed = summary.get("passed") or []
        lines.append(_wrap(f"  {cand['name']}: {cand['decision']}"
                           + (f"; passed {', '.join(passed)}" if passed else "; passed nothing")))
        # the unsupported-mass figure the gate compares (a bound), not the point estimate
        bound, estimate = summary.get("unsupported_bound"), summary.get("unsupported_estimate")
        unsupported = (f"unsupported mass {summary['unsupported_bound_label']} {fmt.pct(bound)} "
                       f"(estimate {fmt.pct(estimate)})" if bound is not None else
                       f"unsupported mass estimate {fmt.pct(estimate)}")
        diag = cand["diagnostics"]
        rows = f" of {fmt.num(diag['n'])}" if diag.get("n") is not None else ""
        lines.append(_wrap(f"    diagnostics {'MISS' if diag.get('ok') is False else 'meet'} thresholds: "
                           f"{diag.get('ess_label') or 'ESS'} "
                           f"{fmt.num(round(diag['ess']) if fmt.as_number(diag.get('ess')) is not None else None)}"
                           f"{rows}; {unsupported}"))
        for f in cand["diagnostics"]["failures"]:
            lines.append(_wrap(f"    diagnostics: {f}"))
        for w in summary.get("warnings") or []:
            lines.append(_wrap(f"    WARNING: {w}"))
        for c in cand["criteria"]:
            chosen = f" (auto: {c['selected']})" if c.get("selected") else ""
            lines.append(_wrap(f"    {c['decision']:<12} {c['metric']} {c['rule']}: difference {_signed(c['difference'])} "
                               f"{_ci(c['ci_low'], c['ci_high'])} at {c['confidence']:.2%} vs {_num(c['threshold'])}"
                               + chosen))
    if doc.get("causal"):
        c = doc["causal"]
        lines.append(_wrap(f"  causal effect of {c['treatment']} on {c['outcome']}: {c['decision']} ({c['reason']})"))
    return "\n".join(lines)


def causal_summary(doc: dict) -> str:
    from .documents import (REFUTATION_STATES, causal_estimand_label, causal_overlap_lines, ordered_estimands,
                            refutation_state)

    label = causal_estimand_label(doc)
    estimand = doc.get("estimand") or {}
    lines = [f"causal effect of {doc['treatment']} on {doc['outcome']}"]
    if estimand.get("population"):
        lines.append(_wrap(f"  estimand {label} ({estimand.get('meaning') or 'average effect'}): "
                           f"{estimand['population']}"
                           + ("; NOT SUPPORTED by the overlap" if estimand.get("supported") is False else "")))
    for key, name in (("naive", "naive difference"), ("ipw", f"IPW ({label})"), ("ate", f"adjusted ({label})")):
        est = doc.get(key)
        if est:
            lines.append(f"  {name:<18} {_num(est.get('value')):>10} {_ci(est.get('ci_low'), est.get('ci_high'))}"
                         + (f"  ({est['estimator']})" if est.get("estimator") else ""))
    # next to the estimate: the overlap figures, when overlap is poor or rows were trimmed or clipped
    lines += [_wrap(f"    overlap: {line}") for line in causal_overlap_lines(doc)]
    others = [f"{b.get('label') or name.upper()} {_num(b.get('value'))} {_ci(b.get('ci_low'), b.get('ci_high'))}"
              + ("" if b.get("supported") is not False else " (not supported)")
              for name, b in ordered_estimands(doc.get("estimands")) if name != estimand.get("name")]
    if others:
        lines.append(_wrap("  other estimands (same fit): " + "; ".join(others)))
    for r in doc.get("refutations", []):
        state = refutation_state(r)
        runs = (r.get("details") or {}).get("runs")
        detail = (f"  ({(r.get('details') or {}).get('runs_passed')} of {runs} seeded runs within their bound)"
                  if state == "unstable" and runs else "")
        lines.append(_wrap(f"  refuter {r['name']:<22} {REFUTATION_STATES[state]:<15} "
                           f"new effect {_num(r.get('new_effect'))}{detail}"))
    graph = (doc.get("config") or {}).get("graph")
    if graph:
        lines.append(_wrap(f"  graph: {graph}" + (f"; adjustment set {', '.join(doc['confounders'])}"
                                                  if doc.get("confounders") else "")))
    for s in doc.get("segments", [])[:12]:
        lines.append(f"  segment {_clip(str(s['segment']), 28):<28} n={s['n']:>8,} {_num(s.get('value')):>10} "
                     f"{_ci(s.get('ci_low'), s.get('ci_high'))}")
    for w in doc.get("warnings", []):
        lines.append(_wrap(f"warning: {w}"))
    return "\n".join(lines)
