"""Open Bandit Dataset benchmark: mean relative error of livegate's estimators and of `auto`.

Usage (in livegate's environment):
    python benchmarks/obd_benchmark.py [--obd-dir DIR] [--obp-python /work/obp-env/bin/python]
                                       [--workdir benchmarks/data/obd] [--markdown benchmarks/README_obd.md]

Data: the small sample of the Open Bandit Dataset (Saito, Aihara, Matsutani & Narita 2021) that the
`obp` package ships under obp/dataset/obd/{random,bts}/{all,men,women}/ (10,000 impressions per file,
ZOZOTOWN fashion recommendations, 3 positions). Install obp into an environment of its own (its pins
clash with livegate's): python3 -m venv /work/obp-env && /work/obp-env/bin/pip install --no-deps
--ignore-requires-python obp==0.5.7, then numpy scipy pandas scikit-learn matplotlib seaborn tqdm
pyyaml pyarrow torch by hand. Without --obd-dir the CSVs are found inside that installed obp.

Settings: 3 campaigns x 2 logging policies. On the logs of logging policy A (random or bts) livegate
evaluates the other policy B; the ground truth is B's on-policy click rate, the mean click of B's own
logs of the same campaign (as obp's `OpenBanditDataset.calc_on_policy_policy_value_estimate`).
The candidate policy B, per position:
  random  1 / n_items for every item (the uniform random policy that logged the random files);
  bts     obp's `BernoulliTS(n_actions=n_items, len_list=3, is_zozotown_prior=True, campaign=c,
          random_state=--seed).compute_batch_action_dist(n_rounds=1, n_sim=--n-sim)`: Bernoulli
          Thompson sampling with the production system's posterior parameters that obp ships, the
          action distribution of each position by Monte Carlo (as obp's own OBD examples build it).
          It is computed by obp, in --obp-python's environment when obp is not importable here.
Each setting is converted with livegate's converter (`open_bandit_to_logs`: user features as context,
item features as stream features, positions 0-based), the candidate written as a context-free policy
(action, position, prob), and evaluated with `livegate.evaluate` on the reward `click` with every
estimator below and `auto`, the reward model being livegate's own (cross-fitted, 3 folds).
Relative error = |estimate - truth| / truth; the table is its mean over the 6 settings.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = ("all", "men", "women")
BEHAVIOURS = ("random", "bts")
ESTIMATORS = ("ips", "snips", "dm", "dr", "sndr", "switch-dr", "dr-os", "auto")
LEN_LIST = 3

#: run by --obp-python: obp's Bernoulli TS action distribution per campaign (n_items x positions)
_BTS_SNIPPET = """
import json, sys
from obp.policy import BernoulliTS
spec = json.loads(sys.argv[1])
out = {}
for campaign, n_items in spec["campaigns"].items():
    policy = BernoulliTS(n_actions=n_items, len_list=spec["len_list"], is_zozotown_prior=True,
                         campaign=campaign, random_state=spec["seed"])
    out[campaign] = policy.compute_batch_action_dist(n_rounds=1, n_sim=spec["n_sim"])[0].tolist()
print(json.dumps(out))
"""
_LOCATE_SNIPPET = "import obp, os; print(os.path.join(os.path.dirname(obp.__file__), 'dataset', 'obd'))"


def _obp_here() -> bool:
    return importlib.util.find_spec("obp") is not None


def locate_obd(obd_dir: str | None, obp_python: str | None) -> Path:
    if obd_dir:
        return Path(obd_dir)
    if _obp_here():
        import obp
        return Path(obp.__file__).parent / "dataset" / "obd"
    if obp_python:
        return Path(subprocess.run([obp_python, "-c", _LOCATE_SNIPPET], check=True, capture_output=True,
                                   text=True).stdout.strip())
    raise SystemExit("give --obd-dir, or --obp-python of an environment where obp is installed")


def bts_distributions(n_items: dict[str, int], obp_python: str | None, seed: int, n_sim: int,
                      cache: Path) -> dict[str, np.ndarray]:
    """obp's Bernoulli TS action distribution per campaign, computed once and cached."""
    spec = {"campaigns": n_items, "len_list": LEN_LIST, "seed": seed, "n_sim": n_sim}
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("spec") == spec:
            return {c: np.asarray(d) for c, d in stored["distributions"].items()}
    if _obp_here():
        command = [sys.executable, "-c", _BTS_SNIPPET, json.dumps(spec)]
    elif obp_python:
        command = [obp_python, "-c", _BTS_SNIPPET, json.dumps(spec)]
    else:
        raise SystemExit("the bts candidate needs obp: give --obp-python")
    result = subprocess.run(command, check=True, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    distributions = json.loads(result.stdout.strip().splitlines()[-1])
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"spec": spec, "distributions": distributions}))
    return {c: np.asarray(d) for c, d in distributions.items()}


