"""The causal pre-ship check: identify (DoWhy), estimate (EconML via DoWhy), refute, segment, learn a policy."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd

from livegate.datasets.causal_frame import (MIN_ARM_ROWS, CausalColumns, column_problems,
                                            logged_treatment_propensity, read_causal_frame, validate_causal_frame)
from livegate.datasets.errors import InputError, Problem

from . import estimands as estimands_
from . import graph as graphs
from . import refute as refuters
from .estimands import ESTIMANDS, LABELS, MEANINGS, OVERLAP
from .estimate import (ESTIMATORS, ate_with_interval, build_econml, fit_dowhy_econml, learner_nuisances,
                       naive_difference)
from .features import encode
from .policy import learn_policy
from .propensity import CLIP, cross_fitted_probabilities
from .result import CausalResult
from .segments import segment_effects, segment_masks

SOURCE = "logs"
#: Trimming rules besides a fixed threshold (causal/estimands.py: crump_threshold).
TRIM_RULES = ("crump",)


@dataclass(frozen=True)
class CausalConfig:
    """What to estimate and how. ``None`` defaults come from the default live-stream graph."""

    treatment: str
    outcome: str
    confounders: tuple[str, ...] | None = None  # None: the default graph's confounders present in the data
    effect_modifiers: tuple[str, ...] | None = None  # None: x_is_new, x_popularity, x_prime_time when present
    graph: nx.DiGraph | None = None  # a user graph replaces the default; confounders = its backdoor set
    estimator: str = "linear_dml"  # "linear_dml" | "causal_forest" | "dr_learner"
    #: the population the effect is averaged over: "ate" (all rows), "att" (the treated), "atc" (the
    #: untreated) or "ato" (the overlap population, Li, Morgan & Zaslavsky 2018); causal/estimands.py
    estimand: str = "ate"
    #: None keeps every row; a number a in (0, 0.5) keeps the rows with a <= P(T=1|x) <= 1 - a; "crump"
    #: chooses a by the rule of Crump, Hotz, Imbens & Mitnik 2009. The dropped rows are counted by arm.
    trim: float | str | None = None
    refuters: tuple[str, ...] = ("placebo_treatment", "random_common_cause", "data_subset", "sensitivity")
    n_folds: int = 3
    alpha: float = 0.05
    seed: int = 0
    segments: tuple[str, ...] | None = None  # None: new vs returning, popularity tiers, prime time when present
    learn_policy: bool = True
    #: seeded runs per DoWhy refuter (one re-estimation each); a verdict that changes between them is
    #: reported as unstable (causal/refute.py)
    refuter_simulations: int = 3
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
    if config.estimand not in ESTIMANDS:
        problems.append(Problem("config", f"unknown estimand '{config.estimand}'", fix="use one of " + ", ".join(ESTIMANDS)))
    trim_problem = trim_error(config.trim)
    if trim_problem:
        problems.append(Problem("config", trim_problem, fix="use e.g. trim=0.01, trim=\"crump\" or no trimming"))
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


def trim_error(trim) -> str | None:
    """Why ``trim`` is not a valid setting (None when it is): None, "crump" or a number in (0, 0.5)."""
    if trim is None or trim in TRIM_RULES:
        return None
    if isinstance(trim, bool) or not isinstance(trim, (int, float, np.integer, np.floating)):
        return f"trim must be a number in (0, 0.5) or \"crump\", got {trim!r}"
    if not (np.isfinite(trim) and 0 < trim < 0.5):
        return f"trim must lie in (0, 0.5), got {trim!r}"
    return None


def run_causal_check(data: pd.DataFrame, config: CausalConfig, progress=None, *, source: str = SOURCE) -> CausalResult:
    """Run the whole check on ``data``; ``progress(step, done, total)`` is called before each step.
    ``source`` names the data in messages (e.g. the Parquet path it was read from).

    ``data`` is a pandas DataFrame (or a pyarrow Table, whose causal columns are selected first). It
    is checked by ``livegate.datasets.causal_frame.validate_causal_frame``, the same check that
    ``read_causal_frame`` applies to files: ``InputError`` (readable, one problem per line) for
    missing columns, NaN or infinite values in the columns used, a non-binary treatment, a
    non-numeric outcome, a treatment that the default graph treats as a confounder, a malformed
    graph or an unidentifiable effect; also when trimming (``config.trim``) leaves an arm too small.

    Order: identify; propensities (and trimming: the rows outside the bounds are dropped here, before
    anything is fitted); naive; IPW; the learner and every estimand's augmented score; refuters;
    segments; policy (for every decision, trimmed ones included).
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
    alpha = float(config.alpha)
    modifiers = columns.effect_modifiers
    warnings: list[str] = []
    notes = list(columns.notes)
    all_rows = data  # the policy covers every decision, trimmed or not

    with timer.step("identify"):
        graph, identified, confounders = _identify(data, config, columns, notes, warnings, source)
    with timer.step("propensities"):
        e_raw, clipped, propensities, propensity_source = _propensities(data, config, t, confounders, warnings,
                                                                        source)
        keep, trim = _trim(config, e_raw, t, source)
    if trim is not None and trim["dropped"]["total"]:
        data, t, e_raw, clipped = data.loc[keep].reset_index(drop=True), t[keep], e_raw[keep], clipped[keep]
    y = data[config.outcome].to_numpy(dtype=float)
    # Every weighting and augmented estimate divides by e and 1 - e: keep them away from 0 and 1 (counted).
    e1 = np.clip(e_raw, CLIP, 1 - CLIP)
    overlap = _overlap(config, t, e1, int(clipped.sum()), propensities, trim, warnings)
    population = estimands_.population_text(config.estimand, config.treatment, len(t), int(t.sum()), trim)
    with timer.step("naive"):
        naive = naive_difference(y, t, alpha)
        naive["population"] = "all rows analysed, unadjusted"
    with timer.step("ipw"):
        ipw = estimands_.ipw_estimate(y, t, e1, config.estimand, alpha)
        ipw.update({"estimator": "hajek", "estimand": config.estimand, "propensities": propensities["source"]})
    design = _design(data, config, t, y, confounders, modifiers, identified)
    with timer.step("estimate"):
        estimate, fitted, ate, by_estimand, reference = _estimate(config, design, identified, t, y, e1, propensities,
                                                                  population, overlap)
    refutations = _refute(config, design, identified, estimate, fitted, ate, reference, t, y, confounders, timer)
    with timer.step("segments"):
        segments = _segments(data, fitted, design, columns, alpha, warnings)
    policy_frame, policy_summary = _policy(all_rows, config, fitted, design, t, warnings, timer, trim, modifiers)
    _closing_remarks(config, naive, ate, refutations, warnings, notes)

    return CausalResult(
        treatment=config.treatment, outcome=config.outcome, confounders=confounders, effect_modifiers=modifiers,
        identified_estimand=graphs.estimand_text(identified), graph=graphs.graph_to_dict(graph), naive=naive, ipw=ipw,
        ate=ate, refutations=refutations, segments=segments, propensities=propensities, warnings=warnings,
        notes=notes, timings=timer.timings, n_rows=len(data), n_treated=int(t.sum()),
        settings=_settings(config, columns), policy_summary=policy_summary, policy=policy_frame,
        diagnostics={"ipw_ess": ipw["ess"], "ipw_max_weight": ipw["max_weight"]},
        model=fitted, model_info=_model_info(config, fitted, design), propensity_source=propensity_source,
        estimand={"name": config.estimand, "label": LABELS[config.estimand], "meaning": MEANINGS[config.estimand],
                  "population": population, "supported": overlap["supports"][config.estimand]},
        overlap=overlap, estimands=by_estimand,
    )


