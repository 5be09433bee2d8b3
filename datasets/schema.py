"""Data contract v1 (DESIGN.md section 2): column names of logs, policies and reward predictions.

Every name is configurable; the defaults are the contract's. `LogSchema.from_mapping` (and
`parse_column_mapping` for `--column ROLE=NAME` items) maps roles to a user's own column names.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

from .errors import InputError, Problem

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
    step: str = "step"
    #: glob patterns selecting the context columns (DESIGN: by default `x_*`)
    context: tuple[str, ...] = ("x_*",)
    #: glob patterns selecting features of the shown stream (constant per action), e.g. `a_category`
    action_features: tuple[str, ...] = ("a_*",)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str], context: Sequence[str] | None = None,
                     source: str = "--column") -> LogSchema:
        """A schema with `mapping`'s roles (e.g. {"action": "stream_id"}) renamed. Every problem of the
        mapping (an unknown role, an empty name, one column given to two roles) is reported at once,
        naming `source` (the option or config key the mapping came from)."""
        problems = []
        for role, column in mapping.items():
            if role not in ROLES:
                problems.append(Problem(source, f"'{role}' is not a column role",
                                        fix=f"use one of {', '.join(ROLES)}"))
            elif not isinstance(column, str) or not column.strip():
                problems.append(Problem(source, f"role '{role}' is given an empty column name",
                                        fix=f"write {role}=COLUMN"))
        named: dict[str, list[str]] = {}
        for role, column in mapping.items():
            if role in ROLES and isinstance(column, str) and column.strip():
                named.setdefault(column.strip(), []).append(role)
        problems += [Problem(source, f"column '{column}' is given to {len(roles)} roles ({', '.join(roles)})",
                             fix="map each column to one role")
                     for column, roles in named.items() if len(roles) > 1]
        if problems:
            raise InputError(problems)
        schema = replace(cls(), **{role: column.strip() for role, column in mapping.items()})
        return replace(schema, context=tuple(context)) if context is not None else schema

    def context_columns(self, available: list[str], exclude: tuple[str, ...] = ()) -> list[str]:
        """Columns matching the context patterns, in file order, never an outcome or key column."""
        reserved = {*(getattr(self, role) for role in ROLES), *KNOWN_OUTCOMES, *exclude}
        return [c for c in available
                if c not in reserved and any(fnmatch.fnmatchcase(c, pat) for pat in self.context)]

    def keyed_column(self, role: str, available: Sequence[str]) -> str:
        """The column of a policy or prediction table that holds `role` (decision_id, action or
        position): the logs' mapped name when the table has it, else the contract's name (a policy
        exported by another tool keeps the contract's names while the logs are the analyst's)."""
        mapped = getattr(self, role)
        return mapped if mapped in available else getattr(LogSchema, role)


#: Column roles of the logs, each mappable to a user's own column name.
ROLES = tuple(f.name for f in fields(LogSchema) if f.name not in ("context", "action_features"))


def parse_column_mapping(items: Sequence[str], context: Sequence[str] | None = None,
                         source: str = "--column") -> LogSchema:
    """`ROLE=NAME` items (the repeatable `--column` option) as a LogSchema; every problem at once."""
    mapping: dict[str, str] = {}
    problems = []
    for item in items:
        role, eq, column = item.partition("=")
        role = role.strip()
        if not eq or not role:
            problems.append(Problem(source, f"cannot read '{item}'",
                                    fix=f"write ROLE=NAME, e.g. action=stream_id (roles: {', '.join(ROLES)})"))
        elif role in mapping:
            problems.append(Problem(source, f"role '{role}' is given twice ({mapping[role]} and {column.strip()})",
                                    fix="map each role once"))
        else:
            mapping[role] = column
    try:
        schema = LogSchema.from_mapping(mapping, context=context, source=source)
    except InputError as exc:
        problems += exc.problems
    if problems:
        raise InputError(problems)
    return schema


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
