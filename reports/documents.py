"""Reading result documents: which kind each is, what a gate embeds, and the one-line verdicts.

Result documents are plain dicts loaded from JSON, written by `ope`, `causal` and the gate. The
renderers only read them: nothing here recomputes a statistic. Reading is forgiving on purpose
(a missing block renders as absent, a null number as a dash) because a report is most needed
exactly when a run went partly wrong; only a document whose kind cannot be told is refused (and,
read from a file by `livegate report`, one without the core fields of its kind: `check_complete`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from livegate.datasets.errors import InputError, Problem

from . import formatting as fmt

KINDS = ("evaluation", "causal", "gate", "learn", "replay", "monitor")
#: kinds that are chapters of their own (`chapters`, rendered by reports/chapters.py): a learn document
#: also contributes its held-out evaluation to `expand`, a replay or monitor document nothing
CHAPTER_KINDS = ("learn", "replay", "monitor")
SUPPORTED_VERSION = "1"
_SCHEMA = re.compile(r"^livegate\.([a-z_]+)/(\d+)$")
#: kind -> the fields without which a document has nothing to report, and their JSON types
_CORE = {"evaluation": {"policies": dict, "baseline": str},
         "gate": {"decision": str, "candidates": list},
         "causal": {"treatment": str, "outcome": str},
         "learn": {"method": str, "split": dict, "heldout_evaluation": dict},
         "replay": {"config": dict, "data": dict, "algorithms": dict},
         "monitor": {"status": str, "streams": list, "drift": dict}}
_COMMAND = {"evaluation": "evaluate --out", "gate": "gate --out", "causal": "causal --out", "learn": "learn --result",
            "replay": "replay --out", "monitor": "monitor --out"}
_WRITERS = "livegate evaluate, causal, gate, learn, replay or monitor"


def document_kind(doc: dict, source: str = "result document") -> str:
    """"evaluation", "causal", "gate", "learn" or "replay", from doc["schema"]; anything else raises InputError."""
    supported = ", ".join(f"livegate.{kind}/{SUPPORTED_VERSION}" for kind in KINDS)
    if not isinstance(doc, dict):
        raise InputError(Problem(source, f"is not a livegate result document (a JSON object was expected, "
                                         f"got {type(doc).__name__})",
                                 fix=f"pass the JSON written by {_WRITERS} ({supported})"))
    schema = doc.get("schema")
    match = _SCHEMA.match(schema) if isinstance(schema, str) else None
    if schema is None:
        raise InputError(Problem(source, "has no \"schema\" field, so it is not a livegate result document",
                                 fix=f"pass the JSON written by {_WRITERS} ({supported})"))
    if match is None or match.group(1) not in KINDS:
        raise InputError(Problem(source, f"has schema {schema!r}, which livegate reports cannot render",
                                 fix=f"pass a document with one of the schemas {supported}"))
    if match.group(2) != SUPPORTED_VERSION:
        raise InputError(Problem(source, f"has schema {schema!r}, a version this livegate cannot render",
                                 fix=f"render it with the livegate version that wrote it, or re-run to get "
                                     f"livegate.{match.group(1)}/{SUPPORTED_VERSION}"))
    return match.group(1)


def check_complete(doc: dict, source: str) -> None:
    """Refuse a document (read from a file) that lacks the core fields of its kind: livegate always
    writes them, so such a file is truncated or not livegate's, and its report would be empty."""
    kind = document_kind(doc, source)
    json_type = {dict: "an object", list: "a list", str: "a string"}
    wrong = [f'"{key}" ({"missing" if key not in doc else "not " + json_type[type_]})'
             for key, type_ in _CORE[kind].items() if not isinstance(doc.get(key), type_)]
    if wrong:
        raise InputError(Problem(source, f"is an incomplete {doc['schema']} document: {', '.join(wrong)}",
                                 fix=f"pass the complete JSON written by livegate {_COMMAND[kind]}"))


