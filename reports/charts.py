"""Charts as inline SVG strings, drawn with matplotlib's SVG backend.

Why matplotlib: it is already a livegate dependency, it writes static SVG with no JavaScript and
no network access, and it escapes text it puts into SVG. Why not pyplot or `matplotlib.use`:
switching the global backend would change the plotting state of whoever imported livegate (a
notebook, say); a bare `Figure` renders straight to SVG without touching any global state.

Every chart returns an SVG string ready to inline in HTML, or None when there is nothing to draw
(the template then says so). The output is deterministic: a fixed hash salt for matplotlib's ids,
no creation date, no metadata (which would also carry URLs), and ids prefixed with a hash of the
chart so that several charts on one page cannot clash.
"""
from __future__ import annotations

import hashlib
import io
import math
import re
from datetime import datetime
from typing import Any, Sequence

import matplotlib
import matplotlib.dates
import matplotlib.ticker
from matplotlib.figure import Figure

from .formatting import as_number

# Colour-blind-safe qualitative palette (Okabe & Ito), one colour per series in a chart.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
PASS, FAIL, INCONCLUSIVE, NEUTRAL = "#1a7f37", "#cf222e", "#9a6700", "#57606a"
DECISION_COLOURS = {"pass": PASS, "fail": FAIL, "inconclusive": INCONCLUSIVE}

_STYLE = {
    "svg.hashsalt": "livegate",       # ids derived from content, not from a random salt
    "svg.fonttype": "none",           # real <text>: selectable, searchable, small; matplotlib escapes it
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titlelocation": "left",
    "legend.frameon": False,
}
_MAX_LABEL = 42
#: Width in inches of the phone versions of the wide charts: 3.8 in = 274 pt = 365 CSS px, the text
#: column of a 390-420 px phone, so that they show at about their natural size and their 8-9 pt text
#: stays 11-12 px high instead of shrinking to half that as the 7-inch desktop charts would.
NARROW_WIDTH = 3.8
_NARROW_LABEL = 22


def label(text: Any, limit: int = _MAX_LABEL) -> str:
    """Make a name safe for matplotlib text: on one line, shortened to `limit` characters (tick
    labels must not squeeze the plot away), and `$` escaped so it is not parsed as math (a policy
    called "$x$" would otherwise render in italics, and "$\\foo$" would raise)."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _to_svg(fig: Figure) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context(_STYLE):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    # The XML prolog and DOCTYPE (which names the W3C DTD URL) do not belong inside HTML.
    svg = svg[svg.index("<svg"):]
    # Inline SVG in HTML gets its namespaces from the HTML parser; dropping the declarations keeps
    # the page free of any URL at all.
    svg = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg, count=2)
    prefix = "c" + hashlib.sha256(svg.encode()).hexdigest()[:8] + "-"
    svg = re.sub(r'\bid="', f'id="{prefix}', svg)
    svg = re.sub(r'(xlink:href|href)="#', rf'\1="#{prefix}', svg)
    svg = svg.replace("url(#", f"url(#{prefix}")
    return svg.strip()


def _legend(fig: Figure, ax, narrow: bool) -> None:
    """Beside the plot on a desktop-width chart; under it, in two columns, on a phone-width one."""
    if narrow:
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)


def _with_style(draw):
    """Run a drawing function under livegate's style, so that fonts and spines apply while drawing."""
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            fig = draw(*args, **kwargs)
            return None if fig is None else _to_svg(fig)
    wrapper.__name__ = draw.__name__
    wrapper.__doc__ = draw.__doc__
    return wrapper


