"""Intervals from per-row terms: robust (the default), normal (influence function), Poisson bootstrap,
empirical Bernstein.

A *contrast* is a linear combination of estimators on the same rows, e.g. candidate - baseline:
its influence function is the same combination of theirs, so a paired difference gets one interval
computed from the difference of per-row terms, never from two separate intervals.

Every method keeps an estimand with a known range inside it: a policy's value of a 0/1 reward or of a
metric with a configured range lies in [low, high], a contrast sum_k c_k theta_k in the interval sum
of c_k [low, high] (for a difference [low - high, high - low]), so an interval end beyond it is
replaced by the bound (`within_range`): the truth lies in the clipped interval whenever it lay in the
original one, so coverage is unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from livegate.datasets.errors import InputError, Problem
from livegate.datasets.gate_config import DEFAULT_CI  # noqa: F401  (one default for evaluate and the gate)

from .estimators import Terms


def single_threaded_blas():
    """A context in which BLAS runs on one thread. A multi-threaded BLAS splits a dot product or a
    matrix product into per-thread partial sums whose order depends on the thread count, so the last
    digits of a variance would differ between machines (OMP_NUM_THREADS=1 changed `ess` and
    `mean_weight_se`); the products here are small (k x n by n x k) and lose little speed."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")

CI_METHODS = ("robust", "normal", "bootstrap", "bernstein")
#: A robust interval reports an end only if that side's tail of the influence terms spreads over at
#: least this many effective rows (`TailShape`): the rule of ten events behind the normal approximation
#: of a count, applied to the rows that carry one side's deviations.
MIN_TAIL_ROWS = 10.0
#: A robust interval keeps the normal end on a side while the first-order excess of that side's miss
#: rate due to skewness is at most this share of its nominal alpha/2 (`skew_tolerance`): a quarter,
#: because the sample skewness understates a heavy tail's (benchmarks/README_coverage.md).
SKEW_EXCESS_SHARE = 0.25
#: Share of bootstrap resamples in which the estimator must be defined for a percentile interval.
MIN_DEFINED_SHARE = 0.99


