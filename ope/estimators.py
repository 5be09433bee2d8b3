"""Off-policy estimators as per-row terms.

Every estimator here has the same form (DESIGN.md section 1):

    value = mean(direct) + sum(weighted) / sum(norm)

with `norm` = 1 for the plain-mean estimators. The terms are all an interval, a bootstrap, a
paired difference, a time window, a row-group stream or a Dask partition needs: they aggregate to
a handful of mergeable sums. Notation (DESIGN section 3): w = pi_e(a|x) / pi_0(a|x) for the logged
action a, r its reward, q = q_hat(x, a), q_pi = sum_a' pi_e(a'|x) q_hat(x, a').
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from livegate.datasets.errors import InputError, Problem


@dataclass
class RowInputs:
    """What the estimators see of one (policy, metric): per-row arrays of equal length."""

    reward: np.ndarray
    weight: np.ndarray                     # pi_e(a|x) / pi_0(a|x) of the logged action
    q_logged: np.ndarray | None = None     # reward model at the logged action
    q_pi: np.ndarray | None = None         # reward model averaged over the candidate's actions
    category_weight: np.ndarray | None = None   # p_e(c|x) / p_0(c|x) of the logged action's category
    alpha: float = 0.05
    reward_range: tuple[float, float] | None = None   # known a priori: gives the terms' range (bernstein)
    max_weight: float | None = None                    # a bound on w known a priori
    unit_weight: bool = False                          # w is 1 on every row (the logging policy itself)
    #: the constant reward model's prediction per row: the metric's mean reward at the row's position
    #: (`model=constant` of the DM/DR family: what a fitted model worse than a constant falls back to)
    q_constant: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.reward)

    @functools.cached_property
    def weighted_reward(self) -> np.ndarray:
        """w r, shared by the estimators that use it (one array, one column of the covariance)."""
        return self.reward if self.unit_weight else self.weight * self.reward

    @functools.cached_property
    def weighted_residual(self) -> np.ndarray:
        """w (r - q), shared by dr and sndr."""
        residual = self.reward - self.q_logged
        if not self.unit_weight:
            residual *= self.weight
        return residual

    @functools.cached_property
    def weighted_constant_residual(self) -> np.ndarray:
        """w (r - c) for the constant model c, shared by dr and sndr with model=constant."""
        residual = self.reward - self.q_constant
        if not self.unit_weight:
            residual *= self.weight
        return residual


@dataclass
class Terms:
    """value = mean(direct) + sum(weighted) / sum(norm); a None term contributes 0 (direct) or 1 (norm)."""

    weighted: np.ndarray
    direct: np.ndarray | None = None
    norm: np.ndarray | None = None
    bounds: tuple[float, float] | None = None   # a-priori range of direct + weighted (plain means only)

    @property
    def n(self) -> int:
        return len(self.weighted)

    @classmethod
    def linearised(cls, value: float, influence: np.ndarray) -> "Terms":
        """An estimator known by its value and per-unit influence function, e.g. a sum of per-step
        ratios (weighted per-decision IS over sessions): terms whose mean is the value and whose
        centred form is the influence, so intervals, contrasts and the bootstrap read them like any
        other (the bootstrap then resamples the linearisation). `value()` is the exact value."""
        terms = cls(weighted=value + influence)
        terms.__dict__["_value"] = float(value)
        return terms

    def value(self) -> float:
        """NaN when the denominator is 0 (e.g. snips when no logged action has a positive weight)."""
        cached = self.__dict__.get("_value")
        if cached is None:
            cached = self.__dict__["_value"] = self._value()
        return cached

    def _value(self) -> float:
        denominator = float(np.sum(self.norm)) if self.norm is not None else float(self.n)
        total = float(np.sum(self.weighted)) / denominator if denominator != 0 else math.nan
        if self.direct is not None:
            total += float(np.mean(self.direct))
        return total

    def influence(self) -> np.ndarray:
        """Per-row influence function (computed once; every interval and contrast reuses it)."""
        cached = self.__dict__.get("_influence")
        if cached is None:
            cached = self.__dict__["_influence"] = self._influence()
        return cached

    def _influence(self) -> np.ndarray:
        """Per-row influence function: the delta-method linearisation of the estimator.

        For the ratio sum(b)/sum(c) the influence of row i is (b_i - theta c_i) / mean(c)
        (e.g. Owen 2013, Monte Carlo theory, eq. 9.8 for self-normalised importance sampling).
        """
        if self.norm is None:
            phi = self.weighted - np.mean(self.weighted)
        else:
            mean_norm = float(np.mean(self.norm))
            if mean_norm == 0:
                return np.full(self.n, np.nan)
            ratio = float(np.sum(self.weighted)) / float(np.sum(self.norm))
            phi = (self.weighted - ratio * self.norm) / mean_norm
        if self.direct is not None:
            phi = phi + (self.direct - np.mean(self.direct))
        return phi

    def subset(self, mask: np.ndarray) -> "Terms":
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        return Terms(weighted=self.weighted[mask], direct=pick(self.direct), norm=pick(self.norm), bounds=self.bounds)

    @property
    def self_normalised(self) -> bool:
        return self.norm is not None


# --- the estimators --------------------------------------------------------------------------

MODELS = ("fitted", "constant")


def _need_model(x: RowInputs, name: str, model: str = "fitted") -> tuple[np.ndarray, np.ndarray]:
    """(q at the logged action, q averaged over the candidate's actions) of the fitted reward model, or
    of the constant one (model=constant: the mean reward at the row's position, whatever the action)."""
    if model == "constant":
        if x.q_constant is None:
            raise InputError(Problem("--estimators", f"'{name}' with model=constant needs the constant model"))
        return x.q_constant, x.q_constant
    if x.q_logged is None or x.q_pi is None:
        raise InputError(Problem("--estimators", f"'{name}' needs a reward model: give --q-hat or context columns"))
    return x.q_logged, x.q_pi


def _residual(x: RowInputs, model: str) -> np.ndarray:
    return x.weighted_constant_residual if model == "constant" else x.weighted_residual


def _weighted_reward_bounds(x: RowInputs, weight_cap: float = math.inf) -> tuple[float, float] | None:
    """Range of w' r for w' in [0, min(W, cap)] and r in [lo, hi]."""
    if x.reward_range is None or x.max_weight is None:
        return None
    lo, hi = x.reward_range
    w = min(x.max_weight, weight_cap)
    return min(0.0, w * lo), max(0.0, w * hi)


def _dr_bounds(x: RowInputs, weight_cap: float = math.inf) -> tuple[float, float] | None:
    """Range of q_pi + w' (r - q) for q, q_pi, r in [lo, hi] and w' in [0, min(W, cap)]."""
    if x.reward_range is None or x.max_weight is None:
        return None
    lo, hi = x.reward_range
    w = min(x.max_weight, weight_cap)
    return lo - w * (hi - lo), hi + w * (hi - lo)


def ips(x: RowInputs, clip: float = math.inf) -> Terms:
    """Inverse propensity scoring, mean(min(w, clip) r) (Horvitz & Thompson 1952; clipped form:
    Ionides 2008, Strehl et al. 2010). Unbiased when clip is infinite and pi_0 covers pi_e."""
    weighted = np.minimum(x.weight, clip) * x.reward if math.isfinite(clip) else x.weighted_reward
    return Terms(weighted=weighted, bounds=_weighted_reward_bounds(x, clip))


def snips(x: RowInputs) -> Terms:
    """Self-normalised IPS, sum(w r) / sum(w) (Swaminathan & Joachims 2015, eq. 5; Hesterberg 1995).
    Stays within the observed reward range; consistent, bias O(1/n)."""
    return Terms(weighted=x.weighted_reward, norm=x.weight)


def dm(x: RowInputs, model: str = "fitted") -> Terms:
    """Direct method, mean(q_pi) (Beygelzimer & Langford 2009; Dudik et al. 2011, eq. 1). With
    model=constant (as for every DM/DR estimator here) q is the mean reward at the row's position."""
    _, q_pi = _need_model(x, "dm", model)
    return Terms(weighted=np.zeros(x.n), direct=q_pi, bounds=_dr_bounds(x, 0.0))


def dr(x: RowInputs, model: str = "fitted") -> Terms:
    """Doubly robust, mean(q_pi + w (r - q)) (Dudik, Langford & Li 2011, eq. 3). Unbiased if either
    the propensities or the reward model are correct."""
    _, q_pi = _need_model(x, "dr", model)
    return Terms(weighted=_residual(x, model), direct=q_pi, bounds=_dr_bounds(x))


def sndr(x: RowInputs, model: str = "fitted") -> Terms:
    """Self-normalised DR, mean(q_pi) + sum(w (r - q)) / sum(w) (DESIGN section 3; Kallus & Uehara 2019)."""
    _, q_pi = _need_model(x, "sndr", model)
    return Terms(weighted=_residual(x, model), direct=q_pi, norm=x.weight)


def switch_dr(x: RowInputs, tau: float = 10.0, model: str = "fitted") -> Terms:
    """SWITCH-DR (Wang, Agarwal & Dudik 2017, eq. 6 with DR in place of IPS): rows whose weight exceeds
    tau fall back to the model. Summing the model term over all actions, this is
    mean(q_pi + w (r - q) 1[w <= tau])."""
    q, q_pi = _need_model(x, "switch-dr", model)
    return Terms(weighted=np.where(x.weight <= tau, x.weight * (x.reward - q), 0.0), direct=q_pi,
                 bounds=_dr_bounds(x, tau))


def dr_os(x: RowInputs, lambda_: float = 100.0, model: str = "fitted") -> Terms:
    """DR with optimistic shrinkage (Su, Dimakopoulou, Krishnamurthy & Dudik 2020, eq. 10):
    w is replaced by lambda w / (w^2 + lambda); lambda -> inf recovers DR, lambda -> 0 recovers DM."""
    q, q_pi = _need_model(x, "dr-os", model)
    w = x.weight
    if math.isinf(lambda_):
        shrunk = w
    else:
        with np.errstate(invalid="ignore"):  # 0 / 0 only at w = lambda = 0, where the shrunk weight is 0
            shrunk = np.where(w > 0, lambda_ * w / (w * w + lambda_), 0.0)
    # lambda w / (w^2 + lambda) peaks at w = sqrt(lambda) with value sqrt(lambda) / 2
    return Terms(weighted=shrunk * (x.reward - q), direct=q_pi, bounds=_dr_bounds(x, math.sqrt(lambda_) / 2))


def pm_ips(x: RowInputs, lambda_: float | None = None) -> Terms:
    """Subgaussian IPS with the harmonic power-mean correction (Metelli, Russo & Restelli 2021,
    NeurIPS, Sec. 5, s = -1): w_lambda = w / ((1 - lambda) + lambda w), bounded by 1/lambda.
    Default lambda = sqrt(4 log(1/delta) / (3 n d2)) with d2 = mean(w^2) the empirical exponentiated
    2-Renyi divergence and delta = alpha, the choice their concentration bound suggests."""
    w = x.weight
    if lambda_ is None:
        d2 = max(float(np.mean(w * w)), 1e-12)
        lambda_ = min(1.0, math.sqrt(4.0 * math.log(1.0 / x.alpha) / (3.0 * x.n * d2)))
    with np.errstate(invalid="ignore"):  # 0 / 0 only at w = 0, lambda = 1: a row the candidate never takes
        corrected = np.where(w > 0, w / ((1.0 - lambda_) + lambda_ * w), 0.0)
    return Terms(weighted=corrected * x.reward, bounds=_weighted_reward_bounds(x, 1.0 / lambda_ if lambda_ > 0 else math.inf))


def mips(x: RowInputs, self_normalised: bool = False) -> Terms:
    """Marginalised IPS over action categories (Saito & Joachims 2022, ICML, eq. 4): the weight of the
    logged action's category, p_e(c|x) / p_0(c|x), replaces the action weight. Unbiased when the
    reward depends on the action only through its category (no direct effect, their Assumption 3.2);
    with thousands of streams and few categories its variance is far lower than IPS."""
    if x.category_weight is None:
        raise InputError(Problem("--estimators", "'mips' needs action categories: logs columns a_category and "
                                 "category_propensity (see --category-column)"))
    cw = x.category_weight
    # p_e(c|x) / p_0(c|x) is a ratio of sums over the category's actions, so it is at most max w
    return Terms(weighted=cw * x.reward, norm=cw if self_normalised else None,
                 bounds=None if self_normalised else _weighted_reward_bounds(x))


@dataclass(frozen=True)
class Registry:
    """The estimators of one level: name -> (function, {parameter in the identifier: (python keyword,
    converter)}), which of them need a fitted model, which are ratios of sums, and parameter upper bounds."""

    functions: dict[str, tuple[Callable[..., Terms], dict[str, tuple[str, Callable]]]]
    needs_model: frozenset[str]
    self_normalised: frozenset[str]
    upper: dict[tuple[str, str], float] = field(default_factory=dict)
    needs_state_ratios: frozenset[str] = frozenset()


def registry(level: str) -> Registry:
    """The estimators of `level`: "decision" (one row per decision) or "session" (whole sessions)."""
    if level == "session":
        from .session_estimators import SESSION_REGISTRY  # imports this module: bound on first use
        return SESSION_REGISTRY
    return _DECISION_REGISTRY


@dataclass(frozen=True)
class EstimatorSpec:
    """An estimator identifier such as `ips:clip=50`, parsed and bound to its function."""

    identifier: str
    name: str
    params: dict = field(default_factory=dict)
    level: str = "decision"

    @property
    def needs_model(self) -> bool:
        """Needs a fitted reward model (decision level) or Q function (session level); model=constant
        needs none."""
        return self.name in registry(self.level).needs_model and self.params.get("model") != "constant"

    @property
    def needs_state_ratios(self) -> bool:
        """Needs fitted state density ratios (marginalised importance sampling over sessions)."""
        return self.name in registry(self.level).needs_state_ratios

    @property
    def needs_categories(self) -> bool:
        return self.level == "decision" and self.name == "mips"

    @property
    def self_normalised(self) -> bool:
        """A ratio of sums (its terms have a `norm`) or a sum of them, not a plain mean."""
        return self.name in registry(self.level).self_normalised or \
            (self.needs_categories and self.params.get("self_normalised", False))

    def terms(self, x) -> Terms:
        return registry(self.level).functions[self.name][0](x, **self.params)


class _Estimator(EstimatorSpec):
    """An estimator built in code, e.g. `IPS(clip=20)`: the same object `parse_estimator("ips:clip=20")`
    returns (one validation for both), printed as it was written."""

    _name = ""

    def __init__(self, **params):
        keys = {keyword: key for key, (keyword, _) in _REGISTRY[self._name][1].items()}
        given = [(keys[k], v) for k, v in params.items() if v is not None]
        text = ",".join(f"{key}={_format_param(v)}" for key, v in given)
        spec = parse_estimator(f"{self._name}:{text}" if text else self._name)
        super().__init__(identifier=spec.identifier, name=spec.name, params=spec.params)

    def __repr__(self) -> str:
        keys = {keyword: key for key, (keyword, _) in _REGISTRY[self.name][1].items()}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items() if k in keys)})"


