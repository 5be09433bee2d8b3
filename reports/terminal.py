"""Plain-text summaries for the terminal (at most 100 columns). Renders documents; computes nothing."""
from __future__ import annotations

import math

from . import formatting as fmt


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
    if definitions:
        lines.append("")
        lines += [_wrap(f"metric {name} = {definition}") for name, definition in definitions.items()]
    for metric, block in doc["metrics"].items():
        lines.append("")
        lines.append(_clip(f"{metric}  ({level} {cfg.get('ci', 'normal')} intervals; difference vs {base})", 100))
        header = f"{'policy':<14} {'estimator':<10} {'value':>10} {'interval':<21} {'difference':>11} {'interval':<21} {'rel.':>7}"
        lines.append(header)
        lines.append("-" * len(header))
        for name, result in block["policies"].items():
            for ident, est in result["estimates"].items():
                vs = result["vs_baseline"].get(ident)
                diff = (f"{_signed(vs['difference']):>11} {_ci(vs['ci_low'], vs['ci_high']):<21} "
                        f"{_pct(vs.get('relative')):>7}") if vs else f"{'—':>11}"
                lines.append(f"{_clip(name, 14):<14} {_clip(ident, 10):<10} {_num(est['value']):>10} "
                             f"{_ci(est['ci_low'], est['ci_high']):<21} {diff}")
    lines.append("")
    lines.append("diagnostics")
    first = next(iter(doc["metrics"].values()))["policies"]
    lines.append(f"{'policy':<16} {'n':>10} {'ESS':>10} {'max w':>9} {'mean w':>8} {'unsupported':>11}")
    warnings = []
    for name, result in first.items():
        d = result["diagnostics"]
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
    from .documents import gate_candidates

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
                           f"ESS {fmt.num(round(diag['ess']) if fmt.as_number(diag.get('ess')) is not None else None)}"
                           f"{rows}; {unsupported}"))
        for f in cand["diagnostics"]["failures"]:
            lines.append(f"    diagnostics: {f}")
        for w in summary.get("warnings") or []:
            lines.append(_wrap(f"    WARNING: {w}"))
        for c in cand["criteria"]:
            lines.append(_wrap(f"    {c['decision']:<12} {c['metric']} {c['rule']}: difference {_signed(c['difference'])} "
                               f"{_ci(c['ci_low'], c['ci_high'])} at {c['confidence']:.2%} vs {_num(c['threshold'])}"))
    if doc.get("causal"):
        c = doc["causal"]
        lines.append(_wrap(f"  causal effect of {c['treatment']} on {c['outcome']}: {c['decision']} ({c['reason']})"))
    return "\n".join(lines)


def causal_summary(doc: dict) -> str:
    lines = [f"causal effect of {doc['treatment']} on {doc['outcome']}"]
    for key, label in (("naive", "naive difference"), ("ipw", "IPW"), ("ate", "adjusted")):
        est = doc.get(key)
        if est:
            lines.append(f"  {label:<18} {_num(est.get('value')):>10} {_ci(est.get('ci_low'), est.get('ci_high'))}"
                         + (f"  ({est['estimator']})" if est.get("estimator") else ""))
    for r in doc.get("refutations", []):
        lines.append(_wrap(f"  refuter {r['name']:<22} {'pass' if r.get('passed') else 'FAIL'}  "
                           f"new effect {_num(r.get('new_effect'))}"))
    for s in doc.get("segments", [])[:12]:
        lines.append(f"  segment {_clip(str(s['segment']), 28):<28} n={s['n']:>8,} {_num(s.get('value')):>10} "
                     f"{_ci(s.get('ci_low'), s.get('ci_high'))}")
    for w in doc.get("warnings", []):
        lines.append(_wrap(f"warning: {w}"))
    return "\n".join(lines)
