"""Training checkpoints: complete, verified and of the same run, or not used.

A checkpoint holds what an uninterrupted run would still have in memory: trainable weights, optimizer state, the
step, every RNG state and the loss log so far. Resuming from it gives bit-identical results on CPU.

Three guarantees on top of that:
- *Complete*: a step directory counts only once `MANIFEST.json` (size and sha256 of every file, the step and the run
  hash) and then `COMPLETE` are written, after every file of every rank.
- *Verified*: before a checkpoint is loaded its files are checked against the manifest; a truncated or altered one
  is set aside (named `corrupt-step_…`, or deleted) with the file named in the log, and the previous one is used
  (`keep_checkpoints` >= 2).
- *Same run*: the manifest carries the hash of everything that determines training (settings, data and model
  fingerprints: `run_hash`). A run directory whose state (`RUN.json`, any checkpoint) has another hash, or none,
  is set aside as a whole (`stale/<old hash>-<time>/`, or deleted) and training starts from step 0.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import random
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..fingerprint import file_sha256
from ..io import atomic_dir, atomic_write

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d{8})$")
STATE_FILE = "state.pt"
MANIFEST_FILE = "MANIFEST.json"
COMPLETE_FILE = "COMPLETE"
RUN_FILE = "RUN.json"
STALE_DIR = "stale"
_SHARE = ".manifest-rank{rank:05d}.json"
_UNHASHED = {MANIFEST_FILE, COMPLETE_FILE}


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names the directory and the file."""


def rng_state() -> dict[str, Any]:
    # the global NumPy state, not a Generator: libraries that draw from np.random (datasets, peft) resume too
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}  # noqa: NPY002
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (COMPLETE written), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / COMPLETE_FILE).exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> tuple[int, Path] | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


# ------------------------------------------------------------------------------------------------- manifests
def _payload(path: Path) -> list[str]:
    """Files a manifest covers: everything in the step directory but the manifest machinery and hidden (temporary)
    files, sorted."""
    return sorted(f.relative_to(path).as_posix() for f in path.rglob("*")
                  if f.is_file() and f.name not in _UNHASHED and not f.name.startswith("."))


def hash_share(path: str | Path, rank: int = 0, world: int = 1) -> dict[str, dict]:
    """{relative name: {size, sha256}} of this rank's share of the files (every world-th, by name)."""
    path = Path(path)
    return {rel: {"size": (path / rel).stat().st_size, "sha256": file_sha256(path / rel)}
            for rel in _payload(path)[rank::world]}


def write_share(path: str | Path, rank: int, world: int) -> None:
    """Multi-rank save: each rank hashes its share of the files into a partial manifest."""
    path = Path(path)
    share = hash_share(path, rank, world)  # before the share file's own temporary file exists
    with atomic_write(path / _SHARE.format(rank=rank)) as fh:
        json.dump(share, fh)


def finalize(path: str | Path, step: int, run_hash: str | None, world: int = 0) -> None:
    """Write MANIFEST.json and then COMPLETE. world=0: hash every file here; else merge the ranks' shares."""
    path = Path(path)
    if world:
        files: dict[str, dict] = {}
        for rank in range(world):
            share = path / _SHARE.format(rank=rank)
            files.update(json.loads(share.read_text()))
            share.unlink()
        missing = sorted(set(_payload(path)) - set(files))
        if missing:
            raise CheckpointError(f"{path}: files written by no rank's share: {missing[:5]}")
    else:
        files = hash_share(path)
    manifest = {"step": step, "run_hash": run_hash, "files": files}
    with atomic_write(path / MANIFEST_FILE) as fh:
        json.dump(manifest, fh, indent=1)
    with atomic_write(path / COMPLETE_FILE) as fh:
        fh.write(str(step))


