"""What every headline number must beat, and its interval: the controls of one evaluation task.

- shuffled_z: the same measurement with each sample's memory replaced by the memory of ANOTHER sample of the same
  evaluation set, by a fixed derangement (a seeded random cycle: no sample keeps its own memory, every memory is used
  once). A decoder that reads its memory must beat this; one that ignores Z scores the same.
- no_memory (knowledge overwriting): the decoder's prior - the same rows with no memory vectors at all (the
  <mem> </mem> <task> markers kept), so what the decoder answers from the question alone.
- chance (knowledge overwriting): the mean of 1 / #candidates.
Each control carries its own value and interval, the paired-bootstrap interval of value - control over the same
units (samples; contexts for semantic drift) and `distinguishable` = that interval lies above 0.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..metrics import bootstrap as bs
from ..settings import CellEvalSettings


@dataclass(frozen=True)
class Bootstrap:
    """Resampling settings of a run: `evaluate.bootstrap_resamples` and the run's seed."""

    resamples: int = bs.DEFAULT_RESAMPLES
    seed: int = 0

    def meta(self, unit: str) -> dict:
        return {"resamples": self.resamples, "seed": self.seed, "unit": unit}

    @classmethod
    def of(cls, run: CellEvalSettings) -> Bootstrap:
        return cls(run.evaluate.bootstrap_resamples, run.seed)


def derangement(n: int, seed: int) -> list[int] | None:
    """perm with perm[i] != i for all i: a uniformly random n-cycle (Sattolo's algorithm), fixed by the seed.

    None for fewer than two samples (no other sample to take a memory from).
    """
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))  # j < i: Sattolo, not Fisher-Yates, so the result is one cycle
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def headline(stats: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], boot: Bootstrap, unit: str) -> dict:
    """{"value", "ci95", "bootstrap"} of a task's number from its per-unit statistics."""
    return {**bs.interval(stats, statistic, boot.resamples, boot.seed), "bootstrap": boot.meta(unit)}


def versus(stats: np.ndarray, control: np.ndarray | None, statistic: Callable[[np.ndarray], np.ndarray],
           boot: Bootstrap) -> dict:
    """One control entry: its value and interval, the paired interval of value - control and `distinguishable`."""
    if control is None:
        return {"value": None, "ci95": None, "diff_ci95": None, "distinguishable": None}
    return bs.paired_difference(stats, control, statistic, boot.resamples, boot.seed)


def chance(n_candidates: Sequence[int]) -> dict:
    return {"value": float(np.mean([1.0 / k for k in n_candidates])) if len(n_candidates) else None}