def graph_description(config: CausalConfig) -> tuple[str, str]:
    """(settings value, note) saying which graph ran: the user's graph, or the default live-stream graph
    over the user's confounders (--confounders) or over its own default confounders."""
    if config.graph is not None:
        return "user", "graph: the user's causal graph; adjustment set (its backdoor set)"
    if config.confounders is not None:
        return ("default live-stream graph over the user's confounders",
                "graph: the default live-stream graph built over the confounders the user named, not its default "
                "list; adjustment set")
    return ("default live-stream graph",
            "graph: the default live-stream graph over its default confounders present in the data; adjustment set")


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
    identified = graphs.identify(graph, T, Y, [n for n in graph.nodes if n in data.columns], order=list(data.columns))
    confounders = list(identified.get_backdoor_variables("backdoor"))
    if config.graph is not None:  # the graph chose them: check them as the named ones were checked
        problems = column_problems(data, confounders, source)
        if problems:
            raise InputError(problems)
    notes.append(graph_description(config)[1] + ": " + (", ".join(confounders) or "empty"))
    unobserved = sorted(n for n in graph.nodes if n not in data.columns)
    if unobserved:
        notes.append("graph nodes not in the data (treated as unobserved): " + ", ".join(unobserved))
    if not confounders:
        warnings.append("the graph implies no confounding (empty adjustment set): the estimate equals a "
                        "regression of the outcome on the treatment and effect modifiers")
    return graph, identified, confounders


