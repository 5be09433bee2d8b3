"""`load_logs`: logged feedback (a Parquet path, a pandas DataFrame or a pyarrow Table) as validated,
encoded `LoggedData`; and `load_catalogue`, the action catalogue attached to it.

Only the columns the caller needs are read, every problem of them is reported at once (one
`InputError`), and decisions and actions are encoded once as dense integer codes, so that joining a
policy to the logs is a few vectorised array operations.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import validation as v
from .arrow import timestamps_utc, to_float, to_int64, to_key, to_numpy
from .encoding import dense_codes, lookup
from .errors import InputError, Problem, raise_if_any
from .loading import column_names, open_dataset, read_table, source_name
from .logged import LoggedData
from .rewards import RewardSpec
from .schema import LogSchema
from .sessions import build_session_index


@dataclass
class _Columns:
    """The logs' columns by use: what `load_logs` reads, and what it makes of each."""

    outcomes: list[str]
    extra: list[str]
    optional_extra: list[str]
    context: list[str]
    action_features: list[str]
    required: list[str]
    optional: list[str]

    def present_in(self, table: pa.Table) -> _Columns:
        """The same plan, keeping only the columns that were read (a missing one is reported already)."""
        present = set(table.column_names)
        keep = lambda names: [c for c in names if c in present]  # noqa: E731
        return _Columns(keep(self.outcomes), keep(self.extra), keep(self.optional_extra), keep(self.context),
                        keep(self.action_features), self.required, self.optional)


def load_logs(source, rewards: Sequence[RewardSpec], *, schema: LogSchema = LogSchema(),
              need_decision_id: bool = False, need_propensity: bool = True, need_context: bool = False,
              context: Sequence[str] | None = None, extra: Sequence[str] = (),
              optional_extra: Sequence[str] = (), name: str | None = None,
              need_sessions: bool = False) -> LoggedData:
    """Read and validate the logs, reading only the columns the caller needs.

    `source` is a Parquet file or directory, a pandas DataFrame or a pyarrow Table; `name` names an
    in-memory source in messages (default "logs"). `schema` maps the roles to the logs' column names
    (`LogSchema.from_mapping`). `context` overrides the schema's context patterns with explicit
    column names. With `need_sessions` the logs are viewer sessions (`session_id` and `step` required,
    validated by `validation.check_sessions`, indexed in `LoggedData.sessions`). Raises `InputError`
    listing every problem found; `LoggedData.warnings` holds what the user should know but need not fix.
    """
    label = source_name(source, name, "logs")
    dataset = open_dataset(source, label)
    available = column_names(dataset)
    columns = _plan_columns(available, schema, rewards, need_decision_id=need_decision_id,
                            need_propensity=need_propensity, need_context=need_context, context=context,
                            extra=extra, optional_extra=optional_extra, need_sessions=need_sessions)
    problems: list[Problem] = []
    table = read_table(label, columns.required, optional=columns.optional, dataset=dataset, problems=problems)
    columns = columns.present_in(table)
    problems += v.check_not_empty(table, label)
    if table.num_rows == 0:
        raise InputError(problems)
    problems += v.check_log_columns(table, label, schema, columns.outcomes, columns.extra, columns.context)
    # a column of the wrong type cannot be checked further, but the other columns still are: the user
    # sees every problem of the file at once
    unusable = {p.column for p in problems if "has type" in p.message}
    propensity, position, decision_code, decision_ids = _decode_keys(table, label, schema, unusable, problems)
    if problems:
        raise InputError(problems)

    action = to_key(table.column(schema.action))
    action_code, actions = dense_codes(action)
    timestamp = timestamps_utc(table.column(schema.timestamp)) if schema.timestamp in table.column_names else None
    sessions = _session_index(table, dataset, label, schema, timestamp) if need_sessions else None
    return LoggedData(
        source=label, action=action, action_code=action_code, actions=actions,
        propensity=propensity if propensity is not None else np.full(table.num_rows, np.nan),
        outcomes={c: to_float(table.column(c)) for c in columns.outcomes},
        decision_code=decision_code, decision_ids=decision_ids, position=position, timestamp=timestamp,
        context_table=table.select(columns.context) if columns.context else None,
        extra={c: _category_codes(table.column(c)) if c in columns.action_features else to_float(table.column(c))
               for c in [*columns.extra, *columns.optional_extra]},
        action_features=_action_features(table, columns.action_features, action_code, len(actions)),
        propensity_source="logged" if propensity is not None else "missing", schema=schema, sessions=sessions,
        warnings=_warnings(dataset.schema, table, schema, columns, need_context, context, need_sessions))


