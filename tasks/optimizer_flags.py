"""The optimiser a training task uses, from the --optimizer / --learning_rate / --lr_scaling /
--weight_decay / --momentum / --warmup_* flags and the task's defaults (README, "Optimiser")."""
import dataclasses

from simclr_tf.training.optimizers import build_optimizer
from simclr_tf.training.schedules import scaled_learning_rate, warmup_cosine_schedule, warmup_steps_for

from .console import say, warn

# Adam's learning rate is a per-step size: scaling it with the batch is only done when asked.
_UNSCALED_UNLESS_ASKED = ("adam", "adamw")
# A default warmup never takes more than this share of the run: the paper's 10 warmup epochs are
# 10% of its 100-epoch runs, and a short run that is all warmup ends at its peak rate, unconverged.
DEFAULT_WARMUP_MAX_SHARE = 0.1
# An explicit warmup covering more than this share of the run leaves little room for the decay.
WARMUP_WARNING_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class OptimizerDefaults:
    """What an unset --optimizer / --learning_rate / --lr_scaling / --weight_decay means for a task."""

    optimizer: str
    lr_scaling: str
    weight_decay: float
    base_lr: dict  # per optimizer name
    warmup_epochs: int
    nesterov: bool = False


# Pretraining: LARS with square-root scaling (paper appendix B.1, best for small batches).
PRETRAIN_DEFAULTS = OptimizerDefaults("lars", "sqrt", 1e-6, {"lars": 0.075, "sgd": 0.075, "adam": 1e-3,
                                                             "adamw": 1e-3}, warmup_epochs=10)
# Fine-tuning / linear evaluation: Nesterov SGD, 0.1 x B/256, no weight decay (the paper's protocol).
FINETUNE_DEFAULTS = OptimizerDefaults("sgd", "linear", 0.0, {"lars": 0.1, "sgd": 0.1, "adam": 1e-3,
                                                             "adamw": 1e-3}, warmup_epochs=0, nesterov=True)


def peak_learning_rate(flag_values, defaults):
    """The schedule's peak: --learning_rate (or the default base) scaled by --lr_scaling, except that
    Adam and AdamW use their rate as given unless --lr_scaling is passed too."""
    name = flag_values.optimizer or defaults.optimizer
    base_lr = flag_values.learning_rate if flag_values.learning_rate is not None else defaults.base_lr[name]
    if name in _UNSCALED_UNLESS_ASKED and flag_values.lr_scaling is None:
        return base_lr
    return scaled_learning_rate(base_lr, flag_values.batch_size, flag_values.lr_scaling or defaults.lr_scaling)


def warmup_steps(flag_values, steps_per_epoch, defaults, announce=True):
    """Warmup steps: --warmup_steps, else --warmup_epochs, else the task's default warmup shortened to
    `DEFAULT_WARMUP_MAX_SHARE` of the run (said when it is). With `announce`, a warmup given
    explicitly that covers more than half the run gets a warning."""
    total_steps = steps_per_epoch * flag_values.num_epochs
    explicit = flag_values.warmup_steps is not None or flag_values.warmup_epochs is not None
    if explicit:
        steps = warmup_steps_for(flag_values.warmup_epochs or 0, steps_per_epoch, flag_values.warmup_steps)
        if announce and steps > WARMUP_WARNING_SHARE * total_steps:
            warn(f"the warmup ({steps} of the run's {total_steps} steps) covers most of the run: the learning rate "
                 "peaks late and has little time to decay (--warmup_epochs / --warmup_steps)")
    else:
        steps = warmup_steps_for(defaults.warmup_epochs, steps_per_epoch)
        share = int(round(DEFAULT_WARMUP_MAX_SHARE * total_steps))
        if steps > share:
            if announce:
                say(f"Warmup: {share} steps, {100 * DEFAULT_WARMUP_MAX_SHARE:g}% of this {flag_values.num_epochs}-epoch "
                    f"run, instead of the default {defaults.warmup_epochs} epochs (--warmup_epochs to choose)")
            steps = share
    return min(steps, max(total_steps - 1, 0))


def optimizer_from_flags(flag_values, steps_per_epoch, defaults, lr_multiplier=1.0, announce=True):
    """(optimizer, peak learning rate) with linear warmup then cosine decay to zero.

    `lr_multiplier` scales the whole schedule (the encoder's optimizer under --encoder_lr_multiplier);
    `announce` says (once) how the warmup was chosen.
    """
    name = flag_values.optimizer or defaults.optimizer
    peak_lr = peak_learning_rate(flag_values, defaults) * lr_multiplier
    total_steps = steps_per_epoch * flag_values.num_epochs
    warmup = warmup_steps(flag_values, steps_per_epoch, defaults, announce)
    schedule = warmup_cosine_schedule(peak_lr, total_steps, warmup)
    weight_decay = defaults.weight_decay if flag_values.weight_decay is None else flag_values.weight_decay
    optimizer = build_optimizer(name, schedule, weight_decay=weight_decay, momentum=flag_values.momentum,
                                nesterov=defaults.nesterov and name == "sgd")
    return optimizer, peak_lr
