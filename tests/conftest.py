"""Shared test setup: the package is importable from a plain checkout, the repo root is known, and tests marked
`slurm` skip without a Slurm cluster (fail under CI=true, where .ci/run must have started one)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "workflow") not in sys.path:
    sys.path.insert(0, str(ROOT / "workflow"))


import pytest  # noqa: E402


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("slurm") is None:
        return
    from slurm_helpers import in_ci, no_slurm_reason

    reason = no_slurm_reason()
    if reason and in_ci():
        pytest.fail(f"CI=true and this test needs Slurm, but {reason}", pytrace=False)
    if reason:
        pytest.skip(reason)
