"""Causal pre-ship check: DoWhy identification and refutation, EconML estimation, segment effects and
a learned policy. Pure computation: DataFrames and config in, result objects out (no file I/O, no printing).

    from livegate.causal import CausalConfig, run_causal_check
    result = run_causal_check(logs, CausalConfig(treatment="recommended", outcome="watch_seconds"))
    document = result.to_dict()          # the livegate.causal/1 body
    result.policy                         # long-format policy: decision_id, action, prob
    result.model.effect(result.effect_modifier_matrix(logs))   # the fitted EconML estimator

Inputs are read and checked by ``livegate.datasets.causal_frame`` (``read_causal_frame`` for paths,
DataFrames and Tables; ``run_causal_check`` applies the same check to a DataFrame).
``CausalConfig(propensity="p")`` takes P(T=1|x) from column ``p`` instead of estimating it.
``CausalConfig(estimand="att")`` averages the effect over the treated (also "atc", "ato"; default "ate");
``CausalConfig(trim=0.01)`` or ``trim="crump"`` drops rows without overlap first (causal/estimands.py).
Logs too large for memory: ``livegate.datasets.causal_sample.read_causal_sample(path, config, n_rows)``
reads a proportional stratified sample in bounded memory, ``attach_sampling(result, record)`` records it.
"""
from .check import CausalConfig, run_causal_check
from .estimands import ESTIMANDS
from .graph import (DEFAULT_CONFOUNDERS, DEFAULT_EFFECT_MODIFIERS, DEFAULT_SEGMENTS, default_graph, graph_to_dict,
                    parse_graph)
from .propensity import estimate_propensities
from .result import SCHEMA, CausalResult, Refutation, SegmentEffect, apply_sampling_record, attach_sampling

__all__ = ["CausalConfig", "CausalResult", "Refutation", "SegmentEffect", "SCHEMA", "run_causal_check", "ESTIMANDS",
           "estimate_propensities", "parse_graph", "default_graph", "graph_to_dict", "DEFAULT_CONFOUNDERS",
           "DEFAULT_EFFECT_MODIFIERS", "DEFAULT_SEGMENTS", "attach_sampling", "apply_sampling_record"]
