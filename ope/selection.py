"""Automatic estimator choice: `--estimators auto`, gate.toml `estimator = "auto"`.

Rule: SLOPE (Su, Srinath & Krishnamurthy 2020, "Adaptive estimator selection for off-policy
evaluation", ICML), a Lepski-type method, in the form of Tucker & Lee (2021, "Improved estimator
selection for off-policy evaluation"), which Open Bandit Pipeline also uses. The candidates are ordered
by the width of their intervals, widest first; candidate i is accepted while, for every wider candidate
j accepted before it, |v_i - v_j| <= w_i + (sqrt(6) - 1) w_j, with w = z_{1-alpha/2} se each candidate's
own half-width (SLOPE's cnf); the walk stops at the first candidate that disagrees and the last
accepted one is chosen. When bias grows as width shrinks (IPS and DR unbiased and noisy; switching and
shrinkage trading variance for bias; DM last) the choice is within a constant factor of the family's
best bias + width trade-off, without the bias ever being known. A stricter variant, rule="paired",
compares |v_i - v_j| with c se(v_i - v_j) from the joint covariance instead (benchmarks/README_obd.md
measures both; the default is the published rule).

Family: built from the per-row terms of the metric (no data is re-read): ips, dr, snips, sndr, then
over a half-decade grid below the policy's largest weight switch-dr:tau and dr-os:lambda, then dm.
When the fitted reward model is missing, cannot be cross-fitted or is worse than a constant on held-out
folds, the DM/DR candidates use the constant model instead (model=constant: the mean reward at the
row's position), so that the choice avoids the bad model yet keeps a family that runs from the
unbiased estimators to the logged mean. The ratio estimators are left out of Bernstein intervals.

Intervals after selection. A biased candidate's interval covers its own mean, not the truth, and no
interval narrower than the unbiased candidates' can promise the truth without an assumption on the
bias. So the reported interval is the smallest one holding the chosen candidate's interval and the
intersection of the anchors' intervals (ips, dr, snips, sndr: unbiased or consistent whatever the
reward model), all at the anchors' simultaneous level: the per-comparison level of c = the 1 - alpha
quantile of max_k |Z_k|, Z ~ N(0, R), R the correlation of the anchors' influence functions (the
single-step max-|z| critical value, Hothorn, Bretz & Westfall 2008). With probability 1 - alpha every
anchor covers the truth at once, and then so does the reported interval, whichever candidate the rule
chose: simultaneous coverage over everything the choice could lean on, the idea of PoSI (Berk, Brown,
Buja, Zhang & Zhao 2013). The estimate is the chosen candidate's (the bias-variance trade-off SLOPE is
for); the gate decides on the interval. Bernstein intervals, a finite-sample guarantee, use Bonferroni's
alpha / K instead of max-|z|.

Each reported quantity is selected on its own family: a policy's value among the candidates' values,
its paired difference to the baseline among the candidates' paired differences (the quantity the gate
tests), so two choices are recorded per policy and metric.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from .estimators import EstimatorSpec, RowInputs, Terms, parse_estimator
from .inference import Interval, distinct_columns, single_threaded_blas, z_quantile

AUTO = "auto"
#: the rule `auto` applies (ope/selection.py; benchmarks/README_obd.md compares the two)
DEFAULT_RULE = "tucker-lee"
RULE = ("SLOPE (Su, Srinath & Krishnamurthy 2020) with the pairwise test of Tucker & Lee (2021): candidates "
        "ordered by interval width, widest first; a narrower one is accepted while |v_i - v_j| <= w_i + "
        "(sqrt(6) - 1) w_j for every wider accepted j; the last accepted is chosen")
RULE_TEXT = {"tucker-lee": RULE,
             "paired": "Lepski's method as in SLOPE (Su, Srinath & Krishnamurthy 2020): candidates ordered by "
                       "interval width, widest first; a narrower one is accepted while |v_i - v_j| <= c se(v_i - "
                       "v_j) for every wider accepted j (c the family's simultaneous critical value, se from the "
                       "joint influence covariance); the last accepted is chosen"}
#: Tucker & Lee's constant on the wider candidate's width
TUCKER_LEE = math.sqrt(6.0) - 1.0
#: hyperparameters of the switched and shrunk candidates: a half-decade grid of weight thresholds
GRID = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5)
#: the members that use a reward model (the fitted one, or the constant one)
MODEL_NAMES = frozenset({"dm", "dr", "sndr", "switch-dr", "dr-os"})
#: draws of max |Z| behind the simultaneous critical value: its 1 - 0.001 quantile still rests on 100 draws
N_DRAWS = 100_000
_BLOCK = 1 << 16


def _number(x: float) -> str:
    return format(x, ".15g")


def family(max_weight: float, model: str = "fitted", ratios: bool = True) -> list[EstimatorSpec]:
    """The candidates, least biased first (the order that breaks ties between equal widths): ips, dr,
    snips, sndr, switch-dr:tau and dr-os:lambda from large to small, dm; the DM/DR candidates with the
    fitted reward model, or with model=constant (the mean reward per position).

    A threshold at or above the largest weight changes nothing (switch-dr:tau) and is left out;
    dr-os:lambda = t^2 shrinks weights around t (lambda w / (w^2 + lambda) peaks at w = sqrt(lambda)),
    so its grid reaches twice the largest weight. Clipped IPS is no candidate: it shrinks the heavy
    rows' rewards towards 0, switch-dr towards the model (with the constant model, towards the mean),
    so in a family ordered by width the clipped members' large bias would stop the walk early."""
    def with_model(name: str, *params: str) -> str:
        params = (*params, *([] if model == "fitted" else [f"model={model}"]))
        return f"{name}:{','.join(params)}" if params else name

    ids = ["ips", with_model("dr")] + (["snips", with_model("sndr")] if ratios else [])
    ids += [with_model("switch-dr", f"tau={_number(t)}") for t in reversed(GRID) if t < max_weight]
    ids += [with_model("dr-os", f"lambda={_number(t * t)}") for t in reversed(GRID) if t < 2.0 * max_weight]
    ids.append(with_model("dm"))
    return [parse_estimator(i) for i in ids]