def _format_param(value) -> str:
    if isinstance(value, str):
        return value
    return str(value).lower() if isinstance(value, bool) else f"{value:g}"


class IPS(_Estimator):
    """Inverse propensity scoring, optionally with clipped weights: `IPS()`, `IPS(clip=50)`; see `ips`."""
    _name = "ips"

    def __init__(self, clip: float | None = None):
        super().__init__(clip=clip)


class SNIPS(_Estimator):
    """Self-normalised IPS; see `snips`."""
    _name = "snips"

    def __init__(self):
        super().__init__()


class DM(_Estimator):
    """Direct method (reward model only); see `dm`. model: "fitted" (default) or "constant"."""
    _name = "dm"

    def __init__(self, model: str | None = None):
        super().__init__(model=model)


class DR(_Estimator):
    """Doubly robust; see `dr`."""
    _name = "dr"

    def __init__(self, model: str | None = None):
        super().__init__(model=model)


class SNDR(_Estimator):
    """Self-normalised doubly robust; see `sndr`."""
    _name = "sndr"

    def __init__(self, model: str | None = None):
        super().__init__(model=model)


class SwitchDR(_Estimator):
    """SWITCH-DR with threshold `tau` on the weight; see `switch_dr`."""
    _name = "switch-dr"

    def __init__(self, tau: float | None = None, model: str | None = None):
        super().__init__(tau=tau, model=model)


