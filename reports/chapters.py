"""The report with its chapters of their own: `livegate.learn/1`, `livegate.replay/1` and `livegate.monitor/1` documents.

`render_html` and `render_markdown` (what `livegate.reports` exports) render the evaluation, causal and
gate documents with `html.render_html` / `markdown.render_markdown` -- a learn document stands there for
its held-out evaluation (`documents.expand`) -- and add one chapter per learn or replay document
(`documents.chapters`): for a learn document, how the policy was learned and on which decisions, right
before its held-out evaluation; for a replay document, the reward curves (`replay.replay_section`), at
the end. Without such documents the output is exactly that of the two renderers.
"""
from __future__ import annotations

import html
from typing import Any

from . import documents as D
from . import formatting as fmt


def render_html(documents: list[dict]) -> str:
    """Any mix of evaluation, causal, gate, learn and replay documents -> one self-contained HTML page."""
    from .html import render_html as render_core
    from .monitor import monitor_section
    from .replay import replay_section

    page = render_core(documents)
    chapters = D.chapters(documents)
    if not chapters:
        return page
    anchors = _heldout_anchors(documents)
    tail = []
    for number, (kind, doc) in enumerate(chapters, start=1):
        if kind == "replay":
            tail.append(replay_section(doc).replace("<section>", f'<section id="replay-{number}">', 1))
            continue
        if kind == "monitor":
            tail.append(monitor_section(doc, heading=3, anchor=f"monitor-{number}")
                        .replace(">", "><h2>Monitoring after rollout</h2>", 1))
            continue
        section = learn_section(doc, anchors.get(id(doc)), f"learn-{number}")
        at = page.find(f'<section id="{anchors[id(doc)]}">') if id(doc) in anchors else -1
        if at < 0:
            tail.append(section)
        else:
            page = page[:at] + section + "\n" + page[at:]
    if tail:
        at = page.rfind("</main>")
        at = at if at >= 0 else page.rfind("</body>")
        page = page[:at] + "\n".join(tail) + "\n" + page[at:]
    return page


def render_markdown(documents: list[dict]) -> str:
    """Summary of any mix of evaluation, causal, gate, learn and replay documents, as Markdown: the
    learn and replay chapters follow the rest."""
    from .markdown import render_markdown as render_core
    from .monitor import monitor_summary
    from .replay import replay_summary

    text = render_core(documents)
    parts = []
    for kind, doc in D.chapters(documents):
        if kind == "learn":
            parts.append("\n".join(learn_markdown(doc)))
        elif kind == "monitor":
            parts.append("### Monitoring after rollout\n\n```\n" + monitor_summary(doc) + "\n```\n")
        else:
            parts.append("### Replay of online bandit algorithms\n\n```\n" + replay_summary(doc) + "\n```\n")
    return text + ("\n" + "\n".join(parts) if parts else "")


def _heldout_anchors(documents: list[dict]) -> dict[int, str]:
    """id(learn document) -> the anchor of its held-out evaluation's section in the HTML report."""
    by_doc = {id(entry.doc): f"d{entry.number}" for entry in D.expand(documents)}
    return {id(doc): by_doc[id(doc["heldout_evaluation"])] for kind, doc in D.chapters(documents)
            if kind == "learn" and id(doc.get("heldout_evaluation")) in by_doc}


def _facts(doc: dict) -> dict[str, Any]:
    split, cand = D.as_dict(doc.get("split")), D.as_dict(doc.get("candidates"))
    unit = "sessions" if doc.get("level") == "session" else "decisions"
    train, heldout = D.as_dict(split.get("train")), D.as_dict(split.get("heldout"))
    provenance = D.as_dict(doc.get("provenance"))
    logs = D.as_dict(D.as_dict(provenance.get("inputs")).get("logs"))
    top_k = doc.get("top_k")
    return {
        "name": D.as_str(doc.get("policy_name")) or "learned",
        "method": D.as_str(doc.get("method")) or "?",
        "reward": D.as_str(doc.get("reward")) or "?",
        "logs": D.as_str(logs.get("path")) or "the logs",
        "explore": f"exploration floor epsilon {fmt.plain(doc.get('epsilon'))}" + (f", top {top_k} streams" if top_k else ""),
        "candidates": (f"{D.as_str(cand.get('source')) or '?'} candidate streams, "
                       f"{fmt.num(cand.get('mean_per_decision'))} per decision on average"),
        "split": (f"{D.as_str(split.get('rule')) or '?'} split by {D.as_str(split.get('unit')) or 'decision_id'} "
                  f"(seed {fmt.plain(split.get('seed'))}): trained on {fmt.num(train.get(unit))} {unit}, "
                  f"held out {fmt.num(heldout.get(unit))}"),
        "trained_rows": D.as_str(split.get("trained_rows")) or "",
        "gamma": doc.get("gamma") if doc.get("level") == "session" else None,
    }


