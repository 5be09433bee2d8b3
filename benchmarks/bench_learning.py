"""Off-policy learning against Open Bandit Pipeline's learners: true value of the learned policy on the
simulator and training time.

Usage: python benchmarks/bench_learning.py [--n-rounds 100000 1000000] [--seed 0]
           [--obp-python /path/to/obp-venv/bin/python] [--out-json FILE]

The world: livegate's simulator with 8 streams, all on air at every decision (`n_streams = slate_size
= 8`), because obp's learners assume one fixed action set; logging is the simulator's popularity
softmax with 10% uniform exploration; the reward is watch_seconds. Both tools train on the same
decisions (livegate's seeded hash split, 70%) and are scored on the other 30% by the simulator's
exact expected rewards: value = mean over held-out rows of sum_a pi(a|x) E[watch | x, a].

livegate: `livegate.learn` end to end (split, fit, policy for every decision, held-out and in-sample
evaluation with snips) and, separately, the fit alone (`ope.learn.learn`); plugin, dr and poem at
the default exploration floor epsilon = 0.1, the same fit without the floor (pi_0 = (pi_0.1 -
0.1/K) / 0.9, exact since the floor is uniform over all K streams), and its argmax (deterministic,
like obp's learners).
obp 0.5.7: `IPWLearner` (its default LogisticRegression) and `QLearner` with the same
HistGradientBoosting settings livegate's reward model uses; deterministic policies. obp runs in its
own virtual environment (it pins Python < 3.10 and torch 1.12; installed there with
`pip install --no-deps --ignore-requires-python obp==0.5.7` plus numpy, scipy, pandas, scikit-learn,
matplotlib, seaborn, tqdm, pyyaml, pyarrow and a CPU torch), fed through a temporary .npz file.
Each fit runs once (these are minutes-long fits on a shared 2-core machine, not micro-benchmarks).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

K = 8
EPSILON = 0.1
METHODS = ("plugin", "dr", "poem")

OBP_SCRIPT = r"""
import json, sys, time
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from obp.policy import IPWLearner, QLearner

data = np.load(sys.argv[1])
X, a, r, p, X_test = (data[k] for k in ("X", "a", "r", "p", "X_test"))
out = {}
for name, make in (("IPWLearner", lambda: IPWLearner(n_actions=%(K)d)),
                   ("QLearner", lambda: QLearner(n_actions=%(K)d, base_model=HistGradientBoostingRegressor(
                       max_iter=200, learning_rate=0.1, max_leaf_nodes=31, early_stopping=True,
                       n_iter_no_change=10, random_state=0)))):
    learner = make()
    t = time.perf_counter()
    learner.fit(context=X, action=a, reward=r, pscore=p)
    fit = time.perf_counter() - t
    t = time.perf_counter()
    chosen = learner.predict(X_test)[:, :, 0].argmax(axis=1)
    out[name] = {"fit_seconds": fit, "predict_seconds": time.perf_counter() - t, "action": chosen.tolist()}
print(json.dumps(out))
""" % {"K": K}


def numeric_context(frame) -> np.ndarray:
    """The x_* columns as numbers (device one-hot), the same features for both tools' models."""
    import pandas as pd

    ctx = frame[[c for c in frame.columns if c.startswith("x_")]]
    return pd.get_dummies(ctx, columns=["x_device"], dtype=float).astype(float).to_numpy()


