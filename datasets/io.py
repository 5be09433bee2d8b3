"""Output helpers shared by every layer: atomic writes, deterministic JSON, input fingerprints."""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, Problem


def _check_not_input(path: Path, protected: frozenset[Path]) -> None:
    target = path.resolve()
    if target in protected or any(p.is_dir() and target.is_relative_to(p) for p in protected):
        raise InputError(Problem(str(path), "is one of the inputs; livegate never overwrites an input",
                                 fix="choose another output path"))


def check_outputs(paths: dict[str, str | os.PathLike | None], protected: frozenset[Path] = frozenset()) -> None:
    """Every output path ({option: path}; None: not written) one livegate can write, none an input and
    no two the same file: one InputError naming each bad option, before any output is written (or any
    work is done)."""
    from .validation import check_output_path
    problems = [p for option, path in paths.items() if path is not None for p in check_output_path(path, option)]
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        target = Path(path).resolve()
        if target in seen:
            problems.append(Problem(f"{option} {path}", f"is also the path of {seen[target]}: one output would "
                                    "replace the other", fix=f"give {option} and {seen[target]} different paths"))
        else:
            seen[target] = option
    if problems:
        raise InputError(problems)
    for path in paths.values():
        if path is not None:
            _check_not_input(Path(path), protected)


LOCK_NAME = ".livegate.lock"


def write_atomic(path: str | os.PathLike, data: bytes | str,
                 protected: frozenset[Path] = frozenset(), option: str = "output") -> Path:
    """Write to a temporary file in the target directory, then rename: readers never see half a file.
    `option` names the path in the InputError for one livegate cannot write (e.g. a directory)."""
    return write_all_atomic([(path, data, option)], protected)[0]


def write_all_atomic(items, protected: frozenset[Path] = frozenset()) -> list[Path]:
    """Write a set of outputs, `items` as (path, data, option), so that they appear together or not at
    all: every path is checked first (`check_outputs`), then each output is written to a temporary
    file of its own (mkstemp) in its target directory, and only once all of them are complete are
    they renamed into place (os.replace), one after the other. On any failure before the renames the
    temporaries are removed and the old outputs are left as they were. Returns the paths written.

    Concurrent runs: every file is whole and from one run (its temporary name is unique, the rename
    atomic). A set of two or more files is renamed while holding an advisory lock (fcntl.flock on
    `.livegate.lock` in the first output's directory; where fcntl is unavailable, none), so that two
    livegate runs writing the same set of paths leave the whole set of one of them, never a mix.
    Another program writing the same paths (or a run locking in another directory) can still mix."""
    items = [(Path(path), data.encode("utf-8") if isinstance(data, str) else data, option)
             for path, data, option in items]
    check_outputs({option: path for path, _, option in items}, protected)
    # mkstemp creates 0600; an output (a report, a CI artifact) gets the mode open() would give it
    umask = os.umask(0)
    os.umask(umask)
    temporaries: list[tuple[str, Path]] = []
    try:
        for path, data, option in items:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # the temporary name stays within the file system's name limit however long the target's name is
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
            except OSError as exc:  # e.g. a read-only directory
                raise InputError(Problem(f"{option} {path}", f"cannot be written ({exc.strerror or exc})",
                                         fix=f"give {option} a path in a writable directory")) from None
            temporaries.append((tmp, path))
            os.fchmod(fd, 0o666 & ~umask)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        with _lock(items[0][0].parent if len(items) > 1 else None):
            while temporaries:
                tmp, path = temporaries[0]
                os.replace(tmp, path)
                temporaries.pop(0)
    except BaseException:
        for tmp, _ in temporaries:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    return [path for path, _, _ in items]


class _lock:
    """An exclusive advisory lock on `.livegate.lock` in `directory` (None, or no fcntl: no lock)."""

    def __init__(self, directory: Path | None):
        self._directory = directory
        self._fd = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # Windows
            return self
        if self._directory is None:
            return self
        try:
            self._fd = os.open(self._directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # no lock rather than no outputs
            return self
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        # JSON has no NaN/inf: null says "not defined" honestly.
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    return value


def dumps_json(document: Any) -> str:
    """Deterministic JSON: sorted keys, fixed float repr, no NaN. Same inputs give the same bytes."""
    return json.dumps(_jsonable(document), indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, document: Any, protected: frozenset[Path] = frozenset()) -> Path:
    return write_atomic(path, dumps_json(document), protected)


_PREFETCHED: dict[tuple, Future] = {}


def _identity(path: Path) -> tuple:
    """A file as it is now: a hash started before the file changed is not reused."""
    stat = path.stat()
    return path.resolve(), stat.st_mtime_ns, stat.st_size


def prefetch_fingerprints(*paths: str | os.PathLike | None) -> None:
    """Start hashing these inputs in a background thread (hashlib and file reads release the GIL,
    so the hashing overlaps the evaluation); `fingerprint` then waits for the result."""
    wanted = [Path(p) for p in paths if p is not None and Path(p).is_file()]
    wanted = [p for p in wanted if _identity(p) not in _PREFETCHED]
    if not wanted:
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livegate-fingerprint")
    for path in wanted:
        _PREFETCHED[_identity(path)] = pool.submit(_sha256, path)
    pool.shutdown(wait=False)


def fingerprint(source) -> str:
    """sha256 of a file, of a directory's files (relative names and contents, in sorted order), or of
    an in-memory table (pandas DataFrame or pyarrow Table) as Arrow IPC bytes."""
    if not isinstance(source, (str, os.PathLike)):
        return _table_sha256(source)
    pending = _PREFETCHED.pop(_identity(Path(source)), None)
    return pending.result() if pending is not None else _sha256(Path(source))


def _table_sha256(table) -> str:
    """The same rows and columns give the same hash whether a DataFrame or an Arrow table; the
    DataFrame's index is not data and is left out."""
    import pyarrow as pa
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    table = table.replace_schema_metadata(None)
    digest = hashlib.sha256()

    class _Sink:  # hashes what Arrow writes instead of holding it
        closed = False

        def write(self, data):
            digest.update(data)
            return len(data)

        def flush(self):
            pass

    with pa.ipc.new_stream(pa.PythonFile(_Sink(), mode="w"), table.schema) as writer:
        writer.write_table(table)
    return "sha256:" + digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()
