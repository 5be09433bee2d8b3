"""The causal check's input frame: which columns it uses, reading them, and checking them, in one place.

``read_causal_frame`` selects the columns of a causal check from a Parquet path, a pandas DataFrame or
a pyarrow Table and checks them; ``validate_causal_frame`` is that check, and
``livegate.causal.run_causal_check`` calls the same function on a DataFrame handed to it directly, so
a file and a DataFrame with the same problem give the same ``InputError``.

Columns read: the treatment, the outcome, the named confounders, effect modifiers, segment columns and
propensity column (all required), the graph's nodes (optional: a node without a column is an
unobserved variable), the context columns (``x_*``) the default graph picks its confounders from, and
the keys (decision id, logged action, logged propensity). Other outcomes are never read: they must
never be adjusted for.

Checks (every problem found is reported, one per column): missing columns; NaN / null in any column
used; infinite values in numeric columns used; a non-numeric outcome; a treatment that is not binary
or has fewer than 10 rows in an arm; a treatment or outcome that is also a confounder or effect
modifier (the default graph treats the ``x_*`` columns as confounders of the recommendation); a
propensity column that is not numeric or not strictly inside (0, 1); too few rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from .errors import InputError, Problem
from .schema import LogSchema

#: The source name of in-memory data in messages (files are named by their path).
IN_MEMORY = "logs"
#: Both arms of the treatment need at least this many rows.
MIN_ARM_ROWS = 10


@dataclass(frozen=True)
class CausalColumns:
    """The columns a causal check uses, resolved against the data's columns.

    ``confounders`` is empty when a user graph chooses them (by identification, after this step);
    ``segments_from`` says where the segment columns came from: ``"config"``, ``"default"`` (the
    default segment columns present) or ``"effect_modifiers"`` (none of those present).
    """

    confounders: list[str]
    effect_modifiers: list[str]
    segments: list[str]
    segments_from: str
    notes: list[str] = field(default_factory=list)

    @property
    def used(self) -> list[str]:
        return list(dict.fromkeys([*self.confounders, *self.effect_modifiers, *self.segments]))


@dataclass(frozen=True)
class CausalInputs:
    """A checked causal frame: the resolved columns and the binary treatment as int64 0/1."""

    columns: CausalColumns
    treatment: np.ndarray = field(repr=False)


def _defaults():
    # imported here: livegate.causal imports this module, and datasets/ must import without causal/
    from livegate.causal import graph

    return graph


def _missing(source: str, available, columns) -> list[Problem]:
    """One problem per missing column; the same text for files and in-memory frames."""
    available = set(available)
    return [Problem(source, "is missing", column=c,
                    fix=f"add the column or map it with the matching option (available: {_list(available)})")
            for c in dict.fromkeys(columns) if c not in available]


def _list(names) -> str:
    names = sorted(map(str, names))
    return ", ".join(names[:15]) + (", ..." if len(names) > 15 else "")


def resolve_causal_columns(available, config, schema: LogSchema = LogSchema(),
                           source: str = IN_MEMORY) -> CausalColumns:
    """Confounders, effect modifiers and segment columns of ``config`` given the data's column names.

    Unset confounders are the default live-stream graph's present in the data (none with a user
    graph: identification picks them); unset effect modifiers the default graph's present; unset
    segments the default segment columns present, or the effect modifiers when none is.
    Raises ``InputError`` when the treatment or outcome would be adjusted for or is an effect modifier.
    """
    graphs = _defaults()
    columns, notes, problems = list(available), [], []
    treatment, outcome = config.treatment, config.outcome
    if config.confounders is not None:
        confounders = list(dict.fromkeys(config.confounders))
    elif config.graph is not None:
        confounders = []
    else:
        confounders = [c for c in graphs.DEFAULT_CONFOUNDERS if c in columns]
        for role, name in (("treatment", treatment), ("outcome", outcome)):
            if name in confounders:
                problems.append(Problem(source, f"is a confounder of the default live-stream graph and cannot be the "
                                        f"{role}", column=name,
                                        fix=f"name the confounders (--confounders) or give a causal graph (--graph) "
                                            f"in which '{name}' is the {role}"))
        confounders = [c for c in confounders if c not in (treatment, outcome)]
        reserved = (treatment, outcome, *([config.propensity] if getattr(config, "propensity", None) else []))
        unused = [c for c in schema.context_columns(columns, exclude=reserved) if c not in confounders]
        if unused:
            notes.append("context columns not in the default graph and not adjusted for: " + ", ".join(unused)
                         + " (pass them as confounders if they affect both treatment and outcome)")
        if not confounders and not problems:
            problems.append(Problem(source, "has none of the default graph's confounders ("
                                    + ", ".join(graphs.DEFAULT_CONFOUNDERS) + ")",
                                    fix="name the confounders (--confounders) or give a causal graph"))
    if config.effect_modifiers is not None:
        modifiers = list(dict.fromkeys(config.effect_modifiers))
    else:
        modifiers = [c for c in graphs.DEFAULT_EFFECT_MODIFIERS if c in columns and c not in (treatment, outcome)]
    for role, names in (("confounder", confounders if config.confounders is not None else []),
                        ("effect modifier", modifiers)):
        for name in (treatment, outcome):
            if name in names:
                what = "treatment" if name == treatment else "outcome"
                problems.append(Problem("config", f"names the {what} '{name}' as a {role}", column=name,
                                        fix=f"leave the {what} out of the {role}s"))
    if problems:
        raise InputError(problems)
    if config.segments is not None:
        segments, segments_from = list(dict.fromkeys(config.segments)), "config"
    else:
        segments = [c for c in graphs.DEFAULT_SEGMENTS if c in columns]
        segments_from = "default"
        if not segments and modifiers:
            segments, segments_from = list(modifiers), "effect_modifiers"
            notes.append("segments: none of the default segment columns (" + ", ".join(graphs.DEFAULT_SEGMENTS)
                         + ") is in the data, so effects are reported by the effect modifiers' values")
    return CausalColumns(confounders, modifiers, segments, segments_from, notes)


def column_problems(data: pd.DataFrame, columns, source: str = IN_MEMORY) -> list[Problem]:
    """NaN / null in any of ``columns``, infinite values in the numeric ones: one problem per column."""
    problems = []
    for col in dict.fromkeys(columns):
        s = data[col]
        n_na = int(s.isna().sum())
        if n_na:
            problems.append(Problem(source, "are missing (NaN / null)", column=col, rows=n_na,
                                    fix="drop or impute those rows"))
        if ptypes.is_numeric_dtype(s) and not ptypes.is_bool_dtype(s):
            values = s.to_numpy(dtype=float, na_value=np.nan)
            n_inf = int(np.isinf(values).sum())
            if n_inf:
                problems.append(Problem(source, "are infinite", column=col, rows=n_inf,
                                        fix="drop those rows or replace the values by finite ones"))
    return problems


def _treatment_problems(series: pd.Series, name: str, source: str) -> list[Problem]:
    if ptypes.is_bool_dtype(series):
        t = series.to_numpy(dtype=np.int64)
    elif ptypes.is_numeric_dtype(series) and series.isin([0, 1]).all():
        t = series.to_numpy(dtype=np.int64)
    else:
        values = list(pd.unique(series))
        bad = int((~series.isin([0, 1])).sum())
        return [Problem(source, f"hold values other than 0/1 (seen: {', '.join(map(str, values[:5]))})", column=name,
                        rows=bad, fix="the treatment must be binary: 1 = recommended/exposed, 0 = not")]
    return [Problem(source, f"has {int((t == arm).sum())} rows with treatment {arm}; both arms need at least "
                    f"{MIN_ARM_ROWS} rows", column=name)
            for arm in (0, 1) if (t == arm).sum() < MIN_ARM_ROWS]


def _propensity_problems(series: pd.Series, name: str, source: str) -> list[Problem]:
    """The treatment's propensity P(T=1|x): numeric and strictly inside (0, 1) (NaN is reported elsewhere)."""
    if not ptypes.is_numeric_dtype(series) or ptypes.is_bool_dtype(series):
        return [Problem(source, f"must be numeric (the propensity P(treatment=1|x)), found {series.dtype}",
                        column=name)]
    p = series.to_numpy(dtype=float, na_value=np.nan)
    bad = int((np.isfinite(p) & ((p <= 0) | (p >= 1))).sum())  # NaN and inf: reported by column_problems
    if bad:
        return [Problem(source, "lie outside (0, 1)", column=name, rows=bad,
                        fix="a propensity P(treatment=1|x) of 0 or 1 leaves no overlap: drop those rows, or "
                            "leave the propensity column out to estimate it")]
    return []


