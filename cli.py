"""livegate command line: argument parsing, file I/O, printing and exit codes. No statistics here.

Exit codes (DESIGN.md section 4): 0 success / gate passes, 1 gate fails, 2 invalid input or usage,
3 gate inconclusive, 4 internal error (traceback with --debug).
"""
from __future__ import annotations

import sys

if not __package__:  # `python cli.py` from a checkout: this folder is the livegate package
    import importlib.util
    from pathlib import Path as _Path

    _root = _Path(__file__).resolve().parent
    if sys.path and _Path(sys.path[0] or ".").resolve() == _root:
        del sys.path[0]  # the checkout's datasets/ must not shadow an installed package of that name
    _spec = importlib.util.spec_from_file_location("livegate", _root / "__init__.py",
                                                   submodule_search_locations=[str(_root)])
    sys.modules["livegate"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["livegate"])

import argparse
import os
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_INCONCLUSIVE, EXIT_BUG = 0, 1, 2, 3, 4
DEFAULT_OUTCOMES = ("watch_seconds", "click", "gift_value")

EXAMPLES = {
    "simulate": "livegate simulate --out sim --n-rounds 50000 --seed 7",
    "validate": "livegate validate --logs sim/logs.parquet --policy better=sim/policies/better.parquet",
    "evaluate": "livegate evaluate --logs sim/logs.parquet --policy better=sim/policies/better.parquet \\\n"
                "      --reward watch_seconds --reward 'engagement=watch_seconds + 50*gift_value' \\\n"
                "      --estimators ips,snips,dr --ci normal --out results.json --report report.html",
    "causal": "livegate causal --logs causal/logs.parquet --treatment recommended --outcome watch_seconds \\\n"
              "      --out causal.json --policy-out causal/policies/targeted.parquet",
    "report": "livegate report results.json causal.json --out report.html",
    "gate": "livegate gate --config gate.toml --report report.html --junit junit.xml",
    "demo": "livegate demo --out demo",
    "convert": "livegate convert --format open-bandit --input obd/random/all/all.csv \\\n"
               "      --item-context obd/random/all/item_context.csv --out obd-logs.parquet",
}


class UsageError(Exception):
    """Bad command line: exit 2 with one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage and exits itself)
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _progress(args) -> Callable[[str], None]:
    """Progress on stderr when it is a terminal and --quiet is off; silent otherwise."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return lambda *_: None
    from tqdm import tqdm

    bar = tqdm(total=None, bar_format="{desc} [{elapsed}]", file=sys.stderr, leave=False)

    def step(message: str, *_counts) -> None:  # causal/ also passes (done, total)
        bar.set_description_str(f"livegate: {message}")
        bar.update(1)
    return step


def _say(args, text: str = "") -> None:
    print(text, flush=True)


# --- helpers shared by commands --------------------------------------------------------------

def _named_path(text: str, flag: str) -> tuple[str, Path | None]:
    """NAME=PATH, or NAME alone for the compact form (pi_NAME columns in the logs)."""
    from livegate.datasets import InputError, Problem
    from livegate.datasets.schema import is_policy_name

    name, eq, path = text.partition("=")
    name = name.strip()
    if not is_policy_name(name) or (eq and not path.strip()):
        raise InputError(Problem(flag, f"cannot read '{text}'",
                                 fix=f"write {flag} NAME=PATH (letters, digits, _ . -), e.g. {flag} better=policies/better.parquet"))
    return name, (Path(path.strip()) if eq else None)


def _rewards(args_rewards: Sequence[str] | None, available: Sequence[str], named=None, source: str = "--reward"):
    from livegate.datasets import InputError, Problem, parse_reward

    named = named or {}
    if args_rewards:
        return [named[r] if r in named else parse_reward(r) for r in args_rewards]
    present = [c for c in DEFAULT_OUTCOMES if c in available]
    if not present:
        raise InputError(Problem(source, "has none of the default reward columns "
                                 f"({', '.join(DEFAULT_OUTCOMES)})", fix="name the reward with --reward COLUMN"))
    return [parse_reward(c) for c in present]


def _protected(*paths) -> frozenset[Path]:
    return frozenset(Path(p).resolve() for p in paths if p is not None)


def _provenance(inputs: dict, seed: int) -> dict:
    from livegate.datasets import __version__
    from livegate.datasets.io import fingerprint

    def entry(path):
        return None if path is None else {"path": str(path), "fingerprint": fingerprint(path)}

    return {"livegate_version": __version__, "seed": seed,
            "inputs": {k: ({n: entry(p) for n, p in v.items()} if isinstance(v, dict) else entry(v))
                       for k, v in inputs.items()}}


