"""gate.toml (DESIGN.md section 4): parsed and validated into a `GateConfig`, paths relative to the file."""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import InputError, Problem
from .rewards import RewardSpec, parse_reward
from .schema import LogSchema, is_policy_name

RULES = ("improves", "non_inferior")
OUTPUT_KEYS = ("out", "report", "markdown", "junit")


@dataclass(frozen=True)
class Criterion:
    metric: str
    rule: str
    threshold: float          # min_effect for improves, margin for non_inferior (as given)
    relative: bool = False

    def bound(self, baseline_value: float) -> float:
        """The value the paired difference's interval is compared with."""
        raw = self.threshold if self.rule == "improves" else -self.threshold
        return raw * abs(baseline_value) if self.relative else raw


@dataclass(frozen=True)
class Candidate:
    name: str
    policy: Path | None        # None: compact form (pi_<NAME> columns of the logs)


@dataclass(frozen=True)
class CausalRequirement:
    treatment: str
    outcome: str
    logs: Path
    confounders: tuple[str, ...] | None = None
    effect_modifiers: tuple[str, ...] | None = None
    estimator: str = "linear_dml"
    #: refutations that must pass; None: every refutation the check ran
    refutations: tuple[str, ...] | None = None


@dataclass(frozen=True)
class GateConfig:
    source: Path
    logs: Path
    candidates: tuple[Candidate, ...]
    criteria: tuple[Criterion, ...]
    rewards: dict[str, RewardSpec]
    estimator: str = "snips"
    alpha: float = 0.05
    ci: str = "normal"
    seed: int = 0
    n_boot: int = 1000
    baseline: str = "logging"
    q_hat: Path | None = None
    actions: Path | None = None
    context: tuple[str, ...] | None = None
    #: the logs' own column names by role, e.g. {"action": "stream_id"} ([data.columns])
    columns: dict[str, str] = field(default_factory=dict)
    reward_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    max_weight: float | None = None
    min_ess: float = 0.0
    max_unsupported_mass: float = 1.0
    causal: CausalRequirement | None = None
    output: dict[str, Path] = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @property
    def inputs(self) -> list[Path]:
        paths = [self.source, self.logs, *(c.policy for c in self.candidates if c.policy), self.q_hat, self.actions]
        if self.causal:
            paths.append(self.causal.logs)
        return [p for p in paths if p is not None]


def load_gate_config(path: str | Path) -> GateConfig:
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise InputError(Problem(src, "does not exist", fix="check the --config path"))
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(Problem(src, f"is not valid TOML ({exc})", fix="fix the syntax at that line")) from None
    return parse_gate_config(raw, path)


#: every key each table may hold: a misspelt key (min-ess for min_ess) would silently loosen the gate
KNOWN_KEYS = {"data": {"logs", "q_hat", "actions", "context", "columns"},
              "evaluation": {"estimator", "alpha", "ci", "seed", "n_boot", "baseline", "max_weight"},
              "diagnostics": {"min_ess", "max_unsupported_mass"},
              "causal": {"required", "treatment", "outcome", "logs", "confounders", "effect_modifiers",
                         "estimator", "refutations"},
              "candidate": {"name", "policy"},
              "criterion": {"metric", "rule", "min_effect", "margin", "relative"}}
KNOWN_TABLES = ("data", "evaluation", "candidate", "criterion", "diagnostics", "causal", "output", "rewards",
                "reward_range")


class _Reader:
    """Typed access to the parsed TOML that collects every problem instead of stopping at the first."""

    def __init__(self, raw: dict, path: Path):
        self.raw, self.src, self.base = raw, str(path), path.parent
        self.problems: list[Problem] = []

    def problem(self, message: str, fix: str | None = None) -> None:
        self.problems.append(Problem(self.src, message, fix=fix))

    def table(self, name: str, parent: dict | None = None) -> dict:
        value = (self.raw if parent is None else parent).get(name, {})
        if not isinstance(value, dict):
            self.problem(f"[{name}] must be a table")
            return {}
        return value

    def get(self, tbl: dict, section: str, key: str, types, default=None, required=False):
        if key not in tbl:
            if required:
                self.problem(f"[{section}] is missing the key '{key}'")
            return default
        value = tbl[key]
        allowed = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, allowed) or isinstance(value, bool) and bool not in allowed:
            self.problem(f"[{section}] {key} = {value!r} has the wrong type")
            return default
        return value

    def array_of_tables(self, name: str, keys: str) -> list[dict]:
        entries = self.raw.get(name, [])
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            self.problem(f"has no [[{name}]] tables", fix=f"add [[{name}]] with {keys}")
            return []
        return entries

    def path(self, value: str | None) -> Path | None:
        return self.base / value if value else None


