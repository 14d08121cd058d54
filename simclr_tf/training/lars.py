"""LARS: layer-wise adaptive rate scaling (You, Gitman and Ginsburg 2017), as SimCLR uses it."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="simclr_tf")
class LARS(keras.optimizers.Optimizer):
    """Momentum SGD whose step for each weight tensor is scaled by a trust ratio.

    The update follows the official SimCLR `tf2/lars_optimizer.py` in its default
    (`classic_momentum=True`) mode. For every variable w with gradient g, momentum buffer v,
    learning rate lr (the schedule's value at this step), momentum m, weight decay wd and trust
    coefficient eta:

        adapted variable (not excluded):
            g'          = g + wd * w                          # L2 decay, BEFORE the trust ratio
            trust_ratio = eta * ||w|| / ||g'||   if ||w|| > 0 and ||g'|| > 0, else 1
        excluded variable (BN gamma/beta, biases):
            g'          = g
            trust_ratio = 1
        scaled_lr = lr * trust_ratio
        v_next    = m * v + scaled_lr * g'
        update    = v_next                                   (nesterov: m * v_next + scaled_lr * g')
        w         = w - update

    Norms are Frobenius norms over the whole tensor. The learning rate lives inside the momentum
    buffer ("classic" momentum), so a change of lr affects only new gradients.

    Which variables are excluded: every variable of rank <= 1 (BN gamma and beta and every bias
    are 1-D, convolution and dense kernels never are), plus any variable whose `path` contains one
    of the substrings in `exclude_from_adaptation`. The official code excludes by name
    (`batch_normalization`, `bias`); the rank rule catches the same variables without depending on
    layer names. Excluded variables get neither weight decay nor the trust ratio. (The official
    code would still decay an excluded variable if it matched only `exclude_from_layer_adaptation`;
    with its defaults both lists are the same, as here.)

    `weight_decay` is NOT the Keras base-class decoupled decay (which shrinks w by lr * wd * w
    outside the gradient): it is stored as `lars_weight_decay`, and `self.weight_decay` stays None
    so Keras applies nothing of its own.
    """

    def __init__(
        self,
        learning_rate=0.001,
        momentum=0.9,
        weight_decay=0.0,
        trust_coefficient=0.001,
        nesterov=False,
        exclude_from_adaptation=None,
        name="lars",
        **kwargs,
    ):
        # A config written by get_config() carries weight_decay under our own meaning; the base
        # class must never see it, or it would add its decoupled decay on top of ours.
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}.")
        if float(weight_decay) < 0.0:
            raise ValueError(f"LARS weight_decay must be >= 0, got {weight_decay}.")
        if float(trust_coefficient) <= 0.0:
            raise ValueError(f"LARS trust_coefficient must be > 0, got {trust_coefficient}.")
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.trust_coefficient = float(trust_coefficient)
        self.nesterov = bool(nesterov)
        # A tuple, not a list: the optimizer's attribute tracker wraps lists.
        self.exclude_from_adaptation = tuple(exclude_from_adaptation or ())

    def is_excluded(self, variable) -> bool:
        """True when `variable` gets neither weight decay nor the trust ratio."""
        if len(variable.shape) <= 1:
            return True
        path = getattr(variable, "path", None) or getattr(variable, "name", "")
        return any(pattern in path for pattern in self.exclude_from_adaptation)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._momentums = [self.add_variable_from_reference(v, name="momentum") for v in variables]
        # Decided once here, on the Keras variables (update_step may only see the backend's
        # tf.Variable, which has no `path`); indexed like the momentum slots.
        self._adapt = tuple(not self.is_excluded(v) for v in variables)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        velocity = self._momentums[index]
        lr = ops.cast(learning_rate, dtype)
        grad = ops.cast(gradient, dtype)
        momentum = ops.cast(self.momentum, dtype)

        if self._adapt[index]:
            if self.lars_weight_decay > 0.0:
                grad = ops.add(grad, ops.multiply(ops.cast(self.lars_weight_decay, dtype), variable))
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(grad)))
            both_positive = ops.logical_and(ops.greater(w_norm, 0.0), ops.greater(g_norm, 0.0))
            # Safe denominator: the unused branch of `where` must not produce inf/nan.
            ratio = self.trust_coefficient * w_norm / ops.where(both_positive, g_norm, 1.0)
            trust_ratio = ops.where(both_positive, ratio, ops.ones_like(ratio))
            scaled_lr = ops.multiply(lr, trust_ratio)
        else:
            scaled_lr = lr

        step = ops.multiply(scaled_lr, grad)
        next_v = ops.add(ops.multiply(momentum, velocity), step)
        self.assign(velocity, next_v)
        if self.nesterov:
            update = ops.add(ops.multiply(momentum, next_v), step)
        else:
            update = next_v
        self.assign_sub(variable, update)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.lars_weight_decay,
                "trust_coefficient": self.trust_coefficient,
                "nesterov": self.nesterov,
                "exclude_from_adaptation": list(self.exclude_from_adaptation) or None,
            }
        )
        return config
