"""Evaluate several candidate policies with several estimators and metrics in one pass over the rows.

Input: validated arrays from `datasets` (logs, joined policies, optional q-hat); output: an
`EvaluationResult` whose `to_dict()` is the `livegate.evaluation/1` document body.
"""
from __future__ import annotations

import functools
import html
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from livegate.datasets.errors import InputError, Problem
from livegate.datasets.gate_config import LEVELS, MAX_SEED
from livegate.datasets import LoggedData, PolicyTable, RewardPredictions, logging_policy
from livegate.datasets.rewards import RewardSpec
from livegate.datasets.schema import COMPACT_QPI_PREFIX, LOGGING_POLICY

from . import inference, selection
from .diagnostics import reward_model_warning, warnings_for, weight_diagnostics
from .estimators import EstimatorSpec, RowInputs, Terms, parse_estimator

SCHEMA = "livegate.evaluation/1"
#: Default estimators per level. Per decision: the cheap unbiased one, its self-normalised form and a doubly
#: robust one. Per session: drl (the gate's default: doubly robust without products of weights), wdr and pdis
DEFAULT_ESTIMATORS = {"decision": ("ips", "snips", "dr"), "session": ("drl", "wdr", "pdis")}


@dataclass(frozen=True)
class EvaluationConfig:
    #: estimator identifiers; None: the level's defaults (DEFAULT_ESTIMATORS); "auto" chooses one per
    #: policy and metric from the data (ope/selection.py)
    estimators: tuple[str, ...] | None = None
    ci: str = inference.DEFAULT_CI  # the gate's default too (datasets/gate_config.py)
    alpha: float = 0.05
    n_boot: int = 1000
    seed: int = 0
    baseline: str = LOGGING_POLICY
    n_folds: int = 3
    category_column: str = "a_category"
    category_propensity_column: str = "category_propensity"
    #: metric -> (low, high) known a priori (bernstein intervals; q-hat is clipped into it)
    reward_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: a bound on the importance weight known by design, e.g. 1 / (epsilon / K); None: unknown
    max_weight: float | None = None
    max_time_windows: int = 31
    #: any scikit-learn regressor (or classifier, for 0/1 rewards) to cross-fit as the reward model of
    #: DM and DR; None: HistGradientBoosting (see reward_model.py). Recorded by its repr in documents.
    reward_model: object = None
    #: "decision": one row per (decision, position) is a sample; "session": whole viewer sessions are
    #: (the value is the expected discounted return per session, see ope/sessions.py)
    level: str = "decision"
    #: the discount of session returns, sum_t gamma^t r_t (session level only); 1.0: the total per session
    gamma: float = 1.0

    def __post_init__(self):
        if self.estimators is None:
            object.__setattr__(self, "estimators", DEFAULT_ESTIMATORS.get(self.level, DEFAULT_ESTIMATORS["decision"]))

    def validate(self) -> list[EstimatorSpec]:
        problems = []
        if self.ci not in inference.CI_METHODS:
            problems.append(Problem("--ci", f"unknown interval method '{self.ci}'",
                                    fix=f"choose from {', '.join(inference.CI_METHODS)}"))
        if not 0 < self.alpha < 1:
            problems.append(Problem("--alpha", f"{self.alpha} is not in (0, 1)", fix="use e.g. 0.05"))
        if self.n_boot < 200:
            problems.append(Problem("--n-boot", f"{self.n_boot} resamples are too few", fix="use at least 200"))
        if self.n_folds < 2:
            problems.append(Problem("--folds", "cross-fitting needs at least 2 folds"))
        if self.max_weight is not None and not (np.isfinite(self.max_weight) and self.max_weight >= 1):
            problems.append(Problem("--max-weight", f"{self.max_weight} is not a finite number >= 1",
                                    fix="give the bound on pi_e/pi_0 known by design, e.g. 1/(epsilon/K) for "
                                        "epsilon-greedy logging over K streams (at least 1: the weights' mean is 1), "
                                        "or leave it out"))
        if not (isinstance(self.seed, (int, np.integer)) and 0 <= self.seed <= MAX_SEED):
            problems.append(Problem("--seed", f"{self.seed} is not in [0, {MAX_SEED}]", fix="use e.g. 0 or 12345"))
        if self.level not in LEVELS:
            problems.append(Problem("--sessions", f"unknown evaluation level '{self.level}'",
                                    fix=f"choose from {', '.join(LEVELS)}"))
        if not (isinstance(self.gamma, (int, float)) and 0 < self.gamma <= 1):
            problems.append(Problem("--gamma", f"{self.gamma} is not in (0, 1]",
                                    fix="use e.g. 1.0 (the total per session) or 0.99"))
        elif self.level == "session" and (self.reward_ranges or self.max_weight is not None or self.ci == "bernstein"):
            problems.append(Problem("--sessions", "reward ranges, --max-weight and Bernstein intervals apply per "
                                    "decision; session returns are not bounded by them",
                                    fix="drop the reward ranges and the weight bound (--reward-range, --max-weight; "
                                        "gate.toml [reward_range], max_weight) and use normal or bootstrap intervals"))
        elif self.level == "decision" and self.gamma != 1.0:
            problems.append(Problem("--gamma", "discounts session returns, and this evaluation is per decision",
                                    fix="add --sessions (gate.toml: [evaluation] level = \"session\") or drop --gamma"))
        if not self.estimators:
            problems.append(Problem("--estimators", "no estimator given", fix="e.g. --estimators ips,snips,dr"))
        specs = []
        for identifier in self.estimators:
            if isinstance(identifier, str) and identifier.strip() == selection.AUTO:
                if self.level == "session":
                    problems.append(Problem("--estimators", "'auto' chooses among the per-decision estimators; "
                                            "session-level evaluation has no automatic choice yet",
                                            fix="name session estimators, e.g. --estimators drl (gate.toml: "
                                                "estimator = \"drl\")"))
                # a placeholder: its terms are the chosen candidate's (evaluate(), _metric_terms)
                specs.append(EstimatorSpec(identifier=selection.AUTO, name=selection.AUTO))
                continue
            try:
                specs.append(parse_estimator(identifier, self.level if self.level in LEVELS else "decision"))
            except InputError as exc:
                problems += exc.problems
        dup = {s.identifier for s in specs if [t.identifier for t in specs].count(s.identifier) > 1}
        if dup:
            problems.append(Problem("--estimators", f"listed twice: {', '.join(sorted(dup))}"))
        ratios = [s.identifier for s in specs if s.self_normalised]
        if self.ci == "bernstein" and ratios:
            problems.append(inference.bernstein_needs_plain_means(ratios))
        if problems:
            raise InputError(problems)
        return specs


