"""Average-effect estimators: naive difference in means, cross-fitted IPW, and EconML through DoWhy.

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


def ipw_estimate(y: np.ndarray, t: np.ndarray, e: np.ndarray, alpha: float = 0.05) -> dict:
    """Inverse-propensity-weighted average effect with the Hajek (self-normalised) form as value.

    Horvitz & Thompson 1952 (``mean(T Y / e) - mean((1-T) Y / (1-e))``, reported as ``horvitz_thompson``)
    and Hajek 1971 (each arm's weighted mean normalised by its sum of weights). Per-row influence
    terms (Lunceford & Davidian 2004, eq. 9 with e treated as known) give the standard error; with
    cross-fitted estimated propensities this is conservative for the ATE (Hirano, Imbens & Ridder 2003).
    ``e`` is P(T=1 | x), out-of-fold when estimated.
    """
    w1, w0 = t / e, (1 - t) / (1 - e)
    m1, m0 = np.sum(w1 * y) / np.sum(w1), np.sum(w0 * y) / np.sum(w0)
    value = m1 - m0
    terms = w1 * (y - m1) / w1.mean() - w0 * (y - m0) / w0.mean()
    se = terms.std(ddof=1) / np.sqrt(len(y))
    ht_terms = w1 * y - w0 * y
    out = interval(value, se, alpha)
    out["horvitz_thompson"] = interval(ht_terms.mean(), ht_terms.std(ddof=1) / np.sqrt(len(y)), alpha)
    weights = np.where(t == 1, w1, w0)
    out["max_weight"] = float(weights.max())
    out["ess"] = float(weights.sum() ** 2 / np.sum(weights ** 2))
    return out


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


def fit_dowhy_econml(data, estimand, econml_estimator, treatment: str, outcome: str, effect_modifiers: list[str]):
    """Fit ``econml_estimator`` through DoWhy's EconML wrapper on the identified backdoor estimand.

    Returns DoWhy's ``CausalEstimate`` (which the refuters re-fit) and the fitted EconML object.
    """
    from dowhy.causal_estimator import estimate_effect
    from dowhy.causal_estimators.econml import Econml

    wrapper = Econml(estimand, econml_estimator=econml_estimator)
    estimate = estimate_effect(data, treatment, outcome, "backdoor", wrapper, control_value=0, treatment_value=1,
                               effect_modifiers=list(effect_modifiers), method_params={})
    return estimate, wrapper.estimator


def ate_with_interval(fitted, X: np.ndarray | None, alpha: float) -> dict:
    """Average of the fitted CATE over the rows ``X`` (the sample ATE), with EconML's standard error."""
    inference = fitted.ate_inference(X=X, T0=0, T1=1)
    value = float(np.ravel(inference.mean_point)[0])
    se = float(np.ravel(inference.stderr_mean)[0])
    return interval(value, se, alpha)
