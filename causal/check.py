"""The causal pre-ship check: identify (DoWhy), estimate (EconML via DoWhy), refute, segment, learn a policy."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from livegate.datasets.errors import InputError, Problem
from livegate.datasets.schema import LogSchema

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


def _problem(message, column=None, rows=None, fix=None) -> Problem:
    return Problem(SOURCE, message, column=column, rows=rows, fix=fix)


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
    if config.treatment == config.outcome:
        problems.append(Problem("config", f"treatment and outcome are the same column '{config.treatment}'"))
    if problems:
        raise InputError(problems)


def _binary_treatment(series: pd.Series, name: str) -> np.ndarray:
    if ptypes.is_bool_dtype(series):
        return series.to_numpy(dtype=np.int64)
    values = pd.unique(series)
    if ptypes.is_numeric_dtype(series) and set(np.asarray(values, dtype=float)) <= {0.0, 1.0}:
        t = series.to_numpy(dtype=np.int64)
    else:
        bad = int((~series.isin([0, 1])).sum())
        raise InputError(_problem(f"hold values other than 0/1 (seen: {', '.join(map(str, list(values)[:5]))})",
                                  column=name, rows=bad, fix="the treatment must be binary: 1 = recommended/exposed, 0 = not"))
    for arm in (0, 1):
        if (t == arm).sum() < 10:
            raise InputError(_problem(f"has {(t == arm).sum()} rows with treatment {arm}; both arms need at least 10 rows",
                                      column=name))
    return t


def _resolve_columns(data: pd.DataFrame, config: CausalConfig) -> tuple[list[str], list[str], list[str], list[str]]:
    """Confounders, effect modifiers, segment columns, and warnings about the choice."""
    notes = []
    columns = list(data.columns)
    if config.confounders is not None:
        confounders = list(dict.fromkeys(config.confounders))
    elif config.graph is not None:
        confounders = []  # from identification on the user's graph
    else:
        confounders = [c for c in graphs.DEFAULT_CONFOUNDERS if c in data.columns]
        context = LogSchema().context_columns(columns, exclude=(config.treatment, config.outcome))
        unused = [c for c in context if c not in confounders]
        if unused:
            notes.append("context columns not in the default graph and not adjusted for: " + ", ".join(unused)
                         + " (pass them as confounders if they affect both treatment and outcome)")
        if not confounders:
            raise InputError(_problem("has none of the default graph's confounders (" + ", ".join(graphs.DEFAULT_CONFOUNDERS) + ")",
                                      fix="name the confounders (--confounders) or give a causal graph"))
    if config.effect_modifiers is not None:
        modifiers = list(dict.fromkeys(config.effect_modifiers))
    else:
        modifiers = [c for c in graphs.DEFAULT_EFFECT_MODIFIERS if c in data.columns]
    if config.segments is not None:
        segments = list(dict.fromkeys(config.segments))
    else:
        segments = [c for c in graphs.DEFAULT_SEGMENTS if c in data.columns]
    return confounders, modifiers, segments, notes


def _validate_data(data: pd.DataFrame, config: CausalConfig, needed: list[str]) -> None:
    if not isinstance(data, pd.DataFrame):
        raise InputError(Problem(SOURCE, "must be a pandas DataFrame"))
    problems = []
    for col in dict.fromkeys(needed):
        if col not in data.columns:
            problems.append(_problem("is missing", column=col, fix="check the column name (columns are case-sensitive)"))
    if problems:
        raise InputError(problems)
    for col in dict.fromkeys(needed):
        n_na = int(data[col].isna().sum())
        if n_na:
            problems.append(_problem("are missing (NaN / null)", column=col, rows=n_na, fix="drop or impute those rows"))
    y = data[config.outcome]
    if not (ptypes.is_numeric_dtype(y) or ptypes.is_bool_dtype(y)):
        problems.append(_problem(f"must be numeric, found {y.dtype}", column=config.outcome))
    elif ptypes.is_numeric_dtype(y) and not ptypes.is_bool_dtype(y):
        n_inf = int((~np.isfinite(y.to_numpy(dtype=float)) & y.notna().to_numpy()).sum())
        if n_inf:
            problems.append(_problem("are infinite", column=config.outcome, rows=n_inf))
    if problems:
        raise InputError(problems)
    min_rows = max(100, 20 * int(config.n_folds))
    if len(data) < min_rows:
        raise InputError(_problem(f"has {len(data)} rows; the causal check needs at least {min_rows}"))


def _logged_propensity(data: pd.DataFrame, config: CausalConfig, t: np.ndarray) -> np.ndarray | None:
    """P(T=1|x) from the logs' propensity column, valid only when the logged action is the treatment."""
    col = config.propensity_column
    if col not in data.columns:
        return None
    if config.treatment != config.action_column:
        if config.action_column not in data.columns:
            return None
        action = data[config.action_column]
        if not ptypes.is_numeric_dtype(action) and not ptypes.is_bool_dtype(action):
            return None
        if not np.array_equal(action.to_numpy(dtype=float), t.astype(float)):
            return None
    p = data[col].to_numpy(dtype=float)
    bad = int((~np.isfinite(p) | (p <= 0) | (p > 1)).sum())
    if bad:
        raise InputError(_problem("must lie in (0, 1]", column=col, rows=bad, fix="fix the logged propensities or drop the column"))
    return np.where(t == 1, p, 1.0 - p)


