"""Running Snakemake from tests: dry-run job counts and isolated copies of the repository."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def snakemake_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]


def run_snakemake(args: list[str], cwd: Path = ROOT, check: bool = True, timeout: int = 1800,
                  env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(snakemake_cmd() + args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table."""
    m = re.search(r"Job stats:\s*\n\s*job\s+count\s*\n[- ]+\n(.*?)\n\s*total\s+(\d+)", output, re.S)
    if not m:
        return {}
    counts = {}
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    counts["total"] = int(m.group(2))
    return counts


def dry_run(targets: list[str], configfiles: list[str] | None = None, cwd: Path = ROOT,
            extra: list[str] | None = None) -> dict[str, int]:
    args = ["-n", "--quiet", "rules", "--nolock", *targets]
    if configfiles:
        args += ["--configfile", *configfiles]
    proc = run_snakemake(args + (extra or []), cwd=cwd)
    return job_counts(proc.stdout + proc.stderr)


def copy_repo(dest: Path) -> Path:
    """The tracked files of the checkout (plus untracked, not ignored ones), without results or the venv."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_symlink():  # as a link: profiles/xdg/snakemake/<name> link to folders
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            (dest / f).symlink_to(os.readlink(src))
        elif src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest
