"""Off-policy estimators, intervals and diagnostics built from per-row terms (no file I/O, no printing)."""
from .estimators import ESTIMATOR_NAMES, EstimatorSpec, RowInputs, Terms, parse_estimator
from .evaluate import EvaluationConfig, EvaluationResult, evaluate

__all__ = ["ESTIMATOR_NAMES", "EstimatorSpec", "EvaluationConfig", "EvaluationResult", "RowInputs", "Terms",
           "evaluate", "parse_estimator"]
