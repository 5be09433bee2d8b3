"""Data contract v1 (DESIGN.md section 2): column names of logs, policies and reward predictions.

Every name is configurable; the defaults are the contract's.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

#: Columns the logs carry that are never context: outcomes leak the logged action's result.
KNOWN_OUTCOMES = ("click", "watch_seconds", "gift_value", "follow")


@dataclass(frozen=True)
class LogSchema:
    decision_id: str = "decision_id"
    action: str = "action"
    propensity: str = "propensity"
    position: str = "position"
    timestamp: str = "timestamp"
    user_id: str = "user_id"
    session_id: str = "session_id"
    #: glob patterns selecting the context columns (DESIGN: by default `x_*`)
    context: tuple[str, ...] = ("x_*",)
    #: glob patterns selecting features of the shown stream (constant per action), e.g. `a_category`
    action_features: tuple[str, ...] = ("a_*",)

    def context_columns(self, available: list[str], exclude: tuple[str, ...] = ()) -> list[str]:
        """Columns matching the context patterns, in file order, never an outcome or key column."""
        reserved = {self.decision_id, self.action, self.propensity, self.position, self.timestamp,
                    self.user_id, self.session_id, *KNOWN_OUTCOMES, *exclude}
        return [c for c in available
                if c not in reserved and any(fnmatch.fnmatchcase(c, pat) for pat in self.context)]


@dataclass(frozen=True)
class PolicySchema:
    decision_id: str = "decision_id"
    action: str = "action"
    prob: str = "prob"
    position: str = "position"


@dataclass(frozen=True)
class QHatSchema:
    decision_id: str = "decision_id"
    action: str = "action"
    q_hat: str = "q_hat"
    position: str = "position"


#: Tolerance of the sum-to-one check of a policy's probabilities per decision (DESIGN section 2).
SUM_TO_ONE_TOL = 1e-6

#: Name of the built-in logging policy.
LOGGING_POLICY = "logging"


def is_policy_name(name: str) -> bool:
    """Letters, digits, '_', '.' and '-': a policy's name is a column suffix (pi_NAME) and a JSON key."""
    return bool(name) and name.replace("_", "").replace("-", "").replace(".", "").isalnum()

#: Prefixes of the compact policy form: per-row columns pi_<NAME> and qpi_<NAME>.
COMPACT_PI_PREFIX = "pi_"
COMPACT_QPI_PREFIX = "qpi_"