@dataclass(frozen=True)
class Entry:
    """One document to render, with where it came from (a gate embeds its evaluation and causal run)."""

    kind: str
    doc: dict
    number: int              # 1-based position among all rendered documents: unique anchors
    embedded_in: str | None  # "gate" for a gate's embedded documents
    estimator: str | None    # the estimator a gate decided on, to lead with in its evaluation


def expand(documents: list[dict]) -> list[Entry]:
    """The documents in the order given, each gate followed by the evaluation and causal result it embeds.
    A learn document stands for its held-out evaluation (an evaluation entry of its own: the evaluation
    of the learned policy on the decisions it never saw); a replay document has no entry. Both are
    also chapters of their own (`chapters`)."""
    if not isinstance(documents, (list, tuple)):
        raise InputError("render_* expects a list of result documents", source="reports")
    entries: list[Entry] = []
    for position, doc in enumerate(documents, start=1):
        source = f"result document {position} of {len(documents)}"
        kind = document_kind(doc, source)
        if kind == "learn":
            heldout = doc.get("heldout_evaluation")
            where = f"{source}, field 'heldout_evaluation'"
            if not isinstance(heldout, dict) or document_kind(heldout, where) != "evaluation":
                raise InputError(Problem(where, "should be an evaluation document (livegate.evaluation/1)"))
            entries.append(Entry("evaluation", heldout, len(entries) + 1, None, None))
            continue
        if kind in ("replay", "monitor"):
            continue
        entries.append(Entry(kind, doc, len(entries) + 1, None, None))
        if kind != "gate":
            continue
        for key, expected in (("evaluation", "evaluation"), ("causal_result", "causal")):
            inner = doc.get(key)
            if inner is None:
                continue
            where = f"{source}, field '{key}'"
            if not isinstance(inner, dict):
                raise InputError(Problem(where, f"should be a {expected} document (a JSON object)"))
            # An embedded document may omit its schema (its place says what it is); a wrong one is an error.
            if "schema" in inner and document_kind(inner, where) != expected:
                raise InputError(Problem(where, f"should be a {expected} document, not {inner['schema']!r}"))
            entries.append(Entry(expected, inner, len(entries) + 1, "gate", as_str(doc.get("estimator"))))
    return entries


def chapters(documents: list[dict]) -> list[tuple[str, dict]]:
    """The (kind, document) pairs among `documents` that are chapters of their own (CHAPTER_KINDS:
    learn and replay), in the order given."""
    if not isinstance(documents, (list, tuple)):
        raise InputError("render_* expects a list of result documents", source="reports")
    kinds = [document_kind(doc, f"result document {i} of {len(documents)}") for i, doc in enumerate(documents, 1)]
    return [(kind, doc) for kind, doc in zip(kinds, documents) if kind in CHAPTER_KINDS]


# --- tolerant accessors -------------------------------------------------------------------------

def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def metrics_of(evaluation: dict) -> dict[str, dict]:
    """metric name -> {"policies": {...}}, the primary metric first (JSON writers sort keys, which
    would otherwise put "click" before the metric the user asked about); a document with only
    top-level policies is read as one metric."""
    metrics = as_dict(evaluation.get("metrics"))
    if metrics:
        primary = as_str(evaluation.get("metric"))
        order = ([primary] if primary in metrics else []) + [m for m in metrics if m != primary]
        return {str(name): as_dict(metrics[name]) for name in order}
    policies = as_dict(evaluation.get("policies"))
    if policies:
        return {str(evaluation.get("metric") or "reward"): {"policies": policies}}
    return {}


def ordered_policies(policies: dict, baseline: str | None) -> list[str]:
    """Policy names with the baseline first, the others in document order."""
    names = [str(name) for name in policies]
    return ([baseline] if baseline in names else []) + [n for n in names if n != baseline]


def primary_metric(evaluation: dict) -> str | None:
    metrics = metrics_of(evaluation)
    metric = as_str(evaluation.get("metric"))
    if metric in metrics:
        return metric
    return next(iter(metrics), None)


