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
LEVELS = ("decision", "session")
#: The interval method of `evaluate` and of the gate when none is given (one constant for both; the
#: methods are in livegate.ope.inference). "robust": the normal interval, with each end that the
#: terms' tail on that side cannot support left open (benchmarks/README_coverage.md)
DEFAULT_CI = "robust"
#: the largest seed: every random generator livegate seeds (NumPy, scikit-learn's random_state, which
#: also gets seed + fold) accepts it
MAX_SEED = 2**31 - 1

# --- the diagnostics thresholds in force when gate.toml does not set them (docs/gate-toml.md) -----
# A candidate that misses any of them is inconclusive on every criterion. They are loosened only by
# writing the key in [diagnostics]; a looser value than the default is reported as a warning.
#: Effective sample size (sum w)^2 / sum w^2 a candidate needs, whatever n. With fewer effective rows
#: the unsupported-mass bound below cannot be met anyway (the mean weight's standard error is about
#: 1 / sqrt(ESS), so its 3-standard-error bound alone is 0.095 at ESS 1,000), and a single row with
#: a wrong propensity (ESS about 1) can no longer carry a decision.
DEFAULT_MIN_ESS = 1000.0
#: ... and as a share of the rows: n / ESS = 1 + chi^2(pi_e || pi_0) (with correct propensities), so
#: 5% holds back a candidate more than chi^2 = 19 away from the logging policy, whose estimate rests on
#: its few heaviest rows however many rows there are. The demo's `worse` (7.9%) and `better` (20%)
#: meet it; `greedy` (99% on one stream, 3.1%) does not.
DEFAULT_MIN_ESS_SHARE = 0.05
#: The candidate's probability mass outside the logging policy's support, read at its UPPER bound (3
#: standard errors of the mean weight): a candidate is held back unless the data show the mass is
#: below this. Self-normalised estimators silently renormalise that mass away.
DEFAULT_MAX_UNSUPPORTED_MASS = 0.10
#: A mean importance weight more than this many standard errors above 1 (and more than 1% above it)
#: means wrong propensities: E[w] <= 1 whatever the candidate. Same z as the evaluation's warning.
DEFAULT_MAX_MEAN_WEIGHT_Z = 4.0
DIAGNOSTICS_DEFAULTS = {"min_ess": DEFAULT_MIN_ESS, "min_ess_share": DEFAULT_MIN_ESS_SHARE,
                        "max_unsupported_mass": DEFAULT_MAX_UNSUPPORTED_MASS,
                        "max_mean_weight_z": DEFAULT_MAX_MEAN_WEIGHT_Z}
#: direction in which each threshold is looser: min_* lower, max_* higher
_LOOSER = {"min_ess": -1, "min_ess_share": -1, "max_unsupported_mass": 1, "max_mean_weight_z": 1}


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
    #: the population of the effect: "ate", "att", "atc" or "ato" (livegate.causal.estimands)
    estimand: str = "ate"
    #: trimming: None, a threshold in (0, 0.5) or "crump"
    trim: float | str | None = None
    #: run on a proportional stratified sample of about this many rows (datasets/causal_sample.py); None: all rows
    sample_rows: int | None = None


