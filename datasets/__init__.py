"""Data contract, loading, validation and simulators for livegate (the one place input is checked)."""
from ._version import __version__
from .errors import InputError, Problem
from .feedback import (LoggedData, PolicyTable, RewardPredictions, compact_policy, load_catalogue, load_logs,
                       load_policy, load_q_hat, logging_policy)
from .rewards import RewardSpec, parse_reward
from .schema import LogSchema, PolicySchema, QHatSchema

__all__ = ["InputError", "LogSchema", "LoggedData", "PolicySchema", "PolicyTable", "Problem", "QHatSchema",
           "RewardPredictions", "RewardSpec", "__version__", "compact_policy", "load_catalogue", "load_logs", "load_policy",
           "load_q_hat", "logging_policy", "parse_reward"]
