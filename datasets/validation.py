"""The one place that checks input against the data contract (DESIGN.md section 5).

Each check returns a list of `Problem`s instead of raising on the first one, so a user sees every
problem of a file at once. Loaders call these and raise one `InputError` holding them all.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import Problem
from .schema import SUM_TO_ONE_TOL


def _is_numeric(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_boolean(type_) \
        or pa.types.is_decimal(type_)


def _is_key_type(type_: pa.DataType) -> bool:
    """Integers or strings, also dictionary-encoded (a pandas category column)."""
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return pa.types.is_integer(type_) or pa.types.is_string(type_) or pa.types.is_large_string(type_)


def check_log_columns(table: pa.Table, source: str, schema, outcomes, extra, context) -> list[Problem]:
    """The type, nulls and values of each column of the logs that was read, column by column (a
    problem with one column never hides another's)."""
    present = set(table.column_names)
    problems = []
    if schema.action in present:
        problems += check_key(table, source, schema.action, "action")
    if schema.decision_id in present:
        problems += check_key(table, source, schema.decision_id, "decision id")
    for col in outcomes:
        problems += check_numeric(table, source, col, "reward")
    if schema.propensity in present:
        problems += check_numeric(table, source, schema.propensity, "propensity")
    for col in extra:
        problems += check_numeric(table, source, col, "value")
    if schema.position in present:
        problems += check_position(table, source, schema.position)
    if schema.timestamp in present and not pa.types.is_timestamp(table.column(schema.timestamp).type):
        problems.append(Problem(source, f"has type {table.column(schema.timestamp).type}; timestamp must be a "
                                "Parquet timestamp (or pandas datetime64)", column=schema.timestamp,
                                fix="write timestamps as timestamp[us, tz=UTC]"))
    for col in context:
        type_ = table.column(col).type
        if not (_is_numeric(type_) or pa.types.is_string(type_) or pa.types.is_large_string(type_)
                or pa.types.is_dictionary(type_)):
            problems.append(Problem(source, f"has type {type_}; context must be numeric, bool or categorical",
                                    column=col, fix="encode it as a number or a string category"))
    return problems


def check_not_empty(table: pa.Table, source: str) -> list[Problem]:
    if table.num_rows == 0:
        return [Problem(source, "has no rows", fix="check the export; an empty table cannot be evaluated")]
    return []


def check_key(table: pa.Table, source: str, column: str, what: str) -> list[Problem]:
    """An identifier column (decision id, action): integer or string, no nulls."""
    col = table.column(column)
    if pa.types.is_null(col.type):  # every value null (e.g. an all-None column written by pandas)
        return [Problem(source, f"have no {what} (null)", column=column, rows=len(col),
                        fix=f"drop those rows or fill {column}")]
    if not _is_key_type(col.type):
        return [Problem(source, f"has type {col.type}; {what} must be an integer or a string", column=column,
                        fix=f"cast {column} to int64 or string")]
    if col.null_count:
        return [Problem(source, f"have no {what} (null)", column=column, rows=col.null_count,
                        fix=f"drop those rows or fill {column}")]
    return []


def check_numeric(table: pa.Table, source: str, column: str, what: str, *, allow_null: bool = False) -> list[Problem]:
    col = table.column(column)
    if pa.types.is_null(col.type):
        return [] if allow_null else [Problem(source, f"have no {what} (null)", column=column, rows=len(col),
                                              fix=f"drop those rows or fill {column}")]
    if not _is_numeric(col.type):
        return [Problem(source, f"has type {col.type}; {what} must be numeric", column=column,
                        fix=f"cast {column} to float64")]
    if pa.types.is_boolean(col.type) or pa.types.is_decimal(col.type):
        col = col.cast(pa.float64())
    problems = []
    if col.null_count and not allow_null:
        problems.append(Problem(source, f"have no {what} (null)", column=column, rows=col.null_count,
                                fix=f"drop those rows or fill {column}"))
    total = pc.sum(col).as_py() if pa.types.is_floating(col.type) else None
    # a finite sum has no NaN and no infinity to count (one pass, no temporary): the usual case
    if total is not None and not math.isfinite(total):
        n_nan = pc.sum(pc.is_nan(col)).as_py() or 0
        if n_nan:
            problems.append(Problem(source, f"have {what} NaN", column=column, rows=n_nan,
                                    fix=f"drop those rows or fill {column}"))
        n_inf = pc.sum(pc.is_inf(col)).as_py() or 0
        if n_inf:
            problems.append(Problem(source, f"have infinite {what}", column=column, rows=n_inf,
                                    fix=f"drop those rows or fix {column}"))
    return problems


def check_position(table: pa.Table, source: str, column: str) -> list[Problem]:
    """Feed slots: integers from 0, no nulls."""
    problems = check_numeric(table, source, column, "position")
    if problems:
        return problems
    col = table.column(column)
    if not pa.types.is_integer(col.type):
        return [Problem(source, f"has type {col.type}; position must be an integer", column=column,
                        fix=f"cast {column} to int64")]
    n_neg = pc.sum(pc.less(col, 0)).as_py() or 0
    if n_neg:
        return [Problem(source, "have a negative position", column=column, rows=n_neg, fix="number feed slots from 0")]
    return []


def check_probability(values: np.ndarray, source: str, column: str, *, zero_allowed: bool) -> list[Problem]:
    """Probabilities in (0, 1] (propensities) or [0, 1] (policy probabilities). NaN checked separately."""
    if values.size:
        low, high = float(np.min(values)), float(np.max(values))  # two passes, no temporaries: the usual case
        if (low >= 0 if zero_allowed else low > 0) and high <= 1:
            return []
    finite = np.isfinite(values)
    low = (values < 0) if zero_allowed else (values <= 0)
    n_low = int(np.count_nonzero(low & finite))
    n_high = int(np.count_nonzero((values > 1) & finite))
    problems = []
    bound = "[0, 1]" if zero_allowed else "(0, 1]"
    if n_low:
        problems.append(Problem(source, f"are {'negative' if zero_allowed else 'zero or negative'}; "
                                f"probabilities must lie in {bound}", column=column, rows=n_low,
                                fix="a logged action always had positive probability: check how propensities were recorded"
                                if not zero_allowed else "fix the policy's probabilities"))
    if n_high:
        problems.append(Problem(source, f"are above 1; probabilities must lie in {bound}", column=column,
                                rows=n_high, fix="check that the column holds probabilities, not scores or weights"))
    return problems


def check_unique_rows(keys: np.ndarray, source: str, column: str, what: str) -> list[Problem]:
    """`keys` are integer codes of the row identity; report how many rows repeat one."""
    if keys.size == 0 or bool(np.all(keys[1:] > keys[:-1])):  # ascending keys (the usual export) cannot repeat
        return []
    if bool(np.all(keys[1:] >= keys[:-1])):  # sorted: repeats are neighbours, and keys may be far apart
        twice = keys[1:] == keys[:-1]
        repeated = np.zeros(keys.size, dtype=bool)
        repeated[1:] |= twice
        repeated[:-1] |= twice
        n_dup = int(np.count_nonzero(repeated))
    else:
        counts = np.bincount(keys)
        n_dup = int(counts[counts > 1].sum())
    if n_dup:
        return [Problem(source, f"share a {what} with another row", column=column, rows=n_dup,
                        fix=f"each {what} must appear once: deduplicate the export")]
    return []


def check_sum_to_one(sums: np.ndarray, covered: np.ndarray, source: str, column: str) -> list[Problem]:
    """`sums[i]` is a policy's total probability at decision (and position) i of the logs."""
    problems = []
    n_uncovered = int(np.count_nonzero(~covered))
    if n_uncovered:
        problems.append(Problem(source, "of the logs have no row in this policy", column="decision_id",
                                rows=n_uncovered,
                                fix="list the candidate's probabilities for every logged decision (unlisted actions mean probability 0)"))
    # two comparisons rather than |sums - 1|: no full-size float temporary
    bad = sums > 1.0 + SUM_TO_ONE_TOL
    bad |= sums < 1.0 - SUM_TO_ONE_TOL
    bad &= covered
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        worst = float(sums[bad][np.argmax(np.abs(sums[bad] - 1.0))])
        problems.append(Problem(source, f"have probabilities that do not sum to 1 (e.g. {worst:.6g}); "
                                f"tolerance {SUM_TO_ONE_TOL:g}", column=column, rows=n_bad,
                                fix="normalise the probabilities per decision (and position)"))
    return problems


def check_distribution_sums(sums: np.ndarray, listed: np.ndarray, log_rows: np.ndarray, policy_rows: np.ndarray,
                            source: str, column: str, position_column: str | None) -> list[Problem]:
    """A context-free policy's checks per position p (one distribution for all, without positions):
    `sums[p]` its total probability, `listed[p]` whether it lists p, `log_rows[p]` how many log rows
    and `policy_rows[p]` how many policy rows have p."""
    problems = []
    uncovered = (log_rows > 0) & ~listed
    if np.any(uncovered):
        shown = ", ".join(map(str, np.flatnonzero(uncovered)[:5].tolist()))
        problems.append(Problem(source, f"of the logs are at positions this policy does not list ({shown})",
                                column=position_column, rows=int(log_rows[uncovered].sum()),
                                fix="list the candidate's probabilities for every position of the logs"))
    bad = listed & ((sums > 1.0 + SUM_TO_ONE_TOL) | (sums < 1.0 - SUM_TO_ONE_TOL))
    if np.any(bad):
        where = f" at position {', '.join(map(str, np.flatnonzero(bad)[:5].tolist()))}" if position_column else ""
        worst = float(sums[bad][np.argmax(np.abs(sums[bad] - 1.0))])
        problems.append(Problem(source, f"have probabilities that do not sum to 1{where} (e.g. {worst:.6g}); "
                                f"tolerance {SUM_TO_ONE_TOL:g}", column=column, rows=int(policy_rows[bad].sum()),
                                fix="normalise the probabilities" + (" per position" if position_column else "")
                                + "; a policy without a decision_id column is context-free (one distribution for "
                                "every decision): add decision_id if the probabilities are per decision"))
    return problems


def check_unknown(mask_unknown: np.ndarray, examples: np.ndarray, source: str, column: str, what: str,
                  fix: str) -> list[Problem]:
    n = int(np.count_nonzero(mask_unknown))
    if not n:
        return []
    shown = ", ".join(map(str, list(dict.fromkeys(examples[mask_unknown][:50].tolist()))[:5]))
    return [Problem(source, f"refer to {what} (e.g. {shown})", column=column, rows=n, fix=fix)]