@dataclass(frozen=True)
class GateConfig:
    source: Path
    logs: Path
    candidates: tuple[Candidate, ...]
    criteria: tuple[Criterion, ...]
    rewards: dict[str, RewardSpec]
    estimator: str = "snips"
    alpha: float = 0.05
    ci: str = DEFAULT_CI
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
    min_ess: float = DEFAULT_MIN_ESS
    min_ess_share: float = DEFAULT_MIN_ESS_SHARE
    max_unsupported_mass: float = DEFAULT_MAX_UNSUPPORTED_MASS
    max_mean_weight_z: float = DEFAULT_MAX_MEAN_WEIGHT_Z
    #: [evaluation] level: "decision" (each logged row is a sample) or "session" (whole viewer sessions)
    level: str = "decision"
    #: [evaluation] gamma: discount of session returns, in (0, 1]
    gamma: float = 1.0
    causal: CausalRequirement | None = None
    #: [engine] max_memory: the memory budget (bytes) of streaming evaluation; None: in memory unless a
    #: scheduler is set (then the default budget, datasets.partitions.default_max_memory())
    max_memory: int | None = None
    #: [engine] scheduler: "tcp://HOST:PORT" of a Dask scheduler, or "local" (a LocalCluster of 2 workers)
    scheduler: str | None = None
    output: dict[str, Path] = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @property
    def inputs(self) -> list[Path]:
        paths = [self.source, self.logs, *(c.policy for c in self.candidates if c.policy), self.q_hat, self.actions]
        if self.causal:
            paths.append(self.causal.logs)
        return [p for p in paths if p is not None]

    @property
    def diagnostics_settings(self) -> dict[str, float]:
        return {key: float(getattr(self, key)) for key in DIAGNOSTICS_DEFAULTS}

    @property
    def loosened(self) -> list[str]:
        """The [diagnostics] thresholds set looser than their defaults."""
        return [key for key, default in DIAGNOSTICS_DEFAULTS.items()
                if (getattr(self, key) - default) * _LOOSER[key] > 0]

    @property
    def warnings(self) -> list[str]:
        """Settings that let a worse candidate through: thresholds loosened below the defaults, and
        criteria that cannot block a candidate worse than the baseline."""
        out = []
        for key in self.loosened:
            out.append(f"[diagnostics] {key} = {_plain(getattr(self, key))} is looser than the default "
                       f"{_plain(DIAGNOSTICS_DEFAULTS[key])}: {_LOOSENED_MEANS[key]}")
        for i, crit in enumerate(self.criteria):
            out += criterion_warnings(crit, i)
        return out


_LOOSENED_MEANS = {
    "min_ess": "a candidate whose estimate rests on fewer effective rows can pass",
    "min_ess_share": "a candidate further from the logging policy (heavier weights) can pass",
    "max_unsupported_mass": "a candidate with more probability where the logs show nothing can pass",
    "max_mean_weight_z": "wrong propensities (a mean weight above 1) are tolerated more",
}


def _plain(x: float) -> str:
    """A setting as it would be written in gate.toml: 1000, 0.05, -1000."""
    return f"{x:.0f}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def criterion_warnings(crit: Criterion, index: int) -> list[str]:
    """Why a criterion cannot block a worse candidate, if it cannot (known before any data is read)."""
    where = f"[[criterion]] {index + 1} ({crit.metric} {crit.rule})"
    unit = " of the baseline's value" if crit.relative else ""
    if crit.rule == "improves" and crit.threshold < 0:
        amount = f"{-crit.threshold:.0%}" if crit.relative else _plain(-crit.threshold)
        return [f"{where}: min_effect = {_plain(crit.threshold)} is negative, so a candidate worse than the baseline "
                f"by up to {amount}{unit} passes: this criterion cannot block a worse candidate. Use min_effect >= 0, "
                f"or rule = \"non_inferior\" with margin = {_plain(-crit.threshold)} to say so explicitly"]
    if crit.rule == "non_inferior" and crit.relative and crit.threshold >= 1:
        return [f"{where}: a relative margin of {crit.threshold:.0%} passes a candidate that loses all of the "
                "baseline's value: this criterion cannot block a worse candidate. Use a margin below 1, e.g. 0.05"]
    return []


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
              "evaluation": {"estimator", "alpha", "ci", "seed", "n_boot", "baseline", "max_weight", "level",
                             "gamma"},
              "diagnostics": set(DIAGNOSTICS_DEFAULTS),
              "causal": {"required", "treatment", "outcome", "logs", "confounders", "effect_modifiers",
                         "estimator", "refutations", "estimand", "trim", "sample_rows"},
              "candidate": {"name", "policy"},
              "criterion": {"metric", "rule", "min_effect", "margin", "relative"},
              "engine": {"max_memory", "scheduler"}}
KNOWN_TABLES = ("data", "evaluation", "candidate", "criterion", "diagnostics", "causal", "output", "rewards",
                "reward_range", "engine")