def estimators_of(evaluation: dict) -> list[str]:
    """Estimator identifiers in the configured order, then any others the policies report."""
    found: list[str] = []
    for block in metrics_of(evaluation).values():
        for policy in as_dict(block.get("policies")).values():
            for name in as_dict(as_dict(policy).get("estimates")):
                if name not in found:
                    found.append(str(name))
    configured = [str(e) for e in as_list(as_dict(evaluation.get("config")).get("estimators"))]
    return [e for e in configured if e in found] + [e for e in found if e not in configured]


def primary_estimator(evaluation: dict, hint: str | None = None) -> str | None:
    """The estimator to lead with: the gate's if it decided on one, else the first configured."""
    estimators = estimators_of(evaluation)
    if hint in estimators:
        return hint
    return estimators[0] if estimators else None


def baseline_of(evaluation: dict) -> str | None:
    return as_str(evaluation.get("baseline") or as_dict(evaluation.get("config")).get("baseline"))


def alpha_of(doc: dict) -> Any:
    return doc.get("alpha", as_dict(doc.get("config")).get("alpha"))


def evaluation_warnings(evaluation: dict) -> list[dict]:
    """Every warning of an evaluation once, in plain words, with whom it concerns.

    Producers attach warnings per policy and metric, so one reward-model warning arrives four times
    (once per policy). Here each text appears once with the policies it concerns and, unless it
    concerns every metric, the metrics: {"text", "policies": [...], "metrics": [...]}. Caveats the
    document records only as flags (compact form, estimated propensities) are worded here too.
    """
    metrics = metrics_of(evaluation)
    found: dict[str, dict] = {}

    def add(text: str, policy: str | None = None, metric: str | None = None) -> None:
        item = found.setdefault(text, {"text": text, "policies": [], "metrics": []})
        if policy is not None and policy not in item["policies"]:
            item["policies"].append(policy)
        if metric is not None and metric not in item["metrics"]:
            item["metrics"].append(metric)

    for text in as_list(evaluation.get("warnings")):
        add(str(text))
    if as_dict(as_dict(evaluation.get("data")).get("propensity")).get("source") == "estimated":
        add("The logs had no propensities; they were estimated from the context, so every estimate here "
            "depends on that propensity model being right.")
    for metric, block in metrics.items():
        for name, policy in as_dict(block.get("policies")).items():
            diagnostics = as_dict(as_dict(policy).get("diagnostics"))
            for text in as_list(diagnostics.get("warnings")):
                add(str(text), str(name), metric)
            if diagnostics.get("compact_form"):
                add("Given in compact form (per-row probability columns): the sum-to-one and support checks "
                    "could not be made.", str(name), metric)
    items = list(found.values())
    for item in items:
        if len(item["metrics"]) == len(metrics):
            item["metrics"] = []  # concerns every metric: naming them all adds nothing
    return items


def metric_definitions(evaluation: dict) -> list[tuple[str, str]]:
    """(metric, expression) pairs from the evaluation's `metric_definitions` (e.g. "engagement":
    "watch_seconds + 50*gift_value"), the primary metric first, then the document's metric order.
    Documents written before the key existed give an empty list (the report then shows no table)."""
    definitions = as_dict(evaluation.get("metric_definitions"))
    order = [m for m in metrics_of(evaluation) if m in definitions]
    order += [str(m) for m in definitions if m not in order]
    return [(name, fmt.text(definitions[name])) for name in order]


#: The unsupported-mass figure ope/gate.py (_diagnostic_failures) compares with the gate's
#: max_unsupported_mass, and how to call it: the upper bound (a candidate is held back unless the
#: data show the mass is below the ceiling). The gate's candidate block carries it (older documents
#: only the point estimate: the report then reads the bound from the embedded evaluation); showing
#: the point next to "meets the thresholds" would compare the reader's eye with a number the gate
#: never used. tests/test_reports_fixes.py checks that this still matches what ope/gate.py compares.
GATE_UNSUPPORTED_KEY = "unsupported_mass_upper"
GATE_UNSUPPORTED_LABEL = "upper bound"


