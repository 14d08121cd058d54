"""Build an optimizer by name: LARS for pretraining, SGD / Adam / AdamW for the rest."""

from __future__ import annotations

import keras

from simclr_tf.training.lars import LARS

OPTIMIZER_NAMES = ("lars", "sgd", "adam", "adamw", "nadam")

# Keras' decoupled weight decay matches variables by name; these are the names of BN gamma/beta
# and of biases, which LARS also leaves undecayed (its rule is "rank <= 1").
_NO_DECAY_NAMES = ["bias", "gamma", "beta"]


def build_optimizer(name, learning_rate, weight_decay=0.0, momentum=0.9, nesterov=False):
    """Return a Keras optimizer. `learning_rate` may be a float or a LearningRateSchedule.

    lars:  `LARS` (weight decay added to the gradient before the trust ratio; BN and biases
           excluded), with `momentum` and `nesterov`.
    sgd:   `keras.optimizers.SGD` with `momentum` and `nesterov`.
    adam:  `keras.optimizers.Adam`.
    adamw: `keras.optimizers.AdamW`.
    nadam: `keras.optimizers.Nadam` (Adam with Nesterov momentum; whole-network fine-tuning at 1e-4).

    For sgd, adam, adamw and nadam, `weight_decay` is Keras' own DECOUPLED decay (w -= lr * wd * w each
    step, outside the gradient and the momentum), not an L2 term in the loss; for plain SGD
    without momentum the two coincide. Adam with weight_decay > 0 therefore behaves like AdamW.
    BN gamma/beta and biases are excluded from it, as in LARS.

    Raises ValueError for an unknown name.
    """
    key = str(name).strip().lower()
    wd = float(weight_decay) if weight_decay else None
    if key == "lars":
        return LARS(
            learning_rate=learning_rate,
            momentum=float(momentum),
            weight_decay=wd or 0.0,
            nesterov=nesterov,
        )
    if key == "sgd":
        opt = keras.optimizers.SGD(
            learning_rate=learning_rate, momentum=float(momentum), nesterov=nesterov, weight_decay=wd
        )
    elif key == "adam":
        opt = keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=wd)
    elif key == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=wd or 0.0)
    elif key == "nadam":
        opt = keras.optimizers.Nadam(learning_rate=learning_rate, weight_decay=wd)
    else:
        raise ValueError(f"Unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZER_NAMES)}.")
    if wd:
        opt.exclude_from_weight_decay(var_names=_NO_DECAY_NAMES)
    return opt