@_with_style
def forest(groups: Sequence[str], series: Sequence[str], points: dict[tuple[str, str], dict], *,
           xlabel: str = "", reference: float | None = None, reference_label: str | None = None,
           emphasis: str | None = None, colours: dict[str, str] | None = None,
           narrow: bool = False) -> Figure | None:
    """Point estimates with interval whiskers: one row block per group (policy, segment, candidate),
    one coloured marker per series (estimator) within it. `points[(group, series)]` holds
    value / ci_low / ci_high; missing or null entries are left out. `reference` draws a dashed
    vertical line (zero difference, a threshold, the average effect). `narrow` draws the phone
    version (see NARROW_WIDTH): shorter labels, the legend under the plot instead of beside it."""
    points = {k: p for k, p in points.items() if isinstance(p, dict)}  # a malformed document's entries: left out
    if not any(as_number(p.get("value")) is not None for p in points.values()):
        return None
    n_series = max(len(series), 1)
    limit = _NARROW_LABEL if narrow else _MAX_LABEL
    legend = len(series) > 1 or bool(reference_label)
    # Each group gets a band tall enough for its series' whiskers to stay apart.
    height = 0.9 + len(groups) * (0.3 + 0.1 * (min(n_series, 6) - 1))
    if narrow and legend:
        height += 0.2 * math.ceil((len(series) + (1 if reference_label else 0)) / 2)
    fig = _figure(NARROW_WIDTH if narrow else 7.0, height)
    ax = fig.add_subplot()
    spacing = 0.7 / n_series
    for j, name in enumerate(series):
        colour = (colours or {}).get(name, PALETTE[j % len(PALETTE)])
        ys, xs, lows, highs = [], [], [], []
        for i, group in enumerate(groups):
            point = points.get((group, name))
            value = as_number(point.get("value")) if point else None
            if value is None:
                continue
            # Groups top to bottom in the given order, series stacked inside each group.
            y = len(groups) - 1 - i + (n_series - 1) / 2 * spacing - j * spacing
            low, high = as_number(point.get("ci_low")), as_number(point.get("ci_high"))
            ys.append(y)
            xs.append(value)
            # an interval that does not hold its point (a malformed document) gets no whisker on that side
            lows.append(max(value - low, 0.0) if low is not None else 0.0)
            highs.append(max(high - value, 0.0) if high is not None else 0.0)
        if xs:
            ax.errorbar(xs, ys, xerr=[lows, highs], fmt="o", color=colour, markersize=4, capsize=2.5,
                        linewidth=1.3, label=label(name, limit) if len(series) > 1 else None)
    if reference is not None:
        ax.axvline(reference, color=NEUTRAL, linestyle="--", linewidth=1,
                   label=label(reference_label, 2 * limit) if reference_label else None)
    ax.set_yticks(range(len(groups)))
    ticks = [label(g, limit) + (" (baseline)" if g == emphasis else "") for g in reversed(groups)]
    ax.set_yticklabels(ticks)
    ax.set_ylim(-0.6, len(groups) - 0.4)
    ax.set_xlabel(label(xlabel, limit=3 * limit))
    ax.grid(axis="x", color="#d0d7de", linewidth=0.6)
    ax.set_axisbelow(True)
    if narrow:
        # Few ticks: a phone-width axis crowds its numbers otherwise.
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
    if legend:
        _legend(fig, ax, narrow)
    return fig


@_with_style
def weight_histogram(edges: Sequence[Any], counts: Sequence[Any], *, title: str = "") -> Figure | None:
    """Distribution of importance weights w = pi_e / pi_0, as logged; a long right tail means a few
    rows carry the estimate. Log scales when the data span orders of magnitude, so the tail shows."""
    edges = [as_number(e) for e in edges]
    counts = [as_number(c) for c in counts]
    if len(edges) != len(counts) + 1 or not counts or any(v is None for v in edges + counts):
        return None
    fig = _figure(3.4, 2.1)
    ax = fig.add_subplot()
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color=PALETTE[0], edgecolor="white", linewidth=0.3)
    # Weights span orders of magnitude; producers often use log-spaced bins starting at 0. A log
    # axis (symmetric-log when the first edge is 0) gives each of those bins a readable width.
    low = edges[0] if edges[0] > 0 else edges[1] if len(edges) > 2 and edges[0] == 0 else None
    if low is not None and low > 0 and edges[-1] / low > 100:
        if edges[0] > 0:
            ax.set_xscale("log")
        else:
            ax.set_xscale("symlog", linthresh=low, linscale=0.4)
        # Plain decade ticks (0, 0.1, 1, 10): symlog's defaults crowd around the linear part.
        decades = [10.0 ** k for k in range(math.ceil(math.log10(low)), math.floor(math.log10(edges[-1])) + 1)]
        ticks = ([0.0] if edges[0] == 0 else []) + decades
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    positive = [c for c in counts if c > 0]
    if positive and max(positive) / min(positive) > 100:
        ax.set_yscale("log")
    if edges[0] <= 1 <= edges[-1]:
        ax.axvline(1.0, color=NEUTRAL, linestyle="--", linewidth=0.8)
    ax.set_xlabel("importance weight (dashed: 1)")
    ax.set_ylabel("rows")
    ax.set_title(label(title))
    return fig


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


