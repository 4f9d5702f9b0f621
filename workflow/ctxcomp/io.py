"""Files that are either complete or absent: atomic writes, JSON Lines, provenance stamps.

Every result the pipeline writes goes through `atomic_write`, so an interrupted job never leaves a half-written file
that looks complete (Snakemake would otherwise take it for a finished output on the next run).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import REPO_ROOT, stable_hash


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_PACKAGES = ("torch", "transformers", "tokenizers", "deepspeed", "peft", "sacrebleu", "datasets", "snakemake",
             "openai", "numpy", "scipy", "pandas")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kw: Any) -> Iterator[Any]:
    """Write to a temporary file beside `path` and rename it into place only if the block succeeds. Text is UTF-8
    unless `encoding` says otherwise: results hold non-ASCII text, and a node's locale must not decide the bytes."""
    if "b" not in mode:
        kw.setdefault("encoding", "utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; results are meant to be shared
    try:
        with os.fdopen(fd, mode, **kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, ±inf: a value that could not be computed) replaced by None, and
    numpy/torch scalars and arrays turned into Python values: results are standard JSON, `null` for missing."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if hasattr(obj, "tolist"):  # numpy/torch arrays and scalars
        return finite(obj.tolist())
    if hasattr(obj, "item"):
        return finite(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic, standard JSON (allow_nan=False: NaN/inf become null, see `finite`)."""
    text = json.dumps(finite(obj), indent=2, sort_keys=False, allow_nan=False)
    with atomic_write(path) as fh:
        fh.write(text + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Atomic JSON Lines, one standard-JSON object per line (NaN/inf become null)."""
    n = 0
    with atomic_write(path) as fh:
        for row in rows:
            fh.write(json.dumps(finite(row), ensure_ascii=False, allow_nan=False))
            fh.write("\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[dict]:
    """Read JSON Lines; a bad line (not JSON, not UTF-8) raises ValueError naming the file and line number."""
    rows = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                                 f"{exc.start + 1})") from None
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
    return rows


def git_commit() -> dict:
    """The commit of the pipeline code and whether the work tree had uncommitted changes."""
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit, "dirty": dirty}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(settings: Any = None) -> dict:
    """What made a result: settings and their hash, code commit, package versions, host and time."""
    out = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        **git_commit(),
        "versions": versions(),
    }
    if settings is not None:
        out["settings_hash"] = stable_hash(settings)
        out["settings"] = settings
    return out
