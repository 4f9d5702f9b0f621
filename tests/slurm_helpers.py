"""Is a Slurm cluster reachable from here? Shared by the `slurm`-marked tests (see conftest.py).

Outside CI a missing Slurm skips those tests with the reason; under CI=true it fails them: CI starts the local test
cluster (.ci/run) precisely so that they run.
"""
from __future__ import annotations

import os
import shutil
import subprocess

HINT = "start the local test cluster with `sudo bash workflow/tools/local-slurm/start.sh`"


def no_slurm_reason() -> str | None:
    """Why no Slurm answers here, or None when `sinfo` does."""
    if not shutil.which("sinfo"):
        return f"no Slurm on this machine (`sinfo` not found); {HINT}"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Slurm does not answer (`sinfo`: {exc}); {HINT}"
    if proc.returncode:
        return f"Slurm does not answer (`sinfo` exited {proc.returncode}: {proc.stderr.strip()}); {HINT}"
    return None


def in_ci() -> bool:
    """CI=true, as CI services set it (and as .ci/run tests it)."""
    return os.environ.get("CI", "") == "true"
