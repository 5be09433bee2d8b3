"""Evaluate candidate policies over whole viewer sessions (`--sessions`; DESIGN section 2, "Sessions").

The value of a policy is the expected discounted return per session, E[sum_t gamma^t r_t], from the
logged sessions' initial states. Each session is one sample: the estimators of `session_estimators`
give one term per session, and intervals, paired differences and the gate reuse the decision-level
machinery (`IntervalEngine`) unchanged. Output: the same `EvaluationResult`, with `level` "session".
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from livegate.datasets import LoggedData, PolicyTable, logging_policy
from livegate.datasets.errors import InputError, Problem
from livegate.datasets.rewards import RewardSpec
from livegate.datasets.schema import LOGGING_POLICY
from livegate.datasets.sessions import SessionIndex

from . import inference
from .diagnostics import LOW_ESS_ROWS, LOW_ESS_SHARE, reward_model_warning, warnings_for, weight_diagnostics
from .estimators import EstimatorSpec, Terms
from .session_estimators import SessionInputs, step_values

#: Steps with fewer alive sessions than this are left out of the collapse search: a weight
#: statistic over a handful of sessions says nothing.
MIN_ALIVE_FOR_COLLAPSE = 30
#: Per-step lists in the result document stop here (a rare very long session would bloat it).
MAX_STEPS_REPORTED = 500


def evaluate_sessions(logs: LoggedData, policies: Mapping[str, PolicyTable], rewards: Sequence[RewardSpec],
                      config, specs: Sequence[EstimatorSpec], progress: Callable[[str], None] | None = None):
    """Estimate every policy's session value for every metric and estimator (`evaluate.evaluate`
    calls this when `config.level` is "session", after the checks common to both levels)."""
    from .evaluate import EvaluationResult, IntervalEngine, _data_summary, _intervals  # one module, two levels

    step = progress or (lambda _msg: None)
    index = logs.sessions
    if index is None:
        raise InputError(Problem(logs.source, f"has no sessions: session-level evaluation needs the columns "
                                 f"'{logs.schema.session_id}' and '{logs.schema.step}'",
                                 fix="add them, map them with --column session_id=NAME --column step=NAME, or "
                                     "evaluate per decision without --sessions"))
    all_policies = {LOGGING_POLICY: logging_policy(logs), **policies}
    ratios = {name: None if name == LOGGING_POLICY else index.sort(p.pi_logged / logs.propensity)
              for name, p in all_policies.items()}
    warnings: list[str] = []
    pairs = _policy_pairs(logs, index, all_policies, specs, warnings)
    features = logs.context.iloc[index.order].reset_index(drop=True) \
        if any(s.needs_model or s.needs_state_ratios for s in specs) else None
    action_code = index.sort(logs.action_code)

    state_ratios: dict[str, np.ndarray] = {}
    if any(s.needs_state_ratios for s in specs):
        step("state density ratios (marginalised importance sampling)")
        from .sequential_models import fit_state_ratios
        candidates = {name: r for name, r in ratios.items() if r is not None}
        state_ratios = fit_state_ratios(features, index.session, index.step, index.next_position, candidates,
                                        n_folds=config.n_folds,
                                        seed=config.seed, model=config.reward_model, progress=step)
        state_ratios[LOGGING_POLICY] = np.ones(index.n_rows)

    if any(s.name == "fqe" for s in specs):
        warnings.append("fqe's interval shows how the value varies over the initial states only, not the error of "
                        "the fitted Q function: it is not a confidence interval for the policy's value (use drl, dr "
                        "or wdr for one; the gate does not accept fqe).")
    if any(s.name == "mis" for s in specs):
        warnings.append("mis's interval does not include the error of the fitted state density ratios, which grows "
                        "with the session length: read it as a model-based estimate (the gate does not accept mis).")
    all_terms: dict[str, dict[str, dict[str, Terms]]] = {}
    results, engines, qualities = {}, {}, {}
    returns, curves = {}, {}
    for spec in rewards:
        metric = spec.name
        reward = index.sort(logs.reward(spec))
        fits = {}
        if pairs:
            step(f"fitted-Q evaluation for {metric}")
            from .sequential_models import fit_fqe
            fits = fit_fqe(features, action_code, logs.n_action_codes, reward, index.session, index.step,
                           index.next_position, pairs, gamma=config.gamma, n_folds=config.n_folds, seed=config.seed,
                           model=config.reward_model, action_features=logs.action_features, progress=step)
        step(f"estimating {metric} over sessions")
        all_terms[metric] = {}
        for name in all_policies:
            fit = fits.get(name)
            q_logged, v = (None, None) if fit is None else (fit.q_logged, fit.v)
            if fit is None and name == LOGGING_POLICY and any(s.needs_model for s in specs):
                # not fitted (see _policy_pairs): with unit weights the terms of dr, wdr and drl telescope to the
                # session's return whatever the Q function, so Q = 0 gives them exactly
                q_logged = v = np.zeros(index.n_rows)
            inputs = SessionInputs(index=index, reward=reward,
                                   ratio=ratios[name] if ratios[name] is not None else np.ones(index.n_rows),
                                   gamma=config.gamma, q_logged=q_logged, v=v, state_ratio=state_ratios.get(name),
                                   unit_weight=name == LOGGING_POLICY)
            if name == LOGGING_POLICY:
                returns[metric] = inputs.discounted_return
            curves.setdefault(metric, {})[name] = step_values(inputs)[:MAX_STEPS_REPORTED].tolist()
            all_terms[metric][name] = {}
            for s in specs:
                if s.needs_model and q_logged is None:
                    warnings.append(f"{s.identifier} skipped for '{name}': its probabilities are known only at the "
                                    "logged actions (compact pi_ form), and fitted-Q evaluation needs them at every "
                                    "action.")
                    continue
                all_terms[metric][name][s.identifier] = s.terms(inputs)
        qualities[metric] = {name: fit.quality for name, fit in fits.items()} or None
        # a session's bootstrap counts are keyed by its id, as a decision's are (the same resamples whatever
        # the row order)
        engines[metric] = IntervalEngine(all_terms[metric], config,
                                         keys=inference.bootstrap_keys(index.ids) if config.ci == "bootstrap" else None)
        results[metric] = _intervals(engines[metric], config)

    for name, p in all_policies.items():
        diag = session_diagnostics(index, ratios[name], config.gamma, state_ratios.get(name))
        diag["unlogged_mass"] = p.unlogged_probability(len(logs.actions)) / logs.n
        diag["compact_form"] = p.compact
        diag["estimated_propensities"] = logs.propensity_source == "estimated"
        for metric in results:
            d = dict(diag, warnings=list(diag["warnings"]))
            quality = (qualities[metric] or {}).get(name)
            d["reward_model"] = quality
            d["by_step"] = dict(d["by_step"], value=curves[metric][name])
            d["warnings"] += reward_model_warning(quality)
            results[metric][name].diagnostics = d

    data = _data_summary(logs, returns)
    data.update(level="session", n_sessions=index.n_sessions, horizon=index.horizon,
                mean_session_length=float(index.n_rows / index.n_sessions), gamma=config.gamma)
    return EvaluationResult(config=config, data=data, baseline=config.baseline, metrics=results,
                            metric_definitions={spec.name: spec.expression for spec in rewards},
                            time_windows=None, warnings=list(dict.fromkeys(warnings)), engines=engines)


def _policy_pairs(logs: LoggedData, index: SessionIndex, policies: Mapping[str, PolicyTable],
                  specs: Sequence[EstimatorSpec], warnings: list[str]) -> dict[str, tuple]:
    """(sorted position, action code, probability) of every action each policy may take at every step,
    for fitted-Q evaluation. The logging policy's is its logged action (probability 1): fitted-Q then
    evaluates the behaviour policy from its own next actions. Its Q function is fitted only for `fqe`:
    with unit weights the per-session terms of dr, wdr and drl are the session's discounted return
    whatever the Q function (sum_t gamma^t (r_t - Q_t + V_t) with V_t = Q_t at the logged action), so
    fitting it would cost a quarter of the model time for nothing."""
    if not any(s.needs_model for s in specs):
        return {}
    pairs = {}
    if any(s.name == "fqe" for s in specs):
        pairs[LOGGING_POLICY] = (np.arange(index.n_rows, dtype=np.int64), index.sort(logs.action_code),
                                 np.ones(index.n_rows))
    for name, p in policies.items():
        if name == LOGGING_POLICY or p.compact:
            continue
        pairs[name] = (index.to_sorted_rows(p.row), p.action_code, np.asarray(p.prob, dtype=np.float64))
    return pairs


def session_diagnostics(index: SessionIndex, ratio: np.ndarray | None, gamma: float,
                        state_ratio: np.ndarray | None = None) -> dict:
    """The weight diagnostics of one policy over sessions.

    - per decision (every step's w_t): `weight_diagnostics`' statistics, unsupported mass and mean-weight test;
    - `decision_ess`: the Kish size of the per-decision weights over all rows (what the gate's
      effective-sample-size floor reads: it shows degenerate or wrong propensities at any step);
    - `ess`: the effective number of sessions, the Kish size (sum u)^2 / sum u^2 of each session's
      discount-averaged cumulative weight u_i = sum_t gamma^t rho_t / sum_t gamma^t (1 for the logging
      policy; a session whose weights explode or vanish counts for little);
    - `trajectory_ess`: the Kish size of the full-trajectory weights rho_{T_i - 1} (what TIS rests on);
    - `marginal_ess` (when `state_ratio` u_t was fitted, for drl or mis): the Kish size of each session's
      discount-averaged marginal weight sum_t gamma^t u_t w_t / sum_t gamma^t, the weights drl's
      corrections rest on instead of the products (None otherwise);
    - per step t: sessions alive, Kish size of rho_t among them, mean and largest rho_t; and
      `collapse_step`, the first step whose effective share falls below LOW_ESS_SHARE: from there on,
      per-decision importance sampling rests on a few sessions (the curse of horizon).
    """
    n_rows, n_sessions, horizon = index.n_rows, index.n_sessions, index.horizon
    w = np.ones(n_rows) if ratio is None else ratio
    diag = weight_diagnostics(w)
    rho = np.ones(n_rows) if ratio is None else index.cumulative_product(ratio)
    discount = np.ones(n_rows) if gamma == 1.0 else gamma ** index.step.astype(np.float64)
    per_session = index.per_session(discount * rho) / index.per_session(discount)
    rho_last = rho[index.last_position()]
    marginal = None if state_ratio is None else \
        _kish(index.per_session(discount * state_ratio * w) / index.per_session(discount))
    alive = index.alive
    step_sum = np.bincount(index.step, weights=rho, minlength=horizon)
    step_sq = np.bincount(index.step, weights=rho * rho, minlength=horizon)
    step_max = np.zeros(horizon)
    np.maximum.at(step_max, index.step, rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        ess_by_step = np.where(step_sq > 0, step_sum * step_sum / step_sq, 0.0)
    considered = alive >= MIN_ALIVE_FOR_COLLAPSE
    collapsed = np.flatnonzero(considered & (ess_by_step < LOW_ESS_SHARE * alive))
    row_warnings = warnings_for(diag)
    diag.update(
        n=n_sessions, n_rows=n_rows, ess=_kish(per_session), decision_ess=diag["ess"], trajectory_ess=_kish(rho_last),
        marginal_ess=marginal,
        collapse_step=int(collapsed[0]) if collapsed.size else None,
        by_step={key: values[:MAX_STEPS_REPORTED].tolist() for key, values in
                 {"alive": alive, "ess": ess_by_step, "mean_weight": step_sum / np.maximum(alive, 1),
                  "max_weight": step_max}.items()})
    diag["warnings"] = _session_warnings(diag) + [w for w in row_warnings if not w.startswith("Low effective")]
    return diag


def _kish(weights: np.ndarray) -> float:
    total, total_sq = float(np.sum(weights)), float(np.einsum("i,i->", weights, weights))
    return total * total / total_sq if total_sq > 0 else 0.0


def _session_warnings(diag: dict) -> list[str]:
    out = []
    n, ess = diag["n"], diag["ess"]
    if n and ess < max(LOW_ESS_ROWS, LOW_ESS_SHARE * n):
        out.append(f"Low effective number of sessions: {ess:,.0f} of {n:,} ({ess / n:.1%}): the estimators that "
                   "multiply the weights along a session (pdis, wpdis, tis, dr, wdr) rest on a few heavily weighted "
                   "sessions, and their normal intervals can miss the value; prefer drl, which weights each step by "
                   "fitted state density ratios instead, and collect more sessions or explore more before trusting "
                   "a gate.")
    t = diag["collapse_step"]
    if t is not None:
        alive, ess_t = diag["by_step"]["alive"][t], diag["by_step"]["ess"][t]
        out.append(f"Importance weights collapse from step {t}: there the effective sample is {ess_t:,.0f} of the "
                   f"{alive:,} sessions still running ({ess_t / alive:.1%}). Per-decision IS (pdis, tis) rests on a "
                   "few sessions after it; doubly robust wdr and dr suffer less, and drl, which does not multiply "
                   "the weights, least (fqe and mis depend on fitted models whose error their intervals do not "
                   "show).")
    return out
