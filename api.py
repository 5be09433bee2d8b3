"""The Python API, and the CLI's engine: load and validate inputs, evaluate, run the causal check, gate.

Every input may be a Parquet path (file or directory), a pandas DataFrame or a pyarrow Table; every
step goes through the one validation of `livegate.datasets` and returns a result object with
`to_dict()` (the JSON document), `to_frame()` and a notebook view.

    import livegate
    result = livegate.evaluate(logs_df, {"new_ranker": policy_df}, rewards=["watch_seconds"],
                               estimators=[livegate.SNIPS(), livegate.IPS(clip=50), "dr"])
    result.to_frame()
    decision = livegate.run_gate("gate.toml")      # decision.exit_code: 0 ship, 1 fail, 3 inconclusive
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from livegate.datasets import InputError, Problem, RewardSpec, parse_reward
from livegate.datasets.schema import LogSchema, is_policy_name
from livegate.ope.estimators import EstimatorSpec, as_estimator
from livegate.ope.gate import GateDecision

#: reward columns evaluated when none is named, in this order, as far as the logs have them
DEFAULT_OUTCOMES = ("watch_seconds", "click", "gift_value")

Progress = Callable[..., None]
_quiet: Progress = lambda *_: None  # noqa: E731


@dataclass
class Inputs:
    """Validated inputs of an evaluation: logs, joined policies, rewards, predictions, and where each came
    from (a path, or the kind of in-memory table) for the result's provenance."""

    logs: Any                                   # datasets.LoggedData
    policies: dict[str, Any]                    # name -> datasets.PolicyTable
    rewards: list[RewardSpec]
    q_hat: dict[str, Any]                       # metric -> datasets.RewardPredictions
    sources: dict[str, Any] = field(default_factory=dict)


# --- small parsers shared by the CLI and gate.toml ---------------------------------------------

def parse_named(text: str, flag: str = "--policy") -> tuple[str, str | None]:
    """NAME=PATH, or NAME alone (the compact form: pi_NAME columns of the logs)."""
    name, eq, path = text.partition("=")
    name = name.strip()
    if not is_policy_name(name) or (eq and not path.strip()):
        raise InputError(Problem(flag, f"cannot read '{text}'",
                                 fix=f"write {flag} NAME=PATH (letters, digits, _ . -), e.g. {flag} better=policies/better.parquet"))
    return name, (path.strip() if eq else None)


def parse_reward_ranges(items: Sequence[str] | None) -> dict[str, tuple[float, float]]:
    """METRIC=LOW,HIGH items as {metric: (low, high)}."""
    ranges = {}
    for item in items or []:
        metric, _, bounds = item.partition("=")
        try:
            low, high = (float(b) for b in bounds.split(","))
        except ValueError:
            raise InputError(Problem("--reward-range", f"cannot read '{item}'",
                                     fix="write METRIC=LOW,HIGH, e.g. --reward-range click=0,1")) from None
        if not metric.strip() or not low < high:
            raise InputError(Problem("--reward-range", f"'{item}' needs a metric and LOW < HIGH"))
        ranges[metric.strip()] = (low, high)
    return ranges


def _reward_specs(rewards, available: Sequence[str], named: Mapping[str, RewardSpec], source: str) -> list[RewardSpec]:
    """Rewards as given once: a column, an expression `name=expr`, a RewardSpec, a list of these or a
    {name: expression} mapping; by default the contract's outcome columns the logs have."""
    if isinstance(rewards, (str, RewardSpec)):
        rewards = [rewards]
    elif isinstance(rewards, Mapping):
        rewards = [f"{name}={expr}" for name, expr in rewards.items()]
    from livegate.datasets.rewards import duplicate_problems, shadowing_problems

    problems = shadowing_problems(named.values(), available, "[rewards]")  # gate.toml's named metrics
    if rewards:
        specs = [r if isinstance(r, RewardSpec) else named[r] if r in named else parse_reward(r) for r in rewards]
        problems += duplicate_problems(specs)
        problems += shadowing_problems([s for s in specs if named.get(s.name) is not s], available)
        if problems:
            raise InputError(problems)
        return specs
    if problems:
        raise InputError(problems)
    present = [c for c in DEFAULT_OUTCOMES if c in available]
    if not present:
        raise InputError(Problem(source, f"has none of the default reward columns ({', '.join(DEFAULT_OUTCOMES)})",
                                 fix="name the reward with --reward COLUMN"))
    return [parse_reward(c) for c in present]