def run_causal_check(data: pd.DataFrame, config: CausalConfig, progress=None) -> CausalResult:
    """Run the whole check on ``data``; ``progress(step, done, total)`` is called before each step.

    Raises ``InputError`` (readable, one problem per line) for missing columns, missing values in
    the columns used, a non-binary treatment, a non-numeric outcome, a malformed graph or an
    unidentifiable effect.
    """
    from threadpoolctl import threadpool_limits

    _validate_config(config)
    confounders, modifiers, segment_cols, notes = _resolve_columns(data, config)
    needed = [config.treatment, config.outcome, *confounders, *modifiers, *segment_cols]
    _validate_data(data, config, needed)
    if config.graph is not None:
        graphs.validate_graph(config.graph, treatment=config.treatment, outcome=config.outcome, source="graph")
    t = _binary_treatment(data[config.treatment], config.treatment)
    steps = ["identify", "propensities", "naive", "ipw", "estimate", *config.refuters, "segments"]
    if config.learn_policy and modifiers:
        steps.append("policy")
    timer = _Timer(progress, len(steps))
    start = time.perf_counter()
    # Thread limits apply to this call only (restored on exit); see CausalConfig.n_threads.
    with threadpool_limits(limits=int(config.n_threads), user_api="openmp"), _collect_dowhy_logs() as logs:
        result = _run(data.reset_index(drop=True), config, t, confounders, modifiers, segment_cols, notes, timer)
    result.timings["total"] = round(time.perf_counter() - start, 4)
    if logs.messages:
        result.diagnostics["dowhy_log"] = logs.messages
    return result