@dataclass(frozen=True)
class Interval:
    value: float
    se: float
    ci_low: float
    ci_high: float
    method: str
    #: robust intervals: "lower", "upper" or "both", the ends the data cannot set, which are then the
    #: estimand's a-priori bound, or infinite (null in JSON) when no range is known
    open_end: str | None = None
    #: robust intervals: the ends set by Cantelli's inequality, the skewness toward them being too large
    #: for the normal approximation
    cantelli_end: str | None = None

    def to_dict(self) -> dict:
        out = {"value": self.value, "se": self.se, "ci_low": self.ci_low, "ci_high": self.ci_high,
               "ci_method": self.method}
        if self.open_end:
            out["ci_open"] = self.open_end
        if self.cantelli_end:
            out["ci_cantelli"] = self.cantelli_end
        return out


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
    tests all read the rows once.

    Built from the terms (in memory), or with `from_moments` from the merged `Moments` of the distinct
    arrays (a streamed or distributed evaluation): the coefficient algebra, the standard errors, the
    intervals and the tail-shape finalisation are the same code for both."""

    def __init__(self, terms: Sequence[Terms]):
        columns, layout = distinct_columns(terms)
        n = terms[0].n if terms else 0
        mean, cov_columns = _column_moments(columns, n) if n >= 2 else (None, None)
        self._finish([t.value() for t in terms], layout, n, mean, cov_columns)
        # kept (references, no copies) for the tail shape of a contrast's influence function
        self.columns = columns

    @classmethod
    def from_moments(cls, values: Sequence[float], layout: Sequence[tuple[int | None, ...]],
                     moments: "Moments") -> "InfluenceCovariance":
        """From the estimators' values, the layout of their distinct columns (`distinct_columns`) and
        the columns' merged `Moments`: no per-row array (`tail_shape` then needs `tail_sums` of the
        rows, reduced by the caller, and `TailShape.from_sums`)."""
        self = cls.__new__(cls)
        n = moments.n
        self._finish(values, layout, n, moments.mean if n >= 2 else None, moments.covariance() if n >= 2 else None)
        self.columns = None
        return self

    def _finish(self, values, layout, n: int, mean: np.ndarray | None, cov_columns: np.ndarray | None) -> None:
        """The coefficients A of every estimator's influence function over the distinct columns
        (delta method: a ratio sum(b)/sum(c) contributes b / mean(c) - theta c / mean(c)) and the
        estimators' covariance A C A'."""
        self.values = np.array(values, dtype=np.float64)
        self.layout, self.n, self.mean = list(layout), n, mean
        k = len(self.layout)
        if mean is None:
            self.cov = np.full((k, k), math.nan)
            self.coef = None
            return
        coef = np.zeros((k, len(mean)))
        for j, (weighted, direct, norm) in enumerate(self.layout):
            if norm is None:
                coef[j, weighted] += 1.0
            elif mean[norm] == 0:
                coef[j, :] = math.nan  # the ratio is undefined, and so is its variance
                continue
            else:
                ratio = mean[weighted] / mean[norm]
                coef[j, weighted] += 1.0 / mean[norm]
                coef[j, norm] -= ratio / mean[norm]
            if direct is not None:
                coef[j, direct] += 1.0
        self.cov = coef @ cov_columns @ coef.T
        self.coef = coef

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

    def contrast_vector(self, index: Sequence[int], coefs: Sequence[float]) -> np.ndarray | None:
        """a = c' A: the contrast's influence function psi = a' (x - mean(x)) over the distinct
        columns x; None when it is undefined (fewer than 2 rows, an undefined ratio)."""
        if self.coef is None:
            return None
        c = np.asarray(coefs, dtype=np.float64)
        keep = c != 0  # an undefined estimator (NaN influence) with coefficient 0 plays no part
        a = np.sum(c[keep, None] * self.coef[np.asarray(index)[keep]], axis=0)
        return a if np.all(np.isfinite(a)) else None

    def tail_shape(self, index: Sequence[int], coefs: Sequence[float], block: int = 1 << 16) -> "TailShape":
        """The `TailShape` of the contrast sum_k c_k theta_k's influence function psi = a' (x - mean(x)),
        x the distinct per-row arrays and a = c' A (see the class): `tail_sums` of the rows, then
        `TailShape.from_sums`."""
        a = self.contrast_vector(index, coefs)
        if a is None:
            return TailShape(math.nan, self.n, math.nan, math.nan)
        if self.columns is None:
            raise RuntimeError("this covariance was built from merged moments: reduce `tail_sums` over the "
                               "rows and call TailShape.from_sums")
        return TailShape.from_sums(tail_sums(self.columns, self.mean, a, block), self.n)

    def relative(self, cand: int, base: int, alpha: float) -> tuple[float, float, float]:
        """(theta_c / theta_b - 1) with a delta-method interval: influence (phi_c - ratio phi_b) / theta_b."""
        theta_c, theta_b = self.values[cand], self.values[base]
        if theta_b == 0:
            return math.nan, math.nan, math.nan
        ratio = float(theta_c / theta_b)
        half = z_quantile(alpha) * self.se([cand, base], [1.0 / theta_b, -ratio / theta_b])
        return ratio - 1.0, ratio - 1.0 - half, ratio - 1.0 + half


def tail_sums(columns: Sequence[np.ndarray], mean: np.ndarray, a: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """The six sums behind a `TailShape` of psi = a' (x - mean) over these rows: of psi^2, psi^3, and of
    the squares and fourth powers of psi's positive and negative parts. Sums over disjoint row sets
    add, so a streamed evaluation reduces them partition by partition around the GLOBAL mean.
    Accumulated over row blocks through reused buffers; elementwise products and pairwise sums, no
    BLAS: the same digits whatever the thread count."""
    n = len(columns[0]) if columns else 0
    used = np.flatnonzero(a != 0)
    sums = np.zeros(6)
    if n == 0:
        return sums
    psi, square, tmp = (np.empty(min(block, n)) for _ in range(3))
    for start in range(0, n, block):
        size = min(block, n - start)
        rows, sq, work = psi[:size], square[:size], tmp[:size]
        rows.fill(0.0)
        for j in used:  # centred column by column: no cancellation when a mean dwarfs the spread
            np.subtract(columns[j][start:start + size], mean[j], out=work)
            work *= a[j]
            rows += work
        np.multiply(rows, rows, out=sq)
        sums[0] += sq.sum()
        sums[1] += np.multiply(sq, rows, out=work).sum()
        for side, positive in ((2, True), (4, False)):
            np.multiply(sq, (rows > 0) if positive else (rows < 0), out=work)
            sums[side] += work.sum()
            sums[side + 1] += np.multiply(work, work, out=work).sum()
    return sums


@dataclass
class Moments:
    """Count, means and co-moment matrix M2 = sum (x - mean)(x - mean)' of k per-row columns: a
    mergeable reduction (`merge`), so that partitions of the rows give the covariance of all of them.

    `merge` is the pairwise update of Chan, Golub & LeVeque (1979, "Updating formulae and a pairwise
    algorithm for computing sample variances"; the matrix form is Bennett et al. 2009): with
    delta = mean_b - mean_a, n = n_a + n_b, mean = mean_a + delta n_b / n and
    M2 = M2_a + M2_b + delta delta' n_a n_b / n. Unlike raw sums of squares it does not cancel when a
    mean dwarfs the spread."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, columns: Sequence[np.ndarray]) -> "Moments":
        """The moments of these rows (`_column_moments`, shifted block sums: the in-memory path's own)."""
        k = len(columns)
        n = len(columns[0]) if k else 0
        if n < 2:
            mean = np.array([float(c[0]) for c in columns]) if n == 1 else np.zeros(k)
            return cls(n, mean, np.zeros((k, k)))
        mean, cov = _column_moments(columns, n)
        return cls(n, mean, cov * (n - 1))

    def merge(self, other: "Moments") -> "Moments":
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, m2)

    def covariance(self) -> np.ndarray:
        """ddof 1."""
        return self.m2 / (self.n - 1)