def _schema(columns: Mapping[str, str] | LogSchema | None, source: str = "--column") -> LogSchema:
    """The logs' column names: a LogSchema as it is, or roles mapped to the user's own names."""
    if isinstance(columns, LogSchema):
        return columns
    return LogSchema.from_mapping(dict(columns), source=source) if columns else LogSchema()


def _source_name(source, default: str) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else default


# --- loading -----------------------------------------------------------------------------------

def load_inputs(logs, policies: Mapping[str, Any] | None = None, rewards=None, *, q_hat=None,
                context: Sequence[str] | str | None = None, columns: Mapping[str, str] | None = None,
                actions=None, estimate_propensities: bool = False, seed: int = 0,
                named_rewards: Mapping[str, RewardSpec] | None = None, sessions: bool = False,
                progress: Progress = _quiet) -> Inputs:
    """Read and validate logs, policies and predictions (paths, DataFrames or Arrow tables).

    `policies` maps a name to a source, or to None for the compact form (the logs' pi_NAME column);
    `q_hat` is one source (for the first reward) or {metric: source}; `context` lists column names or
    glob patterns (default x_*); `columns` maps roles to the logs' own names, e.g. {"action": "stream_id"}
    (or is a LogSchema). `sessions` reads and validates session_id and step (session-level evaluation).
    """
    from livegate.datasets import (compact_columns, compact_policy, column_names, load_catalogue, load_joins_in_background,
                           load_logs, load_policy, load_q_hat, open_dataset)

    progress("reading logs")
    schema = _schema(columns)
    logs_name = _source_name(logs, "logs")
    available = column_names(open_dataset(logs, logs_name))
    specs = _reward_specs(rewards, available, named_rewards or {}, logs_name)
    policies = dict(policies or {})
    for name in policies:
        if not is_policy_name(name):
            raise InputError(Problem("--policy", f"the policy name '{name}' cannot be used",
                                     fix="name policies with letters, digits, _ . - only"))
    q_hat_sources = q_hat if isinstance(q_hat, Mapping) else ({specs[0].name: q_hat} if q_hat is not None else {})
    joined = [p for p in policies.values() if p is not None]
    if joined or q_hat_sources:
        load_joins_in_background()
    compact = [n for n, p in policies.items() if p is None]
    optional = [c for c in [*compact_columns(compact), "q_hat", "a_category", "category_propensity"] if c in available]
    loaded = load_logs(logs, specs, schema=schema, need_decision_id=bool(joined or q_hat_sources),
                       need_propensity=not estimate_propensities, need_context=True,
                       context=_context_columns(context, available, specs, schema), optional_extra=optional,
                       name=logs_name, need_sessions=sessions)
    if estimate_propensities:
        from livegate.causal import estimate_propensities as estimate

        progress("estimating propensities")
        loaded.propensity = estimate(loaded.context.assign(action=loaded.action), "action",
                                     list(loaded.context.columns), seed=seed, source=logs_name)
        loaded.propensity_source = "estimated"
    if actions is not None:
        load_catalogue(actions, loaded)
    joined_policies, problems = {}, []
    for name, source in policies.items():
        progress(f"joining policy {name}")
        try:
            joined_policies[name] = compact_policy(loaded, name) if source is None else \
                load_policy(source, loaded, name)
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    predictions = {metric: load_q_hat(source, loaded, joined_policies) for metric, source in q_hat_sources.items()}
    sources = {"logs": logs, "policies": {n: p for n, p in policies.items() if p is not None},
               "q_hat": q_hat_sources or None, "actions": actions}
    return Inputs(logs=loaded, policies=joined_policies, rewards=specs, q_hat=predictions, sources=sources)


def _context_columns(context, available: Sequence[str], rewards: Sequence[RewardSpec],
                     schema: LogSchema) -> list[str] | None:
    """Context patterns through the schema's one selection rule (never a key or an outcome column)."""
    if not context:
        return None
    patterns = tuple(c.strip() for c in (context.split(",") if isinstance(context, str) else context) if c.strip())
    outcomes = tuple(c for spec in rewards for c in spec.columns)
    return replace(schema, context=patterns).context_columns(list(available), exclude=outcomes)