def _plan_columns(available: list[str], schema: LogSchema, rewards: Sequence[RewardSpec], *, need_decision_id: bool,
                  need_propensity: bool, need_context: bool, context: Sequence[str] | None, extra: Sequence[str],
                  optional_extra: Sequence[str], need_sessions: bool = False) -> _Columns:
    """Which columns to read: required ones are reported when missing, optional ones read when there."""
    outcomes = list(dict.fromkeys(c for spec in rewards for c in spec.columns))
    ctx = list(context) if context is not None else \
        (schema.context_columns(available, exclude=tuple(outcomes) + tuple(extra)) if need_context else [])
    action_features = [c for c in available if need_context and c not in outcomes and c not in ctx
                       and any(fnmatch.fnmatchcase(c, p) for p in schema.action_features)]
    required = [schema.action, *outcomes, *extra, *ctx]
    if need_propensity:
        required.append(schema.propensity)
    if need_decision_id:
        required.append(schema.decision_id)
    if need_sessions:
        required += [schema.session_id, schema.step]
    # decision ids group a decision's positions into one cross-fitting fold; otherwise they are not needed
    optional = [schema.position, schema.timestamp, *optional_extra, *action_features,
                *([schema.decision_id] if need_context else [])]
    if not need_propensity:
        optional.append(schema.propensity)
    return _Columns(outcomes=outcomes, extra=list(extra), optional_extra=list(optional_extra), context=ctx,
                    action_features=action_features, required=list(dict.fromkeys(required)), optional=optional)


def _decode_keys(table: pa.Table, source: str, schema: LogSchema, unusable: set, problems: list[Problem]):
    """(propensity, position, decision code, decision ids) of the columns that are present and
    readable, None for the others; checks propensities' range and that (decision, position) is unique."""
    names = table.column_names
    propensity = None
    if schema.propensity in names and schema.propensity not in unusable:
        propensity = to_float(table.column(schema.propensity))
        problems += v.check_probability(propensity, source, schema.propensity, zero_allowed=False)
    has_position = schema.position in names
    position = None
    if has_position and schema.position not in unusable and table.column(schema.position).null_count == 0:
        position = to_int64(table.column(schema.position))  # negative: reported
    decision_code = decision_ids = None
    if schema.decision_id in names and schema.decision_id not in unusable \
            and table.column(schema.decision_id).null_count == 0:
        decision_code, decision_ids = dense_codes(to_key(table.column(schema.decision_id)))
        if not has_position or position is not None:  # an unreadable position cannot tell rows apart
            slot = 0 if position is None else position - min(int(position.min()), 0)
            n_pos = 1 if position is None else int(slot.max()) + 1
            key = decision_code if position is None else decision_code * n_pos + slot
            what = "decision id and position" if position is not None else "decision id"
            problems += v.check_unique_rows(key, source, schema.decision_id, what)
    return propensity, position, decision_code, decision_ids


def _session_index(table: pa.Table, dataset, source: str, schema: LogSchema, timestamp: np.ndarray | None):
    """The validated `SessionIndex` of the logs' session_id and step columns."""
    problems = v.check_key(table, source, schema.session_id, "session id")
    step_type = table.column(schema.step).type
    if pa.types.is_integer(step_type) or pa.types.is_null(step_type):
        problems += v.check_numeric(table, source, schema.step, "step")
    else:
        problems.append(Problem(source, f"has type {step_type}; step must be an integer", column=schema.step,
                                fix=f"write {schema.step} as int64: 0, 1, 2, ... within each session"))
    if problems:
        raise InputError(problems)
    session_code, session_ids = dense_codes(to_numpy(table.column(schema.session_id)))
    step = to_int64(table.column(schema.step))
    file_code, files = _file_of_rows(dataset, table.num_rows)
    raise_if_any(v.check_sessions(session_code, session_ids, step, source, schema, timestamp=timestamp,
                                  file_code=file_code, files=files))
    return build_session_index(session_code, session_ids, step)


def _file_of_rows(dataset, n_rows: int) -> tuple[np.ndarray | None, list[str]]:
    """For a directory of Parquet files: the file of each row (codes into the file names), read as the
    dataset's `__filename` field in the same row order as the data; (None, []) for one file or a table."""
    if not hasattr(dataset, "get_fragments"):
        return None, []
    names = dataset.to_table(columns=["__filename"]).column(0).dictionary_encode().combine_chunks()
    if len(names) != n_rows:  # cannot happen for one scan of the same dataset; never guess
        return None, []
    return names.indices.to_numpy(zero_copy_only=False).astype(np.int64), names.dictionary.to_pylist()