def gate_thresholds(gate: dict) -> dict:
    """The diagnostics thresholds a gate applied: the document's `diagnostics_thresholds` (defaults
    included), or, in documents written before it existed, what its gate.toml set."""
    return as_dict(gate.get("diagnostics_thresholds")) or as_dict(as_dict(gate.get("config")).get("diagnostics"))


def gate_thresholds_text(gate: dict) -> str | None:
    """The diagnostics thresholds in force, in one sentence; None for documents that do not record them."""
    t = as_dict(gate.get("diagnostics_thresholds"))
    if not t:
        return None

    def percent(value) -> str:
        number = fmt.as_number(value)
        return fmt.MISSING if number is None else fmt.plain(number * 100) + "%"

    loosened = [str(k) for k in as_list(t.get("loosened"))]
    return (f"diagnostics thresholds: ESS >= {fmt.plain(t.get('min_ess'))} and >= "
            f"{percent(t.get('min_ess_share'))} of the {'sessions' if gate.get('level') == 'session' else 'rows'}; "
            f"unsupported mass "
            f"{fmt.text(t.get('unsupported_mass_bound'))} bound <= {percent(t.get('max_unsupported_mass'))}; mean "
            f"weight at most {fmt.plain(t.get('max_mean_weight_z'))} standard errors above 1"
            + (f" (loosened in gate.toml: {', '.join(loosened)})" if loosened else ""))


def gate_warnings(gate: dict) -> list[str]:
    """The gate's own warnings: settings that let a worse candidate through."""
    return [str(w) for w in as_list(gate.get("warnings"))]


def _criterion_label(criterion: dict) -> str:
    return f"{fmt.text(criterion.get('metric'))} ({fmt.text(criterion.get('rule'))})"


def gate_candidates(gate: dict) -> list[dict]:
    """Per candidate of a gate: its decision, the criteria it passed, failed and left inconclusive,
    and its diagnostics as the gate judged them (ESS and the unsupported-mass bound it compared,
    with the thresholds from the gate's configuration, and the evaluation's warnings for it)."""
    evaluation = as_dict(gate.get("evaluation"))
    metrics = metrics_of(evaluation)
    settings = gate_thresholds(gate)
    out = []
    for candidate in as_list(gate.get("candidates")):
        candidate = as_dict(candidate)
        name = fmt.text(candidate.get("name"))
        criteria = [as_dict(c) for c in as_list(candidate.get("criteria"))]
        by_decision: dict[str, list[str]] = {"pass": [], "fail": [], "inconclusive": []}
        for criterion in criteria:
            by_decision.setdefault(fmt.text(criterion.get("decision")), []).append(_criterion_label(criterion))
        diagnostics = as_dict(candidate.get("diagnostics"))
        # The gate takes a candidate's weight diagnostics from its first criterion's metric.
        first = as_str(criteria[0].get("metric")) if criteria else None
        blocks = [metrics.get(first)] if first in metrics else []
        blocks += [b for m, b in metrics.items() if m != first]
        policy = {}
        for block in blocks:
            policy = as_dict(as_dict(as_dict(block).get("policies")).get(name))
            if policy:
                break
        evaluated = as_dict(policy.get("diagnostics"))
        bound = diagnostics.get(GATE_UNSUPPORTED_KEY, evaluated.get(GATE_UNSUPPORTED_KEY))
        ess, n = diagnostics.get("ess", evaluated.get("ess")), diagnostics.get("n", evaluated.get("n"))
        share = (fmt.as_number(ess) / fmt.as_number(n)
                 if fmt.as_number(ess) is not None and fmt.as_number(n) else None)
        warnings = [str(w) for w in as_list(evaluated.get("warnings"))]
        out.append({
            "name": name, "decision": fmt.text(candidate.get("decision")),
            "passed": by_decision["pass"], "failed": by_decision["fail"],
            "inconclusive": by_decision["inconclusive"],
            "ok": diagnostics.get("ok"), "failures": [str(f) for f in as_list(diagnostics.get("failures"))],
            "ess": ess, "n": n, "ess_share": share, "min_ess": settings.get("min_ess"),
            "ess_label": fmt.text(diagnostics.get("ess_label") or "ESS"), "unit": fmt.text(diagnostics.get("unit") or "rows"),
            "min_ess_required": diagnostics.get("min_ess_required"),
            "unsupported_bound": bound, "unsupported_bound_label": GATE_UNSUPPORTED_LABEL,
            "unsupported_estimate": diagnostics.get("unsupported_mass", evaluated.get("unsupported_mass")),
            "unsupported_upper": evaluated.get("unsupported_mass_upper"),
            "max_unsupported_mass": settings.get("max_unsupported_mass"),
            "warnings": warnings,
        })
    return out