def parse_gate_config(raw: dict, path: Path) -> GateConfig:
    """Validate the parsed gate.toml, reporting every problem at once, into a `GateConfig`."""
    r = _Reader(raw, path)
    for key in raw:
        if key not in KNOWN_TABLES:
            r.problem(f"unknown table [{key}]", fix=f"use only {', '.join(sorted(KNOWN_TABLES))}")
    data = _data(r)
    candidates = _candidates(r)
    evaluation = _evaluation(r, [c.name for c in candidates])
    diagnostics = r.table("diagnostics")
    settings = dict(
        rewards=_rewards(r), reward_ranges=_reward_ranges(r), criteria=tuple(_criteria(r)),
        min_ess=float(r.get(diagnostics, "diagnostics", "min_ess", (int, float), default=0)),
        max_unsupported_mass=float(r.get(diagnostics, "diagnostics", "max_unsupported_mass", (int, float),
                                         default=1.0)),
        causal=_causal(r, data.get("logs")), output=_outputs(r))
    _unknown_keys(r)
    if r.problems:
        raise InputError(r.problems)
    return GateConfig(source=path, candidates=tuple(candidates), raw=raw, **data, **evaluation, **settings)


def _data(r: _Reader) -> dict:
    data = r.table("data")
    logs = r.get(data, "data", "logs", str, required=True)
    context = r.get(data, "data", "context", list)
    if context is not None and not all(isinstance(c, str) and c for c in context):
        r.problem(f"[data] context = {context!r} must list column names or patterns (strings)",
                  fix='write e.g. context = ["x_*", "hour"]')
        context = None
    columns = r.table("columns", data)
    try:  # the roles are checked now, before any data is read
        LogSchema.from_mapping(columns, source=r.src)
    except InputError as exc:
        r.problems += [replace(p, message=f"[data.columns] {p.message}") for p in exc.problems]
    return {"logs": r.path(logs), "q_hat": r.path(r.get(data, "data", "q_hat", str)),
            "actions": r.path(r.get(data, "data", "actions", str)),
            "context": tuple(context) if context else None,
            "columns": {k: v for k, v in columns.items() if isinstance(v, str) and v}}


def _rewards(r: _Reader) -> dict[str, RewardSpec]:
    rewards: dict[str, RewardSpec] = {}
    for name, expr in r.table("rewards").items():
        if not isinstance(expr, str):
            r.problem(f"[rewards] {name} must be a string expression")
            continue
        try:
            rewards[name] = parse_reward(f"{name}={expr}", source=r.src)
        except InputError as exc:
            r.problems.extend(exc.problems)
    return rewards


def _reward_ranges(r: _Reader) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}
    for name, bounds in r.table("reward_range").items():
        if (not isinstance(bounds, list) or len(bounds) != 2 or not all(isinstance(b, (int, float)) for b in bounds)
                or not bounds[0] < bounds[1]):
            r.problem(f"[reward_range] {name} must be [LOW, HIGH] with LOW < HIGH")
            continue
        ranges[name] = (float(bounds[0]), float(bounds[1]))
    return ranges


def _candidates(r: _Reader) -> list[Candidate]:
    candidates = []
    for i, cand in enumerate(r.array_of_tables("candidate", "name and policy")):
        name = r.get(cand, f"candidate {i + 1}", "name", str, required=True)
        policy = r.get(cand, f"candidate {i + 1}", "policy", str)
        if name and not is_policy_name(name):
            r.problem(f"[[candidate]] {i + 1} has the name '{name}'",
                      fix="name candidates with letters, digits, _ . - only")
        elif name:
            candidates.append(Candidate(name=name, policy=r.path(policy)))
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        r.problem("lists a candidate name twice")
    return candidates