def model_verdict(quality: dict | None, reward: np.ndarray, q_logged: np.ndarray | None) -> str | None:
    """Why the reward model must not be used (None: it may). Reads `quality["worse_than_constant"]`
    when the reward model reports it, else compares the held-out R^2 with 0 (log-loss with the
    constant's for 0/1 rewards). Given predictions (no quality) are scored on the logs' rows."""
    if q_logged is None:
        return "no reward model (no context columns, --q-hat or q_hat column)"
    if quality is None:
        quality, where = _prediction_quality(reward, q_logged), "on the logged rows"
    else:
        where = "on held-out folds"
    worse = quality.get("worse_than_constant")
    if quality.get("loss_model") is not None and quality.get("loss_constant") is not None:
        # the reward model's own comparison (ope/reward_model.py): held-out loss against its constant baseline
        score = (f"{quality.get('loss', 'loss')} {quality['loss_model']:.4g} vs {quality['loss_constant']:.4g} "
                 f"for the {quality.get('baseline', 'constant')}")
        if worse is None:
            worse = quality["loss_model"] > quality["loss_constant"]
    elif quality.get("metric_name") == "log_loss" and quality.get("log_loss_constant") is not None:
        score = (f"log-loss {quality['value']:.4g} vs {quality['log_loss_constant']:.4g} for the constant")
        if worse is None:
            worse = quality["value"] > quality["log_loss_constant"]
    else:
        r2 = quality.get("r2")
        score = f"R^2 {r2:.3g}" if isinstance(r2, float) else "R^2 undefined"
        if worse is None:
            worse = isinstance(r2, float) and r2 < 0
    return f"the reward model is worse than a constant {where} ({score})" if worse else None


