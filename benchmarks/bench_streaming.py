"""Streaming evaluation in bounded memory, on one machine and on a local Dask cluster (issue 14).

Usage:
    python benchmarks/bench_streaming.py generate [--files 100] [--rows-per-file 1000000]
    python benchmarks/bench_streaming.py run [--runs memory-1e7,stream-1e7,stream-1e8,dask-1e8] [--max-memory 1GB]

Data (generated once, seeded, vectorised; benchmarks/data/ is gitignored): `--files` Parquet files of
`--rows-per-file` logged decisions each (row groups of 262,144 rows) under benchmarks/data/stream-1e8/,
in decision order; stream-1e7/ and stream-1e6/ hold hard links to the first 10 and the first file.
Columns: decision_id int64, action int32 (50 streams, Zipf-like logging policy), propensity, click (int8),
watch_seconds, the compact form of two candidates (pi_cand_a, qpi_cand_a, pi_cand_b, qpi_cand_b: each
puts 0.6/0.3/0.1 on three streams, mixed with 10% uniform exploration) and q_hat (predictions of the
logged stream).

Runs (each `livegate evaluate` in a process of its own; reward watch_seconds; estimators ips,snips,dr
with the q_hat column; the default robust interval; JSON written):
  memory-1e7   the in-memory path on 1e7 rows: the rows-per-second baseline
  stream-1e7   streaming on the same 1e7 rows with --max-memory: its numbers must equal memory-1e7's
  stream-1e8   streaming on 1e8 rows with --max-memory
  dask-1e8     --scheduler local (a LocalCluster of 2 single-threaded worker processes) on 1e8 rows
Each run records wall time, CPU time, and peak RSS: of the livegate process (wait4's ru_maxrss), and of
the whole process tree (the client plus Dask's workers and nannies: the sum of their RSS, sampled every
0.1 s with psutil). OMP/BLAS threads are 1. The 1-minute load average before each run is recorded: the
machine (2 cores) is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# the machine's description, as the session benchmark writes it (this folder is on sys.path when run)
from bench_sessions import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data"
N_ACTIONS = 50
ROW_GROUP = 262_144
CANDIDATES = {"cand_a": 1, "cand_b": 2}   # name -> stride between its three streams
EXPLORE = 0.1                             # uniform exploration mass of each candidate


# --- data --------------------------------------------------------------------------------------

def logging_probabilities() -> np.ndarray:
    w = 1.0 / np.arange(1, N_ACTIONS + 1) ** 0.8
    return w / w.sum()


def q_model(action: np.ndarray) -> np.ndarray:
    """The reward model's prediction of a stream's watch seconds (slightly off the truth below)."""
    return 20.0 + 2.0 * (action % 7)


def make_part(index: int, n: int, seed: int = 0) -> pa.Table:
    """Partition `index`: decisions index*n ... index*n + n-1, generated from (seed, index) alone."""
    rng = np.random.default_rng([seed, index])
    p = logging_probabilities()
    decision = np.arange(index * n, (index + 1) * n, dtype=np.int64)
    action = np.minimum(np.searchsorted(np.cumsum(p), rng.random(n)), N_ACTIONS - 1).astype(np.int32)
    propensity = p[action]
    truth = q_model(action) + 1.0 + 0.5 * (action % 3)
    watch = rng.exponential(truth)
    click = (rng.random(n) < 0.04 + 0.004 * (action % 7)).astype(np.int8)
    columns = {"decision_id": decision, "action": action, "propensity": propensity, "click": click,
               "watch_seconds": watch}
    q_all_mean = float(np.mean(q_model(np.arange(N_ACTIONS))))
    for name, stride in CANDIDATES.items():
        base = np.minimum(np.searchsorted(np.cumsum(p), rng.random(n)), N_ACTIONS - 1)
        streams = (base[:, None] + stride * np.arange(3)[None, :]) % N_ACTIONS
        probs = np.array([0.6, 0.3, 0.1]) * (1 - EXPLORE)
        pi_logged = EXPLORE / N_ACTIONS + np.sum(np.where(streams == action[:, None], probs, 0.0), axis=1)
        q_pi = EXPLORE * q_all_mean + np.sum(probs * q_model(streams), axis=1)
        columns[f"pi_{name}"] = pi_logged
        columns[f"qpi_{name}"] = q_pi
    columns["q_hat"] = q_model(action)
    return pa.table(columns)


def generate(files: int, rows_per_file: int, seed: int = 0, root: Path = DATA) -> dict[str, Path]:
    """Write the partitions (skipping complete ones: generation resumes) and the 1e7/1e6 link folders."""
    full = root / "stream-1e8"
    full.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i in range(files):
        path = full / f"part-{i:05d}.parquet"
        if path.exists():
            try:
                if pq.ParquetFile(path).metadata.num_rows == rows_per_file:
                    continue
            except Exception:  # noqa: BLE001 - a partial file from an interrupted run: write it again
                pass
        tmp = path.with_name("." + path.name + ".tmp")
        pq.write_table(make_part(i, rows_per_file, seed), tmp, row_group_size=ROW_GROUP)
        os.replace(tmp, path)
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{files} files, {time.perf_counter() - start:.0f} s", flush=True)
    links = {"stream-1e7": 10, "stream-1e6": 1}
    out = {"stream-1e8": full}
    for name, count in links.items():
        folder = root / name
        folder.mkdir(exist_ok=True)
        for i in range(min(count, files)):
            target = folder / f"part-{i:05d}.parquet"
            if not target.exists():
                os.link(full / f"part-{i:05d}.parquet", target)
        out[name] = folder
    return out


# --- measuring ---------------------------------------------------------------------------------

def child_env() -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = "1"
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


class TreeRSS:
    """Peak of the summed RSS of a process and all its descendants, sampled every `interval` s."""

    def __init__(self, pid: int, interval: float = 0.1):
        import psutil

        self.root = psutil.Process(pid)
        self.peak = 0
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                for proc in [self.root, *self.root.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_measured(cmd: list[str], log: Path) -> dict:
    """One process: wall and CPU time (its own and its waited-for children's), its own peak RSS, and the
    peak of the process tree's summed RSS (Dask's worker processes included)."""
    load = os.getloadavg()[0]
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env())
        tree = TreeRSS(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        tree_peak = tree.stop()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"{' '.join(cmd[:6])} ... exited {code} (log: {log})")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024,
            "tree_peak_rss_mib": tree_peak / 2**20, "load_1min_before": load}


def evaluate_cmd(folder: Path, out: Path, *, max_memory: str | None = None, scheduler: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "livegate", "--quiet", "evaluate", "--logs", str(folder),
           *[a for name in CANDIDATES for a in ("--policy", name)], "--reward", "watch_seconds",
           "--estimators", "ips,snips,dr", "--out", str(out)]
    if max_memory:
        cmd += ["--max-memory", max_memory]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    return cmd


RUNS = {  # name -> (folder, streaming?, scheduler)
    "memory-1e6": ("stream-1e6", False, None),
    "stream-1e6": ("stream-1e6", True, None),
    "dask-1e6": ("stream-1e6", True, "local"),
    "memory-1e7": ("stream-1e7", False, None),
    "stream-1e7": ("stream-1e7", True, None),
    "dask-1e7": ("stream-1e7", True, "local"),
    "stream-1e8": ("stream-1e8", True, None),
    "dask-1e8": ("stream-1e8", True, "local"),
}


def estimates(document: dict) -> dict:
    """(metric/policy/estimator) -> (value, se, ci_low, ci_high, and the paired difference's) of a result."""
    found = {}
    for metric, by_metric in document["metrics"].items():
        for policy, result in by_metric["policies"].items():
            for estimator, est in result["estimates"].items():
                diff = result.get("vs_baseline", {}).get(estimator, {})
                found[f"{metric}/{policy}/{estimator}"] = (
                    est.get("value"), est.get("se"), est.get("ci_low"), est.get("ci_high"),
                    diff.get("difference"), diff.get("ci_low"), diff.get("ci_high"))
    return found


def max_relative_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a, "the documents list different estimates"
    worst = 0.0
    for key in a:
        for x, y in zip(a[key], b[key]):
            if x is None or y is None or x == y:
                continue
            worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-300))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--files", type=int, default=100)
    g.add_argument("--rows-per-file", type=int, default=1_000_000)
    g.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run")
    r.add_argument("--runs", default="memory-1e7,stream-1e7,stream-1e8,dask-1e8")
    r.add_argument("--max-memory", default="1GB")
    r.add_argument("--results", default=str(DATA / "streaming-results.json"))
    args = parser.parse_args()
    if args.command == "generate":
        start = time.perf_counter()
        folders = generate(args.files, args.rows_per_file, args.seed)
        size = sum(p.stat().st_size for p in folders["stream-1e8"].glob("*.parquet"))
        print(f"generated {args.files} x {args.rows_per_file:,} rows in {time.perf_counter() - start:.0f} s "
              f"({size / 2**30:.2f} GiB of Parquet)")
        return
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["machine"] = machine_info()
    runs = results.setdefault("runs", {})
    for name in [n.strip() for n in args.runs.split(",") if n.strip()]:
        folder_name, streaming, scheduler = RUNS[name]
        folder = DATA / folder_name
        n_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet"))
        out = DATA / f"result-{name}.json"
        cmd = evaluate_cmd(folder, out, max_memory=args.max_memory if streaming else None, scheduler=scheduler)
        print(f"{name}: {n_rows:,} rows ...", flush=True)
        measured = run_measured(cmd, DATA / f"{name}.log")
        document = json.loads(out.read_text())
        measured.update(rows=n_rows, rows_per_s=n_rows / measured["wall_s"],
                        max_memory=args.max_memory if streaming else None, scheduler=scheduler,
                        engine=document.get("data", {}).get("engine"), when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        runs[name] = measured
        print(f"  {measured['wall_s']:.1f} s wall, {measured['cpu_s']:.1f} s CPU, {measured['rows_per_s'] / 1e6:.2f} M rows/s, "
              f"peak RSS {measured['peak_rss_mib']:.0f} MiB (process tree {measured['tree_peak_rss_mib']:.0f} MiB), "
              f"load before {measured['load_1min_before']:.2f}", flush=True)
        results_path.write_text(json.dumps(results, indent=2))
    # identity: streaming and Dask against the in-memory path on the same rows
    for size in ("1e6", "1e7", "1e8"):
        docs = {kind: DATA / f"result-{kind}-{size}.json" for kind in ("memory", "stream", "dask")}
        have = {k: estimates(json.loads(p.read_text())) for k, p in docs.items() if p.exists()}
        for a, b in (("memory", "stream"), ("stream", "dask"), ("memory", "dask")):
            if a in have and b in have:
                diff = max_relative_difference(have[a], have[b])
                results.setdefault("identity", {})[f"{a}-{b}-{size}"] = diff
                print(f"{size}: {a} vs {b}: max relative difference of values and interval ends {diff:.2e}")
    results_path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
