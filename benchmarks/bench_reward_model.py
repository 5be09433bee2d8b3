"""Speed of livegate's own reward model: `dr` end to end next to its floor, one HistGradientBoosting fit
plus the predictions DR needs.

Usage: python benchmarks/bench_reward_model.py [--n-rows 1000000] [--reward watch_seconds] [--repeat 1]
       [--workdir DIR] [--out-json FILE]          (the issue's measurement: --n-rows 10000000)

Data (written once to the work directory, default a temporary one): n rows = n/3 decisions x 3
positions over 200 streams, a popularity-biased logging policy with logged propensities; context
x_activity, x_hour, x_device (a string category), x_taste_0..3; stream features a_category (a string
category) and a_popularity; rewards click (about 10%) and watch_seconds (0 without a click, lognormal
with one), depending on the context, the stream, its category, the position and their interactions.
Two candidate policies list 3 streams per row (long-format Parquet), so DR needs a prediction for the
logged pair and for 6 candidate pairs per row.

Measured, each in a process of its own (OMP_WAIT_POLICY=PASSIVE; medians over --repeat runs,
alternating):
  floor     one HistGradientBoosting fit with livegate's settings (learning rate, leaf size, L2,
            early stopping on a 10% split) on all n rows, plus predicting every distinct (row, stream)
            pair DR needs (the logged ones and the candidates'), in chunks. Only the fit and the
            predictions are timed: features are built and pairs deduplicated before the clock starts.
  livegate  `livegate evaluate --estimators dr --reward METRIC` end to end: read and validate the logs,
            join both policies, cross-fit 3 folds (inner validation, out-of-fold predictions of every
            pair), estimate, write the JSON. Wall time, CPU time and peak RSS of that process.
The target (issue 13): livegate within 3x of the floor at 1e7 rows.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
N_STREAMS, N_POSITIONS, K = 200, 3, 3
CONTEXT = ["x_activity", "x_hour", "x_device", "x_taste_0", "x_taste_1", "x_taste_2", "x_taste_3"]


def make_data(n: int, workdir: Path, seed: int = 0) -> None:
    """The logs and two candidate policies (see the module docstring); vectorised, chunked by rows."""
    rng = np.random.default_rng(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    n_decisions = -(-n // N_POSITIONS)
    popularity = rng.pareto(1.5, N_STREAMS) + 1.0
    category = rng.integers(0, 12, N_STREAMS)
    embedding = rng.normal(size=(12, 4))
    logging = 0.8 * popularity / popularity.sum() + 0.2 / N_STREAMS
    cumulative = np.cumsum(logging)
    cumulative[-1] = 1.0
    devices = np.array(["android", "ios", "web"])
    category_names = np.array([f"cat_{c:02d}" for c in range(12)])
    schema_written = False
    writers = {}
    chunk = 1 << 21
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        m = hi - lo
        row = np.arange(lo, hi)
        decision, position = row // N_POSITIONS, row % N_POSITIONS
        action = np.searchsorted(cumulative, rng.random(m), side="right")
        activity = rng.lognormal(0.0, 0.5, m)
        hour = rng.integers(0, 24, m)
        device = rng.integers(0, 3, m)
        taste = rng.normal(size=(m, 4))
        affinity = np.einsum("ij,ij->i", taste, embedding[category[action]])
        logit = -2.6 + 0.35 * np.log(popularity[action]) + 0.5 * affinity + 0.3 * np.log(activity) \
            - 0.3 * position + 0.3 * (device == 1) + 0.4 * np.sin(hour / 24 * 2 * np.pi) * (category[action] % 3 == 0)
        click = (rng.random(m) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        watch = np.where(click == 1, rng.lognormal(3.0 + 0.3 * affinity + 0.2 * np.log(popularity[action]), 1.0), 0.0)
        logs = pa.table({"decision_id": decision, "position": position, "action": action,
                         "propensity": logging[action], "click": click, "watch_seconds": watch,
                         "x_activity": activity, "x_hour": hour, "x_device": devices[device],
                         **{f"x_taste_{j}": taste[:, j] for j in range(4)},
                         "a_category": category_names[category[action]], "a_popularity": popularity[action]})
        tables = {"logs": logs}
        for name, shift in (("cand_a", 1), ("cand_b", 7)):
            base = rng.integers(0, N_STREAMS, m)
            acts = (base[:, None] + np.arange(K)[None, :] * shift) % N_STREAMS
            tables[name] = pa.table({"decision_id": np.repeat(decision, K), "position": np.repeat(position, K),
                                     "action": acts.ravel(), "prob": np.tile([0.6, 0.3, 0.1], m)})
        for name, table in tables.items():
            if not schema_written:
                writers[name] = pq.ParquetWriter(workdir / f"{name}.parquet", table.schema)
            writers[name].write_table(table, row_group_size=1 << 20)
        schema_written = True
    for writer in writers.values():
        writer.close()
    (workdir / "made.json").write_text(json.dumps({"n_rows": n, "n_decisions": n_decisions, "seed": seed}))


def floor(workdir: Path, metric: str) -> dict:
    """One fit on all rows + predictions of the distinct pairs DR needs (timed: those two only)."""
    from livegate.ope import reward_model as rm

    columns = ["action", "position", metric, *CONTEXT, "a_category", "a_popularity"]
    logs = pq.read_table(workdir / "logs.parquet", columns=columns).to_pandas(strings_to_categorical=True)
    n = len(logs)
    action = logs["action"].to_numpy()
    position = logs["position"].to_numpy()
    streams = logs.groupby("action")[["a_category", "a_popularity"]].first().reindex(np.arange(N_STREAMS))
    design = rm._Design(logs[CONTEXT], action, N_STREAMS, position, streams.reset_index(drop=True))
    y = logs[metric].to_numpy(dtype=np.float64)
    binary = rm._is_binary(y)
    # the needed pairs: logged + candidates', distinct (row = decision * 3 + position in this data)
    keys = [np.arange(n) * N_STREAMS + action]
    for name in ("cand_a", "cand_b"):
        pol = pq.read_table(workdir / f"{name}.parquet", columns=["decision_id", "position", "action"])
        rows = pol.column("decision_id").to_numpy() * N_POSITIONS + pol.column("position").to_numpy()
        keys.append(rows * N_STREAMS + pol.column("action").to_numpy())
    pairs = np.unique(np.concatenate(keys))
    del keys
    x = design(np.arange(n), action)
    model = rm._hgb(binary, design.categorical, 0, rm._min_leaf(y), True)
    model.set_params(validation_fraction=rm._VALIDATION_FRACTION)
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y)
    fit_s, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    del x
    predict = rm._prediction(model)
    predict_s = predict_cpu = total = 0.0
    for lo in range(0, len(pairs), rm._CHUNK):
        key = pairs[lo:lo + rm._CHUNK]
        xp = design(key // N_STREAMS, key % N_STREAMS)
        start, cpu = time.perf_counter(), time.process_time()
        total += float(np.sum(predict(xp)))
        predict_s += time.perf_counter() - start
        predict_cpu += time.process_time() - cpu
    return {"fit_s": fit_s, "predict_s": predict_s, "floor_s": fit_s + predict_s, "fit_cpu_s": fit_cpu,
            "predict_cpu_s": predict_cpu, "floor_cpu_s": fit_cpu + predict_cpu, "n_trees": int(model.n_iter_),
            "n_pairs": int(len(pairs)), "n_rows": n, "check": total}


# one process measured alone: the same helper as the session benchmark (this folder is on sys.path when run)
from bench_sessions import run_measured  # noqa: E402


def run_floor(workdir: Path, metric: str) -> dict:
    log = workdir / "floor.log"
    measured = run_measured([sys.executable, str(Path(__file__).resolve()), "--floor-only", "--workdir", str(workdir),
                             "--reward", metric], log)
    measured.update(json.loads(log.read_text().strip().splitlines()[-1]))
    return measured


def run_livegate(workdir: Path, metric: str) -> dict:
    out = workdir / "result.json"
    cmd = [sys.executable, "-m", "livegate", "--quiet", "evaluate", "--logs", str(workdir / "logs.parquet"),
           "--policy", f"cand_a={workdir / 'cand_a.parquet'}", "--policy", f"cand_b={workdir / 'cand_b.parquet'}",
           "--reward", metric, "--estimators", "dr", "--ci", "normal", "--out", str(out)]
    measured = run_measured(cmd, workdir / "livegate.log")
    quality = json.loads(out.read_text())["policies"]["cand_a"]["diagnostics"]["reward_model"]
    measured.update(r2=quality.get("r2"), n_trees=quality.get("n_trees"), model_weight=quality.get("model_weight"),
                    validation=quality.get("validation"), skill=quality.get("skill"))
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-rows", type=int, default=1_000_000)
    parser.add_argument("--reward", default="watch_seconds", choices=["watch_seconds", "click"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the data here and reuse it (default: a temporary directory)")
    parser.add_argument("--out-json", type=Path, default=None)
    parser.add_argument("--floor-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_only:
        print(json.dumps(floor(args.workdir, args.reward)))
        return 0
    with tempfile.TemporaryDirectory(prefix="livegate-bench-rm-") as tmp:
        workdir = args.workdir or Path(tmp)
        made = workdir / "made.json"
        if not (made.exists() and json.loads(made.read_text())["n_rows"] == args.n_rows):
            start = time.perf_counter()
            make_data(args.n_rows, workdir)
            print(f"generated {args.n_rows:,} rows in {time.perf_counter() - start:.1f}s", flush=True)
        floors, runs = [], []
        for _ in range(args.repeat):
            floors.append(run_floor(workdir, args.reward))
            runs.append(run_livegate(workdir, args.reward))
        f = {k: statistics.median(r[k] for r in floors) for k in ("floor_s", "fit_s", "predict_s", "floor_cpu_s")}
        lg = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s", "peak_rss_mib")}
        last_floor, last = floors[-1], runs[-1]
        threads = os.environ.get("OMP_NUM_THREADS", "all")
        print(f"{args.n_rows:,} rows, {N_STREAMS} streams, {N_POSITIONS} positions, reward {args.reward}, "
              f"OpenMP threads: {threads}")
        print(f"  floor: one fit on {last_floor['n_rows']:,} rows ({last_floor['n_trees']} trees) {f['fit_s']:.1f} s "
              f"+ predicting {last_floor['n_pairs']:,} distinct pairs {f['predict_s']:.1f} s = {f['floor_s']:.1f} s "
              f"wall ({f['floor_cpu_s']:.1f} s CPU)")
        print(f"  livegate evaluate --estimators dr, end to end: {lg['wall_s']:.1f} s wall "
              f"({lg['wall_s'] / f['floor_s']:.2f}x the floor), {lg['cpu_s']:.1f} s CPU "
              f"({lg['cpu_s'] / f['floor_cpu_s']:.2f}x the floor's), peak RSS {lg['peak_rss_mib']:,.0f} MiB")
        print("  (on a machine shared with other work, compare CPU times: wall times there measure the load)")
        print(f"  reward model: held-out R^2 {last['r2']:.4f}, skill {last['skill']:.4f}, trees per fold "
              f"{last['n_trees']}, lambda per fold {last['model_weight']}, {', '.join(last['validation'])}")
        if args.out_json:
            args.out_json.write_text(json.dumps({"n_rows": args.n_rows, "reward": args.reward, "threads": threads,
                                                 "floor": floors, "livegate": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