def _prediction_quality(y: np.ndarray, pred: np.ndarray) -> dict:
    sst = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / sst if sst > 0 else math.nan
    quality = {"r2": r2, "metric_name": "r2", "value": r2}
    if np.all((y == 0) | (y == 1)) and np.all((pred >= 0) & (pred <= 1)):
        p = np.clip(pred, 1e-12, 1 - 1e-12)
        base = float(np.clip(y.mean(), 1e-12, 1 - 1e-12))
        quality.update(metric_name="log_loss", value=float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
                       log_loss_constant=-(base * math.log(base) + (1 - base) * math.log(1 - base)))
    return quality


# --- the family's values and covariance, accumulated over row blocks ----------------------------------

def _block_inputs(x: RowInputs, rows: slice) -> RowInputs:
    cut = (lambda a: None if a is None else a[rows])  # noqa: E731
    return RowInputs(reward=x.reward[rows], weight=x.weight[rows], q_logged=cut(x.q_logged), q_pi=cut(x.q_pi),
                     alpha=x.alpha, unit_weight=x.unit_weight, q_constant=cut(x.q_constant))


def family_moments(groups: Sequence[tuple[RowInputs, Sequence[EstimatorSpec]]]) -> tuple[np.ndarray, np.ndarray, int]:
    """(values, per-row covariance of the influence functions, n) of every (inputs, estimator) in
    `groups`, in order, from sums and a Gram matrix accumulated over blocks of rows: a family of twenty
    candidates never holds twenty copies of the rows. The linearisation is `Terms.influence`'s:
    for sum(b)/sum(c) + mean(d) the influence is (b - theta c) / mean(c) + d - mean(d)."""
    n = groups[0][0].n
    layout0 = shift = gram = sums = None
    with single_threaded_blas():  # the Gram matrix's last digits must not depend on the thread count
        for start in range(0, max(n, 1), _BLOCK):
            rows = slice(start, min(n, start + _BLOCK))
            terms = [spec.terms(block) for x, specs in groups for block in [_block_inputs(x, rows)] for spec in specs]
            columns, layout = distinct_columns(terms)
            if layout0 is None:
                layout0 = layout
                # shifted by the first block's means: no catastrophic cancellation when a mean dwarfs the spread
                shift = np.array([float(np.mean(c)) if len(c) else 0.0 for c in columns])
                gram, sums = np.zeros((len(columns), len(columns))), np.zeros(len(columns))
            elif layout != layout0:  # the same code on every block shares the same arrays
                raise RuntimeError("estimator terms changed their layout between row blocks")
            block = np.empty((len(columns), rows.stop - rows.start))
            for j, c in enumerate(columns):
                np.subtract(c, shift[j], out=block[j])
            gram += block @ block.T
            sums += block.sum(axis=1)
    k = len(layout0)
    if n < 2:
        return np.full(k, math.nan), np.full((k, k), math.nan), n
    centred = sums / n
    mean = shift + centred
    cov_columns = (gram - n * np.outer(centred, centred)) / (n - 1)
    coef, values = np.zeros((k, len(mean))), np.zeros(k)
    for i, (weighted, direct, norm) in enumerate(layout0):
        if norm is None:
            coef[i, weighted], values[i] = 1.0, mean[weighted]
        elif mean[norm] == 0:
            coef[i, :], values[i] = math.nan, math.nan  # an undefined ratio (e.g. snips without positive weights)
            continue
        else:
            ratio = mean[weighted] / mean[norm]
            coef[i, weighted] += 1.0 / mean[norm]
            coef[i, norm] -= ratio / mean[norm]
            values[i] = ratio
        if direct is not None:
            coef[i, direct] += 1.0
            values[i] += mean[direct]
    with single_threaded_blas():
        cov = coef @ cov_columns @ coef.T
    return values, cov, n


# --- simultaneous level --------------------------------------------------------------------------------

