"""gate.toml (DESIGN.md section 4): parsed and validated into a `GateConfig`, paths relative to the file."""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, Problem
from .rewards import RewardSpec, parse_reward
from .schema import is_policy_name

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


def parse_gate_config(raw: dict, path: Path) -> GateConfig:
    src, base = str(path), path.parent
    problems: list[Problem] = []

    def table(name: str) -> dict:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            problems.append(Problem(src, f"[{name}] must be a table"))
            return {}
        return value

    def get(tbl: dict, section: str, key: str, types, default=None, required=False):
        if key not in tbl:
            if required:
                problems.append(Problem(src, f"[{section}] is missing the key '{key}'"))
            return default
        value = tbl[key]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            problems.append(Problem(src, f"[{section}] {key} = {value!r} has the wrong type"))
            return default
        return value

    known = {"data", "evaluation", "candidate", "criterion", "diagnostics", "causal", "output", "rewards",
             "reward_range"}
    for key in raw:
        if key not in known:
            problems.append(Problem(src, f"unknown table [{key}]", fix=f"use only {', '.join(sorted(known))}"))

    data, evaluation, diagnostics, output = table("data"), table("evaluation"), table("diagnostics"), table("output")
    logs = get(data, "data", "logs", str, required=True)
    q_hat = get(data, "data", "q_hat", str)
    actions = get(data, "data", "actions", str)
    context = get(data, "data", "context", list)

    rewards: dict[str, RewardSpec] = {}
    for name, expr in table("rewards").items():
        if not isinstance(expr, str):
            problems.append(Problem(src, f"[rewards] {name} must be a string expression"))
            continue
        try:
            rewards[name] = parse_reward(f"{name}={expr}", source=src)
        except InputError as exc:
            problems.extend(exc.problems)

    reward_ranges: dict[str, tuple[float, float]] = {}
    for name, bounds in table("reward_range").items():
        if (not isinstance(bounds, list) or len(bounds) != 2 or not all(isinstance(b, (int, float)) for b in bounds)
                or not bounds[0] < bounds[1]):
            problems.append(Problem(src, f"[reward_range] {name} must be [LOW, HIGH] with LOW < HIGH"))
            continue
        reward_ranges[name] = (float(bounds[0]), float(bounds[1]))
    max_weight = get(evaluation, "evaluation", "max_weight", (int, float))

    def array_of_tables(name: str, keys: str) -> list[dict]:
        entries = raw.get(name, [])
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            problems.append(Problem(src, f"has no [[{name}]] tables", fix=f"add [[{name}]] with {keys}"))
            return []
        return entries

    candidates = []
    raw_candidates = array_of_tables("candidate", "name and policy")
    for i, cand in enumerate(raw_candidates):
        name = get(cand, f"candidate {i + 1}", "name", str, required=True)
        policy = get(cand, f"candidate {i + 1}", "policy", str)
        if name and not is_policy_name(name):
            problems.append(Problem(src, f"[[candidate]] {i + 1} has the name '{name}'",
                                    fix="name candidates with letters, digits, _ . - only"))
        elif name:
            candidates.append(Candidate(name=name, policy=(base / policy) if policy else None))
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        problems.append(Problem(src, "lists a candidate name twice"))

    criteria = []
    raw_criteria = array_of_tables("criterion", "metric and rule")
    for i, crit in enumerate(raw_criteria):
        section = f"criterion {i + 1}"
        metric = get(crit, section, "metric", str, required=True)
        rule = get(crit, section, "rule", str, required=True)
        if rule is not None and rule not in RULES:
            problems.append(Problem(src, f"[{section}] rule '{rule}' is unknown", fix=f"use {' or '.join(RULES)}"))
            continue
        key = "min_effect" if rule == "improves" else "margin"
        threshold = get(crit, section, key, (int, float), default=0.0)
        if rule == "non_inferior" and key not in crit:
            problems.append(Problem(src, f"[{section}] non_inferior needs a margin"))
        relative = get(crit, section, "relative", bool, default=False)
        if threshold is not None and (not math.isfinite(threshold) or (rule == "non_inferior" and threshold < 0)):
            problems.append(Problem(src, f"[{section}] {key} = {threshold} is not a valid threshold"))
        if metric and rule in RULES:
            criteria.append(Criterion(metric=metric, rule=rule, threshold=float(threshold or 0.0), relative=relative))

    alpha = get(evaluation, "evaluation", "alpha", (int, float), default=0.05)
    if alpha is not None and not 0 < alpha < 1:
        problems.append(Problem(src, f"[evaluation] alpha = {alpha} is not in (0, 1)"))
    min_ess = get(diagnostics, "diagnostics", "min_ess", (int, float), default=0)
    max_unsupported = get(diagnostics, "diagnostics", "max_unsupported_mass", (int, float), default=1.0)

    causal = None
    if "causal" in raw:
        ctab = table("causal")
        required = get(ctab, "causal", "required", bool, default=True)
        treatment = get(ctab, "causal", "treatment", str, required=required)
        outcome = get(ctab, "causal", "outcome", str, required=required)
        clogs = get(ctab, "causal", "logs", str, default=logs)
        confounders = get(ctab, "causal", "confounders", list)
        modifiers = get(ctab, "causal", "effect_modifiers", list)
        estimator = get(ctab, "causal", "estimator", str, default="linear_dml")
        required_refutations = get(ctab, "causal", "refutations", list)
        if required and treatment and outcome and clogs:
            causal = CausalRequirement(treatment=treatment, outcome=outcome, logs=base / clogs,
                                       confounders=tuple(confounders) if confounders else None,
                                       effect_modifiers=tuple(modifiers) if modifiers else None,
                                       estimator=estimator,
                                       refutations=tuple(required_refutations) if required_refutations is not None
                                       else None)

    outputs = {}
    for key, value in output.items():
        if key == "json":
            key = "out"
        if key not in OUTPUT_KEYS or not isinstance(value, str):
            problems.append(Problem(src, f"[output] {key} is not one of {', '.join(OUTPUT_KEYS)} (as a path)"))
            continue
        outputs[key] = base / value

    estimator = get(evaluation, "evaluation", "estimator", str, default="snips")
    ci = get(evaluation, "evaluation", "ci", str, default="normal")
    seed = get(evaluation, "evaluation", "seed", int, default=0)
    n_boot = get(evaluation, "evaluation", "n_boot", int, default=1000)
    baseline = get(evaluation, "evaluation", "baseline", str, default="logging")
    if baseline in names:
        problems.append(Problem(src, f"[evaluation] baseline '{baseline}' is also a candidate",
                                fix="compare candidates with the logging policy or another baseline"))
    # a misspelt key (min-ess for min_ess) would silently loosen the gate: every key must be known
    known_keys = {"data": {"logs", "q_hat", "actions", "context"},
                  "evaluation": {"estimator", "alpha", "ci", "seed", "n_boot", "baseline", "max_weight"},
                  "diagnostics": {"min_ess", "max_unsupported_mass"},
                  "causal": {"required", "treatment", "outcome", "logs", "confounders", "effect_modifiers",
                             "estimator", "refutations"}}
    for section, keys in known_keys.items():
        tbl = raw.get(section, {})
        for key in (tbl if isinstance(tbl, dict) else {}):
            if key not in keys:
                problems.append(Problem(src, f"[{section}] has an unknown key '{key}'",
                                        fix=f"use {', '.join(sorted(keys))}"))
    for kind, entries, keys in (("candidate", raw_candidates, {"name", "policy"}),
                                ("criterion", raw_criteria, {"metric", "rule", "min_effect", "margin", "relative"})):
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            for key in (entry if isinstance(entry, dict) else {}):
                if key not in keys:
                    problems.append(Problem(src, f"[[{kind}]] {i + 1} has an unknown key '{key}'",
                                            fix=f"use {', '.join(sorted(keys))}"))
    if problems:
        raise InputError(problems)
    return GateConfig(
        source=path, logs=base / logs, candidates=tuple(candidates), criteria=tuple(criteria), rewards=rewards,
        estimator=estimator, alpha=float(alpha), ci=ci, seed=int(seed), n_boot=int(n_boot), baseline=baseline,
        q_hat=(base / q_hat) if q_hat else None, actions=(base / actions) if actions else None, context=tuple(context) if context else None,
        reward_ranges=reward_ranges, max_weight=float(max_weight) if max_weight else None,
        min_ess=float(min_ess), max_unsupported_mass=float(max_unsupported), causal=causal,
        output=outputs, raw=raw)
