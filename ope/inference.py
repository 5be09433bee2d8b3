"""Intervals from per-row terms: normal (influence function), Poisson bootstrap, empirical Bernstein.

A *contrast* is a linear combination of estimators on the same rows, e.g. candidate - baseline:
its influence function is the same combination of theirs, so a paired difference gets one interval
computed from the difference of per-row terms, never from two separate intervals.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from datasets.errors import InputError, Problem

from .estimators import Terms

CI_METHODS = ("normal", "bootstrap", "bernstein")
#: Share of bootstrap resamples in which the estimator must be defined for a percentile interval.
MIN_DEFINED_SHARE = 0.99


@dataclass(frozen=True)
class Interval:
    value: float
    se: float
    ci_low: float
    ci_high: float
    method: str

    def to_dict(self) -> dict:
        return {"value": self.value, "se": self.se, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "ci_method": self.method}


def _z(alpha: float) -> float:
    return float(stats.norm.ppf(1.0 - alpha / 2.0))


def contrast_value(terms: Sequence[Terms], coefs: Sequence[float]) -> float:
    return float(sum(c * t.value() for t, c in zip(terms, coefs)))


def contrast_influence(terms: Sequence[Terms], coefs: Sequence[float]) -> np.ndarray:
    return sum(c * t.influence() for t, c in zip(terms, coefs))


def normal_interval(terms: Sequence[Terms], coefs: Sequence[float], alpha: float) -> Interval:
    """Wald interval with the delta-method standard error sd(influence) / sqrt(n). For the
    self-normalised estimators this is the linearised (sandwich) variance, not the naive one."""
    value = contrast_value(terms, coefs)
    phi = contrast_influence(terms, coefs)
    n = len(phi)
    se = float(np.std(phi, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    half = _z(alpha) * se
    return Interval(value, se, value - half, value + half, "normal")


def contrast_bounds(terms: Sequence[Terms], coefs: Sequence[float]) -> tuple[float, float] | None:
    """A-priori range of sum_k c_k y_k from each term's range (interval arithmetic); None if unknown."""
    if any(t.bounds is None for t in terms):
        return None
    low = sum(c * (t.bounds[0] if c >= 0 else t.bounds[1]) for t, c in zip(terms, coefs))
    high = sum(c * (t.bounds[1] if c >= 0 else t.bounds[0]) for t, c in zip(terms, coefs))
    return low, high


