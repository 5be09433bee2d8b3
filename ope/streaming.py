"""Streamed evaluation: the in-memory `evaluate` as a reduction over partitions of whole decisions.

Every estimator with closed-form per-row terms (ope/estimators.py: value = mean(direct) +
sum(weighted) / sum(norm)) is a function of a handful of sums. Each partition's rows are turned into
those terms by the very code the in-memory path runs (`evaluate.importance_weights`,
`evaluate._metric_terms`, the estimators) and reduced to small mergeable summaries; the client merges
them in partition order, so a sequential run and a Dask run add the same numbers in the same order.

Passes over the partitions (each partition is loaded once per pass):

0. (DM and DR without predictions for a metric) the reward model's sample: every partition returns its
   decisions whose seeded hash falls below the sampling fraction (`reward_model.sample_rows`: at most
   about DEFAULT_SAMPLE_ROWS rows in all), the client gathers them and cross-fits one
   `SampledRewardModel` per metric (folds by another seeded hash of the decision id), which travels to
   the partitions with the task: each predicts its own rows (`evaluate._model_predictions`' branch for
   a fitted model), in passes 1 and 2 alike.
1. counts, means and co-moment matrices of every metric's distinct term columns (`inference.Moments`,
   merged with Chan, Golub & LeVeque's pairwise formula), weight sums per policy, per-action policy
   probability (the unlogged mass needs the GLOBAL set of logged actions), reward summaries, coarse
   histograms for exact quantiles, the observed range of each Bernstein contrast.
2. (when needed) the sums behind each registered contrast's `TailShape` around the GLOBAL means
   (robust intervals), the bootstrap's per-resample sums (`inference.bootstrap_sums`, counts keyed by
   decision id: the resamples do not depend on the partitioning), time-window moments, the weight
   histograms with the global edges, and the values in the coarse bins that hold the quantiles' ranks.

What is exact: values, standard errors, every normal, robust, Bernstein and bootstrap interval end,
p-values, paired and relative differences, diagnostics and the data summary (quantiles included)
equal the in-memory path's up to the order of floating-point additions (1e-12 relative in the tests).
With a reward model fitted on the sample, all of that holds given the model: the estimators' algebra,
the folds (no row is predicted by a model that trained on it) and DR's unbiasedness given the model
are exact, and the result does not depend on the partitioning; approximate is only the model, which
saw a sample (DM is not the in-memory DM, DR's variance may be a little larger).
Estimators whose terms need the whole sample (auto, mips, pm-ips, model=constant) and session-level
evaluation are refused with an InputError saying what to do instead.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from livegate.datasets import logging_policy
from livegate.datasets.errors import InputError, Problem
from livegate.datasets.schema import LOGGING_POLICY

from .evaluate import (  # the in-memory path's own pieces: one place per formula
    IntervalEngine, MIN_WINDOW_ROWS, SUMMARY_QUANTILES, _intervals, _metric_terms, _model_predictions,
    _reward_range, bernstein_warning, bootstrap_keys, check_request, check_reward_range, data_summary,
    finish_policy_diagnostics, importance_weights, raise_max_weight, reward_summary, time_window_grid,
    window_entry, EvaluationConfig, EvaluationResult)
from . import inference, selection
from .diagnostics import _edges, _histogram, diagnostics_from_sums, reward_model_warning
from .estimators import RowInputs, Terms

#: the estimators whose per-row terms need nothing but the row (and q-hat): these stream
SUPPORTED = ("ips", "snips", "dm", "dr", "sndr", "switch-dr", "dr-os")
#: the diagnostics' weight quantiles (diagnostics.weight_diagnostics)
WEIGHT_QUANTILES = (0.5, 0.9, 0.99)
#: exact quantiles: pass 1 counts the values per bin of the top 20 bits of their order-preserving
#: uint64 image (sign, exponent, 8 mantissa bits: 256 bins per binade), pass 2 keeps only the values
#: in the bins that hold the needed ranks
_BIN_BITS = 20
_BIN_SHIFT = np.uint64(64 - _BIN_BITS)
_FIX = "drop --max-memory and --scheduler to evaluate in memory"


class UnregisteredContrast(RuntimeError):
    """A robust (or observed-range Bernstein) interval of a contrast whose per-row sums the stream did
    not compute: register it with `evaluate_stream(extra_contrasts=...)` (never approximated)."""


def _local_map(fn, items) -> list:
    return [fn(item) for item in items]


# --- what refuses to stream ----------------------------------------------------------------------

def check_streamable(config: EvaluationConfig) -> list:
    """The config's estimators as specs, or an InputError naming each one that cannot stream."""
    specs = config.validate()
    problems = []
    if config.level != "decision":
        problems.append(Problem("--sessions", "session-level evaluation does not stream: a session's terms "
                                "need its whole trajectory and the state models fitted on all sessions",
                                fix=_FIX))
    for s in specs:
        if s.name == selection.AUTO:
            problems.append(Problem("--estimators", "'auto' compares estimators on the whole sample and does not "
                                    "stream", fix=f"name the estimators (e.g. ips,snips,dr), or {_FIX}"))
        elif s.name not in SUPPORTED:
            problems.append(Problem("--estimators", f"'{s.identifier}' does not stream: its terms need the whole "
                                    "sample", fix=f"use {', '.join(SUPPORTED)}, or {_FIX}"))
        elif s.params.get("model") == "constant":
            problems.append(Problem("--estimators", f"'{s.identifier}': the constant model is the whole sample's "
                                    "mean reward per position and does not stream",
                                    fix=f"give --q-hat predictions, or {_FIX}"))
    if problems:
        raise InputError(problems)
    return specs


def _lacks_q_hat(metric: str, logs, q_hat) -> bool:
    """Whether this metric has no predictions (a q-hat file or the compact q_hat column): DM and DR
    then read the reward model fitted on the sample."""
    return q_hat is None and "q_hat" not in logs.extra


def _needs_q_hat(metric: str, specs, logs, q_hat, fitted) -> None:
    """A partition without predictions for a metric whose model was not fitted (the partitions
    disagree on whether predictions were given: the sampling pass saw them elsewhere)."""
    modelled = [s.identifier for s in specs if s.needs_model]
    if modelled and fitted is None and _lacks_q_hat(metric, logs, q_hat):
        raise InputError(Problem(logs.source, f"has no reward-model predictions for {metric}, which other "
                                 f"partitions have ({', '.join(modelled)} need them)",
                                 fix=f"give --q-hat {metric}=PATH for every decision (or the logs' q_hat "
                                     "column in every file), or none, to fit the reward model on a sample"))


# --- exact quantiles -----------------------------------------------------------------------------

