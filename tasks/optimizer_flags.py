"""The optimiser a training task uses, from the --optimizer / --learning_rate / --lr_scaling /
--weight_decay / --momentum / --warmup_* flags and the task's recipe (`training.recipes`; README,
"Optimiser"), saying how the warmup was chosen."""
import dataclasses

from simclr_tf.training import recipes
# The tasks' recipes (what unset optimisation flags mean), imported by the tasks from here.
from simclr_tf.training.recipes import CLASSIFICATION_DEFAULTS, PRETRAIN_DEFAULTS, SEGMENTATION_DEFAULTS  # noqa: F401

from .console import say, warn


def schedule_settings(flag_values):
    """The optimisation flags as a `recipes.ScheduleSettings`."""
    return recipes.ScheduleSettings(**{f.name: getattr(flag_values, f.name)
                                       for f in dataclasses.fields(recipes.ScheduleSettings)})


def peak_learning_rate(flag_values, defaults):
    """The schedule's peak for these flags (see `recipes.peak_learning_rate`)."""
    return recipes.peak_learning_rate(schedule_settings(flag_values), defaults)


def describe_optimizer(flag_values, defaults, peak_lr):
    """The optimiser and peak learning rate in words for a run's first lines, saying which came from the
    recipe's defaults, e.g. "optimizer adam (the segmentation default), peak lr 0.001 (default 0.001,
    unscaled)"."""
    name, base_lr, scaling = recipes.learning_rate_rule(schedule_settings(flag_values), defaults)
    nesterov = " with Nesterov momentum" if defaults.nesterov and name == "sgd" else ""
    chosen = "--optimizer" if flag_values.optimizer else f"the {defaults.recipe or 'recipe'} default"
    base = "--learning_rate" if flag_values.learning_rate is not None else "default"
    rule = {None: f"{base} {base_lr:g}, unscaled", "linear": f"{base} {base_lr:g} x {flag_values.batch_size}/256",
            "sqrt": f"{base} {base_lr:g} x sqrt({flag_values.batch_size})"}[scaling]
    return f"optimizer {name}{nesterov} ({chosen}), peak lr {peak_lr:.4g} ({rule})"


def warmup_steps(flag_values, steps_per_epoch, defaults, announce=True):
    """Warmup steps for these flags (see `recipes.warmup`); with `announce`, says when the default was
    shortened for a short run and warns when a given warmup covers most of the run."""
    plan = recipes.warmup(schedule_settings(flag_values), steps_per_epoch, defaults)
    if announce:
        _announce(plan, flag_values, steps_per_epoch, defaults)
    return plan.steps


def _announce(plan, flag_values, steps_per_epoch, defaults):
    total_steps = steps_per_epoch * flag_values.num_epochs
    if plan.shortened:
        say(f"Warmup: {plan.steps} steps, {100 * recipes.DEFAULT_WARMUP_MAX_SHARE:g}% of this "
            f"{flag_values.num_epochs}-epoch run, instead of the default {defaults.warmup_epochs} epochs "
            "(--warmup_epochs to choose)")
    if plan.too_long:
        warn(f"the warmup ({plan.steps} of the run's {total_steps} steps) covers most of the run: the learning rate "
             "peaks late and has little time to decay (--warmup_epochs / --warmup_steps)")


def optimizer_from_flags(flag_values, steps_per_epoch, defaults, lr_multiplier=1.0, announce=True):
    """(optimizer, peak learning rate) with linear warmup then cosine decay to zero.

    `lr_multiplier` scales the whole schedule (the encoder's optimizer under --encoder_lr_multiplier);
    `announce` says (once) how the warmup was chosen.
    """
    optimizer, peak_lr, plan = recipes.scheduled_optimizer(schedule_settings(flag_values), steps_per_epoch, defaults,
                                                           lr_multiplier)
    if announce:
        _announce(plan, flag_values, steps_per_epoch, defaults)
    return optimizer, peak_lr
