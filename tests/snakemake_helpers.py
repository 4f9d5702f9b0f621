"""Running Snakemake from tests: dry-run job counts and isolated copies of the repository."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the session's background run of the tiny preset (tests/conftest.py starts it, test_pipeline_tiny.py collects it)
TINY_RUN = pytest.StashKey["BackgroundSnakemake"]()


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


class BackgroundSnakemake:
    """A Snakemake run started now in its own process and collected later by `wait` (output in `log`)."""

    def __init__(self, args: list[str], cwd: Path, log: Path, timeout: int = 3000):
        self.args, self.cwd, self.log = args, cwd, log
        self.deadline = time.time() + timeout
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(snakemake_cmd() + args, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                         text=True, env=dict(os.environ))

    def wait(self) -> Path:
        """The run's directory once Snakemake has exited 0; AssertionError with its output otherwise."""
        try:
            rc = self.proc.wait(timeout=max(1.0, self.deadline - time.time()))
        except subprocess.TimeoutExpired as err:
            self.stop()
            raise AssertionError(f"snakemake {' '.join(self.args)} timed out:\n{self.log.read_text()[-4000:]}") from err
        if rc:
            raise AssertionError(f"snakemake {' '.join(self.args)} failed ({rc}):\n{self.log.read_text()[-8000:]}")
        return self.cwd

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # Snakemake lets its running jobs finish on SIGTERM
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
