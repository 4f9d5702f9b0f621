"""The report index: every artifact with its size and hash, the config hash and commit, and per-cell provenance.

A reader of a table or figure can check from index.md that it came from this config and this code, and which
settings hash and commit produced each underlying result file (a cell trained by older code shows up here).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..io import atomic_write, git_commit

HASH_PREFIX = 12


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifact_rows(out: str | Path, paths: Iterable[str | Path]) -> list[dict]:
    """For each file: its path relative to `out`, size in bytes and sha256 prefix."""
    rows = []
    for p in paths:
        p = Path(p)
        rel = os.path.relpath(p, out)
        rows.append({"path": Path(rel).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)[:HASH_PREFIX]})
    return rows


def _short(x: object) -> str:
    return "—" if x is None or (isinstance(x, float) and pd.isna(x)) or x == "" else str(x)[:HASH_PREFIX]


def render_index(title: str, out: str | Path, artifacts: Iterable[str | Path], config_hash: str,
                 provenance: pd.DataFrame, commit: dict | None = None, note: str = "") -> str:
    """Markdown text of an index (see module docstring). `provenance` is collect.provenance_rows(); `note` (the
    config's report_note) goes under the title."""
    commit = commit if commit is not None else git_commit()
    dirty = commit.get("dirty")
    lines = [f"# {title}", "", *([f"> {note.strip()}", ""] if note.strip() else []),
             f"- Results directory: `{Path(out).as_posix()}`", f"- Config hash: `{config_hash}`",
             f"- Report commit: `{commit.get('commit', 'unknown')}`"
             + (" (uncommitted changes in the work tree)" if dirty else ""), "", "## Artifacts", "",
             "| path | bytes | sha256 |", "|:--|--:|:--|"]
    for row in artifact_rows(out, artifacts):
        lines.append(f"| `{row['path']}` | {row['bytes']} | `{row['sha256']}` |")
    lines += ["", "## Result provenance per cell", ""]
    if provenance is None or provenance.empty:
        lines.append("No result files with provenance were found.")
    else:
        lines += ["| cell | file | settings_hash | commit |", "|:--|:--|:--|:--|"]
        for r in provenance.itertuples(index=False):
            mark = " (dirty)" if r.dirty is True else ""
            file = "(no result files)" if r.file is None or pd.isna(r.file) else f"`{r.file}`"
            lines.append(f"| `{r.cell}` | {file} | `{_short(r.settings_hash)}` | `{_short(r.commit)}`{mark} |")
        commits = sorted({str(c) for c in provenance["commit"].dropna()})
        if len(commits) > 1:
            lines += ["", f"Note: results come from {len(commits)} different commits."]
    return "\n".join(lines) + "\n"


def write_index(path: str | Path, title: str, out: str | Path, artifacts: Iterable[str | Path], config_hash: str,
                provenance: pd.DataFrame, note: str = "") -> Path:
    """Write the index Markdown atomically to `path`; returns it."""
    text = render_index(title, out, artifacts, config_hash, provenance, note=note)
    with atomic_write(path, encoding="utf-8") as fh:
        fh.write(text)
    return Path(path)