#: What the EconML learners do with propensities (EconML's fit takes no known propensities).
LEARNER_PROPENSITIES = ("the EconML learner fits its own cross-fitted treatment model on the confounders "
                        "(EconML takes no known propensities) for its CATE; the propensities here serve IPW, the "
                        "augmented estimate of the estimand, trimming and the overlap diagnostics")


def _propensities(data, config: CausalConfig, t: np.ndarray, confounders: list[str], warnings: list,
                  source: str = SOURCE):
    """P(T=1|x) per row: the named propensity column, the logged one, or cross-fitted estimates.

    Returns ``(e1, clipped, description, propensity_source)``: ``e1`` unclipped for a column (the
    estimated ones are clipped to [CLIP, 1 - CLIP] already), ``clipped`` marks the rows outside those
    bounds (or on them, for estimates), ``propensity_source`` "column NAME" or "estimated".
    """
    T = config.treatment
    given = logged_treatment_propensity(data, config, t, source)
    if given is not None:
        e1, column = given
        propensities = {"source": "column" if config.propensity else "logged", "column": column,
                        "meaning": "P(T=1|x) as given" if config.propensity else
                        "P(logged action|x), the logged action being the treatment"}
        source = f"column {column}"
        clipped = (e1 < CLIP) | (e1 > 1 - CLIP)
    else:
        proba = cross_fitted_probabilities(data.assign(**{T: t}), T, confounders, config.n_folds,
                                           int(config.seed))[0] if confounders else None
        e1 = proba[:, 1] if proba is not None else np.full(len(t), t.mean())
        clipped = (e1 <= CLIP) | (e1 >= 1 - CLIP)  # cross_fitted_probabilities clipped them to these bounds
        propensities = {"source": "estimated", "method": "cross-fitted histogram gradient boosting, Platt-calibrated"}
        source = "estimated"
        warnings.append("estimated propensities: the logs carry no propensity of the treatment, so the IPW "
                        "and augmented estimates use propensities estimated from the confounders")
    propensities["learners"] = LEARNER_PROPENSITIES
    return e1, clipped, propensities, source