def provenance(sources: Mapping[str, Any], seed: int) -> dict:
    """livegate version, seed, and each input's path (or in-memory kind) with a content fingerprint."""
    from livegate.datasets import __version__
    from livegate.datasets.io import fingerprint

    def entry(source):
        if source is None:
            return None
        if isinstance(source, (str, os.PathLike)):
            return {"path": str(source), "fingerprint": fingerprint(source)}
        return {"path": None, "kind": type(source).__name__, "fingerprint": fingerprint(source)}

    return {"livegate_version": __version__, "seed": seed,
            "inputs": {k: ({n: entry(p) for n, p in v.items()} if isinstance(v, Mapping) else entry(v))
                       for k, v in sources.items()}}


# --- evaluate ----------------------------------------------------------------------------------

def evaluate(logs, policies: Mapping[str, Any] | None = None, rewards=None,
             estimators: Sequence[str | EstimatorSpec] | str | None = None, *, q_hat=None,
             ci: str = "normal", alpha: float = 0.05, n_boot: int = 1000, seed: int = 0, baseline: str = "logging",
             folds: int = 3, reward_ranges: Mapping[str, tuple[float, float]] | None = None,
             max_weight: float | None = None, context: Sequence[str] | str | None = None,
             columns: Mapping[str, str] | None = None, actions=None, reward_model=None,
             estimate_propensities: bool = False, sessions: bool = False, gamma: float = 1.0,
             progress: Progress = _quiet):
    """Estimate each policy's value for each reward and estimator, with intervals, diagnostics and the
    paired difference to the baseline (by default the logging policy, which is always listed).

    sessions: evaluate whole viewer sessions (the logs' session_id and step): the value is the expected
    discounted return per session, sum_t gamma^t r_t, and each session is one sample. estimators:
    None for the level's defaults (ips, snips, dr; for sessions pdis, wpdis, wdr).

    logs, each policy, q_hat and actions: a Parquet path, a pandas DataFrame or a pyarrow Table.
    rewards: a column or expression ("engagement=watch_seconds + 50*gift_value"), a list of them or a
    {name: expression} dict. estimators: identifiers ("ips:clip=50") or objects (livegate.IPS(clip=50)).
    reward_model: any scikit-learn regressor (or classifier for 0/1 rewards), cross-fitted for DM/DR.
    Returns an `EvaluationResult` (to_dict(), to_frame()).
    """
    from livegate.ope import EvaluationConfig, evaluate as run

    level = "session" if sessions else "decision"
    if isinstance(estimators, (str, EstimatorSpec)):
        estimators = [e for e in estimators.split(",") if e.strip()] if isinstance(estimators, str) else [estimators]
    config = EvaluationConfig(estimators=None if estimators is None else
                              tuple(as_estimator(e, level).identifier for e in estimators), ci=ci, alpha=alpha,
                              n_boot=n_boot, seed=seed, baseline=baseline, n_folds=folds,
                              reward_ranges=dict(reward_ranges or {}), max_weight=max_weight,
                              reward_model=reward_model, level=level, gamma=gamma)
    config.validate()  # before any data is read
    inputs = load_inputs(logs, policies, rewards, q_hat=q_hat, context=context, columns=columns, actions=actions,
                         estimate_propensities=estimate_propensities, seed=seed, sessions=sessions,
                         progress=progress)
    result = run(inputs.logs, inputs.policies, inputs.rewards, config, q_hat=inputs.q_hat, progress=progress)
    result.provenance = provenance(inputs.sources, seed)
    result.warnings = list(dict.fromkeys([*inputs.logs.warnings, *result.warnings]))
    return result


# --- causal ------------------------------------------------------------------------------------

def read_graph(path: str | os.PathLike):
    """A causal graph file (.gml, or .dot/.gv) as the networkx graph the causal check takes."""
    from livegate.causal.graph import parse_graph

    path = Path(path)
    if not path.is_file():
        raise InputError(Problem(str(path), "does not exist", fix="check the --graph path"))
    fmt = "dot" if path.suffix.lower() in {".dot", ".gv"} else "gml"
    return parse_graph(path.read_text(encoding="utf-8", errors="replace"), fmt)