@dataclass
class PolicyResult:
    estimates: dict[str, dict]
    diagnostics: dict
    vs_baseline: dict[str, dict]


@dataclass
class EvaluationResult:
    config: EvaluationConfig
    data: dict
    baseline: str
    metrics: dict[str, dict[str, PolicyResult]]      # metric -> policy -> result
    #: metric -> its definition over the logs' columns, e.g. {"engagement": "watch_seconds + 50*gift_value"}
    metric_definitions: dict[str, str] = field(default_factory=dict)
    time_windows: dict | None = None
    warnings: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # livegate_version, inputs, seed: filled by the caller
    engines: dict[str, "IntervalEngine"] = field(default_factory=dict, repr=False)  # not serialised
    #: metric -> the `auto` choices of every policy (ope/selection.py), which the gate tests; not serialised
    selections: dict[str, "selection.MetricChoices"] = field(default_factory=dict, repr=False)

    @property
    def primary_metric(self) -> str:
        return next(iter(self.metrics))

    def estimate(self, policy: str, estimator: str, metric: str | None = None) -> dict:
        return self.metrics[metric or self.primary_metric][policy].estimates[estimator]

    def to_frame(self) -> "pd.DataFrame":  # noqa: F821
        """One tidy row per (policy, metric, estimator): the estimate, its interval, the paired
        difference to the baseline with its interval, and the policy's weight diagnostics."""
        import pandas as pd
        rows = []
        for metric, by_policy in self.metrics.items():
            for policy, result in by_policy.items():
                for estimator, est in result.estimates.items():
                    diff = result.vs_baseline.get(estimator, {})
                    rows.append({"policy": policy, "metric": metric, "estimator": estimator,
                                 "value": est.get("value"), "se": est.get("se"), "ci_low": est.get("ci_low"),
                                 "ci_high": est.get("ci_high"), "difference": diff.get("difference"),
                                 "difference_ci_low": diff.get("ci_low"), "difference_ci_high": diff.get("ci_high"),
                                 "relative": diff.get("relative"), "ess": result.diagnostics.get("ess"),
                                 "n": result.diagnostics.get("n")})
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        head = (f"<p><b>livegate evaluation</b>: {len(self.metrics[self.primary_metric])} policies, baseline "
                f"<code>{self.baseline}</code>, {self.config.ci} intervals at {1 - self.config.alpha:.0%}</p>")
        notes = "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings)
        return head + self.to_frame().to_html(index=False, float_format="{:.4g}".format) + \
            (f"<ul>{notes}</ul>" if notes else "")

    def to_dict(self) -> dict:
        metrics = {m: {"policies": {p: asdict(r) for p, r in pols.items()}} for m, pols in self.metrics.items()}
        config = asdict(replace(self.config, reward_model=None))
        config["reward_model"] = None if self.config.reward_model is None else repr(self.config.reward_model)
        doc = {"schema": SCHEMA, "config": config, "data": self.data, "baseline": self.baseline,
               "metric": self.primary_metric, "policies": metrics[self.primary_metric]["policies"],
               "metrics": metrics, "metric_definitions": self.metric_definitions,
               "level": self.config.level, "gamma": self.config.gamma if self.config.level == "session" else None,
               "time_windows": self.time_windows, "warnings": self.warnings}
        if selection.AUTO in self.config.estimators:
            doc["selection"] = selection.describe(self.config.ci)  # how `auto` chose, once per document
        doc.update(self.provenance)
        return doc


def _category_weights(logs: LoggedData, policy: PolicyTable, cfg: EvaluationConfig) -> np.ndarray | None:
    """p_e(c|x) / p_0(c|x) for the logged action's category c (Saito & Joachims 2022)."""
    cat_col, prop_col = cfg.category_column, cfg.category_propensity_column
    if cat_col not in logs.extra or prop_col not in logs.extra or policy.compact:
        return None
    if policy.name == LOGGING_POLICY:
        return np.ones(logs.n)
    category = logs.extra[cat_col]
    cat_of_action = np.full(logs.n_action_codes, np.nan)  # unknown for streams never logged
    cat_of_action[logs.action_code] = category
    # an action with two categories makes the marginal weight meaningless
    inconsistent = cat_of_action[logs.action_code] != category
    if np.any(inconsistent):
        raise InputError(Problem(logs.source, "give one action two different categories", column=cat_col,
                                 rows=int(np.count_nonzero(inconsistent)),
                                 fix="a stream's category must be the same in every row"))
    same = cat_of_action[policy.action_code] == category[policy.row]
    p_e = np.bincount(policy.row[same], weights=policy.prob[same], minlength=logs.n)
    return p_e / logs.extra[prop_col]