class DRos(_Estimator):
    """DR with optimistic shrinkage `lambda_`; see `dr_os`."""
    _name = "dr-os"

    def __init__(self, lambda_: float | None = None, model: str | None = None):
        super().__init__(lambda_=lambda_, model=model)


class PMIPS(_Estimator):
    """Power-mean corrected IPS; see `pm_ips`."""
    _name = "pm-ips"

    def __init__(self, lambda_: float | None = None):
        super().__init__(lambda_=lambda_)


class MIPS(_Estimator):
    """Marginalised IPS over action categories; see `mips`."""
    _name = "mips"

    def __init__(self, self_normalised: bool | None = None):
        super().__init__(self_normalised=self_normalised)


def as_estimator(estimator: "str | EstimatorSpec", level: str = "decision") -> EstimatorSpec:
    """An identifier such as `ips:clip=50`, or an estimator object, as the one `EstimatorSpec` form."""
    if isinstance(estimator, EstimatorSpec):
        if estimator.level != level:
            raise InputError(Problem("estimators", f"{estimator!r} is a {estimator.level}-level estimator",
                                     fix=f"use one of {', '.join(registry(level).functions)}"))
        return estimator
    if isinstance(estimator, str):
        return parse_estimator(estimator, level)
    raise InputError(Problem("estimators", f"{estimator!r} is neither an estimator identifier nor an estimator",
                             fix=f"use e.g. 'snips' or livegate.IPS(clip=20); identifiers: {', '.join(ESTIMATOR_NAMES)}"))