class SimultaneousLevel:
    """The level at which every member of a family gets its interval so that all cover at once.

    max-|z|: c(alpha) is the 1 - alpha quantile of max_k |Z_k|, Z ~ N(0, R) with R the family's
    correlation (Hothorn, Bretz & Westfall 2008), drawn once with a fixed seed and kept within
    [z_{alpha/2}, z_{alpha/2K}] (one interval; Bonferroni, valid whatever R); bonferroni: alpha / K.
    An interval method then runs at the per-comparison level `per_comparison_alpha(alpha)`, and a
    p-value is adjusted by `adjusted_p`, consistently with those intervals (Holm orders by them)."""

    def __init__(self, cov: np.ndarray, seed: int, method: str = "max-|z|"):
        se = np.sqrt(np.clip(np.diag(cov), 0.0, None)) if cov.size else np.zeros(0)
        keep = np.isfinite(se) & (se > 0)
        self.size, self.method = int(np.count_nonzero(keep)), method
        self.maxima = None
        if method == "max-|z|" and self.size > 1:
            corr = cov[np.ix_(keep, keep)] / np.outer(se[keep], se[keep])
            self.maxima = _max_abs_normal(corr, seed)

    def critical(self, alpha: float) -> float:
        one, bonferroni = z_quantile(alpha), z_quantile(alpha / max(self.size, 1))
        if self.maxima is None:
            return bonferroni
        quantile = float(self.maxima[min(len(self.maxima) - 1, int(math.ceil((1.0 - alpha) * len(self.maxima))))])
        return min(max(quantile, one), bonferroni)

    def per_comparison_alpha(self, alpha: float) -> float:
        if self.method == "bonferroni" or self.maxima is None:
            return alpha / max(self.size, 1)
        return math.erfc(self.critical(alpha) / math.sqrt(2.0))

    def adjusted_p(self, p: float) -> float:
        """The family-wise p-value of a member whose own p-value is `p`."""
        if not math.isfinite(p) or self.size <= 1:
            return p
        bonferroni = min(1.0, self.size * p)
        if self.maxima is None:
            return bonferroni
        z = NormalDist().inv_cdf(1.0 - p / 2.0) if p > 0 else math.inf
        exceed = len(self.maxima) - int(np.searchsorted(self.maxima, z, side="left"))
        return min(max((exceed + 1) / (len(self.maxima) + 1), p), bonferroni)

    def to_dict(self, alpha: float) -> dict:
        return {"method": self.method, "family_size": self.size, "critical_value": self.critical(alpha),
                "confidence_each": 1.0 - self.per_comparison_alpha(alpha), "confidence_all": 1.0 - alpha}


def _max_abs_normal(corr: np.ndarray, seed: int, chunk: int = 25_000) -> np.ndarray:
    """Sorted draws of max_k |Z_k|, Z ~ N(0, corr); a singular corr (identical members) is fine."""
    with single_threaded_blas():
        eigenvalues, vectors = np.linalg.eigh(corr)
        root = vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
        rng = np.random.default_rng([seed, 0x5E1EC7])
        out = np.empty(N_DRAWS)
        for start in range(0, N_DRAWS, chunk):
            size = min(chunk, N_DRAWS - start)
            z = rng.standard_normal((size, len(corr))) @ root.T
            out[start:start + size] = np.max(np.abs(z), axis=1)
    out.sort()
    return out


# --- the rule ------------------------------------------------------------------------------------------

@dataclass
class Selection:
    """One choice: the candidates (widest first) with their values and widths, the one chosen and why."""

    chosen: str
    candidates: list[dict]
    reason: str
    level: SimultaneousLevel
    left_out: list[str] = field(default_factory=list)
    rule: str = "paired"

    def to_dict(self, alpha: float) -> dict:
        return {"rule": self.rule, "rule_text": RULE_TEXT[self.rule], "chosen": self.chosen, "reason": self.reason,
                "candidates": self.candidates, "left_out": self.left_out,
                "simultaneous": self.level.to_dict(alpha)}