# --- verdicts -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """The one line a reader sees first. `status` drives colour; `text` is plain (renderers escape it)."""

    status: str  # "pass" | "fail" | "inconclusive" | "info"
    label: str   # e.g. "PASS: ship"
    text: str


GATE_LABELS = {"pass": "PASS: ship", "fail": "FAIL: do not ship", "inconclusive": "INCONCLUSIVE: not enough evidence"}


def gate_verdict(gate: dict) -> Verdict:
    decision = as_str(gate.get("decision")) or "unknown"
    candidates = [as_dict(c) for c in as_list(gate.get("candidates"))]
    n_criteria = sum(len(as_list(c.get("criteria"))) for c in candidates)
    problems = []
    for candidate in candidates:
        for criterion in as_list(candidate.get("criteria")):
            criterion = as_dict(criterion)
            if criterion.get("decision") in ("fail", "inconclusive"):
                problems.append(f"{candidate.get('name')}: {criterion.get('decision')} on {criterion.get('metric')} "
                                f"({criterion.get('rule')})")
    causal = as_dict(gate.get("causal"))
    if causal and causal.get("decision") not in (None, "pass"):
        problems.append(f"causal check: {causal.get('decision')} on {causal.get('outcome')}")
    if decision == "pass":
        text = (f"{len(candidates)} candidate{'s' if len(candidates) != 1 else ''} pass "
                f"{'all ' if n_criteria > 1 else ''}{n_criteria} criteri{'a' if n_criteria != 1 else 'on'} "
                f"against {gate.get('baseline')}")
        if causal:
            text += " and the causal check"
    else:
        shown = problems[:3]
        text = "; ".join(shown) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        text = text or "see the criteria below"
        # What passed, too: a reader who sees only the problems cannot tell a near miss from a rout.
        passed = [f"{c['name']} on {', '.join(c['passed'])}" for c in gate_candidates(gate) if c["passed"]]
        if causal and causal.get("decision") == "pass":
            passed.append("the causal check")
        passed_text = "Passed: " + ("; ".join(passed) if passed else "nothing") + "."
    exit_code = gate.get("exit_code")
    if exit_code is not None:
        text += f" (exit code {exit_code})"
    if decision != "pass":
        text += ". " + passed_text
    status = decision if decision in GATE_LABELS else "info"
    return Verdict(status, GATE_LABELS.get(decision, f"GATE: {decision}"), text)


def evaluation_verdict(evaluation: dict, estimator_hint: str | None = None) -> Verdict:
    """Best candidate against the baseline on the primary metric, with its interval."""
    metric = primary_metric(evaluation)
    estimator = primary_estimator(evaluation, estimator_hint)
    baseline = baseline_of(evaluation)
    policies = as_dict(as_dict(metrics_of(evaluation).get(metric)).get("policies"))
    level = fmt.confidence(alpha_of(evaluation))
    compared = []
    for name, policy in policies.items():
        vs = as_dict(as_dict(as_dict(policy).get("vs_baseline")).get(estimator))
        if name != baseline and fmt.as_number(vs.get("difference")) is not None:
            compared.append((fmt.as_number(vs["difference"]), str(name), vs))
    if not compared:
        return Verdict("info", "EVALUATION", f"no candidate has a difference to the baseline {baseline} on {metric}")
    difference, name, vs = max(compared, key=lambda item: item[0])
    low, high = fmt.as_number(vs.get("ci_low")), fmt.as_number(vs.get("ci_high"))
    numbers = (f"{fmt.signed(difference)} ({fmt.pct(vs.get('relative'), sign=True)}) on {metric}, "
               f"{level} CI {fmt.interval(low, high)}, {estimator}")
    if low is not None and low > 0:
        return Verdict("pass", "BETTER", f"{name} beats {baseline}: {numbers}")
    if high is not None and high < 0:
        return Verdict("fail", "WORSE", f"no candidate beats {baseline}; even the best, {name}, is below it: {numbers}")
    return Verdict("inconclusive", "NO CLEAR DIFFERENCE",
                   f"best candidate {name} vs {baseline}: {numbers}; the interval includes zero")


