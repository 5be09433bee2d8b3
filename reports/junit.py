"""JUnit XML for a gate, so CI systems (GitHub, GitLab, Jenkins) show each criterion as a test.

One <testsuite> per candidate with one <testcase> per criterion, plus a "causal" suite with one
test case when the gate has a causal requirement. Decision mapping: pass -> a passing test,
fail -> <failure>, inconclusive -> <skipped> (CI shows it as neither green nor red, which is what
"not enough evidence" means). Messages carry the numbers, so the CI page explains the decision.

Built with xml.etree.ElementTree, which escapes names in text and attributes; characters that
XML 1.0 cannot represent at all (control characters) are replaced first, since ElementTree would
write them through and produce a file no CI could parse. No timestamps or durations are written:
the same gate document always gives the same bytes.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from livegate.datasets.errors import InputError

from . import formatting as fmt
from .documents import REFUTATION_STATES, as_dict, as_list, causal_estimand_label, document_kind, refutation_state

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(value: object) -> str:
    return _NOT_XML.sub("\ufffd", fmt.text(value))


def _exact(value: object) -> str:
    """Full precision for the machine-readable body (the message is rounded for people)."""
    number = fmt.as_number(value)
    return repr(number) if number is not None else "null"


def _criterion_case(suite: ET.Element, candidate: dict, criterion: dict, diagnostics_failures: list[str]) -> None:
    name = _clean(candidate.get("name"))
    rule = fmt.text(criterion.get("rule"))
    relative = " (relative margin)" if criterion.get("relative") else ""
    case = ET.SubElement(suite, "testcase", {
        "classname": _clean(f"livegate.gate.{name}"),
        "name": _clean(f"{criterion.get('metric')}: {rule} > {fmt.plain(criterion.get('threshold'))}{relative}"),
    })
    decision = fmt.text(criterion.get("decision"))
    message = (f"{decision}: {name} on {criterion.get('metric')}: difference {fmt.signed(criterion.get('difference'))}, "
               f"{fmt.level(criterion.get('confidence'))} interval "
               f"{fmt.interval(criterion.get('ci_low'), criterion.get('ci_high'))}, threshold "
               f"{fmt.plain(criterion.get('threshold'))}{relative} ({rule}), p {fmt.pvalue(criterion.get('p_value'))}")
    if criterion.get("reason"):
        message += f". {criterion.get('reason')}"
    if decision == "inconclusive" and any(f not in message for f in diagnostics_failures):
        message += ". Diagnostics: " + "; ".join(diagnostics_failures)
    body = "\n".join(f"{key}={_exact(criterion.get(key))}"
                     for key in ("difference", "ci_low", "ci_high", "threshold", "confidence", "p_value"))
    _mark(case, decision, message, body)


def _mark(case: ET.Element, decision: str, message: str, body: str = "") -> None:
    if decision == "pass":
        return
    # Anything that is not a clear pass or an explicit inconclusive is a failure: a gate never
    # passes on a decision it does not understand.
    tag = "skipped" if decision == "inconclusive" else "failure"
    element = ET.SubElement(case, tag, {"message": _clean(message)})
    if tag == "failure":
        element.set("type", _clean(f"livegate.{decision}"))
    element.text = _clean(body or message)


def _suite(root: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(root, "testsuite", {"name": _clean(name)})


def _count(suite: ET.Element) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", "0")
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))


def render_junit(gate: dict) -> str:
    """JUnit XML: one <testcase> per candidate x criterion (+ the causal requirement if present)."""
    kind = document_kind(gate, "gate document")
    if kind != "gate":
        raise InputError(f"JUnit output needs a gate document (livegate.gate/1), got a {kind} document",
                         source="gate document")
    root = ET.Element("testsuites", {"name": _clean(f"livegate gate: {fmt.text(gate.get('decision'))}")})
    properties = {"decision": gate.get("decision"), "exit_code": gate.get("exit_code"),
                  "baseline": gate.get("baseline"), "estimator": gate.get("estimator"), "alpha": gate.get("alpha"),
                  "multiplicity": as_dict(gate.get("multiplicity")).get("method"),
                  "livegate_version": gate.get("livegate_version")}
    for candidate in as_list(gate.get("candidates")):
        candidate = as_dict(candidate)
        suite = _suite(root, f"livegate.gate.{fmt.text(candidate.get('name'))}")
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", {"name": key, "value": _clean(value)})
        failures = [_clean(f) for f in as_list(as_dict(candidate.get("diagnostics")).get("failures"))]
        for criterion in as_list(candidate.get("criteria")):
            _criterion_case(suite, candidate, as_dict(criterion), failures)
        _count(suite)
    causal = as_dict(gate.get("causal"))
    if causal:
        suite = _suite(root, "livegate.gate.causal")
        case = ET.SubElement(suite, "testcase", {"classname": "livegate.gate.causal",
                                                 "name": _clean(f"causal effect on {causal.get('outcome')}")})
        decision = fmt.text(causal.get("decision"))
        message = f"{decision}: {causal.get('reason') or 'no reason given'}"
        if not causal.get("required") and decision != "pass":
            # Informational only: the gate did not depend on it, so it must not turn CI red.
            decision, message = "inconclusive", f"not required by the gate; {message}"
        result = as_dict(gate.get("causal_result"))
        ate = as_dict(result.get("ate"))
        body = "\n".join(f"{key}={_exact(ate.get(key))}" for key in ("value", "se", "ci_low", "ci_high"))
        if ate:
            message += (f". Effect ({causal_estimand_label(result)}) {fmt.signed(ate.get('value'))} "
                        f"{fmt.interval(ate.get('ci_low'), ate.get('ci_high'))}")
        # each refutation's state, spelt as everywhere else: a null "passed" is never a failure
        states = [f"{fmt.text(r.get('name'))}: {REFUTATION_STATES[refutation_state(r)].lower()}"
                  for r in (as_dict(r) for r in as_list(result.get("refutations")))]
        if states:
            message += ". Refutations: " + "; ".join(states)
            body = "\n".join([body] * bool(ate) + [f"refutation {s}" for s in states])
        _mark(case, decision, message, body if (ate or states) else "")
        if states:  # after <failure>/<skipped>, as the JUnit schema orders them; shown for passing cases too
            ET.SubElement(case, "system-out").text = _clean("\n".join(f"refutation {s}" for s in states))
        _count(suite)
    totals = {key: sum(int(s.get(key, "0")) for s in root) for key in ("tests", "failures", "errors", "skipped")}
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
