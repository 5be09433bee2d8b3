"""Which population an average effect describes, its estimators, and the overlap they need.

Every estimand here is a weighted average effect ``E[h(e(X)) tau(X)] / E[h(e(X))]`` with
``tau(x) = E[Y(1) - Y(0) | X = x]``, ``e(x) = P(T = 1 | X = x)`` and a weight ``h`` of the propensity
(Hirano, Imbens & Ridder 2003; Li, Morgan & Zaslavsky 2018, "Balancing covariates via propensity
score weighting", JASA 113, eq. 1-3):

======  ==========================================  ==================  ==========
name    population                                  h(e)                h'(e)
======  ==========================================  ==================  ==========
ate     all rows                                    1                   0
att     the treated rows (T = 1)                    e                   1
atc     the untreated rows (T = 0)                  1 - e               -1
ato     the overlap population                      e (1 - e)           1 - 2e
======  ==========================================  ==================  ==========

ATO is the effect where treated and untreated units are both common: each unit counts in proportion to
e(1 - e), so units that were (almost) certain to be treated, or not, count (almost) nothing. Its
weights are bounded, which is why it stays estimable when overlap is poor (Li, Morgan & Zaslavsky 2018).

Estimators (vectorised, one pass over the rows):

* ``score_estimate``: the augmented (doubly robust, Neyman-orthogonal) estimator of any of them from
  cross-fitted nuisances ``m0(x) = E[Y | T=0, x]``, ``m1(x) = E[Y | T=1, x]`` and ``e(x)``. It solves
  the estimating equation of the efficient influence function of a weighted average effect,

      phi = [ h(e) (psi - theta) + h'(e) (T - e) (m1 - m0 - theta) ] / E[h(e) + h'(e) (T - e)],
      psi = m1 - m0 + T (Y - m1) / e - (1 - T) (Y - m0) / (1 - e),

  (Hirano, Imbens & Ridder 2003; the augmented balancing-weight estimator of Mao, Li & Greene 2019,
  "Propensity score weighting analysis and treatment effect discovery", SMMR 28(8), sec. 3). The
  ``h'`` term accounts for the weight's own dependence on the estimated propensity. For ``ate`` this
  is AIPW (Robins, Rotnitzky & Zhao 1994; Chernozhukov et al. 2018, "Double/debiased machine learning",
  Econometrics Journal 21, eq. 5.3); for ``att`` it reduces exactly to the ATT score of Hahn 1998
  (Econometrica 66) and Chernozhukov et al. 2018, eq. 5.4,
  ``theta = sum[T (Y - m0) - e (1 - T) (Y - m0) / (1 - e)] / sum T``, which needs no ``m1``; ``atc`` is
  its mirror image. The standard error is ``sd(phi) / sqrt(n)``: for the population estimand; for the
  effect on the very rows of the sample it is conservative (it counts the spread of ``tau`` among them).
* ``ipw_estimate``: the Hajek (self-normalised) weighting estimator with the same balancing weights,
  ``T h / e`` and ``(1 - T) h / (1 - e)`` (Hajek 1971; Li, Morgan & Zaslavsky 2018, eq. 4 for ATO).

Overlap: ``trim_mask`` keeps rows with ``threshold <= e <= 1 - threshold``; ``crump_threshold`` is the
threshold of Crump, Hotz, Imbens & Mitnik 2009 ("Dealing with limited overlap in estimation of average
treatment effects", Biometrika 96). ``overlap_support`` says which estimands the data support.
"""
from __future__ import annotations

import numpy as np

from livegate.ope.inference import z_quantile

ESTIMANDS = ("ate", "att", "atc", "ato")
#: Short names, as printed.
LABELS = {"ate": "ATE", "att": "ATT", "atc": "ATC", "ato": "ATO"}
#: What each estimand is, in words (the population is added by ``population_text``).
MEANINGS = {"ate": "average effect on all rows", "att": "average effect on the treated",
            "atc": "average effect on the untreated (controls)",
            "ato": "average effect on the overlap population"}
#: Rows with P(T=1|x) outside [OVERLAP, 1 - OVERLAP] rest on extrapolation for the estimands that need
#: them (see ``overlap_support``); more than POOR_SHARE of such rows is poor overlap.
OVERLAP = 0.02
POOR_SHARE = 0.01