#: How each refutation state is printed, everywhere (terminal, Markdown, HTML, JUnit).
REFUTATION_STATES = {"pass": "pass", "fail": "FAIL", "not_applicable": "not applicable", "unstable": "UNSTABLE"}


def refutation_state(refutation: dict) -> str:
    """"pass", "fail", "not_applicable" or "unstable". `passed` decides pass and fail, so a refutation
    whose `passed` is null (not applicable, or unstable: its verdict changes with the seed) is never
    shown as a failure, whatever else the document says."""
    passed = refutation.get("passed")
    if passed is True:
        return "pass"
    if passed is False:
        return "fail"
    state = refutation.get("state")
    return state if state in ("unstable", "not_applicable") else "not_applicable"


def causal_estimand_label(causal: dict) -> str:
    """"ATE", "ATT", ... of a causal document ("ATE" for documents written before estimands existed)."""
    return as_str(as_dict(causal.get("estimand")).get("label")) or "ATE"


#: The estimands in the order they are shown (documents hold them with sorted keys).
ESTIMAND_ORDER = ("ate", "att", "atc", "ato")


def ordered_estimands(mapping: Any) -> list[tuple[str, Any]]:
    """The items of a per-estimand object in the order ATE, ATT, ATC, ATO (others after, as given)."""
    items = list(as_dict(mapping).items())
    return sorted(items, key=lambda kv: ESTIMAND_ORDER.index(kv[0]) if kv[0] in ESTIMAND_ORDER else len(ESTIMAND_ORDER))