def _trim(config: CausalConfig, e1: np.ndarray, t: np.ndarray, source: str):
    """Rows kept by ``config.trim`` and the trimming summary (None without trimming)."""
    if config.trim is None:
        return np.ones(len(t), dtype=bool), None
    e = np.clip(e1, CLIP, 1 - CLIP)
    if config.trim == "crump":
        threshold, rule = estimands_.crump_threshold(e), "crump"
    else:
        threshold, rule = float(config.trim), "fixed"
    keep = estimands_.trim_mask(e, threshold) if threshold > 0 else np.ones(len(t), dtype=bool)
    treated = t == 1
    dropped = {"treated": int((~keep & treated).sum()), "control": int((~keep & ~treated).sum()),
               "total": int((~keep).sum())}
    trim = {"rule": rule, "threshold": threshold, "bounds": [threshold, 1 - threshold], "n_rows_before": len(t),
            "n_treated_before": int(treated.sum()), "dropped": dropped,
            "description": (f"Crump, Hotz, Imbens & Mitnik 2009 rule: alpha = {threshold:.4g}" if rule == "crump"
                            else f"fixed threshold {threshold:g}") + f"; rows with P(T=1|x) in "
                           f"[{threshold:.4g}, {1 - threshold:.4g}] kept"}
    kept_t = t[keep]
    problems = [Problem(source, f"keeps {int((kept_t == arm).sum())} rows with treatment {arm} after trimming at "
                        f"{threshold:.4g}; both arms need at least {MIN_ARM_ROWS} rows",
                        column=config.treatment, fix="trim less (a smaller --trim) or estimate the ATO instead")
                for arm in (0, 1) if (kept_t == arm).sum() < MIN_ARM_ROWS]
    min_rows = max(100, 20 * int(config.n_folds))
    if not problems and keep.sum() < min_rows:
        problems.append(Problem(source, f"keeps {int(keep.sum())} rows after trimming at {threshold:.4g}; the causal "
                                f"check needs at least {min_rows}", fix="trim less (a smaller --trim)"))
    if problems:
        raise InputError(problems)
    return keep, trim


def _overlap(config: CausalConfig, t, e1, n_clipped: int, propensities: dict, trim: dict | None,
             warnings: list) -> dict:
    """Overlap of the rows analysed: clipped propensities, support per estimand, the estimand's
    weights; the warnings a reviewer needs when it is poor."""
    T, label = config.treatment, LABELS[config.estimand]
    support = estimands_.overlap_support(t, e1)
    weights = estimands_.weight_diagnostics(config.estimand, t, e1)
    share_clipped = n_clipped / len(t)
    propensities.update({"min": float(e1.min()), "max": float(e1.max()), "n_clipped": n_clipped,
                         "share_outside_overlap": support["share_outside"], "overlap_bounds": support["bounds"]})
    overlap = {"clip_bounds": [CLIP, 1 - CLIP], "n_clipped": n_clipped, "share_clipped": share_clipped,
               "trim": trim, **support, "weights": {"estimand": config.estimand, **weights}}
    if support["poor"]:
        warnings.append(f"limited overlap: {support['share_outside']:.1%} of the rows analysed have P({T}=1|x) "
                        f"outside [{OVERLAP}, {1 - OVERLAP}] ({support['treated_above']:.1%} of the treated above, "
                        f"{support['control_below']:.1%} of the untreated below); effects there rest on "
                        f"extrapolation or a few large weights: {label} weights have an effective sample size of "
                        f"{weights['ess_treated']:,.0f} treated and {weights['ess_control']:,.0f} untreated rows, the "
                        f"largest weight is {weights['max_weight']:,.4g} ({weights['max_weight_share']:.1%} of its "
                        f"arm), and {share_clipped:.1%} of the propensities were clipped to [{CLIP}, {1 - CLIP}]")
    if not support["supports"][config.estimand]:
        supported = [LABELS[name] for name, ok in support["supports"].items() if ok]
        warnings.append(f"the overlap does not support the {label}: it rests on rows without comparable "
                        f"counterparts; the data support the {' and the '.join(supported)} (--estimand "
                        f"{' or '.join(n for n, ok in support['supports'].items() if ok)}), or trim (--trim crump)")
    elif n_clipped:
        warnings.append(f"{n_clipped:,} propensities ({share_clipped:.2%}) were clipped to [{CLIP}, {1 - CLIP}]")
    return overlap