def _load_for_evaluation(logs_path, policy_args, rewards_args, q_hat_args, context, estimate_propensities,
                         seed, named_rewards=None, progress=lambda *_: None, actions=None):
    """Load logs, policies and predictions through the datasets layer (one validation for all)."""
    from livegate.datasets import InputError, Problem, compact_policy, load_catalogue, load_logs, load_policy, load_q_hat
    from livegate.datasets.feedback import compact_columns, load_joins_in_background
    from livegate.datasets.loading import column_names, open_dataset

    progress("reading logs")
    available = column_names(open_dataset(logs_path))
    rewards = _rewards(rewards_args, available, named_rewards, source=str(logs_path))
    policies_spec = [_named_path(p, "--policy") for p in policy_args]
    q_hat_spec = [(m if eq else rewards[0].name, p if eq else m) for m, eq, p in
                  (item.partition("=") for item in q_hat_args or [])]
    if any(p is not None for _, p in policies_spec) or q_hat_spec:
        load_joins_in_background()
    names = [n for n, _ in policies_spec]
    if len(set(names)) != len(names):
        raise InputError(Problem("--policy", "a policy name is given twice"))
    compact = [n for n, p in policies_spec if p is None]
    optional = [c for c in [*compact_columns(compact), "q_hat", "a_category", "category_propensity"] if c in available]
    needs_decision = any(p is not None for _, p in policies_spec) or bool(q_hat_args)
    logs = load_logs(logs_path, rewards, need_decision_id=needs_decision, need_propensity=not estimate_propensities,
                     need_context=True, context=_context_columns(context, available, rewards),
                     optional_extra=optional)
    if estimate_propensities:
        from livegate.causal import estimate_propensities as estimate

        progress("estimating propensities")
        logs.propensity = estimate(logs.context.assign(action=logs.action), "action",
                                   list(logs.context.columns), seed=seed, source=str(logs_path))
        logs.propensity_source = "estimated"
    if actions:
        load_catalogue(actions, logs)
    policies, problems = {}, []
    for name, path in policies_spec:
        progress(f"joining policy {name}")
        try:
            policies[name] = load_policy(path, logs, name) if path is not None else compact_policy(logs, name)
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    q_hat = {metric: load_q_hat(Path(path), logs, policies) for metric, path in q_hat_spec}
    return logs, policies, rewards, q_hat, dict(policies_spec)


def _context_columns(context: str | None, available: Sequence[str], rewards) -> list[str] | None:
    """--context patterns through the schema's one selection rule (never a key or an outcome column)."""
    from livegate.datasets import LogSchema

    if not context:
        return None
    patterns = tuple(c.strip() for c in context.split(",") if c.strip())
    outcomes = tuple(c for spec in rewards for c in spec.columns)
    return LogSchema(context=patterns).context_columns(list(available), exclude=outcomes)


# --- commands --------------------------------------------------------------------------------

def cmd_simulate(args) -> int:
    from livegate.datasets.simulator import SimulationConfig, simulate, write_simulation

    started = time.perf_counter()
    cfg = SimulationConfig(n_rounds=args.n_rounds, n_streams=args.n_streams, slate_size=args.slate_size,
                           n_positions=args.n_positions, seed=args.seed)
    _progress(args)("simulating")
    paths = write_simulation(simulate(cfg), args.out)
    _say(args, f"simulated {cfg.n_rounds:,} decisions over {cfg.n_streams} streams (seed {cfg.seed}) "
               f"in {time.perf_counter() - started:.1f}s")
    for key, path in paths.items():
        _say(args, f"  {key:<24} {path}")
    return EXIT_OK


def cmd_convert(args) -> int:
    from livegate.datasets.converters import convert_open_bandit

    path = convert_open_bandit(args.input, args.out, args.item_context)
    _say(args, f"wrote {path}")
    return EXIT_OK


def cmd_validate(args) -> int:
    import numpy as np

    logs, policies, rewards, _, _ = _load_for_evaluation(args.logs, args.policy or [], args.reward, args.q_hat,
                                                         args.context, False, 0, actions=args.actions)
    _say(args, f"OK {args.logs}: {logs.n:,} rows, {len(logs.actions):,} actions, "
               f"rewards {', '.join(r.name for r in rewards)}, {logs.n_context_columns} context columns")
    for name, p in policies.items():
        _say(args, f"OK policy {name} ({p.source}): covers every decision, probabilities sum to 1")
        unlogged = int(np.count_nonzero(p.action_code >= len(logs.actions)))
        if unlogged:
            _say(args, f"  note: {unlogged:,} of its rows name streams no logged row shows (allowed; "
                       f"--actions CATALOGUE rejects streams outside the catalogue)")
    return EXIT_OK