def _reward_range(metric: str, reward: np.ndarray, cfg: EvaluationConfig) -> tuple[float, float] | None:
    """The configured range, or [0, 1] for a 0/1 reward; None (unknown) otherwise."""
    if metric in cfg.reward_ranges:
        low, high = cfg.reward_ranges[metric]
        check_reward_range(metric, int(np.count_nonzero((reward < low) | (reward > high))), cfg)
        return float(low), float(high)
    if reward.size and not 0 <= float(np.min(reward)) <= float(np.max(reward)) <= 1:
        return None  # one comparison pass settles most rewards (watch seconds, gift values)
    if np.all((reward == 0) | (reward == 1)):
        return 0.0, 1.0
    return None


def check_reward_range(metric: str, outside: int, cfg: EvaluationConfig) -> None:
    """A configured reward range that `outside` rows break is an input error."""
    if outside:
        low, high = cfg.reward_ranges[metric]
        raise InputError(Problem("--reward-range", f"{outside:,} rows of {metric} lie outside [{low}, {high}]",
                                 fix="give a range that holds every possible reward"))


def _data_summary(logs: LoggedData, rewards: Mapping[str, np.ndarray]) -> dict:
    summary = {}
    for name, r in rewards.items():
        q = np.quantile(r, [0.5, 0.9, 0.99])
        summary[name] = reward_summary(float(r.mean()), float(r.std(ddof=1)) if len(r) > 1 else 0.0, float(r.min()),
                                       float(r.max()), float(np.mean(r == 0)), q)
    ts = logs.timestamp
    return data_summary(n_rows=logs.n,
                        n_decisions=int(len(logs.decision_ids)) if logs.decision_ids is not None else logs.n,
                        n_actions=int(len(logs.actions)), n_positions=logs.n_positions,
                        period=None if ts is None else (ts.min(), ts.max()),
                        propensity=(float(np.min(logs.propensity)), float(np.max(logs.propensity))),
                        propensity_source=logs.propensity_source, rewards=summary)


#: the reward quantiles of the data summary
SUMMARY_QUANTILES = (0.5, 0.9, 0.99)


def reward_summary(mean: float, std: float, low: float, high: float, zero_fraction: float, quantiles) -> dict:
    """One reward's entry of the data summary (quantiles at SUMMARY_QUANTILES)."""
    return {"mean": mean, "std": std, "min": low, "max": high, "zero_fraction": zero_fraction,
            "quantiles": {str(q): float(v) for q, v in zip(SUMMARY_QUANTILES, quantiles)}}


def data_summary(*, n_rows: int, n_decisions: int, n_actions: int, n_positions: int, period, propensity,
                 propensity_source: str, rewards: dict) -> dict:
    """The document's `data` entry; `period`: (first, last) datetime64 or None."""
    if period is not None:
        period = {"start": str(np.datetime_as_string(period[0], unit="s")) + "Z",
                  "end": str(np.datetime_as_string(period[1], unit="s")) + "Z"}
    return {"n_rows": n_rows, "n_decisions": n_decisions, "n_actions": n_actions, "n_positions": n_positions,
            "period": period, "propensity": {"min": propensity[0], "max": propensity[1], "source": propensity_source},
            "rewards": rewards}


def _model_predictions(logs: LoggedData, policies: Mapping[str, PolicyTable], reward: np.ndarray,
                       q_hat: RewardPredictions | None, cfg: EvaluationConfig,
                       progress: Callable[..., None] | None = None, metric: str | None = None,
                       fitted=None):
    """(q_logged, {policy: q_pi}, quality) from user predictions, compact columns, a model fitted
    elsewhere (`fitted`: a `reward_model.SampledRewardModel`, which a streamed evaluation fits once on a
    sample of decisions and hands every partition) or a model cross-fitted here on these rows. Whatever
    the source, the same shape: q_pi has an entry per long-format policy (and per compact policy with
    its qpi_NAME column), the logging policy's being q_logged; quality is the model's held-out quality
    (None for given predictions). User predictions take precedence over a model.
    `progress(message, done, total)` (or a one-argument `progress(message)`) follows the model's folds."""
    # the logging policy's model term is the prediction at the logged action, q_logged
    long_form = {name: p for name, p in policies.items() if not p.compact and name != LOGGING_POLICY}
    if q_hat is not None or "q_hat" in logs.extra:
        if q_hat is not None:
            q_logged = q_hat.logged
            q_pi = {name: q_hat.under(name) for name in long_form}
        else:
            q_logged = logs.extra["q_hat"]
            q_pi = {}
        for name, p in policies.items():
            if p.compact:
                column = COMPACT_QPI_PREFIX + name
                if column in logs.extra:
                    q_pi[name] = logs.extra[column]
        q_pi[LOGGING_POLICY] = q_logged
        return q_logged, q_pi, None
    if fitted is not None:  # predicts these rows with its fold models (it never trained on them)
        q_logged, q_pi = fitted.predict_partition(logs, policies)
        return q_logged, q_pi, fitted.quality
    if logs.n_context_columns == 0:
        return None, {}, None
    # scikit-learn is imported only when a model is fitted
    from .reward_model import counted_progress, fit_reward_model
    # pairs a policy gives probability 0 need no prediction (a policy whose every pair counts keeps its
    # arrays, so that policies listing the same pairs share their predictions)
    listed = {name: None if bool(np.all(p.prob > 0)) else np.flatnonzero(p.prob > 0)
              for name, p in long_form.items()}
    pairs = {name: (p.row, p.action_code) if listed[name] is None
             else (p.row[listed[name]], p.action_code[listed[name]]) for name, p in long_form.items()}
    step = counted_progress(progress, f"for {metric}" if metric else "")
    fit = fit_reward_model(logs.context, logs.action_code, len(logs.actions), reward, pairs,
                           groups=logs.decision_code, n_folds=cfg.n_folds, seed=cfg.seed,
                           action_features=logs.action_features, model=cfg.reward_model,
                           position=logs.position, progress=step)
    q_pi = {}
    for name, p in long_form.items():
        q = fit.q_policy[name]
        if listed[name] is not None:
            q = np.zeros(len(p.row))
            q[listed[name]] = fit.q_policy[name]
        q_pi[name] = p.expected(q, logs.n)
    q_pi[LOGGING_POLICY] = fit.q_logged
    return fit.q_logged, q_pi, fit.quality


