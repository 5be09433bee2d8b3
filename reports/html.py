"""The self-contained HTML report: one file, inline CSS and SVG, no scripts, no network.

This module turns result documents into small "view" dicts (what to show, in which order, with
which chart) and hands them to one Jinja2 template. Why Jinja2: autoescaping makes every name from
a document (policies, metrics, segments: user input) safe by default, which hand-built HTML strings
would have to get right at every call site. The template reads only these views, never raw
documents, so a missing field in a document is handled once, here, and renders as a dash.
"""
from __future__ import annotations

import json
import re
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from livegate.datasets._version import __version__

from . import charts
from . import formatting as fmt
from . import sessions
from .selection import auto_choices, rule_text
from .documents import (GATE_UNSUPPORTED_LABEL, Entry, alpha_of, as_dict, as_list, as_str, baseline_of, estimators_of,
                        evaluation_warnings, expand, flatten_inputs, gate_candidates, gate_thresholds,
                        gate_thresholds_text, gate_warnings, metric_definitions, metrics_of, ordered_policies,
                        primary_estimator, primary_metric, verdicts)

_env = Environment(
    loader=PackageLoader(__package__, "templates"),
    autoescape=True,             # every value is escaped unless it is Markup we produced ourselves
    undefined=StrictUndefined,   # a template typo fails the tests instead of printing nothing
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_env.filters.update(num=fmt.num, signed=fmt.signed, pct=fmt.pct, interval=fmt.interval, pvalue=fmt.pvalue,
                    level=fmt.level, text=fmt.text, plain=fmt.plain,
                    when=fmt.when, sentence=fmt.sentence, span=fmt.span)


def render_html(documents: list[dict]) -> str:
    """Any mix of evaluation, causal and gate documents -> one self-contained HTML page."""
    entries = expand(documents)
    sections = [_VIEWS[entry.kind](entry) for entry in entries]
    # Every evaluation warning also goes under the verdict, linked to its section: a low effective
    # sample size must not be found only by those who scroll to the diagnostics.
    alerts = [{"text": text, "policies": [], "metrics": [], "anchor": f"{section['anchor']}-gate-warnings"}
              for section in sections if section["kind"] == "gate" for text in section["warnings"]]
    alerts += [{**warning, "anchor": f"{section['anchor']}-warnings"}
               for section in sections if section["kind"] == "evaluation" for warning in section["warnings"]]
    # A session-level evaluation says so under the verdict: its numbers are returns per session.
    levels = list(dict.fromkeys(section["session"]["headline"] for section in sections
                                if section["kind"] == "evaluation" and section["session"]))
    return _env.get_template("report.html.j2").render(
        verdicts=verdicts(entries),
        levels=levels,
        alerts=alerts,
        sections=sections,
        footer=[_footer_view(entry) for entry in entries],
        version=__version__,
    )


#: A chart never shrinks below this share of its natural size: below it, its 8-9 pt text would be
#: under 9 px high. A container narrower than that scrolls the chart sideways (figure.chart has
#: overflow-x: auto) instead of shrinking the text out of legibility.
MIN_CHART_SCALE = 0.75


def _svg(svg: str | None) -> Markup | None:
    # Only charts.py output is marked safe: it is SVG we drew, with matplotlib escaping the text.
    if not svg:
        return None
    # matplotlib writes width="504pt" height="..." and a viewBox: CSS scales the chart to its
    # container (max-width: 100%, height: auto); the min-width keeps its text legible.
    width = re.match(r'<svg[^>]*?\swidth="([0-9.]+)pt"', svg)
    if width:
        svg = svg.replace("<svg", f'<svg style="min-width: {float(width.group(1)) * MIN_CHART_SCALE:.0f}pt"', 1)
    return Markup(svg)


def _responsive(draw, *args, **kwargs) -> Markup | None:
    """A wide chart for desktops and its narrow version for phones; CSS shows one of the two
    (the .wide/.narrow rules), so each is drawn for its width instead of one being scaled to half."""
    wide = _svg(draw(*args, **kwargs))
    if wide is None:
        return None
    narrow = _svg(draw(*args, narrow=True, **kwargs))
    return Markup('<div class="wide">') + wide + Markup('</div><div class="narrow">') + narrow + Markup("</div>")


def _title(entry: Entry, text: str) -> str:
    return text + (" (embedded in the gate)" if entry.embedded_in else "")


# --- evaluation ---------------------------------------------------------------------------------

def _estimate_views(metric: str, policies: dict, baseline: str | None, estimators: list[str]) -> dict:
    names = ordered_policies(policies, baseline)
    rows = []
    points: dict[tuple[str, str], dict] = {}
    for name in names:
        estimates = as_dict(as_dict(policies.get(name)).get("estimates"))
        cells = []
        for estimator in estimators:
            estimate = as_dict(estimates.get(estimator))
            cells.append(estimate)
            points[(name, estimator)] = estimate
        rows.append({"name": name, "is_baseline": name == baseline, "cells": cells})
    diff_rows = []
    diff_points: dict[tuple[str, str], dict] = {}
    candidates = [n for n in names if n != baseline]
    for name in candidates:
        vs_baseline = as_dict(as_dict(policies.get(name)).get("vs_baseline"))
        for estimator in estimators:
            vs = as_dict(vs_baseline.get(estimator))
            if not vs:
                continue
            low, high = fmt.as_number(vs.get("ci_low")), fmt.as_number(vs.get("ci_high"))
            # Reading the interval the producer computed, not recomputing anything.
            verdict = ("higher" if low is not None and low > 0 else
                       "lower" if high is not None and high < 0 else
                       "no clear difference" if low is not None and high is not None else "—")
            diff_rows.append({"name": name, "estimator": estimator, "vs": vs, "reading": verdict})
            diff_points[(name, estimator)] = {"value": vs.get("difference"), "ci_low": vs.get("ci_low"),
                                              "ci_high": vs.get("ci_high")}
    colours = {e: charts.PALETTE[i % len(charts.PALETTE)] for i, e in enumerate(estimators)}
    return {
        "name": metric,
        "rows": rows,
        "chart": _responsive(charts.forest, names, estimators, points, xlabel=f"{metric}: estimated policy value",
                             emphasis=baseline, colours=colours),
        "diff_rows": diff_rows,
        "diff_chart": _responsive(charts.forest, candidates, estimators, diff_points,
                                  xlabel=f"{metric}: difference to {baseline}", reference=0.0,
                                  reference_label="no difference", colours=colours),
    }


def _reward_model_view(evaluation: dict) -> list[dict]:
    """One row per metric and distinct reward model; policies sharing a model share a row."""
    rows = []
    for metric, block in metrics_of(evaluation).items():
        groups: list[tuple[dict, list[str]]] = []
        for name, policy in as_dict(block.get("policies")).items():
            model = as_dict(as_dict(as_dict(policy).get("diagnostics")).get("reward_model"))
            if not model:
                continue
            for known, names in groups:
                if known == model:
                    names.append(str(name))
                    break
            else:
                groups.append((model, [str(name)]))
        for model, names in groups:
            rows.append({"metric": metric, "policies": names, "model": model})
    return rows


def _time_window_view(evaluation: dict, baseline: str | None) -> dict | None:
    block = as_dict(evaluation.get("time_windows"))
    windows = [as_dict(w) for w in as_list(block.get("windows"))]
    if not windows:
        return None
    metrics: list[str] = list(metrics_of(evaluation))  # primary metric first, as everywhere
    for window in windows:
        for metric in as_dict(window.get("metrics")):
            if metric not in metrics:
                metrics.append(str(metric))
    metrics = [m for m in metrics if any(m in as_dict(w.get("metrics")) for w in windows)]
    views = []
    for metric in metrics:
        policies: list[str] = []
        for window in windows:
            for name in as_dict(as_dict(window.get("metrics")).get(metric)):
                if name not in policies:
                    policies.append(str(name))
        policies = ordered_policies(dict.fromkeys(policies), baseline)
        rows = [{"start": w.get("start"), "end": w.get("end"), "n": w.get("n"),
                 "cells": [as_dict(as_dict(as_dict(w.get("metrics")).get(metric)).get(p)) for p in policies]}
                for w in windows]
        views.append({"metric": metric, "policies": policies, "rows": rows,
                      "chart": _responsive(charts.time_series, windows, metric, policies, ylabel=metric,
                                           baseline=baseline)})
    return {"estimator": as_str(block.get("estimator")), "metrics": views}


def _session_view(evaluation: dict, baseline: str | None, estimator: str | None) -> dict | None:
    """Session level: the facts for the lead, and per metric the value per policy with the
    effective number of sessions and the collapse step, the per-step contribution chart and the
    weight-collapse chart. None for a decision-level document (or one from before `level`)."""
    facts = sessions.session_facts(evaluation)
    if facts is None:
        return None
    metric = primary_metric(evaluation)
    gamma = facts["gamma"]
    metric_views = []
    charted: list[tuple[str, Any]] = []  # (metric, weights) of the collapse charts drawn so far
    for name, block in metrics_of(evaluation).items():
        policies = as_dict(block.get("policies"))
        rows, curves, totals, shares, collapse = [], {}, {}, {}, {}
        for policy in ordered_policies(policies, baseline):
            result = as_dict(policies.get(policy))
            diag = as_dict(result.get("diagnostics"))
            by_step = as_dict(diag.get("by_step"))
            estimates = as_dict(result.get("estimates"))
            ess, n = fmt.as_number(diag.get("ess")), fmt.as_number(diag.get("n"))
            rows.append({"name": policy, "is_baseline": policy == baseline, "d": diag,
                         "estimate": as_dict(estimates.get(estimator)),
                         "ess_share": ess / n if ess is not None and n else None,
                         "collapse": sessions.collapse_text(diag)})
            if as_list(by_step.get("value")):
                curves[policy] = as_list(by_step.get("value"))
                # The curve adds up to the wpdis value: the document's number, not a sum made here.
                if fmt.as_number(as_dict(estimates.get("wpdis")).get("value")) is not None:
                    totals[policy] = as_dict(estimates.get("wpdis")).get("value")
            step_shares = sessions.step_shares(diag)
            if any(x is not None for x in step_shares):
                shares[policy] = step_shares
                collapse[policy] = diag.get("collapse_step")
        # The weights are the policies', not the metric's: a second metric gets the same chart, which
        # is drawn once and referred to after that.
        weights = (shares, collapse)
        same_as = next((m for m, w in charted if w == weights), None)
        if same_as is None and shares:
            charted.append((name, weights))
        ylabel = f"{name} at the step" + ("" if gamma in (None, 1) else f" × {fmt.plain(gamma)}^step")
        metric_views.append({
            "name": name, "phrase": sessions.value_phrase(name, gamma), "rows": rows,
            "has_curves": bool(curves), "has_shares": bool(shares), "has_totals": bool(totals),
            "contribution_chart": _responsive(charts.step_contributions, curves, ylabel=ylabel, baseline=baseline,
                                              totals=totals),
            "collapse_chart": None if same_as else _responsive(charts.weight_collapse, shares, collapse,
                                                               threshold=sessions.COLLAPSE_SHARE,
                                                               baseline=baseline),
            "collapse_same_as": same_as,
        })
    gamma_text = fmt.MISSING if gamma is None else fmt.plain(gamma)
    return {**facts, "gamma_text": gamma_text, "size": sessions.size_text(facts),
            "phrase": sessions.value_phrase(metric, gamma), "threshold": sessions.COLLAPSE_SHARE,
            "threshold_text": fmt.plain(100 * sessions.COLLAPSE_SHARE) + "%",
            "headline": f"Evaluated per session (gamma = {gamma_text}): the values are the "
                        f"{sessions.value_phrase(metric, gamma)}, from {sessions.size_text(facts)}.",
            "metrics": {view["name"]: view for view in metric_views}}


def _evaluation_view(entry: Entry) -> dict:
    evaluation = entry.doc
    baseline = baseline_of(evaluation)
    estimators = estimators_of(evaluation)
    metrics = metrics_of(evaluation)
    metric = primary_metric(evaluation)
    data = as_dict(evaluation.get("data"))
    period = as_dict(data.get("period"))
    propensity = as_dict(data.get("propensity"))
    diagnostics = []
    histograms = []
    primary_policies = as_dict(as_dict(metrics.get(metric)).get("policies"))
    for name in ordered_policies(primary_policies, baseline):
        diag = as_dict(as_dict(primary_policies.get(name)).get("diagnostics"))
        ess, n = fmt.as_number(diag.get("ess")), fmt.as_number(diag.get("n"))
        diagnostics.append({"name": name, "is_baseline": name == baseline, "d": diag,
                            "q": as_dict(diag.get("weight_quantiles")),
                            "ess_share": ess / n if ess is not None and n else None,
                            "warned": bool(as_list(diag.get("warnings")))})
        histogram = as_dict(diag.get("weight_histogram"))
        svg = charts.weight_histogram(as_list(histogram.get("edges")), as_list(histogram.get("counts")),
                                      title=f"{name}: ESS {fmt.num(diag.get('ess'))} of {fmt.num(diag.get('n'))}"
                                      + (" sessions" if sessions.is_session(evaluation) else ""))
        # All weights in one bin (the logging policy's are all 1) make a chart with nothing to read.
        if svg and sum(1 for c in as_list(histogram.get("counts")) if fmt.as_number(c)) > 1:
            histograms.append({"name": name, "chart": _svg(svg)})
    session = _session_view(evaluation, baseline, primary_estimator(evaluation, entry.estimator))
    return {
        "kind": "evaluation",
        "anchor": f"d{entry.number}",
        "title": _title(entry, "Policy evaluation" + (" per session" if session else "")),
        "session": session,
        "baseline": baseline,
        "primary_metric": metric,
        "metric_definitions": metric_definitions(evaluation),
        "primary_estimator": primary_estimator(evaluation, entry.estimator),
        "estimators": estimators,
        "level": fmt.confidence(alpha_of(evaluation)),
        "ci_method": as_str(as_dict(evaluation.get("config")).get("ci")),
        "data": {
            "n_rows": data.get("n_rows"), "n_decisions": data.get("n_decisions"),
            "n_actions": data.get("n_actions"), "n_positions": data.get("n_positions"),
            "period": (period.get("start"), period.get("end")) if period else None,
            "propensity": {"min": propensity.get("min"), "max": propensity.get("max"),
                           "source": fmt.text(propensity.get("source"))},
            "rewards": [{"name": str(name), "s": as_dict(stats), "q": as_dict(as_dict(stats).get("quantiles"))}
                        for name, stats in as_dict(data.get("rewards")).items()],
        } if data else None,
        "metrics": [_estimate_views(name, as_dict(block.get("policies")), baseline, estimators)
                    for name, block in metrics.items()],
        "diagnostics": diagnostics,
        "histograms": histograms,
        "warnings": evaluation_warnings(evaluation),
        "reward_models": _reward_model_view(evaluation),
        "q_hat_given": as_dict(evaluation.get("inputs")).get("q_hat") is not None,
        "time_windows": _time_window_view(evaluation, baseline),
        "auto_choices": auto_choices(evaluation),
        "auto_rule": rule_text(evaluation),
    }


# --- causal -------------------------------------------------------------------------------------

def _causal_view(entry: Entry) -> dict:
    from .documents import (REFUTATION_STATES, causal_estimand_label, causal_overlap_lines, ordered_estimands,
                            refutation_state)

    causal = entry.doc
    graph = as_dict(causal.get("graph"))
    treatment, outcome = as_str(causal.get("treatment")), as_str(causal.get("outcome"))
    ate = as_dict(causal.get("ate"))
    label, estimand = causal_estimand_label(causal), as_dict(causal.get("estimand"))
    effects = [("naive difference in means (unadjusted)", as_dict(causal.get("naive"))),
               (f"inverse propensity weighting ({label})", as_dict(causal.get("ipw"))),
               (f"adjusted {label} ({ate.get('estimator') or 'estimator not named'})", ate)]
    effects = [(name, block) for name, block in effects if block]
    segments = [as_dict(s) for s in as_list(causal.get("segments"))]
    segment_names = [fmt.text(s.get("segment")) for s in segments]
    refutations = []
    for refutation in as_list(causal.get("refutations")):
        refutation = as_dict(refutation)
        details = as_dict(refutation.get("details"))
        state = refutation_state(refutation)
        refutations.append({"r": refutation, "state": state, "state_label": REFUTATION_STATES[state].lower(),
                            "details": [(str(k), _plain(v)) for k, v in details.items()]})
    others = [{"name": as_str(b.get("label")) or str(name).upper(), "e": b,
               "supported": as_dict(b).get("supported") is not False}
              for name, b in ordered_estimands(causal.get("estimands")) if name != estimand.get("name")]
    settings = as_dict(causal.get("config")) or as_dict(causal.get("settings"))
    return {
        "kind": "causal",
        "anchor": f"d{entry.number}",
        "title": _title(entry, f"Causal effect of {treatment} on {outcome}"),
        "treatment": treatment, "outcome": outcome,
        "confounders": [str(c) for c in as_list(causal.get("confounders"))],
        "modifiers": [str(m) for m in as_list(causal.get("effect_modifiers"))],
        "estimand": as_str(causal.get("identified_estimand")),
        "target": {"label": label, "meaning": as_str(estimand.get("meaning")),
                   "population": as_str(estimand.get("population")),
                   "supported": estimand.get("supported") is not False} if estimand else None,
        "overlap_lines": causal_overlap_lines(causal),
        "other_estimands": [o for o in others if isinstance(o["e"], dict)],
        "graph_source": as_str(settings.get("graph")),
        "graph": _svg(charts.causal_graph(as_list(graph.get("nodes")), as_list(graph.get("edges")),
                                          treatment=treatment, outcome=outcome,
                                          confounders=as_list(causal.get("confounders")),
                                          modifiers=as_list(causal.get("effect_modifiers")))),
        "effects": [{"name": name, "e": block} for name, block in effects],
        "effects_chart": _responsive(charts.forest, [n for n, _ in effects], ["effect"],
                                     {(n, "effect"): b for n, b in effects}, xlabel=f"effect on {outcome}",
                                     reference=0.0),
        "refutations": refutations,
        "segments": segments,
        "segments_chart": _responsive(charts.forest, segment_names, ["effect"],
                                      {(n, "effect"): s for n, s in zip(segment_names, segments)},
                                      xlabel=f"effect on {outcome}", reference=fmt.as_number(ate.get("value")),
                                      reference_label="average effect"),
        "propensity_source": as_str(as_dict(causal.get("propensities")).get("source")),
        "n_rows": causal.get("n_rows"), "n_treated": causal.get("n_treated"),
        "bias_of_naive": as_dict(causal.get("bias_of_naive")),
        "notes": [str(n) for n in as_list(causal.get("notes"))],
        "policy": [(str(k), _plain(v)) for k, v in as_dict(causal.get("policy")).items()]
        if causal.get("policy") else None,
        "warnings": [str(w) for w in as_list(causal.get("warnings"))],
    }


# --- gate ---------------------------------------------------------------------------------------

def _gate_view(entry: Entry) -> dict:
    gate = entry.doc
    candidates = []
    groups: dict[tuple, dict] = {}
    for candidate in as_list(gate.get("candidates")):
        candidate = as_dict(candidate)
        name = fmt.text(candidate.get("name"))
        criteria = [as_dict(c) for c in as_list(candidate.get("criteria"))]
        candidates.append({"name": name, "decision": fmt.text(candidate.get("decision")),
                           "diagnostics": as_dict(candidate.get("diagnostics")), "criteria": criteria,
                           "failures": [str(f) for f in as_list(as_dict(candidate.get("diagnostics")).get("failures"))]})
        for criterion in criteria:
            # One chart per criterion (metric and rule): the candidates share its units and threshold.
            key = (fmt.text(criterion.get("metric")), fmt.text(criterion.get("rule")),
                   bool(criterion.get("relative")), fmt.as_number(criterion.get("threshold")))
            group = groups.setdefault(key, {"names": [], "points": {}})
            group["names"].append(name)
            group["points"][(name, fmt.text(criterion.get("decision")))] = {
                "value": criterion.get("difference"), "ci_low": criterion.get("ci_low"),
                "ci_high": criterion.get("ci_high")}
    charts_ = []
    for (metric, rule, relative, threshold), group in groups.items():
        decisions = [d for d in ("pass", "inconclusive", "fail")
                     if any(k[1] == d for k in group["points"])]
        decisions += sorted({k[1] for k in group["points"]} - set(decisions))
        svg = _responsive(charts.forest, group["names"], decisions, group["points"],
                          xlabel=f"{metric}: difference to {gate.get('baseline')}", reference=threshold,
                          reference_label=f"threshold ({rule}{', relative margin' if relative else ''})",
                          colours=charts.DECISION_COLOURS)
        if svg:
            charts_.append({"title": f"{metric}, {rule}", "chart": svg})
    multiplicity = as_dict(gate.get("multiplicity"))
    return {
        "kind": "gate",
        "anchor": f"d{entry.number}",
        "title": "Gate decision",
        "decision": fmt.text(gate.get("decision")),
        "exit_code": gate.get("exit_code"),
        "baseline": fmt.text(gate.get("baseline")),
        "estimator": fmt.text(gate.get("estimator")),
        "alpha": gate.get("alpha"),
        "ci": fmt.text(gate.get("ci")),
        "multiplicity": multiplicity or None,
        "candidates": candidates,
        "summaries": gate_candidates(gate),
        "min_ess": gate_thresholds(gate).get("min_ess"),
        "min_ess_share": gate_thresholds(gate).get("min_ess_share"),
        "max_unsupported_mass": gate_thresholds(gate).get("max_unsupported_mass"),
        "max_mean_weight_z": gate_thresholds(gate).get("max_mean_weight_z"),
        "thresholds": gate_thresholds_text(gate),
        "warnings": gate_warnings(gate),
        "unsupported_label": GATE_UNSUPPORTED_LABEL,
        "charts": charts_,
        "causal": as_dict(gate.get("causal")) or None,
    }


# --- shared helpers and the reproducibility footer --------------------------------------------------

def _plain(value: Any) -> str:
    """A detail value (number, list, nested dict) as short text for a table cell."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt.plain(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return fmt.text(value)


def _footer_view(entry: Entry) -> dict:
    doc = entry.doc
    titles = {"evaluation": "Policy evaluation", "causal": "Causal analysis", "gate": "Gate"}
    return {
        "anchor": f"d{entry.number}",
        "title": _title(entry, titles[entry.kind]),
        "schema": fmt.text(doc.get("schema")),
        "version": fmt.text(doc.get("livegate_version")),
        "inputs": flatten_inputs(doc.get("inputs")),
        "seed": fmt.text(doc.get("seed")),
        # The causal document calls its configuration "settings".
        "config": json.dumps(doc.get("config", doc.get("settings")), indent=2, sort_keys=True, ensure_ascii=False,
                             default=str),
        "timings": [(str(k), v) for k, v in as_dict(doc.get("timings")).items()],
    }


_VIEWS = {"evaluation": _evaluation_view, "causal": _causal_view, "gate": _gate_view}
