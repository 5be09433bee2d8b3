"""Tests for reports/: escaping of hostile names, self-containment, section presence, JUnit shape,
determinism, and (marked `browser`) rendering in a real headless Chromium."""
from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from livegate.datasets.errors import InputError
from livegate.reports import document_kind, render_html, render_junit, render_markdown
from livegate.reports import formatting as fmt

try:  # tests/ is on sys.path when it has no __init__.py (pytest's default rootdir-less import)
    import report_fixtures as fx
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests import report_fixtures as fx

ROOT = Path(__file__).resolve().parents[1]


def hostile_gate() -> dict:
    """A gate whose candidate and metric names try to break out of HTML, Markdown and XML."""
    gate = fx.gate_document()
    gate = fx.rename(gate, "better", fx.HOSTILE_POLICY)
    return fx.rename(gate, "watch_seconds", fx.HOSTILE_METRIC)


@pytest.fixture(scope="module")
def gate_html() -> str:
    return render_html([fx.gate_document()])


@pytest.fixture(scope="module")
def hostile_html() -> str:
    return render_html([hostile_gate()])


class _Collector(HTMLParser):
    """Every start tag with its attributes, and the text, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Collector:
    parser = _Collector()
    parser.feed(html)
    parser.close()
    return parser


# --- document kinds -----------------------------------------------------------------------------

def test_document_kind_reads_the_schema():
    assert document_kind(fx.evaluation_document()) == "evaluation"
    assert document_kind(fx.causal_document()) == "causal"
    assert document_kind(fx.gate_document()) == "gate"


@pytest.mark.parametrize("doc, words", [
    ({"schema": "livegate.forecast/1"}, "livegate.forecast/1"),
    ({"schema": "livegate.evaluation/2"}, "version"),
    ({"policies": {}}, "no \"schema\""),
    ([1, 2], "JSON object"),
    ({"schema": 7}, "7"),
])
def test_document_kind_refuses_unknown_documents_readably(doc, words):
    with pytest.raises(InputError) as error:
        document_kind(doc)
    assert words in str(error.value)
    assert "Fix:" in str(error.value)


def test_livegate_report_refuses_files_without_the_core_of_their_kind(tmp_path):
    """The renderers forgive missing blocks, but a file with a schema and nothing to report is
    truncated or not livegate's: `livegate report` names it and its missing fields, exit 2."""
    import json

    from conftest import run_cli
    good = tmp_path / "evaluation.json"
    good.write_text(json.dumps(fx.evaluation_document()))
    shells = {"evaluation": {"schema": "livegate.evaluation/1", "policies": []},
              "gate": {"schema": "livegate.gate/1", "decision": "pass"},
              "causal": {"schema": "livegate.causal/1", "treatment": "recommended"}}
    needles = {"evaluation": '"policies" (not an object), "baseline" (missing)', "gate": '"candidates" (missing)',
               "causal": '"outcome" (missing)'}
    for kind, doc in shells.items():
        path = tmp_path / f"{kind}-shell.json"
        path.write_text(json.dumps(doc))
        result = run_cli("report", good, path, "--out", tmp_path / "report.html")
        assert result.code == 2 and "Traceback" not in result.err
        assert f"{path}: is an incomplete livegate.{kind}/1 document: {needles[kind]}" in result.err
        assert not (tmp_path / "report.html").exists()
    assert run_cli("report", good, "--out", tmp_path / "report.html").code == 0


def test_renderers_refuse_unknown_documents_with_their_position():
    with pytest.raises(InputError, match="result document 2 of 2"):
        render_html([fx.causal_document(), {"schema": "something/1"}])
    with pytest.raises(InputError, match="gate document"):
        render_junit(fx.evaluation_document())


# --- escaping -----------------------------------------------------------------------------------