def validate_causal_frame(data, config, *, source: str = IN_MEMORY,
                          schema: LogSchema = LogSchema()) -> CausalInputs:
    """Check ``data`` for the causal check ``config``; return the resolved columns and the treatment.

    Raises one ``InputError`` listing every problem (see the module docstring for the checks).
    """
    if not isinstance(data, pd.DataFrame):
        raise InputError(Problem(source, f"must be a pandas DataFrame, got {type(data).__name__}",
                                 fix="use livegate.datasets.causal_frame.read_causal_frame for Parquet paths and "
                                     "pyarrow Tables"))
    propensity = getattr(config, "propensity", None)
    try:
        columns = resolve_causal_columns(list(data.columns), config, schema, source)
    except InputError as exc:  # a missing treatment or outcome is reported first
        raise InputError([*_missing(source, data.columns, [config.treatment, config.outcome]), *exc.problems]) from None
    needed = [config.treatment, config.outcome, *columns.used, *([propensity] if propensity else [])]
    missing = _missing(source, data.columns, needed)
    if missing:
        raise InputError(missing)
    problems = column_problems(data, needed, source)
    flagged = {p.column for p in problems}
    y = data[config.outcome]
    if not ptypes.is_numeric_dtype(y):
        problems.append(Problem(source, f"must be numeric, found {y.dtype}", column=config.outcome))
    if config.treatment not in flagged:
        problems += _treatment_problems(data[config.treatment], config.treatment, source)
    if propensity:
        problems += _propensity_problems(data[propensity], propensity, source)
    if problems:
        raise InputError(problems)
    min_rows = max(100, 20 * int(config.n_folds))
    if len(data) < min_rows:
        raise InputError(Problem(source, f"has {len(data)} rows; the causal check needs at least {min_rows}"))
    return CausalInputs(columns, data[config.treatment].to_numpy(dtype=np.int64))