def check_request(policies: Mapping[str, object], rewards: Sequence[RewardSpec], config: EvaluationConfig) -> None:
    """The request's own errors, before any row is read: no reward, a candidate named like the built-in
    logging policy, a baseline that is not among the policies."""
    if not rewards:
        raise InputError(Problem("--reward", "no reward given", fix="e.g. --reward watch_seconds"))
    if LOGGING_POLICY in policies:
        raise InputError(Problem("--policy", f"'{LOGGING_POLICY}' is the built-in logging policy",
                                 fix="give the candidate another name"))
    names = [LOGGING_POLICY, *policies]
    if config.baseline not in names:
        raise InputError(Problem("--baseline", f"'{config.baseline}' is not among the policies",
                                 fix=f"choose one of {', '.join(names)}"))


def importance_weights(logs: LoggedData, policies: Mapping[str, PolicyTable]) -> dict[str, np.ndarray]:
    """pi_e(a|x) / pi_0(a|x) of the logged action per row and policy; exactly 1 for the logging policy
    (it took the logged action: a read-only view of one 1.0)."""
    return {name: np.broadcast_to(1.0, logs.n) if name == LOGGING_POLICY else p.pi_logged / logs.propensity
            for name, p in policies.items()}


def evaluate(logs: LoggedData, policies: Mapping[str, PolicyTable], rewards: Sequence[RewardSpec],
             config: EvaluationConfig = EvaluationConfig(), q_hat: Mapping[str, RewardPredictions] | None = None,
             progress: Callable[[str], None] | None = None, reward_models: Mapping[str, object] | None = None
             ) -> EvaluationResult:
    """Estimate every policy's value for every metric and estimator, with intervals, diagnostics and
    the paired difference to the baseline. `policies` excludes the built-in `logging`, which is added.
    `reward_models`: metric -> a model fitted elsewhere (`reward_model.fit_sampled_reward_model`, as a
    streamed evaluation fits it) that predicts these rows instead of a model cross-fitted here; given
    q-hat predictions still take precedence."""
    specs = config.validate()
    reward_models = dict(reward_models or {})
    step = progress or (lambda _msg: None)
    check_request(policies, rewards, config)
    all_policies = {LOGGING_POLICY: logging_policy(logs), **policies}
    if config.level == "session":
        return _evaluate_sessions(logs, policies, rewards, config, specs, q_hat, progress)
    if any(s.needs_model for s in specs) and logs.n_context_columns == 0 and not q_hat and "q_hat" not in logs.extra \
            and any(spec.name not in reward_models for spec in rewards):
        raise InputError(Problem(logs.source, "has no context columns for the reward model that "
                                 f"{', '.join(s.identifier for s in specs if s.needs_model)} need",
                                 fix="add x_* columns, pass --context, or give --q-hat"))
    if any(s.needs_model for s in specs) and logs.n_context_columns and "q_hat" not in logs.extra \
            and any((q_hat or {}).get(spec.name) is None and spec.name not in reward_models
                    for spec in rewards):  # a reward model is cross-fitted
        from livegate.datasets.errors import raise_if_any
        from livegate.datasets.validation import check_cross_fitting
        n_units = int(logs.decision_code.max()) + 1 if logs.decision_code is not None and logs.n else logs.n
        raise_if_any(check_cross_fitting(n_units, config.n_folds, logs.source,
                                         [s.identifier for s in specs if s.needs_model]))

    weights = importance_weights(logs, all_policies)
    if config.max_weight is not None:  # a bound "known by design" that the data break is an input error
        _check_max_weight(weights, config.max_weight)
    category_weights = {name: _category_weights(logs, p, config) for name, p in all_policies.items()} \
        if any(s.needs_categories for s in specs) else {}
    reward_arrays = {spec.name: logs.reward(spec) for spec in rewards}
    # the diagnostics' sorts and searches run in a second thread while the estimators run (NumPy
    # releases the GIL); each is a pure function of the arrays, so the results do not depend on timing
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livegate-diagnostics")
    diagnosed = {name: pool.submit(_policy_diagnostics, logs, p, weights[name]) for name, p in all_policies.items()}
    summarised = pool.submit(_data_summary, logs, reward_arrays)
    pool.shutdown(wait=False)
    results: dict[str, dict[str, PolicyResult]] = {}
    all_terms: dict[str, dict[str, dict[str, Terms]]] = {}
    engines: dict[str, IntervalEngine] = {}
    warnings: list[str] = []
    qualities: dict[str, dict | None] = {}
    choices: dict[str, selection.MetricChoices | None] = {}
    keys = bootstrap_keys(logs) if config.ci == "bootstrap" else None
    try:
        for spec in rewards:
            metric = spec.name
            all_terms[metric], qualities[metric], choices[metric] = _metric_terms(
                metric, reward_arrays[metric], logs, all_policies, weights, category_weights, specs,
                (q_hat or {}).get(metric), config, step, warnings, fitted=reward_models.get(metric))
            engines[metric] = IntervalEngine(all_terms[metric], config,
                                             value_range=_reward_range(metric, reward_arrays[metric], config),
                                             keys=keys)
            results[metric] = _intervals(engines[metric], config)
            if choices[metric]:
                _auto_entries(results[metric], choices[metric], engines[metric], config)
            warnings += bernstein_warning(metric, results[metric])
        windows = _time_windows(logs, all_terms, specs, config) if logs.timestamp is not None else None
    except BaseException:
        for future in [*diagnosed.values(), summarised]:
            future.cancel()  # the one running finishes; the others never start
        raise
    for metric, by_policy in results.items():
        for name, result in by_policy.items():
            diag = dict(diagnosed[name].result())
            diag["reward_model"] = qualities[metric]
            diag["warnings"] = diag["warnings"] + reward_model_warning(qualities[metric])
            result.diagnostics = diag
    return EvaluationResult(config=config, data=summarised.result(), baseline=config.baseline,
                            metrics=results, metric_definitions={spec.name: spec.expression for spec in rewards},
                            time_windows=windows, warnings=list(dict.fromkeys(warnings)),
                            engines=engines, selections={m: c for m, c in choices.items() if c})


