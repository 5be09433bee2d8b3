"""Markdown summary for a pull-request comment or a CI step summary ($GITHUB_STEP_SUMMARY).

Shorter than the HTML report: the verdict, the gate's criteria, each evaluation's leading
estimate per policy, the causal effect and the warnings; the HTML report has the rest. Built
from plain string lines rather than a template because Markdown tables need per-cell escaping,
which is clearer in code than in a template.
"""
from __future__ import annotations

from . import formatting as fmt
from . import sessions
from .documents import (Entry, Verdict, alpha_of, as_dict, as_list, baseline_of, evaluation_warnings, expand,
                        flatten_inputs, gate_candidates, gate_thresholds_text, gate_warnings, metric_definitions,
                        metrics_of, ordered_policies, primary_estimator, primary_metric, verdicts)

_ICONS = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️", "info": "ℹ️"}
# Characters that would end a table cell, start emphasis, a link or a code span, or be read as
# HTML by GitHub's renderer. Names come from user data, so every one is escaped.
_ESCAPES = {"\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "_": "\\_", "[": "\\[", "]": "\\]",
            "#": "\\#", "<": "&lt;", ">": "&gt;", "&": "&amp;"}


def escape(value: object) -> str:
    """Text from a document, safe inside a Markdown paragraph or table cell (on one line)."""
    text = " ".join(fmt.text(value).split())
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _verdict_line(verdict: Verdict) -> str:
    return f"**{_ICONS.get(verdict.status, '')} {escape(verdict.label)}** {escape(verdict.text)}"


def _gate(entry: Entry) -> list[str]:
    gate = entry.doc
    lines = [f"### Gate: {escape(gate.get('decision'))} (exit code {escape(gate.get('exit_code'))})", "",
             f"Paired difference to {escape(gate.get('baseline'))} with estimator {escape(gate.get('estimator'))}, "
             f"alpha {fmt.plain(gate.get('alpha'))}.", ""]
    thresholds = gate_thresholds_text(gate)
    if thresholds:
        lines += [escape(fmt.sentence(thresholds)) + ".", ""]
    warnings = gate_warnings(gate)
    if warnings:
        lines += ["Gate warnings:", ""] + [f"- ⚠️ {escape(w)}" for w in warnings] + [""]
    multiplicity = as_dict(gate.get("multiplicity"))
    if multiplicity:
        lines += [f"Multiplicity: {escape(multiplicity.get('method'))} over {escape(multiplicity.get('n_tests'))} "
                  f"tests. {escape(fmt.sentence(multiplicity.get('note')))}".rstrip(), ""]
    # Every candidate with what it passed, not only what held it back.
    for c in gate_candidates(gate):
        outcome = "; ".join(part for part in (
            "passed " + ", ".join(escape(x) for x in c["passed"]) if c["passed"] else "",
            "failed " + ", ".join(escape(x) for x in c["failed"]) if c["failed"] else "",
            "inconclusive on " + ", ".join(escape(x) for x in c["inconclusive"]) if c["inconclusive"] else "",
        ) if part) or "no criteria"
        if c["unsupported_bound"] is not None:
            # The bound the gate compares with max_unsupported_mass, named as such; the estimate after it.
            unsupported = (f"unsupported mass {c['unsupported_bound_label']} {fmt.pct(c['unsupported_bound'])}, "
                           f"estimate {fmt.pct(c['unsupported_estimate'])}")
        else:
            unsupported = f"unsupported mass estimate {fmt.pct(c['unsupported_estimate'])}"
        ess = f"{c['ess_label']} {fmt.num(c['ess'])}" + (f" of {fmt.num(c['n'])}" if c["n"] is not None else "")
        lines.append(f"- {_ICONS.get(c['decision'], '')} **{escape(c['name'])}**: {escape(c['decision'])}; {outcome}; "
                     f"{ess}; {unsupported}")
    lines.append("")
    rows = []
    notes = []
    for candidate in as_list(gate.get("candidates")):
        candidate = as_dict(candidate)
        for criterion in as_list(candidate.get("criteria")):
            c = as_dict(criterion)
            decision = fmt.text(c.get("decision"))
            rows.append([escape(candidate.get("name")),
                         escape(c.get("metric")) + (f" (auto: {escape(c.get('selected'))})" if c.get("selected") else ""),
                         escape(f"{fmt.text(c.get('rule'))} > {fmt.plain(c.get('threshold'))}"
                                + (" (relative margin)" if c.get("relative") else "")),
                         fmt.signed(c.get("difference")),
                         f"{fmt.interval(c.get('ci_low'), c.get('ci_high'))} at {fmt.level(c.get('confidence'))}",
                         escape(fmt.pvalue(c.get("p_value"))),
                         f"{_ICONS.get(decision, '')} {escape(decision)}", escape(fmt.sentence(c.get("reason")))])
        failures = as_list(as_dict(candidate.get("diagnostics")).get("failures"))
        if failures:
            notes.append(f"- {escape(candidate.get('name'))}: diagnostics miss the thresholds: "
                         + "; ".join(escape(f) for f in failures))
    if rows:
        lines += _table(["Candidate", "Metric", "Rule", "Difference", "Interval", "p", "Decision", "Reason"],
                        rows, right={3, 4, 5})
    lines += notes + ([""] if notes else [])
    causal = as_dict(gate.get("causal"))
    if causal:
        decision = fmt.text(causal.get("decision"))
        lines += [f"Causal requirement on {escape(causal.get('outcome'))}"
                  f"{'' if causal.get('required') else ' (not required)'}: {_ICONS.get(decision, '')} "
                  f"{escape(decision)}. {escape(fmt.sentence(causal.get('reason')))}".rstrip(), ""]
    return lines