_MISSING = object()
_KINDS = {int: "a number", float: "a number", str: "a string", bool: "true or false", list: "an array"}


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
            kinds = " or ".join(dict.fromkeys(_KINDS.get(t, t.__name__) for t in allowed))
            self.problem(f"[{section}] {key} = {value!r} has the wrong type", fix=f"write {key} as {kinds}")
            return default
        return value

    def text(self, tbl: dict, section: str, key: str, default=None, required=False, what: str = "a path"):
        """A string that must not be empty (a path, a column or a name)."""
        value = self.get(tbl, section, key, str, default=default, required=required)
        if value is not None and not value.strip():
            self.problem(f'[{section}] {key} = "" is empty',
                         fix=f"give {what}, or leave the key out" + ("" if required else " for its default"))
            return default
        return value

    def number(self, tbl: dict, section: str, key: str, default: float, low: float, high: float, *,
               low_open: bool = False, high_open: bool = False, fix: str) -> float:
        """A finite number in [low, high] (an open end excluded): NaN, inf and out-of-range values are errors."""
        value = self.get(tbl, section, key, (int, float), default=_MISSING)
        if value is _MISSING:
            return default
        inside = (math.isfinite(value) and (low < value if low_open else low <= value)
                  and (value < high if high_open else value <= high))
        if not inside:
            lo, hi = "(" if low_open else "[", ")" if high_open or math.isinf(high) else "]"
            span = f"{lo}{_plain(low)}, {'infinity' if math.isinf(high) else _plain(high)}{hi}"
            self.problem(f"[{section}] {key} = {value!r} is not in {span}"
                         + ("" if math.isfinite(value) else " (it must be a finite number)"), fix=fix)
            return default
        return float(value)

    def names(self, tbl: dict, section: str, key: str, example: str) -> list[str] | None:
        """An array of non-empty strings (column names or patterns)."""
        value = self.get(tbl, section, key, list)
        if value is not None and not (value and all(isinstance(v, str) and v.strip() for v in value)):
            self.problem(f"[{section}] {key} = {value!r} must list one or more names (non-empty strings)",
                         fix=f"write e.g. {key} = {example}, or leave the key out for its default")
            return None
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
    settings = dict(rewards=_rewards(r), reward_ranges=_reward_ranges(r), criteria=tuple(_criteria(r)),
                    **_diagnostics(r), causal=_causal(r, data.get("logs")), **_engine(r), output=_outputs(r))
    _unknown_keys(r)
    if r.problems:
        raise InputError(r.problems)
    return GateConfig(source=path, candidates=tuple(candidates), raw=raw, **data, **evaluation, **settings)


def _data(r: _Reader) -> dict:
    data = r.table("data")
    logs = r.text(data, "data", "logs", required=True, what="the logs' path")
    context = r.names(data, "data", "context", '["x_*", "hour"]')
    columns = r.table("columns", data)
    try:  # the roles are checked now, before any data is read
        LogSchema.from_mapping(columns, source=r.src)
    except InputError as exc:
        r.problems += [replace(p, message=f"[data.columns] {p.message}") for p in exc.problems]
    return {"logs": r.path(logs), "q_hat": r.path(r.text(data, "data", "q_hat", what="the predictions' path")),
            "actions": r.path(r.text(data, "data", "actions", what="the action catalogue's path")),
            "context": tuple(context) if context else None,
            "columns": {k: v for k, v in columns.items() if isinstance(v, str) and v}}


def _rewards(r: _Reader) -> dict[str, RewardSpec]:
    rewards: dict[str, RewardSpec] = {}
    for name, expr in r.table("rewards").items():
        if not isinstance(expr, str):
            r.problem(f"[rewards] {name} must be a string expression", fix=f'write e.g. {name} = "watch_seconds + 50*gift_value"')
            continue
        try:
            rewards[name] = parse_reward(f"{name}={expr}", source=f"{r.src}: [rewards] {name}")
        except InputError as exc:
            r.problems.extend(exc.problems)
    return rewards


def _reward_ranges(r: _Reader) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}
    for name, bounds in r.table("reward_range").items():
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
                or not bounds[0] < bounds[1]):
            r.problem(f"[reward_range] {name} = {bounds!r} must be [LOW, HIGH], two finite numbers with LOW < HIGH",
                      fix=f"write e.g. {name} = [0, 1]: every value the metric can take, known a priori")
            continue
        ranges[name] = (float(bounds[0]), float(bounds[1]))
    return ranges


