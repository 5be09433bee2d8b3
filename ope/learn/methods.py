"""Learner identifiers: `plugin`, `dr`, `poem`, `fqi`, `pessimistic-fqi`, with parameters
(`poem:lambda=1,clip=50`), parsed once for the CLI and the Python API."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from livegate.datasets.errors import InputError, Problem

SCHEMA = "livegate.learn/1"
DECISION_METHODS = ("plugin", "dr", "poem")
SESSION_METHODS = ("fqi", "pessimistic-fqi")
METHODS = DECISION_METHODS + SESSION_METHODS

#: parameters of each method: name -> {parameter: (type, default)}
_PARAMS: dict[str, dict[str, tuple[type, float]]] = {
    "plugin": {"temperature": (float, 0.0)},
    "dr": {"l2": (float, 1e-3), "iterations": (int, 200)},
    "poem": {"lambda": (float, 0.5), "clip": (float, 100.0), "l2": (float, 1e-3), "iterations": (int, 200)},
    "fqi": {"iterations": (int, 0), "temperature": (float, 0.0)},
    "pessimistic-fqi": {"iterations": (int, 0), "temperature": (float, 0.0), "kappa": (float, 0.1)},
}
_IDENT = re.compile(r"^(?P<name>[a-z-]+)(?::(?P<params>.*))?$")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: dict = field(default_factory=dict)

    @property
    def identifier(self) -> str:
        given = ",".join(f"{k}={v:g}" for k, v in sorted(self.params.items()))
        return self.name + (f":{given}" if given else "")

    def get(self, key: str):
        return self.params.get(key, _PARAMS[self.name][key][1])


def parse_method(text: str) -> MethodSpec:
    """`name[:key=value,...]`, e.g. `plugin`, `plugin:temperature=5`, `poem:lambda=1,clip=50`."""
    m = _IDENT.match(text.strip())
    if not m or m.group("name") not in METHODS:
        raise InputError(Problem("--method", f"unknown method '{text}'", fix=f"choose from {', '.join(METHODS)}"))
    name, params = m.group("name"), {}
    for item in filter(None, (m.group("params") or "").split(",")):
        key, eq, raw = (s.strip() for s in item.partition("="))
        if not eq or key not in _PARAMS[name]:
            hint = ", ".join(f"{k}=VALUE" for k in _PARAMS[name])
            raise InputError(Problem("--method", f"'{text}': cannot read parameter '{item}'", fix=f"{name} takes {hint}"))
        kind = _PARAMS[name][key][0]
        try:
            value = kind(raw)
        except ValueError:
            raise InputError(Problem("--method", f"'{text}': '{raw}' is not a{'n integer' if kind is int else ' number'}")) from None
        if not np.isfinite(value) or value < 0 or (key in ("clip",) and value == 0):
            raise InputError(Problem("--method", f"'{text}': {key} must be {'positive' if key == 'clip' else 'at least 0'}"))
        params[key] = value
    return MethodSpec(name, params)
