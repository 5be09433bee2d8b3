"""Causal graphs: the default live-stream graph, parsing a user's GML / DOT graph, DoWhy identification.

The default graph encodes the assumptions of a live-stream recommender (DESIGN: `livegate causal`):
viewer activity, hour / prime time, streamer popularity, new viewer and device drive both what the
logging policy recommends and how long the viewer watches or gifts; the hour determines prime time;
new viewer, popularity and prime time modify the effect. Identification is DoWhy's backdoor
criterion (Pearl 2009, Causality, section 3.3; `dowhy.causal_identifier.identify_effect_auto`).
"""
from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from livegate.datasets.errors import InputError, Problem

#: Confounders of the default live-stream graph, in the order they are reported.
DEFAULT_CONFOUNDERS = ("x_activity", "x_hour", "x_prime_time", "x_popularity", "x_is_new", "x_device")
#: Effect modifiers of the default graph: effects differ by new viewer, popularity and prime time.
DEFAULT_EFFECT_MODIFIERS = ("x_is_new", "x_popularity", "x_prime_time")
#: Default segments for reporting heterogeneous effects.
DEFAULT_SEGMENTS = ("x_is_new", "x_popularity", "x_prime_time")
#: Outcomes named in the default graph (the treatment is the recommendation / exposure).
DEFAULT_OUTCOMES = ("watch_seconds", "gift_value", "click")
#: Known causal edges among the default confounders.
_CONFOUNDER_EDGES = (("x_hour", "x_prime_time"),)


def default_graph(treatment: str, outcome: str, confounders: Iterable[str],
                  effect_modifiers: Iterable[str] = ()) -> nx.DiGraph:
    """The live-stream graph over the given columns.

    Every confounder points to the treatment and the outcome; every effect modifier that is not a
    confounder points to the outcome only; the treatment points to the outcome; ``x_hour`` points to
    ``x_prime_time`` when both are present.
    """
    confounders = list(dict.fromkeys(confounders))
    g = nx.DiGraph()
    g.add_node(treatment)
    g.add_node(outcome)
    g.add_edge(treatment, outcome)
    for c in confounders:
        g.add_edge(c, treatment)
        g.add_edge(c, outcome)
    for m in effect_modifiers:
        if m not in confounders and m not in (treatment, outcome):
            g.add_edge(m, outcome)
    for a, b in _CONFOUNDER_EDGES:
        if a in g and b in g:
            g.add_edge(a, b)
    return g


def _strip_quotes(name: str) -> str:
    name = str(name).strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1]
    return name


def parse_graph(text: str, fmt: str, *, treatment: str | None = None, outcome: str | None = None,
                source: str = "graph") -> nx.DiGraph:
    """Parse a causal graph given as GML or DOT text into a ``networkx.DiGraph``.

    Raises ``InputError`` with a readable message when the text does not parse, the graph is not
    directed or has a cycle, or (when given) the treatment or outcome is not a node.
    """
    fmt = (fmt or "").lower().lstrip(".")
    if fmt not in ("gml", "dot", "gv"):
        raise InputError(Problem(source, f"unknown graph format '{fmt}'", fix="use a .gml or .dot file"))
    if not text or not text.strip():
        raise InputError(Problem(source, "is empty", fix="give a GML or DOT description of a directed graph"))
    if fmt == "gml":
        try:
            parsed = nx.parse_gml(text, label="label")
        except Exception as exc:  # networkx raises NetworkXError or ValueError with a position
            try:  # GML without labels: fall back to node ids
                parsed = nx.parse_gml(text, label="id")
            except Exception:
                raise InputError(Problem(source, f"is not valid GML ({exc})",
                                         fix="check the file, e.g. 'graph [ directed 1 node [ id 0 label \"T\" ] ... ]'"))
        if not parsed.is_directed():
            raise InputError(Problem(source, "is an undirected GML graph",
                                     fix="add 'directed 1' to the graph block"))
        graph = nx.DiGraph()
        graph.add_nodes_from(str(n) for n in parsed.nodes)
        graph.add_edges_from((str(a), str(b)) for a, b in parsed.edges())
    else:
        import warnings

        from pyparsing import ParseBaseException
        with warnings.catch_warnings():
            # pydot 4 builds its grammar with pyparsing's camelCase aliases, which pyparsing 3.3
            # deprecates at import time; nothing for us to fix, and only this import is filtered
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="pydot")
            from pydot import dot_parser

        try:
            # The parser itself, not pydot.graph_from_dot_data: that one prints the error to stdout
            # and returns None; here the message goes into the InputError.
            dots = list(dot_parser.GraphParser.parser.parse_string(text, parse_all=True))
        except ParseBaseException as exc:
            raise InputError(Problem(source, f"is not valid DOT (line {exc.lineno}, column {exc.col}: {exc.msg})",
                                     fix="check the syntax, e.g. 'digraph { T -> Y; X -> T; X -> Y }'"))
        if not dots:
            raise InputError(Problem(source, "is not valid DOT",
                                     fix="check the syntax, e.g. 'digraph { T -> Y; X -> T; X -> Y }'"))
        dot = dots[0]
        if dot.get_type() != "digraph":
            raise InputError(Problem(source, "is an undirected DOT graph", fix="write 'digraph { A -> B }'"))
        graph = nx.DiGraph()
        for node in dot.get_nodes():
            name = _strip_quotes(node.get_name())
            if name not in ("node", "edge", "graph", ""):
                graph.add_node(name)
        for edge in dot.get_edges():
            src, dst = edge.get_source(), edge.get_destination()
            if not isinstance(src, str) or not isinstance(dst, str):
                raise InputError(Problem(source, "uses subgraph edges, which are not supported",
                                         fix="list every edge as 'A -> B'"))
            graph.add_edge(_strip_quotes(src), _strip_quotes(dst))
    return validate_graph(graph, treatment=treatment, outcome=outcome, source=source)