def _reward_ranges(items: Sequence[str] | None) -> dict[str, tuple[float, float]]:
    from livegate.datasets import InputError, Problem

    ranges = {}
    for item in items or []:
        metric, _, bounds = item.partition("=")
        try:
            low, high = (float(b) for b in bounds.split(","))
        except ValueError:
            raise InputError(Problem("--reward-range", f"cannot read '{item}'",
                                     fix="write METRIC=LOW,HIGH, e.g. --reward-range click=0,1")) from None
        if not metric.strip() or not low < high:
            raise InputError(Problem("--reward-range", f"'{item}' needs a metric and LOW < HIGH"))
        ranges[metric.strip()] = (low, high)
    return ranges


def _evaluation_config(args):
    from livegate.ope import EvaluationConfig
    return EvaluationConfig(estimators=tuple(e for e in args.estimators.split(",") if e.strip()), ci=args.ci,
                            alpha=args.alpha, n_boot=args.n_boot, seed=args.seed, baseline=args.baseline,
                            n_folds=args.folds, reward_ranges=_reward_ranges(args.reward_range),
                            max_weight=args.max_weight)


def cmd_evaluate(args) -> int:
    from livegate.datasets.io import prefetch_fingerprints
    from livegate.ope import evaluate
    from livegate.reports.terminal import evaluation_table

    progress = _progress(args)
    config = _evaluation_config(args)
    config.validate()
    logs, policies, rewards, q_hat, paths = _load_for_evaluation(
        args.logs, args.policy, args.reward, args.q_hat, args.context, args.estimate_propensities, args.seed,
        progress=progress, actions=args.actions)
    # hashed while the estimators run on one core (reading the inputs uses both)
    prefetch_fingerprints(args.logs, args.actions, *(p.split("=", 1)[-1] for p in [*args.policy, *(args.q_hat or [])]))
    result = evaluate(logs, policies, rewards, config, q_hat=q_hat, progress=progress)
    result.provenance = _provenance({"logs": Path(args.logs), "policies": {n: p for n, p in paths.items() if p},
                                     "q_hat": {m: Path(p.source) for m, p in q_hat.items()} or None,
                                     "actions": Path(args.actions) if args.actions else None}, args.seed)
    document = result.to_dict()
    protected = _protected(args.logs, args.actions, *[p for p in paths.values() if p],
                           *(q.split("=", 1)[-1] for q in args.q_hat or []))
    _write_outputs(args, [document], protected, json_path=args.out)
    _say(args, evaluation_table(document))
    return EXIT_OK


def _write_outputs(args, documents: list[dict], protected, *, json_path=None, report=None, markdown=None, junit=None):
    from livegate.datasets.io import write_atomic, write_json

    report = report or getattr(args, "report", None)
    if json_path:
        write_json(json_path, documents[0], protected)
        _say(args, f"wrote {json_path}")
    if report:
        from livegate.reports import render_html
        write_atomic(report, render_html(documents), protected)
        _say(args, f"wrote {report}")
    if markdown:
        from livegate.reports import render_markdown
        write_atomic(markdown, render_markdown(documents), protected)
        _say(args, f"wrote {markdown}")
    if junit:
        from livegate.reports import render_junit
        write_atomic(junit, render_junit(documents[0]), protected)
        _say(args, f"wrote {junit}")