@_with_style
def time_series(windows: Sequence[dict], metric: str, policies: Sequence[str], *, ylabel: str = "",
                baseline: str | None = None, narrow: bool = False) -> Figure | None:
    """Estimate per time window with its interval as a band, one line per policy. The x position is
    the middle of each window; windows without parseable times are placed by their order. `narrow`
    draws the phone version, with the legend under the plot."""
    windows = [w for w in _as_list(windows) if isinstance(w, dict)]  # a malformed document's entries: left out
    starts = [_parse_time(w.get("start")) for w in windows]
    ends = [_parse_time(w.get("end")) for w in windows]
    if all(s is not None and e is not None for s, e in zip(starts, ends)) and windows:
        xs: list[Any] = [s + (e - s) / 2 for s, e in zip(starts, ends)]
    else:
        xs = list(range(1, len(windows) + 1))
    fig = _figure(NARROW_WIDTH if narrow else 7.0, 3.2 + 0.2 * math.ceil(len(policies) / 2) if narrow else 2.8)
    ax = fig.add_subplot()
    drew = False
    limit = _NARROW_LABEL if narrow else _MAX_LABEL
    for j, policy in enumerate(policies):
        colour = PALETTE[j % len(PALETTE)]
        px, values, lows, highs = [], [], [], []
        for x, window in zip(xs, windows):
            point = _as_dict(_as_dict(_as_dict(window.get("metrics")).get(metric)).get(policy))
            value = as_number(point.get("value"))
            if value is None:
                continue
            px.append(x)
            values.append(value)
            low, high = as_number(point.get("ci_low")), as_number(point.get("ci_high"))
            lows.append(value if low is None else low)
            highs.append(value if high is None else high)
        if not px:
            continue
        drew = True
        name = label(policy, limit) + (" (baseline)" if policy == baseline else "")
        ax.plot(px, values, marker="o", markersize=3, color=colour, linewidth=1.4,
                linestyle="--" if policy == baseline else "-", label=name)
        ax.fill_between(px, lows, highs, color=colour, alpha=0.15, linewidth=0)
    if not drew:
        return None
    if not isinstance(xs[0], int):
        locator = matplotlib.dates.AutoDateLocator(maxticks=5 if narrow else None)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(matplotlib.dates.ConciseDateFormatter(locator))
    else:
        ax.set_xlabel("window")
    ax.set_ylabel(label(ylabel, limit=3 * limit))
    ax.grid(color="#d0d7de", linewidth=0.6)
    _legend(fig, ax, narrow)
    return fig


def _step_axes(ax, n_steps: int, narrow: bool) -> None:
    """An x axis of steps within the session (0 = the first), with whole-number ticks only."""
    ax.set_xlim(-0.3, max(n_steps - 1, 1) + 0.3)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5 if narrow else 10, integer=True))
    ax.set_xlabel("step within the session (0 = first)")
    ax.grid(color="#d0d7de", linewidth=0.6)
    ax.set_axisbelow(True)


def _step_figure(n_series: int, narrow: bool) -> Figure:
    # as time_series: the narrow version grows by a legend row for every two series under the plot
    return _figure(NARROW_WIDTH if narrow else 7.0, 3.2 + 0.2 * math.ceil(n_series / 2) if narrow else 2.8)