def causal_check(data, treatment: str, outcome: str, *, confounders: Sequence[str] | None = None,
                 effect_modifiers: Sequence[str] | None = None, graph=None, estimator: str = "linear_dml",
                 folds: int = 3, alpha: float = 0.05, seed: int = 0, segments: Sequence[str] | None = None,
                 propensity: str | None = None, learn_policy: bool = False,
                 columns: Mapping[str, str] | None = None, progress: Progress = _quiet):
    """Estimate the effect of `treatment` (a 0/1 column) on `outcome`, adjusting for confounders (by
    default those of the live-stream graph that the data has), with DoWhy's refutations, EconML's
    effects by segment and, optionally, a learned "treat where it helps" policy.

    data: a Parquet path, a pandas DataFrame or a pyarrow Table. graph: a networkx graph or a path to
    a .gml/.dot file. propensity: a column holding P(treatment = 1 | x), used instead of estimating it.
    Returns a `CausalResult` (to_dict(); `.model` is the fitted EconML estimator).
    """
    from livegate.causal import CausalConfig, run_causal_check
    from livegate.datasets.causal_frame import read_causal_frame

    if graph is not None and isinstance(graph, (str, os.PathLike)):
        graph_path, graph = graph, read_graph(graph)
    else:
        graph_path = None
    config = CausalConfig(treatment=treatment, outcome=outcome, confounders=_tuple(confounders),
                          effect_modifiers=_tuple(effect_modifiers), graph=graph, estimator=estimator,
                          n_folds=folds, alpha=alpha, seed=seed, segments=_tuple(segments),
                          learn_policy=learn_policy, propensity=propensity)
    progress("reading logs")
    frame = read_causal_frame(data, config, schema=_schema(columns))
    result = run_causal_check(frame, config, progress=progress, source=_source_name(data, "logs"))
    result.provenance = provenance({"logs": data, "graph": graph_path}, seed)
    return result