def _evaluation(entry: Entry) -> list[str]:
    evaluation = entry.doc
    estimator = primary_estimator(evaluation, entry.estimator)
    baseline = baseline_of(evaluation)
    level = fmt.confidence(alpha_of(evaluation))
    data = as_dict(evaluation.get("data"))
    title = "Evaluation" + (" (embedded in the gate)" if entry.embedded_in else "")
    lines = [f"### {title}", ""]
    session = sessions.session_facts(evaluation)
    if session:
        # Session level: the numbers below are returns per session, which the reader must know first.
        gamma = fmt.MISSING if session["gamma"] is None else fmt.plain(session["gamma"])
        lines += [f"**Per session (gamma = {gamma})**: {sessions.size_text(session)}, "
                  f"{fmt.num(data.get('n_actions'))} actions; values are the "
                  f"{escape(sessions.value_phrase(primary_metric(evaluation), session['gamma']))}; "
                  f"estimator {escape(estimator)}, {level} intervals, baseline {escape(baseline)}.", ""]
    elif data:
        period = as_dict(data.get("period"))
        lines += [f"{fmt.num(data.get('n_rows'))} rows, {fmt.num(data.get('n_actions'))} actions"
                  + (f", {fmt.when(period.get('start'))} to {fmt.when(period.get('end'))}" if period else "")
                  + f"; estimator {escape(estimator)}, {level} intervals, baseline {escape(baseline)}.", ""]
    definitions = metric_definitions(evaluation)
    if definitions:
        lines += _table(["Metric", "Definition"],
                        [[escape(name), "`" + definition.replace("`", "").replace("|", "\\|") + "`"]
                         for name, definition in definitions])
    for metric, block in metrics_of(evaluation).items():
        rows = []
        policies = as_dict(block.get("policies"))
        for name in ordered_policies(policies, baseline):
            policy = as_dict(policies.get(name))
            estimate = as_dict(as_dict(policy.get("estimates")).get(estimator))
            vs = as_dict(as_dict(policy.get("vs_baseline")).get(estimator))
            diagnostics = as_dict(policy.get("diagnostics"))
            is_baseline = name == baseline
            rows.append([escape(name) + (" (baseline)" if is_baseline else ""),
                         f"{fmt.num(estimate.get('value'))} {fmt.interval(estimate.get('ci_low'), estimate.get('ci_high'))}",
                         "" if is_baseline else f"{fmt.signed(vs.get('difference'))} "
                                                f"{fmt.interval(vs.get('ci_low'), vs.get('ci_high'))}",
                         "" if is_baseline else fmt.pct(vs.get("relative"), sign=True),
                         fmt.num(diagnostics.get("ess")), fmt.pct(diagnostics.get("unsupported_mass"))])
        if rows:
            lines += [f"**{escape(metric)}**" + (" (primary)" if metric == primary_metric(evaluation) else "")
                      + (f", per session ({session['discounting']})" if session else ""), ""]
            lines += _table(["Policy", "Value", "Difference", "Relative", "Eff. sessions" if session else "ESS",
                             "Unsupported"], rows, right={1, 2, 3, 4, 5})
    if session:
        lines += _sessions_table(evaluation, baseline)
    lines += _auto_table(evaluation)
    warnings = []
    for w in evaluation_warnings(evaluation):
        who = ", ".join(escape(p) for p in w["policies"])
        if w["metrics"]:
            who += " on " + ", ".join(escape(m) for m in w["metrics"])
        warnings.append(f"{who.strip()}: {escape(w['text'])}" if who else escape(w["text"]))
    if warnings:
        lines += ["Warnings:", ""] + [f"- {w}" for w in warnings] + [""]
    return lines