def _model_kind(text: str) -> str:
    if text not in MODELS:
        raise ValueError(text)
    return text


_MODEL = {"model": ("model", _model_kind)}

_REGISTRY: dict[str, tuple[Callable[..., Terms], dict[str, tuple[str, Callable]]]] = {
    "ips": (ips, {"clip": ("clip", float)}),
    "snips": (snips, {}),
    "dm": (dm, {**_MODEL}),
    "dr": (dr, {**_MODEL}),
    "sndr": (sndr, {**_MODEL}),
    "switch-dr": (switch_dr, {"tau": ("tau", float), **_MODEL}),
    "dr-os": (dr_os, {"lambda": ("lambda_", float), **_MODEL}),
    "pm-ips": (pm_ips, {"lambda": ("lambda_", float)}),
    "mips": (mips, {"self_normalised": ("self_normalised", lambda s: s.lower() in {"1", "true", "yes"})}),
}

#: upper bounds of parameters: the power-mean lambda mixes w with 1, so it lies in (0, 1]
#: (lambda > 1 makes (1 - lambda) + lambda w vanish at w = 1 - 1/lambda).
_UPPER: dict[tuple[str, str], float] = {("pm-ips", "lambda"): 1.0}

_DECISION_REGISTRY = Registry(functions=_REGISTRY, needs_model=frozenset({"dm", "dr", "sndr", "switch-dr", "dr-os"}),
                              self_normalised=frozenset({"snips", "sndr"}), upper=_UPPER)