def balancing_weight(estimand: str, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(h(e), h'(e))`` of the estimand (table in the module docstring)."""
    if estimand == "ate":
        return np.ones_like(e), np.zeros_like(e)
    if estimand == "att":
        return e, np.ones_like(e)
    if estimand == "atc":
        return 1.0 - e, -np.ones_like(e)
    if estimand == "ato":
        return e * (1.0 - e), 1.0 - 2.0 * e
    raise ValueError(f"unknown estimand {estimand!r}")


def _interval(value: float, se: float, alpha: float) -> dict:
    z = z_quantile(alpha)
    return {"value": float(value), "se": float(se), "ci_low": float(value - z * se), "ci_high": float(value + z * se)}


def score_estimate(y: np.ndarray, t: np.ndarray, e: np.ndarray, m0: np.ndarray, m1: np.ndarray, estimand: str,
                   alpha: float = 0.05) -> dict:
    """Augmented estimate of ``estimand`` with its influence-function interval: the root of
    ``sum[h (psi - theta) + h' (T - e) (m1 - m0 - theta)] = 0`` (Hirano, Imbens & Ridder 2003; Mao, Li &
    Greene 2019, sec. 3), i.e. AIPW for the ATE (Chernozhukov et al. 2018, eq. 5.3), Hahn's 1998 score
    for the ATT (Chernozhukov et al. 2018, eq. 5.4), its mirror for the ATC, augmented overlap weights
    for the ATO (Li, Morgan & Zaslavsky 2018). Formulas in the module docstring.

    ``e`` must already be clipped away from 0 and 1; ``m0``, ``m1`` and ``e`` should be out-of-fold
    (cross-fitted) predictions, so that the score's mean has no own-observation bias.
    """
    h, dh = balancing_weight(estimand, e)
    tau = m1 - m0
    psi = tau + t * (y - m1) / e - (1 - t) * (y - m0) / (1 - e)
    numerator = h * psi + dh * (t - e) * tau
    denominator = h + dh * (t - e)  # ATE: 1; ATT: T; ATC: 1 - T; ATO: T (1-e)^2 + (1-T) e^2
    theta = numerator.sum() / denominator.sum()
    phi = (numerator - theta * denominator) / denominator.mean()
    se = phi.std(ddof=1) / np.sqrt(len(y))
    return _interval(theta, se, alpha)


def arm_weights(estimand: str, t: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Each row's balancing weight: ``h/e`` for treated rows, ``h/(1-e)`` for untreated ones."""
    h, _ = balancing_weight(estimand, e)
    return np.where(t == 1, h / e, h / (1.0 - e))


def ipw_estimate(y: np.ndarray, t: np.ndarray, e: np.ndarray, estimand: str = "ate", alpha: float = 0.05) -> dict:
    """Hajek weighting estimate of ``estimand`` with the balancing weights of ``arm_weights``.

    Each arm's weighted mean is normalised by its own sum of weights (Hajek 1971); the standard error
    comes from the per-row influence terms with ``e`` treated as known (Lunceford & Davidian 2004,
    eq. 9 for the ATE): conservative for the ATE with estimated propensities (Hirano, Imbens & Ridder
    2003), an approximation for the others. ``horvitz_thompson`` is the unnormalised form,
    ``mean(T w Y - (1-T) w Y) / mean(h)``.
    """
    t = np.asarray(t)
    w = arm_weights(estimand, t, e)
    w1, w0 = np.where(t == 1, w, 0.0), np.where(t == 0, w, 0.0)
    m1, m0 = np.sum(w1 * y) / np.sum(w1), np.sum(w0 * y) / np.sum(w0)
    terms = w1 * (y - m1) / w1.mean() - w0 * (y - m0) / w0.mean()
    out = _interval(m1 - m0, terms.std(ddof=1) / np.sqrt(len(y)), alpha)
    h, _ = balancing_weight(estimand, e)
    ht = (w1 * y - w0 * y) / h.mean()
    out["horvitz_thompson"] = _interval(ht.mean(), ht.std(ddof=1) / np.sqrt(len(y)), alpha)
    out.update(weight_diagnostics(estimand, t, e))
    return out


def weight_diagnostics(estimand: str, t: np.ndarray, e: np.ndarray) -> dict:
    """Effective sample size and the largest weight of the estimand's balancing weights.

    ``ess`` over all rows, ``(sum w)^2 / sum w^2`` (Kish 1965), and per arm (``ess_treated``,
    ``ess_control``: how many rows of equal weight the arm's weighted rows are worth); ``max_weight``
    the largest weight and ``max_weight_share`` the largest share of its arm's total weight that one
    row carries (comparable across estimands, whose weights have different scales).
    """
    w = arm_weights(estimand, t, e)
    treated = np.asarray(t) == 1

    def ess(v: np.ndarray) -> float:
        return float(v.sum() ** 2 / np.sum(v ** 2)) if len(v) else 0.0

    shares = np.where(treated, w / w[treated].sum(), w / w[~treated].sum())
    return {"ess": ess(w), "ess_treated": ess(w[treated]), "ess_control": ess(w[~treated]),
            "max_weight": float(w.max()), "max_weight_share": float(shares.max())}


def crump_threshold(e: np.ndarray) -> float:
    """The trimming threshold alpha of Crump, Hotz, Imbens & Mitnik 2009 (sec. 3).

    Among the subpopulations ``{alpha <= e <= 1 - alpha}`` it picks the one whose ATE has the smallest
    asymptotic variance bound under homoscedasticity, proportional to ``E[g | A] / P(A)`` with
    ``g = 1 / (e (1 - e))``. Over the rows sorted by ``g`` that is the ``k`` minimising
    ``sum_{i <= k} g_(i) / k^2``, whose first-order condition is the paper's rule
    ``1 / (alpha (1 - alpha)) = 2 E[g | g <= 1 / (alpha (1 - alpha))]``. Returns alpha (0 when
    keeping every row is best).
    """
    g = np.sort(1.0 / (e * (1.0 - e)))
    k = np.arange(1, len(g) + 1)
    best = int(np.argmin(np.cumsum(g) / k ** 2))
    if best == len(g) - 1:
        return 0.0
    # the largest kept g is g_(best); any alpha whose 1/(alpha(1-alpha)) lies in [g_(best), g_(best+1))
    # keeps exactly those rows: take the midpoint, so that rounding cannot flip a row at the boundary
    gamma = 0.5 * (g[best] + g[best + 1])
    return float(0.5 - np.sqrt(0.25 - 1.0 / gamma))


def trim_mask(e: np.ndarray, threshold: float) -> np.ndarray:
    """Rows kept by trimming at ``threshold``: ``threshold <= e <= 1 - threshold``."""
    return (e >= threshold) & (e <= 1.0 - threshold)


def overlap_support(t: np.ndarray, e: np.ndarray, bound: float = OVERLAP, poor_share: float = POOR_SHARE) -> dict:
    """Which estimands the data support, from the propensities of the rows analysed.

    An estimand needs, for each row it averages over, comparable rows of the other arm. Rows with
    ``e > 1 - bound`` have (almost) no untreated counterpart and rows with ``e < bound`` (almost) no
    treated one; their counterfactual rests on extrapolation or on a few huge weights. So:
    the ATT needs few treated rows above ``1 - bound``; the ATC few untreated rows below ``bound``;
    the ATE few rows of either arm outside ``[bound, 1 - bound]``; the ATO always holds (its weights
    e(1-e) vanish where overlap fails). "Few": at most ``poor_share`` of the rows concerned.
    """
    treated = np.asarray(t) == 1
    high, low = e > 1.0 - bound, e < bound
    outside = float(np.mean(high | low))
    treated_high = float(np.mean(high[treated])) if treated.any() else 0.0
    control_low = float(np.mean(low[~treated])) if (~treated).any() else 0.0
    return {
        "bounds": [bound, 1.0 - bound], "poor_share": poor_share,
        "share_outside": outside,
        "treated_above": treated_high,  # share of the treated rows with e > 1 - bound
        "control_below": control_low,  # share of the untreated rows with e < bound
        "poor": outside > poor_share,
        "supports": {"ate": outside <= poor_share, "att": treated_high <= poor_share,
                     "atc": control_low <= poor_share, "ato": True},
    }


def population_text(estimand: str, treatment: str, n_rows: int, n_treated: int, trim: dict | None = None) -> str:
    """The population an estimand describes, in words, e.g. for a result document and its report."""
    n_control = n_rows - n_treated
    base = {
        "ate": f"all {n_rows:,} rows ({n_treated:,} with {treatment} = 1 and {n_control:,} with {treatment} = 0)",
        "att": f"the {n_treated:,} treated rows ({treatment} = 1)",
        "atc": f"the {n_control:,} untreated rows ({treatment} = 0)",
        "ato": f"the overlap population: the {n_rows:,} rows each weighted by P({treatment}=1|x) (1 - P({treatment}=1|x)), "
               f"so that rows almost certain to be treated or untreated count almost nothing",
    }[estimand]
    if trim and trim.get("threshold"):
        low, high = trim["bounds"]
        dropped = trim["dropped"]
        base += (f", after trimming to P({treatment}=1|x) in [{low:.4g}, {high:.4g}] "
                 f"({dropped['total']:,} rows dropped: {dropped['treated']:,} treated, {dropped['control']:,} untreated)")
    return base