def _run(data, config, t, confounders, modifiers, segment_cols, notes, timer) -> CausalResult:
    T, Y = config.treatment, config.outcome
    warnings: list[str] = []
    y = data[Y].to_numpy(dtype=float)
    alpha, seed = float(config.alpha), int(config.seed)

    with timer.step("identify"):
        if config.graph is not None:
            graph = config.graph
        else:
            graph = graphs.default_graph(T, Y, confounders, modifiers)
        missing_nodes = [c for c in confounders if c not in graph]
        if missing_nodes:
            raise InputError(Problem("graph", "has no node for the confounder(s) " + ", ".join(missing_nodes),
                                     fix="add them to the graph or leave them out of --confounders"))
        estimand = graphs.identify(graph, T, Y, [n for n in graph.nodes if n in data.columns], order=list(data.columns))
        confounders = list(estimand.get_backdoor_variables("backdoor"))
        if config.graph is not None:
            _validate_data(data, config, confounders)  # the graph chose them: check them too
        estimand_text = graphs.estimand_text(estimand)
        unobserved = sorted(n for n in graph.nodes if n not in data.columns)
        if unobserved:
            notes.append("graph nodes not in the data (treated as unobserved): " + ", ".join(unobserved))
        if not confounders:
            warnings.append("the graph implies no confounding (empty adjustment set): the estimate equals a "
                            "regression of the outcome on the treatment and effect modifiers")

    with timer.step("propensities"):
        e1 = _logged_propensity(data, config, t)
        if e1 is not None:
            propensities = {"source": "logged", "column": config.propensity_column}
        else:
            proba, _, n_clipped = cross_fitted_probabilities(data.assign(**{T: t}), T, confounders, config.n_folds,
                                                             seed) if confounders else (None, None, 0)
            e1 = proba[:, 1] if proba is not None else np.full(len(t), t.mean())
            propensities = {"source": "estimated", "method": "cross-fitted histogram gradient boosting, Platt-calibrated",
                            "n_clipped": n_clipped}
            warnings.append("estimated propensities: the logs carry no propensity of the treatment, so the IPW "
                            "estimate uses propensities estimated from the confounders")
        poor = float(np.mean((e1 < OVERLAP) | (e1 > 1 - OVERLAP)))
        propensities.update({"min": float(e1.min()), "max": float(e1.max()), "share_outside_overlap": poor,
                             "overlap_bounds": [OVERLAP, 1 - OVERLAP]})
        if poor > 0.01:
            warnings.append(f"limited overlap: {poor:.1%} of rows have P({T}=1|x) outside "
                            f"[{OVERLAP}, {1 - OVERLAP}]; effects there rest on extrapolation")

    with timer.step("naive"):
        naive = naive_difference(y, t, alpha)
    with timer.step("ipw"):
        ipw = ipw_estimate(y, t, e1, alpha)
        ipw["estimator"] = "hajek"
        ipw["propensities"] = propensities["source"]

    # Design matrices: categorical columns one-hot encoded before DoWhy / EconML (a categorical
    # effect modifier raised KeyError inside DoWhy's EconML wrapper, STACK-NOTES).
    W = encode(data, confounders)
    X = encode(data, modifiers, drop_first=True)
    model_data = pd.concat([pd.DataFrame({T: t, Y: y}), W, X.loc[:, [c for c in X.columns if c not in W.columns]]],
                           axis=1)
    X_np = X.to_numpy() if X.shape[1] else None
    estimand.set_backdoor_variables(list(W.columns), key="backdoor")

    with timer.step("estimate"):
        econml_est = build_econml(config.estimator, seed, int(config.n_folds), len(data), X_np is not None)
        estimate, fitted = fit_dowhy_econml(model_data, estimand, econml_est, T, Y, list(X.columns))
        ate = ate_with_interval(fitted, X_np, alpha)
        ate.update({"estimator": config.estimator, "first_stage": "HistGradientBoosting",
                    "n_folds": int(config.n_folds), "dowhy_value": float(estimate.value)})

    refutations = []
    k = int(config.refuter_simulations)
    for name in config.refuters:
        with timer.step(name):
            if name == "placebo_treatment":
                refutations.append(refuters.placebo_treatment(model_data, estimand, estimate, T, ate, alpha=alpha,
                                                              simulations=k, seed=seed))
            elif name == "random_common_cause":
                refutations.append(refuters.random_common_cause(model_data, estimand, estimate, ate, alpha=alpha,
                                                                simulations=k, seed=seed))
            elif name == "data_subset":
                refutations.append(refuters.data_subset(model_data, estimand, estimate, ate, alpha=alpha,
                                                        simulations=k, seed=seed))
            elif name == "sensitivity":
                groups = refuters.groups_of(list(W.columns), confounders)
                strengths = refuters.confounder_strengths(t, y, groups, W.to_numpy(), seed=seed) if groups else {}
                refutations.append(refuters.sensitivity(fitted, ate, strengths, alpha=alpha, estimator=config.estimator))

    with timer.step("segments"):
        masks = segment_masks(data, segment_cols)
        segments, seg_warnings = segment_effects(fitted, X_np, masks, alpha)
        warnings += seg_warnings
        not_modifiers = [c for c in segment_cols if c not in modifiers]
        if not_modifiers:
            warnings.append("segment column(s) " + ", ".join(not_modifiers) + " are not effect modifiers: their "
                            "segment effects differ only through the effect modifiers' distribution")

    policy_frame, policy_summary = None, None
    if config.learn_policy:
        if X_np is None:
            warnings.append("no policy learned: a policy needs at least one effect modifier")
        else:
            with timer.step("policy"):
                ids = data[config.decision_id_column].to_numpy() if config.decision_id_column in data.columns \
                    else np.arange(len(data))
                if config.decision_id_column not in data.columns:
                    warnings.append(f"no '{config.decision_id_column}' column: the policy uses row numbers as decision ids")
                policy_frame, policy_summary = learn_policy(fitted, X_np, t, ids, alpha=alpha, seed=seed)

    warnings.append(refuters.CAVEAT)
    failed = [r.name for r in refutations if r.passed is False]
    if failed:
        warnings.append("refutation failed: " + ", ".join(failed) + " (see each refutation's rule and numbers)")
    sens = next((r for r in refutations if r.name == "sensitivity"), None)
    if sens is not None and sens.details.get("benchmark_confounder"):
        notes.append(f"sensitivity: robustness value {sens.details['robustness_value']:.3g} (partial R^2 of an "
                     f"unobserved confounder, with both treatment and outcome, that would make the interval include 0); "
                     f"strongest observed confounder {sens.details['benchmark_confounder']} has "
                     f"c_y = {sens.details['c_y']:.3g}, c_t = {sens.details['c_t']:.3g}")
    if abs(ate["value"]) > 0 and naive["value"] != ate["value"]:
        notes.append(f"the naive difference in means ({naive['value']:.4g}) differs from the adjusted estimate "
                     f"({ate['value']:.4g}) by {abs(naive['value'] - ate['value']) / abs(ate['value']):.0%} of it")

    return CausalResult(
        treatment=T, outcome=Y, confounders=confounders, effect_modifiers=modifiers,
        identified_estimand=estimand_text, graph=graphs.graph_to_dict(graph), naive=naive, ipw=ipw, ate=ate,
        refutations=refutations, segments=segments, propensities=propensities, warnings=warnings, notes=notes,
        timings=timer.timings, n_rows=len(data), n_treated=int(t.sum()),
        settings={"estimator": config.estimator, "n_folds": int(config.n_folds), "alpha": alpha, "seed": seed,
                  "refuters": list(config.refuters), "refuter_simulations": k, "n_threads": int(config.n_threads),
                  "segments": segment_cols, "learn_policy": bool(config.learn_policy),
                  "graph": "user" if config.graph is not None else "default live-stream graph"},
        policy_summary=policy_summary, policy=policy_frame,
        diagnostics={"ipw_ess": ipw["ess"], "ipw_max_weight": ipw["max_weight"]},
    )
