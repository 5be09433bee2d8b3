"""Per-policy weight diagnostics and the plain-language warnings derived from them."""
from __future__ import annotations

import math

import numpy as np

#: A mean weight this many standard errors from 1 is a finding, not noise.
MEAN_WEIGHT_Z = 4.0
#: ... and only when it is also this far from 1: at 1e7 rows a propensity rounded to 3 decimals is
#: "significant" without mattering.
MEAN_WEIGHT_TOLERANCE = 0.01
#: Width, in standard errors of the mean weight, of the bounds on the unsupported mass.
UNSUPPORTED_Z = 3.0


def weight_diagnostics(weight: np.ndarray) -> dict:
    """n, effective sample size (sum w)^2 / sum w^2 (Kong 1992), weight statistics and a histogram.

    Under correct propensities E_pi0[w] = sum of pi_e over actions the logging policy supports, so
    max(0, 1 - mean(w)) estimates the candidate's probability mass outside the logging policy's
    support (`unsupported_mass`, with bounds at 3 standard errors); a mean weight
    significantly above 1 can only mean wrong propensities.
    """
    n = len(weight)
    top = float(weight.max()) if n else 0.0
    constant = n and top == float(weight.min())  # the logging policy's weights are all 1: nothing to sum or sort
    if constant:
        total, total_sq = n * top, n * top * top
    else:
        # einsum, not np.dot: a threaded BLAS dot's last digits depend on the thread count
        total, total_sq = float(np.sum(weight)), float(np.einsum("i,i->", weight, weight))
    qs = [top] * 3 if constant else np.quantile(weight, [0.5, 0.9, 0.99]) if n else [math.nan] * 3
    n_positive = (n if top > 0 else 0) if constant else int(np.count_nonzero(weight > 0))
    edges = _edges(top)
    counts = _histogram(np.array([top]), edges) * n if constant else _histogram(weight, edges)
    return diagnostics_from_sums(n, total, total_sq, top, n_positive, qs, edges, counts)