def cmd_causal(args) -> int:
    from livegate.causal import CausalConfig, run_causal_check
    from livegate.causal.graph import parse_graph
    from livegate.datasets import InputError, Problem
    from livegate.datasets.io import write_atomic
    from livegate.reports.terminal import causal_summary

    progress = _progress(args)
    split = lambda s: tuple(c.strip() for c in s.split(",") if c.strip()) if s else None  # noqa: E731
    graph = None
    if args.graph:
        path = Path(args.graph)
        if not path.is_file():
            raise InputError(Problem(str(path), "does not exist", fix="check the --graph path"))
        fmt = "dot" if path.suffix.lower() in {".dot", ".gv"} else "gml"
        graph = parse_graph(path.read_text(encoding="utf-8", errors="replace"), fmt)
    config = CausalConfig(treatment=args.treatment, outcome=args.outcome, confounders=split(args.confounders),
                          effect_modifiers=split(args.effect_modifiers), graph=graph, estimator=args.estimator,
                          n_folds=args.folds, alpha=args.alpha, seed=args.seed, segments=split(args.segments),
                          learn_policy=bool(args.policy_out))
    progress("reading logs")
    data = _causal_frame(args.logs, config)
    result = run_causal_check(data, config, progress=progress)
    result.provenance = _provenance({"logs": Path(args.logs), "graph": Path(args.graph) if args.graph else None},
                                    args.seed)
    document = result.to_dict()
    protected = _protected(args.logs, args.graph)
    if args.policy_out and result.policy is not None:
        import io
        buffer = io.BytesIO()
        result.policy.to_parquet(buffer, index=False)
        write_atomic(args.policy_out, buffer.getvalue(), protected)
        _say(args, f"wrote {args.policy_out}")
    _write_outputs(args, [document], protected, json_path=args.out)
    _say(args, causal_summary(document))
    return EXIT_OK


def cmd_report(args) -> int:
    import json

    from livegate.datasets import InputError, Problem

    documents, problems = [], []
    for item in args.results:
        path = Path(item)
        try:
            documents.append(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            problems.append(Problem(str(path), "does not exist"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), f"is not a JSON result document ({exc})",
                                    fix="pass files written by livegate evaluate, causal or gate --out"))
    if problems:
        raise InputError(problems)
    from livegate.reports.documents import check_complete
    for path, doc in zip(args.results, documents):
        check_complete(doc, source=path)
    _write_outputs(args, documents, _protected(*args.results), report=args.out, markdown=args.markdown)
    return EXIT_OK


def cmd_gate(args) -> int:
    from livegate.datasets.gate_config import load_gate_config

    cfg = load_gate_config(args.config)
    return run_gate(args, cfg)


#: the gate.toml key behind each command-line flag that a problem found while gating may name
_GATE_KEYS = {"--estimators": "[evaluation] estimator", "--ci": "[evaluation] ci", "--alpha": "[evaluation] alpha",
              "--n-boot": "[evaluation] n_boot", "--baseline": "[evaluation] baseline",
              "--reward-range": "[reward_range]", "--reward": "[[criterion]] metric", "--policy": "[[candidate]]"}


def run_gate(args, cfg) -> int:
    from livegate.datasets import InputError

    try:
        return _run_gate(args, cfg)
    except InputError as exc:  # the user wrote gate.toml, not command-line flags: name its keys
        from dataclasses import replace
        raise InputError([replace(p, source=str(cfg.source), message=f"{_GATE_KEYS[p.source]}: {p.message}")
                          if p.source in _GATE_KEYS else p for p in exc.problems]) from None


def _run_gate(args, cfg) -> int:
    from livegate.ope import EvaluationConfig, evaluate
    from livegate.ope.gate import decide
    from livegate.reports.terminal import gate_summary

    progress = _progress(args)
    config = EvaluationConfig(estimators=(cfg.estimator,), ci=cfg.ci, alpha=cfg.alpha, n_boot=cfg.n_boot,
                              seed=cfg.seed, baseline=cfg.baseline, reward_ranges=cfg.reward_ranges,
                              max_weight=cfg.max_weight)
    config.validate()  # before reading any data
    metrics = list(dict.fromkeys(c.metric for c in cfg.criteria))
    policy_args = [f"{c.name}={c.policy}" if c.policy else c.name for c in cfg.candidates]
    logs, policies, rewards, q_hat, paths = _load_for_evaluation(
        cfg.logs, policy_args, metrics, [str(cfg.q_hat)] if cfg.q_hat else None,
        ",".join(cfg.context) if cfg.context else None, False, cfg.seed, named_rewards=cfg.rewards,
        progress=progress, actions=cfg.actions)
    evaluation = evaluate(logs, policies, rewards, config, q_hat=q_hat, progress=progress)
    inputs = {"config": cfg.source, "logs": cfg.logs, "policies": {n: p for n, p in paths.items() if p},
              "q_hat": cfg.q_hat, "actions": cfg.actions}
    evaluation.provenance = _provenance({k: v for k, v in inputs.items() if k != "config"}, cfg.seed)
    causal_doc = None
    if cfg.causal is not None:
        causal_doc = _run_causal_requirement(cfg, progress)
        inputs["causal_logs"] = cfg.causal.logs
    result = decide(evaluation, cfg, causal_doc)
    result.evaluation = evaluation.to_dict()
    result.causal_result = causal_doc
    result.provenance = _provenance(inputs, cfg.seed)
    document = result.to_dict()
    out = {k: getattr(args, k, None) or cfg.output.get(k) for k in ("out", "report", "markdown", "junit")}
    _write_outputs(args, [document], _protected(*cfg.inputs), json_path=out["out"], report=out["report"],
                   markdown=out["markdown"], junit=out["junit"])
    _say(args, gate_summary(document))
    return result.exit_code


