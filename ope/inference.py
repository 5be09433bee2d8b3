"""Intervals from per-row terms: normal (influence function), Poisson bootstrap, empirical Bernstein.

A *contrast* is a linear combination of estimators on the same rows, e.g. candidate - baseline:
its influence function is the same combination of theirs, so a paired difference gets one interval
computed from the difference of per-row terms, never from two separate intervals.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from livegate.datasets.errors import InputError, Problem

from .estimators import Terms


def single_threaded_blas():
    """A context in which BLAS runs on one thread. A multi-threaded BLAS splits a dot product or a
    matrix product into per-thread partial sums whose order depends on the thread count, so the last
    digits of a variance would differ between machines (OMP_NUM_THREADS=1 changed `ess` and
    `mean_weight_se`); the products here are small (k x n by n x k) and lose little speed."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")

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


def z_quantile(alpha: float) -> float:
    """The two-sided standard-normal quantile z_{1 - alpha/2} (1.96 at alpha = 0.05); the one helper
    every normal interval in livegate, OPE or causal, uses."""
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)


def contrast_value(terms: Sequence[Terms], coefs: Sequence[float]) -> float:
    return float(sum(c * t.value() for t, c in zip(terms, coefs)))


class InfluenceCovariance:
    """The covariance matrix of several estimators' influence functions on the same rows.

    Every influence function is a linear combination of the terms' distinct per-row arrays
    (`Terms.influence`): for sum(b)/sum(c) + mean(d) it is (b - theta c) / mean(c) + d - mean(d).
    So their covariance is A C A', with C the covariance of the distinct arrays, a mergeable
    k x k Gram matrix accumulated over row blocks, and A the coefficients. No influence function is
    materialised, and the delta-method standard error of any contrast sum_k c_k theta_k is the
    quadratic form c' S c / n: estimates, paired and relative differences and the gate's re-levelled
    tests all read the rows once."""

    def __init__(self, terms: Sequence[Terms]):
        self.values = np.array([t.value() for t in terms], dtype=np.float64)
        columns, layout = _distinct_columns(terms)
        self.n = n = terms[0].n if terms else 0
        if n < 2:
            self.cov = np.full((len(terms), len(terms)), math.nan)
            return
        mean, cov_columns = _column_moments(columns, n)
        coef = np.zeros((len(terms), len(columns)))
        for k, (weighted, direct, norm) in enumerate(layout):
            if norm is None:
                coef[k, weighted] += 1.0
            elif mean[norm] == 0:
                coef[k, :] = math.nan  # the ratio is undefined, and so is its variance
                continue
            else:
                ratio = mean[weighted] / mean[norm]
                coef[k, weighted] += 1.0 / mean[norm]
                coef[k, norm] -= ratio / mean[norm]
            if direct is not None:
                coef[k, direct] += 1.0
        self.cov = coef @ cov_columns @ coef.T

    def se(self, index: Sequence[int], coefs: Sequence[float]) -> float:
        c = np.asarray(coefs, dtype=np.float64)
        keep = c != 0  # an undefined estimator (NaN influence) with coefficient 0 plays no part
        idx, c = np.asarray(index)[keep], c[keep]
        var = float(c @ self.cov[np.ix_(idx, idx)] @ c)
        return math.sqrt(max(var, 0.0) / self.n) if math.isfinite(var) else math.nan

    def interval(self, index: Sequence[int], coefs: Sequence[float], alpha: float) -> Interval:
        """Wald interval of sum_k c_k theta_k with the delta-method standard error sd(influence) /
        sqrt(n). For the self-normalised estimators this is the linearised (sandwich) variance."""
        value = float(sum(c * self.values[i] for i, c in zip(index, coefs)))
        se = self.se(index, coefs)
        half = z_quantile(alpha) * se
        return Interval(value, se, value - half, value + half, "normal")

    def relative(self, cand: int, base: int, alpha: float) -> tuple[float, float, float]:
        """(theta_c / theta_b - 1) with a delta-method interval: influence (phi_c - ratio phi_b) / theta_b."""
        theta_c, theta_b = self.values[cand], self.values[base]
        if theta_b == 0:
            return math.nan, math.nan, math.nan
        ratio = float(theta_c / theta_b)
        half = z_quantile(alpha) * self.se([cand, base], [1.0 / theta_b, -ratio / theta_b])
        return ratio - 1.0, ratio - 1.0 - half, ratio - 1.0 + half


