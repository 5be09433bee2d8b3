"""The causal pre-ship check: identify (DoWhy), estimate (EconML via DoWhy), refute, segment, learn a policy."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd

from livegate.datasets.causal_frame import (CausalColumns, column_problems, logged_treatment_propensity,
                                            read_causal_frame, validate_causal_frame)
from livegate.datasets.errors import InputError, Problem

from . import graph as graphs
from . import refute as refuters
from .estimate import ESTIMATORS, ate_with_interval, build_econml, fit_dowhy_econml, ipw_estimate, naive_difference
from .features import encode
from .policy import learn_policy
from .propensity import cross_fitted_probabilities
from .result import CausalResult
from .segments import segment_effects, segment_masks

SOURCE = "logs"
#: Rows with an estimated P(T=1|x) outside [OVERLAP, 1 - OVERLAP] are counted as poor overlap.
OVERLAP = 0.02


@dataclass(frozen=True)
class CausalConfig:
    """What to estimate and how. ``None`` defaults come from the default live-stream graph."""

    treatment: str
    outcome: str
    confounders: tuple[str, ...] | None = None  # None: the default graph's confounders present in the data
    effect_modifiers: tuple[str, ...] | None = None  # None: x_is_new, x_popularity, x_prime_time when present
    graph: nx.DiGraph | None = None  # a user graph replaces the default; confounders = its backdoor set
    estimator: str = "linear_dml"  # "linear_dml" | "causal_forest" | "dr_learner"
    refuters: tuple[str, ...] = ("placebo_treatment", "random_common_cause", "data_subset", "sensitivity")
    n_folds: int = 3
    alpha: float = 0.05
    seed: int = 0
    segments: tuple[str, ...] | None = None  # None: new vs returning, popularity tiers, prime time when present
    learn_policy: bool = True
    refuter_simulations: int = 3  # re-estimations per DoWhy refuter
    # OpenMP threads of the boosted first stages. 1 by default: on 100k rows a LinearDML fit took
    # 2.7 s with 1 thread, and 2.1 s with 2 threads alone but 22.7 s with 2 threads while another
    # process used a core (measured on the 2-core reference machine).
    n_threads: int = 1
    # A column holding the treatment's propensity P(T=1|x): used for IPW and the overlap diagnostics
    # instead of estimating it (must be numeric, strictly inside (0, 1), no NaN).
    propensity: str | None = None
    propensity_column: str = "propensity"  # logged P(logged action | x), used when the action is the treatment
    action_column: str = "action"
    decision_id_column: str = "decision_id"


class _Timer:
    def __init__(self, progress, total: int):
        self.timings: dict[str, float] = {}
        self.progress = progress
        self.total = total
        self.done = 0

    @contextlib.contextmanager
    def step(self, name: str):
        if self.progress is not None:
            self.progress(name, self.done, self.total)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 4)
            self.done += 1


class _LogCollector(logging.Handler):
    """Collects DoWhy's log records during a check instead of letting them reach stderr: the causal
    layer never prints. The records that matter are turned into the result's warnings or diagnostics."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        message = " ".join(record.getMessage().split())
        if message not in self.messages:
            self.messages.append(message)


@contextlib.contextmanager
def _collect_dowhy_logs():
    logger = logging.getLogger("dowhy")
    handler = _LogCollector()
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate


