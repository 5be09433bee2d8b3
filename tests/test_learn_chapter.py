"""The loop closed end to end (issue 12): `livegate.learn` / `livegate.replay` in the short API, the
simulator's slates as `candidates.parquet`, `livegate report` on learn and replay documents, and the
demo's learning chapter (logs -> learn -> held-out logs -> gate, with the simulator's truth)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from livegate.datasets.simulator import SimulationConfig, candidate_streams, policy_matrix, simulate, write_simulation


def test_learn_and_replay_are_in_the_short_api_and_imported_lazily():
    code = ("import sys, livegate; assert 'pandas' not in sys.modules and 'livegate.api' not in sys.modules; "
            "import livegate.api as api; "
            "assert livegate.learn is api.learn and livegate.replay is api.replay and livegate.LearnResult is api.LearnResult; "
            "assert {'learn', 'replay', 'LearnResult'} <= set(livegate.__all__); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_simulate_writes_each_decisions_slate_as_candidates(tmp_path):
    sim = simulate(SimulationConfig(n_rounds=400, n_streams=30, slate_size=5, n_positions=2, seed=2))
    paths = write_simulation(sim, tmp_path)
    cands = pd.read_parquet(paths["candidates"])
    assert list(cands.columns) == ["decision_id", "action"] and (cands.dtypes == "int64").all()
    assert len(cands) == 400 * 5 and cands.groupby("decision_id").size().eq(5).all()
    assert not cands.duplicated().any()
    # the slate is what every policy chooses among: the logged stream and every candidate policy's streams
    assert len(sim.logs[["decision_id", "action"]].merge(cands)) == len(sim.logs)
    for frame in sim.policies.values():
        assert len(frame[["decision_id", "action"]].drop_duplicates().merge(cands)) == \
            len(frame[["decision_id", "action"]].drop_duplicates())
    # uniform over each slate is a policy the simulator can value
    uniform = cands.assign(prob=0.2)
    assert np.isfinite(policy_matrix(sim, uniform)).all()
    pd.testing.assert_frame_equal(cands, candidate_streams(sim))


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A small simulated week on disk, with a policy learned from it (dr, on the slates)."""
    from livegate.api import learn
    root = tmp_path_factory.mktemp("learn-report")
    sim = simulate(SimulationConfig(n_rounds=3000, seed=4))
    paths = write_simulation(sim, root)
    result = learn(paths["logs"], "watch_seconds", "dr", candidates=paths["candidates"], estimators="snips", seed=0)
    return root, paths, result


def test_report_renders_learn_and_replay_documents(learned, tmp_path):
    from livegate.api import replay
    from livegate.cli import main

    root, paths, result = learned
    learn_doc = tmp_path / "learn.json"
    learn_doc.write_text(json.dumps(result.to_dict()))
    curves = replay(paths["logs"], "watch_seconds", "eps-greedy:0.1,ucb1", runs=2, periods=4,
                    candidates=paths["candidates"])
    assert curves["schema"] == "livegate.replay/1"
    replay_doc = tmp_path / "replay.json"
    replay_doc.write_text(json.dumps(curves))
    html, md = tmp_path / "report.html", tmp_path / "report.md"
    assert main(["report", str(learn_doc), str(replay_doc), "--out", str(html), "--markdown", str(md), "--quiet"]) == 0
    page = html.read_text()
    # the learn chapter comes right before its held-out evaluation, the replay chapter with its curves at the end
    assert page.index('<section id="learn-1">') < page.index('<section id="d1">') < page.index('<section id="replay-2">')
    assert "Learned policy: learned (dr)" in page and "In-sample (optimistic)" in page
    assert "Replay of online bandit algorithms" in page and page.count("<svg") >= 2
    summary = md.read_text()
    assert "### Learned policy: learned (dr)" in summary and "### Replay of online bandit algorithms" in summary
    # one kind alone renders too, and a truncated document is refused with the command that writes it
    assert main(["report", str(replay_doc), "--out", str(tmp_path / "replay.html"), "--quiet"]) == 0
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"schema": "livegate.learn/1", "method": "dr"}))
    from conftest import run_cli
    refused = run_cli("report", broken, "--out", tmp_path / "broken.html")
    assert refused.code == 2 and "livegate learn --result" in refused.err


def test_report_without_learn_or_replay_documents_is_unchanged(learned):
    from livegate.reports import render_html, render_markdown
    from livegate.reports.html import render_html as core_html
    from livegate.reports.markdown import render_markdown as core_markdown

    evaluation = learned[2].to_dict()["heldout_evaluation"]
    assert render_html([evaluation]) == core_html([evaluation])
    assert render_markdown([evaluation]) == core_markdown([evaluation])


def test_demo_learning_chapter_learns_evaluates_and_gates_on_unseen_decisions(tmp_path):
    from conftest import run_cli

    out = tmp_path / "demo"
    done = run_cli("demo", "--out", out, "--n-rounds", 6000, "--n-sessions", 0, "--seed", 1)
    assert done.code == 0, done.err
    text = done.out
    chapter = text[text.index("learning chapter"):]
    assert "held-out estimate (snips)" in chapter and "in-sample estimate" in chapter
    assert "gate: " in chapter and "true value on the held-out decisions" in chapter
    folder = out / "learn"
    for name in ("gate.toml", "learned.parquet", "heldout.parquet", "learn.json", "gate.json"):
        assert (folder / name).is_file(), name
    doc = json.loads((folder / "learn.json").read_text())
    assert doc["schema"] == "livegate.learn/1" and doc["method"] == "dr" and doc["candidates"]["source"] == "given"
    gate = json.loads((folder / "gate.json").read_text())
    assert gate["candidates"][0]["name"] == "learned"
    # the gate ran on decisions the policy never saw
    heldout = pd.read_parquet(folder / "heldout.parquet")
    assert len(heldout) == doc["split"]["heldout"]["rows"]
    # the printed truth is the simulator's exact value of the written policy
    sim = simulate(SimulationConfig(n_rounds=6000, seed=1))
    policy = pd.read_parquet(folder / "learned.parquet")
    truth = float((policy_matrix(sim, policy) * sim.expected["watch_seconds"]).sum(axis=1).mean())
    assert f"learned {truth:.1f} s" in chapter
    # the report has the chapter
    assert '<section id="learn-1">' in (out / "report.html").read_text()
    # pointed at the full logs (which contain its training decisions), the gate refuses the learned policy
    toml = (folder / "gate.toml").read_text().replace('logs = "heldout.parquet"', 'logs = "../logs.parquet"')
    (folder / "gate-all.toml").write_text(toml)
    refused = run_cli("gate", "--config", folder / "gate-all.toml")
    assert refused.code == 2 and "was learned by livegate learn" in refused.err
    # without the chapter (demo --no-learn) its gate.toml is not written
    from livegate.cli import build_parser
    from livegate.datasets.demo import write_demo_inputs
    assert build_parser().parse_args(["demo", "--no-learn"]).no_learn
    write_demo_inputs(tmp_path / "plain", n_rounds=300, n_causal_rows=500, n_sessions=0)
    assert (tmp_path / "plain" / "candidates.parquet").is_file() and not (tmp_path / "plain" / "learn").exists()
