"""Benchmark: `livegate track` on N raw events: wall time, peak memory, and the ratio to DuckDB
running the equivalent plain SQL join (impressions joined to their interactions by impression_id,
one aggregate row per impression, written as Parquet: no deduplication, no ASOF attribution, no
lateness, windows, watch rule or sessions).

    python benchmarks/bench_track.py --n-events 10000000 --memory-limit 2GB --threads 2

The events are written once, in chunks of the event simulator (each chunk a Parquet file with its
own impression and event ids), to --data (kept and reused when it already holds the requested
size). Each measured run is a child process that reports its own wall time and peak resident set size
(ru_maxrss, kilobytes on Linux); the runs execute one after the other.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

EVENTS_PER_IMPRESSION = 1.85     # measured on the simulator's defaults (noise included)


def write_events(data: pathlib.Path, n_events: int, chunk_impressions: int) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from livegate.datasets.event_simulator import EventSimulationConfig, simulate_events

    marker = data / "_size.json"
    if marker.exists() and json.loads(marker.read_text())["n_events"] >= n_events:
        return json.loads(marker.read_text())["n_events"]
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    total, chunk = 0, 0
    while total < n_events:
        sim = simulate_events(EventSimulationConfig(n_impressions=chunk_impressions, n_users=chunk_impressions // 50,
                                                    n_unmatched=100, seed=chunk))
        events = sim.events
        offset = np.int64(chunk) * 10**9     # ids of different chunks never meet
        events["impression_id"] = events["impression_id"] + offset
        events["event_id"] = events["event_id"] + offset
        pq.write_table(pa.Table.from_pandas(events, preserve_index=False), data / f"part-{chunk:05d}.parquet",
                       compression="zstd")
        total += len(events)
        chunk += 1
    marker.write_text(json.dumps({"n_events": total, "chunks": chunk}))
    return total


TRACK = """
import resource, sys, time
from livegate.datasets.events import TrackConfig, track
t = time.perf_counter()
r = track(sys.argv[1], sys.argv[2], TrackConfig(memory_limit=sys.argv[3], threads=int(sys.argv[4])))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

PLAIN = """
import resource, sys, time, duckdb, pathlib
files = sorted(str(p) for p in pathlib.Path(sys.argv[1]).glob("*.parquet"))
con = duckdb.connect(config={"memory_limit": sys.argv[3], "threads": int(sys.argv[4])})
con.execute(f"SET temp_directory = '{sys.argv[2]}.spill'")
con.execute("SET enable_progress_bar = false")
t = time.perf_counter()
con.execute(f'''
COPY (
  WITH raw AS (SELECT * FROM read_parquet({files!r}, union_by_name = true)),
  imps AS (SELECT * FROM raw WHERE type = 'impression'),
  inter AS (SELECT * FROM raw WHERE type <> 'impression')
  SELECT i.impression_id, i.timestamp, i.user_id, i.stream, i.propensity,
         max(CASE WHEN e.type = 'click' THEN 1 ELSE 0 END) AS click,
         coalesce(sum(e.value) FILTER (WHERE e.type = 'gift'), 0) AS gift_value
  FROM imps i LEFT JOIN inter e ON e.impression_id = i.impression_id
  GROUP BY ALL
) TO '{sys.argv[2]}' (FORMAT parquet, COMPRESSION zstd)''')
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _child(code: str, *argv: str) -> tuple[float, float]:
    """Run `code` in a fresh interpreter; (seconds, peak RSS in MiB), both as the child reports them."""
    out = subprocess.run([sys.executable, "-c", code, *argv], check=True, capture_output=True, text=True).stdout
    seconds, peak_kib = out.split()[-2:]
    return float(seconds), float(peak_kib) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-events", type=float, default=1e7)
    parser.add_argument("--data", type=pathlib.Path, default=pathlib.Path(tempfile.gettempdir()) / "livegate-bench-events")
    parser.add_argument("--chunk-impressions", type=int, default=500_000)
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    n = write_events(args.data, int(args.n_events), args.chunk_impressions)
    size = sum(p.stat().st_size for p in args.data.glob("*.parquet"))
    print(f"events: {n:,} in {size / 2**20:,.0f} MiB of Parquet ({time.perf_counter() - t0:.0f} s to write or reuse)")
    with tempfile.TemporaryDirectory(prefix="livegate-bench-out-", dir=args.data.parent) as tmp:
        plain_s, plain_mib = _child(PLAIN, str(args.data), f"{tmp}/plain.parquet", args.memory_limit, str(args.threads))
        track_s, track_mib = _child(TRACK, str(args.data), f"{tmp}/logs", args.memory_limit, str(args.threads))
    print(f"plain DuckDB join: {plain_s:,.1f} s, peak RSS {plain_mib:,.0f} MiB")
    print(f"livegate track:    {track_s:,.1f} s, peak RSS {track_mib:,.0f} MiB")
    print(f"ratio track / plain join: {track_s / plain_s:.2f}; {n / track_s:,.0f} events/s "
          f"(memory limit {args.memory_limit}, {args.threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