def select(identifiers: Sequence[str], values: np.ndarray, cov: np.ndarray, n: int, alpha: float, seed: int,
           method: str = "max-|z|", left_out: Sequence[str] = (), rule: str | None = None) -> Selection:
    """The rule over candidates listed least biased first, with their values and per-row covariance."""
    rule = rule or DEFAULT_RULE
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None) / max(n, 1)) if len(identifiers) else np.zeros(0)
    defined = [i for i in range(len(identifiers)) if math.isfinite(values[i]) and math.isfinite(se[i])]
    kept = _distinct_members(defined, values, se)
    notes = list(left_out) + [f"{identifiers[i]}: undefined on these rows" for i in range(len(identifiers))
                              if i not in defined]
    level = SimultaneousLevel(cov[np.ix_(kept, kept)] if kept else np.zeros((0, 0)), seed, method)
    if not kept:
        return Selection(identifiers[0], [], f"no candidate has a defined value and standard error; "
                         f"{identifiers[0]} is reported as it is", level, notes, rule)
    # tucker-lee: SLOPE's cnf is each candidate's own (1 - alpha) half-width; paired: the pairwise tests
    # are many, so their critical value is the family's simultaneous one
    c = z_quantile(alpha) if rule == "tucker-lee" else level.critical(alpha)
    tolerance = _tolerance(rule, c, se, cov, n)
    order = sorted(kept, key=lambda i: -se[i])  # stable: equal widths keep the least biased first
    accepted, status, reason = [order[0]], {order[0]: "accepted"}, None
    for i in order[1:]:
        conflict = next((j for j in accepted if abs(values[i] - values[j]) > tolerance(i, j)
                         + 1e-12 * (abs(values[i]) + abs(values[j]))), None)
        if conflict is not None:
            status[i] = "rejected"
            reason = (f"{identifiers[i]}, the next narrower, differs from {identifiers[conflict]} by "
                      f"{abs(values[i] - values[conflict]):.4g} > {tolerance(i, conflict):.4g} "
                      f"({RULE_TOLERANCE[rule]})")
            break
        accepted.append(i)
        status[i] = "accepted"
    chosen = accepted[-1]
    why = (f"{identifiers[chosen]} is the narrowest candidate that agrees with every wider one; "
           + (reason if reason else "no narrower candidate is left"))
    candidates = [{"estimator": identifiers[i], "value": float(values[i]), "se": float(se[i]),
                   "half_width": float(c * se[i]), "status": status.get(i, "not reached")} for i in order]
    return Selection(identifiers[chosen], candidates, why, level, notes, rule)


#: how far two candidates may differ, by rule (w = z_{1 - alpha/2} se, the candidates' half-widths)
RULE_TOLERANCE = {"tucker-lee": "w_i + (sqrt(6) - 1) w_j, the half-widths",
                  "paired": "c x the standard error of their paired difference"}


def _tolerance(rule: str, c: float, se: np.ndarray, cov: np.ndarray, n: int):
    """tucker-lee: w_i + (sqrt(6) - 1) w_j, w = c se (Tucker & Lee 2021). paired: c se(v_i - v_j), from the
    joint covariance: the candidates share their rows, so their difference is far less noisy than
    either (se(v_i - v_j) <= se_i + se_j: never more lenient than tucker-lee)."""
    if rule == "tucker-lee":
        return lambda i, j: c * se[i] + TUCKER_LEE * c * se[j]
    if rule == "paired":
        return lambda i, j: c * math.sqrt(max(cov[i, i] + cov[j, j] - 2.0 * cov[i, j], 0.0) / max(n, 1))
    raise ValueError(f"unknown selection rule {rule!r}")


def _distinct_members(indices: list[int], values: np.ndarray, se: np.ndarray) -> list[int]:
    """The candidates, less those identical to a less biased one (e.g. on the logging policy, whose
    weights are all 1, ips, snips, dr and sndr are one estimate)."""
    kept: list[int] = []
    for i in indices:
        if not any(abs(values[i] - values[j]) <= 1e-12 * (1.0 + abs(values[j]))
                   and abs(se[i] - se[j]) <= 1e-9 * (1.0 + se[j]) for j in kept):
            kept.append(i)
    return kept


