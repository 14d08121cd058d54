"""The optimisation recipes of pretraining and fine-tuning: default optimiser, learning-rate scaling
with the batch, warmup, weight decay (README, "Optimiser"), as plain settings -> optimizer.

The command line (tasks/optimizer_flags.py) and the Python API (simclr_tf.api) both build their
optimizers here, so the two train with the same recipe.
"""
from __future__ import annotations

import dataclasses

from simclr_tf.training.optimizers import build_optimizer
from simclr_tf.training.schedules import scaled_learning_rate, warmup_cosine_schedule, warmup_steps_for

# Adam's learning rate is a per-step size: scaling it with the batch is only done when asked.
UNSCALED_UNLESS_ASKED = ("adam", "adamw", "nadam")
# A default warmup never takes more than this share of the run: the paper's 10 warmup epochs are
# 10% of its 100-epoch runs, and a short run that is all warmup ends at its peak rate, unconverged.
DEFAULT_WARMUP_MAX_SHARE = 0.1
# An explicit warmup covering more than this share of the run leaves little room for the decay.
WARMUP_WARNING_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class OptimizerDefaults:
    """What an unset optimizer / learning rate / scaling / weight decay / warmup means for a recipe."""

    optimizer: str
    lr_scaling: str
    weight_decay: float
    base_lr: dict  # per optimizer name
    warmup_epochs: int
    nesterov: bool = False
    recipe: str = ""  # what the recipe is for, in the run's first lines ("the segmentation default")


# Pretraining: LARS with square-root scaling (paper appendix B.1, best for small batches).
PRETRAIN_DEFAULTS = OptimizerDefaults("lars", "sqrt", 1e-6, {"lars": 0.075, "sgd": 0.075, "adam": 1e-3,
                                                             "adamw": 1e-3, "nadam": 1e-3}, warmup_epochs=10,
                                      recipe="pretraining")
# Classification fine-tuning and linear evaluation (--freeze): the paper's protocol, Nesterov SGD at
# 0.1 x B/256, no warmup, no weight decay. Measured on the demo data (README, "Fine-tuning defaults"),
# Adam at 1e-3 was no better there (full fine-tuning) or worse (frozen encoder).
CLASSIFICATION_DEFAULTS = OptimizerDefaults("sgd", "linear", 0.0, {"lars": 0.1, "sgd": 0.1, "adam": 1e-3,
                                                                    "adamw": 1e-3, "nadam": 1e-4}, warmup_epochs=0,
                                            nesterov=True, recipe="classification")
# Segmentation: Adam at 1e-3, not scaled with the batch; otherwise as classification (an explicit
# --optimizer=sgd still gets 0.1 x B/256 with Nesterov momentum). The SGD protocol is a step of
# 0.006-0.0125 at the batches users have: a fresh U-Net decoder then predicts background everywhere,
# while with Adam it learns the shapes in the first epochs (README, "Fine-tuning defaults").
SEGMENTATION_DEFAULTS = dataclasses.replace(CLASSIFICATION_DEFAULTS, optimizer="adam", recipe="segmentation")


@dataclasses.dataclass(frozen=True)
class ScheduleSettings:
    """A run's choices; None means the recipe's default."""

    batch_size: int
    num_epochs: int
    optimizer: str | None = None
    learning_rate: float | None = None
    lr_scaling: str | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    warmup_epochs: int | None = None
    warmup_steps: int | None = None


@dataclasses.dataclass(frozen=True)
class Warmup:
    """The warmup a run gets, and why: `shortened` when the default was cut to a share of a short
    run, `too_long` when an explicit warmup covers most of the run."""

    steps: int
    shortened: bool = False
    too_long: bool = False


def learning_rate_rule(settings, defaults):
    """(optimizer name, base learning rate, scaling): the scaling is None when the base is used as given
    (Adam, AdamW and NAdam unless a scaling is asked for)."""
    name = settings.optimizer or defaults.optimizer
    base_lr = settings.learning_rate if settings.learning_rate is not None else defaults.base_lr[name]
    if name in UNSCALED_UNLESS_ASKED and settings.lr_scaling is None:
        return name, base_lr, None
    return name, base_lr, settings.lr_scaling or defaults.lr_scaling


def peak_learning_rate(settings, defaults):
    """The schedule's peak: the learning rate (or the default base) scaled with the batch, except that
    Adam, AdamW and NAdam use their rate as given unless a scaling is asked for."""
    _, base_lr, scaling = learning_rate_rule(settings, defaults)
    return base_lr if scaling is None else scaled_learning_rate(base_lr, settings.batch_size, scaling)


def warmup(settings, steps_per_epoch, defaults):
    """The `Warmup`: warmup_steps, else warmup_epochs, else the default shortened to
    `DEFAULT_WARMUP_MAX_SHARE` of the run; never the whole run (one decay step is left)."""
    total_steps = steps_per_epoch * settings.num_epochs
    explicit = settings.warmup_steps is not None or settings.warmup_epochs is not None
    shortened = too_long = False
    if explicit:
        steps = warmup_steps_for(settings.warmup_epochs or 0, steps_per_epoch, settings.warmup_steps)
        too_long = steps > WARMUP_WARNING_SHARE * total_steps
    else:
        steps = warmup_steps_for(defaults.warmup_epochs, steps_per_epoch)
        share = int(round(DEFAULT_WARMUP_MAX_SHARE * total_steps))
        if steps > share:
            steps, shortened = share, True
    return Warmup(min(steps, max(total_steps - 1, 0)), shortened, too_long)


def scheduled_optimizer(settings, steps_per_epoch, defaults, lr_multiplier=1.0):
    """(optimizer, peak learning rate, Warmup): linear warmup then cosine decay to zero.

    `lr_multiplier` scales the whole schedule (an encoder trained at a fraction of the head's rate).
    """
    name = settings.optimizer or defaults.optimizer
    peak_lr = peak_learning_rate(settings, defaults) * lr_multiplier
    total_steps = steps_per_epoch * settings.num_epochs
    plan = warmup(settings, steps_per_epoch, defaults)
    schedule = warmup_cosine_schedule(peak_lr, total_steps, plan.steps)
    weight_decay = defaults.weight_decay if settings.weight_decay is None else settings.weight_decay
    optimizer = build_optimizer(name, schedule, weight_decay=weight_decay, momentum=settings.momentum,
                                nesterov=defaults.nesterov and name == "sgd")
    return optimizer, peak_lr, plan
