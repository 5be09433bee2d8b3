"""Reward specifications: a column, or a weighted sum of columns such as `watch_seconds + 50*gift_value`."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import InputError, Problem

_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_TERM = re.compile(rf"^\s*(?:(?P<c1>{_NUMBER})\s*\*\s*(?P<n1>{_NAME})|(?P<n2>{_NAME})\s*\*\s*(?P<c2>{_NUMBER})"
                   rf"|(?P<n3>{_NAME}))\s*$")


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
        return " + ".join(c if w == 1 else f"{w:g}*{c}" for c, w in self.weights)

    def combine(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        total = np.zeros(len(next(iter(columns.values()))), dtype=np.float64)
        for column, weight in self.weights:
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
        weights[column] = weights.get(column, 0.0) + sign * coef
    name = name.strip() or (expr if len(weights) > 1 or next(iter(weights.values())) != 1 else next(iter(weights)))
    return RewardSpec(name=name, weights=tuple(weights.items()))


def _split_terms(expr: str) -> list[tuple[float, str]]:
    parts: list[tuple[float, str]] = []
    sign, start = 1.0, 0
    for i, ch in enumerate(expr):
        # a '-' or '+' right after 'e' belongs to an exponent such as 1e-3
        if ch in "+-" and i > 0 and not (expr[i - 1] in "eE" and i > 1 and expr[i - 2].isdigit()):
            parts.append((sign, expr[start:i]))
            sign, start = (1.0 if ch == "+" else -1.0), i + 1
    parts.append((sign, expr[start:]))
    if parts and not parts[0][1].strip() and len(parts) > 1:  # leading sign
        first_sign = -1.0 if expr.lstrip().startswith("-") else 1.0
        parts = [(first_sign * parts[1][0], parts[1][1])] + parts[2:]
    return parts