def _estimate_rows(doc: dict) -> list[dict]:
    """Per estimator of the learned policy's reward: held-out value, its difference to the baseline, and
    the in-sample value (optimistic)."""
    name = D.as_str(doc.get("policy_name")) or "learned"
    held, seen = D.as_dict(doc.get("heldout_evaluation")), D.as_dict(doc.get("in_sample_evaluation"))
    held_policy = D.as_dict(D.as_dict(held.get("policies")).get(name))
    seen_estimates = D.as_dict(D.as_dict(D.as_dict(seen.get("policies")).get(name)).get("estimates"))
    rows = []
    for estimator, value in D.as_dict(held_policy.get("estimates")).items():
        value, diff = D.as_dict(value), D.as_dict(D.as_dict(held_policy.get("vs_baseline")).get(estimator))
        rows.append({"estimator": estimator,
                     "heldout": f"{fmt.num(value.get('value'))} {fmt.interval(value.get('ci_low'), value.get('ci_high'))}",
                     "difference": (f"{fmt.signed(diff.get('difference'))} "
                                    f"{fmt.interval(diff.get('ci_low'), diff.get('ci_high'))}") if diff else "—",
                     "in_sample": fmt.num(D.as_dict(seen_estimates.get(estimator)).get("value"))})
    return rows


def learn_section(doc: dict, heldout_anchor: str | None = None, anchor: str = "learn") -> str:
    """The learn chapter as an HTML fragment: how the policy was learned, on which rows, and its
    held-out against its in-sample estimates."""
    esc = html.escape
    f = _facts(doc)
    baseline = D.as_str(D.as_dict(doc.get("heldout_evaluation")).get("baseline")) or "logging"
    link = (f' The <a href="#{esc(heldout_anchor)}">held-out evaluation</a> follows.' if heldout_anchor else "")
    rows = "".join(f"<tr><td>{esc(r['estimator'])}</td><td class='n'>{esc(r['heldout'])}</td>"
                   f"<td class='n'>{esc(r['difference'])}</td><td class='n'>{esc(r['in_sample'])}</td></tr>"
                   for r in _estimate_rows(doc))
    warnings = "".join(f"<li>{esc(str(w))}</li>" for w in D.as_list(doc.get("warnings")))
    return (f'<section id="{esc(anchor)}"><h2>Learned policy: {esc(f["name"])} ({esc(f["method"])})</h2>'
            f"<p class='lead'>Learned by <code>livegate learn</code> from {esc(f['logs'])}, maximising "
            f"{esc(f['reward'])}{'' if f['gamma'] is None else ' per session, gamma ' + esc(fmt.plain(f['gamma']))}; "
            f"{esc(f['explore'])}; {esc(f['candidates'])}.</p>"
            f"<p>{esc(f['split'])}. Judge the policy by the held-out estimates: the in-sample ones are on the "
            f"rows that trained it and are optimistic. {esc(f['trained_rows'])}.{link}</p>"
            f"<table><thead><tr><th>Estimator</th><th class='n'>Held-out {esc(f['reward'])}</th>"
            f"<th class='n'>Held-out difference vs {esc(baseline)}</th><th class='n'>In-sample (optimistic)</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>"
            + (f"<ul class='warnings'>{warnings}</ul>" if warnings else "") + "</section>")


def learn_markdown(doc: dict) -> list[str]:
    """The learn chapter as Markdown lines (names from the document escaped)."""
    from .markdown import escape

    f = {k: v if k == "gamma" else escape(v) for k, v in _facts(doc).items()}
    lines = [f"### Learned policy: {f['name']} ({f['method']})", "",
             f"Learned by `livegate learn` from {f['logs']}, maximising {f['reward']}; {f['explore']}; "
             f"{f['candidates']}. {f['split']}. The in-sample estimates are on the rows that trained it "
             "(optimistic).", "",
             f"| estimator | held-out {f['reward']} | held-out difference | in-sample (optimistic) |",
             "|---|---|---|---|"]
    lines += [f"| {escape(r['estimator'])} | {r['heldout']} | {r['difference']} | {r['in_sample']} |"
              for r in _estimate_rows(doc)]
    lines.append("")
    lines += [f"- {escape(w)}" for w in D.as_list(doc.get("warnings"))]
    return lines + [""]