def logged_treatment_propensity(data: pd.DataFrame, config, t: np.ndarray, source: str = IN_MEMORY):
    """P(T=1|x) from the data: ``(values, column)`` or ``None`` when the data carries none.

    ``config.propensity`` names a column holding P(T=1|x) itself (checked by ``validate_causal_frame``).
    Otherwise the logs' propensity of the logged action (``config.propensity_column``) is used when
    the logged action is the treatment, turned into P(T=1|x); it must lie in (0, 1].
    """
    if getattr(config, "propensity", None):
        return data[config.propensity].to_numpy(dtype=float), config.propensity
    col = config.propensity_column
    if col not in data.columns:
        return None
    if config.treatment != config.action_column:
        if config.action_column not in data.columns:
            return None
        action = data[config.action_column]
        if not ptypes.is_numeric_dtype(action) or action.isna().any():
            return None
        if not np.array_equal(action.to_numpy(dtype=float), t.astype(float)):
            return None
    p = data[col].to_numpy(dtype=float, na_value=np.nan) if ptypes.is_numeric_dtype(data[col]) else None
    if p is None:
        raise InputError(Problem(source, f"must be numeric, found {data[col].dtype}", column=col,
                                 fix="fix the logged propensities or drop the column"))
    bad = int((~np.isfinite(p) | (p <= 0) | (p > 1)).sum())
    if bad:
        raise InputError(Problem(source, "must lie in (0, 1]", column=col, rows=bad,
                                 fix="fix the logged propensities or drop the column"))
    return np.where(t == 1, p, 1.0 - p), col