def _criteria(r: _Reader) -> list[Criterion]:
    criteria = []
    for i, crit in enumerate(r.array_of_tables("criterion", "metric and rule")):
        section = f"criterion {i + 1}"
        metric = r.get(crit, section, "metric", str, required=True)
        rule = r.get(crit, section, "rule", str, required=True)
        if rule is not None and rule not in RULES:
            r.problem(f"[{section}] rule '{rule}' is unknown", fix=f"use {' or '.join(RULES)}")
            continue
        key = "min_effect" if rule == "improves" else "margin"
        threshold = r.get(crit, section, key, (int, float), default=0.0)
        if rule == "non_inferior" and key not in crit:
            r.problem(f"[{section}] non_inferior needs a margin")
        relative = r.get(crit, section, "relative", bool, default=False)
        if threshold is not None and (not math.isfinite(threshold) or (rule == "non_inferior" and threshold < 0)):
            r.problem(f"[{section}] {key} = {threshold} is not a valid threshold")
        if metric and rule in RULES:
            criteria.append(Criterion(metric=metric, rule=rule, threshold=float(threshold or 0.0), relative=relative))
    return criteria


def _evaluation(r: _Reader, candidate_names: list[str]) -> dict:
    evaluation = r.table("evaluation")
    alpha = r.get(evaluation, "evaluation", "alpha", (int, float), default=0.05)
    if alpha is not None and not 0 < alpha < 1:
        r.problem(f"[evaluation] alpha = {alpha} is not in (0, 1)")
    baseline = r.get(evaluation, "evaluation", "baseline", str, default="logging")
    if baseline in candidate_names:
        r.problem(f"[evaluation] baseline '{baseline}' is also a candidate",
                  fix="compare candidates with the logging policy or another baseline")
    max_weight = r.get(evaluation, "evaluation", "max_weight", (int, float))
    return {"estimator": r.get(evaluation, "evaluation", "estimator", str, default="snips"),
            "alpha": float(alpha), "ci": r.get(evaluation, "evaluation", "ci", str, default="normal"),
            "seed": int(r.get(evaluation, "evaluation", "seed", int, default=0)),
            "n_boot": int(r.get(evaluation, "evaluation", "n_boot", int, default=1000)), "baseline": baseline,
            "max_weight": float(max_weight) if max_weight else None}


def _causal(r: _Reader, logs: Path | None) -> CausalRequirement | None:
    if "causal" not in r.raw:
        return None
    ctab = r.table("causal")
    required = r.get(ctab, "causal", "required", bool, default=True)
    treatment = r.get(ctab, "causal", "treatment", str, required=required)
    outcome = r.get(ctab, "causal", "outcome", str, required=required)
    clogs = r.path(r.get(ctab, "causal", "logs", str)) or logs
    confounders = r.get(ctab, "causal", "confounders", list)
    modifiers = r.get(ctab, "causal", "effect_modifiers", list)
    refutations = r.get(ctab, "causal", "refutations", list)
    if not (required and treatment and outcome and clogs):
        return None
    return CausalRequirement(treatment=treatment, outcome=outcome, logs=clogs,
                             confounders=tuple(confounders) if confounders else None,
                             effect_modifiers=tuple(modifiers) if modifiers else None,
                             estimator=r.get(ctab, "causal", "estimator", str, default="linear_dml"),
                             refutations=tuple(refutations) if refutations is not None else None)


def _outputs(r: _Reader) -> dict[str, Path]:
    outputs = {}
    for key, value in r.table("output").items():
        key = "out" if key == "json" else key
        if key not in OUTPUT_KEYS or not isinstance(value, str):
            r.problem(f"[output] {key} is not one of {', '.join(OUTPUT_KEYS)} (as a path)")
            continue
        outputs[key] = r.path(value)
    return outputs


def _unknown_keys(r: _Reader) -> None:
    for section in ("data", "evaluation", "diagnostics", "causal"):
        tbl = r.raw.get(section, {})
        for key in (tbl if isinstance(tbl, dict) else {}):
            if key not in KNOWN_KEYS[section]:
                r.problem(f"[{section}] has an unknown key '{key}'", fix=f"use {', '.join(sorted(KNOWN_KEYS[section]))}")
    for kind in ("candidate", "criterion"):
        entries = r.raw.get(kind, [])
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            for key in (entry if isinstance(entry, dict) else {}):
                if key not in KNOWN_KEYS[kind]:
                    r.problem(f"[[{kind}]] {i + 1} has an unknown key '{key}'",
                              fix=f"use {', '.join(sorted(KNOWN_KEYS[kind]))}")