def _auto_table(evaluation: dict) -> list[str]:
    """The automatic choice (`auto`): per metric and policy, the candidates chosen and why."""
    from .selection import auto_choices, rule_text

    choices = auto_choices(evaluation)
    if not choices:
        return []
    rows = []
    for c in choices:
        for label, choice in (("value", c["value"]), ("difference", c["difference"])):
            if choice:
                rows.append([escape(c["metric"]), escape(c["policy"]), label, escape(choice["chosen"]),
                             fmt.num(len(choice["candidates"])), escape(choice["reason"])])
    lines = ["**Automatic estimator choice** (`auto`): " + escape(rule_text(evaluation) or ""), ""]
    lines += _table(["Metric", "Policy", "For", "Chosen", "Candidates", "Why"], rows, right={4})
    left_out = sorted({note for c in choices for ch in (c["value"], c["difference"]) if ch for note in ch["left_out"]})
    if left_out:
        lines += ["Left out of the choice:", ""] + [f"- {escape(note)}" for note in left_out] + [""]
    return lines


def _sessions_table(evaluation: dict, baseline: str | None) -> list[str]:
    """Session level: sessions, steps, effective sessions and the step where the weights collapse,
    per policy (the weights are the policies', the same for every metric: the primary metric's)."""
    policies = as_dict(as_dict(metrics_of(evaluation).get(primary_metric(evaluation))).get("policies"))
    rows = []
    for name in ordered_policies(policies, baseline):
        d = as_dict(as_dict(policies.get(name)).get("diagnostics"))
        ess, n = fmt.as_number(d.get("ess")), fmt.as_number(d.get("n"))
        rows.append([escape(name) + (" (baseline)" if name == baseline else ""), fmt.num(d.get("n")),
                     fmt.num(d.get("n_rows")),
                     fmt.num(d.get("ess")) + (f" ({fmt.pct(ess / n)})" if ess is not None and n else ""),
                     fmt.num(d.get("trajectory_ess")), fmt.num(d.get("marginal_ess")),
                     escape(sessions.collapse_text(d))])
    if not rows:
        return []
    threshold = fmt.plain(100 * sessions.COLLAPSE_SHARE) + "%"
    return ["**Sessions**: the weights collapse at the first step (0 = first) where fewer than "
            f"{threshold} of the sessions still running are effective.", ""] + \
        _table(["Policy", "Sessions", "Steps", "Eff. sessions", "Trajectory ESS", "drl ESS", "Weights collapse"],
               rows, right={1, 2, 3, 4, 5})