def read_manifest(path: str | Path) -> dict | None:
    try:
        return json.loads((Path(path) / MANIFEST_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def verify(path: str | Path, level: str = "sha256", rank: int = 0, world: int = 1) -> list[str]:
    """Problems of a checkpoint against its manifest, each naming the file ([] = usable). Every rank checks every
    size; `level` sha256 also checks the content of this rank's share of the files."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        return [f"{path / MANIFEST_FILE}: missing or unreadable (written by an older version, or cut short)"]
    problems = []
    names = sorted(manifest["files"])
    for rel in names:
        f = path / rel
        want = manifest["files"][rel]
        if not f.is_file():
            problems.append(f"{f}: missing")
        elif f.stat().st_size != want["size"]:
            problems.append(f"{f}: {f.stat().st_size} bytes, the manifest says {want['size']} (truncated?)")
    if level == "sha256" and not problems:
        for rel in names[rank::world]:
            if file_sha256(path / rel) != manifest["files"][rel]["sha256"]:
                problems.append(f"{path / rel}: content differs from its sha256 in the manifest")
    return problems


# -------------------------------------------------------------------------------------------- torch engine
def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only parameters that train (compressor or its LoRA, memory, adapter, markers): never the frozen decoder."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def save_checkpoint(root: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    extra: dict[str, Any], keep: int, run_hash: str | None = None) -> Path:
    target = step_dir(root, step)
    with atomic_dir(target) as tmp:
        torch.save({"step": step, "model": trainable_state(model), "optimizer": optimizer.state_dict(),
                    "rng": rng_state(), **extra}, tmp / STATE_FILE)
        finalize(tmp, step, run_hash)
    prune(root, keep)
    log.info("checkpoint saved: %s", target)
    return target


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    state_file = Path(path) / STATE_FILE
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch's errors name neither the file nor the checkpoint
        raise CheckpointError(f"{state_file}: cannot be read ({type(exc).__name__}: {exc})") from exc
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected:
        raise CheckpointError(f"checkpoint {path} holds parameters this model lacks: {unexpected[:5]}")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    absent = trainable - set(state["model"])
    if absent:
        raise CheckpointError(f"checkpoint {path} lacks trainable parameters {sorted(absent)[:5]}: "
                              "was it written by a different architecture or fine-tuning mode?")
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state


def prune(root: str | Path, keep: int) -> None:
    for _, p in list_checkpoints(root)[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------------------- stale and corrupt
def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%dT%H%M%S")


def set_aside(paths: Iterable[str | Path], dest: Path, policy: str) -> list[str]:
    """Move the existing `paths` into `dest` (policy move) or delete them (delete); returns what was handled."""
    done = []
    for p in map(Path, paths):
        if not p.exists():
            continue
        if policy == "delete":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        else:
            dest.mkdir(parents=True, exist_ok=True)
            p.rename(dest / p.name)
        done.append(str(p))
    return done


def quarantine(path: str | Path, policy: str) -> str:
    """Take a corrupt checkpoint out of use: renamed `corrupt-<name>-<time>` beside it, or deleted."""
    path = Path(path)
    if policy == "delete":
        shutil.rmtree(path, ignore_errors=True)
        return "deleted"
    dest = path.with_name(f"corrupt-{path.name}-{_stamp()}")
    path.rename(dest)
    return f"moved to {dest}"


def recorded_hashes(run_dir: Path, ckpt_root: Path) -> dict[str, str | None]:
    """The run hash each piece of saved state claims: RUN.json and every complete checkpoint."""
    out: dict[str, str | None] = {}
    run_file = run_dir / RUN_FILE
    if run_file.exists():
        try:
            out[str(run_file)] = json.loads(run_file.read_text()).get("run_hash")
        except json.JSONDecodeError:
            out[str(run_file)] = None
    for _, p in list_checkpoints(ckpt_root):
        m = read_manifest(p)
        out[str(p)] = m.get("run_hash") if m else None
    return out


def reset_if_stale(run_dir: str | Path, ckpt_root: str | Path, state_paths: list[str | Path], run_hash: str,
                   policy: str, max_steps: int) -> bool:
    """If any saved state of `run_dir` was made by other settings, data or models (or cannot say), set all of it
    aside and record `run_hash` as the new run. True when state was reset. Rank 0 only."""
    run_dir, ckpt_root = Path(run_dir), Path(ckpt_root)
    claims = recorded_hashes(run_dir, ckpt_root)
    beyond = [str(p) for s, p in list_checkpoints(ckpt_root) if s > max_steps]
    other = {where: h for where, h in claims.items() if h != run_hash}
    leftovers = [p for p in [ckpt_root, *map(Path, state_paths)] if Path(p).exists()]
    reset = bool(other or beyond or (leftovers and not claims))
    if reset:
        old = next((h for h in other.values() if h), None) or "unknown"
        dest = run_dir / STALE_DIR / f"{old[:12]}-{_stamp()}"
        handled = set_aside([ckpt_root, *state_paths, run_dir / RUN_FILE], dest, policy)
        why = (f"{len(other)} saved state file(s) of other settings (hash {old[:12]}, now {run_hash[:12]})"
               if other else f"checkpoint(s) beyond max_steps={max_steps}: {beyond}" if beyond
               else "saved state without a recorded run hash")
        log.warning("%s: %s; %s %s; training starts from step 0", run_dir, why,
                    "deleted" if policy == "delete" else f"moved to {dest}:", ", ".join(handled))
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(run_dir / RUN_FILE) as fh:
        json.dump({"run_hash": run_hash}, fh)
        fh.write("\n")
    return reset
