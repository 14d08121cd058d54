"""The SimCLR model: encoder + projection head trained with NT-Xent through `keras.Model.fit`."""
import keras
import tensorflow as tf

from simclr_tf.training.loss import nt_xent_loss
from simclr_tf.training.replicas import global_mean_share, num_replicas


class SimCLRModel(keras.Model):
    """Encoder f and projection head g trained so that two views of an image agree.

    `fit` takes a dataset of (view_a, view_b) batches. Both views go through the encoder in ONE
    forward pass (concatenated on the batch axis) so BatchNorm normalises over all 2N views:
    separate passes give each view set its own statistics, which the loss can exploit to cheat.
    """

    def __init__(self, encoder, projection_head, temperature=0.2, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.projection_head = projection_head
        self.temperature = float(temperature)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="contrastive_accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def call(self, images, training=False):
        return self.projection_head(self.encoder(images, training=training), training=training)

    def train_step(self, data):
        view_a, view_b = data
        with tf.GradientTape() as tape:
            projections = self(tf.concat([view_a, view_b], axis=0), training=True)
            z_a, z_b = tf.split(projections, 2, axis=0)
            loss, accuracy = nt_xent_loss(z_a, z_b, self.temperature)
            anchors = tf.cast(tf.shape(projections)[0], loss.dtype)
            share = global_mean_share(loss * anchors, anchors)
        gradients = tape.gradient(share, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self.loss_tracker.update_state(share * num_replicas())
        self.accuracy_tracker.update_state(accuracy)
        return {m.name: m.result() for m in self.metrics}