def _validate_config(config: CausalConfig) -> None:
    problems = []
    if config.estimator not in ESTIMATORS:
        problems.append(Problem("config", f"unknown estimator '{config.estimator}'", fix="use one of " + ", ".join(ESTIMATORS)))
    unknown = [r for r in config.refuters if r not in refuters.REFUTERS]
    if unknown:
        problems.append(Problem("config", f"unknown refuter(s) {', '.join(unknown)}",
                                fix="use any of " + ", ".join(refuters.REFUTERS)))
    if not (0 < config.alpha < 1):
        problems.append(Problem("config", f"alpha must lie in (0, 1), got {config.alpha}"))
    if int(config.n_folds) < 2:
        problems.append(Problem("config", f"n_folds must be at least 2, got {config.n_folds}"))
    if int(config.refuter_simulations) < 1:
        problems.append(Problem("config", f"refuter_simulations must be at least 1, got {config.refuter_simulations}"))
    from livegate.datasets.gate_config import MAX_SEED
    if isinstance(config.seed, bool) or not isinstance(config.seed, (int, np.integer)) \
            or not 0 <= config.seed <= MAX_SEED:
        problems.append(Problem("seed", f"{config.seed!r} is not an integer in [0, {MAX_SEED}]", fix="use e.g. 0 or 12345"))
    if config.treatment == config.outcome:
        problems.append(Problem("config", f"treatment and outcome are the same column '{config.treatment}'"))
    if config.propensity is not None and config.propensity in (config.treatment, config.outcome):
        problems.append(Problem("config", f"the propensity column '{config.propensity}' is the treatment or the "
                                "outcome", fix="name the column holding P(treatment=1|x)"))
    if problems:
        raise InputError(problems)




def run_causal_check(data: pd.DataFrame, config: CausalConfig, progress=None, *, source: str = SOURCE) -> CausalResult:
    """Run the whole check on ``data``; ``progress(step, done, total)`` is called before each step.
    ``source`` names the data in messages (e.g. the Parquet path it was read from).

    ``data`` is a pandas DataFrame (or a pyarrow Table, whose causal columns are selected first). It
    is checked by ``livegate.datasets.causal_frame.validate_causal_frame``, the same check that
    ``read_causal_frame`` applies to files: ``InputError`` (readable, one problem per line) for
    missing columns, NaN or infinite values in the columns used, a non-binary treatment, a
    non-numeric outcome, a treatment that the default graph treats as a confounder, a malformed
    graph or an unidentifiable effect.
    """
    from threadpoolctl import threadpool_limits

    _validate_config(config)
    if not isinstance(data, pd.DataFrame) and hasattr(data, "column_names"):  # a pyarrow Table
        data = read_causal_frame(data, config, name=source)
    inputs = validate_causal_frame(data, config, source=source)
    if config.graph is not None:
        graphs.validate_graph(config.graph, treatment=config.treatment, outcome=config.outcome, source="graph")
    steps = ["identify", "propensities", "naive", "ipw", "estimate", *config.refuters, "segments"]
    if config.learn_policy and inputs.columns.effect_modifiers:
        steps.append("policy")
    timer = _Timer(progress, len(steps))
    start = time.perf_counter()
    # Thread limits apply to this call only (restored on exit); see CausalConfig.n_threads.
    with threadpool_limits(limits=int(config.n_threads), user_api="openmp"), _collect_dowhy_logs() as logs:
        result = _run(data.reset_index(drop=True), config, inputs.treatment, inputs.columns, timer, source)
    result.timings["total"] = round(time.perf_counter() - start, 4)
    if logs.messages:
        result.diagnostics["dowhy_log"] = logs.messages
    return result


@dataclass
class _Design:
    """Design matrices: confounders ``W`` and effect modifiers ``X`` (encoded), the frame DoWhy fits on."""

    W: pd.DataFrame
    X: pd.DataFrame
    model_data: pd.DataFrame

    @property
    def X_np(self) -> np.ndarray | None:
        return self.X.to_numpy() if self.X.shape[1] else None


