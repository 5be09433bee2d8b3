"""Average-effect estimators: naive difference in means and EconML learners through DoWhy (the
weighting and augmented estimators of each estimand are in causal/estimands.py).

Every function returns plain numbers (value, se, ci_low, ci_high); intervals are normal intervals
``value -/+ z_{1-alpha/2} * se``.
"""
from __future__ import annotations

import os

import numpy as np

from livegate.datasets.errors import InputError, Problem

from livegate.ope.inference import z_quantile

from .features import hgb_classifier, hgb_regressor

ESTIMATORS = ("linear_dml", "causal_forest", "dr_learner")
#: joblib workers for EconML's forests: at most the two cores of the reference machine.
N_JOBS = max(1, min(2, os.cpu_count() or 1))
#: Propensity floor inside DRLearner (same as causal.propensity.CLIP).
MIN_PROPENSITY = 1e-3


def interval(value: float, se: float, alpha: float) -> dict:
    z = z_quantile(alpha)
    return {"value": float(value), "se": float(se), "ci_low": float(value - z * se), "ci_high": float(value + z * se)}


def naive_difference(y: np.ndarray, t: np.ndarray, alpha: float = 0.05) -> dict:
    """Difference in means of treated and untreated rows, Welch standard error (no adjustment).

    This is what a dashboard comparing recommended and not-recommended rows shows; it is biased
    whenever the logging policy targets viewers who would have watched more anyway.
    """
    y1, y0 = y[t == 1], y[t == 0]
    value = y1.mean() - y0.mean()
    se = np.sqrt(y1.var(ddof=1) / len(y1) + y0.var(ddof=1) / len(y0))
    return interval(value, se, alpha)


