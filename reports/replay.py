"""The replay chapter (`livegate.replay/1` documents): reward curves of the replayed bandit algorithms
as line charts with their bands over runs, the accepted-event counts, and a terminal summary.

`render_replay_html(document)` is a self-contained page (inline SVG, no scripts, no network);
`replay_section(document)` is the same chapter as an HTML fragment for a larger report;
`replay_summary(document)` is the terminal text.
"""
from __future__ import annotations

import html
from typing import Any

from .charts import NARROW_WIDTH, PALETTE, _figure, _legend, _with_style, label


@_with_style
def reward_curves(document: dict, which: str = "cumulative", *, narrow: bool = False):
    """One line per algorithm over the periods of the logged stream (x: events replayed so far), its
    band over runs shaded; the logging policy's mean reward per period dashed for reference."""
    algorithms = document.get("algorithms") or {}
    edges = (document.get("data") or {}).get("period_edges") or []
    if not algorithms or len(edges) < 2:
        return None
    fig = _figure(NARROW_WIDTH if narrow else 7.0, 3.4 if narrow else 3.0)
    ax = fig.add_subplot()
    xs = edges[1:]
    for j, (name, result) in enumerate(algorithms.items()):
        colour = PALETTE[j % len(PALETTE)]
        points = [(x, p[which]) for x, p in zip(xs, result.get("periods", [])) if p[which]["mean"] is not None]
        if not points:
            continue
        x = [p[0] for p in points]
        ax.plot(x, [p[1]["mean"] for p in points], color=colour, linewidth=1.4, marker="o", markersize=2.5,
                label=label(name))
        ax.fill_between(x, [p[1]["low"] for p in points], [p[1]["high"] for p in points], color=colour, alpha=0.15,
                        linewidth=0)
    logging = (document.get("logging") or {}).get("periods") or []
    if which == "reward" and logging:
        pts = [(x, v) for x, v in zip(xs, logging) if v is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#57606a", linestyle="--", linewidth=1.2,
                label="logging (logged rewards)")
    elif which == "cumulative":
        value = (document.get("logging") or {}).get("value")
        if value is not None:
            ax.axhline(value, color="#57606a", linestyle="--", linewidth=1.2, label="logging (mean logged reward)")
    ax.set_xlabel("logged events replayed")
    reward = document.get("config", {}).get("reward", "reward")
    ax.set_ylabel(label(f"{'cumulative mean' if which == 'cumulative' else 'mean per period'} {reward}", 60))
    ax.grid(color="#d0d7de", linewidth=0.6)
    _legend(fig, ax, narrow)
    return fig


def _fmt(value: Any, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def replay_summary(document: dict) -> str:
    """Terminal text: one line per algorithm (value with its band, accepted events)."""
    cfg = document.get("config", {})
    data = document.get("data", {})
    lines = [f"replay of {data.get('n_events', 0):,} logged events over {data.get('n_arms', 0)} streams "
             f"({'uniform logging: plain replay' if data.get('uniform_logging') else 'non-uniform logging: rejection sampling, p_min ' + _fmt(data.get('p_min'))}); "
             f"batch size {cfg.get('batch_size')}, {cfg.get('runs')} runs"
             f"{' on bootstrap resamples' if cfg.get('bootstrap') else ''}",
             f"{'algorithm':<24} {cfg.get('reward', 'reward') + ' per accepted event':>28} {'band':>22} "
             f"{'accepted (mean, min-max)':>28}"]
    for name, result in document.get("algorithms", {}).items():
        value, acc = result["value"], result["accepted"]
        band = f"[{_fmt(value['low'])}, {_fmt(value['high'])}]"
        lines.append(f"{name:<24} {_fmt(value['mean']):>28} {band:>22} "
                     f"{acc['mean']:>12,.0f} ({acc['min']:,}-{acc['max']:,})")
    lines.append(f"{'logging (logged rewards)':<24} {_fmt(document.get('logging', {}).get('value')):>28}")
    for warning in document.get("warnings", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def replay_section(document: dict) -> str:
    """The replay chapter as an HTML fragment: what was replayed, the two charts and a table."""
    esc = html.escape
    cfg, data = document.get("config", {}), document.get("data", {})
    rows = []
    for name, result in document.get("algorithms", {}).items():
        value, acc = result["value"], result["accepted"]
        rows.append(f"<tr><td>{esc(name)}</td><td>{_fmt(value['mean'])}</td>"
                    f"<td>[{_fmt(value['low'])}, {_fmt(value['high'])}]</td>"
                    f"<td>{acc['mean']:,.0f} ({acc['min']:,}–{acc['max']:,})</td></tr>")
    method = ("plain replay (Li, Chu, Langford &amp; Wang 2011): uniform logging" if data.get("uniform_logging") else
              "rejection-sampling replay (Dudik, Erhan, Langford &amp; Li 2012): an event whose logged stream the "
              f"algorithm picked is kept with probability p_min / p_t, p_min = {_fmt(data.get('p_min'))}")
    charts = "".join(f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>"
                     for svg, caption in ((reward_curves(document, "cumulative"), "Cumulative mean reward of the "
                                           "accepted events, band over runs"),
                                          (reward_curves(document, "reward"), "Mean reward of the accepted events "
                                           "per period of the logged stream, band over runs"))
                     if svg)
    warnings = "".join(f"<p class='warning'>{esc(w)}</p>" for w in document.get("warnings", []))
    return (f"<section><h2>Replay of online bandit algorithms: {esc(str(cfg.get('reward', '')))}</h2>"
            f"<p>{data.get('n_events', 0):,} logged events, {data.get('n_arms', 0)} streams; {method}. "
            f"The algorithms learn in batches of {cfg.get('batch_size')} accepted events; {cfg.get('runs')} runs"
            f"{', each on a Poisson bootstrap resample of the events' if cfg.get('bootstrap') else ''}; "
            f"bands are the {100 * (1 - cfg.get('alpha', 0.05)):g}% range over runs.</p>{warnings}{charts}"
            "<table><thead><tr><th>algorithm</th><th>reward per accepted event</th><th>band</th>"
            "<th>accepted events (mean, min–max)</th></tr></thead><tbody>" + "".join(rows) +
            "</tbody></table></section>")


def render_replay_html(document: dict) -> str:
    """A self-contained HTML page with the replay chapter."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>livegate replay</title>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1f2328}"
            "svg{max-width:100%;height:auto}table{border-collapse:collapse}td,th{padding:.25rem .6rem;"
            "border-bottom:1px solid #d0d7de;text-align:left}.warning{color:#9a6700}</style></head><body>"
            f"<h1>livegate replay</h1>{replay_section(document)}</body></html>")
