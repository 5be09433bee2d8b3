"""The same session data through SCOPE-RL 0.2.1 (the reference sequential-OPE library), for speed and error.

Run with the interpreter of a separate SCOPE-RL environment (numpy<2, d3rlpy 2.x, a CPU build of torch;
pyarrow 26 refuses numpy 1.26, so pyarrow<21):
    python -m venv /work/scope-env
    /work/scope-env/bin/pip install scope-rl==0.2.1 'numpy<2' 'pyarrow<21'   # + a CPU torch (STACK-NOTES)
    OMP_WAIT_POLICY=PASSIVE /work/scope-env/bin/python benchmarks/scope_rl_sessions.py \
        --data benchmarks/data/sessions-10000-s0 [--livegate-json FILE] [--out-json FILE] [--skip-models]

--data is a directory written by `livegate simulate --sessions` (benchmarks/bench_sessions.py makes one):
logs.parquet, policies/{myopic,longterm,qlearning}.parquet and truth.json. This script does not import
livegate.

Conversion to SCOPE-RL's logged_dataset (a dict of flat arrays with a fixed horizon):
  * horizon = truth.json config max_steps (30); each session is padded after its last step with reward 0,
    an absorbing dummy state (all features 0 and an extra `absorbing` feature 1; real states have it 0),
    the padding action 0, pscore 1, and an evaluation-policy distribution with probability 1 on action 0,
    so every importance ratio on padding is 1 and padding adds nothing to any estimate;
  * state = the logs' context columns x_* (as float) + `absorbing`; action = `action`; reward =
    watch_seconds; pscore = propensity;
  * done = terminal = 1 at a session's real last step; done is also 1 at the horizon's last (padded) step, so
    that d3rlpy's MDPDataset (which splits episodes at done) does not chain the padding of one session to
    the start of the next. OffPolicyEvaluation(disable_reward_after_done=False), or SCOPE-RL drops the
    reward of each session's last step.
Candidate policies: evaluation_policy_action_dist comes straight from the policy files (dense, 10 actions).
For SCOPE-RL's model-based inputs (CreateOPEInput), each candidate is wrapped as a scope_rl BaseHead that
looks its distribution up by state (the simulator's candidates are functions of the x_* columns; every state
FQE or the weight learner queries is a logged state or the absorbing state, except the all-zero next state
d3rlpy gives each episode's terminal transition, whose action the target multiplies by 1 - terminal = 0). d3rlpy's DiscreteFQE builds its
target from `algo.impl.predict_best_action(next_state)`, meant for a greedy policy; the wrapper returns an
action *sampled* from the candidate's distribution there, so the target r + Q(s', a'), a' ~ pi(.|s'), is
unbiased for the stochastic candidate (with SCOPE-RL's own EpsilonGreedy/Softmax heads FQE would evaluate
the greedy base policy instead).
Estimators (discrete): PDIS, DM and DR with SCOPE-RL's FQE (d3rlpy, default model_args, 10,000 gradient
steps, no cross-fitting: k_fold=1 as in SCOPE-RL's examples), and state-action marginal IS (SAM-IS) and
DoubleReinforcementLearning with Minimax Weight Learning (MWL, 10,000 steps). Intervals: SCOPE-RL's
t-test interval. Its `estimate_confidence_interval_by_t_test` uses t.ppf(1 - alpha) for a two-sided interval
(a 90% interval when alpha=0.05); this script passes alpha=0.025 so that the interval is a real 95% one.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

CANDIDATES = ("myopic", "longterm", "qlearning")
METRIC = "watch_seconds"
PAD_ACTION = 0


class Timer:
    def __init__(self):
        self.parts: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - start


def load(data: Path, horizon: int):
    """logged_dataset (SCOPE-RL's dict) and the candidates' distributions as (n * horizon, n_actions)."""
    logs = pq.read_table(data / "logs.parquet").to_pandas()
    logs = logs.sort_values(["session_id", "step"], kind="stable").reset_index(drop=True)
    xcols = [c for c in logs.columns if c.startswith("x_")]
    actions = np.sort(logs["action"].unique())
    n_actions = int(max(actions.max() + 1, len(actions)))
    sid = logs["session_id"].to_numpy()
    _, traj = np.unique(sid, return_inverse=True)
    step = logs["step"].to_numpy()
    n = int(traj.max() + 1)
    if step.max() >= horizon:
        raise SystemExit(f"a session is longer than the horizon {horizon}")
    flat = traj * horizon + step  # position of each logged row in the padded layout
    state_dim = len(xcols) + 1
    state = np.zeros((n * horizon, state_dim))
    state[:, -1] = 1.0  # absorbing unless overwritten by a logged row
    state[flat, :-1] = logs[xcols].to_numpy(dtype=float)
    state[flat, -1] = 0.0
    action = np.full(n * horizon, PAD_ACTION, dtype=int)
    action[flat] = logs["action"].to_numpy()
    reward = np.zeros(n * horizon)
    reward[flat] = logs[METRIC].to_numpy(dtype=float)
    pscore = np.ones(n * horizon)
    pscore[flat] = logs["propensity"].to_numpy(dtype=float)
    last = np.zeros(n, dtype=int)
    np.maximum.at(last, traj, step)
    done = np.zeros(n * horizon)
    terminal = np.zeros(n * horizon)
    done[np.arange(n) * horizon + last] = 1.0
    terminal[np.arange(n) * horizon + last] = 1.0
    done[np.arange(n) * horizon + horizon - 1] = 1.0  # d3rlpy episode boundary after the padding
    logged_dataset = {
        "size": n * horizon, "n_trajectories": n, "step_per_trajectory": horizon,
        "action_type": "discrete", "n_actions": n_actions, "action_dim": None,
        "action_keys": None, "action_meaning": None, "state_dim": state_dim,
        "state_keys": xcols + ["absorbing"], "state": state, "action": action, "reward": reward,
        "done": done, "terminal": terminal, "info": None, "pscore": pscore,
        "behavior_policy": "logging", "dataset_id": 0,
    }
    dists = {}
    decision_pos = dict(zip(logs["decision_id"].to_numpy().tolist(), flat.tolist()))
    for name in CANDIDATES:
        pol = pq.read_table(data / "policies" / f"{name}.parquet").to_pandas()
        dist = np.zeros((n * horizon, n_actions))
        dist[:, PAD_ACTION] = 1.0  # padding: probability 1 on the padding action
        dist[flat] = 0.0
        pos = np.fromiter((decision_pos[d] for d in pol["decision_id"].to_numpy().tolist()), dtype=np.int64,
                          count=len(pol))
        dist[pos, pol["action"].to_numpy()] = pol["prob"].to_numpy()
        dists[name] = dist
    return logged_dataset, dists, len(logs)


def state_keys(x: np.ndarray) -> list[bytes]:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    return [row.tobytes() for row in x]


class _LookupImpl:
    """Stands in for a d3rlpy algorithm impl inside DiscreteFQE: predict_best_action samples pi(.|s')."""

    def __init__(self, head):
        self.head = head

    def predict_best_action(self, x):
        import torch
        probs = self.head.lookup(x.detach().cpu().numpy(), strict=False)
        u = self.head.random_.random_sample(len(probs))[:, None]
        a = (probs.cumsum(axis=1) < u).sum(axis=1).clip(0, probs.shape[1] - 1)
        return torch.as_tensor(a, dtype=torch.long, device=x.device)

    def __bool__(self):
        return True


class _LookupBase:
    def __init__(self, head):
        self.impl = _LookupImpl(head)


def make_head_class():
    from scope_rl.policy import BaseHead

    @dataclass
    class TableHead(BaseHead):
        """A candidate given as a table state -> action distribution (built from the logged rows)."""
        name: str
        n_actions: int
        state: np.ndarray  # the logged_dataset's states (padded layout)
        dist: np.ndarray  # the candidate's distribution at those states
        random_state: int = 0
        base_policy: Optional[Any] = None

        def __post_init__(self):
            self.action_type = "discrete"
            self.random_ = np.random.RandomState(self.random_state)
            keys = state_keys(self.state)
            self.table: dict[bytes, int] = {}
            for i, k in enumerate(keys):
                self.table.setdefault(k, i)
            self.base_policy = _LookupBase(self)
            self.unknown_queries = 0

        def lookup(self, x: np.ndarray, strict: bool = True) -> np.ndarray:
            """pi(.|x) by table. strict=False (FQE targets only): d3rlpy gives the last transition of an
            episode an all-zero next state, multiplied by (1 - terminal) in the target; its action does not
            matter, so an unknown state gets the padding action (and is counted)."""
            if x is self.state:
                return self.dist
            idx = [self.table.get(k, -1) for k in state_keys(x)]
            if -1 in idx:
                unknown = np.asarray(idx) == -1
                if strict or np.any(np.asarray(x)[unknown] != 0):
                    raise RuntimeError(f"{self.name}: a state outside the logged ones was queried")
                self.unknown_queries += int(unknown.sum())
            out = self.dist[idx]
            out[np.asarray(idx) == -1] = np.eye(self.n_actions)[PAD_ACTION]
            return out

        def calc_action_choice_probability(self, x):
            return self.lookup(x)

        def calc_pscore_given_action(self, x, action):
            return self.lookup(x)[np.arange(len(action)), np.asarray(action, dtype=int)]

        def sample_action_and_output_pscore(self, x):
            probs = self.lookup(x)
            u = self.random_.random_sample(len(probs))[:, None]
            a = (probs.cumsum(axis=1) < u).sum(axis=1).clip(0, probs.shape[1] - 1)
            return a, probs[np.arange(len(a)), a]

        def sample_action(self, x):
            return self.sample_action_and_output_pscore(x)[0]

        def predict(self, x):
            return self.lookup(x).argmax(axis=1)

    return TableHead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="directory written by livegate simulate --sessions")
    parser.add_argument("--n-steps", type=int, default=10_000, help="gradient steps of FQE and MWL (SCOPE-RL's default)")
    parser.add_argument("--skip-models", action="store_true", help="PDIS only (no FQE, no weight learning)")
    parser.add_argument("--skip-weights", action="store_true", help="no weight learning (SAM-IS, DRL)")
    parser.add_argument("--livegate-json", default=None, help="bench_sessions.py --out-json of the same data")
    parser.add_argument("--out-json", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = Path(args.data).resolve()
    truth = json.loads((data / "truth.json").read_text())
    horizon = int(truth["config"]["max_steps"])
    timer = Timer()
    t_all = time.perf_counter()

    with timer("import scope_rl, d3rlpy, torch"):
        import torch
        import scope_rl
        from scope_rl.ope import CreateOPEInput, OffPolicyEvaluation
        from scope_rl.ope.discrete import (DirectMethod, DoubleReinforcementLearning, DoublyRobust,
                                           PerDecisionImportanceSampling, StateActionMarginalIS)
    torch.manual_seed(args.seed)
    with timer("read Parquet + convert to logged_dataset"):
        logged, dists, n_rows = load(data, horizon)
    n = logged["n_trajectories"]
    print(f"SCOPE-RL {scope_rl.__version__ if hasattr(scope_rl, '__version__') else ''} on {n:,} sessions, "
          f"{n_rows:,} steps, horizon {horizon} ({n * horizon:,} padded rows); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)

    TableHead = make_head_class()
    heads = [TableHead(name=p, n_actions=logged["n_actions"], state=logged["state"], dist=dists[p],
                       random_state=args.seed + i) for i, p in enumerate(CANDIDATES)]
    input_dict = {p: {"evaluation_policy_action_dist": dists[p], "evaluation_policy_action": None,
                      "state_action_value_prediction": None, "initial_state_value_prediction": None,
                      "state_action_marginal_importance_weight": None, "state_marginal_importance_weight": None,
                      "on_policy_policy_value": None, "gamma": 1.0, "behavior_policy": "logging",
                      "evaluation_policy": p, "dataset_id": 0} for p in CANDIDATES}
    failures: dict[str, str] = {}
    estimators = [PerDecisionImportanceSampling()]

    scratch = data / "scope_rl_run"
    scratch.mkdir(exist_ok=True)
    os.chdir(scratch)  # d3rlpy writes d3rlpy_logs/ into the working directory
    quiet = io.StringIO()
    if not args.skip_models:
        prep = CreateOPEInput(env=None, gamma=1.0, device="cpu")
        prep._register_logged_dataset(logged)  # what obtain_whole_inputs does first; kept separate to time parts
        try:
            for h in heads:
                with timer(f"FQE fit (d3rlpy, {args.n_steps} steps) x3"), contextlib.redirect_stdout(quiet), \
                        contextlib.redirect_stderr(quiet):
                    prep.build_and_fit_FQE(h, k_fold=1, n_steps=args.n_steps)
                with timer("FQE predict Q(s, a) for all rows and actions x3"), contextlib.redirect_stderr(quiet):
                    q = prep.obtain_state_action_value_prediction("fqe", h, k_fold=1)
                    v0 = prep.obtain_initial_state_value_prediction("fqe", h, k_fold=1, random_state=args.seed)
                input_dict[h.name]["state_action_value_prediction"] = q
                input_dict[h.name]["initial_state_value_prediction"] = v0
                print(f"  FQE {h.name}: done; next states outside the table (terminal, ignored): "
                      f"{h.unknown_queries:,}; ({timer.parts[f'FQE fit (d3rlpy, {args.n_steps} steps) x3']:.0f} s "
                      f"so far)", flush=True)
            estimators += [DirectMethod(), DoublyRobust()]
        except Exception as err:  # noqa: BLE001 - report exactly what failed
            failures["fqe"] = f"{type(err).__name__}: {err}"
            print(f"  FQE failed: {failures['fqe']}", flush=True)
        if not args.skip_weights:
            try:
                for h in heads:
                    with timer(f"MWL weight fit ({args.n_steps} steps) x3"), contextlib.redirect_stdout(quiet), \
                            contextlib.redirect_stderr(quiet):
                        prep.build_and_fit_state_action_weight_model(h, k_fold=1, n_steps=args.n_steps,
                                                                     random_state=args.seed)
                    with timer("MWL predict w(s, a) x3"):
                        w = prep.obtain_state_action_marginal_importance_weight("mwl", h, k_fold=1)
                    input_dict[h.name]["state_action_marginal_importance_weight"] = w
                    print(f"  MWL {h.name}: done; mean w over real steps "
                          f"{float(w[logged['state'][:, -1] == 0].mean()):.3g}", flush=True)
                estimators += [StateActionMarginalIS()]
                if "fqe" not in failures:
                    estimators += [DoubleReinforcementLearning()]
            except Exception as err:  # noqa: BLE001
                failures["mwl"] = f"{type(err).__name__}: {err}"
                print(f"  MWL failed: {failures['mwl']}", flush=True)

    ope = OffPolicyEvaluation(logged_dataset=logged, ope_estimators=estimators, disable_reward_after_done=False)
    results: dict[str, dict[str, dict]] = {p: {} for p in CANDIDATES}
    for est in estimators:
        name = est.estimator_name
        try:
            with timer(f"estimate {name} (point + t interval, 3 policies)"):
                point = ope.estimate_policy_value(input_dict, compared_estimators=[name])
                ci = ope.estimate_intervals(input_dict, compared_estimators=[name], ci="ttest", alpha=0.025)
            for p in CANDIDATES:
                c = ci[p][name]
                lo = next(v for k, v in c.items() if "lower" in k)
                hi = next(v for k, v in c.items() if "upper" in k)
                results[p][name] = {"value": float(point[p][name]), "ci_low": float(lo), "ci_high": float(hi)}
        except Exception as err:  # noqa: BLE001
            failures[name] = f"{type(err).__name__}: {err}"
            print(f"  {name} failed: {failures[name]}", flush=True)
    total = time.perf_counter() - t_all
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows = []
    for p in CANDIDATES:
        true = truth["logged_starts"][p][METRIC]
        for name, e in results[p].items():
            rows.append({"policy": p, "estimator": name, **e, "truth": true,
                         "rel_error": (e["value"] - true) / true, "covers": bool(e["ci_low"] <= true <= e["ci_high"])})

    print(f"\n## SCOPE-RL 0.2.1: {n:,} sessions ({n_rows:,} steps), total {total:.1f} s, peak RSS {peak:,.0f} MiB, "
          f"load average now {[round(x, 2) for x in os.getloadavg()]}\n")
    print("| part | wall s |\n|---|---:|")
    for k, v in timer.parts.items():
        print(f"| {k} | {v:.1f} |")
    print(f"| **total** | **{total:.1f}** |")
    print("\n| policy | estimator | estimate | 95% interval (t) | truth | rel. error | covers |")
    print("|---|---|---:|---|---:|---:|:---:|")
    for r in rows:
        print(f"| {r['policy']} | {r['estimator']} | {r['value']:,.1f} | [{r['ci_low']:,.1f}, {r['ci_high']:,.1f}] | "
              f"{r['truth']:,.1f} | {100 * r['rel_error']:+.1f}% | {'yes' if r['covers'] else 'NO'} |")
    if failures:
        print("\nfailed parts:")
        for k, v in failures.items():
            print(f"  {k}: {v}")

    comparison = None
    if args.livegate_json:
        lg = json.loads(Path(args.livegate_json).read_text())
        lg_rows = {(r["policy"], r["estimator"]): r for run in lg["runs"] for r in run["rows"]}
        lg_wall = {run["estimators"]: run["wall_s"] for run in lg["runs"]}
        comparison = {"livegate_wall_s": lg_wall, "scope_rl_wall_s": total}
        pairs = [("pdis", "pdis"), ("dr", "dr"), ("fqe", "dm"), ("mis", "sam_is"), ("wdr", None), (None, "drl")]
        print("\n### same data, livegate vs SCOPE-RL: relative error vs truth (interval covers?)\n")
        print("| policy | " + " | ".join(f"{a or '—'} / {b or '—'}" for a, b in pairs) + " |")
        print("|---|" + "---|" * len(pairs))
        for p in CANDIDATES:
            cells = []
            for a, b in pairs:
                la = lg_rows.get((p, a)) if a else None
                sb = next((r for r in rows if r["policy"] == p and r["estimator"] == b), None) if b else None
                fa = f"{100 * la['rel_error']:+.1f}% ({'y' if la['covers'] else 'n'})" if la else "—"
                fb = f"{100 * sb['rel_error']:+.1f}% ({'y' if sb['covers'] else 'n'})" if sb else "—"
                cells.append(f"{fa} / {fb}")
            print(f"| {p} | " + " | ".join(cells) + " |")
        print(f"\nwall time: livegate {', '.join(f'{k}: {v:.1f} s' for k, v in lg_wall.items())}; "
              f"SCOPE-RL ({', '.join(e.estimator_name for e in estimators)}; model fitting included, one "
              f"process) {total:.1f} s")

    if args.out_json:
        Path(args.out_json).write_text(json.dumps({
            "n_sessions": n, "n_steps": n_rows, "horizon": horizon, "parts_s": timer.parts, "total_s": total,
            "peak_rss_mib": peak, "rows": rows, "failures": failures, "comparison": comparison,
            "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
            "load_at_end": os.getloadavg()}, indent=1))
        print(f"\nwrote {args.out_json}")


if __name__ == "__main__":
    main()