# --- per metric: the choices of every policy -----------------------------------------------------------

#: candidates whose mean is the policy's value whatever the reward model (unbiased given correct
#: propensities: ips, cross-fitted dr; consistent: snips, sndr). Their intervals anchor the interval of
#: a choice: on the event that every candidate covers its own mean they all cover the truth.
ANCHORS = ("ips", "dr", "snips", "sndr")


def _is_anchor(identifier: str) -> bool:
    return identifier.split(":")[0] in ANCHORS


@dataclass
class FamilyChoice:
    """The choice on one family of contrasts sum_j c_j theta_k(policy_j) over the candidates k: a value
    (one policy, coefficient 1) or a paired difference (policy and baseline, 1 and -1).

    Its interval (`interval`, `p_value`: the IntervalEngine calls, so the gate asks it like an engine)
    is the smallest one holding the chosen candidate's interval and the intersection of the anchors'
    (ANCHORS), every one at the anchors' simultaneous level: on the event that the anchors all cover
    their means, which the level gives probability 1 - alpha, the intersection holds the truth, so the
    interval does too, whichever candidate the rule chose and however biased it is. The chosen
    candidate's own interval is included so that the interval holds the estimate."""

    policies: tuple[str, ...]
    coefs: tuple[float, ...]
    selection: Selection
    ids: list[str]
    values: np.ndarray             # per policy, the family's values (len(policies) x len(ids))
    cov: np.ndarray                # their joint per-row covariance
    n: int
    seed: int = 0
    method: str = "max-|z|"
    engine: object = None          # an IntervalEngine over every policy's chosen and anchor terms
    _levels: dict = field(default_factory=dict, repr=False)

    @property
    def chosen(self) -> str:
        return self.selection.chosen

    @property
    def anchors(self) -> list[str]:
        return [c["estimator"] for c in self.selection.candidates if _is_anchor(c["estimator"])]

    def level(self, coefs: Sequence[float]) -> SimultaneousLevel:
        """The anchors' simultaneous level for the contrast `coefs` over the family's policies (a
        relative criterion tests policy - (1 + r) baseline: other coefficients than the choice's)."""
        key = tuple(float(c) for c in coefs)
        if key not in self._levels:
            k = len(self.ids)
            a = np.hstack([c * np.eye(k) for c in key])
            index = [self.ids.index(m) for m in self.anchors]
            with single_threaded_blas():
                contrast = (a @ self.cov @ a.T)[np.ix_(index, index)]
            self._levels[key] = SimultaneousLevel(contrast, self.seed, self.method)
        return self._levels[key]

    def interval(self, keys, coefs, alpha: float):
        """The interval of the contrast `coefs` of the policies named in `keys` (their estimator part is
        ignored: the candidates are the chosen one and the anchors), at family-wise level alpha."""
        names = [policy for policy, _ in keys]
        per_comparison = self.level(coefs).per_comparison_alpha(alpha)
        own = self.engine.interval([(p, self.chosen) for p in names], coefs, per_comparison)
        anchored = [self.engine.interval([(p, m) for p in names], coefs, per_comparison) for m in self.anchors]
        # an undefined interval (NaN) says nothing; an open end (robust intervals with few effective rows
        # on one side) is an interval all the same
        anchored = [iv for iv in anchored if not (math.isnan(iv.ci_low) or math.isnan(iv.ci_high))]
        if not anchored or math.isnan(own.ci_low) or math.isnan(own.ci_high):
            return Interval(own.value, own.se, math.nan, math.nan, own.method)
        low, high = max(iv.ci_low for iv in anchored), min(iv.ci_high for iv in anchored)
        if low > high:  # the anchors disagree (beyond their level, or wrong propensities): all of them
            low, high = min(iv.ci_low for iv in anchored), max(iv.ci_high for iv in anchored)
        return Interval(own.value, own.se, min(low, own.ci_low), max(high, own.ci_high), own.method)

    def p_value(self, keys, coefs, null: float) -> float:
        """The smallest alpha at which `interval` excludes `null` (the intervals shrink as alpha
        grows, so bisection on log alpha finds it): the p-value that orders Holm's tests consistently
        with the intervals that decide them."""
        def excludes(alpha: float) -> bool:
            iv = self.interval(keys, coefs, alpha)
            return iv.ci_low > null or iv.ci_high < null

        if not math.isfinite(null) or not excludes(1.0 - 1e-9):
            return math.nan if math.isnan(self.interval(keys, coefs, 0.5).ci_low) else 1.0
        low, high = -35.0, math.log(1.0 - 1e-9)  # log alpha: excludes at `high`, not at `low` (or p < e^-35)
        if excludes(math.exp(low)):
            return math.exp(low)
        for _ in range(40):
            middle = (low + high) / 2.0
            low, high = (low, middle) if excludes(math.exp(middle)) else (middle, high)
        return math.exp(high)

    def to_dict(self, alpha: float) -> dict:
        out = self.selection.to_dict(alpha)
        out["interval"] = {"anchors": self.anchors, **self.level(self.coefs).to_dict(alpha),
                           "rule": "smallest interval holding the chosen candidate's and the intersection of "
                                   "the anchors' intervals, all at the anchors' simultaneous level"}
        return out