@_with_style
def step_contributions(curves: dict[str, Sequence[Any]], *, ylabel: str = "", baseline: str | None = None,
                       totals: dict[str, Any] | None = None, narrow: bool = False) -> Figure | None:
    """Session level: each policy's estimated (discounted) reward at each step of the session, one
    line per policy (`curves[policy]`, the document's by_step.value; the baseline dashed). The
    area under a line is the policy's session value, so the chart shows where, along the session, a
    candidate gains or loses against the baseline. `totals[policy]` (the document's value the curve
    adds up to, wpdis) goes into the legend. Long sessions (hundreds of steps) are drawn without markers."""
    series = {name: [as_number(v) for v in _as_list(values)] for name, values in curves.items()}
    series = {name: values for name, values in series.items() if any(v is not None for v in values)}
    if not series:
        return None
    limit = _NARROW_LABEL if narrow else _MAX_LABEL
    fig = _step_figure(len(series), narrow)
    ax = fig.add_subplot()
    for j, (name, values) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        steps = [t for t, v in enumerate(values) if v is not None]
        total = as_number((totals or {}).get(name))
        text = label(name, limit) + (" (baseline)" if name == baseline else "") + \
            (f": total {total:.4g}" if total is not None else "")
        ax.plot(steps, [values[t] for t in steps], marker=_step_marker(values), markersize=3, color=colour,
                linewidth=1.4, linestyle="--" if name == baseline else "-", label=text)
    _step_axes(ax, max(len(v) for v in series.values()), narrow)
    ax.set_ylabel(label(ylabel, limit=3 * limit))
    if narrow:
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    _legend(fig, ax, narrow)
    return fig


@_with_style
def weight_collapse(shares: dict[str, Sequence[Any]], collapse: dict[str, Any] | None = None, *,
                    threshold: float = 0.1, baseline: str | None = None, narrow: bool = False) -> Figure | None:
    """Session level: the effective share of the sessions still running at each step (Kish ESS of
    the cumulative weights over the sessions alive, by_step.ess / by_step.alive), one line per policy,
    with a dashed reference line at `threshold` and each policy's collapse step (`collapse[policy]`,
    the first step below it, from the document) marked with a cross. The logging policy's weights
    are all 1, so its line stays at 100%; a candidate's falls as the product of weights grows along
    the session (the curse of horizon)."""
    series = {name: [as_number(v) for v in _as_list(values)] for name, values in shares.items()}
    series = {name: values for name, values in series.items() if any(v is not None for v in values)}
    if not series:
        return None
    limit = _NARROW_LABEL if narrow else _MAX_LABEL
    fig = _step_figure(len(series) + 2, narrow)
    ax = fig.add_subplot()
    marked = False
    for j, (name, values) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        steps = [t for t, v in enumerate(values) if v is not None]
        ax.plot(steps, [100 * values[t] for t in steps], marker=_step_marker(values), markersize=3, color=colour,
                linewidth=1.4, linestyle="--" if name == baseline else "-",
                label=label(name, limit) + (" (baseline)" if name == baseline else ""))
        step = (collapse or {}).get(name)
        if isinstance(step, int) and not isinstance(step, bool) and 0 <= step < len(values) \
                and values[step] is not None:
            ax.axvline(step, color=colour, linestyle=":", linewidth=1)
            ax.plot([step], [100 * values[step]], marker="X", markersize=9, color=colour, markeredgecolor="black",
                    markeredgewidth=0.6, linestyle="none", zorder=3)
            marked = True
    if marked:  # one legend entry for every policy's cross, in neutral colours
        ax.plot([], [], marker="X", markersize=7, color="white", markeredgecolor="black", markeredgewidth=0.8,
                linestyle="none", label="weights collapse")
    ax.axhline(100 * threshold, color=NEUTRAL, linestyle="--", linewidth=1, label=f"{threshold:.0%} of sessions")
    _step_axes(ax, max(len(v) for v in series.values()), narrow)
    ax.set_ylim(0, 105)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(decimals=0))
    ax.set_ylabel("effective share of running sessions" if not narrow else "effective share")
    _legend(fig, ax, narrow)
    return fig


def _step_marker(values: Sequence[Any]) -> str | None:
    """A dot per step while the dots stay apart; none for long sessions, where they would be a smear."""
    return "o" if len(values) <= 40 else None


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