def test_html_escapes_hostile_names_everywhere(hostile_html):
    # No raw tag from a name anywhere: not in the page, not in attributes, not inside the SVG.
    assert "<script" not in hostile_html.lower()
    assert not [tag for tag, _ in _parse(hostile_html).tags if tag == "script"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in hostile_html
    # Names survive as text: a reader sees them exactly as written.
    text = "".join(_parse(hostile_html).text)
    assert fx.HOSTILE_POLICY in text
    assert fx.HOSTILE_METRIC in text
    assert 'watch "seconds" & more' not in hostile_html.replace("&#34;", "").replace("&quot;", "")


def test_svg_text_escapes_hostile_names(hostile_html):
    svgs = re.findall(r"<svg.*?</svg>", hostile_html, flags=re.S)
    assert svgs
    labelled = [svg for svg in svgs if "alert(1)" in svg]
    assert labelled, "the hostile policy name should appear in chart labels"
    for svg in labelled:
        assert "<script" not in svg
        assert "&lt;script&gt;" in svg


def test_markdown_escapes_hostile_names():
    markdown = render_markdown([hostile_gate()])
    assert "<script" not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown
    assert 'watch "seconds" &amp; more' in markdown


def test_markdown_escapes_pipes_so_tables_keep_their_columns():
    gate = fx.rename(fx.gate_document(), "better", "a|b <i>")
    markdown = render_markdown([gate])
    assert "a\\|b &lt;i&gt;" in markdown
    for block in re.findall(r"(?:^\|.*\|$\n?)+", markdown, flags=re.M):
        rows = block.strip().splitlines()
        widths = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(widths) == 1, f"ragged table:\n{block}"


def test_junit_is_valid_xml_and_keeps_hostile_names():
    gate = hostile_gate()
    gate = fx.rename(gate, "worse", "ctrl\x01char")  # XML 1.0 cannot hold \x01 at all
    root = ET.fromstring(render_junit(gate))
    classnames = {case.get("classname") for case in root.iter("testcase")}
    assert f"livegate.gate.{fx.HOSTILE_POLICY}" in classnames
    assert any(fx.HOSTILE_METRIC in case.get("name") for case in root.iter("testcase"))
    assert any(name.startswith("livegate.gate.ctrl") for name in classnames)


def test_chart_labels_survive_mathtext_and_long_names():
    # "$...$" would be parsed by matplotlib as math ("$\\foo$" raises); long names must not crash layout.
    names = ["$x$", "$\\foo$", "50$ off", "a" * 200]
    evaluation = fx.evaluation_document(policies=("logging", *names), metrics=("click",), time_windows=False)
    html = render_html([evaluation])
    text = "".join(_parse(html).text)
    assert all(name in text for name in names)
    assert "$\\foo$" in html  # in the tables, exactly as written


# --- self-contained -----------------------------------------------------------------------------

_URL_ATTRIBUTES = {"src", "href", "xlink:href", "action", "formaction", "poster", "data", "srcset", "background"}


def test_html_loads_nothing_from_outside(hostile_html, gate_html):
    for html in (gate_html, hostile_html):
        parsed = _parse(html)
        for tag, attrs in parsed.tags:
            assert tag not in {"script", "link", "iframe", "object", "embed", "img", "base"}, tag
            for name, value in attrs.items():
                if name in _URL_ATTRIBUTES:
                    assert value is not None and value.startswith("#"), (tag, name, value)
        # CSS and SVG reference only fragments of this page.
        assert re.findall(r"url\((?!#)", html) == []
        assert "@import" not in html
        assert "http://" not in html and "https://" not in html and "//cdn" not in html


def test_html_forbids_fetches_through_its_content_security_policy(gate_html):
    csp = [attrs for tag, attrs in _parse(gate_html).tags
           if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"]


def test_html_anchor_links_point_to_existing_ids(gate_html):
    parsed = _parse(gate_html)
    ids = {attrs["id"] for _, attrs in parsed.tags if attrs.get("id")}
    for tag, attrs in parsed.tags:
        if tag == "a":
            assert attrs["href"][1:] in ids, attrs["href"]


# --- sections -----------------------------------------------------------------------------------

def _headings(html: str) -> str:
    return " | ".join(re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<h[23][^>]*>(.*?)</h[23]>", html, re.S))


def test_gate_report_has_every_section(gate_html):
    headings = _headings(gate_html)
    for section in ["Gate decision", "Causal requirement", "Data", "Policy value: watch_seconds",
                    "Difference to logging: gift_value", "Diagnostics", "Warnings", "Reward model", "Over time",
                    "Causal graph", "Naive vs adjusted effect", "Refutations", "Effect by segment", "Reproducibility"]:
        assert section in headings, section
    # The verdict comes first, before any section.
    assert gate_html.index('class="verdict fail"') < gate_html.index("<main>")
    assert "FAIL: do not ship" in gate_html
    # Reproducibility: version, fingerprints, seed and the configuration as JSON.
    footer = gate_html[gate_html.index('<footer id="reproducibility">'):]
    assert "sha256:" + "cd" * 32 in footer and "livegate.gate/1" in footer
    assert "&#34;min_ess&#34;: 500" in footer
    # Charts: estimates and differences per metric, weights, time windows, gate criteria, causal.
    assert gate_html.count("<svg") >= 12


def test_sections_without_data_are_absent_not_broken():
    evaluation = fx.evaluation_document(time_windows=False, reward_model=False, metrics=("click",),
                                        estimators=("snips",))
    evaluation["data"]["period"] = None
    html = render_html([evaluation])
    headings = _headings(html)
    assert "Over time" not in headings
    assert "Causal" not in headings and "Gate" not in headings
    assert "No reward model was used" in html
    assert "— (no timestamps)" in html
    gate = fx.gate_document(with_causal=False)
    html = render_html([gate])
    assert "Causal" not in _headings(html)


def test_null_numbers_render_as_dashes_in_every_format():
    gate = fx.nullify(fx.gate_document(), keep=("schema", "seed"))
    documents = [gate, fx.nullify(fx.evaluation_document()), fx.nullify(fx.causal_document())]
    html = render_html(documents)
    assert html.count("—") > 50
    assert "nan" not in _parse(html).text and "None" not in "".join(_parse(html).text)
    markdown = render_markdown(documents)
    assert "—" in markdown and "None" not in markdown
    root = ET.fromstring(render_junit(gate))
    assert len(list(root.iter("failure"))) == 2  # decisions are kept: "worse" fails twice
    assert "difference —" in next(root.iter("failure")).get("message")
    # A criterion without a decision is not a pass: it shows as a failure.
    gate["candidates"][0]["criteria"][0]["decision"] = None
    assert len(list(ET.fromstring(render_junit(gate)).iter("failure"))) == 3


def test_sparse_documents_still_render():
    sparse = [{"schema": "livegate.evaluation/1"}, {"schema": "livegate.causal/1"},
              {"schema": "livegate.gate/1", "candidates": [{"name": "x"}], "evaluation": None}]
    html = render_html(sparse)
    assert "Reproducibility" in html
    assert render_markdown(sparse)
    ET.fromstring(render_junit(sparse[2]))


def test_several_documents_of_one_kind_each_render():
    first = fx.evaluation_document()
    second = fx.rename(fx.evaluation_document(policies=("logging", "same")), "watch_seconds", "dwell")
    html = render_html([first, second, fx.causal_document()])
    assert html.count("<h2>Policy evaluation</h2>") == 2
    assert "Policy value: <span class=\"name\">dwell</span>" in html
    ids = re.findall(r'<section id="([^"]+)"', html)
    assert ids == ["d1", "d2", "d3"]
    # Without a gate, the top lines summarise each evaluation.
    assert html.count('<p class="verdict') == 2
    assert "better beats logging" in html


def test_evaluation_verdicts_read_the_intervals():
    from livegate.reports.documents import evaluation_verdict

    assert evaluation_verdict(fx.evaluation_document()).status == "pass"
    assert evaluation_verdict(fx.evaluation_document(policies=("logging", "worse"))).status == "fail"
    assert evaluation_verdict(fx.evaluation_document(policies=("logging", "same"))).status == "inconclusive"


def test_embedded_evaluation_leads_with_the_gates_estimator():
    gate = fx.gate_document()
    gate["estimator"] = "dr"
    markdown = render_markdown([gate])
    assert "estimator dr, 95% intervals" in markdown


def test_compact_form_and_estimated_propensities_are_explained():
    evaluation = fx.evaluation_document()
    evaluation["data"]["propensity"]["source"] = "estimated"
    evaluation["metrics"]["watch_seconds"]["policies"]["better"]["diagnostics"]["compact_form"] = True
    html = render_html([evaluation])
    assert "propensities; they were estimated" in html
    assert "sum-to-one and support checks could not be made" in html


def test_causal_section_reads_the_causal_document():
    causal = fx.causal_document()
    html = render_html([causal])
    text = " ".join(" ".join(_parse(html).text).split())
    # A refuter that did not apply is neither a pass nor a failure.
    assert "3 of 4 refutations passed (1 not applicable)" in text
    assert "not applicable" in text and "CAUSAL: a refutation failed" in text
    assert "+142" in text and "+41.2" in text and "(+245%) away from the adjusted one" in text
    assert "robustness value 0.08" in text  # notes are shown with the warnings
    # The causal document names its configuration "settings": the footer still shows it.
    assert "&#34;first_stage&#34;: &#34;hist_gradient_boosting&#34;" in html
    assert "does not prove that no confounder is missing" in text


def test_causal_graph_survives_a_cycle_and_stray_edges():
    causal = fx.causal_document()
    causal["graph"] = {"nodes": ["a", "b"], "edges": [["a", "b"], ["b", "a"], ["c", "a"], ["bad"]]}
    assert "Assumed causal graph" in render_html([causal])


# --- JUnit --------------------------------------------------------------------------------------

def test_junit_has_one_case_per_candidate_and_criterion_plus_causal():
    gate = fx.gate_document(min_ess=6000)  # "worse" (ESS 4,545) is inconclusive everywhere
    root = ET.fromstring(render_junit(gate))
    cases = list(root.iter("testcase"))
    n_criteria = sum(len(c["criteria"]) for c in gate["candidates"])
    assert len(cases) == n_criteria + 1
    assert root.get("tests") == str(len(cases))
    by_decision = {"pass": 0, "fail": 0, "inconclusive": 0}
    for candidate in gate["candidates"]:
        for criterion in candidate["criteria"]:
            by_decision[criterion["decision"]] += 1
    assert len(list(root.iter("skipped"))) == by_decision["inconclusive"] == 2
    assert len(list(root.iter("failure"))) == by_decision["fail"]
    skipped = next(root.iter("skipped"))
    criterion = gate["candidates"][1]["criteria"][0]
    assert fmt.signed(criterion["difference"]) in skipped.get("message")
    assert fmt.interval(criterion["ci_low"], criterion["ci_high"]) in skipped.get("message")
    assert f"difference={criterion['difference']!r}" in skipped.text


def test_junit_failures_carry_the_numbers():
    gate = fx.gate_document()
    root = ET.fromstring(render_junit(gate))
    failures = list(root.iter("failure"))
    assert len(failures) == 2  # "worse" fails both criteria
    worse = gate["candidates"][1]["criteria"]
    for failure, criterion in zip(failures, worse):
        assert fmt.signed(criterion["difference"]) in failure.get("message")
        assert "threshold" in failure.get("message")
    assert root.get("failures") == "2"


def test_junit_causal_case_follows_the_requirement():
    gate = fx.gate_document(candidates=("better",))
    gate["causal"]["decision"] = "fail"
    root = ET.fromstring(render_junit(gate))
    causal = [c for c in root.iter("testcase") if c.get("classname") == "livegate.gate.causal"]
    assert len(causal) == 1 and causal[0].find("failure") is not None
    gate["causal"]["required"] = False  # informational: must not turn CI red
    root = ET.fromstring(render_junit(gate))
    assert root.find(".//failure") is None and root.find(".//skipped") is not None


# --- determinism --------------------------------------------------------------------------------

def test_same_documents_give_the_same_bytes(gate_html):
    documents = [fx.gate_document()]
    assert render_html(documents) == gate_html
    assert render_markdown(documents) == render_markdown(copy.deepcopy(documents))
    assert render_junit(documents[0]) == render_junit(documents[0])


def test_output_does_not_depend_on_the_process(gate_html):
    """Random SVG ids or set ordering would differ between processes, not between calls."""
    script = ("import json, sys, hashlib; sys.path[:0] = [sys.argv[1]];"
              "import report_fixtures as fx; from livegate.reports import render_html;"
              "print(hashlib.sha256(render_html([fx.gate_document()]).encode()).hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", script, str(ROOT / "tests")], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == hashlib.sha256(gate_html.encode()).hexdigest()


def test_rendering_leaves_matplotlib_global_state_alone():
    import matplotlib

    backend, params = matplotlib.get_backend(), dict(matplotlib.rcParams)
    render_html([fx.evaluation_document()])
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == params


# --- formatting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [
    (50000, "50,000"), (1234.5, "1,234"), (12.345, "12.3"), (0.012345, "0.0123"), (99.96, "100"),
    (0.00001234, "1.23e-05"), (0, "0"), (None, "—"), (float("nan"), "—"), ("x", "—"), (True, "—"),
])
def test_num(value, text):
    assert fmt.num(value) == text


def test_other_formats():
    assert fmt.signed(1.5) == "+1.50" and fmt.signed(-1.5) == "-1.50"
    assert fmt.pct(0.0123) == "1.23%" and fmt.pct(0.05, sign=True) == "+5.00%"
    assert fmt.interval(1, None) == "[1, —]" and fmt.interval(None, None) == "—"
    assert fmt.pvalue(0.0004) == "<0.001" and fmt.level(0.9875) == "98.75%"
    assert fmt.when("2026-01-05T00:00:00+00:00") == "2026-01-05 00:00 UTC"


# --- a real browser -----------------------------------------------------------------------------

def _chromium() -> str | None:
    for candidate in (os.environ.get("LIVEGATE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _open_in_chromium(binary: str, page: Path, screenshot: Path, profile: Path) -> list[str]:
    """Load a page headless and return the console messages it produced (Chromium logs every
    console message, errors and CSP violations included, as INFO:CONSOLE lines on stderr)."""
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}",
               # Any host name fails to resolve: a request that slipped through would error loudly.
               "--host-resolver-rules=MAP * ~NOTFOUND",
               "--enable-logging=stderr", "--v=0", f"--screenshot={screenshot}", "--window-size=1280,2000",
               page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert screenshot.exists(), f"chromium wrote no screenshot (exit {result.returncode}):\n{result.stderr[-3000:]}"
    return [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path):
    binary = _chromium()
    if binary is None:
        message = "Chromium not found (install Debian's chromium and chromium-driver, or set LIVEGATE_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from matplotlib.image import imread

    # Control: the console check must see an error when there is one, or it would pass vacuously.
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><title>x</title><p>x</p><script>console.error('control-error')</script>")
    console = _open_in_chromium(binary, control, tmp_path / "control.png", tmp_path / "profile")
    assert any("control-error" in line for line in console), "chromium's console log format changed"

    page = tmp_path / "report.html"
    page.write_text(render_html([hostile_gate(), fx.evaluation_document()]), encoding="utf-8")
    screenshot = tmp_path / "report.png"
    console = _open_in_chromium(binary, page, screenshot, tmp_path / "profile")
    assert console == [], "console messages:\n" + "\n".join(console)

    pixels = imread(screenshot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 0.05, "the screenshot is blank"
    assert (pixels.min(axis=2) < 0.5).mean() > 0.01, "almost nothing dark (text, lines) on the page"
    # Keep a copy for people to look at when asked (e.g. REPORT_SCREENSHOT_DIR=/tmp/shots).
    if os.environ.get("REPORT_SCREENSHOT_DIR"):
        target = Path(os.environ["REPORT_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, target / "report.png")
        shutil.copy(page, target / "report.html")
