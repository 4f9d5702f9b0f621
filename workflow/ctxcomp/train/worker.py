"""Entry point of one rank under `deepspeed` or `torchrun` (see launch.py); accepts the launcher's --local_rank."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--args", required=True, help="JSON written by launch_training")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None)
    ns = ap.parse_args(argv)
    if ns.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(ns.local_rank))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from ctxcomp.train.loop import train_cell

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{os.environ.get('RANK', '0')} %(levelname)s "
                                                   "%(name)s: %(message)s")
    a = json.loads(Path(ns.args).read_text())
    train_cell(a["settings"], a["train_path"], a["probe_path"], a["run_dir"], a["outputs"], engine=a["engine"])


if __name__ == "__main__":
    main()