def bernstein_warning(metric: str, results: Mapping[str, PolicyResult]) -> list[str]:
    if any(e.get("ci_method") == "bernstein-observed-range" for r in results.values() for e in r.estimates.values()):
        return [f"Bernstein intervals for {metric} use the observed range of the terms, so their "
                f"coverage is not guaranteed: give --reward-range {metric}=LOW,HIGH and --max-weight."]
    return []


def _auto_entries(results: dict[str, PolicyResult], choices: selection.MetricChoices, engine: "IntervalEngine",
                  config: EvaluationConfig) -> None:
    """Replace the `auto` entries with the choices' estimates and intervals: the value's choice per
    policy and the paired difference's own. The terms they read (the chosen candidates' and the
    anchors') get an engine of their own, like the metric's `engine` (its value range), which the gate
    asks again at Holm's levels."""
    choices.set_engine(IntervalEngine(choices.terms, config, value_range=getattr(engine, "value_range", None),
                                      keys=getattr(engine, "keys", None)))
    for name, result in results.items():
        result.estimates[selection.AUTO] = selection.auto_estimate(choices.value[name], config.alpha)
        result.vs_baseline.pop(selection.AUTO, None)
        if name in choices.difference:
            result.vs_baseline[selection.AUTO] = selection.auto_difference(choices.difference[name], config.alpha)


def _evaluate_sessions(logs, policies, rewards, config, specs, q_hat, progress) -> EvaluationResult:
    if q_hat:
        raise InputError(Problem("--q-hat", "per-decision predictions cannot evaluate sessions",
                                 fix="drop --q-hat: fitted-Q evaluation fits its own Q function from the context columns"))
    modelled = [s.identifier for s in specs if s.needs_model or s.needs_state_ratios]
    if modelled and logs.n_context_columns == 0:
        raise InputError(Problem(logs.source, f"has no context columns for the state models of {', '.join(modelled)}", fix="add x_* columns (the state at each step) or pass --context"))
    from .sessions import evaluate_sessions
    return evaluate_sessions(logs, policies, rewards, config, specs, progress)


def _check_max_weight(weights: Mapping[str, np.ndarray], bound: float) -> None:
    """Every importance weight must respect --max-weight: an interval labelled guaranteed on a broken bound
    would be a false promise."""
    raise_max_weight({name: (int(np.count_nonzero(w > bound * (1 + 1e-12))), float(np.max(w)) if len(w) else 0.0)
                      for name, w in weights.items()}, bound)


def raise_max_weight(violations: Mapping[str, tuple[int, float]], bound: float) -> None:
    """`violations`: policy -> (rows whose weight exceeds the bound, largest weight)."""
    problems = []
    for name, (above, largest) in violations.items():
        if above:
            problems.append(Problem("--max-weight", f"{above:,} row{'s' if above != 1 else ''} of policy '{name}' "
                                    f"{'have' if above != 1 else 'has'} an importance weight above the bound "
                                    f"{bound:g} (largest {largest:.6g})",
                                    fix="give a bound that holds by design for every row (at least the largest "
                                        "weight), check the logged propensities, or leave max_weight out (Bernstein "
                                        "intervals then say they use the observed range)"))
    if problems:
        raise InputError(problems)


