"""Under CI=true a missing Slurm fails: .ci/run stops when the local cluster does not start, and the slurm-marked
tests fail instead of skipping. Outside CI both carry on (the tests skip with the reason)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers_tiny import ROOT


def _fake_ci_repo(tmp_path: Path, start_rc: int) -> Path:
    """.ci/run in a directory where start.sh exits `start_rc` and venv.sh only records that it ran."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(ROOT / ".ci" / "run", repo / ".ci" / "run")
    slurm = repo / "workflow" / "tools" / "local-slurm"
    slurm.mkdir(parents=True)
    (slurm / "start.sh").write_text(f"echo start >> \"$(dirname \"$0\")/calls\"; exit {start_rc}\n")
    (slurm / "stop.sh").write_text("echo stop >> \"$(dirname \"$0\")/calls\"\n")
    (repo / "workflow" / "venv.sh").write_text("echo \"venv $*\" >> workflow/tools/local-slurm/calls\n")
    return repo


def _ci_run(repo: Path, ci: str | None) -> tuple[int, list[str], str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run(["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60)
    calls = repo / "workflow" / "tools" / "local-slurm" / "calls"
    return proc.returncode, calls.read_text().split("\n")[:-1] if calls.exists() else [], proc.stderr


def test_ci_run_fails_when_slurm_does_not_start_under_ci(tmp_path):
    rc, calls, err = _ci_run(_fake_ci_repo(tmp_path, start_rc=1), ci="true")
    assert rc != 0 and calls == ["start"], (rc, calls, err)  # stopped before the test suite
    assert "did not start" in err


def test_ci_run_carries_on_without_slurm_outside_ci(tmp_path):
    rc, calls, _ = _ci_run(_fake_ci_repo(tmp_path, start_rc=1), ci=None)
    assert rc == 0 and calls == ["start", "venv bash workflow/tools/lint.sh", "venv pytest"]


def test_ci_run_stops_the_cluster_it_started(tmp_path):
    rc, calls, _ = _ci_run(_fake_ci_repo(tmp_path, start_rc=0), ci="true")
    assert rc == 0 and calls == ["start", "venv bash workflow/tools/lint.sh", "venv pytest", "stop"]


def _pytest_without_slurm(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """The slurm-marked pipeline test with no `sinfo` on PATH."""
    bin_dir = tmp_path / "bin"  # only python: no sinfo
    bin_dir.mkdir(exist_ok=True)
    # PYTEST_ADDOPTS of the outer run (e.g. another -r) must not change what this inner run reports
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PATH"] = os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])
    if shutil.which("sinfo", path=env["PATH"]):
        env["PATH"] = str(bin_dir)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-rs", "tests/test_slurm_pipeline.py", "-k", "completes"], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300)


def test_ci_run_fails_on_lint_findings_after_running_the_tests(tmp_path):
    repo = _fake_ci_repo(tmp_path, start_rc=0)
    venv = repo / "workflow" / "venv.sh"  # the lint step finds something; the tests pass
    venv.write_text(venv.read_text() + 'case "$*" in *lint.sh*) exit 3;; esac\n')
    rc, calls, err = _ci_run(repo, ci="true")
    assert rc == 3 and calls == ["start", "venv bash workflow/tools/lint.sh", "venv pytest", "stop"], (rc, calls)
    assert "lint checks failed" in err


def test_slurm_tests_fail_under_ci_without_slurm(tmp_path):
    proc = _pytest_without_slurm(tmp_path, ci="true")
    assert proc.returncode == 1, proc.stdout[-2000:]  # an error in setup: the run fails, nothing is skipped
    assert "1 error" in proc.stdout and "skipped" not in proc.stdout
    assert "CI=true and this test needs Slurm" in proc.stdout


def test_slurm_tests_skip_outside_ci_without_slurm(tmp_path):
    proc = _pytest_without_slurm(tmp_path, ci=None)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 skipped" in proc.stdout and "sinfo" in proc.stdout