def _causal_frame(path, config):
    """The causal check's columns: treatment, outcome, the named confounders / modifiers / graph
    nodes, the context columns (x_*) the default graph picks from, and the keys. Other outcomes are
    not read: they must never be adjusted for."""
    from livegate.datasets import LogSchema
    from livegate.datasets.loading import column_names, open_dataset, read_table

    dataset = open_dataset(path)
    schema = LogSchema()
    named = [*(config.confounders or ()), *(config.effect_modifiers or ()), *(config.segments or ())]
    if config.graph is not None:
        named += list(config.graph.nodes)
    context = schema.context_columns(column_names(dataset), exclude=(config.treatment, config.outcome))
    keys = [schema.decision_id, schema.action, schema.propensity]
    return read_table(path, [config.treatment, config.outcome, *named], optional=[*context, *keys],
                      dataset=dataset).to_pandas()


def _run_causal_requirement(cfg, progress):
    from livegate.causal import CausalConfig, run_causal_check

    req = cfg.causal
    config = CausalConfig(treatment=req.treatment, outcome=req.outcome, confounders=req.confounders,
                          effect_modifiers=req.effect_modifiers, estimator=req.estimator, seed=cfg.seed,
                          learn_policy=False)
    data = _causal_frame(req.logs, config)
    progress("causal check")
    result = run_causal_check(data, config, progress=progress)
    result.provenance = _provenance({"logs": req.logs}, cfg.seed)
    return result.to_dict()


def cmd_demo(args) -> int:
    from livegate.datasets.demo import write_demo_inputs
    from livegate.datasets.gate_config import load_gate_config

    out = Path(args.out)
    progress = _progress(args)
    progress("simulating live-stream logs")
    config_path = write_demo_inputs(out, seed=args.seed, n_rounds=args.n_rounds)
    args.report = args.report or str(out / "report.html")
    args.out = str(out / "gate.json")
    args.markdown = str(out / "summary.md")
    args.junit = str(out / "junit.xml")
    code = run_gate(args, load_gate_config(config_path))
    _say(args, f"report: {Path(args.report).resolve()}")
    return EXIT_OK if code in (EXIT_OK, EXIT_FAIL, EXIT_INCONCLUSIVE) else code


