"""Random access to a large JSON Lines file, and a data order that is a pure function of (seed, step).

The order depends on nothing but the seed and the step, so a run resumed from step s draws exactly the batches an
uninterrupted run would have drawn, without saving any sampler state.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class JsonlIndex:
    """Byte offsets of every line: O(1) random access without holding millions of records in memory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        offsets = []
        with open(self.path, "rb") as fh:
            pos = 0
            for line in fh:
                if line.strip():
                    offsets.append(pos)
                pos += len(line)
        if not offsets:
            raise ValueError(f"{self.path}: no records")
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._fh = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> dict:
        if self._fh is None:
            self._fh = open(self.path, "rb")
        self._fh.seek(int(self.offsets[i]))
        line = self._fh.readline()
        try:
            return json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path}: record {i} is not valid JSON ({exc.msg})") from exc

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fh"] = None
        return state


def batch_indices(step: int, global_batch: int, n_records: int, seed: int) -> np.ndarray:
    """Record indices of the global batch at `step`: epoch-wise permutations seeded by (seed, epoch)."""
    if n_records < global_batch:
        raise ValueError(f"training set has {n_records} records, fewer than one batch of {global_batch}")
    per_epoch = n_records // global_batch
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_records)
    return perm[k * global_batch : (k + 1) * global_batch]


def rank_slice(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's share of a global batch (strided, so every rank gets the same count)."""
    return indices[rank::world]
