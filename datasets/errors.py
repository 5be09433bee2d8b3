"""The one error type for bad input: the CLI turns it into exit code 2 without a traceback."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input, phrased so that the user can fix it."""

    source: str
    message: str
    column: str | None = None
    rows: int | None = None
    fix: str | None = None

    def __str__(self) -> str:
        where = self.source
        if self.column is not None:
            where += f", column '{self.column}'"
        text = f"{where}: "
        if self.rows is not None:
            text += f"{self.rows:,} row{'s' if self.rows != 1 else ''} {_agree(self.message, self.rows)}"
        else:
            text += self.message
        if self.fix:
            text += f". Fix: {self.fix}"
        return text


_SINGULAR = {"have": "has", "are": "is", "refer": "refers", "share": "shares", "give": "gives", "repeat": "repeats"}


def _agree(message: str, rows: int) -> str:
    """Messages are written for many rows ("have ..."); one row gets the singular verb."""
    if rows != 1:
        return message
    words = message.split(" ")
    for i, word in enumerate(words[:4]):
        if word in _SINGULAR:
            words[i] = _SINGULAR[word]
            break
    return " ".join(words)


class InputError(Exception):
    """Invalid input, configuration or usage (exit code 2). Holds every problem found."""

    def __init__(self, problems: list[Problem] | Problem | str, source: str = "input"):
        if isinstance(problems, str):
            problems = [Problem(source=source, message=problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __reduce__(self):
        # rebuilt from its problems, not from the joined message (Exception's default): an error raised in
        # a Dask worker reaches the client with every problem's file, column and fix
        return type(self), (self.problems,)


def raise_if_any(problems: list[Problem]) -> None:
    if problems:
        raise InputError(problems)