def _design(data, config: CausalConfig, t, y, confounders, modifiers, identified) -> _Design:
    """Categorical columns one-hot encoded before DoWhy / EconML (a categorical effect modifier raised
    KeyError inside DoWhy's EconML wrapper, STACK-NOTES); DoWhy's identified estimand adjusts for the
    encoded columns."""
    T, Y = config.treatment, config.outcome
    W = encode(data, confounders)
    X = encode(data, modifiers, drop_first=True)
    model_data = pd.concat([pd.DataFrame({T: t, Y: y}), W, X.loc[:, [c for c in X.columns if c not in W.columns]]],
                           axis=1)
    identified.set_backdoor_variables(list(W.columns), key="backdoor")
    return _Design(W, X, model_data)


#: The source of each estimand's augmented score (causal/estimands.py has the formulas).
SCORE_SOURCES = {
    "ate": "AIPW (Robins, Rotnitzky & Zhao 1994; Chernozhukov et al. 2018, eq. 5.3)",
    "att": "the ATT score of Hahn 1998 (Chernozhukov et al. 2018, eq. 5.4)",
    "atc": "the mirror image of Hahn 1998's ATT score",
    "ato": "overlap weights (Li, Morgan & Zaslavsky 2018), augmented (Mao, Li & Greene 2019)",
}


def _estimate(config: CausalConfig, design: _Design, identified, t, y, e1, propensities: dict, population: str,
              overlap: dict):
    """The EconML learner fitted through DoWhy; every estimand from its cross-fitted outcome models and
    the propensities (augmented scores); the learner's own CATE average over the estimand's rows,
    which the refuters re-estimate. Returns (DoWhy estimate, fitted, ate block, all estimands, reference)."""
    alpha = float(config.alpha)
    econml_est = build_econml(config.estimator, int(config.seed), int(config.n_folds), len(t),
                              design.X_np is not None)
    estimate, fitted = fit_dowhy_econml(design.model_data, identified, econml_est, config.treatment, config.outcome,
                                        list(design.X.columns), target=config.estimand)
    m0, m1 = learner_nuisances(fitted, y, t, design.X_np)
    by_estimand = {}
    for name in ESTIMANDS:
        block = estimands_.score_estimate(y, t, e1, m0, m1, name, alpha)
        block.update(label=LABELS[name], supported=overlap["supports"][name])
        by_estimand[name] = block
    rows = {"att": t == 1, "atc": t == 0}.get(config.estimand)
    X = design.X_np
    cate = ate_with_interval(fitted, X if X is None or rows is None else X[rows], alpha)
    cate["rows"] = {"att": "the treated rows", "atc": "the untreated rows"}.get(
        config.estimand, "all rows" + (" (DoWhy has no weighted average for the ATO)" if config.estimand == "ato" else ""))
    ate = {key: by_estimand[config.estimand][key] for key in ("value", "se", "ci_low", "ci_high")}
    ate.update({"estimand": config.estimand, "population": population, "estimator": config.estimator,
                "method": f"{LABELS[config.estimand]} by {SCORE_SOURCES[config.estimand]}, with the outcome models "
                          f"of {config.estimator}'s cross-fitting and the {propensities['source']} propensities "
                          f"clipped to [{CLIP}, {1 - CLIP}]",
                "first_stage": "HistGradientBoosting", "n_folds": int(config.n_folds),
                "dowhy_value": float(estimate.value), "cate_average": cate})
    reference = {"value": float(estimate.value), "se": cate["se"]}
    return estimate, fitted, ate, by_estimand, reference


def _refute(config: CausalConfig, design: _Design, identified, estimate, fitted, ate, reference, t, y, confounders,
            timer: _Timer) -> list:
    """Each configured refuter in turn (rules in causal/refute.py), one timer step each. The DoWhy
    refuters compare their re-estimates with ``reference``: the learner's CATE average that DoWhy reports."""
    alpha, seed = float(config.alpha), int(config.seed)
    seeds = refuters.refuter_seeds(seed, int(config.refuter_simulations))
    data = design.model_data
    out = []
    for name in config.refuters:
        with timer.step(name):
            if name == "placebo_treatment":
                out.append(refuters.placebo_treatment(data, identified, estimate, config.treatment, reference,
                                                      alpha=alpha, seeds=seeds))
            elif name == "random_common_cause":
                out.append(refuters.random_common_cause(data, identified, estimate, reference, alpha=alpha,
                                                        seeds=seeds))
            elif name == "data_subset":
                out.append(refuters.data_subset(data, identified, estimate, reference, alpha=alpha, seeds=seeds))
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