def distinct_columns(terms: Sequence[Terms]) -> tuple[list[np.ndarray], list[tuple[int | None, ...]]]:
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
    return _BernsteinBound(terms, coefs, term_range).interval(alpha)


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
        n = len(y)
        if term_range is None:
            term_range = contrast_bounds(terms, coefs)
        self._set(float(np.mean(y)), float(np.var(y, ddof=1)) if n > 1 else math.inf, n, term_range,
                  lambda: (float(np.min(y)), float(np.max(y))))

    @classmethod
    def from_stats(cls, value: float, var: float, n: int, term_range: tuple[float, float] | None,
                   observed_range) -> "_BernsteinBound":
        """From merged sums (a streamed evaluation): the contrast's mean, variance (ddof 1), n, its
        a-priori range (None if unknown) and a callable giving the observed (min, max) of its terms."""
        self = cls.__new__(cls)
        self._set(value, var if n > 1 else math.inf, n, term_range, observed_range)
        return self

    def _set(self, value: float, var: float, n: int, term_range, observed_range) -> None:
        self.n, self.value, self.var, self.method = n, value, var, "bernstein"
        if term_range is None:
            term_range, self.method = observed_range(), "bernstein-observed-range"
        self.width = term_range[1] - term_range[0]
        self.se = math.sqrt(self.var / n) if n > 1 else math.nan

    def _coefficients(self) -> tuple[float, float]:
        """(A, B) of the half-width A sqrt(L) + B L."""
        return math.sqrt(2.0 * self.var / self.n), 7.0 * self.width / (3.0 * max(self.n - 1, 1))

    def interval(self, alpha: float) -> Interval:
        half = self.half_width(alpha)
        return Interval(self.value, self.se, self.value - half, self.value + half, self.method)

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