def _columns_to_read(available: list[str], config, schema: LogSchema) -> tuple[list[str], list[str]]:
    """Required and optional columns of a causal check (see the module docstring)."""
    propensity = getattr(config, "propensity", None)
    named = [*(config.confounders or ()), *(config.effect_modifiers or ()), *(config.segments or ())]
    required = [config.treatment, config.outcome, *named, *([propensity] if propensity else [])]
    graph_nodes = [str(n) for n in config.graph.nodes] if config.graph is not None else []
    context = schema.context_columns(available, exclude=(config.treatment, config.outcome))
    keys = [schema.decision_id, schema.action, schema.propensity]
    for attr in ("decision_id_column", "action_column", "propensity_column"):
        if getattr(config, attr, None):
            keys.append(getattr(config, attr))
    return list(dict.fromkeys(required)), list(dict.fromkeys([*graph_nodes, *context, *keys]))


def read_causal_frame(source, config, schema: LogSchema = LogSchema(), *, name: str | None = None) -> pd.DataFrame:
    """The columns of the causal check ``config`` from ``source``, checked, as a pandas DataFrame.

    ``source`` is a Parquet path (a file or a directory of them), a pandas DataFrame or a pyarrow
    Table; ``name`` names it in messages (default: the path, or ``"logs"`` for in-memory data).
    The same columns are selected from every kind of source, and the same ``validate_causal_frame``
    checks them: a missing treatment gives the same ``InputError`` for a file and a DataFrame.
    """
    if isinstance(source, (str, Path)):
        label = name or str(source)
        dataset = open_dataset(source)
        required, optional = _columns_to_read(column_names(dataset), config, schema)
        missing = _missing(label, column_names(dataset), required)
        if missing:
            raise InputError(missing)
        frame = read_table(source, required, optional=optional, dataset=dataset).to_pandas()
    else:
        label = name or IN_MEMORY
        if not isinstance(source, pd.DataFrame):
            import pyarrow as pa

            if not isinstance(source, pa.Table):
                raise InputError(Problem(label, f"must be a Parquet path, a pandas DataFrame or a pyarrow Table, got "
                                         f"{type(source).__name__}"))
        is_frame = isinstance(source, pd.DataFrame)
        available = list(source.columns) if is_frame else [str(c) for c in source.column_names]
        from .validation import check_column_names
        repeated = check_column_names([str(c) for c in available], label)
        if repeated:
            raise InputError(repeated)
        required, optional = _columns_to_read(available, config, schema)
        missing = _missing(label, available, required)
        if missing:
            raise InputError(missing)
        wanted = list(dict.fromkeys([*required, *(c for c in optional if c in set(available))]))
        frame = source[wanted] if is_frame else source.select(wanted).to_pandas()
    validate_causal_frame(frame, config, source=label, schema=schema)
    return frame


def open_dataset(path):
    return _loading().open_dataset(path)


def column_names(dataset) -> list[str]:
    return list(_loading().column_names(dataset))


def read_table(path, columns, optional=(), dataset=None):
    return _loading().read_table(path, columns, optional=optional, dataset=dataset)


def _loading():
    """The Parquet readers, from the package's top level once exported there (datasets/ is being restructured)."""
    import livegate.datasets as top

    if all(hasattr(top, f) for f in ("open_dataset", "column_names", "read_table")):
        return top
    from . import loading

    return loading


__all__ = ["CausalColumns", "CausalInputs", "read_causal_frame", "validate_causal_frame", "resolve_causal_columns",
           "column_problems", "logged_treatment_propensity"]