def build_econml(name: str, seed: int, n_folds: int, n_rows: int, has_modifiers: bool):
    """An unfitted EconML estimator instance (DoWhy is given the instance, not a class-path string).

    * ``linear_dml``: LinearDML, Chernozhukov et al. 2018 (double/debiased ML, partially linear
      model with a linear CATE in the effect modifiers), normal intervals from the final OLS.
    * ``causal_forest``: CausalForestDML, Athey, Tibshirani & Wager 2019 (generalized random forests)
      on DML residuals; ``min_samples_leaf`` 150 (STACK-NOTES: the default 5 gave segment effects
      worse than a constant on heavy-tailed watch time).
    * ``dr_learner``: DRLearner, Kennedy 2020 / Foster & Syrgkanis 2019 (doubly robust pseudo-outcomes
      regressed linearly on the effect modifiers).

    All use histogram gradient boosting first stages, ``n_folds``-fold cross-fitting and ``seed``.
    """
    if name == "linear_dml":
        from econml.dml import LinearDML

        return LinearDML(model_y=hgb_regressor(seed), model_t=hgb_classifier(seed), discrete_treatment=True,
                         cv=n_folds, random_state=seed)
    if name == "causal_forest":
        if not has_modifiers:
            raise InputError(Problem("config", "estimator 'causal_forest' needs at least one effect modifier",
                                     fix="give --effect-modifiers or choose linear_dml / dr_learner"))
        from econml.dml import CausalForestDML

        leaf = int(min(200, max(20, n_rows // 500)))
        return CausalForestDML(model_y=hgb_regressor(seed), model_t=hgb_classifier(seed), discrete_treatment=True,
                               cv=n_folds, n_estimators=200, min_samples_leaf=leaf, max_samples=0.45,
                               random_state=seed, n_jobs=N_JOBS)
    if name == "dr_learner":
        from econml.dr import DRLearner
        from econml.sklearn_extensions.linear_model import StatsModelsLinearRegression

        return DRLearner(model_propensity=hgb_classifier(seed), model_regression=hgb_regressor(seed),
                         model_final=StatsModelsLinearRegression(), cv=n_folds, random_state=seed,
                         min_propensity=MIN_PROPENSITY)
    raise InputError(Problem("config", f"unknown estimator '{name}'", fix="use one of " + ", ".join(ESTIMATORS)))


def target_units(estimand: str, treatment: str):
    """DoWhy's ``target_units`` for an estimand: the rows whose average CATE DoWhy reports (and its
    refuters re-estimate). A callable, because DoWhy's EconML wrapper ignores the strings "att" and
    "atc" (it averages over every row); the ATO has no DoWhy counterpart, so all rows."""
    if estimand == "att":
        return lambda frame: frame[treatment] == 1
    if estimand == "atc":
        return lambda frame: frame[treatment] == 0
    return "ate"


def fit_dowhy_econml(data, estimand, econml_estimator, treatment: str, outcome: str, effect_modifiers: list[str],
                     target: str = "ate"):
    """Fit ``econml_estimator`` through DoWhy's EconML wrapper on the identified backdoor estimand.

    Returns DoWhy's ``CausalEstimate`` (which the refuters re-fit) and the fitted EconML object. The
    fit caches its out-of-fold nuisances (``cache_values``), which ``learner_nuisances`` reads;
    ``target`` (an estimand) chooses the rows DoWhy averages the CATE over (``target_units``).
    """
    from dowhy.causal_estimator import estimate_effect
    from dowhy.causal_estimators.econml import Econml

    wrapper = Econml(estimand, econml_estimator=econml_estimator)
    estimate = estimate_effect(data, treatment, outcome, "backdoor", wrapper, control_value=0, treatment_value=1,
                               target_units=target_units(target, treatment), effect_modifiers=list(effect_modifiers),
                               method_params={"fit_params": {"cache_values": True}})
    return estimate, wrapper.estimator


def learner_nuisances(fitted, y: np.ndarray, t: np.ndarray, X: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold outcome regressions ``(m0, m1)`` of a fitted EconML learner, for the scores of
    ``causal.estimands.score_estimate``. Read from the nuisances the fit cached, so no model is refitted:

    * DML learners (``LinearDML``, ``CausalForestDML``) cache the residuals ``Y - q(x)`` and
      ``T - e(x)`` of the partially linear model ``Y = tau(X) T + g(X, W) + noise``, in which
      ``q = g + e tau``; with the fitted CATE ``tau``, ``m0 = q - e tau`` and ``m1 = q + (1 - e) tau``
      (Robinson 1988; Chernozhukov et al. 2018, sec. 4). Consistent where the final stage's CATE is,
      and the augmented score is doubly robust where it is not.
    * ``DRLearner`` caches the doubly robust pseudo-outcomes ``psi_a = m_a + 1[T=a] (Y - m_a) / P(T=a|x)``
      and its (clipped) propensities: ``m_a = psi_a`` on rows with ``T != a``, and solving for ``m_a`` on
      the others, ``m_a = (Y - P(T=a|x) psi_a) / (1 - P(T=a|x))`` (exact algebra, no refit).
    """
    cached = getattr(fitted, "_cached_values", None)
    if cached is None:
        raise RuntimeError("the EconML learner was fitted without cache_values=True")
    nuisances = cached.nuisances
    if len(nuisances) == 3:  # DRLearner: (pseudo-outcomes, clipped propensities, raw propensities)
        psi = np.asarray(nuisances[0], dtype=float).reshape(len(y), -1)
        prop = np.asarray(nuisances[1], dtype=float).reshape(len(y), -1)
        m0 = np.where(t == 1, psi[:, 0], (y - prop[:, 0] * psi[:, 0]) / prop[:, 1])
        m1 = np.where(t == 0, psi[:, 1], (y - prop[:, 1] * psi[:, 1]) / prop[:, 0])
        return m0, m1
    y_res = np.asarray(nuisances[0], dtype=float).ravel()
    t_res = np.asarray(nuisances[1], dtype=float).reshape(len(y), -1)[:, 0]
    q, e = y - y_res, t - t_res
    tau = np.asarray(fitted.effect(X, T0=0, T1=1), dtype=float).ravel()
    if tau.size == 1:
        tau = np.full(len(y), tau[0])
    return q - e * tau, q + (1.0 - e) * tau


def ate_with_interval(fitted, X: np.ndarray | None, alpha: float) -> dict:
    """Average of the fitted CATE over the rows ``X`` with EconML's standard error (for the final
    stage's coefficients, given those rows): the learner's own average, extrapolated wherever the CATE
    model is; ``causal.estimands.score_estimate`` gives the estimand with an orthogonal score."""
    inference = fitted.ate_inference(X=X, T0=0, T1=1)
    value = float(np.ravel(inference.mean_point)[0])
    se = float(np.ravel(inference.stderr_mean)[0])
    return interval(value, se, alpha)
