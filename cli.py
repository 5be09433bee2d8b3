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
    "learn": "livegate learn --logs sim/logs.parquet --reward watch_seconds --method dr --out learned.parquet \\\n"
             "      --heldout-out heldout.parquet --result learn.json",
    "track": "livegate track --events sim/events.parquet --out logs/ --window click=30s,watch=4h,gift=4h",
    "monitor": "livegate monitor --logs logs/ --policy candidate=sim/policies/candidate.parquet --reward click \\\n"
               "      --every 1d --out monitor.json --report monitor.html",
    "replay": "livegate replay --logs logs.parquet --reward click --algorithms eps-greedy:0.1,ucb1,ts,linucb:alpha=1 \\\n"
              "      --batch-size 100 --out replay.json --report replay.html",
    "convert": "livegate convert --format open-bandit --input obd/random/all/all.csv \\\n"
               "      --item-context obd/random/all/item_context.csv --out obd-logs.parquet",
}


class UsageError(Exception):
    """Bad command line: exit 2 with one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage and exits itself)
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _progress(args) -> Callable[..., None]:
    """Progress on stderr when it is a terminal and --quiet is off; silent otherwise.

    `step(message)` shows the message and the time elapsed; `step(message, done, total)` (the reward
    model's folds, in units of work; the causal check's steps) shows a bar with the share done, the
    time elapsed and the time left at the average rate so far (smoothing=0: the reward model's units
    arrive in uneven bursts, a fit's at its end, which a moving average would overreact to). A thread
    redraws the line every second, so that the clocks run during a long fit that reports nothing; it
    stops once the returned function is gone."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return lambda *_: None
    import threading
    import weakref

    from tqdm import tqdm

    formats = {False: "{desc} [{elapsed}]", True: "{desc} {percentage:3.0f}%|{bar:20}| [{elapsed}<{remaining}]"}

    class Line:
        def __init__(self):
            self.bar, self.counted, self.lock = None, False, threading.Lock()

        def __call__(self, message: str, *counts) -> None:
            counted = len(counts) >= 2 and bool(counts[1])
            with self.lock:
                if self.bar is None or counted != self.counted or (counted and self.bar.total != counts[1]):
                    if self.bar is not None:
                        self.bar.close()
                    self.bar = tqdm(total=counts[1] if counted else None, bar_format=formats[counted],
                                    file=sys.stderr, leave=False, smoothing=0, dynamic_ncols=True)
                    self.counted = counted
                self.bar.update(max(0, counts[0] - self.bar.n) if counted else 1)
                if self.bar.desc != f"livegate: {message}":  # a new message shows at once; counts as tqdm paces them
                    self.bar.set_description_str(f"livegate: {message}")

        def redraw(self) -> None:
            with self.lock:
                if self.bar is not None:
                    self.bar.refresh()

    def tick(ref: weakref.ref, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            line = ref()
            if line is None:
                return
            line.redraw()
            del line

    line = Line()
    threading.Thread(target=tick, args=(weakref.ref(line), threading.Event()), daemon=True,
                     name="livegate-progress").start()
    return line


def _say(args, text: str = "") -> None:
    print(text, flush=True)


# --- commands: parse, call the Python API (livegate.api), print, return the exit code ----------

def _split(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _policies(items: Sequence[str] | None) -> dict[str, str | None]:
    from livegate.api import parse_named
    from livegate.datasets import InputError, Problem

    policies: dict[str, str | None] = {}
    for item in items or []:
        name, path = parse_named(item, "--policy")
        if name in policies:
            raise InputError(Problem("--policy", f"the policy name '{name}' is given twice"))
        policies[name] = path
    return policies


def _q_hat(items: Sequence[str] | None):
    """[METRIC=]PATH items: one bare path is the first reward's predictions."""
    if not items:
        return None
    pairs = [item.partition("=") for item in items]
    if len(items) == 1 and not pairs[0][1]:
        return items[0]
    return {metric.strip(): path.strip() for metric, _, path in pairs}


def _columns(args):
    from livegate.datasets.schema import parse_column_mapping
    return parse_column_mapping(args.column) if args.column else None


def _data_options(args) -> dict:
    return {"context": args.context, "columns": _columns(args), "actions": args.actions}


def _inputs_of(args) -> list:
    """Every input file the command reads: outputs must never overwrite one."""
    policies = [p.split("=", 1)[1] for p in (getattr(args, "policy", None) or []) if "=" in p]
    q_hat = [q.split("=", 1)[-1] for q in (getattr(args, "q_hat", None) or [])]
    return [args.logs, getattr(args, "actions", None), getattr(args, "graph", None), *policies, *q_hat]


def _write(args, documents: list[dict], protected, **paths) -> None:
    from livegate.api import write_outputs
    for path in write_outputs(documents, protected=protected, **paths):
        _say(args, f"wrote {path}")


def _check_outputs(protected=(), directory: str | None = None, **paths) -> None:
    """Output paths checked before any work (exit 2 naming the option): files `paths` by option name
    without dashes, and the output `directory` of --out (simulate, demo)."""
    from livegate.api import check_outputs
    from livegate.datasets import InputError
    from livegate.datasets.validation import check_output_path

    if directory is not None:
        problems = check_output_path(directory, "--out", directory=True)
        if problems:
            raise InputError(problems)
    check_outputs(protected=protected, **paths)


def cmd_simulate(args) -> int:
    _check_outputs(directory=args.out)
    started = time.perf_counter()
    if args.events:
        from livegate.datasets.event_simulator import EventSimulationConfig, simulate_events, write_event_simulation
        cfg = EventSimulationConfig(n_impressions=args.n_rounds, seed=args.seed,
                                    degrade_after_day=args.degrade_after_day or None)
        _progress(args)("simulating raw viewer events")
        paths = write_event_simulation(simulate_events(cfg), args.out)
        what = f"{cfg.n_impressions:,} impressions and their raw events over {cfg.n_days} days (seed {cfg.seed})"
    elif args.sessions:
        from livegate.datasets.session_simulator import (SessionSimulationConfig, simulate_sessions,
                                                         write_session_simulation)
        cfg = SessionSimulationConfig(n_sessions=args.n_sessions, seed=args.seed, gamma=args.gamma)
        _progress(args)("simulating sessions and training the Q-learning agent")
        paths = write_session_simulation(simulate_sessions(cfg), args.out)
        what = f"{cfg.n_sessions:,} viewer sessions (seed {cfg.seed}, gamma {cfg.gamma:g})"
    else:
        from livegate.datasets.simulator import SimulationConfig, simulate, write_simulation
        cfg = SimulationConfig(n_rounds=args.n_rounds, n_streams=args.n_streams, slate_size=args.slate_size,
                               n_positions=args.n_positions, seed=args.seed)
        _progress(args)("simulating")
        paths = write_simulation(simulate(cfg), args.out)
        what = f"{cfg.n_rounds:,} decisions over {cfg.n_streams} streams (seed {cfg.seed})"
    _say(args, f"simulated {what} in {time.perf_counter() - started:.1f}s")
    for key, path in paths.items():
        _say(args, f"  {key:<24} {path}")
    return EXIT_OK


def cmd_track(args) -> int:
    from livegate.api import track

    _check_outputs([args.events], directory=args.out)
    result = track(args.events, args.out, windows=args.window, lateness=args.lateness,
                   missing_stop_cap=args.missing_stop_cap, session_gap=args.session_gap,
                   memory_limit=args.memory_limit, threads=args.threads)
    r = result.report
    _say(args, f"tracked {r['events_in']:,} events into {r['rows_out']:,} rows over {len(r['days'])} days: "
               f"{r['duplicates']['total']:,} duplicates, {r['unmatched']['total']:,} unmatched, "
               f"{r['late']['total']:,} late" + ("" if r["late"]["checked"] else " (no received_at: not checked)")
               + f", {r['outside_window']['total']:,} outside their window")
    if r["unknown_types"]:
        _say(args, "  ignored event types: " + ", ".join(f"{k} ({v:,})" for k, v in r["unknown_types"].items()))
    _say(args, f"wrote {Path(args.out) / 'day=*'} and {Path(args.out) / '_tracking.json'}")
    return EXIT_OK


def cmd_monitor(args) -> int:
    from livegate.api import monitor, write_monitor_outputs
    from livegate.reports.monitor import monitor_summary

    from livegate.datasets import InputError, Problem

    _check_outputs(_inputs_of(args), out=args.out, report=args.report)
    if args.q_hat or args.sessions:  # the monitored terms are per-row IPS differences
        raise InputError(Problem("--q-hat" if args.q_hat else "--sessions", "is not supported by monitor",
                                 fix="leave it out: monitor follows the per-row IPS difference per decision"))
    margins = {}
    for item in args.margin or []:
        metric, _, value = item.partition("=")
        try:
            margins[metric.strip()] = float(value)
        except ValueError:
            raise InputError(Problem("--margin", f"cannot read '{item}'",
                                     fix="write METRIC=LOSS, e.g. click=0.002")) from None
    result = monitor(args.logs, _policies(args.policy), args.reward, every=args.every, alpha=args.alpha,
                     margins=margins, baseline=args.baseline, min_rows=args.min_rows, context=args.context,
                     columns=_columns(args), actions=args.actions, seed=args.seed, progress=_progress(args))
    document = result.to_dict()
    for path in write_monitor_outputs(document, out=args.out, report=args.report, protected=_inputs_of(args)):
        _say(args, f"wrote {path}")
    _say(args, monitor_summary(document))
    return result.exit_code


def cmd_convert(args) -> int:
    from livegate.datasets.converters import convert_open_bandit

    path = convert_open_bandit(args.input, args.out, args.item_context)
    _say(args, f"wrote {path}")
    return EXIT_OK


def cmd_validate(args) -> int:
    from livegate.api import load_inputs

    inputs = load_inputs(args.logs, _policies(args.policy), args.reward, q_hat=_q_hat(args.q_hat),
                         sessions=args.sessions, **_data_options(args))
    logs = inputs.logs
    _say(args, f"OK {args.logs}: {logs.n:,} rows, {len(logs.actions):,} actions, "
               f"rewards {', '.join(r.name for r in inputs.rewards)}, {logs.n_context_columns} context columns")
    if logs.sessions is not None:
        _say(args, f"OK sessions: {logs.sessions.n_sessions:,}, steps 0, 1, 2, ... in order "
                   f"(mean length {logs.n / logs.sessions.n_sessions:.2f}, longest {logs.sessions.horizon})")
    for name, policy in inputs.policies.items():
        _say(args, f"OK policy {name} ({policy.source}): covers every decision, probabilities sum to 1")
        unlogged = policy.unlogged_probability(len(logs.actions))
        if unlogged:
            _say(args, f"  note: {unlogged / logs.n:.2%} of its probability is on streams no logged row shows "
                       f"(allowed; "
                       f"--actions CATALOGUE rejects streams outside the catalogue)")
    for warning in logs.warnings:
        _say(args, f"warning: {warning}")
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from livegate.api import evaluate, parse_reward_ranges
    from livegate.datasets.io import prefetch_fingerprints
    from livegate.reports.terminal import evaluation_table

    _check_outputs(_inputs_of(args), out=args.out, report=args.report)
    # hashed while the estimators run on one core (reading the inputs uses both)
    prefetch_fingerprints(*_inputs_of(args))
    result = evaluate(args.logs, _policies(args.policy), args.reward, args.estimators, q_hat=_q_hat(args.q_hat),
                      ci=args.ci, alpha=args.alpha, n_boot=args.n_boot, seed=args.seed, baseline=args.baseline,
                      folds=args.folds, reward_ranges=parse_reward_ranges(args.reward_range),
                      max_weight=args.max_weight, estimate_propensities=args.estimate_propensities,
                      sessions=args.sessions, gamma=args.gamma, max_memory=args.max_memory, scheduler=args.scheduler,
                      progress=_progress(args), **_data_options(args))
    document = result.to_dict()
    _write(args, [document], _inputs_of(args), out=args.out, report=args.report)
    _say(args, evaluation_table(document))
    return EXIT_OK


def cmd_causal(args) -> int:
    from livegate.api import causal_check, write_policy
    from livegate.reports.terminal import causal_summary

    _check_outputs(_inputs_of(args), out=args.out, report=args.report, policy_out=args.policy_out)
    result = causal_check(args.logs, args.treatment, args.outcome, confounders=_split(args.confounders),
                          effect_modifiers=_split(args.effect_modifiers), graph=args.graph,
                          estimator=args.estimator, folds=args.folds, alpha=args.alpha, seed=args.seed,
                          segments=_split(args.segments), propensity=args.propensity,
                          learn_policy=bool(args.policy_out), columns=_columns(args),
                          estimand=args.estimand, trim=args.trim, sample_rows=args.sample_rows,
                          progress=_progress(args))
    document = result.to_dict()
    if args.policy_out and result.policy is not None:
        _say(args, f"wrote {write_policy(result.policy, args.policy_out, protected=_inputs_of(args))}")
    _write(args, [document], _inputs_of(args), out=args.out, report=args.report)
    _say(args, causal_summary(document))
    return EXIT_OK


def cmd_report(args) -> int:
    from livegate.api import read_documents

    _check_outputs(args.results, out=args.out, markdown=args.markdown)
    documents = read_documents(args.results)
    _write(args, documents, args.results, report=args.out, markdown=args.markdown)
    return EXIT_OK


def cmd_gate(args) -> int:
    return _gate(args, args.config)


def _gate(args, config_path, keep_document: bool = False):
    from livegate.api import run_gate
    from livegate.datasets.gate_config import load_gate_config
    from livegate.reports.terminal import gate_summary

    cfg = load_gate_config(config_path)
    cfg = _engine_options(args, cfg)
    out = {k: getattr(args, k, None) or cfg.output.get(k) for k in ("out", "report", "markdown", "junit")}
    _check_outputs(cfg.inputs, **out)
    decision = run_gate(cfg, progress=_progress(args))
    document = decision.to_dict()
    _write(args, [document], cfg.inputs, **out)
    _say(args, gate_summary(document))
    return (decision.exit_code, document) if keep_document else decision.exit_code


def _engine_options(args, cfg):
    """--max-memory and --scheduler override gate.toml's [engine] keys."""
    from dataclasses import replace

    from livegate.datasets.partitions import parse_memory

    changes = {}
    if getattr(args, "max_memory", None) is not None:
        changes["max_memory"] = parse_memory(args.max_memory)
    if getattr(args, "scheduler", None) is not None:
        changes["scheduler"] = args.scheduler
    return replace(cfg, **changes) if changes else cfg


def cmd_demo(args) -> int:
    from livegate.datasets.demo import learn_gate_path, session_gate_path, write_demo_inputs

    _check_outputs(directory=args.out, report=args.report)
    out = Path(args.out)
    _progress(args)("simulating live-stream logs and viewer sessions")
    config_path = write_demo_inputs(out, seed=args.seed, n_rounds=args.n_rounds, n_sessions=args.n_sessions,
                                    learn=not args.no_learn)
    report = args.report or str(out / "report.html")
    args.report = None  # written once below, with the session chapter
    args.out, args.markdown, args.junit = str(out / "gate.json"), str(out / "summary.md"), str(out / "junit.xml")
    code, gate_document = _gate(args, config_path, keep_document=True)
    documents = [gate_document]
    if not args.no_learn:
        documents += _learn_chapter(args, out, learn_gate_path(out))
    if args.n_sessions:
        documents += _session_chapter(args, session_gate_path(out))
    _write(args, documents, [config_path], report=report)
    _say(args, f"report: {Path(report).resolve()}")
    return EXIT_OK if code in (EXIT_OK, EXIT_FAIL, EXIT_INCONCLUSIVE) else code


def _learn_chapter(args, out: Path, config_path: Path) -> list[dict]:
    """The demo's learning chapter: from the logs, `learn` a candidate (dr, choosing among each decision's
    slate, candidates.parquet) on a seeded 70% of the decisions; its held-out estimate; the gate on the
    held-out 30% (learn/gate.toml); and its exact value from the simulator. Returns the learn and gate
    documents for the report."""
    import io

    import pyarrow.parquet as pq

    from livegate.api import _guard, learn, run_gate
    from livegate.datasets.demo import LEARN_METHOD, LEARN_REWARD, LEARN_TEST_SHARE, learned_truth
    from livegate.datasets.gate_config import load_gate_config
    from livegate.datasets.io import dumps_json, write_all_atomic
    from livegate.reports.terminal import gate_summary

    folder = config_path.parent
    logs, candidates = out / "logs.parquet", out / "candidates.parquet"
    _say(args, "\nlearning chapter: a candidate learned from the logs, evaluated and gated on decisions it never saw")
    result = learn(logs, LEARN_REWARD, LEARN_METHOD, candidates=candidates, test_share=LEARN_TEST_SHARE,
                   estimators=["snips"], seed=args.seed, progress=_progress(args))
    doc = result.to_dict()

    def parquet(table) -> bytes:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        return buffer.getvalue()

    items = [(folder / "learned.parquet", parquet(result.policy_table()), "learned policy"),
             (folder / "heldout.parquet", parquet(result.heldout_logs), "held-out logs"),
             (folder / "learn.json", dumps_json(doc), "learn result")]
    for path in write_all_atomic(items, _guard([logs, candidates])):
        _say(args, f"wrote {path}")
    split = doc["split"]
    _say(args, f"  learned {result.name} ({doc['method']}, epsilon {doc['epsilon']:g}) on the slates of "
               f"{split['train']['decisions']:,} decisions; held out {split['heldout']['decisions']:,}")
    heldout = doc["heldout_evaluation"]["policies"][result.name]
    value, diff = heldout["estimates"]["snips"], heldout["vs_baseline"]["snips"]
    from livegate.reports.formatting import num, signed

    def bounds(entry: dict) -> str:  # an open end (robust intervals) prints as a dash
        return f"[{num(entry['ci_low'])}, {num(entry['ci_high'])}]"
    _say(args, f"  held-out estimate (snips): {value['value']:.1f} s watch time per decision {bounds(value)}, "
               f"{signed(diff['difference'])} s {bounds(diff)} ({diff['relative']:+.1%}) vs logging")
    in_sample = doc["in_sample_evaluation"]["policies"][result.name]["estimates"]["snips"]
    _say(args, f"  in-sample estimate (its own training decisions; optimistic): {in_sample['value']:.1f} s")
    cfg = load_gate_config(config_path)
    decision = run_gate(cfg, progress=_progress(args))
    document = decision.to_dict()
    _write(args, [document], cfg.inputs, out=str(folder / "gate.json"), markdown=str(folder / "summary.md"),
           junit=str(folder / "junit.xml"))
    _say(args, gate_summary(document))
    truth = learned_truth(result.policy, result.heldout_logs.column("decision_id").to_numpy(), args.n_rounds, args.seed)
    for part, label in (("heldout", "on the held-out decisions"), ("all", "on all decisions")):
        t = truth[part]
        _say(args, f"  true value {label} (the simulator's expected rewards): learned {t['policy']:.1f} s, "
                   f"logging {t['logging']:.1f} s ({t['difference']:+.1f} s, {t['relative']:+.1%})")
    return [doc, document]


def _session_chapter(args, config_path: Path) -> list[dict]:
    """The demo's session chapter: the session logs evaluated per decision (the myopic trap), then
    gated per session. Returns both documents for the report."""
    from livegate.api import evaluate, run_gate
    from livegate.datasets.gate_config import load_gate_config
    from livegate.reports.terminal import gate_summary

    cfg = load_gate_config(config_path)
    folder = config_path.parent
    _say(args, "\nsession chapter: the same candidates per decision, then per session")
    per_decision = evaluate(cfg.logs, {c.name: c.policy for c in cfg.candidates}, "watch_seconds", "snips",
                            seed=args.seed, progress=_progress(args)).to_dict()
    for c in cfg.candidates:
        diff = per_decision["policies"][c.name]["vs_baseline"]["snips"]
        _say(args, f"  per decision, {c.name}: {diff['relative']:+.1%} watch time per decision "
                   f"(snips {diff['difference']:+.1f} s [{diff['ci_low']:.1f}, {diff['ci_high']:.1f}])")
    _write(args, [per_decision], cfg.inputs, out=str(folder / "per_decision.json"))
    decision = run_gate(cfg, progress=_progress(args))
    document = decision.to_dict()
    _write(args, [document], cfg.inputs, out=str(folder / "gate.json"), markdown=str(folder / "summary.md"),
           junit=str(folder / "junit.xml"))
    _say(args, gate_summary(document))
    return [per_decision, document]


def cmd_learn(args) -> int:
    from livegate.api import learn
    from livegate.datasets.io import dumps_json, write_all_atomic
    from livegate.reports.terminal import evaluation_table

    protected = [args.logs, args.candidates, args.for_logs, args.for_candidates]
    _check_outputs(protected, out=args.out, result=args.result, report=args.report, heldout_out=args.heldout_out)
    result = learn(args.logs, args.reward, args.method, epsilon=args.epsilon, top_k=args.top_k,
                   candidates=args.candidates, for_logs=args.for_logs, for_candidates=args.for_candidates,
                   split=args.split, test_share=args.test_share,
                   seed=args.seed, estimators=args.estimators, folds=args.folds, prefilter=args.prefilter,
                   gamma=args.gamma,
                   name=args.name, columns=_columns(args), context=args.context, progress=_progress(args))
    import io

    import pyarrow.parquet as pq

    def parquet(table) -> bytes:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        return buffer.getvalue()

    items = [(args.out, parquet(result.policy_table()), "--out")]
    if args.heldout_out:
        items.append((args.heldout_out, parquet(result.heldout_logs), "--heldout-out"))
    if args.result:
        items.append((args.result, dumps_json(result.to_dict()), "--result"))
    if args.report:
        from livegate.reports import render_html
        items.append((args.report, render_html([result.to_dict()["heldout_evaluation"]]), "--report"))
    from livegate.api import _guard
    for path in write_all_atomic(items, _guard(protected)):
        _say(args, f"wrote {path}")
    doc = result.to_dict()
    split = doc["split"]
    unit = "sessions" if doc["level"] == "session" else "decisions"
    _say(args, f"learned {args.name} ({doc['method']}, reward {doc['reward']}, epsilon {doc['epsilon']:g}"
               f"{', top ' + str(doc['top_k']) if doc['top_k'] else ''}) on {split['train'][unit]:,} {unit} "
               f"({split['rule']} split, seed {args.seed}); held out {split['heldout'][unit]:,}")
    _say(args, "\nHELD-OUT evaluation (decisions the policy never saw):")
    _say(args, evaluation_table(doc["heldout_evaluation"]))
    in_sample = doc["in_sample_evaluation"]["policies"][args.name]["estimates"]
    _say(args, f"in-sample {doc['reward']} (the training decisions; optimistic, for comparison only): "
               + ", ".join(f"{e} {v['value']:.4g}" for e, v in in_sample.items()))
    for warning in doc["warnings"]:
        _say(args, f"warning: {warning}")
    return EXIT_OK


def cmd_replay(args) -> int:
    from livegate.api import _guard, replay
    from livegate.datasets.io import dumps_json, write_all_atomic
    from livegate.reports.replay import render_replay_html, replay_summary

    _check_outputs([args.logs, args.candidates], out=args.out, report=args.report)
    document = replay(args.logs, args.reward, args.algorithms, batch_size=args.batch_size, runs=args.runs,
                      periods=args.periods, bootstrap=not args.no_bootstrap, seed=args.seed, alpha=args.alpha,
                      candidates=args.candidates,
                      context=args.context, columns=_columns(args), progress=_progress(args))
    items = [(path, render(document), option) for path, render, option in
             ((args.out, dumps_json, "--out"), (args.report, render_replay_html, "--report")) if path]
    for path in write_all_atomic(items, _guard([args.logs, args.candidates])) if items else []:
        _say(args, f"wrote {path}")
    _say(args, replay_summary(document))
    return EXIT_OK


# --- parser ------------------------------------------------------------------------------------

#: The largest --seed: datasets.gate_config.MAX_SEED (a test keeps them equal), written out here so that
#: building the parser imports nothing. scikit-learn takes seeds below 2**32 and is seeded with seed + fold.
_MAX_SEED = 2**31 - 1


def _seed(text: str) -> int:
    """argparse type of --seed: an integer from 0 to _MAX_SEED."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= _MAX_SEED:
        raise argparse.ArgumentTypeError(f"'{text}' is not a seed: use an integer from 0 to {_MAX_SEED:,}")
    return value


#: livegate.causal.estimands.ESTIMANDS, written out so that building the parser imports nothing (a test keeps
#: them equal).
_ESTIMANDS = ("ate", "att", "atc", "ato")


def _trim(text: str):
    """argparse type of causal --trim: a number in (0, 0.5), or "crump"."""
    if text.strip().lower() == "crump":
        return "crump"
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"'{text}' is not a trimming threshold: use a number in (0, 0.5), e.g. "
                                         "0.01, or crump")
    return value


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Examples keep their line breaks; an option with a default value says it (one that has none, or
    whose help explains it, is left as written)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _command(sub, name: str, help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {EXAMPLES[name]}",
                       formatter_class=_Formatter)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output")
    return p


def _logs_options(p, policy_required: bool) -> None:
    """Options of every command that reads logs, policies and predictions."""
    p.add_argument("--logs", required=True, help="Parquet file or directory (hive partitions allowed) of logged feedback")
    p.add_argument("--policy", action="append", required=policy_required, metavar="NAME=PATH",
                   help="candidate policy (long-format Parquet: decision_id, action, prob[, position]; without "
                        "decision_id it applies to every decision); NAME alone uses the logs' pi_NAME column "
                        "(repeatable)")
    from livegate.api import DEFAULT_OUTCOMES

    p.add_argument("--reward", action="append", metavar="SPEC",
                   help="reward column or weighted sum, e.g. 'engagement=watch_seconds + 50*gift_value' "
                        f"(repeatable; default: those of {', '.join(DEFAULT_OUTCOMES)} present)")
    p.add_argument("--q-hat", action="append", metavar="[METRIC=]PATH",
                   help="reward-model predictions (decision_id, action, q_hat); default: a cross-fitted model")
    _column_option(p)
    p.add_argument("--context", help="context columns, comma-separated, globs allowed (default: x_*)")
    p.add_argument("--actions", metavar="PATH",
                   help="action catalogue (Parquet with an 'action' column): policy actions outside it and the "
                        "logs are rejected")
    p.add_argument("--sessions", action="store_true",
                   help="the logs are viewer sessions (session_id, step): validate them, and evaluate the expected "
                        "discounted return per session with each session one sample")


def _column_option(p) -> None:
    p.add_argument("--column", action="append", metavar="ROLE=NAME",
                   help="the logs' own column for a role (repeatable), e.g. --column action=stream_id; roles: "
                        "decision_id, action, propensity, position, timestamp, user_id, session_id, step")


def _add_simulate(sub) -> None:
    p = _command(sub, "simulate", "Write simulated live-stream logs, candidate policies and their exact values, and each "
                                  "decision's slate (the streams on air it chose from) as candidates.parquet.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n-rounds", type=int, default=50_000, help="logged decisions")
    p.add_argument("--n-streams", type=int, default=200, help="live streams (actions)")
    p.add_argument("--slate-size", type=int, default=8, help="streams on air per decision")
    p.add_argument("--n-positions", type=int, default=1, help="feed slots per decision")
    p.add_argument("--sessions", action="store_true",
                   help="simulate viewer sessions instead (fatigue, boredom, leaving), with myopic, long-term, "
                        "uniform and Q-learning candidates and each one's exact value per session in truth.json")
    p.add_argument("--n-sessions", type=int, default=20_000, help="viewer sessions (with --sessions)")
    p.add_argument("--gamma", type=float, default=1.0, help="discount of the session values in truth.json "
                                                            "(with --sessions)")
    p.add_argument("--events", action="store_true",
                   help="write raw viewer events instead (impressions, clicks, watch start/stop/heartbeats, gifts, "
                        "follows; with duplicates, late events and missing stops), the exact feedback table track "
                        "must build from them, and a candidate for monitor; --n-rounds impressions")
    p.add_argument("--degrade-after-day", type=int, default=4,
                   help="with --events: the candidate degrades from the day after this one (0: never)")
    p.add_argument("--seed", type=_seed, default=0, help=f"random seed, 0 to {_MAX_SEED:,}")
    p.set_defaults(func=cmd_simulate)


def _add_validate(sub) -> None:
    p = _command(sub, "validate", "Check logs, policies and predictions against the data contract; list every problem.")
    _logs_options(p, policy_required=False)
    p.set_defaults(func=cmd_validate)


def _add_evaluate(sub) -> None:
    from livegate.ope import ESTIMATOR_NAMES
    from livegate.datasets.gate_config import DEFAULT_CI
    from livegate.ope.inference import CI_METHODS
    from livegate.ope.session_estimators import SESSION_ESTIMATOR_NAMES

    p = _command(sub, "evaluate", "Estimate candidate policies' values with intervals, diagnostics and the paired "
                                  "difference to the baseline.")
    _logs_options(p, policy_required=True)
    p.add_argument("--estimators",
                   help=f"comma-separated identifiers, from: {', '.join(ESTIMATOR_NAMES)}; hyperparameters as "
                        "ips:clip=50, switch-dr:tau=10, dr-os:lambda=100, pm-ips:lambda=0.1, mips:self_normalised=true; "
                        "DM/DR with model=constant use the mean reward per position as the reward model. "
                        "'auto' chooses one per policy and metric from the data (SLOPE) and reports why. "
                        f"With --sessions: {', '.join(SESSION_ESTIMATOR_NAMES)} (pdis:clip=100, dr:clip=100, ...). "
                        "Default: ips,snips,dr; with --sessions drl,wdr,pdis")
    p.add_argument("--gamma", type=float, default=1.0,
                   help="discount of session returns, sum_t gamma^t r_t (with --sessions; 1.0 = total per session)")
    p.add_argument("--ci", default=DEFAULT_CI,
                   help=f"interval method: {' | '.join(CI_METHODS)} (default {DEFAULT_CI}: the normal interval, with an "
                        "end set by Cantelli's inequality or left open where its side of the terms is too skewed or "
                        "too sparse)")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level of the intervals")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (--ci bootstrap)")
    p.add_argument("--folds", type=int, default=3, help="cross-fitting folds of the reward model")
    p.add_argument("--reward-range", action="append", metavar="METRIC=LOW,HIGH",
                   help="range every reward can take, known a priori (makes --ci bernstein a guarantee)")
    p.add_argument("--max-weight", type=float,
                   help="bound on pi_e/pi_0 known by design, e.g. 1/(epsilon/K) for epsilon-greedy logging; with "
                        "--reward-range it makes --ci bernstein a guarantee")
    p.add_argument("--baseline", default="logging", help="policy the candidates are compared with")
    p.add_argument("--seed", type=_seed, default=0,
                   help=f"seed of every random choice (folds, bootstrap), 0 to {_MAX_SEED:,}")
    p.add_argument("--estimate-propensities", action="store_true",
                   help="the logs have no propensities: estimate them from the context (marked in the results)")
    _engine_arguments(p)
    p.add_argument("--out", help="result JSON (livegate.evaluation/1)")
    p.add_argument("--report", help="HTML report")
    p.set_defaults(func=cmd_evaluate)


def _engine_arguments(p, gate: bool = False) -> None:
    p.add_argument("--max-memory", metavar="SIZE",
                   help="evaluate in bounded memory: read the logs (a Parquet file or directory) in partitions of whole "
                        "decisions that fit SIZE (e.g. 256MB, 2GB, 2GiB; at least 16MiB) and reduce each to sums; the "
                        "numbers equal the in-memory path's (docs/streaming.md). Estimators with closed-form terms "
                        "only: ips, snips, dm, dr, sndr, switch-dr, dr-os; without --q-hat or q_hat columns, their "
                        "reward model is cross-fitted once on a sample of at most 1,000,000 rows of whole "
                        "decisions" + ("; default: [engine] max_memory" if gate else ""))
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT|local",
                   help="evaluate the partitions on a Dask cluster (pip install 'livegate[dask]'): a running "
                        "scheduler's address, or 'local' to start 2 worker processes on this machine; implies "
                        "streaming (default --max-memory: a quarter of the available memory); an unreachable "
                        "scheduler is exit 2 after 10 s" + ("; default: [engine] scheduler" if gate else ""))


def _add_causal(sub) -> None:
    p = _command(sub, "causal", "Estimate the recommendation's causal effect (DoWhy + EconML) with refutations and "
                                "effects by segment.")
    p.add_argument("--logs", required=True, help="Parquet file or directory with treatment, outcome and covariates")
    p.add_argument("--treatment", required=True, help="0/1 column: was the stream recommended")
    p.add_argument("--outcome", required=True, help="outcome column, e.g. watch_seconds")
    p.add_argument("--sample-rows", type=int, metavar="N",
                   help="run on a proportional stratified sample of about N rows (by treatment arm, and by a 0/1 "
                        "outcome's value), read in bounded memory; recorded as 'sampling' in the result")
    p.add_argument("--confounders", help="comma-separated (default: the live-stream graph's, as present)")
    p.add_argument("--effect-modifiers", help="comma-separated columns the effect may vary with")
    p.add_argument("--graph", help="causal graph file (.gml or .dot) replacing the default")
    p.add_argument("--segments", help="comma-separated columns to report effects by (default: the effect "
                                      "modifiers when the default segment columns are absent)")
    p.add_argument("--propensity", metavar="COLUMN", help="logged P(treatment = 1 | x), used instead of estimating it")
    p.add_argument("--estimator", default="linear_dml", help="linear_dml | causal_forest | dr_learner")
    p.add_argument("--estimand", default="ate", choices=_ESTIMANDS, metavar="{" + ",".join(_ESTIMANDS) + "}",
                   help="the population the effect is averaged over: all rows (ate), the treated (att), the "
                        "untreated (atc) or the overlap population (ato); with poor overlap the data may support "
                        "only att and ato (default: ate)")
    p.add_argument("--trim", type=_trim, metavar="A|crump",
                   help="drop the rows with P(treatment=1|x) outside [A, 1-A] before estimating, A in (0, 0.5), or "
                        "choose A by the Crump et al. 2009 rule (crump); the rows dropped are counted by arm "
                        "(default: no trimming)")
    p.add_argument("--folds", type=int, default=3, help="cross-fitting folds")
    p.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level")
    p.add_argument("--seed", type=_seed, default=0, help=f"random seed, 0 to {_MAX_SEED:,}")
    _column_option(p)
    p.add_argument("--policy-out", help="write the learned 'recommend where it helps' policy (long-format Parquet)")
    p.add_argument("--out", help="result JSON (livegate.causal/1)")
    p.add_argument("--report", help="HTML report")
    p.set_defaults(func=cmd_causal)


def _add_report(sub) -> None:
    p = _command(sub, "report", "Render result documents (evaluation, causal, gate, learn, replay) into one "
                                "self-contained HTML report.")
    p.add_argument("results", nargs="+", metavar="RESULT.json",
                   help="documents written by evaluate, causal, gate, learn (--result) or replay (--out)")
    p.add_argument("--out", required=True, help="HTML file")
    p.add_argument("--markdown", help="also write a Markdown summary")
    p.set_defaults(func=cmd_report)


def _add_gate(sub) -> None:
    p = _command(sub, "gate", "Decide whether candidates may ship (exit 0 pass, 1 fail, 3 inconclusive). "
                              "gate.toml's keys: docs/gate-toml.md.")
    p.add_argument("--config", required=True, help="gate.toml")
    p.add_argument("--out", help="gate result JSON (livegate.gate/1); default: [output] out")
    p.add_argument("--report", help="HTML report; default: [output] report")
    p.add_argument("--markdown", help="Markdown summary; default: [output] markdown")
    p.add_argument("--junit", help="JUnit XML; default: [output] junit")
    _engine_arguments(p, gate=True)
    p.set_defaults(func=cmd_gate)


def _add_convert(sub) -> None:
    p = _command(sub, "convert", "Convert a public bandit dataset (Open Bandit Dataset CSV) to livegate's Parquet logs.")
    p.add_argument("--format", required=True, choices=["open-bandit"], help="the dataset's format")
    p.add_argument("--input", required=True, help="the dataset's CSV file")
    p.add_argument("--item-context", help="item_context.csv (stream features, written as a_* columns)")
    p.add_argument("--out", required=True, help="logs Parquet file")
    p.set_defaults(func=cmd_convert)


def _add_track(sub) -> None:
    p = _command(sub, "track", "Build contract logs from raw viewer events (impressions, clicks, watch, gifts, "
                               "follows): attribution windows, deduplication, late events (docs/events.md).")
    p.add_argument("--events", required=True, help="Parquet file or directory of raw events")
    p.add_argument("--out", required=True, help="output directory: Parquet partitioned by day, and _tracking.json")
    p.add_argument("--window", metavar="TYPE=DURATION,...",
                   help="attribution windows after the impression (default click=30s,watch=4h,gift=4h,follow=4h)")
    p.add_argument("--lateness", default="1h", help="allowed lateness past the longest window before a row closes")
    p.add_argument("--missing-stop-cap", default="1h", help="watch time without a stop: to the last heartbeat, "
                                                            "at most this")
    p.add_argument("--session-gap", default="30m", help="inactivity that starts a new session (without session_id)")
    p.add_argument("--memory-limit", default="2GB", help="DuckDB's memory limit; beyond it, joins spill to disk")
    p.add_argument("--threads", type=int, help="DuckDB threads (default: the cores)")
    p.set_defaults(func=cmd_track)


def _add_monitor(sub) -> None:
    p = _command(sub, "monitor", "Monitor candidates after a rollout with anytime-valid confidence sequences and "
                                 "drift checks (exit 0 healthy, 1 regression, 3 not yet decided).")
    _logs_options(p, policy_required=True)
    p.add_argument("--every", default="1d", help="window width: 1d, 6h, 30m, ...")
    p.add_argument("--alpha", type=float, default=0.05, help="false-alarm rate over all looks, candidates and metrics")
    p.add_argument("--margin", action="append", metavar="METRIC=LOSS",
                   help="tolerated loss: a regression is a difference below -LOSS (default 0)")
    p.add_argument("--baseline", default="logging", help="policy the candidates are compared with")
    p.add_argument("--min-rows", type=int, default=200, help="rows before a confidence sequence may decide")
    p.add_argument("--seed", type=_seed, default=0, help=f"random seed, 0 to {_MAX_SEED:,}")
    p.add_argument("--out", help="result JSON (livegate.monitor/1)")
    p.add_argument("--report", help="HTML page with the time-series charts")
    p.set_defaults(func=cmd_monitor)


def _add_demo(sub) -> None:
    p = _command(sub, "demo", "Simulate, evaluate, run the causal check, gate and write the report, in one go.")
    p.add_argument("--out", default="livegate-demo", help="output directory")
    p.add_argument("--n-rounds", type=int, default=50_000, help="simulated decisions")
    p.add_argument("--n-sessions", type=int, default=20_000,
                   help="simulated viewer sessions of the session chapter (0: no session chapter)")
    p.add_argument("--no-learn", action="store_true",
                   help="leave out the learning chapter (learn a candidate from the logs, gate it on held-out decisions)")
    p.add_argument("--seed", type=_seed, default=0, help=f"random seed, 0 to {_MAX_SEED:,}")
    p.add_argument("--report", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_demo)


def _add_learn(sub) -> None:
    from livegate.ope.learn import DECISION_METHODS, SESSION_METHODS

    p = _command(sub, "learn", "Learn a candidate policy from the logs on one part of the decisions, and evaluate it "
                               "on the held-out rest.")
    p.add_argument("--logs", required=True, help="Parquet file or directory of logged feedback (with decision_id)")
    p.add_argument("--reward", action="append", metavar="SPEC",
                   help="reward to maximise (the first) and to evaluate on (repeatable; default: those of "
                        "watch_seconds, click, gift_value present)")
    p.add_argument("--method", default="dr",
                   help=f"learner: {', '.join(DECISION_METHODS)}; for viewer sessions (session_id, step) "
                        f"{', '.join(SESSION_METHODS)}; with parameters as plugin:temperature=5, dr:l2=0.001, "
                        "poem:lambda=0.5,clip=100, pessimistic-fqi:kappa=0.1 (sources in ope/learn/)")
    p.add_argument("--gamma", type=float, default=1.0, help="discount of session returns (fqi, pessimistic-fqi)")
    p.add_argument("--out", required=True, help="the learned policy (long-format Parquet; records its training rows)")
    p.add_argument("--epsilon", type=float, default=0.1,
                   help="exploration floor: this share of the mass spread uniformly over each decision's kept streams")
    p.add_argument("--top-k", type=int, help="keep only each decision's k most probable streams (sparse policy)")
    p.add_argument("--candidates", metavar="PATH",
                   help="Parquet (decision_id, action): the streams each decision could show, e.g. those on air "
                        "(default: the logs' streams, narrowed to --prefilter by the reward model)")
    p.add_argument("--prefilter", type=int, default=50,
                   help="without --candidates, the reward model's best streams per decision to choose among")
    p.add_argument("--for", dest="for_logs", metavar="LOGS",
                   help="write the policy for the decisions of these logs (same context columns) instead")
    p.add_argument("--for-candidates", metavar="PATH", help="the candidate streams of the --for decisions "
                                                            "(default: --candidates)")
    p.add_argument("--split", default="random", choices=["random", "time"],
                   help="held-out split by decision: random (a seeded hash of decision_id) or time (the latest)")
    p.add_argument("--test-share", type=float, default=0.3, help="share of the decisions held out for evaluation")
    p.add_argument("--estimators", help="estimators of the held-out evaluation (default: snips,dr; for sessions "
                                        "drl,wdr,pdis)")
    p.add_argument("--folds", type=int, default=3, help="cross-fitting folds of the reward model")
    p.add_argument("--name", default="learned", help="the policy's name in the results")
    p.add_argument("--seed", type=_seed, default=0, help=f"seed of the split, folds and models, 0 to {_MAX_SEED:,}")
    _column_option(p)
    p.add_argument("--context", help="context columns, comma-separated, globs allowed (default: x_*)")
    p.add_argument("--result", help="result JSON (livegate.learn/1)")
    p.add_argument("--report", help="HTML report of the held-out evaluation")
    p.add_argument("--heldout-out", metavar="PATH",
                   help="write the held-out rows as logs (Parquet), for livegate evaluate / gate")
    p.set_defaults(func=cmd_learn)


def _add_replay(sub) -> None:
    p = _command(sub, "replay", "Replay online bandit algorithms (epsilon-greedy, UCB1, Thompson sampling, LinUCB) "
                                "through the logs and draw their reward curves.")
    p.add_argument("--logs", required=True, help="Parquet file or directory of logged feedback")
    p.add_argument("--reward", action="append", metavar="SPEC",
                   help="the reward the algorithms learn from (the first; default: watch_seconds, click or "
                        "gift_value, the first present)")
    p.add_argument("--algorithms", default="eps-greedy:0.1,ucb1,ts,linucb:alpha=1",
                   help="comma-separated: eps-greedy:EPSILON, ucb1[:c=RANGE], ts, linucb[:alpha=A]")
    p.add_argument("--batch-size", type=int, default=1, help="accepted events between two updates of an algorithm")
    p.add_argument("--runs", type=int, default=10, help="replays per algorithm (the bands are their spread)")
    p.add_argument("--periods", type=int, default=20, help="periods of the logged stream the curves are cut into")
    p.add_argument("--no-bootstrap", action="store_true",
                   help="replay the logs as they are in every run (default: each run on a Poisson bootstrap "
                        "resample, so that the bands include the logs' sampling noise)")
    p.add_argument("--alpha", type=float, default=0.05, help="the bands span the alpha/2 .. 1 - alpha/2 quantiles")
    p.add_argument("--seed", type=_seed, default=0, help=f"random seed, 0 to {_MAX_SEED:,}")
    _column_option(p)
    p.add_argument("--context", help="context columns for LinUCB, comma-separated, globs allowed (default: x_*)")
    p.add_argument("--candidates", metavar="PATH",
                   help="Parquet (decision_id, action): the streams each decision could show, e.g. those on air; the "
                        "algorithms choose among them (default: every logged stream)")
    p.add_argument("--out", help="result JSON (livegate.replay/1)")
    p.add_argument("--report", help="HTML page with the reward curves")
    p.set_defaults(func=cmd_replay)


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
    for add in (_add_simulate, _add_validate, _add_evaluate, _add_causal, _add_report, _add_gate, _add_convert,
                _add_demo, _add_learn, _add_track, _add_monitor, _add_replay):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    # scikit-learn's OpenMP threads spin while they wait by default: with another busy process on the
    # machine (a CI runner, a second job) gradient-boosting fits measured 6-10x slower than passive
    # waiting. Set before the OpenMP runtime loads; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
