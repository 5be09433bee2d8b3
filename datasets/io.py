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
    """Every output path ({option: path}; None: not written) one livegate can write, and none an input:
    one InputError naming each bad option, before any output is written (or any work is done)."""
    from .validation import check_output_path
    problems = [p for option, path in paths.items() if path is not None for p in check_output_path(path, option)]
    if problems:
        raise InputError(problems)
    for path in paths.values():
        if path is not None:
            _check_not_input(Path(path), protected)


def write_atomic(path: str | os.PathLike, data: bytes | str,
                 protected: frozenset[Path] = frozenset(), option: str = "output") -> Path:
    """Write to a temporary file in the target directory, then rename: readers never see half a file.
    `option` names the path in the InputError for one livegate cannot write (e.g. a directory)."""
    check_outputs({option: path}, protected)
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temporary name stays within the file system's name limit however long the target's name is
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # e.g. a read-only directory
        raise InputError(Problem(f"{option} {path}", f"cannot be written ({exc.strerror or exc})",
                                 fix=f"give {option} a path in a writable directory")) from None
    try:
        # mkstemp creates 0600; an output (a report, a CI artifact) gets the mode open() would give it
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