def _run(data: pd.DataFrame, config: CausalConfig, t: np.ndarray, columns: CausalColumns,
         timer: _Timer, source: str = SOURCE) -> CausalResult:
    """The steps of the check, in order; each step is one function below."""
    y = data[config.outcome].to_numpy(dtype=float)
    alpha = float(config.alpha)
    modifiers = columns.effect_modifiers
    warnings: list[str] = []
    notes = list(columns.notes)

    with timer.step("identify"):
        graph, estimand, confounders = _identify(data, config, columns, notes, warnings, source)
    with timer.step("propensities"):
        e1, propensities, propensity_source = _propensities(data, config, t, confounders, warnings, source)
    with timer.step("naive"):
        naive = naive_difference(y, t, alpha)
    with timer.step("ipw"):
        ipw = ipw_estimate(y, t, e1, alpha)
        ipw.update({"estimator": "hajek", "propensities": propensities["source"]})
    design = _design(data, config, t, y, confounders, modifiers, estimand)
    with timer.step("estimate"):
        estimate, fitted, ate = _estimate(config, design, estimand, len(data))
    refutations = _refute(config, design, estimand, estimate, fitted, ate, t, y, confounders, timer)
    with timer.step("segments"):
        segments = _segments(data, fitted, design, columns, alpha, warnings)
    policy_frame, policy_summary = _policy(data, config, fitted, design, t, warnings, timer)
    _closing_remarks(naive, ate, refutations, warnings, notes)

    return CausalResult(
        treatment=config.treatment, outcome=config.outcome, confounders=confounders, effect_modifiers=modifiers,
        identified_estimand=graphs.estimand_text(estimand), graph=graphs.graph_to_dict(graph), naive=naive, ipw=ipw,
        ate=ate, refutations=refutations, segments=segments, propensities=propensities, warnings=warnings,
        notes=notes, timings=timer.timings, n_rows=len(data), n_treated=int(t.sum()),
        settings=_settings(config, columns), policy_summary=policy_summary, policy=policy_frame,
        diagnostics={"ipw_ess": ipw["ess"], "ipw_max_weight": ipw["max_weight"]},
        model=fitted, model_info=_model_info(config, fitted, design), propensity_source=propensity_source,
    )


def _identify(data, config: CausalConfig, columns: CausalColumns, notes: list, warnings: list,
              source: str = SOURCE):
    """The graph (the user's or the default one), DoWhy's backdoor estimand and its adjustment set."""
    T, Y = config.treatment, config.outcome
    graph = config.graph if config.graph is not None else graphs.default_graph(T, Y, columns.confounders,
                                                                                columns.effect_modifiers)
    missing_nodes = [c for c in columns.confounders if c not in graph]
    if missing_nodes:
        raise InputError(Problem("graph", "has no node for the confounder(s) " + ", ".join(missing_nodes),
                                 fix="add them to the graph or leave them out of --confounders"))
    estimand = graphs.identify(graph, T, Y, [n for n in graph.nodes if n in data.columns], order=list(data.columns))
    confounders = list(estimand.get_backdoor_variables("backdoor"))
    if config.graph is not None:  # the graph chose them: check them as the named ones were checked
        problems = column_problems(data, confounders, source)
        if problems:
            raise InputError(problems)
    unobserved = sorted(n for n in graph.nodes if n not in data.columns)
    if unobserved:
        notes.append("graph nodes not in the data (treated as unobserved): " + ", ".join(unobserved))
    if not confounders:
        warnings.append("the graph implies no confounding (empty adjustment set): the estimate equals a "
                        "regression of the outcome on the treatment and effect modifiers")
    return graph, estimand, confounders


#: What the EconML learners do with propensities (EconML's fit takes no known propensities).
LEARNER_PROPENSITIES = ("the EconML learner fits its own cross-fitted treatment model on the confounders "
                        "(EconML takes no known propensities); the propensities here serve IPW and the overlap "
                        "diagnostics")