def _candidates(r: _Reader) -> list[Candidate]:
    candidates = []
    for i, cand in enumerate(r.array_of_tables("candidate", "name and policy")):
        section = f"candidate {i + 1}"
        name = r.get(cand, section, "name", str, required=True)
        policy = r.text(cand, section, "policy", what="the policy file's path (or leave it out for the compact form)")
        if name is not None and not is_policy_name(name):
            r.problem(f"[[candidate]] {i + 1} has the name '{name}'",
                      fix="name candidates with letters, digits, _ . - only")
        elif name:
            candidates.append(Candidate(name=name, policy=r.path(policy)))
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        r.problem("lists a candidate name twice", fix="give every [[candidate]] its own name")
    return candidates


_THRESHOLD_FIX = {"improves": "give min_effect as a finite number (the difference must exceed it), e.g. 0.0",
                  "non_inferior": "give margin as a finite number >= 0 (the difference must exceed -margin), "
                                  "e.g. margin = 0.05 with relative = true"}


def _criteria(r: _Reader) -> list[Criterion]:
    criteria = []
    for i, crit in enumerate(r.array_of_tables("criterion", "metric and rule")):
        section = f"criterion {i + 1}"
        metric = r.text(crit, section, "metric", required=True, what="a reward column or a [rewards] name")
        rule = r.get(crit, section, "rule", str, required=True)
        if rule is not None and rule not in RULES:
            r.problem(f"[{section}] rule '{rule}' is unknown", fix=f"use {' or '.join(RULES)}")
            continue
        key, other = ("min_effect", "margin") if rule == "improves" else ("margin", "min_effect")
        if rule is not None and other in crit:
            # the key of the other rule used to be accepted and ignored: whoever wrote it meant something
            r.problem(f"[{section}] {other} is not a setting of rule '{rule}' (it would be ignored)",
                      fix=f"use {key} with '{rule}'" + (", or rule = \"improves\" for a minimum effect"
                                                        if rule == "non_inferior" else
                                                        ", or rule = \"non_inferior\" for a margin"))
        if rule == "non_inferior" and key not in crit:
            r.problem(f"[{section}] non_inferior needs a margin", fix=_THRESHOLD_FIX["non_inferior"])
        threshold = r.get(crit, section, key, (int, float), default=0.0)
        relative = r.get(crit, section, "relative", bool, default=False)
        if threshold is not None and (not math.isfinite(threshold) or (rule == "non_inferior" and threshold < 0)):
            r.problem(f"[{section}] {key} = {threshold} is not a valid threshold", fix=_THRESHOLD_FIX.get(rule))
        elif metric and rule in RULES:
            criteria.append(Criterion(metric=metric, rule=rule, threshold=float(threshold or 0.0), relative=relative))
    return criteria


