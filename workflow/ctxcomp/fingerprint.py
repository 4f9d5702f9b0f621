"""Content fingerprints of the files a run reads: what a training checkpoint was made from.

A checkpoint is valid only for the exact inputs that produced it. Settings are hashed as JSON (config.stable_hash);
files and model directories are hashed by content here. Hub ids are fingerprinted by the id itself (their weights
are pinned by the id and revision in the settings).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 8 << 20
#: Files above this size are fingerprinted by size + first and last `_EDGE` bytes: a 180 GB local model directory
#: must not cost minutes at every job start. Weight files are rewritten whole, never patched in the middle.
LARGE_FILE = 1 << 30
_EDGE = 16 << 20


def file_sha256(path: str | Path) -> str:
    """sha256 of a whole file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _file_fingerprint(path: Path) -> str:
    size = path.stat().st_size
    if size <= LARGE_FILE:
        return file_sha256(path)
    h = hashlib.sha256(f"size={size}".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_EDGE))
        fh.seek(size - _EDGE)
        h.update(fh.read(_EDGE))
    return "edges:" + h.hexdigest()


def path_fingerprint(path: str | Path) -> str:
    """Fingerprint of a file or a directory tree (relative names + content); `hub:<id>` for a path that does not
    exist locally (a Hugging Face id)."""
    p = Path(path)
    if not p.exists():
        return f"hub:{path}"
    if p.is_file():
        return _file_fingerprint(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        rel = f.relative_to(p).as_posix()
        if rel.startswith(".") or "/." in rel:  # temporary and hidden files of writers, caches
            continue
        h.update(f"{rel}\0{_file_fingerprint(f)}\n".encode())
    return h.hexdigest()
