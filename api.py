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

import functools
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from livegate.datasets import InputError, Problem, RewardSpec, parse_reward
from livegate.datasets.gate_config import DEFAULT_CI
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
    from livegate.datasets import load_catalogue, load_joins_in_background

    progress("reading logs")
    request, logs_name, policies, q_hat_sources = _load_request(
        logs, policies, rewards, q_hat, context=context, columns=columns, named_rewards=named_rewards,
        sessions=sessions, estimate_propensities=estimate_propensities)
    if request.joined:
        load_joins_in_background()

    def before_join(loaded) -> None:
        if estimate_propensities:
            from livegate.causal import estimate_propensities as estimate

            progress("estimating propensities")
            loaded.propensity = estimate(loaded.context.assign(action=loaded.action), "action",
                                         list(loaded.context.columns), seed=seed, source=logs_name)
            loaded.propensity_source = "estimated"
        if actions is not None:
            load_catalogue(actions, loaded)

    loaded, joined_policies, predictions = load_joined(logs, policies, q_hat_sources, request, logs_name=logs_name,
                                                       before_join=before_join, progress=progress)
    sources = {"logs": logs, "policies": {n: p for n, p in policies.items() if p is not None},
               "q_hat": q_hat_sources or None, "actions": actions}
    return Inputs(logs=loaded, policies=joined_policies, rewards=list(request.rewards), q_hat=predictions,
                  sources=sources)


@dataclass(frozen=True)
class LoadRequest:
    """What the logs' loader reads and which policies and predictions are joined to them: the one
    request that `load_inputs` (all the logs) and every partition of a streamed evaluation (its share
    of them, on this machine or a Dask worker: it pickles) hand the datasets' loaders and their one
    validation."""

    rewards: tuple[RewardSpec, ...]
    schema: LogSchema
    #: (name, the policy file's label in messages, None for the compact pi_NAME column), in the user's order
    policies: tuple[tuple[str, str | None], ...]
    #: (metric, the predictions' label in messages)
    q_hat: tuple[tuple[str, str], ...] = ()
    need_decision_id: bool = False
    need_propensity: bool = True
    need_context: bool = True
    context: tuple[str, ...] | None = None
    optional_extra: tuple[str, ...] = ()
    sessions: bool = False
    #: the log columns a partition reads (streaming only: read_partition's `columns`)
    columns: tuple[str, ...] = ()

    @property
    def joined(self) -> bool:
        """Whether any file is joined to the logs by decision (a long-format policy or predictions)."""
        return any(label is not None for _, label in self.policies) or bool(self.q_hat)


def _load_request(logs, policies, rewards, q_hat, *, context, columns, named_rewards, sessions,
                  estimate_propensities, streaming: bool = False, modelled: Sequence[str] = ()):
    """(LoadRequest, the logs' name, policies {name: source}, predictions {metric: source}) of the
    inputs as given; reads only the logs' column names. `streaming`: read the decision ids whenever the
    logs have them (bootstrap keys, partition boundaries), the context only when a reward model is fitted
    on a sample (`modelled`, the estimators that need one, and a metric without predictions), and plan
    the columns a partition reads."""
    from livegate.datasets import column_names, compact_columns, open_dataset

    schema = _schema(columns)
    logs_name = _source_name(logs, "logs")
    available = column_names(open_dataset(logs, logs_name))
    specs = _reward_specs(rewards, available, named_rewards or {}, logs_name)
    policies = dict(policies or {})
    for name in policies:
        if not is_policy_name(name):
            raise InputError(Problem("--policy", f"the policy name '{name}' cannot be used",
                                     fix="name policies with letters, digits, _ . - only"))
    q_hat_sources = dict(q_hat) if isinstance(q_hat, Mapping) else \
        ({specs[0].name: q_hat} if q_hat is not None else {})
    joined = any(p is not None for p in policies.values()) or bool(q_hat_sources)
    # a streamed DM/DR without predictions fits its reward model on a sample of decisions (ope/streaming.py)
    fit_model = streaming and bool(modelled) and "q_hat" not in available \
        and any(spec.name not in q_hat_sources for spec in specs)
    if fit_model and schema.decision_id not in available:
        raise InputError(Problem(logs_name, f"has no {schema.decision_id} column: a streamed evaluation fits the "
                                 f"reward model of {', '.join(modelled)} on a sample of decisions and assigns its "
                                 "folds by decision id",
                                 fix=f"add a {schema.decision_id} column, give --q-hat predictions, or "
                                     f"{_IN_MEMORY_FIX}"))
    compact = [n for n, p in policies.items() if p is None]
    optional = [c for c in [*compact_columns(compact), "q_hat", "a_category", "category_propensity"] if c in available]
    request = LoadRequest(
        rewards=tuple(specs), schema=schema,
        policies=tuple((n, None if p is None else _source_name(p, f"policy {n}")) for n, p in policies.items()),
        q_hat=tuple((m, _source_name(p, f"predictions {m}")) for m, p in q_hat_sources.items()),
        need_decision_id=joined or fit_model or (streaming and schema.decision_id in available),
        need_propensity=not estimate_propensities, need_context=not streaming or fit_model,
        context=None if streaming and not fit_model else _tuple_or_none(_context_columns(context, available, specs,
                                                                                         schema)),
        optional_extra=tuple(optional), sessions=sessions)
    if streaming:
        from livegate.datasets.logs import _plan_columns

        plan = _plan_columns(available, schema, specs, need_decision_id=request.need_decision_id,
                             need_propensity=request.need_propensity, need_context=request.need_context,
                             context=request.context, extra=(),
                             optional_extra=request.optional_extra, need_sessions=sessions)
        wanted = [*plan.required, *(c for c in plan.optional if c in available)]
        request = replace(request, columns=tuple(dict.fromkeys(wanted)))
    return request, logs_name, policies, q_hat_sources


#: (row, stream) pairs a streamed reward model predicts per log row, for the partitions' memory estimate: the
#: logged stream and a few candidate streams (measured: 7-8 on the benchmarks' data)
_PREDICTED_PAIRS_PER_ROW = 8


