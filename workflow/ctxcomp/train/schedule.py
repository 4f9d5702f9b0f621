"""Learning-rate schedule: a pure function of the step, so a resumed run continues on the same curve."""
from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """1) linear warm-up over `warmup_steps`; 2) cosine decay to base_lr*min_lr_ratio at `max_steps`; 3) flat after."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return base_lr * min_lr_ratio
    span = max(1, max_steps - warmup_steps)
    progress = (step - warmup_steps) / span
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * coeff)
