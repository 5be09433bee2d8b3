"""Session-level evaluation documents (`livegate evaluate --sessions`, issue 11 item 3) in the
terminal table, the HTML report and the Markdown summary: the level and gamma are said in words,
the number of sessions and the collapse step are shown, and the HTML report has a Sessions section
per metric with a per-step contribution chart and a weight-collapse chart. Decision-level
documents, and documents written before `level` existed, have none of it.

The session documents are real: made by `livegate.api.evaluate(..., sessions=True)` on a small
synthetic log whose candidate is far enough from the logging policy for its weights to collapse.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from livegate import api
from livegate.reports import render_html, render_markdown
from livegate.reports import sessions as session_reading
from livegate.reports.terminal import evaluation_table

try:  # tests/ is on sys.path when it has no __init__.py (pytest's default rootdir-less import)
    import report_fixtures as fx
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests import report_fixtures as fx

N_SESSIONS = 600
ESTIMATORS = "pdis,wpdis,tis"


def _session_frames(n_sessions: int = N_SESSIONS, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Logs of viewer sessions of 1-7 steps (shuffled, as files come) and a candidate policy in the
    long format that puts 70% on the action the logging policy shows 20% of the time."""
    rng = np.random.default_rng(seed)
    length = rng.integers(1, 8, n_sessions)
    n = int(length.sum())
    session = np.repeat(np.arange(n_sessions), length)
    step = np.arange(n) - np.repeat(np.cumsum(length) - length, length)
    logging_probs, candidate_probs = np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.2, 0.7])
    action = rng.choice(3, size=n, p=logging_probs)
    logs = pd.DataFrame({"decision_id": np.arange(n), "session_id": session, "step": step, "action": action,
                         "propensity": logging_probs[action], "watch_seconds": rng.normal(action + 1.0, 1.0),
                         "gifts": rng.poisson(0.1 * (action + 1)), "x_taste": rng.normal(size=n)})
    logs = logs.sample(frac=1.0, random_state=1).reset_index(drop=True)
    policy = pd.DataFrame({"decision_id": np.repeat(np.arange(n), 3), "action": np.tile(np.arange(3), n),
                           "prob": np.tile(candidate_probs, n)})
    return logs, policy


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _session_frames()


@pytest.fixture(scope="module")
def session_doc(frames) -> dict:
    logs, policy = frames
    return api.evaluate(logs, {"cand": policy}, "watch_seconds", sessions=True, estimators=ESTIMATORS).to_dict()


@pytest.fixture(scope="module")
def discounted_doc(frames) -> dict:
    logs, policy = frames
    return api.evaluate(logs, {"cand": policy}, ["watch_seconds", "gifts"], sessions=True, gamma=0.9,
                        estimators=ESTIMATORS).to_dict()


@pytest.fixture(scope="module")
def decision_doc(frames) -> dict:
    logs, policy = frames
    return api.evaluate(logs.drop(columns=["session_id", "step"]), {"cand": policy}, "watch_seconds",
                        estimators="ips,snips").to_dict()


@pytest.fixture(scope="module")
def session_html(session_doc) -> str:
    return render_html([session_doc])


def _collapse_step(doc: dict) -> int:
    step = doc["metrics"]["watch_seconds"]["policies"]["cand"]["diagnostics"]["collapse_step"]
    assert isinstance(step, int), "the fixture's candidate should collapse, or the collapse texts go untested"
    return step


def _section(html: str, start: str, end: str) -> str:
    return html[html.index(start):html.index(end)]


def test_the_fixture_is_a_real_session_document(session_doc):
    assert session_doc["level"] == "session" and session_doc["gamma"] == 1.0
    assert session_doc["data"]["n_sessions"] == N_SESSIONS
    diag = session_doc["metrics"]["watch_seconds"]["policies"]["cand"]["diagnostics"]
    assert diag["n"] == N_SESSIONS and diag["n_rows"] == session_doc["data"]["n_rows"]
    assert set(diag["by_step"]) >= {"alive", "ess", "mean_weight", "max_weight", "value"}
    assert _collapse_step(session_doc) >= 0
    assert session_reading.is_session(session_doc)


def test_the_collapse_threshold_is_the_one_ope_applies():
    from livegate.ope.diagnostics import LOW_ESS_SHARE

    assert session_reading.COLLAPSE_SHARE == LOW_ESS_SHARE


def test_level_is_read_from_the_document_and_defaults_to_decision(session_doc, decision_doc):
    assert decision_doc["level"] == "decision" and decision_doc["gamma"] is None
    assert not session_reading.is_session(decision_doc)
    assert not session_reading.is_session(fx.evaluation_document())  # written before `level`
    # only data or config naming the level (a trimmed document) is still read as sessions
    trimmed = {k: v for k, v in session_doc.items() if k not in ("level", "gamma")}
    assert session_reading.is_session(trimmed) and session_reading.gamma_of(trimmed) == 1.0
    assert session_reading.value_phrase("watch_seconds", 1.0) == \
        "expected watch_seconds per session, total over the session"
    assert session_reading.value_phrase("watch_seconds", 0.9) == \
        "expected watch_seconds per session, discounted with gamma = 0.9"