def _evaluation(r: _Reader, candidate_names: list[str]) -> dict:
    section = "evaluation"
    evaluation = r.table(section)
    alpha = r.number(evaluation, section, "alpha", 0.05, 0.0, 1.0, low_open=True, high_open=True,
                     fix="use e.g. alpha = 0.05 (the family-wise error level)")
    baseline = r.get(evaluation, section, "baseline", str, default="logging")
    if baseline in candidate_names:
        r.problem(f"[evaluation] baseline '{baseline}' is also a candidate",
                  fix="compare candidates with the logging policy or another baseline")
    seed = r.get(evaluation, section, "seed", int, default=0)
    if not 0 <= seed <= MAX_SEED:
        r.problem(f"[evaluation] seed = {seed} is not in [0, {MAX_SEED}]",
                  fix="use a seed such as 0 or 12345")
        seed = 0
    max_weight = r.number(evaluation, section, "max_weight", None, 1.0, math.inf,
                          fix="give the bound on pi_e/pi_0 known by design, e.g. 1/(epsilon/K) for epsilon-greedy "
                              "logging over K streams (at least 1: the weights' mean is 1), or leave the key out")
    level = r.get(evaluation, section, "level", str, default="decision")
    if level not in LEVELS:
        r.problem(f"[evaluation] level = {level!r} is unknown", fix='use "decision" (each logged row is a sample) '
                                                                 'or "session" (whole viewer sessions)')
        level = "decision"
    gamma = r.number(evaluation, section, "gamma", 1.0, 0.0, 1.0, low_open=True,
                     fix="use a discount in (0, 1], e.g. 1.0 (the total per session) or 0.99")
    if level == "decision" and gamma != 1.0:
        r.problem(f"[evaluation] gamma = {gamma} discounts session returns, but level is \"decision\"",
                  fix='add level = "session" or leave gamma out')
    # sessions: double reinforcement learning (Kallus & Uehara 2020) weights each step by fitted marginal
    # ratios instead of products of weights, so it escapes the curse of horizon; it covered the simulator's
    # truth 15 of 15 times (benchmarks/README_sessions.md). Per decision, self-normalised IPS needs no model
    estimator = r.get(evaluation, section, "estimator", str, default="drl" if level == "session" else "snips")
    name = str(estimator).split(":")[0].strip()
    if level == "session" and name == "auto":
        r.problem('[evaluation] estimator = "auto" chooses among the per-decision estimators; session-level '
                  "evaluation has no automatic choice yet", fix='use "drl" (or leave estimator out)')
    if level == "session" and name in ("fqe", "mis"):
        model = "Q function" if name == "fqe" else "state density ratios"
        r.problem(f'[evaluation] estimator = "{name}" cannot gate: its interval does not include the error of its '
                  f"fitted {model}", fix='use "drl" (the default: fitted Q corrected by fitted marginal ratios, consistent if either model '
                  'is), or "wdr" or "dr" (fitted Q plus importance weights, unbiased whatever the Q function)')
    return {"estimator": estimator,
            "alpha": alpha, "ci": r.get(evaluation, section, "ci", str, default=DEFAULT_CI), "seed": int(seed),
            "n_boot": int(r.get(evaluation, section, "n_boot", int, default=1000)), "baseline": baseline,
            "max_weight": max_weight, "level": level, "gamma": gamma}


def _diagnostics(r: _Reader) -> dict:
    diagnostics = r.table("diagnostics")
    how = " (a looser value than the default {} is reported as a warning)"
    return {
        "min_ess": r.number(diagnostics, "diagnostics", "min_ess", DEFAULT_MIN_ESS, 0.0, math.inf,
                            fix="give the effective sample size a candidate needs, e.g. 1000; 0 turns the absolute "
                                "floor off" + how.format(_plain(DEFAULT_MIN_ESS))),
        "min_ess_share": r.number(diagnostics, "diagnostics", "min_ess_share", DEFAULT_MIN_ESS_SHARE, 0.0, 1.0,
                                  fix="give the share of the rows the effective sample size must reach, e.g. 0.05; 0 "
                                      "turns the relative floor off" + how.format(_plain(DEFAULT_MIN_ESS_SHARE))),
        "max_unsupported_mass": r.number(
            diagnostics, "diagnostics", "max_unsupported_mass", DEFAULT_MAX_UNSUPPORTED_MASS, 0.0, 1.0,
            fix="give the largest probability mass a candidate may put outside the logging policy's support, e.g. "
                "0.1; 1 turns the check off" + how.format(_plain(DEFAULT_MAX_UNSUPPORTED_MASS))),
        "max_mean_weight_z": r.number(
            diagnostics, "diagnostics", "max_mean_weight_z", DEFAULT_MAX_MEAN_WEIGHT_Z, 0.0, math.inf, low_open=True,
            fix="give how many standard errors above 1 the mean weight may lie, e.g. 4" +
                how.format(_plain(DEFAULT_MAX_MEAN_WEIGHT_Z))),
    }


