"""Where the partitions of a streaming evaluation run: in this process (`local_map`) or on a Dask
cluster (`DaskExecutor`). Both are `execute(fn, items) -> [fn(item) for item in items]`, in item order,
so the client merges the partitions' reductions in the same order whichever runs them (bit-identical
results).

`fn` and the items must be picklable for Dask: module-level functions and `functools.partial` of them.
Dask is an optional dependency (`pip install 'livegate[dask]'`), imported only when a DaskExecutor is made.

Faults on Dask:
- a worker that dies (killed, out of memory) while running a task: the scheduler reschedules its tasks
  on the other workers (and the nanny starts a new worker); a task that raises an unexpected exception
  is retried `retries` times. Results do not change: every task is a pure function of its partition.
- bad input found while a task runs (a corrupt partition file: livegate's InputError) is not retried;
  it comes back to the client as the same InputError, with every problem of every failing partition.
- an unreachable scheduler: InputError naming --scheduler within `timeout` seconds.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from livegate.datasets.errors import InputError, Problem

#: how often Dask retries a task that raised an unexpected exception (InputError is never retried)
RETRIES = 2
#: the workers `--scheduler local` starts (one thread each, separate processes)
LOCAL_WORKERS = 2

_INSTALL = "pip install 'livegate[dask]' (or drop --scheduler to evaluate on this machine)"


def local_map(fn: Callable, items: Iterable) -> list:
    """fn over the items in this process, in order (the single-machine executor)."""
    return [fn(item) for item in items]


local_map.mode = "streaming"  # type: ignore[attr-defined]
local_map.describe = lambda: {"mode": "streaming"}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Failed:
    """A task's InputError, carried back as a value rather than raised: Dask then does not retry it (bad
    input stays bad), and the client reports the problems of every failing partition at once, not only
    the first one gathered."""

    problems: tuple


def _run_task(fn: Callable, item: Any):
    try:
        return fn(item)
    except InputError as exc:
        return _Failed(tuple(exc.problems))


def _reraise(results: Sequence) -> list:
    problems = [p for r in results if isinstance(r, _Failed) for p in r.problems]
    if problems:
        raise InputError(list(dict.fromkeys(problems)))
    return list(results)


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise InputError(Problem("--scheduler", "needs Dask's distributed scheduler, which is not installed",
                                 fix=_INSTALL)) from None
    return distributed


def check_address(scheduler: str) -> str:
    """A scheduler's address as given ("local" or SCHEME://HOST:PORT), or an InputError naming --scheduler."""
    if str(scheduler).strip() == "local":
        return "local"
    address = scheduler.strip()
    scheme, sep, rest = address.partition("://")
    host, colon, port = rest.rpartition(":")
    if not sep or scheme not in ("tcp", "tls", "inproc", "ws", "wss") or not colon or not host or \
            (scheme != "inproc" and not port.isdigit()):
        raise InputError(Problem("--scheduler", f"cannot read '{scheduler}'",
                                 fix="write --scheduler tcp://HOST:PORT (a running dask scheduler) or "
                                     "--scheduler local (starts a cluster of 2 workers on this machine)"))
    return address


class DaskExecutor:
    """Runs `fn` over the items on a Dask cluster and gathers the results in item order.

    scheduler: "local" starts a `distributed.LocalCluster` of 2 single-threaded worker processes on this
    machine (closed with the executor); otherwise the address of a running scheduler
    ("tcp://HOST:PORT"), which must be reachable and have at least one worker within `timeout` seconds.
    Use as a context manager, or call close().
    """

    mode = "dask"  # the result document's engine mode

    def __init__(self, scheduler: str, timeout: float = 10.0, *, n_workers: int = LOCAL_WORKERS,
                 retries: int = RETRIES):
        self.scheduler = scheduler
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.cluster = None
        self.client = None
        distributed = _import_distributed()
        if str(scheduler).strip() == "local":
            self._start_local(distributed, n_workers)
        else:
            self._connect(distributed, check_address(str(scheduler)))
        self.address = self.client.scheduler.address
        self.workers = self.n_workers  # recorded when the run starts (a killed worker may be restarting later)

    def _start_local(self, distributed, n_workers: int) -> None:
        import logging

        try:
            # no dashboard, and the scheduler's own HTTP routes (health) on a free port of the loopback
            # interface: never the fixed 8787, which another cluster may hold
            self.cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                                    host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                                    scheduler_kwargs={"dashboard": False},
                                                    silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster, set_as_default=False)
        except Exception as exc:
            self.close()
            raise InputError(Problem("--scheduler", f"could not start a local Dask cluster ({type(exc).__name__}: "
                                     f"{exc})", fix="drop --scheduler to evaluate in this process")) from None

    def _connect(self, distributed, address: str) -> None:
        try:
            self.client = distributed.Client(address, timeout=self.timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise InputError(Problem("--scheduler", f"cannot reach {address} within {self.timeout:g} s "
                                     f"({type(exc).__name__})",
                                     fix="start the scheduler (dask scheduler; dask worker ADDRESS), check the "
                                         "address and the firewall, or use --scheduler local")) from None
        try:
            self.client.wait_for_workers(1, timeout=self.timeout)
        except (OSError, TimeoutError):
            self.close()
            raise InputError(Problem("--scheduler", f"{address} has no workers after {self.timeout:g} s",
                                     fix=f"start workers: dask worker {address}")) from None

    # -- running ------------------------------------------------------------------------------------

    def __call__(self, fn: Callable, items: Iterable) -> list:
        items = list(items)
        if not items:
            return []
        if self.client is None:
            raise RuntimeError("DaskExecutor is closed")
        # keys unique per call (two calls with equal items must not share results), ordered like the items
        run = uuid.uuid4().hex[:12]
        keys = [f"livegate-{run}-{i}" for i in range(len(items))]
        futures = self.client.map(partial(_run_task, fn), items, key=keys, retries=self.retries, pure=False)
        try:
            results = self.client.gather(futures)
        finally:
            for future in futures:
                future.release()
        return _reraise(results)

    @property
    def n_workers(self) -> int:
        if self.client is None:
            return 0
        return len(self.client.scheduler_info().get("workers", {}))

    def describe(self) -> dict:
        """What the result document records about the execution."""
        return {"mode": "dask", "scheduler": "local" if self.cluster is not None else self.address,
                "workers": self.workers, "retries": self.retries}

    def worker_pids(self) -> dict[str, int]:
        """Each worker's process id (tests kill one)."""
        return self.client.run(os.getpid)

    # -- closing ------------------------------------------------------------------------------------

    def close(self) -> None:
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing must not hide the error that led here
                pass
        if cluster is not None:
            try:
                cluster.close()
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "client", None) is not None or getattr(self, "cluster", None) is not None:
            self.close()


def describe_executor(execute: Callable) -> dict:
    """The engine block's execution fields for an executor (local_map, a DaskExecutor, or any callable)."""
    describe = getattr(execute, "describe", None)
    return describe() if callable(describe) else {"mode": "streaming"}


def make_executor(scheduler: str | None, timeout: float = 10.0):
    """local_map without a scheduler, else a DaskExecutor (close it when done)."""
    return local_map if not scheduler else DaskExecutor(scheduler, timeout)
