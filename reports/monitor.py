"""The monitoring chapter (a `livegate.monitor/1` document): a terminal summary and a self-contained
HTML page with time-series charts of the confidence sequences, the per-window estimates and the drift
checks. Text is escaped with markupsafe; charts are inline SVG from reports.charts."""
from __future__ import annotations

from typing import Any

from markupsafe import escape

from . import charts

_STATUS = {"regression": "REGRESSION (exit 1)", "healthy": "HEALTHY (exit 0)", "undecided": "NOT YET DECIDED (exit 3)"}


def _num(x: Any, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def monitor_summary(doc: dict) -> str:
    """Plain text for the terminal: the verdict, one line per (candidate, metric), the alerts."""
    settings = doc.get("settings", {})
    data = doc.get("data", {})
    lines = [f"monitor: {_STATUS.get(doc.get('status'), doc.get('status'))}; {data.get('n', 0):,} rows in "
             f"{data.get('n_windows', 0)} windows of {settings.get('every_seconds', 0) / 3600:g} h, "
             f"{data.get('start')} to {data.get('end')}",
             f"  anytime-valid {1 - settings.get('alpha', 0.05):.0%} confidence sequences for the difference to "
             f"{settings.get('baseline')} (ips; alpha {settings.get('alpha_per_stream', 0):.3g} per stream)"]
    for stream in doc.get("streams", []):
        last = (stream.get("looks") or [{}])[-1]
        lines.append(f"  {stream['status']:<10} {stream['policy']} on {stream['metric']}: cumulative "
                     f"{_num(last.get('estimate'))} [{_num(last.get('cs_low'))}, {_num(last.get('cs_high'))}]"
                     + (f"; first alarm at the end of {stream['first_alarm']['window'][:10]} (since "
                        f"{stream['first_alarm']['since'][:10]})" if stream.get("first_alarm") else ""))
    for alert in doc.get("alerts", []):
        lines.append(f"  ALERT: {alert}")
    return "\n".join(lines)


def _cs_windows(stream: dict, doc: dict) -> list[dict]:
    """Windows shaped for charts.time_series: the cumulative CS and each window's own estimate."""
    metric, policy = stream["metric"], stream["policy"]
    out = []
    for look, window in zip(stream["looks"], doc.get("windows", [])):
        point = window.get("differences", {}).get(metric, {}).get(policy)
        entry = {"start": window["start"], "end": window["end"], "metrics": {metric: {}}}
        if look.get("decides"):
            entry["metrics"][metric]["cumulative, anytime-valid CS"] = {
                "value": look["estimate"], "ci_low": look["cs_low"], "ci_high": look["cs_high"]}
        if point:
            entry["metrics"][metric]["this window, fixed-sample 95%"] = point
        out.append(entry)
    return out


def monitor_html(doc: dict) -> str:
    """A self-contained HTML page for one monitoring run."""
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             "<title>livegate monitor</title><style>body{font-family:system-ui,sans-serif;max-width:60rem;"
             "margin:2rem auto;padding:0 1rem;color:#222}table{border-collapse:collapse;font-size:.85rem}"
             "td,th{border-bottom:1px solid #ddd;padding:.2rem .5rem;text-align:right}th:first-child,"
             "td:first-child{text-align:left}.alarm{color:#b00020;font-weight:600}svg{max-width:100%;height:auto}"
             "</style></head><body>",
             "<h1>Monitoring after rollout</h1>", monitor_section(doc, heading=2), "</body></html>"]
    return "\n".join(parts)


def monitor_section(doc: dict, heading: int = 3, anchor: str = "monitor") -> str:
    """The monitoring run as one HTML section (a chapter of `livegate report`, or the body of
    `monitor_html`): verdict, summary, the confidence-sequence chart and table per stream, drift."""
    status = doc.get("status", "")
    colour = {"regression": "#b00020", "healthy": "#1b7f3b", "undecided": "#8a6d00"}.get(status, "#333")
    h = f"h{heading}"
    parts = [f'<section id="{escape(anchor)}">',
             f"<p style='font-size:1.3rem;color:{colour}'><strong>{escape(_STATUS.get(status, status))}</strong></p>",
             f"<pre>{escape(monitor_summary(doc))}</pre>"]
    settings = doc.get("settings", {})
    parts.append("<p>Each line is the per-row IPS difference to the baseline. The band of the cumulative line is an "
                 "anytime-valid confidence sequence (Waudby-Smith et al. 2024): it may be read after every window "
                 "without inflating false alarms. The per-window points use fixed-sample intervals and are "
                 "descriptive only: looked at daily, such intervals exclude the truth far more often than "
                 f"{escape(str(settings.get('alpha')))}.</p>")
    if doc.get("alerts"):
        parts.append(f"<{h}>Alerts</{h}><ul>" + "".join(f"<li>{escape(a)}</li>" for a in doc["alerts"]) + "</ul>")
    for stream in doc.get("streams", []):
        parts.append(f"<{h}>{escape(stream['policy'])} on {escape(stream['metric'])}: {escape(stream['status'])}</{h}>")
        parts.append(f"<p>{escape(stream['message'])}</p>")
        svg = charts.time_series(_cs_windows(stream, doc), stream["metric"],
                                 ["cumulative, anytime-valid CS", "this window, fixed-sample 95%"],
                                 ylabel=f"difference in {stream['metric']}")
        if svg:
            parts.append(svg)
        rows = "".join(
            f"<tr class='{'alarm' if look['alarm'] else ''}'><td>{escape(look['window'][:16])}</td><td>{look['n']:,}</td>"
            f"<td>{_num(look['estimate'])}</td><td>{_num(look['cs_low'])}</td><td>{_num(look['cs_high'])}</td>"
            f"<td>{_num(look['lowest_upper'])}</td><td>{escape(look['lowest_upper_since'][:10])}</td>"
            f"<td>{'alarm' if look['alarm'] else ''}</td></tr>" for look in stream["looks"])
        parts.append("<table><tr><th>window</th><th>rows so far</th><th>cumulative</th><th>CS low</th><th>CS high</th>"
                     "<th>lowest upper bound</th><th>of the CS since</th><th></th></tr>" + rows + "</table>")
    drift = doc.get("drift", {})
    checks = [c for c in drift.get("checks", []) if c.get("level") not in ("stable",)]
    parts.append(f"<{h}>Drift against {escape(str(drift.get('reference')))}</{h}>")
    if checks:
        rows = "".join(f"<tr><td>{escape(c['kind'])}</td><td>{escape(c['column'])}</td><td>{escape(c['window'][:10])}</td>"
                       f"<td>{_num(c.get('psi', c.get('z')), 3)}</td><td>{escape(c['level'])}</td></tr>" for c in checks)
        parts.append("<table><tr><th>kind</th><th>column</th><th>window</th><th>PSI or z</th><th>level</th></tr>"
                     + rows + "</table>")
    else:
        parts.append(f"<p>{escape(drift.get('note', 'No shift in the context, the propensities or the reward rates.'))}</p>")
    parts.append("</section>")
    return "\n".join(parts)