def _and(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def causal_overlap_lines(causal: dict) -> list[str]:
    """The overlap figures a reviewer needs next to a causal estimate, as sentences: the estimand's
    effective sample size per arm, its largest weight and the share of clipped propensities, the
    trimming (rows dropped by arm) and which estimands the data support. Empty when overlap is fine
    (no poor overlap, nothing trimmed or clipped, the estimand supported)."""
    overlap, estimand = as_dict(causal.get("overlap")), as_dict(causal.get("estimand"))
    if not overlap:
        return []
    weights, trim = as_dict(overlap.get("weights")), as_dict(overlap.get("trim"))
    dropped = as_dict(trim.get("dropped"))
    if not (overlap.get("poor") or estimand.get("supported") is False or fmt.as_number(dropped.get("total"))
            or fmt.as_number(overlap.get("n_clipped"))):
        return []
    label = causal_estimand_label(causal)
    low, high = (as_list(overlap.get("clip_bounds")) + [None, None])[:2]
    lines = [f"{label} weights: effective sample size {fmt.num(weights.get('ess_treated'))} treated and "
             f"{fmt.num(weights.get('ess_control'))} untreated rows; largest weight {fmt.num(weights.get('max_weight'))} "
             f"({fmt.pct(weights.get('max_weight_share'))} of its arm's total); {fmt.pct(overlap.get('share_clipped'))} "
             f"of the propensities clipped to [{fmt.plain(low)}, {fmt.plain(high)}]"]
    if trim:
        bounds = (as_list(trim.get("bounds")) + [None, None])[:2]
        lines.append(f"trimmed to propensities in [{fmt.plain(bounds[0])}, {fmt.plain(bounds[1])}] "
                     f"({'Crump et al. 2009 rule' if trim.get('rule') == 'crump' else 'fixed threshold'}): "
                     f"{fmt.num(dropped.get('total'))} of {fmt.num(trim.get('n_rows_before'))} rows dropped, "
                     f"{fmt.num(dropped.get('treated'))} treated and {fmt.num(dropped.get('control'))} untreated")
    supports = as_dict(overlap.get("supports"))
    bounds = (as_list(overlap.get("bounds")) + [None, None])[:2]
    supported = [str(name).upper() for name, ok in ordered_estimands(supports) if ok]
    lines.append(f"{fmt.pct(overlap.get('share_outside'))} of the rows analysed have a propensity outside "
                 f"[{fmt.plain(bounds[0])}, {fmt.plain(bounds[1])}]; the data support "
                 f"{_and(['the ' + s for s in supported]) or 'no estimand'}"
                 + (f", not the {label}" if estimand.get("supported") is False else ""))
    return lines


def causal_verdict(causal: dict) -> Verdict:
    ate = as_dict(causal.get("ate"))
    naive = as_dict(causal.get("naive"))
    refutations = [as_dict(r) for r in as_list(causal.get("refutations"))]
    states = [refutation_state(r) for r in refutations]
    # not applicable: neither a pass nor a failure; unstable: not a pass
    applicable = [s for s in states if s != "not_applicable"]
    passed = states.count("pass")
    text = (f"effect ({causal_estimand_label(causal)}) of {causal.get('treatment')} on {causal.get('outcome')}: "
            f"{fmt.signed(ate.get('value'))} "
            f"{fmt.interval(ate.get('ci_low'), ate.get('ci_high'))} ({ate.get('estimator') or 'adjusted'}), "
            f"naive {fmt.signed(naive.get('value'))}; {passed} of {len(applicable)} refutations passed")
    extra = [f"{states.count(s)} {REFUTATION_STATES[s].lower()}" for s in ("unstable", "not_applicable") if s in states]
    if extra:
        text += f" ({', '.join(extra)})"
    if as_dict(causal.get("estimand")).get("supported") is False:
        text += f"; the overlap does not support the {causal_estimand_label(causal)}"
    if not applicable:
        return Verdict("info", "CAUSAL: not refuted", text)
    if "fail" in states:
        return Verdict("fail", "CAUSAL: a refutation failed", text)
    if "unstable" in states:
        return Verdict("inconclusive", "CAUSAL: a refutation is unstable", text)
    return Verdict("pass", "CAUSAL: refutations passed", text)


def verdicts(entries: list[Entry]) -> list[Verdict]:
    """One line per gate; without a gate one per evaluation; with neither one per causal result."""
    for kind in ("gate", "evaluation", "causal"):
        chosen = [e for e in entries if e.kind == kind and e.embedded_in is None]
        if chosen:
            break
    else:
        return []
    render = {"gate": lambda e: gate_verdict(e.doc), "evaluation": lambda e: evaluation_verdict(e.doc),
              "causal": lambda e: causal_verdict(e.doc)}[kind]
    return [render(e) for e in chosen]


def flatten_inputs(inputs: Any, prefix: str = "") -> list[tuple[str, str | None, str | None]]:
    """(name, path, fingerprint) rows from the nested `inputs` block (policies are one level deeper)."""
    rows: list[tuple[str, str | None, str | None]] = []
    if isinstance(inputs, dict) and ("path" in inputs or "fingerprint" in inputs):
        return [(prefix or "input", as_str(inputs.get("path")), as_str(inputs.get("fingerprint")))]
    if isinstance(inputs, dict):
        for key, value in inputs.items():
            rows.extend(flatten_inputs(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(inputs, (list, tuple)):
        for i, value in enumerate(inputs):
            rows.extend(flatten_inputs(value, f"{prefix}[{i}]"))
    elif inputs is not None:
        rows.append((prefix or "input", str(inputs), None))
    elif prefix:
        rows.append((prefix, None, None))  # e.g. "q_hat": null -> shown as not given
    return rows