def run(n_rounds: int, seed: int, obp_python: str | None) -> dict:
    from livegate.api import learn
    from livegate.datasets.simulator import SimulationConfig, policy_matrix, simulate
    from livegate.ope import learn as L

    sim = simulate(SimulationConfig(n_rounds=n_rounds, n_streams=K, slate_size=K, seed=seed))
    expected = sim.expected["watch_seconds"]
    ids = sim.logs["decision_id"].to_numpy()
    train, _ = L.split_units(ids, rule="random", test_share=0.3, seed=seed)
    test = ~train
    # slates are sorted stream ids: with all K streams on air, slot j is stream j
    assert np.array_equal(sim.slates, np.broadcast_to(np.arange(K), sim.slates.shape))
    truth = {"logging": float((sim.world.logging_probs * expected).sum(axis=1)[test].mean()),
             "uniform": float(expected[test].mean()), "best stream per decision": float(expected.max(axis=1)[test].mean())}
    results: dict = {"n_rounds": n_rounds, "n_train": int(train.sum()), "n_test": int(test.sum()), "truth": truth,
                     "livegate": {}, "obp": {}}
    for method in METHODS:
        t = time.perf_counter()
        res = learn(sim.logs, "watch_seconds", method, seed=seed, estimators="snips", epsilon=EPSILON)
        end_to_end = time.perf_counter() - t
        dense = policy_matrix(sim, res.policy)
        value = float((dense * expected).sum(axis=1)[test].mean())
        # the learned policy's argmax, deterministic like obp's learners
        greedy = float(expected[np.flatnonzero(test), dense[test].argmax(axis=1)].mean())
        # the fit alone, on the same training rows
        rows = np.flatnonzero(train)
        context = sim.logs.loc[rows, [c for c in sim.logs.columns if c.startswith("x_")]].reset_index(drop=True)
        cand = L.Candidates.from_pairs(np.repeat(np.arange(len(rows)), K), np.tile(np.arange(K), len(rows)), len(rows))
        t = time.perf_counter()
        L.learn(L.parse_method(method), context, sim.logs["action"].to_numpy()[rows],
                sim.logs["propensity"].to_numpy()[rows], sim.logs["watch_seconds"].to_numpy()[rows], cand, K,
                action_features=None, groups=rows, seed=seed)
        fit = time.perf_counter() - t
        heldout = res.to_dict()["heldout_evaluation"]["policies"][res.name]["estimates"]["snips"]
        results["livegate"][method] = {
            "true_value_eps0.1": value, "true_value_eps0": (value - EPSILON * truth["uniform"]) / (1 - EPSILON),
            "true_value_greedy": greedy,
            "fit_seconds": fit, "end_to_end_seconds": end_to_end,
            "heldout_snips": heldout["value"], "heldout_snips_ci": [heldout["ci_low"], heldout["ci_high"]]}
        print(f"  livegate {method}: true {value:.2f} (eps 0: {results['livegate'][method]['true_value_eps0']:.2f}, "
              f"greedy: {greedy:.2f}); "
              f"fit {fit:.1f} s, end to end {end_to_end:.1f} s", flush=True)
    if obp_python:
        X = numeric_context(sim.logs)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data.npz"
            np.savez(path, X=X[train], a=sim.logs["action"].to_numpy()[train],
                     r=sim.logs["watch_seconds"].to_numpy()[train], p=sim.logs["propensity"].to_numpy()[train],
                     X_test=X[test])
            env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
            done = subprocess.run([obp_python, "-c", OBP_SCRIPT, str(path)], capture_output=True, text=True, env=env)
        if done.returncode:
            results["obp"] = {"error": done.stderr[-2000:]}
        else:
            for name, out in json.loads(done.stdout.strip().splitlines()[-1]).items():
                value = float(expected[np.flatnonzero(test), np.asarray(out["action"])].mean())
                results["obp"][name] = {"true_value": value, "fit_seconds": out["fit_seconds"],
                                        "predict_seconds": out["predict_seconds"]}
                print(f"  obp {name}: true {value:.2f}; fit {out['fit_seconds']:.1f} s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-rounds", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--obp-python", help="python of a virtual environment with obp 0.5.7 (default: none, "
                                             "livegate only)")
    parser.add_argument("--out-json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    all_results = []
    for n in args.n_rounds:
        print(f"{n:,} decisions (seed {args.seed})", flush=True)
        result = run(n, args.seed, args.obp_python)
        print(f"  truth: {json.dumps({k: round(v, 2) for k, v in result['truth'].items()})}", flush=True)
        all_results.append(result)
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(all_results, indent=2))
    print("\n| decisions | learner | true value on held-out rows (s): eps 0.1 / eps 0 / argmax | fit (s) |\n|---|---|---|---|")
    for r in all_results:
        print(f"| {r['n_rounds']:,} | logging policy | {r['truth']['logging']:.2f} | — |")
        for m, v in r["livegate"].items():
            print(f"| {r['n_rounds']:,} | livegate {m} | {v['true_value_eps0.1']:.2f} / "
                  f"{v['true_value_eps0']:.2f} / {v.get('true_value_greedy', float('nan')):.2f} | "
                  f"{v['fit_seconds']:.1f} (end to end {v['end_to_end_seconds']:.1f}) |")
        for m, v in r["obp"].items():
            if isinstance(v, dict):
                print(f"| {r['n_rounds']:,} | obp {m} (deterministic) | — / — / {v['true_value']:.2f} | "
                      f"{v['fit_seconds']:.1f} |")
        print(f"| {r['n_rounds']:,} | best stream per decision | {r['truth']['best stream per decision']:.2f} | — |")


if __name__ == "__main__":
    sys.exit(main())