def _policy(data, config: CausalConfig, fitted, design: _Design, t, warnings: list, timer: _Timer,
            trim: dict | None = None, modifiers: list[str] = ()):
    """The learned "recommend where it helps" policy and its summary, or (None, None). Learned on the
    rows analysed; written for every decision of ``data`` (trimmed rows too, so that ``livegate
    evaluate`` can score it on the same logs)."""
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
        every = None
        if trim is not None and trim["dropped"]["total"]:
            # encoded as in the fit: a level seen only in trimmed rows counts as the baseline level
            X_all = encode(data, modifiers, drop_first=True).reindex(columns=design.X.columns, fill_value=0.0)
            every = (X_all.to_numpy(dtype=np.float64), ids)
        return learn_policy(fitted, design.X_np, t, ids if every is None else None, alpha=float(config.alpha),
                            seed=int(config.seed), apply_to=every)


def _closing_remarks(config: CausalConfig, naive: dict, ate: dict, refutations: list, warnings: list,
                     notes: list) -> None:
    """The refuters' caveat, failed and unstable refutations, the sensitivity benchmark and the naive gap."""
    warnings.append(refuters.CAVEAT)
    failed = [r.name for r in refutations if r.state == "fail"]
    if failed:
        warnings.append("refutation failed: " + ", ".join(failed) + " (see each refutation's rule and numbers)")
    unstable = [r.name for r in refutations if r.state == "unstable"]
    if unstable:
        warnings.append("refutation unstable: " + ", ".join(unstable) + " (its verdict changes with the seed: not a "
                        "pass; see each refutation's per-seed numbers)")
    sens = next((r for r in refutations if r.name == "sensitivity"), None)
    if sens is not None and sens.details.get("benchmark_confounder"):
        notes.append(f"sensitivity: robustness value {sens.details['robustness_value']:.3g} (partial R^2 of an "
                     f"unobserved confounder, with both treatment and outcome, that would make the interval "
                     f"include 0); "
                     f"strongest observed confounder {sens.details['benchmark_confounder']} has "
                     f"c_y = {sens.details['c_y']:.3g}, c_t = {sens.details['c_t']:.3g}")
    if abs(ate["value"]) > 0 and naive["value"] != ate["value"]:
        notes.append(f"the naive difference in means ({naive['value']:.4g}) differs from the adjusted "
                     f"{LABELS[config.estimand]} ({ate['value']:.4g}) by "
                     f"{abs(naive['value'] - ate['value']) / abs(ate['value']):.0%} of it")


def _settings(config: CausalConfig, columns: CausalColumns) -> dict:
    graph, _ = graph_description(config)
    return {"estimator": config.estimator, "estimand": config.estimand, "trim": config.trim,
            "n_folds": int(config.n_folds), "alpha": float(config.alpha),
            "seed": int(config.seed), "refuters": list(config.refuters),
            "refuter_simulations": int(config.refuter_simulations), "n_threads": int(config.n_threads),
            "segments": columns.segments, "segments_from": columns.segments_from,
            "learn_policy": bool(config.learn_policy), "propensity": config.propensity,
            "graph": graph,
            "confounders_from": "user graph" if config.graph is not None else
            "user" if config.confounders is not None else "default graph"}


def _model_info(config: CausalConfig, fitted, design: _Design) -> dict:
    """What ``CausalResult.model`` is, for the document (the object itself is not serialised)."""
    return {"class": type(fitted).__name__, "estimator": config.estimator,
            "X_columns": list(design.X.columns), "W_columns": list(design.W.columns),
            "treatment_values": [0, 1], "first_stages": "HistGradientBoosting, cross-fitted",
            "propensity": LEARNER_PROPENSITIES}