def _category_codes(column: pa.ChunkedArray) -> np.ndarray:
    """A stream feature read as a value column (the mips estimator's `a_category`): numbers as they are,
    strings as codes in order of appearance (NaN for nulls): the category weights only ask which rows
    share a category."""
    if not v.is_category_type(column.type):
        return to_float(column)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    codes = column.combine_chunks().dictionary_encode().indices
    return np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.float64)


def _action_features(table: pa.Table, names: list[str], action_code: np.ndarray, n_actions: int):
    """Stream features (a_* columns): the value at each action's first logged row (they describe the
    stream, not the row). Numeric and bool columns as numbers, string (and dictionary-encoded)
    columns as categories (the reward model's native categorical features); columns of other types
    are ignored. None without any usable one."""
    numeric = [c for c in names if v._is_numeric(table.column(c).type)]
    categorical = [c for c in names if c not in numeric and v.is_category_type(table.column(c).type)]
    if not numeric and not categorical:
        return None
    import pandas as pd
    first_row = np.empty(n_actions, dtype=np.int64)
    first_row[action_code[::-1]] = np.arange(len(action_code) - 1, -1, -1)  # the last write is the first row
    take = pa.array(first_row)
    return pd.DataFrame({c: to_float(table.column(c))[first_row] if c in numeric
                         else table.column(c).take(take).to_pandas()
                         for c in names if c in numeric or c in categorical})


def _warnings(file_schema: pa.Schema, table: pa.Table, schema: LogSchema, columns: _Columns, need_context: bool,
              context: Sequence[str] | None, need_sessions: bool = False) -> list[str]:
    """What the user should know about the logs without having to fix anything."""
    warnings = []
    if not need_sessions and schema.session_id in file_schema.names and schema.step in file_schema.names:
        warnings.append(f"The logs are viewer sessions ('{schema.session_id}' and '{schema.step}'), evaluated here "
                        "per decision: long-term effects (fatigue, leaving the app) are ignored, so a myopic policy "
                        "can look best. Pass --sessions (gate.toml: [evaluation] level = \"session\") to evaluate "
                        "the return per session.")
    if schema.timestamp in table.column_names:
        type_ = table.column(schema.timestamp).type
        if type_.tz is None:
            warnings.append(f"Column '{schema.timestamp}' has timestamps without a time zone; they are taken as "
                            "UTC. Write them as timestamp[us, tz=UTC] (or with their zone) to be explicit.")
    else:
        unused = [f.name for f in file_schema if pa.types.is_timestamp(f.type)]
        if unused:
            mapping = " or ".join(f"--column timestamp={c}" for c in unused[:3])
            warnings.append(f"The logs have no column '{schema.timestamp}' but {_names(unused)} "
                            f"{'holds' if len(unused) == 1 else 'hold'} timestamps, which are not used: "
                            f"pass {mapping} for estimates over time windows.")
    if need_context and not columns.context:
        asked = ", ".join(context) if context is not None else ", ".join(schema.context)
        warnings.append(f"No context columns found (looked for {asked}): the reward model of DM and DR and the "
                        "causal check need them. Name them with --context PATTERNS (e.g. --context 'user_*,hour').")
    return warnings


def _names(names: list[str]) -> str:
    shown = ", ".join(f"'{c}'" for c in names[:3])
    return ("column " if len(names) == 1 else "columns ") + shown + (", ..." if len(names) > 3 else "")


def load_catalogue(source, logs: LoggedData, column: str = "action", name: str | None = None) -> None:
    """Attach the action catalogue (every stream that could be shown): then a policy naming an action in
    neither the logs nor the catalogue is an error, not a new stream. `source` is a path, a DataFrame
    or a pyarrow Table; `column` falls back to the logs' mapped action name when absent."""
    label = source_name(source, name, "action catalogue")
    dataset = open_dataset(source, label)
    if column == LogSchema.action:
        column = logs.schema.keyed_column("action", column_names(dataset))
    table = read_table(label, [column], dataset=dataset)
    problems = v.check_not_empty(table, label) or v.check_key(table, label, column, "action")
    if problems:
        raise InputError(problems)
    catalogue = to_key(table.column(column))
    missing = logs.actions[lookup(np.sort(catalogue), logs.actions) < 0]
    if missing.size:
        shown = ", ".join(map(str, missing[:5].tolist()))
        raise InputError(Problem(label, f"lacks {missing.size:,} of the actions the logs show (e.g. {shown})",
                                 column=column, fix=f"use the catalogue that belongs to {logs.source}"))
    logs.catalogue = catalogue
