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


# The tiny preset end to end (tests/test_pipeline_tiny.py) is most of the suite's time and keeps both cores busy,
# while most other tests use one: when the session selects that module, its run starts right after collection and
# the module's tests go last, so the run proceeds beside every other test and its fixture only collects it.
PIPELINE_MODULE = "test_pipeline_tiny.py"


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.path.name == PIPELINE_MODULE)  # stable: the order is kept otherwise


def pytest_collection_finish(session):
    if session.config.option.collectonly or not any(i.path.name == PIPELINE_MODULE for i in session.items):
        return
    import tempfile

    from snakemake_helpers import TINY_RUN
    from test_pipeline_tiny import start_tiny_run

    base = Path(tempfile.mkdtemp(prefix="ctxcomp-tiny-run-"))
    session.config.stash[TINY_RUN] = start_tiny_run(base)


def pytest_sessionfinish(session, exitstatus):
    from snakemake_helpers import TINY_RUN

    run = session.config.stash.get(TINY_RUN, None)
    if run is not None:
        run.stop()  # a session that ends early (-x, Ctrl-C) leaves no pipeline behind
        import shutil

        shutil.rmtree(run.cwd.parent, ignore_errors=True)