@dataclass
class MetricChoices:
    """Every policy's choices for one metric, and the terms their intervals read (evaluate() gives
    them one IntervalEngine, `set_engine`)."""

    value: dict[str, FamilyChoice]
    difference: dict[str, FamilyChoice]
    terms: dict[str, dict[str, Terms]]

    def set_engine(self, engine) -> None:
        for choice in [*self.value.values(), *self.difference.values()]:
            choice.engine = engine


def choose(inputs: Mapping[str, RowInputs], baseline: str, *, model_note: str | None, ratios: bool,
           alpha: float, seed: int, method: str = "max-|z|",
           computed: Mapping[str, Mapping[str, Terms]] | None = None) -> MetricChoices:
    """Every policy's choices for one metric. `model_note` says why the reward model is left out (None:
    it is used where the policy has predictions); `ratios`: whether snips and sndr may be candidates;
    `computed`: terms already computed for the requested estimators (reused, not recomputed)."""
    families = [((name,), (1.0,)) for name in inputs]
    if baseline in inputs:
        families += [((name, baseline), (1.0, -1.0)) for name in inputs if name != baseline]
    out = MetricChoices(value={}, difference={}, terms={name: {} for name in inputs})
    for names, coefs in families:
        group = [inputs[p] for p in names]
        specs, notes = _family_for(group, model_note, ratios)
        ids = [s.identifier for s in specs]
        values, cov, n = family_moments([(x, specs) for x in group])
        a = np.hstack([c * np.eye(len(ids)) for c in coefs])
        with single_threaded_blas():
            contrast_values, contrast_cov = a @ values, a @ cov @ a.T
        chosen = select(ids, contrast_values, contrast_cov, n, alpha, seed, method, notes)
        choice = FamilyChoice(names, coefs, chosen, ids, values, cov, n, seed, method)
        (out.value if len(names) == 1 else out.difference)[names[0]] = choice
        for p, x in zip(names, group):  # the terms the interval reads: the chosen candidate's and the anchors'
            for ident in [choice.chosen, *choice.anchors]:
                if ident not in out.terms[p]:
                    out.terms[p][ident] = _terms(ident, specs, x, (computed or {}).get(p))
    return out


def _family_for(group: Sequence[RowInputs], model_note: str | None, ratios: bool) -> tuple[list[EstimatorSpec], list[str]]:
    """The family shared by the policies of `group` (one policy, or a policy and the baseline)."""
    largest = max(float(np.max(x.weight)) if x.n else 1.0 for x in group)
    predicted = all(x.q_pi is not None and x.q_logged is not None for x in group)
    fitted = model_note is None and predicted
    notes = []
    if not fitted:
        why = model_note or "no reward-model prediction under this policy (compact form)"
        notes.append(f"{', '.join(sorted(MODEL_NAMES))} with the fitted reward model: {why}; the constant "
                     "model (the mean reward per position) takes its place")
    if not ratios:
        notes.append("snips, sndr: Bernstein intervals need plain means")
    return family(largest, "fitted" if fitted else "constant", ratios), notes