def _causal(entry: Entry) -> list[str]:
    causal = entry.doc
    title = f"Causal effect of {escape(causal.get('treatment'))} on {escape(causal.get('outcome'))}"
    from .documents import REFUTATION_STATES, causal_estimand_label, causal_overlap_lines, refutation_state

    lines = [f"### {title}" + (" (embedded in the gate)" if entry.embedded_in else ""), ""]
    label, estimand = causal_estimand_label(causal), as_dict(causal.get("estimand"))
    if estimand.get("population"):
        lines += [f"**Estimand: {escape(label)}** ({escape(estimand.get('meaning') or 'average effect')}): "
                  f"{escape(estimand.get('population'))}"
                  + (" ⚠️ **not supported by the overlap**" if estimand.get("supported") is False else "") + ".", ""]
    rows = []
    for name, key in (("naive difference in means (unadjusted)", "naive"),
                      (f"inverse propensity weighting ({escape(label)})", "ipw"), (f"adjusted ({escape(label)})", "ate")):
        block = as_dict(causal.get(key))
        if block:
            name = name + (f", {escape(block.get('estimator'))}" if key == "ate" and block.get("estimator") else "")
            rows.append([name, fmt.signed(block.get("value")), fmt.interval(block.get("ci_low"), block.get("ci_high"))])
    if rows:
        lines += _table(["Estimate", "Effect", "Interval"], rows, right={1, 2})
    overlap = causal_overlap_lines(causal)
    if overlap:
        lines += ["**Overlap**:", ""] + [f"- {escape(line)}" for line in overlap] + [""]
    icons = {"pass": "✅ ", "fail": "❌ ", "unstable": "⚠️ ", "not_applicable": ""}
    refutations = [as_dict(r) for r in as_list(causal.get("refutations"))]
    if refutations:
        lines += _table(["Refuter", "New effect", "p", "Result"],
                        [[escape(r.get("name")), fmt.signed(r.get("new_effect")), escape(fmt.pvalue(r.get("p_value"))),
                          icons[state] + REFUTATION_STATES[state].lower()]
                         for r in refutations for state in [refutation_state(r)]], right={1, 2})
    graph = as_dict(causal.get("config")).get("graph") or as_dict(causal.get("settings")).get("graph")
    if graph:
        lines += [f"Graph: {escape(graph)}; adjustment set: "
                  f"{escape(', '.join(str(c) for c in as_list(causal.get('confounders'))) or 'empty')}.", ""]
    warnings = as_list(causal.get("warnings"))
    if warnings:
        lines += ["Warnings:", ""] + [f"- {escape(w)}" for w in warnings] + [""]
    return lines


def render_markdown(documents: list[dict]) -> str:
    """Summary of any mix of evaluation, causal and gate documents, as GitHub-flavoured Markdown."""
    entries = expand(documents)
    lines = ["## livegate", ""]
    lines += [_verdict_line(v) + "  " for v in verdicts(entries)] + [""]
    # A session-level evaluation says so under the verdict: its numbers are returns per session.
    levels = [sessions.session_facts(entry.doc) | {"metric": primary_metric(entry.doc)}
              for entry in entries if entry.kind == "evaluation" and sessions.is_session(entry.doc)]
    for line in dict.fromkeys(f"ℹ️ Evaluated per session: values are the "
                              f"{escape(sessions.value_phrase(f['metric'], f['gamma']))}, from "
                              f"{sessions.size_text(f)}." for f in levels):
        lines += [line, ""]
    # Warnings right under the verdict: a low effective sample size must not hide at the bottom.
    alerts = [{"text": w, "policies": [], "metrics": []}
              for entry in entries if entry.kind == "gate" for w in gate_warnings(entry.doc)]
    alerts += [w for entry in entries if entry.kind == "evaluation" for w in evaluation_warnings(entry.doc)]
    if alerts:
        lines += [f"> ⚠️ **Warnings ({len(alerts)})**", ">"]
        for w in alerts:
            who = ", ".join(escape(p) for p in w["policies"])
            if w["metrics"]:
                who += " on " + ", ".join(escape(m) for m in w["metrics"])
            lines.append(f"> - {who.strip() + ': ' if who else ''}{escape(w['text'])}")
        lines.append("")
    render = {"gate": _gate, "evaluation": _evaluation, "causal": _causal}
    for entry in entries:
        lines += render[entry.kind](entry)
    inputs = []
    for entry in entries:
        if entry.embedded_in:
            continue  # the gate's own footer line names what it read
        doc = entry.doc
        # A shortened fingerprint in a code span; backticks removed so that it cannot close the span.
        named = ", ".join(f"{escape(name)} `{fmt.text(fp).replace('`', '')[:19]}`"
                          for name, _, fp in flatten_inputs(doc.get("inputs")) if fp)
        inputs.append(f"{escape(doc.get('schema'))}: livegate {escape(doc.get('livegate_version'))}, "
                      f"seed {escape(doc.get('seed'))}" + (f"; inputs {named}" if named else ""))
    if inputs:
        lines += ["<sub>" + "<br>".join(inputs) + "<br>Full details, charts and configuration in the HTML report.</sub>",
                  ""]
    return "\n".join(lines).rstrip() + "\n"