def _distinct_columns(terms: Sequence[Terms]) -> tuple[list[np.ndarray], list[tuple[int | None, ...]]]:
    """The distinct per-row arrays of `terms` (by identity: estimators share their inputs) and, for
    each term, the column of its weighted, direct and norm arrays (None when absent)."""
    columns: list[np.ndarray] = []
    index: dict[int, int] = {}

    def column(a: np.ndarray | None) -> int | None:
        if a is None:
            return None
        if id(a) not in index:
            index[id(a)] = len(columns)
            columns.append(a)
        return index[id(a)]

    return columns, [(column(t.weighted), column(t.direct), column(t.norm)) for t in terms]


def _column_moments(columns: Sequence[np.ndarray], n: int, block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Means and covariance matrix (ddof 1) of the columns, from sums and a Gram matrix accumulated
    over row blocks through one reused buffer. Each column is shifted by the mean of its first block
    so that the Gram matrix does not cancel catastrophically when a mean dwarfs the spread."""
    k = len(columns)
    shift = np.array([float(np.mean(c[:block])) for c in columns])
    buffer = np.empty((k, min(block, n)))
    gram, sums = np.zeros((k, k)), np.zeros(k)
    with single_threaded_blas():
        for start in range(0, n, block):
            rows = buffer[:, :min(block, n - start)]
            for j, c in enumerate(columns):
                np.subtract(c[start:start + block], shift[j], out=rows[j])
            gram += rows @ rows.T
            sums += rows.sum(axis=1)
    centred = sums / n
    return shift + centred, (gram - n * np.outer(centred, centred)) / (n - 1)


def normal_interval(terms: Sequence[Terms], coefs: Sequence[float], alpha: float) -> Interval:
    """Wald interval of one contrast of `terms` (see `InfluenceCovariance.interval`)."""
    return InfluenceCovariance(terms).interval(range(len(terms)), coefs, alpha)


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
    bound = _BernsteinBound(terms, coefs, term_range)
    half = bound.half_width(alpha)
    return Interval(bound.value, bound.se, bound.value - half, bound.value + half, bound.method)


def bernstein_p_value(terms: Sequence[Terms], coefs: Sequence[float], null: float) -> float:
    """The smallest alpha at which the Bernstein interval of the contrast excludes `null`: the
    half-width is A sqrt(L) + B L with L = ln(4 / alpha), so L solves a quadratic in sqrt(L)."""
    return _BernsteinBound(terms, coefs).p_value(null)


def bernstein_needs_plain_means(estimators: Sequence[str] = ()) -> Problem:
    named = f" ({', '.join(estimators)}: ratios of sums)" if estimators else ""
    return Problem("--ci", f"bernstein intervals need plain-mean estimators{named}",
                   fix="use ips, dr, dm, switch-dr, dr-os, pm-ips or mips for bernstein intervals")


class _BernsteinBound:
    """The sample quantities of `bernstein_interval`: mean, variance and range of the contrast's terms."""

    def __init__(self, terms: Sequence[Terms], coefs: Sequence[float], term_range: tuple[float, float] | None = None):
        if any(t.self_normalised for t in terms):
            raise InputError(bernstein_needs_plain_means())
        y = sum(c * (t.weighted + (t.direct if t.direct is not None else 0.0)) for t, c in zip(terms, coefs))
        self.n = n = len(y)
        self.value = float(np.mean(y))
        self.method = "bernstein"
        if term_range is None:
            term_range = contrast_bounds(terms, coefs)
        if term_range is None:
            term_range, self.method = (float(np.min(y)), float(np.max(y))), "bernstein-observed-range"
        self.width = term_range[1] - term_range[0]
        self.var = float(np.var(y, ddof=1)) if n > 1 else math.inf
        self.se = math.sqrt(self.var / n) if n > 1 else math.nan

    def _coefficients(self) -> tuple[float, float]:
        """(A, B) of the half-width A sqrt(L) + B L."""
        return math.sqrt(2.0 * self.var / self.n), 7.0 * self.width / (3.0 * max(self.n - 1, 1))

    def half_width(self, alpha: float) -> float:
        a, b = self._coefficients()
        log_term = math.log(2.0 / (alpha / 2.0))
        return a * math.sqrt(log_term) + b * log_term

    def p_value(self, null: float) -> float:
        a, b = self._coefficients()
        distance = abs(self.value - null)
        if not (math.isfinite(a) and math.isfinite(distance)):
            return math.nan
        denominator = a + math.sqrt(a * a + 4.0 * b * distance)
        if denominator == 0:  # no spread and no range: any distance is decisive
            return 0.0 if distance > 0 else 1.0
        # the positive root of B s^2 + A s - distance = 0, s = sqrt(L), in the form without cancellation
        root = 2.0 * distance / denominator
        return min(1.0, 4.0 * math.exp(-root * root))


def normal_p_value(value: float, se: float, null: float) -> float:
    """Two-sided Wald p-value: the smallest alpha at which the normal interval excludes `null`."""
    if not (math.isfinite(se) and se > 0 and math.isfinite(value)):
        return math.nan
    return math.erfc(abs(value - null) / se / math.sqrt(2.0))  # 2 Phi(-|z|), without cancellation in the tail


# --- Poisson bootstrap ---------------------------------------------------------------------------

def _poisson1_table(bits: int = 16) -> np.ndarray:
    """Inverse-CDF table mapping a uniform `bits`-bit integer to a Poisson(1) count."""
    size = 1 << bits
    cdf = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(20)])  # Poisson(1) pmf
    u = (np.arange(size) + 0.5) / size
    return np.searchsorted(cdf, u).astype(np.uint8)