def _order_key(values: np.ndarray) -> np.ndarray:
    """The order-preserving uint64 image of float64 values: flip every bit of a negative number, the
    sign bit of the others (IEEE 754 orders non-negative floats like their bit patterns)."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint64(1 << 63))


def _count_unique(keys: np.ndarray, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (sorted) and their total counts."""
    if counts is None:
        return np.unique(keys, return_counts=True)
    distinct, inverse = np.unique(keys, return_inverse=True)
    return distinct, np.bincount(inverse, weights=counts, minlength=len(distinct)).astype(np.int64)


@dataclass
class _Counts:
    """A sparse histogram (sorted keys, counts): mergeable."""

    keys: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, keys: np.ndarray) -> "_Counts":
        return cls(*_count_unique(keys))

    @classmethod
    def of_bins(cls, values: np.ndarray) -> "_Counts":
        """The coarse bins of these values, kept sparse: one bincount over the 2^20 bins (no sort) for
        many values, a sort of the few otherwise (the same counts)."""
        bins = _order_key(values) >> _BIN_SHIFT
        if len(bins) < 1 << (_BIN_BITS - 4):
            return cls.of(bins)
        dense = np.bincount(bins.astype(np.int64), minlength=1 << _BIN_BITS)
        present = np.flatnonzero(dense)
        return cls(present.astype(np.uint64), dense[present])

    def merge(self, other: "_Counts") -> "_Counts":
        return _Counts(*_count_unique(np.concatenate([self.keys, other.keys]),
                                      np.concatenate([self.counts, other.counts])))


def _ranks(n: int, qs: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower rank, upper rank, weight) of np.quantile's linear rule (Hyndman & Fan 1996, type 7), with
    numpy's own virtual index n q + (1 - q) - 1."""
    q = np.asarray(qs, dtype=np.float64)
    virtual = n * q + (1.0 + q * -1.0) - 1.0
    low = np.floor(virtual)
    gamma = virtual - low
    low = np.clip(low, 0, n - 1).astype(np.int64)
    return low, np.clip(low + 1, 0, n - 1), gamma


@dataclass
class _QuantilePlan:
    """Which coarse bins hold the ranks a quantile needs, and the rank each bin starts at."""

    n: int
    bins: np.ndarray      # the target bins, sorted
    starts: np.ndarray    # rank of each target bin's first value

    @classmethod
    def of(cls, counts: _Counts, qs: Sequence[float]) -> "_QuantilePlan":
        n = int(counts.counts.sum())
        if n == 0:
            return cls(0, np.zeros(0, np.uint64), np.zeros(0, np.int64))
        low, high, _ = _ranks(n, qs)
        ends = np.cumsum(counts.counts)
        which = np.unique(np.searchsorted(ends, np.concatenate([low, high]), side="right"))
        return cls(n, counts.keys[which], (ends - counts.counts)[which])

    def candidates(self, values: np.ndarray) -> _Counts:
        """The distinct values of these rows inside the target bins, with their counts."""
        keys = _order_key(values)
        return _Counts.of(keys[np.isin(keys >> _BIN_SHIFT, self.bins)])  # a handful of bins: a few comparisons

    def quantiles(self, candidates: _Counts, qs: Sequence[float]) -> list[float]:
        if self.n == 0:
            return [math.nan] * len(qs)
        low, high, gamma = _ranks(self.n, qs)
        keys = candidates.keys
        bins = keys >> _BIN_SHIFT
        out = []
        for lo, hi, g in zip(low, high, gamma):
            a, b = (self._value(keys, bins, candidates.counts, rank) for rank in (lo, hi))
            diff = b - a  # numpy's _lerp: from the nearer end, so that the result stays in [a, b]
            out.append(float(b - diff * (1 - g) if g >= 0.5 else a + diff * g))
        return out

    def _value(self, keys, bins, counts, rank: int) -> float:
        j = int(np.searchsorted(self.starts, rank, side="right")) - 1
        inside = bins == self.bins[j]
        position = int(np.searchsorted(np.cumsum(counts[inside]), rank - self.starts[j], side="right"))
        key = keys[inside][position]
        bits = np.where(key >> np.uint64(63), key & ~np.uint64(1 << 63), ~key)  # _order_key's inverse
        return float(np.asarray(bits, dtype=np.uint64).view(np.float64))


# --- pass 1: per-partition reductions ------------------------------------------------------------

@dataclass
class _WeightPart:
    """One policy's importance weights: the sums of diagnostics.weight_diagnostics, mergeable."""

    n: int
    total: float
    total_sq: float
    top: float
    bottom: float
    positive: int
    above: int                       # rows above config.max_weight (an input error)
    bins: _Counts
    actions: np.ndarray              # the policy's actions (values) with positive probability ...
    action_totals: np.ndarray        # ... and that probability summed over the rows

    def merge(self, o: "_WeightPart") -> "_WeightPart":
        actions, inverse = np.unique(np.concatenate([self.actions, o.actions]), return_inverse=True)
        totals = np.bincount(inverse, weights=np.concatenate([self.action_totals, o.action_totals]),
                             minlength=len(actions))
        return _WeightPart(self.n + o.n, self.total + o.total, self.total_sq + o.total_sq, max(self.top, o.top),
                           min(self.bottom, o.bottom), self.positive + o.positive, self.above + o.above,
                           self.bins.merge(o.bins), actions, totals)


@dataclass
class _RewardPart:
    moments: inference.Moments       # of the reward: mean and std
    low: float
    high: float
    zeros: int
    binary: bool                     # every reward is 0 or 1 (evaluate._reward_range's rule)
    outside: int                     # rows outside a configured range (an input error)
    bins: _Counts

    def merge(self, o: "_RewardPart") -> "_RewardPart":
        return _RewardPart(self.moments.merge(o.moments), min(self.low, o.low), max(self.high, o.high),
                           self.zeros + o.zeros, self.binary and o.binary, self.outside + o.outside,
                           self.bins.merge(o.bins))


@dataclass
class _MetricPart:
    """One metric's terms: every (policy, estimator), the layout of their distinct columns and the
    columns' moments; for Bernstein intervals the observed range of each standard contrast."""

    flat: list
    layout: list
    moments: inference.Moments
    ranges: np.ndarray               # (contrasts, 2): min and max of the contrast's per-row terms
    range_used: tuple | None         # the reward range these terms were computed with
    clipped: bool                    # whether that range clipped any q-hat (the terms depend on it)

    def merge(self, o: "_MetricPart") -> "_MetricPart":
        if (self.flat, self.layout) != (o.flat, o.layout):
            raise RuntimeError(f"partitions disagree on the estimators' terms: {self.flat} vs {o.flat}")
        return _MetricPart(self.flat, self.layout, self.moments.merge(o.moments), _merge_ranges(self.ranges, o.ranges),
                           self.range_used, self.clipped or o.clipped)