# --- terminal -------------------------------------------------------------------------------------

def test_terminal_table_says_per_session(session_doc):
    table = evaluation_table(session_doc)
    steps = session_doc["data"]["n_rows"]
    assert f"per session (gamma = 1): {N_SESSIONS} sessions, {steps:,} steps" in table
    assert "values are expected returns per session, total over the session" in " ".join(table.split())
    assert "watch_seconds per session  (95% robust intervals; difference vs logging)" in table
    header = next(line for line in table.splitlines() if line.startswith("policy ") and "estimator" in line)
    assert " return " in header and " value " not in header
    assert "ESS: effective number of sessions" in table
    diagnostics = table[table.index("diagnostics per session"):]
    assert "sessions" in diagnostics and "traj. ESS" in diagnostics and "weights collapse" in diagnostics
    assert "drl ESS" in diagnostics
    cand = next(line for line in diagnostics.splitlines() if line.startswith("cand "))
    assert f"step {_collapse_step(session_doc)} (" in cand and f"{N_SESSIONS}" in cand
    logging = next(line for line in diagnostics.splitlines() if line.startswith("logging "))
    assert logging.rstrip().endswith("none")
    assert max(len(line) for line in table.splitlines()) <= 100


def test_terminal_table_names_the_discount(discounted_doc):
    table = evaluation_table(discounted_doc)
    assert "per session (gamma = 0.9):" in table
    assert "expected returns per session, discounted with gamma = 0.9" in " ".join(table.split())
    assert "watch_seconds per session  (95% robust intervals" in table
    assert "gifts per session  (95% robust intervals" in table
    assert max(len(line) for line in table.splitlines()) <= 100


def test_terminal_table_of_decision_documents_is_unchanged(decision_doc):
    table = evaluation_table(decision_doc)
    assert "per session" not in table and "collapse" not in table
    assert "watch_seconds  (95% robust intervals; difference vs logging)" in table
    assert f"{'policy':<16} {'n':>10} {'ESS':>10} {'max w':>9} {'mean w':>8} {'unsupported':>11}" in table


# --- HTML -----------------------------------------------------------------------------------------

def test_html_headline_states_level_and_gamma(session_html, session_doc):
    header = session_html[:session_html.index("<main>")]
    steps = session_doc["data"]["n_rows"]
    assert ("Evaluated per session (gamma = 1): the values are the expected watch_seconds per session, total "
            f"over the session, from {N_SESSIONS} sessions, {steps:,} steps") in header
    assert "<h2>Policy evaluation per session</h2>" in session_html
    assert "<b>Per session, gamma = 1</b>: every value below is the expected watch_seconds per session, total " \
           "over the session" in session_html
    assert f"<dt>Sessions</dt><dd>{N_SESSIONS} sessions, {steps:,} steps" in session_html
    assert "<th>Return per session</th>" in session_html


def test_html_sessions_section_has_values_collapse_and_both_charts(session_html, session_doc):
    section = _section(session_html, 'id="d1-sessions-1"', 'id="d1-diagnostics"')
    assert "Sessions: <span class=\"name\">watch_seconds</span>" in section
    # value per policy (leading estimator), sessions, effective sessions, collapse step
    cand = session_doc["metrics"]["watch_seconds"]["policies"]["cand"]
    assert "Value per session (pdis)" in section
    assert f"{cand['estimates']['pdis']['value']:.3g}"[:3] in section
    assert f'data-label="Sessions">{N_SESSIONS}</td>' in section
    assert "Effective sessions" in section and "of sessions" in section
    assert f"step {_collapse_step(session_doc)} (" in section and "effective)" in section
    assert ">none</td>" in section  # the logging policy's weights never collapse
    # the two charts, each drawn wide and narrow (for phones), with their captions
    for caption in ("Per-step contribution", "Weight collapse"):
        figure = re.search(r'<figure class="chart"><div class="wide">(<svg.*?</svg>)</div><div class="narrow">'
                           r'(<svg.*?</svg>)</div><figcaption>' + caption, section, flags=re.S)
        assert figure, f"no wide + narrow SVG chart captioned {caption!r}"
        for svg in figure.groups():
            assert "cand" in svg and "logging (baseline)" in svg
    contribution, collapse = section.split("<figcaption>Per-step contribution")
    assert "step within the session" in contribution
    assert "10% of sessions" in collapse and "weights collapse" in collapse
    assert "dashed line at 10%" in section