def candidate_policy(name: str, n_items: int, bts: np.ndarray | None) -> pd.DataFrame:
    """A context-free policy: action, position, prob (every item at every position)."""
    table = np.full((n_items, LEN_LIST), 1.0 / n_items) if name == "random" else bts
    action, position = np.meshgrid(np.arange(n_items), np.arange(LEN_LIST), indexing="ij")
    return pd.DataFrame({"action": action.ravel().astype(np.int64), "position": position.ravel().astype(np.int64),
                         "prob": table.ravel()})


def run(args) -> list[dict]:
    from livegate.api import evaluate
    from livegate.datasets.converters import open_bandit_to_logs

    obd = locate_obd(args.obd_dir, args.obp_python)
    n_items = {c: len(pd.read_csv(obd / "random" / c / "item_context.csv")) for c in CAMPAIGNS}
    bts = bts_distributions(n_items, args.obp_python, args.seed, args.n_sim, Path(args.workdir) / "bts.json")
    rows = []
    for campaign in CAMPAIGNS:
        for behaviour in BEHAVIOURS:
            target = next(b for b in BEHAVIOURS if b != behaviour)
            truth = float(pd.read_csv(obd / target / campaign / f"{campaign}.csv")["click"].mean())
            logs = open_bandit_to_logs(obd / behaviour / campaign / f"{campaign}.csv",
                                       obd / behaviour / campaign / "item_context.csv")
            policy = candidate_policy(target, n_items[campaign], bts[campaign])
            started = time.perf_counter()
            result = evaluate(logs, {target: policy}, ["click"], ",".join(args.estimators), seed=args.seed)
            seconds = time.perf_counter() - started
            estimates = result.metrics["click"][target].estimates
            row = {"campaign": campaign, "logs": behaviour, "candidate": target, "truth": truth,
                   "seconds": seconds, "model": result.metrics["click"][target].diagnostics.get("reward_model")}
            for ident in args.estimators:
                value = estimates[ident]["value"]
                row[ident] = value
                row[f"{ident}_re"] = abs(value - truth) / truth
            if "auto" in estimates:
                row["auto_selected"] = estimates["auto"]["selected"]
                row["auto_ci"] = (estimates["auto"]["ci_low"], estimates["auto"]["ci_high"])
                row["auto_selection"] = estimates["auto"]["selection"]
            rows.append(row)
            print(f"{campaign:>5} {behaviour:>6} -> {target:<6} truth {truth:.5f}  " +
                  "  ".join(f"{e} {row[e]:.5f}" for e in args.estimators) +
                  (f"  auto={row.get('auto_selected')}" if "auto" in estimates else "") + f"  ({seconds:.1f} s)",
                  flush=True)
    return rows


def markdown(rows: list[dict], estimators: list[str]) -> str:
    mean = {e: float(np.mean([r[f"{e}_re"] for r in rows])) for e in estimators}
    lines = ["| estimator | " + " | ".join(estimators) + " |", "|---" * (len(estimators) + 1) + "|",
             "| mean relative error | " + " | ".join(f"{mean[e]:.3f}" for e in estimators) + " |", "",
             "| campaign | logs | candidate | truth | " + " | ".join(estimators) + " | auto chose |",
             "|---" * (len(estimators) + 5) + "|"]
    for r in rows:
        lines.append(f"| {r['campaign']} | {r['logs']} | {r['candidate']} | {r['truth']:.5f} | "
                     + " | ".join(f"{r[e]:.5f} ({r[f'{e}_re']:.2f})" for e in estimators)
                     + f" | {r.get('auto_selected', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--obd-dir", help="the obd/ folder ({random,bts}/{all,men,women}/*.csv)")
    parser.add_argument("--obp-python", default="/work/obp-env/bin/python" if Path("/work/obp-env/bin/python").exists()
                        else None, help="python of an environment with obp (for the bts candidate)")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / "data" / "obd"))
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--seed", type=int, default=12345, help="BernoulliTS's random_state and livegate's seed")
    parser.add_argument("--n-sim", type=int, default=100_000, help="Monte Carlo draws of BernoulliTS")
    parser.add_argument("--rule", choices=("paired", "tucker-lee"),
                        help="the auto rule to measure (default: livegate's, ope/selection.py DEFAULT_RULE)")
    parser.add_argument("--json", help="write the per-setting rows here")
    parser.add_argument("--markdown", help="write the table here (Markdown)")
    args = parser.parse_args(argv)
    args.estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    if args.rule:
        from livegate.ope import selection
        selection.DEFAULT_RULE = args.rule
    rows = run(args)
    table = markdown(rows, args.estimators)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    if args.markdown:
        Path(args.markdown).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