_TABLE = _poisson1_table()


_TABLE_FLOAT = _TABLE.astype(np.float64)


def poisson_counts(rng: np.random.Generator, shape: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Poisson(1) resampling counts as float64 (ready for the matrix product), drawn as 16-bit
    uniforms through an inverse-CDF table (the table quantises the Poisson(1) probabilities to
    2^-16, far below bootstrap noise). The uniforms are the generator's raw 64-bit output cut in
    four: a quarter of the generator calls of drawing 16-bit integers one by one. `out`, when
    given, is reused (a chunked bootstrap then maps its memory once)."""
    size = shape[0] * shape[1]
    bits = rng.bit_generator.random_raw(-(-size // 4)).view(np.uint16)[:size].reshape(shape)
    # mode="clip": every 16-bit index is valid, and numpy then writes straight into `out`
    return np.take(_TABLE_FLOAT, bits, out=out[:shape[0]] if out is not None else None, mode="clip")


def bootstrap_replicates(terms: Sequence[Terms], n_boot: int, seed: int, chunk: int = 32) -> np.ndarray:
    """Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012): row i enters each resample
    Poisson(1) times. Every estimator is recomputed from resampled sums, so the self-normalised ones
    are renormalised inside every resample. Returns an array (n_boot, len(terms)).

    Vectorised: a (chunk x n) count matrix times the (n x k) matrix of distinct term arrays."""
    n = terms[0].n
    columns, layout = _distinct_columns(terms)
    matrix = np.column_stack([*columns, np.ones(n)]).astype(np.float64)  # the last column counts rows
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(terms)))
    buffer = np.empty((min(chunk, n_boot), n))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        counts = poisson_counts(rng, (size, n), out=buffer)
        with single_threaded_blas():
            sums = counts @ matrix  # (size, k): every resample's sum of every term
        count = sums[:, -1]
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


def bootstrap_p_value(replicates: np.ndarray, coefs: Sequence[float], null: float) -> float:
    """The smallest alpha at which the percentile interval excludes `null`, counted conservatively:
    2 (k + 1) / (B + 1) with k the replicates on the smaller side of `null` (Davison & Hinkley 1997,
    eq. 4.11, two-sided). NaN where the interval itself is undefined."""
    contrast = replicates @ np.asarray(coefs, dtype=np.float64)
    defined = np.isfinite(contrast)
    if np.mean(defined) < MIN_DEFINED_SHARE or defined.sum() < 2 or not math.isfinite(null):
        return math.nan
    contrast = contrast[defined]
    smaller_side = min(int(np.count_nonzero(contrast <= null)), int(np.count_nonzero(contrast >= null)))
    return min(1.0, 2.0 * (smaller_side + 1) / (contrast.size + 1))