def diagnostics_from_sums(n: int, total: float, total_sq: float, top: float, n_positive: int, quantiles,
                          edges: np.ndarray, counts: np.ndarray) -> dict:
    """`weight_diagnostics` from the weights' sums, largest value, positive count, quantiles (at 0.5,
    0.9, 0.99) and histogram: what a streamed evaluation merges over partitions (ope/streaming.py)."""
    mean = total / n
    # from the two sums, not np.std: no full-size temporaries (weights are O(1), so no cancellation to fear)
    se = math.sqrt(max(total_sq - n * mean * mean, 0.0) / (n - 1) / n) if n > 1 else math.nan
    # Bounds at 3 standard errors (one-sided 99.9%): the mean of heavy weights is noisy and skewed
    # (its sample mean falls short of 1 more often than it overshoots). The gate reads the upper bound:
    # a candidate passes only when the data show that its unsupported mass is below the ceiling
    margin = UNSUPPORTED_Z * (se if math.isfinite(se) else 0.0)
    unsupported = min(1.0, max(0.0, 1.0 - mean))
    unsupported_lower = min(1.0, max(0.0, 1.0 - mean - margin))
    unsupported_upper = min(1.0, max(0.0, 1.0 - mean + margin))
    return {
        "n": n,
        "ess": total * total / total_sq if total_sq > 0 else 0.0,
        "max_weight": top,
        "mean_weight": mean,
        "mean_weight_se": se,
        "zero_weight_fraction": 1.0 - n_positive / n if n else math.nan,
        "unsupported_mass": unsupported,
        "unsupported_mass_lower": unsupported_lower,
        "unsupported_mass_upper": unsupported_upper,
        "weight_quantiles": {"0.5": float(quantiles[0]), "0.9": float(quantiles[1]), "0.99": float(quantiles[2])},
        "weight_histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def mean_weight_z(diag: dict) -> float:
    """How many standard errors the mean weight lies above 1 (negative below; +inf for constant weights
    above 1, which no correct propensities give; 0 when there is nothing to tell)."""
    excess, se = diag["mean_weight"] - 1.0, diag["mean_weight_se"]
    if se is None or not math.isfinite(se) or not math.isfinite(excess):
        return 0.0
    if se == 0:
        return math.inf if excess > 0 else -math.inf if excess < 0 else 0.0
    return excess / se


def _histogram(weight: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """np.histogram's counts (bins [e_i, e_i+1), the last one closed; weights above the last edge
    in the last bin) by one binary search per weight in the few edges: np.histogram sorts the data
    when the bins are not uniform."""
    bins = len(edges) - 1
    index = np.searchsorted(edges, weight, side="right") - 1
    np.clip(index, 0, bins - 1, out=index)
    return np.bincount(index, minlength=bins)


def _edges(top: float) -> np.ndarray:
    upper = max(2.0, float(np.ceil(top)))
    if upper <= 20:
        return np.linspace(0.0, upper, 21)
    return np.concatenate([[0.0], np.geomspace(0.05, upper, 24)])


#: Warn when the Kish effective sample size (sum w)^2 / sum w^2 is below this share of the rows...
LOW_ESS_SHARE = 0.10
#: ... or below this many rows, whatever n. Why 10%: ESS / n = 1 / (1 + CV(w)^2), so below 10% the
#: weights' coefficient of variation exceeds 3, the estimate's variance is over ten times that of an
#: on-policy sample of the same size, and the normal approximation behind the intervals rests on
#: the few largest weights (Kish 1965; Owen 2013, ch. 9, uses the same ratio as a warning sign). The
#: old 1% threshold let a candidate worth 5% of its rows pass with "no warnings". Why 100 rows:
#: with fewer effective rows no interval here is trustworthy, however large n is.
LOW_ESS_ROWS = 100.0
#: Warn when the largest single weight is this share of the sum of all weights: one row then moves
#: an IPS estimate by that share of itself.
MAX_WEIGHT_SHARE = 0.05


def warnings_for(diag: dict, *, estimated_propensities: bool = False, compact: bool = False) -> list[str]:
    """Plain-language warnings for an analyst reading the report."""
    out: list[str] = []
    n, ess = diag["n"], diag["ess"]
    if n and ess < max(LOW_ESS_ROWS, LOW_ESS_SHARE * n):
        below = f"below {LOW_ESS_SHARE:.0%} of the rows" if ess < LOW_ESS_SHARE * n else f"below {LOW_ESS_ROWS:,.0f}"
        out.append(f"Low effective sample size: {ess:,.0f} of {n:,} rows ({ess / n:.1%}, {below}): the estimate "
                   "rests on a few heavily weighted rows; expect wide intervals and prefer self-normalised or DR "
                   "estimators.")
    mean, se = diag["mean_weight"], diag["mean_weight_se"]
    if se and se > 0 and abs(mean - 1.0) / se > MEAN_WEIGHT_Z and abs(mean - 1.0) > MEAN_WEIGHT_TOLERANCE:
        if mean < 1:
            out.append(f"Mean importance weight is {mean:.3f} (should be 1): about {1 - mean:.1%} of the candidate's "
                       "probability falls on actions the logging policy never takes, or the logged propensities are too large.")
        else:
            out.append(f"Mean importance weight is {mean:.3f} (should be 1 and can only be 1 or less): the logged "
                       "propensities look wrong (too small, or not the probability of the logged action).")
    top, total = diag["max_weight"], mean * n if n else 0.0
    if top > 100:
        out.append(f"Largest weight is {top:,.0f}: single rows can move IPS; clipping (ips:clip=...) "
                   "or DR variants are more stable.")
    elif total > 0 and top / total > MAX_WEIGHT_SHARE:
        out.append(f"The largest weight ({top:,.3g}) is {top / total:.1%} of the sum of all weights: a single row "
                   "moves IPS by that share; clipping (ips:clip=...) or DR variants are more stable.")
    if estimated_propensities:
        out.append("Propensities were estimated from the context, not logged: results are only as good as that model.")
    if compact:
        out.append("Compact policy form (pi_<NAME> columns): the sum-to-one and support checks could not be made.")
    return out


def reward_model_warning(quality: dict | None) -> list[str]:
    """The reward model's warning, if any: no better than a constant on held-out folds
    (`worse_than_constant`, see reward_model._quality), else a held-out R^2 below 0.01."""
    if not quality:
        return []
    if quality.get("worse_than_constant"):
        loss = "log-loss" if quality.get("loss") == "log_loss" else "mean squared error"
        model, constant = quality.get("loss_model"), quality.get("loss_constant")
        numbers = f" ({loss} {model:.4g}, a constant's {constant:.4g})" \
            if isinstance(model, float) and isinstance(constant, float) else ""
        return [f"The reward model does no better than a constant on held-out rows{numbers}: DM's values are not "
                "to be trusted, and DR, SNDR, Switch-DR and DR-OS gain nothing from it over importance weighting. "
                "Prefer IPS/SNIPS, or give the model informative context (--context) or your own predictions "
                "(--q-hat)."]
    r2 = quality.get("r2")
    if r2 is not None and math.isfinite(r2) and r2 < 0.01:
        return [f"The reward model explains almost nothing held out (R^2 = {r2:.3f}): DM is unreliable and DR "
                "gains little over IPS."]
    return []