def _propensities(data, config: CausalConfig, t: np.ndarray, confounders: list[str], warnings: list,
                  source: str = SOURCE):
    """P(T=1|x) per row: the named propensity column, the logged one, or cross-fitted estimates.

    Returns ``(e1, description, propensity_source)`` with ``propensity_source`` "column NAME" or "estimated".
    """
    T = config.treatment
    given = logged_treatment_propensity(data, config, t, source)
    if given is not None:
        e1, column = given
        propensities = {"source": "column" if config.propensity else "logged", "column": column,
                        "meaning": "P(T=1|x) as given" if config.propensity else
                        "P(logged action|x), the logged action being the treatment"}
        source = f"column {column}"
    else:
        proba, _, n_clipped = cross_fitted_probabilities(data.assign(**{T: t}), T, confounders, config.n_folds,
                                                         int(config.seed)) if confounders else (None, None, 0)
        e1 = proba[:, 1] if proba is not None else np.full(len(t), t.mean())
        propensities = {"source": "estimated", "method": "cross-fitted histogram gradient boosting, Platt-calibrated",
                        "n_clipped": n_clipped}
        source = "estimated"
        warnings.append("estimated propensities: the logs carry no propensity of the treatment, so the IPW "
                        "estimate uses propensities estimated from the confounders")
    poor = float(np.mean((e1 < OVERLAP) | (e1 > 1 - OVERLAP)))
    propensities.update({"min": float(e1.min()), "max": float(e1.max()), "share_outside_overlap": poor,
                         "overlap_bounds": [OVERLAP, 1 - OVERLAP], "learners": LEARNER_PROPENSITIES})
    if poor > 0.01:
        warnings.append(f"limited overlap: {poor:.1%} of rows have P({T}=1|x) outside "
                        f"[{OVERLAP}, {1 - OVERLAP}]; effects there rest on extrapolation")
    return e1, propensities, source


def _design(data, config: CausalConfig, t, y, confounders, modifiers, estimand) -> _Design:
    """Categorical columns one-hot encoded before DoWhy / EconML (a categorical effect modifier raised
    KeyError inside DoWhy's EconML wrapper, STACK-NOTES); the estimand adjusts for the encoded columns."""
    T, Y = config.treatment, config.outcome
    W = encode(data, confounders)
    X = encode(data, modifiers, drop_first=True)
    model_data = pd.concat([pd.DataFrame({T: t, Y: y}), W, X.loc[:, [c for c in X.columns if c not in W.columns]]],
                           axis=1)
    estimand.set_backdoor_variables(list(W.columns), key="backdoor")
    return _Design(W, X, model_data)


def _estimate(config: CausalConfig, design: _Design, estimand, n_rows: int):
    """The EconML estimator fitted through DoWhy, and its average effect with an interval."""
    econml_est = build_econml(config.estimator, int(config.seed), int(config.n_folds), n_rows, design.X_np is not None)
    estimate, fitted = fit_dowhy_econml(design.model_data, estimand, econml_est, config.treatment, config.outcome,
                                        list(design.X.columns))
    ate = ate_with_interval(fitted, design.X_np, float(config.alpha))
    ate.update({"estimator": config.estimator, "first_stage": "HistGradientBoosting",
                "n_folds": int(config.n_folds), "dowhy_value": float(estimate.value)})
    return estimate, fitted, ate


def _refute(config: CausalConfig, design: _Design, estimand, estimate, fitted, ate, t, y, confounders,
            timer: _Timer) -> list:
    """Each configured refuter in turn (rules in causal/refute.py), one timer step each."""
    alpha, seed, k = float(config.alpha), int(config.seed), int(config.refuter_simulations)
    data = design.model_data
    out = []
    for name in config.refuters:
        with timer.step(name):
            if name == "placebo_treatment":
                out.append(refuters.placebo_treatment(data, estimand, estimate, config.treatment, ate, alpha=alpha,
                                                      simulations=k, seed=seed))
            elif name == "random_common_cause":
                out.append(refuters.random_common_cause(data, estimand, estimate, ate, alpha=alpha, simulations=k,
                                                        seed=seed))
            elif name == "data_subset":
                out.append(refuters.data_subset(data, estimand, estimate, ate, alpha=alpha, simulations=k, seed=seed))
            elif name == "sensitivity":
                groups = refuters.groups_of(list(design.W.columns), confounders)
                strengths = (refuters.confounder_strengths(t, y, groups, design.W.to_numpy(), seed=seed)
                             if groups else {})
                out.append(refuters.sensitivity(fitted, ate, strengths, alpha=alpha, estimator=config.estimator))
    return out