def _tuple(values: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = values.split(",")
    return tuple(v.strip() for v in values if v.strip()) or None


# --- gate --------------------------------------------------------------------------------------

#: the gate.toml key behind each command-line flag that a problem found while gating may name
_GATE_KEYS = {"--estimators": "[evaluation] estimator", "--ci": "[evaluation] ci", "--alpha": "[evaluation] alpha",
              "--n-boot": "[evaluation] n_boot", "--baseline": "[evaluation] baseline",
              "--reward-range": "[reward_range]", "--reward": "[[criterion]] metric", "--policy": "[[candidate]]",
              "--column": "[data.columns]", "--max-weight": "[evaluation] max_weight", "--seed": "[evaluation] seed",
              "[rewards]": "[rewards]", "--gamma": "[evaluation] gamma", "--sessions": "[evaluation] level"}


def run_gate(config, *, progress: Progress = _quiet) -> GateDecision:
    """Decide whether the candidates of a gate configuration may ship.

    config: a gate.toml path or a parsed `GateConfig`. The decision's `exit_code` is 0 (every candidate
    passes), 1 (a criterion fails) or 3 (inconclusive); `to_dict()` is the livegate.gate/1 document.
    Problems in the inputs raise InputError naming gate.toml's keys.
    """
    from livegate.datasets.gate_config import GateConfig, load_gate_config

    cfg = config if isinstance(config, GateConfig) else load_gate_config(config)
    try:
        return _run_gate(cfg, progress)
    except InputError as exc:  # the user wrote gate.toml, not command-line flags: name its keys
        raise InputError([replace(p, source=str(cfg.source), message=f"{_GATE_KEYS[p.source]}: {p.message}")
                          if p.source in _GATE_KEYS else p for p in exc.problems]) from None


def _run_gate(cfg, progress: Progress) -> GateDecision:
    from livegate.ope import EvaluationConfig, evaluate as run
    from livegate.ope.gate import decide

    config = EvaluationConfig(estimators=(cfg.estimator,), ci=cfg.ci, alpha=cfg.alpha, n_boot=cfg.n_boot,
                              seed=cfg.seed, baseline=cfg.baseline, reward_ranges=cfg.reward_ranges,
                              max_weight=cfg.max_weight, level=cfg.level, gamma=cfg.gamma)
    config.validate()  # before reading any data
    _check_causal_requirement(cfg)
    metrics = list(dict.fromkeys(c.metric for c in cfg.criteria))
    inputs = load_inputs(cfg.logs, {c.name: c.policy for c in cfg.candidates}, metrics, q_hat=cfg.q_hat,
                         context=cfg.context, columns=cfg.columns, actions=cfg.actions, seed=cfg.seed,
                         named_rewards=cfg.rewards, sessions=cfg.level == "session", progress=progress)
    evaluation = run(inputs.logs, inputs.policies, inputs.rewards, config, q_hat=inputs.q_hat, progress=progress)
    evaluation.provenance = provenance(inputs.sources, cfg.seed)
    evaluation.warnings = list(dict.fromkeys([*inputs.logs.warnings, *evaluation.warnings]))
    causal_result = verdict = None
    sources = {"config": cfg.source, **inputs.sources}
    if cfg.causal is not None:
        from livegate.causal.requirement import requirement_verdict

        req = cfg.causal
        progress("causal check")
        causal_result = causal_check(req.logs, req.treatment, req.outcome, confounders=req.confounders,
                                     effect_modifiers=req.effect_modifiers, estimator=req.estimator, seed=cfg.seed,
                                     progress=progress)
        verdict = requirement_verdict(causal_result, req.refutations)
        sources["causal_logs"] = req.logs
    decision = decide(evaluation, cfg, verdict)
    decision.evaluation, decision.causal_result = evaluation, causal_result
    decision.provenance = provenance(sources, cfg.seed)
    return decision


def _check_causal_requirement(cfg) -> None:
    """[causal] names checked before any data is read: a misspelt refutation must be a configuration
    error, not a gate that fails because the refutation 'was not run'."""
    if cfg.causal is None:
        return
    from livegate.causal.estimate import ESTIMATORS
    from livegate.causal.refute import REFUTERS

    problems = [Problem(str(cfg.source), f"[causal] refutations: '{name}' is not a refutation",
                        fix=f"use any of {', '.join(REFUTERS)}")
                for name in cfg.causal.refutations or () if name not in REFUTERS]
    if cfg.causal.estimator not in ESTIMATORS:
        problems.append(Problem(str(cfg.source), f"[causal] estimator: '{cfg.causal.estimator}' is unknown",
                                fix=f"use one of {', '.join(ESTIMATORS)}"))
    if problems:
        raise InputError(problems)


# --- outputs -----------------------------------------------------------------------------------

def read_documents(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Result documents (JSON written by evaluate, causal or gate), each checked for its kind's core fields."""
    import json

    from livegate.reports.documents import check_complete

    documents, problems = [], []
    for item in paths:
        path = Path(item)
        try:
            documents.append(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            problems.append(Problem(str(path), "does not exist"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            problems.append(Problem(str(path), f"is not a JSON result document ({type(exc).__name__})",
                                    fix="pass files written by livegate evaluate, causal or gate --out"))
    if problems:
        raise InputError(problems)
    for path, doc in zip(paths, documents):
        check_complete(doc, source=str(path))
    return documents


def write_policy(policy, path: str | os.PathLike, protected: Sequence[str | os.PathLike] = ()) -> Path:
    """A long-format policy DataFrame as Parquet, atomically and never over an input."""
    import io

    from livegate.datasets.io import write_atomic

    buffer = io.BytesIO()
    policy.to_parquet(buffer, index=False)
    return write_atomic(path, buffer.getvalue(), _guard(protected), option="--policy-out")


def _guard(protected) -> frozenset[Path]:
    return frozenset(Path(p).resolve() for p in protected if p is not None and isinstance(p, (str, os.PathLike)))


def write_outputs(documents: Sequence[dict], *, out=None, report=None, markdown=None, junit=None,
                  protected: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Write the first document as JSON and all of them as an HTML report, a Markdown summary and JUnit
    XML, never over an input, as one set: every path is checked first (`check_outputs`, which also
    rejects two options naming the same file), every output is rendered in memory, then all are written
    to temporary files and renamed into place only once all are complete (`write_all_atomic`): on a
    failure no new output appears and the old ones are untouched. Returns the paths written."""
    from livegate.datasets.io import dumps_json, write_all_atomic

    check_outputs(protected=protected, out=out, report=report, markdown=markdown, junit=junit)
    items = []
    if out:
        items.append((out, dumps_json(documents[0]), "--out"))
    renderers = (("render_html", report, documents, "--report"), ("render_markdown", markdown, documents, "--markdown"),
                 ("render_junit", junit, documents[0], "--junit"))
    for renderer, path, what, option in renderers:
        if path:
            from livegate import reports
            items.append((path, getattr(reports, renderer)(what), option))
    return write_all_atomic(items, _guard(protected)) if items else []


def check_outputs(*, protected: Sequence[str | os.PathLike] = (), **paths) -> None:
    """Raise one InputError naming every output path livegate could not write (a directory, a name too
    long for the file system, a path under a file) or that is an input; `paths` are option names
    without dashes (out, report, policy_out, ...), None or "" for outputs not asked for. Call it before
    the work whose results go there."""
    from livegate.datasets.io import check_outputs as check

    check({f"--{key.replace('_', '-')}": path for key, path in paths.items() if path}, _guard(protected))
