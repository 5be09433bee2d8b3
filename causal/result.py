"""Result objects of the causal check and the ``livegate.causal/1`` document they serialise to."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SCHEMA = "livegate.causal/1"


def clean(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN / inf to None, tuples to lists, keys to str."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [clean(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if hasattr(value, "to_dict") and not isinstance(value, pd.DataFrame):
        return clean(value.to_dict())
    return value


#: The states of a refutation, as documents and reports spell them.
STATES = ("pass", "fail", "not_applicable", "unstable")


def refutation_state(passed: bool | None, state: str | None = None) -> str:
    """The refutation's state. ``passed`` decides pass (true) and fail (false); with ``passed`` None
    the state is "unstable" when so marked and "not_applicable" otherwise, never a failure (the same
    rule as ``livegate.reports.documents.refutation_state`` for documents)."""
    if passed is True:
        return "pass"
    if passed is False:
        return "fail"
    return state if state in ("unstable", "not_applicable") else "not_applicable"


@dataclass(frozen=True)
class Refutation:
    """One refutation: the new effect it produced, DoWhy's p-value (or None), the verdict and its rule.

    ``state`` is "pass", "fail", "not_applicable" or "unstable" (causal/refute.py); ``passed`` is
    True for a pass, False for a failure and None otherwise (not applicable, or unstable)."""

    name: str
    new_effect: float | None
    p_value: float | None
    passed: bool | None  # None: not applicable or unstable (see ``state`` and ``rule``)
    rule: str
    details: dict = field(default_factory=dict)
    state: str | None = None  # None: follows ``passed``

    def __post_init__(self):
        object.__setattr__(self, "state", refutation_state(self.passed, self.state))

    def to_dict(self) -> dict:
        return clean({"name": self.name, "new_effect": self.new_effect, "p_value": self.p_value,
                      "passed": self.passed, "state": self.state, "rule": self.rule, "details": self.details})


@dataclass(frozen=True)
class SegmentEffect:
    """Average effect within one segment (e.g. ``x_is_new=true``) with its interval."""

    segment: str
    column: str
    n: int
    value: float
    se: float
    ci_low: float
    ci_high: float
    description: str | None = None  # readable definition, e.g. "x_popularity in [-0.41, 0.37)"
    definition: dict = field(default_factory=dict)  # {"value": v} or bounds {"from": a, "below": b}

    def to_dict(self) -> dict:
        return clean({"segment": self.segment, "column": self.column, "n": self.n, "value": self.value,
                      "se": self.se, "ci_low": self.ci_low, "ci_high": self.ci_high,
                      "description": self.description, "definition": self.definition})


@dataclass
class CausalResult:
    """Everything the causal check found; ``to_dict()`` is the ``livegate.causal/1`` document body.

    ``policy`` is the learned "recommend where it helps" policy in the long policy format of the data
    contract (``decision_id``, ``action``, ``prob``), or None; it is not part of the JSON document
    (the CLI writes it as Parquet), only its summary ``policy_summary`` is.

    ``model`` is the fitted EconML estimator (``LinearDML``, ``CausalForestDML`` or ``DRLearner``),
    not serialised either: call ``result.model.effect(X)``, ``effect_interval(X)``,
    ``ate_inference(X)`` or ``sensitivity_summary()`` on it, with ``X = result.effect_modifier_matrix(frame)``
    (the effect modifiers encoded as in the fit; ``model_info["X_columns"]`` names its columns;
    treatment values are 0 and 1). ``model_info`` describes it in the document (key ``model``).
    """

    treatment: str
    outcome: str
    confounders: list[str]
    effect_modifiers: list[str]
    identified_estimand: str
    graph: dict
    naive: dict
    ipw: dict
    ate: dict
    refutations: list[Refutation]
    segments: list[SegmentEffect]
    propensities: dict
    warnings: list[str]
    notes: list[str]
    timings: dict[str, float]
    n_rows: int
    n_treated: int
    settings: dict
    policy_summary: dict | None = None
    policy: pd.DataFrame | None = field(default=None, repr=False)
    diagnostics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)
    model_info: dict = field(default_factory=dict)
    propensity_source: str | None = None  # "column NAME" or "estimated"
    #: the estimand of ``ate``: name, label, meaning, population in words, supported (causal/estimands.py)
    estimand: dict = field(default_factory=dict)
    #: overlap: clipped propensities, trimming (rows dropped by arm), support per estimand, weights
    overlap: dict = field(default_factory=dict)
    #: every estimand from the same fitted nuisances: {"ate": {value, se, ci_low, ci_high, supported}, ...}
    estimands: dict = field(default_factory=dict)
    #: the stratified sample the check ran on (datasets/causal_sample.py: method, strata, rows, of, seed,
    #: per_stratum, note), or None when it ran on the whole table
    sampling: dict | None = None

    def effect_modifier_matrix(self, frame: pd.DataFrame) -> np.ndarray | None:
        """``frame``'s effect modifiers as the fitted model's ``X`` (categorical levels one-hot
        encoded as in the fit; levels the fit did not see are all-zero); None without effect modifiers."""
        from .features import encode

        columns = self.model_info.get("X_columns", [])
        if not columns:
            return None
        encoded = encode(frame, self.effect_modifiers)
        return encoded.reindex(columns=columns, fill_value=0.0).to_numpy(dtype=np.float64)

    def to_frame(self) -> pd.DataFrame:
        """One tidy row per estimate: the naive difference, IPW, the adjusted effect and each segment's."""
        population = self.estimand.get("label") or "ATE"
        rows = [{"estimate": name, "population": label, "n": self.n_rows, **{k: block.get(k) for k in
                 ("value", "se", "ci_low", "ci_high")}}
                for name, label, block in (("naive", "all rows (unadjusted)", self.naive), ("ipw", population, self.ipw),
                                           ("effect", population, self.ate)) if block]
        rows += [{"estimate": "segment", "population": s.segment, "n": s.n, "value": s.value, "se": s.se,
                  "ci_low": s.ci_low, "ci_high": s.ci_high} for s in self.segments]
        return pd.DataFrame(rows, columns=["estimate", "population", "n", "value", "se", "ci_low", "ci_high"])

    def _repr_html_(self) -> str:
        import html
        states = [r.state for r in self.refutations]
        verdict = ("failed" if "fail" in states else "unstable" if "unstable" in states else "passed")
        what = html.escape(self.estimand.get("meaning") or "average effect")
        return (f"<p><b>livegate causal check</b>: {what} of <code>{html.escape(self.treatment)}</code> on "
                f"<code>{html.escape(self.outcome)}</code>; refutations {verdict}</p>"
                + self.to_frame().to_html(index=False, float_format="{:.4g}".format))

    @property
    def refutations_passed(self) -> bool:
        """True when every refutation passed or did not apply (a failed or unstable one is not a pass)."""
        return all(r.state in ("pass", "not_applicable") for r in self.refutations)

    def to_dict(self) -> dict:
        body = {
            "schema": SCHEMA,
            "treatment": self.treatment,
            "outcome": self.outcome,
            "confounders": list(self.confounders),
            "effect_modifiers": list(self.effect_modifiers),
            "identified_estimand": self.identified_estimand,
            "graph": self.graph,
            "n_rows": self.n_rows,
            "n_treated": self.n_treated,
            "sampling": self.sampling,
            "estimand": self.estimand or None,
            "naive": self.naive,
            "ipw": self.ipw,
            "ate": self.ate,
            "bias_of_naive": _relative_gap(self.naive.get("value"), self.ate.get("value")),
            "refutations": [r.to_dict() for r in self.refutations],
            "refutations_passed": self.refutations_passed,
            "segments": [s.to_dict() for s in self.segments],
            "estimands": self.estimands or None,
            "overlap": self.overlap or None,
            "propensities": self.propensities,
            "propensity_source": self.propensity_source,
            "model": self.model_info or None,
            "policy": self.policy_summary,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "diagnostics": self.diagnostics,
            "seed": self.settings.get("seed"),
            # DESIGN names the configuration `config`; wall-clock timings stay on the object (benchmarks):
            # in the document they would break "same inputs and seed, byte-identical JSON"
            "config": self.settings,
        }
        body.update(self.provenance)
        return clean(body)


def _relative_gap(naive: float | None, adjusted: float | None) -> dict | None:
    """How far the naive number is from the adjusted estimate, absolute and relative to it."""
    if naive is None or adjusted is None:
        return None
    gap = naive - adjusted
    return {"difference": gap, "relative": gap / abs(adjusted) if adjusted else None}


def attach_sampling(result, record: dict | None, sample_rows: int | None = None):
    """Put the sampling ``record`` on a ``CausalResult`` (document key ``sampling``; None: the whole
    table was analysed) and say so in its notes; returns the result."""
    result.sampling = record
    if record is not None:
        result.notes.append(record["note"])
    elif sample_rows is not None:
        result.notes.append(f"sample_rows {int(sample_rows):,} is not below the table's {result.n_rows:,} rows: the "
                            "whole table was analysed (sampling: null)")
    return result


def apply_sampling_record(document: dict, record: dict | None) -> dict:
    """A ``livegate.causal/1`` document (a dict) with its ``sampling`` key set to ``record`` (None:
    the whole table was analysed); the document is changed in place and returned."""
    document["sampling"] = clean(record)
    return document
