"""Learning-rate scaling with the batch size, and SimCLR's linear-warmup + cosine-decay schedule."""

from __future__ import annotations

import math

import keras

# The reference batch of the linear scaling rule (Goyal et al. 2017), as in SimCLR.
_REFERENCE_BATCH = 256.0


def scaled_learning_rate(base_lr: float, batch_size: int, scaling: str = "linear") -> float:
    """Peak learning rate for `batch_size`, as SimCLR computes it.

    linear: base_lr * batch_size / 256 (the paper's large-batch default).
    sqrt:   base_lr * sqrt(batch_size) (paper appendix B.1: better for small batches and short
            runs; the maintainers recommend it with base 0.2 or so for CIFAR-size data).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if scaling == "linear":
        return float(base_lr) * batch_size / _REFERENCE_BATCH
    if scaling == "sqrt":
        return float(base_lr) * math.sqrt(batch_size)
    raise ValueError(f"Unknown learning-rate scaling {scaling!r}; expected 'linear' or 'sqrt'.")


def warmup_steps_for(warmup_epochs: float, steps_per_epoch: int, warmup_steps: int | None = None) -> int:
    """Number of warmup steps: an explicit `warmup_steps` wins, else round(epochs * steps/epoch).

    SimCLR counts warmup in epochs (10 by default); the original SimCLR-Tensorflow CLI counted it
    in iterations (1000), which `warmup_steps` reproduces.
    """
    if warmup_steps is not None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        return int(warmup_steps)
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
    return int(round(warmup_epochs * steps_per_epoch))


def warmup_cosine_schedule(
    peak_lr: float, total_steps: int, warmup_steps: int
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warmup from 0 to `peak_lr` over `warmup_steps`, then cosine decay to 0 at `total_steps`.

    lr(step) = peak_lr * step / warmup_steps                                   step < warmup_steps
             = peak_lr * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))  otherwise
    and 0 from `total_steps` on. The first step (step 0) therefore trains at lr 0, as in SimCLR.

    Built on `keras.optimizers.schedules.CosineDecay` (initial 0, `warmup_target`=peak), whose
    values match this formula, so checkpoints and configs need no custom class.

    Edge cases: `warmup_steps` = 0 starts the cosine at the peak. `warmup_steps` >= `total_steps`
    is clamped to `total_steps - 1`, leaving one decay step (CosineDecay needs at least one), so
    the schedule still ends at 0 at `total_steps`.
    """
    total_steps = int(total_steps)
    warmup_steps = int(warmup_steps)
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    warmup_steps = min(warmup_steps, total_steps - 1)
    decay_steps = total_steps - warmup_steps
    if warmup_steps == 0:
        # Without warmup, CosineDecay decays straight from its initial rate; avoids a 0/0 branch.
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=float(peak_lr), decay_steps=decay_steps, alpha=0.0
        )
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=decay_steps,
        alpha=0.0,
        warmup_target=float(peak_lr),
        warmup_steps=warmup_steps,
    )