# --- parser ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from livegate.datasets import __version__

    parser = _Parser(prog="livegate", formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Offline policy evaluation and causal analysis for live-stream recommendation.",
                     epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values()) +
                            "\n\nexit codes: 0 ok/ship, 1 gate failed, 2 invalid input, 3 inconclusive, 4 internal error")
    parser.add_argument("--version", action="version", version=f"livegate {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_: str):
        p = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output")
        return p

    p = command("simulate", "Write simulated live-stream logs, candidate policies and their exact values.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n-rounds", type=int, default=50_000)
    p.add_argument("--n-streams", type=int, default=200)
    p.add_argument("--slate-size", type=int, default=8)
    p.add_argument("--n-positions", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate)

    def data_args(p, policy_required: bool):
        p.add_argument("--logs", required=True, help="Parquet file or directory of logged feedback")
        p.add_argument("--policy", action="append", required=policy_required, metavar="NAME=PATH",
                       help="candidate policy (long-format Parquet); NAME alone uses the logs' pi_NAME column")
        p.add_argument("--reward", action="append", metavar="SPEC",
                       help="reward column or weighted sum, e.g. 'engagement=watch_seconds + 50*gift_value' "
                            f"(repeatable; default: those of {', '.join(DEFAULT_OUTCOMES)} present)")
        p.add_argument("--q-hat", action="append", metavar="[METRIC=]PATH", help="reward-model predictions")
        p.add_argument("--context", help="context columns, comma-separated, globs allowed (default: x_*)")
        p.add_argument("--actions", metavar="PATH",
                       help="action catalogue (Parquet with an 'action' column): policy actions outside it and "
                            "the logs are rejected")

    p = command("validate", "Check logs, policies and predictions against the data contract; list every problem.")
    data_args(p, policy_required=False)
    p.set_defaults(func=cmd_validate)

    p = command("evaluate", "Estimate candidate policies' values with intervals, diagnostics and the paired "
                            "difference to the baseline.")
    data_args(p, policy_required=True)
    p.add_argument("--estimators", default="ips,snips,dr", help="comma-separated, e.g. ips:clip=50,snips,dr,switch-dr:tau=10")
    p.add_argument("--ci", default="normal", help="normal | bootstrap | bernstein")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--folds", type=int, default=3, help="cross-fitting folds of the reward model")
    p.add_argument("--reward-range", action="append", metavar="METRIC=LOW,HIGH",
                   help="range every reward can take, known a priori (makes --ci bernstein a guarantee)")
    p.add_argument("--max-weight", type=float,
                   help="bound on pi_e/pi_0 known by design, e.g. 1/(epsilon/K) for epsilon-greedy logging; with "
                        "--reward-range it makes --ci bernstein a guarantee")
    p.add_argument("--baseline", default="logging")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--estimate-propensities", action="store_true",
                   help="the logs have no propensities: estimate them from the context (marked in the results)")
    p.add_argument("--out", help="result JSON (livegate.evaluation/1)")
    p.add_argument("--report", help="HTML report")
    p.set_defaults(func=cmd_evaluate)

    p = command("causal", "Estimate the recommendation's causal effect (DoWhy + EconML) with refutations and "
                          "effects by segment.")
    p.add_argument("--logs", required=True)
    p.add_argument("--treatment", required=True)
    p.add_argument("--outcome", required=True)
    p.add_argument("--confounders", help="comma-separated (default: the live-stream graph's, as present)")
    p.add_argument("--effect-modifiers", help="comma-separated")
    p.add_argument("--graph", help="causal graph file (.gml or .dot) replacing the default")
    p.add_argument("--segments", help="comma-separated columns to report effects by")
    p.add_argument("--estimator", default="linear_dml", help="linear_dml | causal_forest | dr_learner")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy-out", help="write the learned 'recommend where it helps' policy (long-format Parquet)")
    p.add_argument("--out", help="result JSON (livegate.causal/1)")
    p.add_argument("--report", help="HTML report")
    p.set_defaults(func=cmd_causal)

    p = command("report", "Render result documents (evaluation, causal, gate) into one self-contained HTML report.")
    p.add_argument("results", nargs="+", metavar="RESULT.json")
    p.add_argument("--out", required=True, help="HTML file")
    p.add_argument("--markdown", help="also write a Markdown summary")
    p.set_defaults(func=cmd_report)

    p = command("gate", "Decide whether candidates may ship (exit 0 pass, 1 fail, 3 inconclusive).")
    p.add_argument("--config", required=True, help="gate.toml")
    p.add_argument("--out", help="gate result JSON (livegate.gate/1)")
    p.add_argument("--report", help="HTML report")
    p.add_argument("--markdown", help="Markdown summary")
    p.add_argument("--junit", help="JUnit XML")
    p.set_defaults(func=cmd_gate)

    p = command("convert", "Convert a public bandit dataset (Open Bandit Dataset CSV) to livegate's Parquet logs.")
    p.add_argument("--format", required=True, choices=["open-bandit"])
    p.add_argument("--input", required=True, help="the dataset's CSV file")
    p.add_argument("--item-context", help="item_context.csv (stream features, written as a_* columns)")
    p.add_argument("--out", required=True, help="logs Parquet file")
    p.set_defaults(func=cmd_convert)

    p = command("demo", "Simulate, evaluate, run the causal check, gate and write the report, in one go.")
    p.add_argument("--out", default="livegate-demo", help="output directory (default: livegate-demo)")
    p.add_argument("--n-rounds", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        from livegate.datasets import InputError
    except Exception:  # pragma: no cover - a broken install is a bug
        traceback.print_exc()
        return EXIT_BUG
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version have printed their text: a return code, not an exit
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_INPUT
        return args.func(args)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INPUT
    except InputError as exc:
        if debug:
            traceback.print_exc()
        problems = exc.problems
        print(f"livegate: invalid input ({len(problems)} problem{'s' if len(problems) != 1 else ''}):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("livegate: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `livegate ... | head`: the reader left. 141 as for SIGPIPE: never a gate's 0
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, said plainly
        if debug:
            traceback.print_exc()
        print(f"livegate: internal error: {type(exc).__name__}: {exc}. This is a bug; "
              "rerun with --debug for the traceback.", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