def _tuple_or_none(values) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def load_joined(logs, policies: Mapping[str, Any], q_hat: Mapping[str, Any], request: LoadRequest, *,
                logs_name: str, labels: Mapping[str, str] | None = None, before_join: Callable | None = None,
                progress: Progress = _quiet):
    """The one loader call: the logs as `request` says (load_logs), then each policy joined (the compact
    pi_NAME column when its source is None, else load_policy), then each metric's predictions
    (load_q_hat); `before_join(loaded)` runs between the logs and the joins. Sources are paths or
    in-memory tables (a partition's); `labels` names a policy's or a metric's source in messages
    (default: its path). Returns (LoggedData, {name: PolicyTable}, {metric: RewardPredictions});
    raises one InputError with every problem of the policies."""
    from livegate.datasets import compact_policy, load_logs, load_policy, load_q_hat

    labels = labels or {}
    loaded = load_logs(logs, list(request.rewards), schema=request.schema, need_decision_id=request.need_decision_id,
                       need_propensity=request.need_propensity, need_context=request.need_context,
                       context=None if request.context is None else list(request.context),
                       optional_extra=list(request.optional_extra), name=logs_name, need_sessions=request.sessions)
    if before_join is not None:
        before_join(loaded)
    joined_policies, problems = {}, []
    for name, source in policies.items():
        progress(f"joining policy {name}")
        try:
            joined_policies[name] = compact_policy(loaded, name) if source is None else \
                load_policy(source, loaded, name, source_label=labels.get(name))
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    predictions = {metric: load_q_hat(source, loaded, joined_policies, name=labels.get(f"q_hat:{metric}"))
                   for metric, source in q_hat.items()}
    return loaded, joined_policies, predictions


def load_partition(partition, request: LoadRequest) -> Inputs:
    """One partition of a streamed evaluation, read (datasets.partitions.read_partition) and loaded by
    `load_joined` exactly as the whole logs are in memory: module-level, so that it pickles to Dask
    workers with `functools.partial(load_partition, request=...)`."""
    from livegate.datasets.partitions import read_partition

    tables = read_partition(partition, request.columns)
    where = tables.source
    policies = {name: None if label is None else tables.policies[name] for name, label in request.policies}
    q_hat = {metric: tables.q_hat[metric] for metric, _ in request.q_hat}
    labels = {**{name: f"{label} (the rows of {where})" for name, label in request.policies if label is not None},
              **{f"q_hat:{metric}": f"{label} (the rows of {where})" for metric, label in request.q_hat}}
    loaded, joined, predictions = load_joined(tables.logs, policies, q_hat, request, logs_name=where, labels=labels)
    return Inputs(logs=loaded, policies=joined, rewards=list(request.rewards), q_hat=predictions)


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
             ci: str = DEFAULT_CI, alpha: float = 0.05, n_boot: int = 1000, seed: int = 0, baseline: str = "logging",
             folds: int = 3, reward_ranges: Mapping[str, tuple[float, float]] | None = None,
             max_weight: float | None = None, context: Sequence[str] | str | None = None,
             columns: Mapping[str, str] | None = None, actions=None, reward_model=None,
             estimate_propensities: bool = False, sessions: bool = False, gamma: float = 1.0,
             max_memory: int | str | None = None, scheduler: str | None = None, progress: Progress = _quiet):
    """Estimate each policy's value for each reward and estimator, with intervals, diagnostics and the
    paired difference to the baseline (by default the logging policy, which is always listed).

    sessions: evaluate whole viewer sessions (the logs' session_id and step): the value is the expected
    discounted return per session, sum_t gamma^t r_t, and each session is one sample. estimators:
    None for the level's defaults (ips, snips, dr; for sessions drl, wdr, pdis).

    logs, each policy, q_hat and actions: a Parquet path, a pandas DataFrame or a pyarrow Table.
    rewards: a column or expression ("engagement=watch_seconds + 50*gift_value"), a list of them or a
    {name: expression} dict. estimators: identifiers ("ips:clip=50") or objects (livegate.IPS(clip=50));
    "auto" chooses one per policy and metric from the data and reports why (ope/selection.py).
    reward_model: any scikit-learn regressor (or classifier for 0/1 rewards), cross-fitted for DM/DR.

    max_memory, scheduler: evaluate in bounded memory (docs/streaming.md): the logs (a Parquet file or
    directory) are cut into partitions of whole decisions that fit `max_memory` (bytes, or text such
    as "1GB"; default a quarter of the available memory), each reduced to mergeable sums, in this
    process or, with `scheduler` ("tcp://HOST:PORT" or "local"), on a Dask cluster. The numbers equal
    the in-memory path's; the document gains `data["engine"]`. Closed-form estimators only (ips,
    snips, dm, dr, sndr, switch-dr, dr-os). DM and DR read predictions from `q_hat` or the logs' q_hat
    columns, or else a reward model (the built-in one or `reward_model`, which must pickle for Dask)
    cross-fitted once on a sample of about 1e6 rows of whole decisions and applied to every partition:
    exact given the model, approximate only in that the model saw a sample (docs/streaming.md).
    Returns an `EvaluationResult` (to_dict(), to_frame()).
    """
    from livegate.ope import EvaluationConfig, evaluate as run

    level = "session" if sessions else "decision"
    if isinstance(estimators, (str, EstimatorSpec)):
        estimators = [e for e in estimators.split(",") if e.strip()] if isinstance(estimators, str) else [estimators]
    config = EvaluationConfig(estimators=None if estimators is None else
                              tuple(_estimator_identifier(e, level) for e in estimators), ci=ci, alpha=alpha,
                              n_boot=n_boot, seed=seed, baseline=baseline, n_folds=folds,
                              reward_ranges=dict(reward_ranges or {}), max_weight=max_weight,
                              reward_model=reward_model, level=level, gamma=gamma)
    config.validate()  # before any data is read
    if max_memory is not None or scheduler is not None:
        return _evaluate_streaming(logs, policies, rewards, config, q_hat=q_hat, columns=columns,
                                   max_memory=max_memory, scheduler=scheduler, progress=progress, context=context,
                                   refused={"--actions": actions is not None, "--estimate-propensities":
                                            estimate_propensities, "--sessions": sessions})[0]
    inputs = load_inputs(logs, policies, rewards, q_hat=q_hat, context=context, columns=columns, actions=actions,
                         estimate_propensities=estimate_propensities, seed=seed, sessions=sessions,
                         progress=progress)
    result = run(inputs.logs, inputs.policies, inputs.rewards, config, q_hat=inputs.q_hat, progress=progress)
    result.provenance = provenance(inputs.sources, seed)
    result.warnings = list(dict.fromkeys([*inputs.logs.warnings, *result.warnings]))
    return result