def validate_graph(graph: nx.DiGraph, *, treatment: str | None = None, outcome: str | None = None,
                   source: str = "graph") -> nx.DiGraph:
    """Check that ``graph`` is a DAG holding the treatment and outcome, with a path between them."""
    problems: list[Problem] = []
    if not isinstance(graph, nx.DiGraph):
        raise InputError(Problem(source, "is not a directed graph (networkx.DiGraph)"))
    if graph.number_of_nodes() == 0:
        raise InputError(Problem(source, "has no nodes", fix="describe the treatment, the outcome and their causes"))
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        problems.append(Problem(source, "has a cycle: " + " -> ".join(str(a) for a, _ in cycle) + f" -> {cycle[0][0]}",
                                fix="a causal graph must be acyclic; remove one edge of the cycle"))
    for role, node in (("treatment", treatment), ("outcome", outcome)):
        if node is not None and node not in graph:
            problems.append(Problem(source, f"has no node for the {role} '{node}'",
                                    fix=f"add '{node}' to the graph or choose another --{role}"))
    if not problems and treatment is not None and outcome is not None and not nx.has_path(graph, treatment, outcome):
        problems.append(Problem(source, f"has no directed path from the treatment '{treatment}' to the outcome '{outcome}'",
                                fix=f"add an edge '{treatment} -> {outcome}' (the graph then says the effect is zero)"))
    if problems:
        raise InputError(problems)
    return graph


def graph_to_dict(graph: nx.DiGraph) -> dict:
    """Nodes and edges, sorted, for the result document and the report."""
    return {"nodes": sorted(str(n) for n in graph.nodes),
            "edges": sorted([str(a), str(b)] for a, b in graph.edges)}


def identify(graph: nx.DiGraph, treatment: str, outcome: str, observed: Iterable[str],
             order: Iterable[str] | None = None):
    """DoWhy backdoor identification of the average effect; returns the ``IdentifiedEstimand``.

    Raises ``InputError`` when no backdoor adjustment set exists among the observed columns.
    ``order`` fixes the order of the adjustment set (default: the graph's node order).
    """
    from dowhy.causal_identifier import EstimandType, identify_effect_auto
    from dowhy.causal_identifier.auto_identifier import construct_adjustment_estimand

    observed = [n for n in graph.nodes if n in set(observed)]
    estimand = identify_effect_auto(graph, [treatment], [outcome], observed, EstimandType.NONPARAMETRIC_ATE)
    if estimand.no_directed_path or estimand.estimands.get("backdoor") is None:
        unobserved = sorted(set(graph.nodes) - set(observed))
        raise InputError(Problem(
            "graph", f"implies the effect of '{treatment}' on '{outcome}' is not identifiable by backdoor "
            f"adjustment with the observed columns (unobserved nodes: {', '.join(unobserved) or 'none'})",
            fix="add the missing confounders to the data or revise the graph"))
    # DoWhy returns the adjustment set in set order, which changes with the hash seed; a fixed
    # order (the caller's) keeps the estimators' feature order, hence the results, reproducible.
    rank = {name: i for i, name in enumerate(order if order is not None else observed)}
    backdoor = sorted(estimand.get_backdoor_variables("backdoor"), key=lambda c: (rank.get(c, len(rank)), c))
    estimand.set_identifier_method("backdoor")
    estimand.set_backdoor_variables(backdoor, key="backdoor")
    estimand.estimands["backdoor"] = construct_adjustment_estimand([treatment], [outcome], backdoor)
    return estimand


def estimand_text(estimand) -> str:
    """DoWhy's description of the identified backdoor estimand, unwrapped (one line per formula)."""
    import sympy as sp

    entry = estimand.estimands["backdoor"]
    lines = ["Estimand type: " + str(estimand.estimand_type), "Estimand name: backdoor", "Estimand expression:",
             *(line.rstrip() for line in sp.pretty(entry["estimand"], use_unicode=True, wrap_line=False).splitlines())]
    for i, (name, text) in enumerate(entry["assumptions"].items(), start=1):
        lines.append(f"Estimand assumption {i}, {name}: {text}")
    return "\n".join(lines)
