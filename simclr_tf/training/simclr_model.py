"""The SimCLR model: encoder + projection head trained with a contrastive loss through `keras.Model.fit`."""
import keras
import tensorflow as tf

from simclr_tf.training.loss import dcl_loss, nt_xent_loss, von_mises_fisher_weight
from simclr_tf.training.replicas import BuiltBeforeFit, global_mean_share, num_replicas, replica_logs

# The contrastive losses by name: (z_a, z_b, temperature) -> (loss, contrastive accuracy).
LOSSES = {
    "nt_xent": nt_xent_loss,
    "dcl": dcl_loss,
    "dclw": lambda z_a, z_b, temperature: dcl_loss(z_a, z_b, temperature, weight_fn=von_mises_fisher_weight()),
}


# The gradient is that of the official code's loss, the SUM of the two directions (each a mean over
# the N anchors of one view set), which is twice the mean over the 2N anchors we report. Under LARS
# the size of the gradient matters only against weight decay (the trust ratio normalises the rest),
# so this makes --weight_decay mean what it means in the official code (README, "Parity with the
# official code": with the official convolution initialiser, this closed a 14-point probe gap at
# the official recipe).
GRADIENT_SCALE = 2.0


class SimCLRModel(BuiltBeforeFit, keras.Model):
    """Encoder f and projection head g trained so that two views of an image agree.

    `fit` takes a dataset of (view_a, view_b) batches, or, with `view_maker`, of (images, seeds)
    batches from which `view_maker(images, seeds) -> (view_a, view_b)` makes the views inside the
    training step (augmentation on the accelerator, `data.batch_augment`). Both views go through the
    encoder in ONE forward pass (concatenated on the batch axis) so BatchNorm normalises over all 2N
    views: separate passes give each view set its own statistics, which the loss can exploit to cheat.

    `loss` names one of `LOSSES` (NT-Xent, or the decoupled loss DCL / DCLW for small batches). Under
    a mixed_float16 policy the compiled optimizer is Keras' LossScaleOptimizer, which `scale_loss`
    and `apply` use; under other policies both are plain.
    """

    def __init__(self, encoder, projection_head, temperature=0.2, loss="nt_xent", view_maker=None, **kwargs):
        super().__init__(**kwargs)
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
        self.encoder = encoder
        self.projection_head = projection_head
        self.temperature = float(temperature)
        self.loss_name = loss
        self.view_maker = view_maker
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="contrastive_accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def call(self, images, training=False):
        return self.projection_head(self.encoder(images, training=training), training=training)

    def train_step(self, data):
        if self.view_maker is not None:
            view_a, view_b = self.view_maker(*data)
        else:
            view_a, view_b = data
        with tf.GradientTape() as tape:
            projections = self(tf.concat([view_a, view_b], axis=0), training=True)
            z_a, z_b = tf.split(projections, 2, axis=0)
            loss, accuracy = LOSSES[self.loss_name](z_a, z_b, self.temperature)
            anchors = tf.cast(tf.shape(projections)[0], loss.dtype)
            share = global_mean_share(loss * anchors, anchors)
            scaled = self.optimizer.scale_loss(share * GRADIENT_SCALE)
        gradients = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.loss_tracker.update_state(share * num_replicas())
        self.accuracy_tracker.update_state(accuracy)
        return replica_logs(self.metrics)
