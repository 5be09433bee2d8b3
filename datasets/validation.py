"""The one place that checks input against the data contract (DESIGN.md section 5).

Each check returns a list of `Problem`s instead of raising on the first one, so a user sees every
problem of a file at once. Loaders call these and raise one `InputError` holding them all.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import Problem
from .schema import SUM_TO_ONE_TOL


def _is_numeric(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_boolean(type_) \
        or pa.types.is_decimal(type_)


def is_category_type(type_: pa.DataType) -> bool:
    """Strings, also dictionary-encoded (a pandas category column): a categorical feature."""
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


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
    return check_key_range(col, source, column, what)


#: the largest identifier value: keys are compared as int64 (`arrow.to_key`), whatever their width
MAX_KEY = 2**63 - 1


def check_key_range(col: pa.ChunkedArray, source: str, column: str, what: str) -> list[Problem]:
    """An unsigned 64-bit identifier above the int64 range (keys are compared as int64, so that ids
    of files written with different integer types match exactly)."""
    type_ = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if not (pa.types.is_uint64(type_) and len(col)):
        return []
    values = col.cast(type_) if pa.types.is_dictionary(col.type) else col
    n_big = pc.sum(pc.greater(values, pa.scalar(MAX_KEY, pa.uint64()))).as_py() or 0
    if not n_big:
        return []
    return [Problem(source, f"have {what}s above {MAX_KEY:,}, the largest int64 (type uint64)", column=column,
                    rows=n_big, fix=f"write {column} as int64 or as strings")]


def check_column_names(names: Sequence[str], source: str) -> list[Problem]:
    """Each column name once: a file with two columns of one name is ambiguous (which is the reward?)."""
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return [Problem(source, f"has {count} columns named '{name}'", column=name,
                    fix="rename or drop the repeated columns so that each name appears once")
            for name, count in seen.items() if count > 1]


def check_partition_keys(keys: Sequence[str], file_columns: Mapping[str, Sequence[str]], source: str) -> list[Problem]:
    """Hive partition folders (`key=value`) whose key is also a column of the files below them: the
    folder would silently replace the column's values (or fail to merge with its type)."""
    problems = []
    for key in dict.fromkeys(keys):
        files = [f for f, columns in file_columns.items() if key in columns]
        if files:
            problems.append(Problem(source, f"has partition folders '{key}=...' while its files also have a column "
                                    f"'{key}' (e.g. {files[0]}, {len(files):,} file{'s' if len(files) != 1 else ''})",
                                    column=key, fix=f"rename the '{key}=...' folders or drop the column '{key}' from "
                                                    "the files: livegate cannot tell which value is right"))
    return problems


def check_cross_fitting(n_units: int, n_folds: int, source: str, estimators: Sequence[str]) -> list[Problem]:
    """Cross-fitting predicts each fold with a model trained on the other folds: every fold needs a
    decision of its own and the others something to train on."""
    if n_units >= max(int(n_folds), 2):
        return []
    unit = "decision" if n_units == 1 else "decisions"
    return [Problem(source, f"has {n_units:,} {unit}; the reward model of {', '.join(estimators)} is cross-fitted "
                    f"over {n_folds} folds (each predicted by a model trained on the others) and needs at least "
                    f"{max(int(n_folds), 2)} decisions",
                    fix="evaluate with ips or snips (no reward model), give --q-hat predictions, or use more rows")]