def _causal(r: _Reader, logs: Path | None) -> CausalRequirement | None:
    if "causal" not in r.raw:
        return None
    ctab = r.table("causal")
    required = r.get(ctab, "causal", "required", bool, default=True)
    treatment = r.text(ctab, "causal", "treatment", required=required, what="the 0/1 treatment column")
    outcome = r.text(ctab, "causal", "outcome", required=required, what="the outcome column")
    clogs = r.path(r.text(ctab, "causal", "logs", what="the causal table's path")) or logs
    confounders = r.names(ctab, "causal", "confounders", '["x_activity", "x_prime_time"]')
    modifiers = r.names(ctab, "causal", "effect_modifiers", '["x_is_new"]')
    refutations = r.get(ctab, "causal", "refutations", list)
    if refutations is not None and not all(isinstance(v, str) for v in refutations):
        r.problem(f"[causal] refutations = {refutations!r} must list refutation names (strings)",
                  fix='write e.g. refutations = ["placebo_treatment", "random_common_cause", "data_subset"]')
        refutations = None
    estimator = r.text(ctab, "causal", "estimator", default="linear_dml", what="an estimator name")
    # the estimand's name is checked against livegate.causal's list before any data is read (api.py)
    estimand = r.text(ctab, "causal", "estimand", default="ate", what='an estimand: "ate", "att", "atc" or "ato"')
    trim = r.get(ctab, "causal", "trim", (int, float, str))
    trim_fix = 'write e.g. trim = 0.01 (rows with a propensity outside [0.01, 0.99] are dropped) or trim = "crump"'
    if isinstance(trim, str) and trim != "crump":
        r.problem(f"[causal] trim = {trim!r} is not a threshold", fix=trim_fix)
        trim = None
    elif trim is not None and not isinstance(trim, str) and not (math.isfinite(trim) and 0 < trim < 0.5):
        r.problem(f"[causal] trim = {trim!r} is not in (0, 0.5)", fix=trim_fix)
        trim = None
    sample_rows = r.get(ctab, "causal", "sample_rows", int)
    if sample_rows is not None and sample_rows < 1:
        r.problem(f"[causal] sample_rows = {sample_rows} is not a number of rows",
                  fix="write e.g. sample_rows = 1000000, or leave it out to use every row")
        sample_rows = None
    if not (required and treatment and outcome and clogs):
        return None
    return CausalRequirement(treatment=treatment, outcome=outcome, logs=clogs,
                             confounders=tuple(confounders) if confounders else None,
                             effect_modifiers=tuple(modifiers) if modifiers else None,
                             estimator=estimator,
                             refutations=tuple(refutations) if refutations is not None else None,
                             estimand=estimand, trim=float(trim) if isinstance(trim, (int, float)) else trim,
                             sample_rows=sample_rows)


def _engine(r: _Reader) -> dict:
    """[engine]: where and in how much memory the evaluation runs (docs/streaming.md)."""
    engine = r.table("engine")
    max_memory = r.get(engine, "engine", "max_memory", (int, str))
    if max_memory is not None:
        from .partitions import parse_memory  # the one parser of sizes (--max-memory too)
        try:
            max_memory = parse_memory(max_memory, "[engine] max_memory")
        except InputError as exc:
            r.problems += [replace(p, source=r.src, message=f"{p.source}: {p.message}") for p in exc.problems]
            max_memory = None
    scheduler = r.text(engine, "engine", "scheduler", what='a Dask scheduler\'s address "tcp://HOST:PORT" or "local"')
    return {"max_memory": max_memory, "scheduler": scheduler.strip() if scheduler else None}


def _outputs(r: _Reader) -> dict[str, Path]:
    outputs = {}
    for key, value in r.table("output").items():
        key = "out" if key == "json" else key
        if key not in OUTPUT_KEYS or not isinstance(value, str):
            r.problem(f"[output] {key} is not one of {', '.join(OUTPUT_KEYS)} (as a path)",
                      fix='write e.g. out = "gate.json"')
            continue
        if not value.strip():
            r.problem(f'[output] {key} = "" is empty', fix=f'give a file path, e.g. {key} = "gate-{key}", or leave '
                                                            "the key out to write no such file")
            continue
        outputs[key] = r.path(value)
    return outputs


def _unknown_keys(r: _Reader) -> None:
    for section in ("data", "evaluation", "diagnostics", "causal", "engine"):
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
