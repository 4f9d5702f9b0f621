"""Per-rule logging: a job's stdout, stderr and `logging` records all go to its Snakemake log file."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any


def setup_job(smk: Any = None, log_path: str | os.PathLike | None = None, threads: int | None = None) -> None:
    """Send output to the rule's log, and size torch's thread pools to the job's `threads`."""
    if smk is not None:
        log_path = log_path or (smk.log[0] if len(smk.log) else None)
        threads = threads or getattr(smk, "threads", None)
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        fh = open(log_path, "a", buffering=1, encoding="utf-8")
        sys.stdout = fh
        sys.stderr = fh
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        try:
            import torch

            torch.set_num_threads(int(threads))
        except ImportError:
            pass