def check_output_path(path, option: str, *, directory: bool = False) -> list[Problem]:
    """An output file (or with `directory`, an output directory) livegate can create or replace: a file
    is not a directory and a directory not a file, every name is one the file system takes, and every
    existing parent is a directory. Checked before a run, so that a bad path costs no work."""
    import errno
    import os
    from pathlib import Path

    text = os.fspath(path)
    kind = "directory" if directory else "file"
    if not text or not text.strip():
        return [Problem(option, "is empty", fix=f"give {option} a {kind} path")]
    where = f"{option} {text}"
    # os.path's tests never raise (pathlib's do, for a name too long): they run before the name is checked
    parent = os.path.dirname(os.path.abspath(text))
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    try:
        name_max = os.pathconf(parent if os.path.isdir(parent) else os.sep, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    too_long = [part for part in Path(text).parts if len(os.fsencode(part)) > name_max]
    if too_long:
        return [Problem(where, f"has a name of {len(os.fsencode(too_long[0])):,} bytes; the file system takes at "
                        f"most {name_max}", fix=f"give {option} a shorter name")]
    try:
        os.stat(text)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return [Problem(where, "is too long a path for the file system", fix=f"give {option} a shorter path")]
    if not directory and os.path.isdir(text):
        return [Problem(where, "is a directory", fix=f"give {option} the path of a file (e.g. inside that directory)")]
    if directory and os.path.exists(text) and not os.path.isdir(text):
        return [Problem(where, "exists and is not a directory", fix=f"give {option} a directory path")]
    if os.path.exists(parent) and not os.path.isdir(parent):
        return [Problem(where, f"is under {parent}, which is a file, not a directory",
                        fix=f"give {option} a path in a directory")]
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


def check_sessions(session_code: np.ndarray, session_ids: np.ndarray, step: np.ndarray, source: str, schema,
                   timestamp: np.ndarray | None = None, file_code: np.ndarray | None = None,
                   files: Sequence[str] = ()) -> list[Problem]:
    """Sessions (DESIGN section 2): steps 0, 1, 2, ... once each within a session, in time order when
    the logs have timestamps, and a session never split across the files of a directory."""
    problems = []
    n_neg = int(np.count_nonzero(step < 0))
    if n_neg:
        return [Problem(source, "have a negative step", column=schema.step, rows=n_neg,
                        fix="number each session's steps 0, 1, 2, ...")]
    order = np.lexsort((step, session_code))
    s, t = session_code[order], step[order]
    same = s[1:] == s[:-1]
    repeated = same & (t[1:] == t[:-1])
    if np.any(repeated):
        example = _id(session_ids[s[1:][repeated][0]])
        problems.append(Problem(source, f"repeat a step of their session (e.g. session {example}, step "
                                f"{int(t[1:][repeated][0])})", column=schema.step, rows=int(np.count_nonzero(repeated)),
                                fix="each (session_id, step) must appear once: one row per decision, no slates "
                                    "in session mode"))
    # gaps among the distinct steps (a repeated step is reported above, not as a gap after it)
    distinct = ~np.concatenate([[False], repeated])
    s_d, t_d = s[distinct], t[distinct]
    counts = np.bincount(s_d, minlength=len(session_ids))
    expected = np.arange(len(t_d)) - np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    gap = t_d != expected
    if np.any(gap):
        k = int(np.flatnonzero(gap)[0])
        problems.append(Problem(source, f"{_sessions(s_d[gap], 'skips', 'skip')} a step (e.g. session {_id(session_ids[s_d[k]])} has "
                                f"step {int(t_d[k])} where step {int(expected[k])} belongs)", column=schema.step,
                                fix="steps must be 0, 1, 2, ... without gaps within each session; a session "
                                    "ends after its last logged step"))
    if timestamp is not None:
        ts = timestamp[order]
        backwards = same & (ts[1:] < ts[:-1])
        if np.any(backwards):
            k = int(np.flatnonzero(backwards)[0])
            problems.append(Problem(source, f"{_sessions(s[1:][backwards], 'has', 'have')} a step logged before the previous "
                                    f"step (e.g. session {_id(session_ids[s[k + 1]])}, step {int(t[k + 1])})",
                                    column=schema.step,
                                    fix=f"steps must follow {schema.timestamp}: renumber them in time order"))
    if file_code is not None:
        f = file_code[order]
        split = same & (f[1:] != f[:-1])
        if np.any(split):
            k = int(np.flatnonzero(split)[0])
            problems.append(Problem(source, f"{_sessions(s[1:][split], 'appears', 'appear')} in more than one file (e.g. session "
                                    f"{_id(session_ids[s[k + 1]])} in {files[f[k]]} and {files[f[k + 1]]})",
                                    column=schema.session_id,
                                    fix="write each session into one file, or give every file its own session ids"))
    return problems


def _sessions(codes: np.ndarray, singular: str, plural: str) -> str:
    """"1 session has" / "12 sessions have": how many distinct sessions `codes` name, with the verb."""
    n = len(np.unique(codes))
    return f"1 session {singular}" if n == 1 else f"{n:,} sessions {plural}"


def check_int_settings(source: str, minimums: dict[str, tuple[object, int]]) -> list[Problem]:
    """Integer settings of a configuration: {name: (value, minimum)}; one problem per bad one."""
    problems = []
    for name, (value, minimum) in minimums.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            problems.append(Problem(source, f"must be an integer, got {value!r}", column=name))
        elif value < minimum:
            problems.append(Problem(source, f"must be >= {minimum}, got {value}", column=name,
                                    fix=f"pass {name} >= {minimum}"))
    return problems


def _id(value) -> str:
    """An id as the user wrote it: 7 or 'abc', not np.int64(7)."""
    return repr(value.item() if hasattr(value, "item") else value)