def _metric_terms(metric: str, reward: np.ndarray, logs: LoggedData, policies: Mapping[str, PolicyTable],
                  weights: Mapping[str, np.ndarray], category_weights: Mapping[str, np.ndarray | None],
                  specs: Sequence[EstimatorSpec], q_hat: RewardPredictions | None, config: EvaluationConfig,
                  step: Callable[[str], None], warnings: list[str], reward_range: object = "data",
                  fitted=None, predictions: tuple | None = None
                  ) -> tuple[dict[str, dict[str, Terms]], dict | None, selection.MetricChoices | None]:
    """Every (policy, estimator)'s per-row terms for one metric, the reward model's quality, and with
    `auto` every policy's choice (its terms are the chosen candidate's). `reward_range`: "data" (the
    rule of `_reward_range` on these rows), else the range to use (a streamed partition is given the
    whole log's). `fitted`: a model fitted elsewhere (see `_model_predictions`); `predictions`: what
    `_model_predictions` already returned for these rows (a streamed partition computes them once)."""
    q_logged = q_pi = quality = None
    auto = any(s.name == selection.AUTO for s in specs)
    no_model = _auto_model_note(logs, q_hat, config) if auto and fitted is None else None
    if predictions is not None:
        q_logged, q_pi, quality = predictions
    elif any(s.needs_model for s in specs) or (auto and no_model is None):
        step(f"reward model for {metric}")
        q_logged, q_pi, quality = _model_predictions(logs, policies, reward, q_hat, config, progress=step,
                                                     metric=metric, fitted=fitted)
    step(f"estimating {metric}")
    if isinstance(reward_range, str):
        reward_range = _reward_range(metric, reward, config)
    if reward_range is not None and q_logged is not None:
        # a model may extrapolate past the reward's range; inside it DR's terms stay bounded
        q_logged = np.clip(q_logged, *reward_range)
        q_pi = {k: np.clip(v, *reward_range) for k, v in q_pi.items()}
    q_constant = _constant_model(reward, logs) \
        if auto or any(s.params.get("model") == "constant" for s in specs) else None
    terms: dict[str, dict[str, Terms]] = {}
    all_inputs: dict[str, RowInputs] = {}
    for name in policies:
        # a weight bound from the data (1 / smallest propensity) would make "guaranteed" a claim about
        # the sample: without a configured bound the Bernstein interval says it uses the observed range
        inputs = all_inputs[name] = RowInputs(reward=reward, weight=weights[name], q_logged=q_logged,
                           q_pi=None if q_pi is None else q_pi.get(name),
                           category_weight=category_weights.get(name), alpha=config.alpha, reward_range=reward_range,
                           max_weight=1.0 if name == LOGGING_POLICY else config.max_weight,
                           unit_weight=name == LOGGING_POLICY, q_constant=q_constant)
        terms[name] = {}
        for s in specs:
            if s.name == selection.AUTO:
                terms[name][s.identifier] = None  # its place in the order; the chosen candidate's terms below
                continue
            if s.needs_model and inputs.q_pi is None:
                warnings.append(f"{s.identifier} skipped for '{name}': no reward-model prediction under it "
                                f"(compact form without {COMPACT_QPI_PREFIX}{name}).")
                continue
            if s.needs_categories and inputs.category_weight is None:
                warnings.append(f"{s.identifier} skipped for '{name}': needs {config.category_column} and "
                                f"{config.category_propensity_column} columns and a long-format policy.")
                continue
            terms[name][s.identifier] = s.terms(inputs)
    if not auto:
        return terms, quality, None
    step(f"choosing the estimator for {metric}")
    no_model = no_model if q_logged is None else selection.model_verdict(quality, reward, q_logged)
    computed = {name: {k: t for k, t in by_est.items() if t is not None} for name, by_est in terms.items()}
    choices = selection.choose(all_inputs, config.baseline, model_note=no_model, ratios=config.ci != "bernstein",
                               alpha=config.alpha, seed=config.seed, method=selection.method_for(config.ci),
                               computed=computed)
    for name, choice in choices.value.items():
        terms[name][selection.AUTO] = choices.terms[name][choice.chosen]
    return terms, quality, choices


def _constant_model(reward: np.ndarray, logs: LoggedData) -> np.ndarray:
    """The constant reward model per row, model=constant: the mean reward at the row's position (the
    constant a fitted model's held-out quality is compared with), the overall mean without positions."""
    if logs.n_positions > 1:
        count = np.bincount(logs.position, minlength=logs.n_positions)
        means = np.bincount(logs.position, weights=reward, minlength=logs.n_positions) / np.maximum(count, 1)
        return means[logs.position]
    return np.full(len(reward), float(np.mean(reward)) if len(reward) else 0.0)


def _auto_model_note(logs: LoggedData, q_hat: RewardPredictions | None, config: EvaluationConfig) -> str | None:
    """Why `auto` has no reward model for a metric (None: it has one). Unlike a named dm or dr, a
    missing model is no error: the automatic choice is then among the estimators without one."""
    if q_hat is not None or "q_hat" in logs.extra:
        return None
    if logs.n_context_columns == 0:
        return "no reward model (the logs have no context columns and no --q-hat was given)"
    n_units = int(logs.decision_code.max()) + 1 if logs.decision_code is not None and logs.n else logs.n
    if n_units < max(config.n_folds, 2):
        return f"too few decisions ({n_units:,}) to cross-fit the reward model over {config.n_folds} folds"
    return None