#: why each option is not available with streaming evaluation
_NOT_STREAMED = {
    "--sessions": "session-level evaluation needs each session's rows together and fitted models",
    "--estimate-propensities": "estimating propensities fits one model on all the logs",
    "--actions": "the action catalogue is applied to the logs in memory",
}
_IN_MEMORY_FIX = "drop --max-memory and --scheduler to evaluate in memory"


def _evaluate_streaming(logs, policies, rewards, config, *, q_hat, columns, max_memory, scheduler,
                        progress: Progress, refused: Mapping[str, bool] | None = None, named_rewards=None,
                        extra_contrasts=None, in_memory_fix: str = _IN_MEMORY_FIX, context=None):
    """The streamed evaluation (docs/streaming.md): plan partitions of whole decisions that fit the
    memory budget (datasets.partitions), load each with the in-memory loaders (`load_partition`),
    reduce and merge them (ope.streaming), here or on Dask (ope.execution). Same result and provenance
    as the in-memory path, plus data["engine"]. DM/DR without predictions read the context columns
    (`context`, default x_*) and fit their reward model on a sample (ope.streaming). Returns (result,
    its sources for the provenance)."""
    from livegate.datasets.partitions import default_max_memory, parse_memory, plan_stream

    from livegate.ope.execution import check_address

    problems = [Problem(option, f"cannot be used with streaming evaluation: {_NOT_STREAMED[option]}",
                        fix=in_memory_fix) for option, given in (refused or {}).items() if given]
    budget = parse_memory(max_memory) if max_memory is not None else default_max_memory()
    if scheduler is not None:
        try:
            check_address(scheduler)
        except InputError as exc:
            problems += exc.problems
        if config.reward_model is not None:  # the fitted model travels to the workers
            try:
                pickle.dumps(config.reward_model)
            except Exception as exc:  # noqa: BLE001 (whatever pickling raises)
                problems.append(Problem("reward_model", f"cannot be pickled ({type(exc).__name__}: {exc}), and on "
                                        "Dask the model fitted on the sample is sent to the workers",
                                        fix="use a picklable scikit-learn estimator (no lambdas or local classes), "
                                            "or drop --scheduler to stream on this machine"))
    inputs = {"logs": logs, **{f"policy {n}": p for n, p in (policies or {}).items() if p is not None},
              **({f"q_hat {m}": p for m, p in q_hat.items()} if isinstance(q_hat, Mapping) else
                 {"q_hat": q_hat} if q_hat is not None else {})}
    problems += [Problem(_source_name(source, name), f"is a {type(source).__name__}: streaming evaluation reads "
                         "Parquet files (a file or a directory of them)",
                         fix=f"write it to Parquet and pass the path, or {in_memory_fix}")
                 for name, source in inputs.items() if not isinstance(source, (str, os.PathLike))]
    if problems:
        raise InputError(problems)
    from livegate.ope.execution import describe_executor, make_executor
    from livegate.ope.streaming import check_streamable, evaluate_stream

    specs = check_streamable(config)  # before the plan (which may write buckets) and the cluster
    progress("reading logs")
    request, logs_name, policies, q_hat_sources = _load_request(
        logs, policies, rewards, q_hat, context=context, columns=columns, named_rewards=named_rewards,
        sessions=False, estimate_propensities=False, streaming=True,
        modelled=[s.identifier for s in specs if s.needs_model])
    if scheduler is not None:
        progress("connecting to the Dask scheduler" if scheduler != "local" else "starting a local Dask cluster")
    # before any data is read: an unreachable scheduler is an error within its timeout
    execute = make_executor(scheduler)
    # a partition whose reward model predicts also holds each (row, stream) pair's feature row and prediction
    from livegate.datasets.partitions import DEFAULT_PER_ROW_BYTES
    per_row_bytes = DEFAULT_PER_ROW_BYTES + (_PREDICTED_PAIRS_PER_ROW * 8 * (len(request.columns) + 2)
                                             if request.need_context else 0)
    try:
        with plan_stream(logs, {n: None if p is None else str(p) for n, p in policies.items()},
                         {m: str(p) for m, p in q_hat_sources.items()}, schema=request.schema,
                         columns=request.columns, max_memory=budget, per_row_bytes=per_row_bytes,
                         progress=progress) as plan:
            load = functools.partial(load_partition, request=request)
            # a context read in the partitions means a reward model to fit: for the metrics without q-hat
            unpredicted = [s.name for s in request.rewards if s.name not in dict(request.q_hat)] \
                if request.need_context else []
            result = evaluate_stream(plan.partitions, load, list(request.rewards), config, execute=execute,
                                     extra_contrasts=extra_contrasts, progress=progress, n_rows=plan.n_rows,
                                     model_metrics=unpredicted)
            engine = result.data.setdefault("engine", {})
            engine.update({**describe_executor(execute), **{k: v for k, v in engine.items() if k != "mode"},
                           "plan": plan.to_dict()})
    finally:
        close = getattr(execute, "close", None)
        if close is not None:
            close()
    sources = {"logs": logs, "policies": {n: p for n, p in policies.items() if p is not None},
               "q_hat": q_hat_sources or None, "actions": None}
    result.provenance = provenance(sources, config.seed)
    return result, sources