def _merge_ranges(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.column_stack([np.fmin(a[:, 0], b[:, 0]), np.fmax(a[:, 1], b[:, 1])]) if len(a) else a


@dataclass
class _Pass1:
    n: int
    n_decisions: int
    n_positions: int
    propensity: tuple
    propensity_source: str
    actions: np.ndarray              # the logged actions' distinct values
    period: tuple | None             # (min, max) timestamp, microseconds
    compact: dict                    # policy -> compact form
    weights: dict                    # policy -> _WeightPart
    rewards: dict                    # metric -> _RewardPart
    metrics: dict                    # metric -> _MetricPart
    warnings: list
    log_warnings: list

    def merge(self, o: "_Pass1") -> "_Pass1":
        if list(self.weights) != list(o.weights):
            raise InputError(Problem("partitions", f"name different policies ({', '.join(self.weights)} vs "
                                     f"{', '.join(o.weights)})"))
        period = self.period if o.period is None else o.period if self.period is None else \
            (min(self.period[0], o.period[0]), max(self.period[1], o.period[1]))
        return _Pass1(self.n + o.n, self.n_decisions + o.n_decisions, max(self.n_positions, o.n_positions),
                      (min(self.propensity[0], o.propensity[0]), max(self.propensity[1], o.propensity[1])),
                      self.propensity_source, np.unique(np.concatenate([self.actions, o.actions])), period,
                      self.compact, {k: v.merge(o.weights[k]) for k, v in self.weights.items()},
                      {k: v.merge(o.rewards[k]) for k, v in self.rewards.items()},
                      {k: v.merge(o.metrics[k]) for k, v in self.metrics.items()},
                      {m: w + o.warnings.get(m, []) for m, w in self.warnings.items()},
                      self.log_warnings + o.log_warnings)


def _merge_all(parts: Sequence):
    """Merge in partition order (the same additions in the same order on any executor); empty
    partitions (None) are skipped."""
    parts = [p for p in parts if p is not None]
    return functools.reduce(lambda a, b: a.merge(b), parts) if parts else None


@dataclass
class _Rows:
    """One partition as the in-memory path sees it: validated logs, every policy's weights, every
    metric's reward and (policy -> estimator -> Terms)."""

    logs: object
    policies: dict
    weights: dict
    rewards: dict
    terms: dict
    warnings: list
    ranges: dict
    clipped: dict


def _rows(inputs, rewards, config: EvaluationConfig, specs, ranges: dict, models: dict) -> _Rows:
    """The per-row terms of one partition, by the in-memory path's own functions. `ranges`: metric ->
    the reward range to use ("data": this partition's own rule, a first guess that pass 1 checks);
    `models`: metric -> the SampledRewardModel that predicts the metric's rows (no q-hat given)."""
    logs, q_hat = inputs.logs, dict(getattr(inputs, "q_hat", None) or {})
    policies = dict(inputs.policies)
    check_request(policies, rewards, config)
    all_policies = {LOGGING_POLICY: logging_policy(logs), **policies}
    weights = importance_weights(logs, all_policies)
    reward_arrays = {spec.name: logs.reward(spec) for spec in rewards}
    terms, warnings, used, clipped = {}, {}, {}, {}
    for spec in rewards:
        metric = spec.name
        reward = reward_arrays[metric]
        wanted = ranges.get(metric, "data")
        if wanted == "data":
            wanted = (float(min(config.reward_ranges[metric])), float(max(config.reward_ranges[metric]))) \
                if metric in config.reward_ranges else _reward_range(metric, reward, config)
        used[metric], clipped[metric] = wanted, False
        predictions = None
        if any(s.needs_model for s in specs):
            # once per partition and pass: given predictions, or the sampled model's (evaluate's own branch)
            _needs_q_hat(metric, specs, logs, q_hat.get(metric), models.get(metric))
            predictions = _model_predictions(logs, all_policies, reward, q_hat.get(metric), config,
                                             fitted=models.get(metric))
            if wanted is not None:
                q_logged, q_pi, _ = predictions
                clipped[metric] = any(bool(np.any((q < wanted[0]) | (q > wanted[1])))
                                      for q in [q_logged, *q_pi.values()] if q is not None)
        warnings[metric] = []
        terms[metric], _, _ = _metric_terms(metric, reward, logs, all_policies, weights, {}, specs,
                                               q_hat.get(metric), config, lambda _msg: None, warnings[metric],
                                               reward_range=wanted, predictions=predictions)
    return _Rows(logs, all_policies, weights, reward_arrays, terms, warnings, used, clipped)


def _flat(terms: dict) -> tuple[list, list]:
    flat = [(p, e) for p, by_est in terms.items() for e in by_est]
    return flat, [terms[p][e] for p, e in flat]


def standard_contrasts(flat: Sequence[tuple[str, str]], baseline: str) -> list[tuple[list, list]]:
    """The contrasts the document reports: each (policy, estimator) and each paired difference to the
    baseline (ope/evaluate.py, _intervals)."""
    have = set(flat)
    out = [([key], [1.0]) for key in flat]
    out += [([(p, e), (baseline, e)], [1.0, -1.0]) for p, e in flat if p != baseline and (baseline, e) in have]
    return out


def _row_vector(flat, layout, n_columns: int, keys, coefs) -> np.ndarray:
    """b with X b = sum_k c_k (weighted_k + direct_k) per row: a plain-mean contrast's per-row terms."""
    position = {key: i for i, key in enumerate(flat)}
    b = np.zeros(n_columns)
    for key, c in zip(keys, coefs):
        w, d, _ = layout[position[key]]
        b[w] += c
        if d is not None:
            b[d] += c
    return b


def _row_ranges(columns, vectors: Sequence[np.ndarray]) -> np.ndarray:
    """(min, max) over these rows of X b for each b."""
    out = np.full((len(vectors), 2), np.nan)
    for i, b in enumerate(vectors):
        if len(columns) and len(columns[0]):
            y = sum(c * columns[j] for j, c in enumerate(b) if c != 0)
            y = np.broadcast_to(y, (len(columns[0]),))
            out[i] = float(np.min(y)), float(np.max(y))
    return out


def _action_totals(logs, policy) -> tuple[np.ndarray, np.ndarray]:
    """The policy's probability per action (by value) summed over this partition's rows: with the
    global set of logged actions it gives the unlogged mass (PolicyTable.unlogged_probability)."""
    values = np.concatenate([np.asarray(logs.actions), np.asarray(logs.unlogged_actions, dtype=logs.actions.dtype)])
    if policy.compact or policy.name == LOGGING_POLICY:
        return values[:0], np.zeros(0)
    d = policy.distribution
    if d is not None and not policy.materialised:  # context-free: its distribution times rows per position
        slot = np.repeat(np.arange(len(d.start) - 1), np.diff(d.start))
        totals = np.bincount(d.action_code, weights=d.prob * policy._rows_per_position()[slot],
                             minlength=len(values))
    else:
        totals = np.bincount(policy.action_code, weights=policy.prob, minlength=len(values))
    keep = totals > 0
    return values[keep], totals[keep]


def _pass1(partition, *, load, rewards, config: EvaluationConfig, specs, ranges: dict,
           models: dict) -> _Pass1 | None:
    inputs = load(partition)
    rows = _rows(inputs, rewards, config, specs, ranges, models)
    logs = rows.logs
    if logs.n == 0:
        return None
    bound = config.max_weight
    weights = {}
    for name, w in rows.weights.items():
        values, totals = _action_totals(logs, rows.policies[name])
        # einsum, not np.dot: a threaded BLAS dot's last digits depend on the thread count
        weights[name] = _WeightPart(
            n=logs.n, total=float(np.sum(w)), total_sq=float(np.einsum("i,i->", w, w)),
            top=float(w.max()), bottom=float(w.min()),
            positive=int(np.count_nonzero(w > 0)),
            above=int(np.count_nonzero(w > bound * (1 + 1e-12))) if bound is not None else 0,
            bins=_Counts.of_bins(w), actions=values, action_totals=totals)
    reward_parts, metric_parts = {}, {}
    for metric, r in rows.rewards.items():
        low, high = config.reward_ranges.get(metric, (-math.inf, math.inf))
        reward_parts[metric] = _RewardPart(
            inference.Moments.of([r]), float(r.min()), float(r.max()), int(np.count_nonzero(r == 0)),
            bool(np.all((r == 0) | (r == 1))), int(np.count_nonzero((r < low) | (r > high))),
            _Counts.of_bins(r))
        flat, ts = _flat(rows.terms[metric])
        columns, layout = inference.distinct_columns(ts)
        vectors = [_row_vector(flat, layout, len(columns), k, c)
                   for k, c in standard_contrasts(flat, config.baseline)] if config.ci == "bernstein" else []
        metric_parts[metric] = _MetricPart(flat, layout, inference.Moments.of(columns), _row_ranges(columns, vectors),
                                           rows.ranges[metric], rows.clipped[metric])
    period = None
    if logs.timestamp is not None:
        ts = logs.timestamp.astype("datetime64[us]").astype(np.int64)
        period = (int(ts.min()), int(ts.max()))
    return _Pass1(n=logs.n, n_decisions=int(len(logs.decision_ids)) if logs.decision_ids is not None else logs.n,
                  n_positions=logs.n_positions,
                  propensity=(float(np.min(logs.propensity)), float(np.max(logs.propensity))),
                  propensity_source=logs.propensity_source, actions=np.unique(np.asarray(logs.actions)),
                  period=period, compact={name: p.compact for name, p in rows.policies.items()},
                  weights=weights, rewards=reward_parts, metrics=metric_parts, warnings=rows.warnings,
                  log_warnings=list(logs.warnings))


# --- pass 2 --------------------------------------------------------------------------------------

@dataclass
class _Plan2:
    """What pass 2 computes, from the merged pass 1 (small and picklable)."""

    ranges: dict                     # metric -> reward range (the global rule)
    offsets: list                    # each partition's first row in the whole log (bootstrap keys)
    means: dict = field(default_factory=dict)        # metric -> global means of the distinct columns
    tails: dict = field(default_factory=dict)        # metric -> (m, k) contrast vectors a (robust)
    row_vectors: dict = field(default_factory=dict)  # metric -> (m, k) vectors b (observed ranges)
    bootstrap: bool = False
    windows: tuple | None = None     # (start, width, estimator)
    edges: dict = field(default_factory=dict)        # policy -> weight histogram edges
    weight_quantiles: dict = field(default_factory=dict)  # policy -> _QuantilePlan
    reward_quantiles: dict = field(default_factory=dict)  # metric -> _QuantilePlan


@dataclass
class _Pass2:
    tails: dict
    ranges: dict
    boot: dict
    windows: dict                    # window -> (n, {metric: {policy: Moments}})
    histograms: dict
    weight_candidates: dict
    reward_candidates: dict

    def merge(self, o: "_Pass2") -> "_Pass2":
        windows = dict(self.windows)
        for k, (n, theirs) in o.windows.items():
            if k not in windows:
                windows[k] = (n, theirs)
                continue
            n0, mine = windows[k]
            windows[k] = (n0 + n, {m: {p: mo.merge(theirs[m][p]) for p, mo in pols.items()}
                                   for m, pols in mine.items()})
        return _Pass2({m: a + o.tails[m] for m, a in self.tails.items()},
                      {m: _merge_ranges(a, o.ranges[m]) for m, a in self.ranges.items()},
                      {m: a + o.boot[m] for m, a in self.boot.items()}, windows,
                      {p: a + o.histograms[p] for p, a in self.histograms.items()},
                      {p: a.merge(o.weight_candidates[p]) for p, a in self.weight_candidates.items()},
                      {m: a.merge(o.reward_candidates[m]) for m, a in self.reward_candidates.items()})


def _pass2(item, *, load, rewards, config: EvaluationConfig, specs, plan: _Plan2, models: dict) -> _Pass2 | None:
    index, partition = item
    rows = _rows(load(partition), rewards, config, specs, plan.ranges, models)
    logs = rows.logs
    if logs.n == 0:
        return None
    tails, ranges, boot = {}, {}, {}
    keys = bootstrap_keys(logs, plan.offsets[index]) if plan.bootstrap else None
    for metric, terms in rows.terms.items():
        _, ts = _flat(terms)
        columns, _ = inference.distinct_columns(ts)
        tails[metric] = np.array([inference.tail_sums(columns, plan.means[metric], a)
                                  for a in plan.tails.get(metric, [])]).reshape(-1, 6)
        ranges[metric] = _row_ranges(columns, plan.row_vectors.get(metric, []))
        if plan.bootstrap:
            boot[metric] = inference.bootstrap_sums(columns, keys, config.n_boot, config.seed)
    windows = {}
    if plan.windows is not None:
        start0, width, estimator = plan.windows
        window = (logs.timestamp.astype("datetime64[us]").astype(np.int64) - start0) // width
        # the rows grouped by window, in row order within each (a stable sort): every window's columns
        # are then slices, the values Terms.subset(window == k) gives, in the same order
        order = np.argsort(window, kind="stable")
        ks, starts = np.unique(window[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        columns = {metric: {name: [a[order] for a in (t.weighted, t.direct, t.norm) if a is not None]
                            for name, t in ((name, by_est[estimator]) for name, by_est in terms.items()
                                            if estimator in by_est)}
                   for metric, terms in rows.terms.items()}
        for k, start, end in zip(ks.tolist(), starts.tolist(), ends.tolist()):
            windows[k] = (end - start, {metric: {name: inference.Moments.of([c[start:end] for c in cols])
                                                 for name, cols in by_policy.items()}
                                        for metric, by_policy in columns.items()})
    return _Pass2(tails, ranges, boot, windows,
                  {name: _histogram(w, plan.edges[name]) for name, w in rows.weights.items()},
                  {name: plan.weight_quantiles[name].candidates(w) for name, w in rows.weights.items()},
                  {metric: plan.reward_quantiles[metric].candidates(r) for metric, r in rows.rewards.items()})


# --- the engine ----------------------------------------------------------------------------------

def _values(layout, moments: inference.Moments) -> list[float]:
    """Each estimator's value from the merged means: mean(weighted) / mean(norm) + mean(direct), as
    Terms.value (NaN when the norm's sum is 0)."""
    mean = moments.mean
    out = []
    for w, d, z in layout:
        if z is None:
            value = float(mean[w])
        else:
            value = float(mean[w]) / float(mean[z]) if mean[z] != 0 else math.nan
        out.append(value + (float(mean[d]) if d is not None else 0.0))
    return out


class StreamEngine(IntervalEngine):
    """The IntervalEngine of a streamed metric: the same intervals and p-values, answered from merged
    sums. Robust intervals (and Bernstein intervals on the observed range) of a contrast need that
    contrast's per-row sums from pass 2: the reported contrasts and those registered through
    `evaluate_stream(extra_contrasts=...)` have them; any other raises `UnregisteredContrast`."""

    def __init__(self, part: _MetricPart, cfg: EvaluationConfig, value_range, bounds: dict):
        self.cfg, self.value_range, self.keys = cfg, value_range, None
        self.flat, self.layout = list(part.flat), list(part.layout)
        self.terms = {}
        for p, e in self.flat:
            self.terms.setdefault(p, {})[e] = None  # the (policy, estimator) pairs; no per-row terms here
        self.position = {key: i for i, key in enumerate(self.flat)}
        self.moments = part.moments
        self.__dict__["covariance"] = inference.InfluenceCovariance.from_moments(
            _values(self.layout, part.moments), self.layout, part.moments)
        self.bounds = bounds                    # (policy, estimator) -> Terms.bounds
        self.reward_model = None                # the SampledRewardModel of DM/DR (no q-hat given)
        self._shapes: dict = {}
        self._ranges: dict = {}
        self.replicates = None

    def canonical(self, keys, coefs) -> tuple:
        """A contrast as its coefficient per (policy, estimator): the key under which its sums are kept."""
        return tuple(self._replicate_coefs(list(keys), list(coefs)))

    def _value(self, keys, coefs) -> float:
        return float(sum(c * self.covariance.values[self.position[k]] for k, c in zip(keys, coefs)))

    def _bernstein(self, keys, coefs):
        if any(self.layout[self.position[k]][2] is not None for k in keys):
            raise InputError(inference.bernstein_needs_plain_means())
        idx = [self.position[k] for k in keys]
        c = np.asarray(coefs, dtype=np.float64)
        var = float(c @ self.covariance.cov[np.ix_(idx, idx)] @ c)  # plain means: the terms' own covariance
        stand_ins = [Terms(weighted=np.zeros(0), bounds=self.bounds[k]) for k in keys]

        def observed():
            key = self.canonical(keys, coefs)
            if key not in self._ranges:
                raise UnregisteredContrast(f"the observed range of contrast {list(zip(keys, coefs))} was not "
                                           "computed: register it with evaluate_stream(extra_contrasts=...)")
            return self._ranges[key]

        return inference._BernsteinBound.from_stats(self._value(keys, coefs), var, self.covariance.n,
                                                    inference.contrast_bounds(stand_ins, coefs), observed)

    def tail_shape(self, keys, coefs) -> inference.TailShape:
        key = self.canonical(keys, coefs)
        if key not in self._shapes:
            if self.covariance.contrast_vector([self.position[k] for k in keys], coefs) is None:
                return inference.TailShape(math.nan, self.covariance.n, math.nan, math.nan)
            raise UnregisteredContrast(f"the tail shape of contrast {list(zip(keys, coefs))} was not computed: "
                                       "register it with evaluate_stream(extra_contrasts=...)")
        return self._shapes[key]


def _term_bounds(specs, flat, reward_range, cfg: EvaluationConfig, alpha: float) -> dict:
    """Each (policy, estimator)'s a-priori range (Terms.bounds): the estimator's own rule, read off a
    one-row evaluation with the global reward range (the bounds depend on no row)."""
    by_id = {s.identifier: s for s in specs}
    one = np.zeros(1)
    out = {}
    for p, e in flat:
        x = RowInputs(reward=one, weight=np.ones(1), q_logged=one, q_pi=one, alpha=alpha, reward_range=reward_range,
                      max_weight=1.0 if p == LOGGING_POLICY else cfg.max_weight, unit_weight=p == LOGGING_POLICY)
        out[(p, e)] = by_id[e].terms(x).bounds
    return out


# --- diagnostics and summary from merged sums -----------------------------------------------------

def _weight_diagnostics(part: _WeightPart, quantiles: list[float], counts: np.ndarray, edges: np.ndarray) -> dict:
    """diagnostics.weight_diagnostics of the merged weight sums (constant weights, e.g. the logging
    policy's, from n and their value, as there)."""
    n, top = part.n, part.top
    constant = n and top == part.bottom
    total, total_sq = (n * top, n * top * top) if constant else (part.total, part.total_sq)
    n_positive = (n if top > 0 else 0) if constant else part.positive
    return diagnostics_from_sums(n, total, total_sq, top, n_positive, quantiles, edges, counts)


def _unlogged_mass(part: _WeightPart, logged: np.ndarray) -> float:
    if not len(part.actions):
        return 0.0
    return float(np.sum(part.action_totals[~np.isin(part.actions, logged)])) / part.n


def _global_reward_range(metric: str, part: _RewardPart, cfg: EvaluationConfig):
    """evaluate._reward_range's rule on the whole log (a configured range, or [0, 1] for 0/1 rewards)."""
    if metric in cfg.reward_ranges:
        check_reward_range(metric, part.outside, cfg)
        low, high = cfg.reward_ranges[metric]
        return float(low), float(high)
    return (0.0, 1.0) if part.binary else None


# --- the reward model: fitted once on a sample of decisions -------------------------------------

#: how the sample and the folds are drawn (the document's data.engine.reward_model.folds)
FOLDS = "seeded hash of decision_id"


@dataclass
class _SamplePart:
    """One partition's share of the reward model's sample: its rows, the metrics it has no predictions
    for, and its sampled rows (whole decisions) as a LoggedData of their own (reward_model.gather_sample)."""

    n: int
    lacking: tuple
    piece: object | None


def _lacking(inputs, rewards) -> tuple:
    q_hat = dict(getattr(inputs, "q_hat", None) or {})
    return tuple(spec.name for spec in rewards if _lacks_q_hat(spec.name, inputs.logs, q_hat.get(spec.name)))


def _count(partition, *, load, rewards) -> _SamplePart:
    """A partition's rows and the metrics it has no predictions for (no sample)."""
    inputs = load(partition)
    return _SamplePart(inputs.logs.n, _lacking(inputs, rewards), None)


def _sample_part(partition, *, load, rewards, fraction: float, seed: int) -> _SamplePart:
    """The sampling pass on one partition: `reward_model.sample_rows` (decision d is drawn when a seeded
    hash of its id falls below `fraction`: the same decisions whatever the partitioning)."""
    from .reward_model import gather_sample, sample_rows
    inputs = load(partition)
    logs, lacking = inputs.logs, _lacking(inputs, rewards)
    piece = None
    if lacking and logs.n:
        rows = sample_rows(logs, fraction, seed)
        if len(rows):
            piece = gather_sample([(logs, rows)])
    return _SamplePart(logs.n, lacking, piece)


def _sample_share(sample) -> tuple[float | None, int | None]:
    """(fraction, None) for a share of decisions in (0, 1], (None, rows) for a number of log rows to aim at."""
    if sample is None:
        from .reward_model import DEFAULT_SAMPLE_ROWS
        return None, DEFAULT_SAMPLE_ROWS
    if isinstance(sample, (bool, np.bool_)):
        raise TypeError(f"sample={sample!r}: give a share of decisions in (0, 1] or a number of rows")
    if isinstance(sample, (int, np.integer)):
        if sample < 1:
            raise InputError(Problem("sample", f"{sample} rows: the reward model's sample needs at least 1 row"))
        return None, int(sample)
    fraction = float(sample)
    if not 0.0 < fraction <= 1.0:
        raise InputError(Problem("sample", f"{fraction} is not a share of decisions in (0, 1]"))
    return fraction, None


def _fit_models(partitions: list, execute, load, rewards, config: EvaluationConfig, specs, sample,
                n_rows: int | None, step, lacking: Sequence[str] | None = None) -> tuple[dict, dict | None, int]:
    """The sampling pass and the fit: (metric -> SampledRewardModel, the engine's reward_model entry,
    the passes it read every partition). Fits nothing when every metric has predictions or no estimator
    needs a model. `lacking`: the metrics without predictions, when the caller knows (else the first
    partition tells; the sampling pass checks every partition)."""
    modelled = [s.identifier for s in specs if s.needs_model]
    if not modelled or not partitions:
        return {}, None, 0
    from . import reward_model as rm
    fraction, rows = _sample_share(sample)
    passes = 0
    if lacking is None:
        lacking = execute(functools.partial(_count, load=load, rewards=rewards), partitions[:1])[0].lacking
    lacking = tuple(spec.name for spec in rewards if spec.name in set(lacking))
    if not lacking:
        return {}, None, 0
    if fraction is None:
        if n_rows is None:  # a number of rows out of an unknown total: count them
            step(f"counting the rows of {len(partitions)} partitions for the reward model's sample")
            n_rows = sum(p.n for p in execute(functools.partial(_count, load=load, rewards=rewards), partitions))
            passes = 1
        fraction = rm.sample_fraction(n_rows, rows)
    step(f"sampling pass over {len(partitions)} partitions ({fraction:.3g} of the decisions) for the reward model")
    parts = execute(functools.partial(_sample_part, load=load, rewards=rewards, fraction=fraction, seed=config.seed),
                    partitions)
    passes += 1
    if any(p.lacking != lacking for p in parts):
        raise InputError(Problem("--q-hat", "some partitions have reward-model predictions and others do not",
                                 fix="give predictions for every decision (a --q-hat file per metric, or the logs' "
                                     "q_hat column in every file), or none, to fit the reward model on a sample"))
    pieces = [p.piece for p in parts if p.piece is not None]
    if not pieces:
        raise InputError(Problem("logs", "have no rows" if not any(p.n for p in parts) else
                                 "gave the reward model an empty sample", fix="give logs with at least one row"))
    sample_logs = rm.gather_sample([(piece, np.arange(piece.n)) for piece in pieces])
    if sample_logs.n_context_columns == 0:
        raise InputError(Problem("logs", f"have no context columns for the reward model that {', '.join(modelled)} "
                                 "need", fix="add x_* columns, pass --context, or give --q-hat"))
    from livegate.datasets.errors import raise_if_any
    from livegate.datasets.validation import check_cross_fitting
    n_decisions = int(len(sample_logs.decision_ids))
    raise_if_any(check_cross_fitting(n_decisions, config.n_folds, "the reward model's sample", modelled))
    by_name = {spec.name: spec for spec in rewards}
    models = {}
    for metric in lacking:
        step(f"fitting the reward model for {metric} on {sample_logs.n:,} sampled rows")
        models[metric] = rm.fit_sampled_reward_model(
            sample_logs, sample_logs.reward(by_name[metric]), n_folds=config.n_folds, seed=config.seed,
            model=config.reward_model, progress=rm.counted_progress(step, f"for {metric}"))
    info = {"sampled": True, "sample_rows": int(sample_logs.n), "sample_decisions": n_decisions,
            "fraction": float(fraction), "n_folds": int(config.n_folds), "folds": FOLDS, "metrics": list(lacking)}
    return models, info, passes


def model_warning(info: dict) -> str:
    """The result's warning about a reward model fitted on a sample (what is exact, what approximate)."""
    whole = info["fraction"] >= 1
    sample = f"every decision ({info['sample_rows']:,} log rows)" if whole else \
        f"a sample of {info['sample_rows']:,} log rows ({info['sample_decisions']:,} decisions, " \
        f"{info['fraction']:.3g} of them, drawn by a {FOLDS})"
    return (f"The reward model of {', '.join(info['metrics'])} was fitted once on {sample}, then applied to every "
            f"partition: each row is predicted by the model of its fold ({info['n_folds']} folds by a {FOLDS}), "
            "which never trained on it. Exact: the estimators' algebra over every row, the folds, and "
            "DR's unbiasedness given the model. Approximate: "
            + ("the model's folds are not the in-memory fit's, so DM is not equal to the in-memory DM (DR is "
               "unbiased with either model)." if whole else
               "the model saw a sample, so DM is not equal to the in-memory DM, and DR's variance may be a little "
               "larger."))


# --- the whole evaluation ------------------------------------------------------------------------

def evaluate_stream(partitions: Sequence, load: Callable[[object], object], rewards, config: EvaluationConfig,
                    *, execute: Callable | None = None,
                    extra_contrasts: Callable[[EvaluationResult], list] | None = None,
                    progress: Callable[[str], None] | None = None, sample: float | int | None = None,
                    n_rows: int | None = None, model_metrics: Sequence[str] | None = None) -> EvaluationResult:
    """`ope.evaluate` over partitions of whole decisions, in bounded memory (see the module).

    partitions: picklable items; `load(partition)` returns an object with `.logs` (LoggedData),
    `.policies` (name -> PolicyTable, without `logging`) and `.q_hat` (metric -> RewardPredictions),
    validated by the usual loaders. rewards: the RewardSpecs. execute(fn, items): the list of fn(item)
    in item order (ope/execution.py: local or Dask); `fn` is a functools.partial of module-level
    functions, picklable when `load` is. extra_contrasts(result): called after pass 1 with a result
    whose values are final (its intervals provisional, normal), returns (metric, keys, coefs) triples
    (or (keys, coefs) pairs, for every metric) whose robust tail shapes and Bernstein observed ranges
    pass 2 must compute too (the gate's relative criteria). Returns the in-memory path's
    EvaluationResult, with data["engine"] = {"mode", "partitions", "passes", "reward_model"}; `engines`
    are `StreamEngine`s (the IntervalEngine interface; `.reward_model` the metric's fitted model).

    DM and DR without predictions for a metric (no q-hat, no compact q_hat column): a sampling pass
    draws whole decisions by a seeded hash of their ids, the client fits one cross-fitted
    `SampledRewardModel` per metric on them (config.n_folds, config.seed, config.reward_model) and the
    partitions predict their own rows with it (docs/streaming.md: what is exact, what approximate).
    `sample`: a share of decisions in (0, 1], or a number of log rows to aim at (default
    reward_model.DEFAULT_SAMPLE_ROWS) out of `n_rows` (the logs' rows; unknown: a pass counts them).
    `model_metrics`: the metrics without predictions, when the caller knows them (api: from the request;
    None: the first partition is read to tell)."""
    specs = check_streamable(config)
    step = progress or (lambda _msg: None)
    execute = execute or _local_map
    rewards = list(rewards)
    partitions = list(partitions)
    if not rewards:
        raise InputError(Problem("--reward", "no reward given", fix="e.g. --reward watch_seconds"))
    models, sampling, sampled = _fit_models(partitions, execute, load, rewards, config, specs, sample, n_rows, step,
                                            model_metrics)
    common = dict(load=load, rewards=rewards, config=config, specs=specs, models=models)

    step(f"pass 1 over {len(partitions)} partitions")
    parts, ranges, redone = _first_pass(partitions, execute, common, config)
    merged = _merge_all(parts)
    if config.max_weight is not None:
        raise_max_weight({name: (w.above, w.top) for name, w in merged.weights.items()}, config.max_weight)
    engines = {metric: StreamEngine(part, config, ranges[metric],
                                    _term_bounds(specs, part.flat, ranges[metric], config, config.alpha))
               for metric, part in merged.metrics.items()}
    for metric, engine in engines.items():
        engine.reward_model = models.get(metric)
    contrasts = {m: standard_contrasts(e.flat, config.baseline) for m, e in engines.items()}
    if config.ci == "bernstein":  # the reported contrasts' observed ranges came with pass 1
        for metric, engine in engines.items():
            for (keys, coefs), r in zip(contrasts[metric], merged.metrics[metric].ranges):
                engine._ranges[engine.canonical(keys, coefs)] = (float(r[0]), float(r[1]))
    extra: dict = {m: [] for m in engines}
    if extra_contrasts is not None:
        for item in extra_contrasts(_assemble(merged, engines, config, rewards, None, None)) or []:
            metric, keys, coefs = item if len(item) == 3 else (None, *item)
            for m in ([metric] if metric is not None else engines):
                extra[m].append((list(keys), [float(c) for c in coefs]))

    plan, wanted = _second_plan(merged, parts, engines, contrasts, extra, ranges, config, specs)
    step(f"pass 2 over {len(partitions)} partitions")
    second = _merge_all(execute(functools.partial(_pass2, plan=plan, **common), list(enumerate(partitions))))
    for metric, engine in engines.items():
        tail_keys, range_keys = wanted[metric]
        for key, sums in zip(tail_keys, second.tails[metric]):
            engine._shapes[key] = inference.TailShape.from_sums(sums, engine.covariance.n)
        for key, r in zip(range_keys, second.ranges[metric]):
            engine._ranges[key] = (float(r[0]), float(r[1]))
        if config.ci == "bootstrap":
            engine.replicates = inference.replicates_from_sums(second.boot[metric], engine.layout)
    result = _assemble(merged, engines, config, rewards, second, plan)
    result.data["engine"] = {"mode": getattr(execute, "mode", "streaming"), "partitions": len(partitions),
                             "passes": 2 + redone + sampled, "reward_model": sampling}
    if sampling is not None:
        result.warnings = list(dict.fromkeys([*result.warnings, model_warning(sampling)]))
    return result


def _first_pass(partitions: list, execute, common: dict, config: EvaluationConfig) -> tuple[list, dict, int]:
    """Pass 1's per-partition reductions, the global reward ranges, and whether some partitions were
    read again. A partition whose own rewards were all 0/1 clipped q-hat into [0, 1] (evaluate's rule);
    if the whole log's rewards are not 0/1, its terms are recomputed unclipped, when the clipping
    changed a prediction at all (so that no pre-pass over the rewards is needed)."""
    parts = execute(functools.partial(_pass1, ranges={}, **common), partitions)
    merged = _merge_all(parts)
    if merged is None:
        raise InputError(Problem("logs", "have no rows", fix="give logs with at least one row"))
    ranges = {m: _global_reward_range(m, merged.rewards[m], config) for m in merged.rewards}
    redo = [i for i, p in enumerate(parts) if p is not None and
            any(p.metrics[m].clipped and p.metrics[m].range_used != ranges[m] for m in ranges)]
    if redo:
        again = execute(functools.partial(_pass1, ranges=ranges, **common), [partitions[i] for i in redo])
        for i, part in zip(redo, again):
            parts[i] = part
    return parts, ranges, int(bool(redo))


def _second_plan(merged: _Pass1, parts: list, engines: dict, contrasts: dict, extra: dict, ranges: dict,
                 config: EvaluationConfig, specs) -> tuple[_Plan2, dict]:
    """What pass 2 computes, and per metric the keys (StreamEngine.canonical) of the contrasts whose
    tail sums and observed ranges it returns, in its order."""
    offsets = np.concatenate([[0], np.cumsum([0 if p is None else p.n for p in parts])])[:-1].tolist()
    plan = _Plan2(ranges=ranges, offsets=offsets, bootstrap=config.ci == "bootstrap")
    wanted = {}
    for metric, engine in engines.items():
        cov = engine.covariance
        plan.means[metric] = cov.mean if cov.mean is not None else engine.moments.mean
        tail_keys, vectors, range_keys, rows = [], [], [], []
        if config.ci == "robust":
            for keys, coefs in [*contrasts[metric], *extra[metric]]:
                a = cov.contrast_vector([engine.position[k] for k in keys], coefs)
                key = engine.canonical(keys, coefs)
                if a is not None and key not in tail_keys:  # an undefined contrast's shape needs no rows
                    tail_keys.append(key)
                    vectors.append(a)
        if config.ci == "bernstein":
            for keys, coefs in extra[metric]:
                key = engine.canonical(keys, coefs)
                if key not in engine._ranges and key not in range_keys:
                    range_keys.append(key)
                    rows.append(_row_vector(engine.flat, engine.layout, len(engine.moments.mean), keys, coefs))
        plan.tails[metric], plan.row_vectors[metric] = vectors, rows
        wanted[metric] = (tail_keys, range_keys)
    if merged.period is not None:
        grid = time_window_grid(merged.period[0], merged.period[1], config)
        if grid is not None:
            plan.windows = (*grid, specs[0].identifier)
    plan.edges = {name: _edges(w.top) for name, w in merged.weights.items()}
    plan.weight_quantiles = {name: _QuantilePlan.of(w.bins, WEIGHT_QUANTILES) for name, w in merged.weights.items()}
    plan.reward_quantiles = {m: _QuantilePlan.of(r.bins, SUMMARY_QUANTILES) for m, r in merged.rewards.items()}
    return plan, wanted


def _assemble(merged: _Pass1, engines: dict, config: EvaluationConfig, rewards, second: _Pass2 | None,
              plan: _Plan2 | None) -> EvaluationResult:
    """The EvaluationResult of the merged reductions (the in-memory path's own `_intervals`,
    `finish_policy_diagnostics`, `data_summary`, `window_entry`). Without pass 2 (`second` None: the
    result `extra_contrasts` reads) it is provisional: final values, normal intervals, no quantiles,
    histograms or time windows."""
    cfg = config
    provisional = second is None
    if provisional:
        cfg = replace(config, ci="normal")
        views = {}
        for metric, engine in engines.items():
            view = StreamEngine.__new__(StreamEngine)
            view.__dict__.update(engine.__dict__)
            view.cfg = cfg
            views[metric] = view
        engines = views
    warnings = list(dict.fromkeys(merged.log_warnings))
    results = {}
    for metric, engine in engines.items():
        results[metric] = _intervals(engine, cfg)
        warnings += merged.warnings.get(metric, [])
        warnings += bernstein_warning(metric, results[metric])
    diagnostics = {}
    if not provisional:
        for name, part in merged.weights.items():
            wq = plan.weight_quantiles[name].quantiles(second.weight_candidates[name], WEIGHT_QUANTILES)
            diag = _weight_diagnostics(part, wq, second.histograms[name], plan.edges[name])
            diagnostics[name] = finish_policy_diagnostics(
                diag, _unlogged_mass(part, merged.actions), compact=merged.compact[name],
                estimated=merged.propensity_source == "estimated")
    for metric, by_policy in results.items():
        for name, result in by_policy.items():
            diag = dict(diagnostics.get(name, {"warnings": []}))
            model = getattr(engines[metric], "reward_model", None)
            quality = None if model is None else model.quality  # the sample's out-of-fold quality
            diag["reward_model"] = quality
            diag["warnings"] = diag["warnings"] + reward_model_warning(quality)
            result.diagnostics = diag
    summary = {}
    for metric, part in merged.rewards.items():
        m = part.moments
        quantiles = plan.reward_quantiles[metric].quantiles(second.reward_candidates[metric], SUMMARY_QUANTILES) \
            if not provisional else [math.nan] * 3
        summary[metric] = reward_summary(float(m.mean[0]), math.sqrt(float(m.m2[0, 0]) / (m.n - 1)) if m.n > 1 else 0.0,
                                            part.low, part.high, part.zeros / m.n, quantiles)
    period = None if merged.period is None else tuple(np.datetime64(int(t), "us") for t in merged.period)
    data = data_summary(n_rows=merged.n, n_decisions=merged.n_decisions, n_actions=int(len(merged.actions)),
                           n_positions=merged.n_positions, period=period, propensity=merged.propensity,
                           propensity_source=merged.propensity_source, rewards=summary)
    windows = None
    if not provisional and merged.period is not None:
        windows = _windows(second, plan, engines, cfg) if plan.windows is not None else None
    return EvaluationResult(config=config, data=data, baseline=config.baseline, metrics=results,
                            metric_definitions={spec.name: spec.expression for spec in rewards},
                            time_windows=windows, warnings=list(dict.fromkeys(warnings)), engines=engines)


def _windows(second: _Pass2, plan: _Plan2, engines: dict, cfg: EvaluationConfig) -> dict:
    """evaluate._time_windows from each window's merged moments: the normal interval of the first
    estimator per metric and policy."""
    start0, width, estimator = plan.windows
    out = []
    for k in sorted(second.windows):
        n, by_metric = second.windows[k]
        if n < MIN_WINDOW_ROWS:
            continue
        intervals = {}
        for metric, by_policy in by_metric.items():
            intervals[metric] = {}
            order = [p for p, e in engines[metric].flat if e == estimator]
            for name in order:
                moments = by_policy[name]
                layout = engines[metric].layout[engines[metric].position[(name, estimator)]]
                # the window's own layout: its distinct columns renumbered in order of appearance
                local = _local_layout(layout)
                cov = inference.InfluenceCovariance.from_moments(_values([local], moments), [local], moments)
                intervals[metric][name] = cov.interval([0], [1.0], cfg.alpha)
        out.append(window_entry(start0, width, k, n, intervals))
    return {"estimator": estimator, "width_seconds": width // 10**6, "windows": out}


def _local_layout(layout: tuple) -> tuple:
    """One estimator's (weighted, direct, norm) columns numbered as `distinct_columns([terms.subset(mask)])`
    numbers them: in that order, each present role its own column (a subset copies every array)."""
    out, k = [], 0
    for column in layout:
        out.append(None if column is None else k)
        k += column is not None
    return tuple(out)
