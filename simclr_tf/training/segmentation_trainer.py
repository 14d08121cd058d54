"""Segmentation fine-tuning through `keras.Model.fit`: pixel-wise cross-entropy that ignores 255.

Loss: softmax cross-entropy per pixel (Keras' SparseCategoricalCrossentropy with ignore_class=255),
averaged over the pixels that are not ignored. With class weights w (the dataset then yields a
per-pixel weight map w[label]) it is the weighted mean sum(w_i ce_i) / sum(w_i) over those pixels,
the convention of PyTorch's weighted CrossEntropyLoss, so the loss scale does not depend on the
weights' scale. Logged: `loss` and `pixel_accuracy` (non-ignored pixels, over the epoch).
"""
import keras
import tensorflow as tf

from simclr_tf.data.segmentation import IGNORE_LABEL


def segmentation_loss():
    """The per-pixel loss described in the module docstring (a stock Keras loss object)."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE_LABEL,
                                                      reduction="mean_with_sample_weight")


class SegmentationTrainer(keras.Model):
    """Trains `model` (image -> per-pixel logits) whose encoder is the nested model `encoder`.

    `encoder_optimizer`, when given, updates the encoder's variables while the compiled optimizer
    updates the decoder: two optimizers rather than scaled gradients, because Adam and LARS
    normalise a gradient's scale away. Call `build_optimizers()` after `compile` and before
    restoring a checkpoint.
    """

    def __init__(self, model, encoder, encoder_optimizer=None, **kwargs):
        super().__init__(**kwargs)
        self.segmentation_model = model
        self.encoder_optimizer = encoder_optimizer
        self._encoder_variable_ids = {id(v) for v in encoder.trainable_variables}
        self.pixel_loss = segmentation_loss()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def call(self, images, training=False):
        return self.segmentation_model(images, training=training)

    def _split(self, values=None):
        """(decoder part, encoder part) of trainable_variables, or of a parallel list `values`."""
        variables = self.trainable_variables
        values = variables if values is None else values
        if self.encoder_optimizer is None:
            return list(values), []
        decoder = [v for var, v in zip(variables, values) if id(var) not in self._encoder_variable_ids]
        encoder = [v for var, v in zip(variables, values) if id(var) in self._encoder_variable_ids]
        return decoder, encoder

    def build_optimizers(self):
        """Creates every optimizer variable so a checkpoint can be loaded into them."""
        decoder, encoder = self._split()
        self.optimizer.build(decoder)
        if self.encoder_optimizer is not None:
            self.encoder_optimizer.build(encoder)

    def train_step(self, data):
        images, labels = data[0], data[1]
        weights = data[2] if len(data) > 2 else None
        with tf.GradientTape() as tape:
            logits = self(images, training=True)
            # Keras' loss already divides by the number of replicas (gradients are summed over
            # them), so this is each replica's share; the logged loss undoes the division.
            replica_loss = self.pixel_loss(labels, logits, sample_weight=weights)
        loss = replica_loss * tf.distribute.get_strategy().num_replicas_in_sync
        gradients = tape.gradient(replica_loss, self.trainable_variables)
        decoder_gradients, encoder_gradients = self._split(gradients)
        decoder_variables, encoder_variables = self._split()
        self.optimizer.apply_gradients(zip(decoder_gradients, decoder_variables))
        if self.encoder_optimizer is not None:
            self.encoder_optimizer.apply_gradients(zip(encoder_gradients, encoder_variables))
        self.loss_tracker.update_state(loss)
        labelled = tf.cast(tf.not_equal(labels, IGNORE_LABEL), tf.float32)
        self.accuracy_tracker.update_state(tf.where(labels == IGNORE_LABEL, 0, labels), logits,
                                           sample_weight=labelled)
        return {m.name: m.result() for m in self.metrics}