def _policy_diagnostics(logs: LoggedData, policy: PolicyTable, weight: np.ndarray) -> dict:
    """Weight diagnostics, the probability on streams no logged row shows, and their warnings."""
    return finish_policy_diagnostics(weight_diagnostics(weight),
                                     policy.unlogged_probability(len(logs.actions)) / logs.n,
                                     compact=policy.compact, estimated=logs.propensity_source == "estimated")


def finish_policy_diagnostics(diag: dict, unlogged_mass: float, *, compact: bool, estimated: bool) -> dict:
    """`diag` (diagnostics.weight_diagnostics, or a streamed evaluation's merged equivalent) with the
    unlogged mass, the input's form and the warnings of all of them."""
    diag["unlogged_mass"] = unlogged_mass
    diag["compact_form"] = compact
    diag["estimated_propensities"] = estimated
    diag["warnings"] = warnings_for(diag, estimated_propensities=estimated, compact=compact)
    if diag["unlogged_mass"] > 0:
        diag["warnings"].append(f"{diag['unlogged_mass']:.2%} of the candidate's probability is on streams that no "
                                "logged row shows: importance weighting learns nothing about them, and the reward "
                                "model can only extrapolate. Pass --actions to reject streams outside the catalogue.")
    return diag


class IntervalEngine:
    """Intervals of any contrast of one metric's (policy, estimator) terms, at any level.

    Keeps the per-row terms (and, for the bootstrap, the replicate matrix, drawn once; for robust
    intervals, each contrast's tail shape, computed once), so that the gate can ask again at a
    multiplicity-adjusted level without touching the data. `value_range`: the range every policy's
    value lies in (a 0/1 reward's [0, 1], a configured reward range), which every interval respects
    (inference.within_range); None when unknown. `keys`: the rows' bootstrap keys
    (inference.bootstrap_keys of their decision ids, `bootstrap_keys`); None: one unit per row.

    The streamed evaluation's engine (ope/streaming.py) subclasses this one and answers the same
    questions from merged sums: it overrides `_value`, `_bernstein` and `tail_shape`."""

    def __init__(self, terms: dict[str, dict[str, Terms]], cfg: EvaluationConfig,
                 value_range: tuple[float, float] | None = None, keys: np.ndarray | None = None):
        self.terms, self.cfg, self.value_range, self.keys = terms, cfg, value_range, keys
        self.flat = [(p, e) for p, by_est in terms.items() for e in by_est]
        self.position = {key: i for i, key in enumerate(self.flat)}
        self._shapes: dict[tuple, inference.TailShape] = {}
        self.replicates = None
        if cfg.ci == "bootstrap" and self.flat:
            self.replicates = inference.bootstrap_replicates([terms[p][e] for p, e in self.flat], cfg.n_boot, cfg.seed,
                                                             keys=keys)

    @functools.cached_property
    def covariance(self) -> inference.InfluenceCovariance:
        """Of every (policy, estimator): normal intervals and relative differences are read off it."""
        return inference.InfluenceCovariance([self.terms[p][e] for p, e in self.flat])

    def _replicate_coefs(self, keys: list[tuple[str, str]], coefs: list[float]) -> np.ndarray:
        """The contrast's coefficients over the replicate matrix's columns."""
        weights = np.zeros(len(self.flat))
        for key, c in zip(keys, coefs):
            weights[self.position[key]] += c
        return weights

    def _value(self, keys: list[tuple[str, str]], coefs: list[float]) -> float:
        return inference.contrast_value([self.terms[p][e] for p, e in keys], coefs)

    def _bernstein(self, keys: list[tuple[str, str]], coefs: list[float]) -> "inference._BernsteinBound":
        return inference._BernsteinBound([self.terms[p][e] for p, e in keys], coefs)

    def tail_shape(self, keys: list[tuple[str, str]], coefs: list[float]) -> inference.TailShape:
        """The contrast's `TailShape` (one pass over the rows, then cached: the gate asks again)."""
        key = (tuple(keys), tuple(float(c) for c in coefs))
        if key not in self._shapes:
            self._shapes[key] = self.covariance.tail_shape([self.position[k] for k in keys], coefs)
        return self._shapes[key]

    def interval(self, keys: list[tuple[str, str]], coefs: list[float], alpha: float) -> inference.Interval:
        if self.cfg.ci == "bootstrap":
            iv = inference.bootstrap_interval(self.replicates, self._replicate_coefs(keys, coefs),
                                              self._value(keys, coefs), alpha)
        elif self.cfg.ci == "bernstein":
            iv = self._bernstein(keys, coefs).interval(alpha)
        else:
            iv = self.covariance.interval([self.position[k] for k in keys], coefs, alpha)
            if self.cfg.ci == "robust":
                iv = inference.robust_interval(iv.value, iv.se, self.tail_shape(keys, coefs), alpha)
        return inference.within_range(iv, inference.contrast_range(self.value_range, coefs))

    def p_value(self, keys: list[tuple[str, str]], coefs: list[float], null: float) -> float:
        """The smallest alpha at which `interval(keys, coefs, alpha)` excludes `null` (NaN if undefined):
        the p-value that orders Holm's tests consistently with the intervals that decide them."""
        if self.cfg.ci == "bootstrap":
            p = inference.bootstrap_p_value(self.replicates, self._replicate_coefs(keys, coefs), null)
        elif self.cfg.ci == "bernstein":
            p = self._bernstein(keys, coefs).p_value(null)
        else:
            value = self._value(keys, coefs)
            se = self.covariance.se([self.position[k] for k in keys], coefs)
            p = inference.robust_p_value(value, se, self.tail_shape(keys, coefs), null) \
                if self.cfg.ci == "robust" else inference.normal_p_value(value, se, null)
        return inference.range_p_value(p, null, inference.contrast_range(self.value_range, coefs))

    def difference(self, policy: str, baseline: str, estimator: str, alpha: float) -> inference.Interval:
        return self.interval([(policy, estimator), (baseline, estimator)], [1.0, -1.0], alpha)

    def relative(self, policy: str, baseline: str, estimator: str, alpha: float) -> tuple[float, float, float]:
        """candidate / baseline - 1 with its delta-method interval (normal whatever the ci method)."""
        return self.covariance.relative(self.position[(policy, estimator)], self.position[(baseline, estimator)], alpha)