def test_html_diagnostics_count_sessions_not_rows(session_html):
    diagnostics = _section(session_html, 'id="d1-diagnostics"', 'id="d1-warnings"')
    assert 'rowspan="2">Sessions</th>' in diagnostics and "of sessions" in diagnostics
    assert "effective number of sessions" in diagnostics
    assert "of rows" not in diagnostics


def test_html_discounted_document_with_two_metrics(discounted_doc):
    html = render_html([discounted_doc])
    assert "Evaluated per session (gamma = 0.9)" in html
    assert "discounted with gamma = 0.9" in html
    assert 'id="d1-sessions-1"' in html and 'id="d1-sessions-2"' in html
    assert "Sessions: <span class=\"name\">gifts</span>" in html
    # one contribution chart per metric; the weights are the policies', so one collapse chart
    assert html.count("<figcaption>Per-step contribution") == 2
    assert html.count("<figcaption>Weight collapse") == 1
    assert "the same weights as for <span class=\"name\">watch_seconds</span>" in html


def test_html_of_decision_documents_has_no_sessions_section(decision_doc):
    for doc in (decision_doc, fx.evaluation_document()):
        html = render_html([doc])
        assert "-sessions-" not in html and "Sessions:" not in html
        assert "per session" not in html and "Weight collapse" not in html
        assert "<h2>Policy evaluation</h2>" in html
        assert "Estimated mean watch_seconds per decision" in html


def test_a_gate_on_sessions_says_so_under_its_verdict(session_doc):
    gate = fx.gate_document(with_causal=False)
    gate["evaluation"] = session_doc
    html = render_html([gate])
    assert "Evaluated per session (gamma = 1)" in html[:html.index("<main>")]
    assert "Policy evaluation per session (embedded in the gate)" in html
    assert "ℹ️ Evaluated per session" in render_markdown([gate])


def test_session_documents_with_holes_still_render(session_doc):
    holes = fx.nullify(session_doc, keep=("schema", "level"))
    html = render_html([holes])
    assert "Policy evaluation per session" in html and "—" in html
    assert "gamma = —" in html
    assert render_markdown([holes])
    stripped = {**session_doc, "metrics": {m: {"policies": {p: {**v, "diagnostics": {
        k: d for k, d in v["diagnostics"].items() if k not in ("by_step", "collapse_step")}}
        for p, v in block["policies"].items()}} for m, block in session_doc["metrics"].items()}}
    html = render_html([stripped])
    assert 'id="d1-sessions-1"' in html and "Per-step contribution" not in html
    assert render_html([{"schema": "livegate.evaluation/1", "level": "session"}])


def test_hostile_policy_names_are_escaped_in_session_views(session_doc):
    doc = fx.rename(session_doc, "cand", fx.HOSTILE_POLICY)
    html = render_html([doc])
    assert "<script" not in html.lower()
    svgs = re.findall(r"<svg.*?</svg>", _section(html, 'id="d1-sessions-1"', 'id="d1-diagnostics"'), flags=re.S)
    assert svgs and all("&lt;script&gt;" in svg for svg in svgs)
    assert "<script" not in render_markdown([doc])


def test_session_html_is_deterministic(session_doc, session_html):
    assert render_html([session_doc]) == session_html


# --- Markdown -------------------------------------------------------------------------------------

def test_markdown_has_the_session_facts_as_a_short_table(session_doc):
    markdown = render_markdown([session_doc])
    steps = session_doc["data"]["n_rows"]
    assert (f"ℹ️ Evaluated per session: values are the expected watch\\_seconds per session, total over the "
            f"session, from {N_SESSIONS} sessions, {steps:,} steps") in markdown
    assert f"**Per session (gamma = 1)**: {N_SESSIONS} sessions, {steps:,} steps" in markdown
    assert "**watch\\_seconds** (primary), per session (total over the session)" in markdown
    assert "| Policy | Value | Difference | Relative | Eff. sessions | Unsupported |" in markdown
    assert "| Policy | Sessions | Steps | Eff. sessions | Trajectory ESS | drl ESS | Weights collapse |" in markdown
    cand = next(line for line in markdown.splitlines() if line.startswith("| cand |") and "step" in line)
    assert f"| {N_SESSIONS} | {steps:,} |" in cand and f"step {_collapse_step(session_doc)} (" in cand
    assert "| logging (baseline) |" in markdown and "| none |" in markdown


def test_markdown_names_the_discount(discounted_doc):
    markdown = render_markdown([discounted_doc])
    assert "**Per session (gamma = 0.9)**" in markdown
    assert "discounted with gamma = 0.9" in markdown
    assert markdown.count("| Policy | Sessions | Steps |") == 1


def test_markdown_of_decision_documents_has_no_sessions_table(decision_doc):
    for doc in (decision_doc, fx.evaluation_document()):
        markdown = render_markdown([doc])
        assert "Sessions" not in markdown and "per session" not in markdown
        assert "| Policy | Value | Difference | Relative | ESS | Unsupported |" in markdown