# --- robust: the normal interval, each end checked against its side's tail ----------------------

def _kish(square_sum: float, fourth_sum: float) -> float:
    """Effective number of rows (sum u)^2 / sum u^2 of the non-negative amounts u = psi^2 on one side
    (Kish 1965's effective sample size, read as: over how many equal rows one side's share of the
    variance is spread); 0 when the side has no deviation at all."""
    return float(square_sum * square_sum / fourth_sum) if fourth_sum > 0 else 0.0


#: How a robust interval sets one end (`TailShape.ends`)
NORMAL_END, CANTELLI_END, OPEN_END = "normal", "cantelli", "open"


@dataclass(frozen=True)
class TailShape:
    """What a robust interval reads of a contrast's influence terms psi beyond its standard error:
    the sample skewness m3 / m2^1.5, n, and the effective number of rows (`_kish`) in psi's right
    (positive) and left (negative) tails."""

    skew: float
    n: int
    upper_rows: float
    lower_rows: float

    @classmethod
    def from_sums(cls, sums: np.ndarray, n: int) -> "TailShape":
        """From `tail_sums`: skewness m3 / m2^1.5 and each side's `_kish` effective rows."""
        m2, m3 = sums[0] / n, sums[1] / n
        skew = m3 / m2 ** 1.5 if m2 > 0 else 0.0
        return cls(float(skew), n, _kish(sums[2], sums[3]), _kish(sums[4], sums[5]))

    def skew_rate(self, upper: bool) -> float:
        """The skewness toward one side over sqrt(n): positive when that side's tail is the longer one."""
        return (1.0 if upper else -1.0) * self.skew / math.sqrt(self.n)

    def ends(self, alpha: float) -> tuple[str, str]:
        """How the (lower, upper) ends of a level 1 - alpha interval are set.

        OPEN_END when that side's tail spreads over fewer than MIN_TAIL_ROWS effective rows: the
        sample has too few of the rows that make that side's deviations for any end to be read off it.
        CANTELLI_END when the skewness toward that side exceeds `skew_tolerance(alpha)`: to first
        order (Edgeworth expansion of the studentised mean, P(T <= x) = Phi(x) + gamma (2x^2 + 1)
        phi(x) / (6 sqrt n) + O(1/n); Hall 1992, The Bootstrap and Edgeworth Expansion, Sec. 2.6)
        a skewness gamma > 0 raises the chance that the truth lies above the normal upper end from
        alpha/2 by gamma (2z^2 + 1) phi(z) / (6 sqrt n), and the sample's gamma understates a heavy
        tail's; the end then rests on Cantelli's inequality, which needs no normality, only the
        variance. NORMAL_END otherwise."""
        if not (math.isfinite(self.skew) and self.n > 1):
            return OPEN_END, OPEN_END
        tolerance = skew_tolerance(alpha)

        def end(upper: bool) -> str:
            if not (self.upper_rows if upper else self.lower_rows) >= MIN_TAIL_ROWS:
                return OPEN_END
            return CANTELLI_END if self.skew_rate(upper) > tolerance else NORMAL_END

        return end(False), end(True)


def skew_tolerance(alpha: float) -> float:
    """The largest skewness / sqrt(n) toward a side at which that side's normal end stands:
    gamma (2z^2 + 1) phi(z) / (6 sqrt n) <= s alpha/2 with z = z_{1 - alpha/2} and s = SKEW_EXCESS_SHARE
    (the first-order excess of the miss rate on that side at most a share s of its nominal alpha/2),
    i.e. 3 s alpha / ((2z^2 + 1) phi(z)): 0.074 at alpha = 0.05. Increasing in alpha (`tolerance_level`)."""
    z = z_quantile(alpha)
    return 3.0 * SKEW_EXCESS_SHARE * alpha / ((2.0 * z * z + 1.0) * _phi(z))