def _segments(data, fitted, design: _Design, columns: CausalColumns, alpha: float, warnings: list) -> list:
    """Group average effects per segment (causal/segments.py)."""
    masks, mask_warnings = segment_masks(data, columns.segments)
    segments, seg_warnings = segment_effects(fitted, design.X_np, masks, alpha)
    warnings += mask_warnings + seg_warnings
    not_modifiers = [c for c in columns.segments if c not in columns.effect_modifiers]
    if not_modifiers:
        warnings.append("segment column(s) " + ", ".join(not_modifiers) + " are not effect modifiers: their "
                        "segment effects differ only through the effect modifiers' distribution")
    return segments


def _policy(data, config: CausalConfig, fitted, design: _Design, t, warnings: list, timer: _Timer):
    """The learned "recommend where it helps" policy and its summary, or (None, None)."""
    if not config.learn_policy:
        return None, None
    if design.X_np is None:
        warnings.append("no policy learned: a policy needs at least one effect modifier")
        return None, None
    with timer.step("policy"):
        id_col = config.decision_id_column
        if id_col in data.columns:
            ids = data[id_col].to_numpy()
        else:
            ids = np.arange(len(data))
            warnings.append(f"no '{id_col}' column: the policy uses row numbers as decision ids")
        return learn_policy(fitted, design.X_np, t, ids, alpha=float(config.alpha), seed=int(config.seed))


def _closing_remarks(naive: dict, ate: dict, refutations: list, warnings: list, notes: list) -> None:
    """The refuters' caveat, failed refutations, the sensitivity benchmark and the naive gap."""
    warnings.append(refuters.CAVEAT)
    failed = [r.name for r in refutations if r.passed is False]
    if failed:
        warnings.append("refutation failed: " + ", ".join(failed) + " (see each refutation's rule and numbers)")
    sens = next((r for r in refutations if r.name == "sensitivity"), None)
    if sens is not None and sens.details.get("benchmark_confounder"):
        notes.append(f"sensitivity: robustness value {sens.details['robustness_value']:.3g} (partial R^2 of an "
                     f"unobserved confounder, with both treatment and outcome, that would make the interval "
                     f"include 0); "
                     f"strongest observed confounder {sens.details['benchmark_confounder']} has "
                     f"c_y = {sens.details['c_y']:.3g}, c_t = {sens.details['c_t']:.3g}")
    if abs(ate["value"]) > 0 and naive["value"] != ate["value"]:
        notes.append(f"the naive difference in means ({naive['value']:.4g}) differs from the adjusted estimate "
                     f"({ate['value']:.4g}) by {abs(naive['value'] - ate['value']) / abs(ate['value']):.0%} of it")


def _settings(config: CausalConfig, columns: CausalColumns) -> dict:
    return {"estimator": config.estimator, "n_folds": int(config.n_folds), "alpha": float(config.alpha),
            "seed": int(config.seed), "refuters": list(config.refuters),
            "refuter_simulations": int(config.refuter_simulations), "n_threads": int(config.n_threads),
            "segments": columns.segments, "segments_from": columns.segments_from,
            "learn_policy": bool(config.learn_policy), "propensity": config.propensity,
            "graph": "user" if config.graph is not None else "default live-stream graph"}


def _model_info(config: CausalConfig, fitted, design: _Design) -> dict:
    """What ``CausalResult.model`` is, for the document (the object itself is not serialised)."""
    return {"class": type(fitted).__name__, "estimator": config.estimator,
            "X_columns": list(design.X.columns), "W_columns": list(design.W.columns),
            "treatment_values": [0, 1], "first_stages": "HistGradientBoosting, cross-fitted",
            "propensity": LEARNER_PROPENSITIES}
