"""Reward specifications: a column, or a weighted sum of columns such as `watch_seconds + 50*gift_value`."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import InputError, Problem

_MANTISSA = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
_NUMBER = _MANTISSA + r"(?:[eE][-+]?[0-9]+)?"
_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_TERM = re.compile(rf"^\s*(?:(?P<c1>{_NUMBER})\s*\*\s*(?P<n1>{_NAME})|(?P<n2>{_NAME})\s*\*\s*(?P<c2>{_NUMBER})"
                   rf"|(?P<n3>{_NAME}))\s*$")
#: text ending in the mantissa and 'e' of a number such as 1e-3 (not a column name such as x1e)
_EXPONENT_START = re.compile(rf"(?:^|[^A-Za-z0-9_.]){_MANTISSA}[eE]$")


@dataclass(frozen=True)
class RewardSpec:
    """A named linear combination of reward columns."""

    name: str
    weights: tuple[tuple[str, float], ...]

    @property
    def columns(self) -> list[str]:
        return [c for c, _ in self.weights]

    @property
    def expression(self) -> str:
        """The weights as an expression that `parse_reward` reads back: `a - 2*b`, not `a + -2*b`."""
        text = ""
        for i, (column, weight) in enumerate(self.weights):
            sign = ("-" if weight < 0 else "") if i == 0 else (" - " if weight < 0 else " + ")
            text += sign + (column if abs(weight) == 1 else f"{abs(weight):.15g}*{column}")
        return text

    def combine(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """The reward per row: the column itself for a plain column (no copy; not to be written to)."""
        (first, first_weight), *rest = self.weights
        if not rest and first_weight == 1.0:
            return np.asarray(columns[first], dtype=np.float64)
        total = first_weight * np.asarray(columns[first], dtype=np.float64)
        for column, weight in rest:
            total += weight * columns[column]
        return total


def parse_reward(text: str, source: str = "--reward") -> RewardSpec:
    """Parse `[NAME=]EXPR`, EXPR a `+`/`-` separated sum of `col`, `k*col` or `col*k` terms."""
    name, _, expr = text.partition("=") if "=" in text else ("", "", text)
    expr = expr.strip()
    if not expr:
        raise InputError(Problem(source, f"reward '{text}' is empty", fix="give a column, e.g. --reward watch_seconds"))
    weights: dict[str, float] = {}
    for sign, term in _split_terms(expr):
        m = _TERM.match(term)
        if not m:
            raise InputError(Problem(source, f"cannot read the reward term '{term.strip()}' in '{text}'",
                                     fix="write a column or a weighted sum, e.g. 'watch_seconds + 50*gift_value'"))
        column = m.group("n1") or m.group("n2") or m.group("n3")
        coef = float(m.group("c1") or m.group("c2") or 1.0)
        if not np.isfinite(coef):
            raise InputError(Problem(source, f"the coefficient in '{term.strip()}' is not a finite number",
                                     fix="use a coefficient such as 50 or 1e-3"))
        weights[column] = weights.get(column, 0.0) + sign * coef
    name = name.strip() or (expr if len(weights) > 1 or next(iter(weights.values())) != 1 else next(iter(weights)))
    return RewardSpec(name=name, weights=tuple(weights.items()))


def _split_terms(expr: str) -> list[tuple[float, str]]:
    parts: list[tuple[float, str]] = []
    sign, start = 1.0, 0
    for i, ch in enumerate(expr):
        # a '-' or '+' right after the 'e' of a number belongs to its exponent, as in 1e-3
        if ch in "+-" and not _EXPONENT_START.search(expr, 0, i):
            parts.append((sign, expr[start:i]))
            sign, start = (1.0 if ch == "+" else -1.0), i + 1
    parts.append((sign, expr[start:]))
    if len(parts) > 1 and not parts[0][1].strip():  # a leading sign, as in '-click + watch_seconds'
        parts = parts[1:]
    return parts


def shadowing_problems(specs, columns, source: str = "--reward") -> list[Problem]:
    """Metrics named like a column of the logs but defined as something else.

    `watch_seconds = "-1*watch_seconds"` would make every report's "watch_seconds" mean the opposite
    of the column of that name (and of what a reader, a causal check or another gate reads there).
    Naming a column after itself (`click = "click"`) is allowed.
    """
    available = set(columns)

    def fix(spec: RewardSpec) -> str:
        if source.startswith("["):  # gate.toml's [rewards] table
            return (f'give the metric its own name, e.g. {spec.name}_adjusted = "{spec.expression}", and use that '
                    "name in [[criterion]] metric")
        return f"give the metric its own name, e.g. --reward '{spec.name}_adjusted={spec.expression}'"

    return [Problem(source, f"the metric '{spec.name}' = '{spec.expression}' has the name of a column of the logs, "
                            "which holds something else", fix=fix(spec))
            for spec in specs if spec.name in available and spec.weights != ((spec.name, 1.0),)]


def duplicate_problems(specs, source: str = "--reward") -> list[Problem]:
    """The same metric name given twice (e.g. --reward m=watch_seconds --reward m=click): one would be lost."""
    names = [spec.name for spec in specs]
    twice = list(dict.fromkeys(n for n in names if names.count(n) > 1))
    return [Problem(source, f"the metric name '{name}' is given twice ("
                            + ", ".join(f"'{s.expression}'" for s in specs if s.name == name) + ")",
                    fix="name each metric once") for name in twice]