@_with_style
def causal_graph(nodes: Sequence[Any], edges: Sequence[Sequence[Any]], *, treatment: Any = None,
                 outcome: Any = None, confounders: Sequence[Any] = (), modifiers: Sequence[Any] = ()) -> Figure | None:
    """The causal graph as layered boxes and arrows: causes on the left, the outcome on the right.

    Layers are networkx's topological generations, which for the usual confounders -> treatment
    -> outcome graph give three readable columns; a graph with a cycle (not a valid DAG, but the
    user may supply one) falls back to a seeded spring layout rather than failing the report.
    """
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(str(n) for n in nodes)
    graph.add_edges_from((str(e[0]), str(e[1])) for e in edges if isinstance(e, (list, tuple)) and len(e) == 2)
    if graph.number_of_nodes() == 0:
        return None
    if nx.is_directed_acyclic_graph(graph):
        layers = [sorted(layer) for layer in nx.topological_generations(graph)]
        position = {node: (float(x), (len(layer) - 1) / 2 - i)
                    for x, layer in enumerate(layers) for i, node in enumerate(layer)}
        scale = (2.4, 0.55)  # inches per layer, inches per row
    else:
        position = {n: (float(p[0]), float(p[1])) for n, p in nx.spring_layout(graph, seed=0).items()}
        scale = (3.0, 2.2)
    roles = {str(c): ("confounder", "#eaeef2") for c in confounders}
    roles.update({str(m): ("effect modifier", "#dafbe1") for m in modifiers})
    if treatment is not None:
        roles[str(treatment)] = ("treatment", "#ffd8b5")
    if outcome is not None:
        roles[str(outcome)] = ("outcome", "#cfe2ff")
    edge_list = sorted(graph.edges())
    bends = {}
    for u, v in edge_list:
        # An edge that skips a layer (confounder -> outcome) is bent so that it does not run straight
        # through the boxes in between. Bend away from the middle: edges from upper boxes arc over,
        # those from lower ones under.
        skips = abs(position[v][0] - position[u][0]) > 1
        bends[(u, v)] = (-0.3 if position[u][1] >= position[v][1] else 0.3) if skips else 0.0
    # The canvas must hold every box and every bent edge, which bulge beyond the boxes: a canvas cut
    # to the boxes clipped the outer arcs. Axes fill the figure and the figure's size follows the
    # limits at a fixed scale, so data -> inches is a fixed map and the arcs (which matplotlib bends
    # in display space, arc3) can be computed here exactly and included in the limits.
    sx, sy = scale
    char_width = 9 / 72 * 0.62  # inches per character of 9-pt sans-serif, generously
    xs, ys = [], []
    for node, (x, y) in position.items():
        half = (len(label(node)) * char_width + 0.25) / 2
        xs += [x - half / sx, x + half / sx]
        ys += [y - 0.2 / sy, y + 0.2 / sy]
    for (u, v), bend in bends.items():
        (x1, y1), (x2, y2) = ((position[u][0] * sx, position[u][1] * sy), (position[v][0] * sx, position[v][1] * sy))
        cx, cy = (x1 + x2) / 2 + bend * (y2 - y1), (y1 + y2) / 2 - bend * (x2 - x1)
        for k in range(21):
            t = k / 20
            xs.append(((1 - t) ** 2 * x1 + 2 * t * (1 - t) * cx + t * t * x2) / sx)
            ys.append(((1 - t) ** 2 * y1 + 2 * t * (1 - t) * cy + t * t * y2) / sy)
    margin = 0.12  # inches around the drawing: arrowheads and the boxes' line width
    xlim = (min(xs) - margin / sx, max(xs) + margin / sx)
    ylim = (min(ys) - margin / sy, max(ys) + margin / sy)
    fig = Figure(figsize=((xlim[1] - xlim[0]) * sx, (ylim[1] - ylim[0]) * sy))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    box = {"boxstyle": "round,pad=0.35", "linewidth": 0.8, "edgecolor": "#57606a"}
    texts = {}
    for node in sorted(graph.nodes()):
        facecolor = roles.get(node, (None, "#ffffff"))[1]
        texts[node] = ax.text(*position[node], label(node), ha="center", va="center", fontsize=9,
                              bbox={**box, "facecolor": facecolor}, zorder=3)
    for u, v in edge_list:
        # patchA/patchB clip each arrow at the boxes' edges, so arrowheads are never hidden under a label.
        ax.annotate("", xy=position[v], xytext=position[u], annotation_clip=False,
                    arrowprops={"arrowstyle": "-|>", "color": "#57606a", "linewidth": 0.8, "shrinkA": 2,
                                "shrinkB": 2, "patchA": texts[u].get_bbox_patch(),
                                "patchB": texts[v].get_bbox_patch(),
                                "connectionstyle": f"arc3,rad={bends[(u, v)]}"})
    return fig