def bernstein_interval(terms: Sequence[Terms], coefs: Sequence[float], alpha: float,
                       term_range: tuple[float, float] | None = None) -> Interval:
    """Empirical-Bernstein interval (Maurer & Pontil 2009, Thm 4; used for off-policy evaluation by
    Thomas, Theocharous & Ghavamzadeh 2015): for i.i.d. terms in [a, b], with probability >= 1 - delta
    |mean - E| <= sqrt(2 V ln(2/delta) / n) + 7 (b - a) ln(2/delta) / (3 (n - 1)), V the sample
    variance; delta = alpha / 2 per side. Valid in finite samples whatever the weights' tail, given
    the range [a, b]: `term_range`, else the terms' a-priori bounds (from a known reward range and
    weight bound), else -- no longer a guarantee, and the method says so -- the observed range.
    Only for plain-mean estimators (the self-normalised ones are ratios)."""
    if any(t.self_normalised for t in terms):
        raise InputError(Problem("--ci", "bernstein intervals need plain-mean estimators",
                                 fix="use ips, dr, dm, switch-dr, dr-os or pm-ips with --ci bernstein"))
    y = sum(c * (t.weighted + (t.direct if t.direct is not None else 0.0)) for t, c in zip(terms, coefs))
    n = len(y)
    value = float(np.mean(y))
    method = "bernstein"
    if term_range is None:
        term_range = contrast_bounds(terms, coefs)
    if term_range is None:
        term_range, method = (float(np.min(y)), float(np.max(y))), "bernstein-observed-range"
    low, high = term_range
    var = float(np.var(y, ddof=1)) if n > 1 else math.inf
    log_term = math.log(2.0 / (alpha / 2.0))
    half = math.sqrt(2.0 * var * log_term / n) + 7.0 * (high - low) * log_term / (3.0 * max(n - 1, 1))
    se = float(np.std(y, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Interval(value, se, value - half, value + half, method)


# --- Poisson bootstrap ---------------------------------------------------------------------------

def _poisson1_table(bits: int = 16) -> np.ndarray:
    """Inverse-CDF table mapping a uniform `bits`-bit integer to a Poisson(1) count."""
    size = 1 << bits
    cdf = np.cumsum(stats.poisson.pmf(np.arange(20), 1.0))
    u = (np.arange(size) + 0.5) / size
    return np.searchsorted(cdf, u).astype(np.uint8)


_TABLE = _poisson1_table()


def poisson_counts(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Poisson(1) resampling counts, drawn as 16-bit uniforms through an inverse-CDF table (the
    table quantises the Poisson(1) probabilities to 2^-16, far below bootstrap noise)."""
    return _TABLE[rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)]


def bootstrap_replicates(terms: Sequence[Terms], n_boot: int, seed: int, chunk: int = 32) -> np.ndarray:
    """Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012): row i enters each resample
    Poisson(1) times. Every estimator is recomputed from resampled sums, so the self-normalised ones
    are renormalised inside every resample. Returns an array (n_boot, len(terms)).

    Vectorised: a (chunk x n) count matrix times the (n x k) matrix of distinct term arrays."""
    n = terms[0].n
    columns: list[np.ndarray] = [np.ones(n)]
    index: dict[int, int] = {}

    def col(a: np.ndarray | None) -> int | None:
        if a is None:
            return None
        if id(a) not in index:
            index[id(a)] = len(columns)
            columns.append(a)
        return index[id(a)]

    layout = [(col(t.weighted), col(t.direct), col(t.norm)) for t in terms]
    matrix = np.column_stack(columns).astype(np.float64)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(terms)))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        counts = poisson_counts(rng, (size, n)).astype(np.float64)
        sums = counts @ matrix  # (size, k): every resample's sum of every term
        count = sums[:, 0]
        for j, (w, d, z) in enumerate(layout):
            with np.errstate(invalid="ignore", divide="ignore"):
                value = sums[:, w] / (sums[:, z] if z is not None else count)
                if d is not None:
                    value = value + sums[:, d] / count
            out[start:start + size, j] = value
    return out


def bootstrap_interval(replicates: np.ndarray, coefs: Sequence[float], point: float, alpha: float) -> Interval:
    """Percentile interval of a contrast from bootstrap replicates; the point estimate stays the
    full-sample one."""
    contrast = replicates @ np.asarray(coefs, dtype=np.float64)
    defined = np.isfinite(contrast)
    # a resample where the estimator is undefined (e.g. snips with no positive weight) cannot be
    # dropped quietly: beyond 1% of them the percentiles would describe another distribution
    if np.mean(defined) < MIN_DEFINED_SHARE or defined.sum() < 2:
        return Interval(point, math.nan, math.nan, math.nan, "bootstrap")
    contrast = contrast[defined]
    low, high = np.quantile(contrast, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(point, float(np.std(contrast, ddof=1)), float(low), float(high), "bootstrap")


def relative_interval(cand: Terms, base: Terms, alpha: float) -> tuple[float, float, float]:
    """(theta_c / theta_b - 1) with a delta-method interval: influence (phi_c - ratio phi_b) / theta_b."""
    theta_c, theta_b = cand.value(), base.value()
    if theta_b == 0:
        return math.nan, math.nan, math.nan
    ratio = theta_c / theta_b
    phi = (cand.influence() - ratio * base.influence()) / theta_b
    se = float(np.std(phi, ddof=1) / math.sqrt(len(phi)))
    half = _z(alpha) * se
    return ratio - 1.0, ratio - 1.0 - half, ratio - 1.0 + half