ESTIMATOR_NAMES = tuple(_REGISTRY)
_IDENT = re.compile(r"^(?P<name>[a-z][a-z-]*)(?::(?P<params>.*))?$")


def parse_estimator(identifier: str, level: str = "decision") -> EstimatorSpec:
    """Parse `name[:key=value[,key=value]]`, e.g. `ips:clip=50`, `switch-dr:tau=10`, `dr-os:lambda=100`;
    at the session level e.g. `pdis:clip=100`, `wdr`."""
    ident = identifier.strip()
    m = _IDENT.match(ident)
    known = registry(level)
    if not m or m.group("name") not in known.functions:
        where = " for sessions" if level == "session" else ""
        raise InputError(Problem("--estimators", f"unknown estimator '{identifier}'{where}",
                                 fix=f"choose from {', '.join(known.functions)}"))
    name = m.group("name")
    allowed = known.functions[name][1]
    params: dict = {}
    for item in filter(None, (m.group("params") or "").split(",")):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or key not in allowed:
            hint = ", ".join(f"{k}=VALUE" for k in allowed) or "no parameters"
            raise InputError(Problem("--estimators", f"'{identifier}': cannot read parameter '{item}'",
                                     fix=f"{name} takes {hint}"))
        keyword, convert = allowed[key]
        try:
            value = convert(raw.strip())
        except ValueError:
            if convert is _model_kind:
                raise InputError(Problem("--estimators", f"'{identifier}': model '{raw}' is unknown",
                                         fix=f"use model={' or model='.join(MODELS)}")) from None
            raise InputError(Problem("--estimators", f"'{identifier}': '{raw}' is not a number")) from None
        if isinstance(value, float) and not value > 0:
            raise InputError(Problem("--estimators", f"'{identifier}': {key} must be positive"))
        upper = known.upper.get((name, key))
        if upper is not None and value > upper:
            raise InputError(Problem("--estimators", f"'{identifier}': {key} must be at most {upper:g}"))
        params[keyword] = value
    return EstimatorSpec(identifier=ident, name=name, params=params, level=level)
