"""Classification fine-tuning through `keras.Model.fit`: encoder + head, optionally frozen, optionally
with a smaller learning rate for the encoder."""
import keras
import tensorflow as tf
from keras import layers

from simclr_tf.models.heads import build_classification_head
from simclr_tf.models.resnet import feature_dim


def build_classifier(encoder, num_classes, crop_size, head="linear", freeze=False):
    """Functional model: image [H, W, 3] in [0, 1] -> float32 logits [num_classes].

    With `freeze` (the linear evaluation protocol) the encoder's weights are not trainable AND it is
    called with training=False, so its BatchNorm layers normalise with their moving statistics and
    never update them: the features the head sees are exactly the pretrained encoder's.
    """
    encoder.trainable = not freeze
    images = keras.Input(shape=(*crop_size, 3), name="image")
    h = encoder(images, training=False) if freeze else encoder(images)
    logits = build_classification_head(feature_dim(encoder), num_classes, kind=head)(h)
    return keras.Model(images, logits, name="classifier")


def with_softmax(classifier):
    """The exported model: the same layers with a softmax on top (image -> class probabilities)."""
    probabilities = layers.Softmax(name="probabilities")(classifier.outputs[0])
    return keras.Model(classifier.inputs[0], probabilities, name="classifier")


class ClassifierTrainer(keras.Model):
    """Trains `classifier` (image -> logits) with softmax cross-entropy; logs `loss` and `accuracy`.

    `encoder_optimizer`, when given, updates the encoder's variables while the compiled optimizer
    updates the rest (the head). Two optimizers rather than scaled gradients, because scaling a
    gradient does not scale the step of Adam or LARS (they normalise it away); with two optimizers
    the encoder's learning-rate schedule is the head's times the multiplier for every optimizer.
    Call `build_optimizers()` after `compile` and before restoring a checkpoint.
    """

    def __init__(self, classifier, encoder, encoder_optimizer=None, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.encoder_optimizer = encoder_optimizer
        self._encoder_variable_ids = {id(v) for v in encoder.trainable_variables}
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def call(self, images, training=False):
        return self.classifier(images, training=training)

    def _split_variables(self, values=None):
        """(head part, encoder part) of trainable_variables, or of a parallel list `values`."""
        variables = self.trainable_variables
        values = variables if values is None else values
        if self.encoder_optimizer is None:
            return list(values), []
        head = [v for var, v in zip(variables, values) if id(var) not in self._encoder_variable_ids]
        encoder = [v for var, v in zip(variables, values) if id(var) in self._encoder_variable_ids]
        return head, encoder

    def build_optimizers(self):
        """Creates every optimizer variable (momenta, ...) so a checkpoint can be loaded into them."""
        head, encoder = self._split_variables()
        self.optimizer.build(head)
        if self.encoder_optimizer is not None:
            self.encoder_optimizer.build(encoder)

    def train_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            logits = self(images, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            # Gradients are summed over replicas, so each replica contributes its share.
            replica_loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
        gradients = tape.gradient(replica_loss, self.trainable_variables)
        head_gradients, encoder_gradients = self._split_variables(gradients)
        head_variables, encoder_variables = self._split_variables()
        self.optimizer.apply_gradients(zip(head_gradients, head_variables))
        if self.encoder_optimizer is not None:
            self.encoder_optimizer.apply_gradients(zip(encoder_gradients, encoder_variables))
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(labels, logits)
        return {m.name: m.result() for m in self.metrics}