def _terms(identifier: str, specs: Sequence[EstimatorSpec], x: RowInputs,
           computed: Mapping[str, Terms] | None) -> Terms:
    if computed and identifier in computed:
        return computed[identifier]
    return next(s for s in specs if s.identifier == identifier).terms(x)


# --- the document's entries ----------------------------------------------------------------------------

def auto_estimate(choice: FamilyChoice, alpha: float) -> dict:
    """The `auto` estimate of a policy: the chosen candidate's value, the interval of the choice."""
    (name,) = choice.policies
    entry = choice.interval([(name, AUTO)], [1.0], alpha).to_dict()
    entry.update(selected=choice.chosen, selection=choice.to_dict(alpha))
    return entry


def auto_difference(choice: FamilyChoice, alpha: float) -> dict:
    """The `auto` paired difference to the baseline: the candidate chosen for the difference."""
    name, base = choice.policies
    keys = [(name, AUTO), (base, AUTO)]
    diff = choice.interval(keys, [1.0, -1.0], alpha)
    per_comparison = choice.level(choice.coefs).per_comparison_alpha(alpha)
    rel, rel_low, rel_high = choice.engine.relative(name, base, choice.chosen, per_comparison)
    return {"difference": diff.value, "se": diff.se, "ci_low": diff.ci_low, "ci_high": diff.ci_high,
            "ci_method": diff.method, "relative": rel, "relative_ci_low": rel_low, "relative_ci_high": rel_high,
            "relative_ci_method": "normal", "selected": choice.chosen,
            "baseline_value": choice.engine.terms[base][choice.chosen].value(),
            "selection": choice.to_dict(alpha)}


def method_for(ci: str) -> str:
    """Bonferroni keeps a finite-sample guarantee (Bernstein); max-|z| for the asymptotic methods."""
    return "bonferroni" if ci == "bernstein" else "max-|z|"


def describe(ci: str) -> dict:
    """The document's account of how `auto` chooses and why its intervals stay valid."""
    method = method_for(ci)
    level = "alpha / K (Bonferroni)" if method == "bonferroni" else \
        "the max-|z| critical value of their joint influence covariance"
    return {"rule": RULE_TEXT[DEFAULT_RULE],
            "family": "ips, dr, snips, sndr; switch-dr:tau and dr-os:lambda (tau^2) over the grid "
                      f"{', '.join(_number(t) for t in GRID)} below the policy's largest weight; dm. When the fitted "
                      "reward model is missing or worse than a constant on held-out folds, the DM/DR candidates "
                      "use the constant model (model=constant: the mean reward per position) instead; the ratio "
                      "estimators are left out of Bernstein intervals.",
            "rule_widths": "w = z_{1-alpha/2} x the candidate's standard error (its own normal half-width, "
                           "SLOPE's cnf)" if DEFAULT_RULE == "tucker-lee" else
                           "c = the family's simultaneous critical value times the paired difference's standard error",
            "intervals": f"the smallest interval holding the chosen candidate's interval and the intersection of "
                         f"the intervals of {', '.join(ANCHORS)} (unbiased or consistent whatever the reward "
                         f"model), all at the anchors' simultaneous level ({level}): it covers the truth whenever "
                         "the anchors all cover theirs, whichever candidate was chosen",
            "targets": "each policy's value and each paired difference to the baseline are chosen separately, "
                       "on their own family",
            "references": ["Su, Srinath & Krishnamurthy 2020, ICML", "Tucker & Lee 2021",
                           "Hothorn, Bretz & Westfall 2008", "Berk, Brown, Buja, Zhang & Zhao 2013"]}