def bootstrap_keys(logs: LoggedData, offset: int = 0) -> np.ndarray:
    """The rows' bootstrap keys (inference.bootstrap_keys): of their decision ids, so that the rows of
    one decision (its positions) are resampled together; without decision ids, of the row numbers
    offset, offset + 1, ... (a partition's rows start at its offset in the whole log)."""
    if logs.decision_ids is not None and logs.decision_code is not None:
        return inference.bootstrap_keys(logs.decision_ids[logs.decision_code])
    return inference.bootstrap_keys(np.arange(offset, offset + logs.n, dtype=np.int64))


def _intervals(engine: IntervalEngine, cfg: EvaluationConfig) -> dict[str, PolicyResult]:
    """Estimates and paired differences to the baseline, all from the same per-row terms."""
    terms, base = engine.terms, cfg.baseline
    out: dict[str, PolicyResult] = {}
    for name, by_est in terms.items():
        estimates, vs = {}, {}
        for ident in by_est:
            estimates[ident] = engine.interval([(name, ident)], [1.0], cfg.alpha).to_dict()
            if name != base and ident in terms[base]:
                diff = engine.difference(name, base, ident, cfg.alpha)
                rel, rel_low, rel_high = engine.relative(name, base, ident, cfg.alpha)
                vs[ident] = {"difference": diff.value, "se": diff.se, "ci_low": diff.ci_low, "ci_high": diff.ci_high,
                             "ci_method": diff.method, "relative": rel, "relative_ci_low": rel_low,
                             "relative_ci_high": rel_high, "relative_ci_method": "normal"}
                # robust: the ends the data cannot set, and those set by Cantelli's inequality (docs/results.md)
                vs[ident].update({k: v for k, v in diff.to_dict().items() if k in ("ci_open", "ci_cantelli")})
        out[name] = PolicyResult(estimates=estimates, diagnostics={}, vs_baseline=vs)
    return out


def _time_windows(logs: LoggedData, all_terms, specs, cfg: EvaluationConfig) -> dict | None:
    """Per-window estimates (normal intervals) of the first estimator: a drift check over the period."""
    ts = logs.timestamp.astype("datetime64[us]").astype(np.int64)
    grid = time_window_grid(int(ts.min()), int(ts.max()), cfg)
    if grid is None:
        return None
    start0, width = grid
    window = (ts - start0) // width
    estimator = specs[0].identifier
    out = []
    for k in np.unique(window):
        mask = window == k
        if np.count_nonzero(mask) < MIN_WINDOW_ROWS:
            continue
        out.append(window_entry(start0, width, int(k), int(np.count_nonzero(mask)), {
            metric: {name: inference.normal_interval([by_est[estimator].subset(mask)], [1.0], cfg.alpha)
                     for name, by_est in terms.items() if estimator in by_est}
            for metric, terms in all_terms.items()}))
    return {"estimator": estimator, "width_seconds": width // 10**6, "windows": out}


#: a time window with fewer rows is left out of the drift check
MIN_WINDOW_ROWS = 30


def time_window_grid(first: int, last: int, cfg: EvaluationConfig) -> tuple[int, int] | None:
    """(start, width) in microseconds of the drift check's windows over [first, last] (microseconds
    since the epoch): days over two days or more, else hours, widened to at most cfg.max_time_windows
    windows; None when the period has no length. Window k of a row at time t is (t - start) // width."""
    span = last - first
    if span <= 0:
        return None
    day, hour = 86_400 * 10**6, 3_600 * 10**6
    width = day if span >= 2 * day else hour
    n_windows = span // width + 1
    if n_windows > cfg.max_time_windows:
        width = -(-span // cfg.max_time_windows)
    return (first // width) * width, width


def window_entry(start0: int, width: int, k: int, n: int,
                 intervals: Mapping[str, Mapping[str, inference.Interval]]) -> dict:
    """Window k's entry: its period, row count and every metric's and policy's normal interval."""
    return {"start": _iso(start0 + k * width), "end": _iso(start0 + (k + 1) * width), "n": n,
            "metrics": {metric: {name: {"value": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high}
                                 for name, iv in by_policy.items()} for metric, by_policy in intervals.items()}}


def _iso(us: int) -> str:
    return str(np.datetime_as_string(np.datetime64(int(us), "us"), unit="s")) + "Z"