def _phi(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def tolerance_level(rate: float) -> float:
    """The smallest alpha with skew_tolerance(alpha) >= rate: from this level on a side with that
    skewness rate gets its normal end. Bisection on z = z_{1 - alpha/2}, over which the tolerance
    3 s erfc(z / sqrt 2) / ((2z^2 + 1) phi(z)) decreases; the bracket's side that meets the
    tolerance is returned, so the level is never below the exact one. 1.0: not even at alpha = 1."""
    def tolerance(z: float) -> float:
        return 3.0 * SKEW_EXCESS_SHARE * math.erfc(z / math.sqrt(2.0)) / ((2.0 * z * z + 1.0) * _phi(z))

    if rate <= 0:
        return 0.0
    if tolerance(0.0) < rate:
        return 1.0
    low, high = 0.0, 37.0  # tolerance(37) ~ 1e-5: a smaller rate meets it at any alpha above 1e-299
    if tolerance(high) >= rate:
        return 0.0
    while high - low > 1e-12:
        middle = 0.5 * (low + high)
        low, high = (middle, high) if tolerance(middle) >= rate else (low, middle)
    return math.erfc(low / math.sqrt(2.0))


def cantelli_multiplier(alpha: float) -> float:
    """k with 1 / (1 + k^2) = alpha/2: by Cantelli's one-sided Chebyshev inequality, P(mean - E >= k sd)
    <= 1 / (1 + k^2) for any distribution with a variance (Cantelli 1928); 6.24 at alpha = 0.05."""
    return math.sqrt(2.0 / alpha - 1.0)


def robust_interval(value: float, se: float, shape: TailShape, alpha: float) -> Interval:
    """The default interval: the normal (delta-method) one, value -/+ z se, whose ends the tails
    cannot support are set otherwise (`TailShape.ends`): an end toward a skewed side is
    value -/+ k se with Cantelli's k (`cantelli_multiplier`), and an end whose side has too few
    effective rows is open: -inf / +inf here, the estimand's a-priori bound once `within_range` applies.

    Why: for heavy-tailed terms no interval computed from the sample alone holds its level whatever
    the distribution (Bahadur & Savage 1956), and a sample that missed the rare large terms has both a
    low estimate and a low standard error, so the normal interval misses on the heavy side: on the
    simulator's paired differences at 5,000-20,000 rows it covered 81-96% for watch time and 72-93%
    for gift value (benchmarks/README_coverage.md). Skewness-corrected (Hall 1992) and studentised-
    bootstrap intervals read the same sample and missed nearly as often; with these rules every
    paired difference of ips and snips covered 95-100% there (dr with a deliberately wrong reward
    model: 91-100%), and the light side keeps the normal end, so the gate's power is kept."""
    if not (math.isfinite(value) and math.isfinite(se)):
        return Interval(value, se, math.nan, math.nan, "robust")
    low_end, high_end = shape.ends(alpha)
    half = {NORMAL_END: z_quantile(alpha) * se, CANTELLI_END: cantelli_multiplier(alpha) * se, OPEN_END: math.inf}
    return Interval(value, se, value - half[low_end], value + half[high_end], "robust",
                    _sides(low_end == OPEN_END, high_end == OPEN_END),
                    _sides(low_end == CANTELLI_END, high_end == CANTELLI_END))


def robust_p_value(value: float, se: float, shape: TailShape, null: float) -> float:
    """The smallest alpha at which `robust_interval` excludes `null`, on the side of `null`: 1 if that
    end is open; else, with d = |value - null| / se, the end is Cantelli's below the level
    `tolerance_level` from which the normal end stands, and Cantelli's end excludes `null` from
    alpha = 2 / (1 + d^2) on, the normal end from erfc(d / sqrt 2) on: p = min(2 / (1 + d^2),
    max(level, erfc(d / sqrt 2)))."""
    if not (math.isfinite(value) and math.isfinite(se) and math.isfinite(null) and math.isfinite(shape.skew)):
        return math.nan
    if null == value:
        return 1.0
    upper = null > value
    if not (shape.upper_rows if upper else shape.lower_rows) >= MIN_TAIL_ROWS:
        return 1.0
    if se == 0:
        return 0.0
    d = abs(value - null) / se
    normal = math.erfc(d / math.sqrt(2.0))
    return min(1.0, 2.0 / (1.0 + d * d), max(tolerance_level(shape.skew_rate(upper)), normal))


def _sides(low: bool, high: bool) -> str | None:
    return "both" if low and high else "lower" if low else "upper" if high else None


def contrast_range(value_range: tuple[float, float] | None, coefs: Sequence[float]) -> tuple[float, float] | None:
    """The a-priori range of sum_k c_k theta_k when every theta_k lies in `value_range` (interval
    arithmetic: [low - high, high - low] for a difference); None when no range is known."""
    if value_range is None:
        return None
    low, high = value_range
    return (sum(c * (low if c >= 0 else high) for c in coefs), sum(c * (high if c >= 0 else low) for c in coefs))


def within_range(iv: Interval, bounds: tuple[float, float] | None) -> Interval:
    """`iv` with each end moved into the estimand's a-priori range `bounds`; an open end becomes the bound."""
    if bounds is None or math.isnan(iv.ci_low) or math.isnan(iv.ci_high):
        return iv  # no range, or an undefined interval, stays as it is
    low, high = bounds
    ci_low = min(max(iv.ci_low, low), high)
    ci_high = max(min(iv.ci_high, high), low)
    if (ci_low, ci_high) == (iv.ci_low, iv.ci_high):
        return iv
    return Interval(iv.value, iv.se, ci_low, ci_high, iv.method, iv.open_end, iv.cantelli_end)


def range_p_value(p: float, null: float, bounds: tuple[float, float] | None) -> float:
    """The p-value of an interval clipped to `bounds`: a null outside the estimand's range is excluded
    at every level (0), any other keeps the unclipped interval's p-value."""
    if bounds is not None and math.isfinite(null) and not bounds[0] <= null <= bounds[1]:
        return 0.0
    return p


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
    given, is reused (a chunked bootstrap then maps its memory once). The evaluation's bootstrap
    draws `keyed_poisson_counts` instead (the same table), whose counts do not depend on how the
    rows are split; this sequential form remains for simulations (benchmarks/bench_coverage.py)."""
    size = shape[0] * shape[1]
    bits = rng.bit_generator.random_raw(-(-size // 4)).view(np.uint16)[:size].reshape(shape)
    # mode="clip": every 16-bit index is valid, and numpy then writes straight into `out`
    return np.take(_TABLE_FLOAT, bits, out=out[:shape[0]] if out is not None else None, mode="clip")


# SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom number generators"; the
# constants of Vigna's reference code): its output function is a bijective 64-bit mixer, and applied to
# a counter it is a counter-based generator in the sense of Salmon et al. 2011 (Random123): the draw
# for (seed, key, resample) is a pure function of the three, whatever order or machine computes it.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
#: 16-bit uniforms per 64-bit hash: four resamples' counts from one mix
_LANES = 4


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function, in place on a uint64 array (wrapping arithmetic)."""
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


def bootstrap_keys(ids: np.ndarray) -> np.ndarray:
    """Stable uint64 keys of the resampled units: pandas.util.hash_array of their ids (decision ids,
    session ids, or row numbers), the same on every machine, run and partitioning. Rows sharing an id
    share their Poisson counts: the resampled unit is the decision (a cluster bootstrap)."""
    from pandas.util import hash_array
    return hash_array(np.asarray(ids))


def keyed_poisson_counts(keys: np.ndarray, seed: int, start: int, size: int,
                         out: np.ndarray | None = None) -> np.ndarray:
    """Poisson(1) counts of resamples start .. start + size - 1 for the units `keys`, as a float64
    (size, len(keys)) array (ready for the matrix product): count(seed, key, b) is the inverse-CDF table
    at 16 bits of mix(mix(key ^ mix(seed)) + (b // 4 + 1) golden), lane b % 4. A pure function of
    (seed, key, b): a partition of the rows draws exactly the counts its rows get in the whole sample.
    `out`, when given, is reused."""
    n = len(keys)
    base = np.asarray(keys, dtype=np.uint64) ^ _mix64(np.array([seed], dtype=np.uint64) + _GOLDEN)[0]
    _mix64(base)
    first, last = start // _LANES, (start + size - 1) // _LANES
    groups = np.arange(first + 1, last + 2, dtype=np.uint64) * _GOLDEN  # the counter, one per 4 resamples
    hashed = _mix64(base[None, :] + groups[:, None])                  # (groups, n)
    # lane j = bits 16 j .. 16 j + 15 of the hash: the little-endian uint16 view (explicit byte order,
    # so that a big-endian machine reads the same lanes)
    lanes = hashed.astype("<u8", copy=False).view("<u2").reshape(len(groups), n, _LANES)
    skip = start - first * _LANES
    bits = lanes.transpose(0, 2, 1).reshape(-1, n)[skip:skip + size]
    target = out[:size] if out is not None else None
    return np.take(_TABLE_FLOAT, bits, out=target, mode="clip")


def bootstrap_sums(columns: Sequence[np.ndarray], keys: np.ndarray, n_boot: int, seed: int,
                   chunk: int = 32) -> np.ndarray:
    """Every resample's sum of every column, and (last column) its resampled row count: an (n_boot,
    k + 1) array. Sums over disjoint rows add, so partitions reduce to the same array as the whole
    sample (`replicates_from_sums` finishes). Vectorised: a (chunk x n) count matrix times the
    (n x (k + 1)) matrix of the columns and a column of ones."""
    n = len(keys)
    out = np.zeros((n_boot, len(columns) + 1))
    if n == 0:
        return out
    # at most ~64 MB of counts at a time (a streamed partition's memory budget holds); the counts of a
    # resample do not depend on the chunk it is drawn in
    chunk = max(_LANES, min(chunk, (1 << 23) // n // _LANES * _LANES))
    matrix = np.column_stack([*columns, np.ones(n)]).astype(np.float64)
    buffer = np.empty((min(chunk, n_boot), n))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        counts = keyed_poisson_counts(keys, seed, start, size, out=buffer)
        with single_threaded_blas():
            out[start:start + size] = counts @ matrix
    return out


def replicates_from_sums(sums: np.ndarray, layout: Sequence[tuple[int | None, ...]]) -> np.ndarray:
    """(n_boot, len(layout)) bootstrap replicates of the estimators from `bootstrap_sums`: each is
    recomputed from its resampled sums, so the self-normalised ones are renormalised in every resample."""
    count = sums[:, -1]
    out = np.empty((len(sums), len(layout)))
    for j, (w, d, z) in enumerate(layout):
        with np.errstate(invalid="ignore", divide="ignore"):
            value = sums[:, w] / (sums[:, z] if z is not None else count)
            if d is not None:
                value = value + sums[:, d] / count
        out[:, j] = value
    return out


def bootstrap_replicates(terms: Sequence[Terms], n_boot: int, seed: int, keys: np.ndarray | None = None,
                         chunk: int = 32) -> np.ndarray:
    """Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012): unit i enters each resample
    Poisson(1) times. Every estimator is recomputed from resampled sums, so the self-normalised ones
    are renormalised inside every resample. Returns an array (n_boot, len(terms)).

    `keys`: the rows' `bootstrap_keys` (rows of one decision share theirs and so their counts);
    None: each row its own unit, keyed by its row number. The counts come from `keyed_poisson_counts`,
    so a streamed evaluation over partitions draws the very same resamples."""
    n = terms[0].n
    columns, layout = distinct_columns(terms)
    if keys is None:
        keys = bootstrap_keys(np.arange(n, dtype=np.int64))
    return replicates_from_sums(bootstrap_sums(columns, keys, n_boot, seed, chunk), layout)


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