def _estimator_identifier(estimator: str | EstimatorSpec, level: str) -> str:
    """The identifier of an estimator; "auto" (the automatic choice) is no single estimator and
    passes as it is (EvaluationConfig.validate checks it)."""
    if isinstance(estimator, str) and estimator.strip() == "auto":
        return "auto"
    return as_estimator(estimator, level).identifier


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
                 columns: Mapping[str, str] | None = None, estimand: str = "ate", trim: float | str | None = None,
                 sample_rows: int | None = None, progress: Progress = _quiet):
    """Estimate the effect of `treatment` (a 0/1 column) on `outcome`, adjusting for confounders (by
    default those of the live-stream graph that the data has), with DoWhy's refutations, EconML's
    effects by segment and, optionally, a learned "treat where it helps" policy.

    data: a Parquet path, a pandas DataFrame or a pyarrow Table. graph: a networkx graph or a path to
    a .gml/.dot file. propensity: a column holding P(treatment = 1 | x), used instead of estimating it.
    estimand: "ate" (all rows), "att" (the treated), "atc" (the untreated) or "ato" (the overlap
    population). trim: None, a threshold a in (0, 0.5) (rows with P(treatment=1|x) outside [a, 1-a]
    are dropped, counted by arm) or "crump" (Crump et al. 2009's threshold). sample_rows: run on a
    proportional stratified sample of about this many rows (by treatment arm, and by a 0/1 outcome's
    value), read row group by row group in bounded memory and recorded as `sampling` in the result
    (datasets/causal_sample.py); None: the whole table.
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
                          learn_policy=learn_policy, propensity=propensity, estimand=estimand, trim=trim)
    progress("reading logs")
    if sample_rows is None:
        frame, sampling = read_causal_frame(data, config, schema=_schema(columns)), None
    else:
        from livegate.datasets.causal_sample import read_causal_sample
        frame, sampling = read_causal_sample(data, config, sample_rows, schema=_schema(columns),
                                             name=_source_name(data, "logs"))
    result = run_causal_check(frame, config, progress=progress, source=_source_name(data, "logs"))
    from livegate.causal import attach_sampling
    attach_sampling(result, sampling, sample_rows)
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
              "[rewards]": "[rewards]", "--gamma": "[evaluation] gamma", "--sessions": "[evaluation] level",
              "--actions": "[data] actions", "--max-memory": "[engine] max_memory", "--scheduler": "[engine] scheduler",
              "sample_rows": "[causal] sample_rows"}


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
        keys = _gate_keys(cfg)
        raise InputError([replace(p, source=str(cfg.source), message=f"{keys[p.source]}: {p.message}")
                          if p.source in keys else p for p in exc.problems]) from None


def _gate_keys(cfg) -> dict[str, str]:
    """_GATE_KEYS, but for [engine]'s settings only those gate.toml holds: `livegate gate --scheduler`
    and `--max-memory` override the file, and a problem with them names the flag."""
    engine = cfg.raw.get("engine", {}) if isinstance(cfg.raw, dict) else {}
    engine = engine if isinstance(engine, dict) else {}
    keys = dict(_GATE_KEYS)
    for flag, key in (("--scheduler", "scheduler"), ("--max-memory", "max_memory")):
        if key not in engine or getattr(cfg, key) != _engine_value(engine[key], key):
            keys.pop(flag)
    return keys


def _engine_value(value, key: str):
    if key == "scheduler":
        return value.strip() if isinstance(value, str) else value
    from livegate.datasets.partitions import parse_memory
    try:
        return parse_memory(value)
    except InputError:
        return None


def _run_gate(cfg, progress: Progress) -> GateDecision:
    from livegate.ope import EvaluationConfig, evaluate as run
    from livegate.ope.gate import decide

    config = EvaluationConfig(estimators=(cfg.estimator,), ci=cfg.ci, alpha=cfg.alpha, n_boot=cfg.n_boot,
                              seed=cfg.seed, baseline=cfg.baseline, reward_ranges=cfg.reward_ranges,
                              max_weight=cfg.max_weight, level=cfg.level, gamma=cfg.gamma)
    config.validate()  # before reading any data
    _check_causal_requirement(cfg)
    metrics = list(dict.fromkeys(c.metric for c in cfg.criteria))
    candidates = {c.name: c.policy for c in cfg.candidates}
    if cfg.max_memory is not None or cfg.scheduler is not None:  # [engine]: streamed (docs/streaming.md)
        evaluation, evaluation_sources = _evaluate_streaming(
            cfg.logs, candidates, metrics, config, q_hat=cfg.q_hat, columns=cfg.columns, max_memory=cfg.max_memory,
            scheduler=cfg.scheduler, progress=progress, named_rewards=cfg.rewards, context=cfg.context,
            refused={"--actions": cfg.actions is not None, "--sessions": cfg.level == "session"},
            extra_contrasts=functools.partial(gate_contrasts, cfg),
            in_memory_fix="remove [engine] (and --max-memory, --scheduler) to evaluate in memory")
        sources = {"config": cfg.source, **evaluation_sources}
    else:
        inputs = load_inputs(cfg.logs, candidates, metrics, q_hat=cfg.q_hat,
                             context=cfg.context, columns=cfg.columns, actions=cfg.actions, seed=cfg.seed,
                             named_rewards=cfg.rewards, sessions=cfg.level == "session", progress=progress)
        evaluation = run(inputs.logs, inputs.policies, inputs.rewards, config, q_hat=inputs.q_hat, progress=progress)
        evaluation.provenance = provenance(inputs.sources, cfg.seed)
        evaluation.warnings = list(dict.fromkeys([*inputs.logs.warnings, *evaluation.warnings]))
        sources = {"config": cfg.source, **inputs.sources}
    causal_result = verdict = None
    if cfg.causal is not None:
        from livegate.causal.requirement import requirement_verdict

        req = cfg.causal
        progress("causal check")
        causal_result = causal_check(req.logs, req.treatment, req.outcome, confounders=req.confounders,
                                     effect_modifiers=req.effect_modifiers, estimator=req.estimator, seed=cfg.seed,
                                     estimand=req.estimand, trim=req.trim, sample_rows=req.sample_rows,
                                     progress=progress)
        verdict = requirement_verdict(causal_result, req.refutations)
        sources["causal_logs"] = req.logs
    decision = decide(evaluation, cfg, verdict)
    decision.evaluation, decision.causal_result = evaluation, causal_result
    decision.provenance = provenance(sources, cfg.seed)
    return decision


def gate_contrasts(cfg, evaluation) -> list[tuple[str, list[tuple[str, str]], list[float]]]:
    """The contrasts the gate's criteria test besides each candidate's paired difference (which every
    evaluation computes), as (metric, keys, coefficients): a relative criterion tests candidate -
    (1 + r s) baseline (ope.gate._criterion_contrast), whose coefficients need the baseline's estimate.
    A streamed evaluation (`extra_contrasts`) gets them after its first pass, so that its second pass
    computes their tail shapes (robust intervals) too."""
    from livegate.ope.gate import _criterion_contrast

    contrasts = []
    for crit in cfg.criteria:
        by_policy = evaluation.metrics.get(crit.metric, {})
        estimate = by_policy[cfg.baseline].estimates.get(cfg.estimator) if cfg.baseline in by_policy else None
        if not crit.relative or estimate is None or estimate.get("value") is None:
            continue
        baseline_value = estimate["value"]
        for cand in cfg.candidates:
            keys, coefs, _, _ = _criterion_contrast(crit, cand.name, cfg.baseline, cfg.estimator,
                                                    crit.bound(baseline_value), baseline_value)
            contrasts.append((crit.metric, keys, coefs))
    return contrasts


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
    from livegate.causal.estimands import ESTIMANDS
    if cfg.causal.estimand not in ESTIMANDS:
        problems.append(Problem(str(cfg.source), f"[causal] estimand: '{cfg.causal.estimand}' is unknown",
                                fix=f"use one of {', '.join(ESTIMANDS)} (all rows, the treated, the untreated, the "
                                    "overlap population)"))
    if problems:
        raise InputError(problems)


# --- learn -------------------------------------------------------------------------------------

@dataclass
class LearnResult:
    """A policy learned from the logs (`livegate learn`): `policy` (long-format DataFrame), the
    `metadata` its Parquet file carries (the training rows), the held-out and in-sample evaluations,
    the held-out logs (`heldout_logs`, a pyarrow Table) and `to_dict()`, the livegate.learn/1 document."""

    name: str
    policy: Any
    metadata: dict
    document: dict
    heldout_logs: Any
    fitted: Any = None
    heldout: Any = None
    in_sample: Any = None

    def to_dict(self) -> dict:
        return self.document

    def policy_table(self):
        """The policy as a pyarrow Table with its `livegate.learn` schema metadata."""
        import pyarrow as pa
        table = pa.Table.from_pandas(self.policy, preserve_index=False)
        return table.replace_schema_metadata({**(table.schema.metadata or {}), **self.metadata})


def _read_logs_with_context(logs, rewards, context, columns, **need):
    """(loaded logs, reward specs, the logs' name, schema, dataset, its column names) for the learners
    and the replay: the logs with their context columns and the rewards asked for (default: those of
    the contract present)."""
    from livegate.datasets import column_names, load_logs, open_dataset
    schema = _schema(columns)
    logs_name = _source_name(logs, "logs")
    dataset = open_dataset(logs, logs_name)
    available = column_names(dataset)
    specs = _reward_specs(rewards, available, {}, logs_name)
    loaded = load_logs(dataset, specs, schema=schema, need_context=True,
                       context=_context_columns(context, available, specs, schema), name=logs_name, **need)
    return loaded, specs, logs_name, schema, dataset, available


def learn(logs, rewards=None, method: str = "dr", *, epsilon: float = 0.1, top_k: int | None = None,
          candidates=None, for_logs=None, for_candidates=None, split: str = "random", test_share: float = 0.3, seed: int = 0,
          estimators: Sequence[str] | str | None = None, folds: int = 3, prefilter: int = 50, gamma: float = 1.0,
          name: str = "learned", context: Sequence[str] | str | None = None,
          columns: Mapping[str, str] | None = None, reward_model=None, progress: Progress = _quiet) -> LearnResult:
    """Learn a policy from the logs with `method` (plugin, dr, poem, fqi, pessimistic-fqi; `ope/learn/`), on a seeded
    part of the decisions (`split` random: a hash of the decision id; time: the earliest ones), and
    evaluate it on the held-out rest with `estimators` (and, labelled in-sample, on its training rows).

    rewards: the reward it maximises (the first one) and those it is evaluated on. candidates: a table
    (decision_id, action) of the streams each decision could have shown (default: the logs' streams,
    narrowed to the reward model's `prefilter` best). epsilon: exploration floor spread over the kept
    streams; top_k: keep only each decision's k most probable streams. for_logs: write the policy for
    the decisions of these logs (same context columns) instead of the training logs', choosing among
    `for_candidates` (default: `candidates`).

    Sessions (method fqi or pessimistic-fqi): the logs are viewer sessions (session_id, step), split
    by session, the policy maximises the return per session discounted by `gamma`, and the held-out
    evaluation is per session. estimators: default snips,dr (per decision) or the session defaults.
    """
    import numpy as np

    from livegate.ope import learn as L

    spec = L.parse_method(method)
    sessions = spec.name in L.SESSION_METHODS
    problems = []
    if not 0 < gamma <= 1:
        problems.append(Problem("--gamma", f"{gamma} is not in (0, 1]"))
    if not 0 <= epsilon <= 1:
        problems.append(Problem("--epsilon", f"{epsilon} is not in [0, 1]", fix="e.g. --epsilon 0.1"))
    if top_k is not None and top_k < 1:
        problems.append(Problem("--top-k", f"{top_k} is not a positive integer"))
    if not is_policy_name(name):
        problems.append(Problem("--name", f"'{name}' cannot name a policy", fix="letters, digits, _ . - only"))
    if problems:
        raise InputError(problems)
    progress("reading logs")
    loaded, specs, logs_name, schema, dataset, available = _read_logs_with_context(
        logs, rewards, context, columns, need_decision_id=True, need_sessions=sessions)
    if loaded.n_context_columns == 0:
        raise InputError(Problem(logs_name, "has no context columns to learn from",
                                 fix="add x_* columns, or name them with --context"))
    reward = loaded.reward(specs[0])
    n_actions = len(loaded.actions)
    # the split is by decision (all positions of a decision land on the same side) or by session
    unit_of_row, unit_ids = (_session_of_rows(loaded.sessions), loaded.sessions.ids) if sessions else \
        (loaded.decision_code, loaded.decision_ids)
    first_row = np.unique(unit_of_row, return_index=True)[1]
    unit_time = None if loaded.timestamp is None else loaded.timestamp[first_row]
    train_unit, split_record = L.split_units(unit_ids, rule=split, test_share=test_share, seed=seed,
                                             timestamps=unit_time)
    train_rows = np.flatnonzero(train_unit[unit_of_row])
    train_decision = np.zeros(len(loaded.decision_ids), dtype=bool)
    train_decision[loaded.decision_code[train_rows]] = True
    cand_all = _learn_candidates(candidates, loaded, logs_name, with_logged=True)
    context_frame = loaded.context
    full_model = None
    if cand_all is None:  # every logged stream, narrowed by the reward model when there are many
        rows = np.repeat(np.arange(loaded.n), n_actions)
        cand_all = L.Candidates.from_pairs(rows, np.tile(np.arange(n_actions), loaded.n), loaded.n) \
            if n_actions <= prefilter else None
        if cand_all is None:
            progress("fitting the reward model to narrow the candidate streams")
            full_model = L.RewardModel(context_frame.iloc[train_rows].reset_index(drop=True),
                                       loaded.action_code[train_rows], n_actions, reward[train_rows],
                                       loaded.action_features, seed, reward_model)
            cand_all = _prefiltered(full_model, context_frame, loaded, n_actions, prefilter)
    train_cand = cand_all.subset(train_rows)
    progress(f"learning ({spec.identifier})")
    train_context = context_frame.iloc[train_rows].reset_index(drop=True)
    if sessions:
        # the next step of each training row, as an index into the training rows (a session is
        # wholly on one side of the split)
        next_row = _next_rows(loaded.sessions)[train_rows]
        position = np.full(loaded.n, -1)
        position[train_rows] = np.arange(len(train_rows))
        fitted = L.fit_fqi(spec, train_context, loaded.action_code[train_rows], reward[train_rows],
                           np.where(next_row >= 0, position[np.maximum(next_row, 0)], -1), n_actions, gamma=gamma,
                           seed=seed, model=reward_model)
    else:
        fitted = L.learn(spec, train_context, loaded.action_code[train_rows], loaded.propensity[train_rows],
                         reward[train_rows], train_cand, n_actions, action_features=loaded.action_features,
                         groups=loaded.decision_code[train_rows], seed=seed, n_folds=folds,
                         reward_model=reward_model, full_model=full_model)
    progress("writing the policy")
    logged_policy = policy = _policy_frame(fitted, context_frame, cand_all, loaded, epsilon, top_k)
    if for_logs is not None:
        target = _target_logs(for_logs, loaded, schema)
        target_cand = _learn_candidates(candidates if for_candidates is None else for_candidates, target,
                                        _source_name(for_logs, "--for logs"), with_logged=False, codes_of=loaded)
        if target_cand is None:
            target_cand = (_prefiltered(full_model, target.context, target, n_actions, prefilter) if full_model
                           else L.Candidates.from_pairs(np.repeat(np.arange(target.n), n_actions),
                                                        np.tile(np.arange(n_actions), target.n), target.n))
        policy = _policy_frame(fitted, target.context, target_cand, target, epsilon, top_k, actions=loaded.actions)
    metadata = L.policy_metadata(spec, {**split_record, "unit": "session_id" if sessions else "decision_id"},
                                 loaded.decision_ids[train_decision], epsilon=epsilon,
                                 top_k=top_k, rewards=[s.name for s in specs])
    # the held-out and training logs, as rows of the file: evaluate reads them like any logs
    table = dataset.to_table(available)
    id_column = table.column(schema.decision_id).to_numpy(zero_copy_only=False)
    trained = np.isin(id_column, loaded.decision_ids[train_decision])
    heldout_logs, train_logs = table.filter(~trained), table.filter(trained)
    if estimators is None and not sessions:
        estimators = ("snips", "dr")
    common = dict(rewards=specs, estimators=estimators, seed=seed, folds=folds, context=context, columns=columns,
                  sessions=sessions, **({"gamma": gamma} if sessions else {}))
    progress("evaluating on the held-out decisions")
    heldout = evaluate(heldout_logs, {name: logged_policy}, progress=progress, **common)
    progress("evaluating on the training decisions (in-sample)")
    in_sample = evaluate(train_logs, {name: logged_policy}, progress=progress, **common)
    counts = np.diff(cand_all.start)
    document = {
        "schema": L.SCHEMA, "policy_name": name, "method": spec.identifier, "reward": specs[0].name,
        "metric_definitions": {s.name: s.expression for s in specs},
        "epsilon": epsilon, "top_k": top_k,
        "candidates": {"source": "given" if candidates is not None else
                       ("logged streams" if n_actions <= prefilter else f"reward model's best {prefilter}"),
                       "mean_per_decision": float(counts.mean())},
        "level": "session" if sessions else "decision", "gamma": gamma if sessions else None,
        "fqi": {"sweeps": fitted.iterations_run, "converged": fitted.converged} if sessions else None,
        "split": {**split_record, "unit": "session_id" if sessions else "decision_id",
                  "train": {"decisions": int(train_decision.sum()), "rows": int(len(train_rows)),
                            **({"sessions": int(train_unit.sum())} if sessions else {})},
                  "heldout": {"decisions": int((~train_decision).sum()), "rows": int(loaded.n - len(train_rows)),
                              **({"sessions": int((~train_unit).sum())} if sessions else {})},
                  "trained_rows": "the decisions of the train part; their ids are in the policy file's "
                                  "Parquet metadata (livegate.learn), and evaluating the policy on them is refused"},
        "policy": {"rows": int(len(policy)), "decisions": int(policy["decision_id"].nunique()),
                   "for": _source_name(for_logs, "--for logs") if for_logs is not None else logs_name},
        "heldout_evaluation": heldout.to_dict(),
        "in_sample_evaluation": in_sample.to_dict(),
        "provenance": provenance({"logs": logs, "candidates": candidates, "for": for_logs,
                                  "for_candidates": for_candidates}, seed),
        "warnings": ["The in-sample evaluation is on the rows that trained the policy: it is optimistic; "
                     "judge the policy by the held-out one."],
    }
    if candidates is None and not sessions:
        document["warnings"].append(
            "No candidates were given: the policy chooses among the logs' streams for every decision, including "
            "streams the logging policy could not show there (off air, not retrieved), where no estimator can "
            "check it (see the held-out unsupported mass). Give each decision's streams with --candidates.")
    return LearnResult(name=name, policy=policy, metadata=metadata, document=document, heldout_logs=heldout_logs,
                       fitted=fitted, heldout=heldout, in_sample=in_sample)


def _session_of_rows(index):
    """The session code of every logs row."""
    import numpy as np
    out = np.empty(index.n_rows, dtype=np.int64)
    out[index.order] = index.session
    return out


def _next_rows(index):
    """The logs row of every row's next step in its session (-1 at the last step)."""
    import numpy as np
    out = np.full(index.n_rows, -1, dtype=np.int64)
    nxt = index.next_position
    out[index.order] = np.where(nxt >= 0, index.order[np.maximum(nxt, 0)], -1)
    return out


def _learn_candidates(source, logs, label: str, *, with_logged: bool, codes_of=None):
    """The candidate streams of each row of `logs` from a (decision_id, action) table, as codes of
    `codes_of`'s streams (default: `logs`' own); with_logged adds each row's logged stream."""
    import numpy as np

    from livegate.datasets import open_dataset, column_names
    from livegate.datasets.encoding import lookup
    from livegate.ope.learn import Candidates

    if source is None:
        return None
    name = _source_name(source, "candidates")
    ds = open_dataset(source, name)
    id_col = logs.schema.decision_id if logs.schema.decision_id in column_names(ds) else "decision_id"
    act_col = logs.schema.action if logs.schema.action in column_names(ds) else "action"
    missing = [c for c in (id_col, act_col) if c not in column_names(ds)]
    if missing:
        raise InputError([Problem(name, "is missing", column=c, fix="list decision_id, action pairs") for c in missing])
    table = ds.to_table([id_col, act_col])
    ids = table.column(id_col).to_numpy(zero_copy_only=False)
    actions = table.column(act_col).to_numpy(zero_copy_only=False)
    decision = lookup(logs.decision_ids, ids)
    reference = (codes_of or logs).actions
    code = lookup(reference, actions)
    known = (decision >= 0) & (code >= 0)  # streams the training logs never show cannot be learned about
    decision, code = decision[known], code[known]
    # every position of a decision gets the decision's candidates
    rows_of = np.argsort(logs.decision_code, kind="stable")
    counts = np.bincount(logs.decision_code, minlength=len(logs.decision_ids))
    first = np.concatenate([[0], np.cumsum(counts)])
    per = counts[decision]
    row = rows_of[np.repeat(first[decision], per) + _learning_ranks(per)]
    code = np.repeat(code, per)
    if with_logged:
        row = np.concatenate([row, np.arange(logs.n)])
        code = np.concatenate([code, logs.action_code])
    return Candidates.from_pairs(row, code, logs.n)


def _learning_ranks(counts):
    from livegate.ope.learn.candidates import _ranks
    return _ranks(counts)


def _prefiltered(model, context, logs, n_actions: int, keep: int, chunk: int = 20_000):
    """Each row's `keep` streams with the highest predicted reward (and its logged one), in chunks of rows."""
    import numpy as np

    from livegate.ope.learn import Candidates

    rows, codes = [], []
    for lo in range(0, logs.n, chunk):
        hi = min(lo + chunk, logs.n)
        block = Candidates.from_pairs(np.repeat(np.arange(hi - lo), n_actions), np.tile(np.arange(n_actions), hi - lo),
                                      hi - lo)
        q = model.predict(context.iloc[lo:hi].reset_index(drop=True), block).reshape(hi - lo, n_actions)
        best = np.argpartition(-q, keep - 1, axis=1)[:, :keep]
        rows.append(np.repeat(np.arange(lo, hi), keep))
        codes.append(best.ravel())
    logged = getattr(logs, "action_code", None)
    if logged is not None and len(logged) == logs.n and getattr(logs, "propensity", None) is not None:
        rows.append(np.arange(logs.n))
        codes.append(logged)
    return Candidates.from_pairs(np.concatenate(rows), np.concatenate(codes), logs.n)


def _target_logs(source, trained_on, schema: LogSchema):
    """The decisions of `--for` logs, with the training logs' context columns, their action codes in
    the training logs' coding (no propensity or reward needed)."""
    from livegate.datasets import load_logs

    target = load_logs(source, [], schema=schema, need_decision_id=True, need_propensity=False, need_context=True,
                       context=list(trained_on.context.columns), name=_source_name(source, "--for logs"))
    return target


def _policy_frame(fitted, context, cand, logs, epsilon: float, top_k: int | None, actions=None):
    """The learned distribution over each row's candidates as a long-format policy DataFrame."""
    import numpy as np
    import pandas as pd

    from livegate.ope.learn import finish

    prob = fitted.probabilities(context, cand)
    keep, p = finish(prob, cand, epsilon, top_k)
    row = cand.row[keep]
    values = (logs.actions if actions is None else actions)
    frame = {"decision_id": logs.decision_ids[logs.decision_code[row]]}
    if logs.position is not None and logs.n_positions > 1:
        frame["position"] = logs.position[row].astype(np.int64)
    frame["action"] = values[cand.action[keep]]
    frame["prob"] = p
    return pd.DataFrame(frame)


# --- replay ------------------------------------------------------------------------------------

def replay(logs, rewards=None, algorithms: str | Mapping[str, Any] = "eps-greedy:0.1,ucb1,ts,linucb:alpha=1", *,
           batch_size: int = 1, runs: int = 10, periods: int = 20, bootstrap: bool = True, seed: int = 0,
           alpha: float = 0.05, candidates=None, context: Sequence[str] | str | None = None,
           columns: Mapping[str, str] | None = None, progress: Progress = _quiet) -> dict:
    """Replay online bandit algorithms through the logs (`ope/replay.py`: Li et al. 2011, with
    rejection sampling for non-uniform logging, Dudik et al. 2012), in time order, updating them every
    `batch_size` accepted events; `runs` replays each (on bootstrap resamples of the events with
    `bootstrap`). algorithms: identifiers ("eps-greedy:0.1,ucb1,ts,linucb:alpha=1") or {name: object
    with reset/select/update}. candidates: a (decision_id, action) table of the streams each decision
    could show (e.g. those on air): the algorithms choose among them. Returns the livegate.replay/1
    document (reward curves per period)."""
    import numpy as np

    from livegate.ope import replay as R
    from livegate.ope.learn import ContextEncoder

    algos = R.parse_algorithms(algorithms) if isinstance(algorithms, str) else dict(algorithms)
    problems = [Problem(option, f"{value} is not a positive integer") for option, value in
                (("--batch-size", batch_size), ("--runs", runs), ("--periods", periods))
                if not isinstance(value, (int, np.integer)) or value < 1]
    if not 0 < alpha < 1:
        problems.append(Problem("--alpha", f"{alpha} is not in (0, 1)"))
    if problems:
        raise InputError(problems)
    progress("reading logs")
    loaded, specs, logs_name, *_ = _read_logs_with_context(logs, rewards, context, columns,
                                                           need_decision_id=candidates is not None)
    mask = None
    if candidates is not None:
        cand = _learn_candidates(candidates, loaded, _source_name(candidates, "candidates"), with_logged=True)
        mask = np.zeros((loaded.n, len(loaded.actions)), dtype=bool)
        mask[cand.row, cand.action] = True
    # events in time order (stable: rows with equal times keep the file's order)
    order = np.argsort(loaded.timestamp, kind="stable") if loaded.timestamp is not None else np.arange(loaded.n)
    frame = loaded.context
    X = ContextEncoder(frame).transform(frame)[order]
    reward = loaded.reward(specs[0])[order]
    summary = R.run_replays(algos, X, loaded.action_code[order], reward, loaded.propensity[order],
                            len(loaded.actions), batch_size=batch_size, runs=runs, periods=periods,
                            bootstrap=bootstrap, seed=seed, alpha=alpha,
                            available=None if mask is None else mask[order], progress=progress)
    warnings = list(loaded.warnings)
    if not summary["uniform_logging"]:
        warnings.append(f"The logging policy is not uniform: replay keeps an event whose logged stream the algorithm "
                        f"picked with probability p_min / p_t (p_min = {summary['p_min']:.3g}), so at most about "
                        f"n p_min = {summary['p_min'] * loaded.n:,.0f} of the {loaded.n:,} events can be accepted; "
                        "the accepted counts are what the curves rest on.")
    few = [name for name, r in summary["algorithms"].items() if r["accepted"]["mean"] < 500]
    if few:
        warnings.append(f"Fewer than 500 accepted events on average for {', '.join(few)}: the curves are noisy.")
    if mask is None:
        warnings.append("Every logged stream is taken as available at every event: an algorithm's pick of a stream "
                        "that was not on air there never matches, which thins the accepted events; give the streams "
                        "each decision could show with --candidates.")
    data = {k: v for k, v in summary.items() if k not in ("algorithms", "logging")}
    return {"schema": R.SCHEMA,
            "config": {"algorithms": list(algos), "batch_size": batch_size, "runs": runs, "periods": periods,
                       "bootstrap": bootstrap, "alpha": alpha, "seed": seed, "reward": specs[0].name,
                       "metric_definitions": {specs[0].name: specs[0].expression},
                       "order": "timestamp" if loaded.timestamp is not None else "file order",
                       "candidates": "given" if candidates is not None else "every logged stream"},
            "data": data, "algorithms": summary["algorithms"], "logging": summary["logging"],
            "warnings": warnings, "provenance": provenance({"logs": logs, "candidates": candidates}, seed)}


# --- outputs -----------------------------------------------------------------------------------

def read_documents(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Result documents (JSON written by evaluate, causal, gate, learn or replay), each checked for its kind's
    core fields."""
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


# --- raw events and monitoring after a rollout (datasets/events.py, ope/monitor.py) -----------

def track(events, out=None, *, windows=None, lateness="1h", missing_stop_cap="1h", session_gap="30m",
          memory_limit: str = "2GB", threads: int | None = None, protected: Sequence[str | os.PathLike] = ()):
    """Raw viewer events (a Parquet path, DataFrame or Arrow table; docs/events.md) to contract logs.
    With `out`, writes day-partitioned Parquet and `_tracking.json` there; without, the result's
    `report["table"]` holds the logs. Durations are seconds or strings such as '30s', '4h'."""
    from livegate.datasets.events import TrackConfig, parse_duration, parse_windows, track as _track
    cfg = TrackConfig(windows=parse_windows(windows), lateness=parse_duration(lateness, "--lateness"),
                      missing_stop_cap=parse_duration(missing_stop_cap, "--missing-stop-cap"),
                      session_gap=parse_duration(session_gap, "--session-gap"), memory_limit=memory_limit,
                      threads=threads)
    return _track(events, out, cfg, protected=_guard([events, *protected]))


def monitor(logs, policies: Mapping[str, Any], rewards=None, *, every="1d", alpha: float = 0.05,
            margins: Mapping[str, float] | None = None, baseline: str = "logging", min_rows: int = 200,
            t_star: int | None = None, restarts: bool = True, context: Sequence[str] | str | None = None,
            columns: Mapping[str, str] | None = None, actions=None, seed: int = 0, progress: Progress = _quiet):
    """Monitor candidates after a rollout: per-window and cumulative IPS differences to the baseline
    with anytime-valid confidence sequences, and drift checks (ope/monitor.py). The result's
    `exit_code` is 0 healthy, 1 regression detected, 3 not yet decided."""
    from livegate.datasets.events import parse_duration
    from livegate.ope.monitor import MonitorConfig, monitor as _monitor
    cfg = MonitorConfig(every=parse_duration(every, "--every"), alpha=alpha, margins=dict(margins or {}),
                        baseline=baseline, min_rows=min_rows, t_star=t_star, restarts=restarts, seed=seed)
    cfg.validate()
    inputs = load_inputs(logs, policies, rewards, context=context, columns=columns, actions=actions,
                         progress=progress)
    progress("monitoring")
    return _monitor(inputs.logs, inputs.policies, inputs.rewards, cfg)


def write_monitor_outputs(document: dict, *, out=None, report=None,
                          protected: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The monitor's JSON document and HTML page, written together and atomically."""
    from livegate.datasets.io import dumps_json, write_all_atomic
    from livegate.reports.monitor import monitor_html
    items = [(p, data(), option) for p, data, option in
             ((out, lambda: dumps_json(document), "--out"), (report, lambda: monitor_html(document), "--report"))
             if p is not None]
    return write_all_atomic(items, _guard(protected)) if items else []
