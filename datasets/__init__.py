"""Data contract, loading, validation and simulators for livegate (the one place input is checked).

Sources (logs, policies, predictions, catalogue) are Parquet paths, pandas DataFrames or pyarrow
Tables. Modules: `schema` (column roles and names), `loading` (opening sources), `validation` (every
check), `logs` / `policies` / `q_hat` (the loaders), `logged` (the loaded data classes).
"""
from ._version import __version__
from .errors import InputError, Problem
from .kernels import load_joins_in_background
from .loading import column_names, open_dataset, read_table
from .logged import LoggedData, PolicyTable, PositionDistribution, RewardPredictions
from .logs import load_catalogue, load_logs
from .partitions import (Partition, PartitionTables, StreamPlan, default_max_memory, parse_memory, plan_stream,
                         read_partition)
from .policies import compact_columns, compact_policy, load_policy, logging_policy
from .q_hat import load_q_hat
from .rewards import RewardSpec, parse_reward
from .schema import ROLES, LogSchema, PolicySchema, QHatSchema, parse_column_mapping

__all__ = ["InputError", "LogSchema", "LoggedData", "Partition", "PartitionTables", "PolicySchema", "PolicyTable",
           "PositionDistribution", "Problem", "QHatSchema", "ROLES", "RewardPredictions", "RewardSpec", "StreamPlan",
           "__version__", "column_names", "compact_columns", "compact_policy", "default_max_memory",
           "load_catalogue", "load_joins_in_background", "load_logs", "load_policy", "load_q_hat", "logging_policy",
           "open_dataset", "parse_column_mapping", "parse_memory", "parse_reward", "plan_stream", "read_partition",
           "read_table"]
