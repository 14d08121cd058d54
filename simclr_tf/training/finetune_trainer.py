"""The one fine-tuning trainer: a model (image -> logits) on top of an encoder, trained through
`keras.Model.fit` with a loss and a metric supplied per task by an objective.

Objectives (`ClassificationObjective`, `SegmentationObjective`) turn a batch's targets and logits
into per-element losses and weights (an image for classification, a pixel for segmentation); the
trainer's loss is their weighted mean over the global batch (replicas.global_mean_share), so one
replica-scaling rule serves every task.

`encoder_optimizer`, when given, updates the encoder's variables while the compiled optimizer
updates the rest (head or decoder): two optimizers rather than scaled gradients, because scaling a
gradient does not scale the step of Adam or LARS (they normalise it away); with two optimizers the
encoder's learning-rate schedule is the head's times the multiplier for every optimizer.
"""
import keras
import tensorflow as tf

from simclr_tf.data.augment import IGNORE_LABEL
from simclr_tf.training.replicas import BuiltBeforeFit, global_mean_share, num_replicas, replica_logs


class ClassificationObjective:
    """Softmax cross-entropy of integer labels [B] against logits [B, K]; metric `accuracy`."""

    metric_name = "accuracy"
    model_name = "classifier"

    def losses_and_weights(self, labels, logits, sample_weight=None):
        """(per-image cross-entropy [B], weights [B]: `sample_weight` or 1)."""
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32),
                                                                logits=tf.cast(logits, tf.float32))
        weights = tf.ones_like(losses) if sample_weight is None else tf.cast(sample_weight, tf.float32)
        return losses, weights

    def make_metric(self):
        return keras.metrics.SparseCategoricalAccuracy(name=self.metric_name)

    def update_metric(self, metric, labels, logits, sample_weight=None):
        metric.update_state(labels, logits, sample_weight=sample_weight)


class SegmentationObjective:
    """Per-pixel softmax cross-entropy of label maps [B, H, W] against logits [B, H, W, C], ignoring
    pixels labelled `ignore_label`; optional per-pixel weights [B, H, W] (class weights). The loss is
    the weighted mean sum(w_i ce_i) / sum(w_i) over labelled pixels, the convention of PyTorch's
    weighted CrossEntropyLoss, so its scale does not depend on the weights' scale. Metric
    `pixel_accuracy` over labelled pixels."""

    metric_name = "pixel_accuracy"
    model_name = "segmentation_model"

    def __init__(self, ignore_label=IGNORE_LABEL):
        self.ignore_label = ignore_label

    def _labelled(self, labels):
        labels = tf.cast(labels, tf.int32)
        labelled = tf.not_equal(labels, self.ignore_label)
        return tf.where(labelled, labels, 0), tf.cast(labelled, tf.float32)

    def losses_and_weights(self, labels, logits, sample_weight=None):
        """(per-pixel cross-entropy [B, H, W], weights [B, H, W]: 0 on ignored pixels)."""
        safe_labels, labelled = self._labelled(labels)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=tf.cast(logits, tf.float32))
        weights = labelled if sample_weight is None else labelled * tf.cast(sample_weight, tf.float32)
        return losses, weights

    def make_metric(self):
        return keras.metrics.SparseCategoricalAccuracy(name=self.metric_name)

    def update_metric(self, metric, labels, logits, sample_weight=None):
        safe_labels, labelled = self._labelled(labels)
        metric.update_state(safe_labels, logits, sample_weight=labelled)


class FineTuneTrainer(BuiltBeforeFit, keras.Model):
    """Trains `model` (image -> logits) whose encoder is `encoder`, with `objective`'s loss and metric.

    `fit` takes batches of (images, targets) or (images, targets, sample_weight). Call
    `build_optimizers()` after `compile` and before restoring a checkpoint.
    """

    def __init__(self, model, encoder, objective, encoder_optimizer=None, **kwargs):
        super().__init__(**kwargs)
        # Tracked under the objective's name (`classifier`, `segmentation_model`): checkpoints keep
        # the model's weights under that name, so run folders of earlier versions still resume.
        setattr(self, objective.model_name, model)
        self.objective = objective
        self.encoder_optimizer = encoder_optimizer
        self._encoder_variable_ids = {id(v) for v in encoder.trainable_variables}
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.task_metric = objective.make_metric()

    @property
    def metrics(self):
        return [self.loss_tracker, self.task_metric]

    def call(self, images, training=False):
        return getattr(self, self.objective.model_name)(images, training=training)

    def _split(self, values=None):
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
        head, encoder = self._split()
        self.optimizer.build(head)
        if self.encoder_optimizer is not None:
            self.encoder_optimizer.build(encoder)

    def train_step(self, data):
        images, targets, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            logits = self(images, training=True)
            losses, weights = self.objective.losses_and_weights(targets, logits, sample_weight)
            share = global_mean_share(tf.reduce_sum(losses * weights), tf.reduce_sum(weights))
            scaled = self.optimizer.scale_loss(share)  # a LossScaleOptimizer under mixed_float16
        gradients = tape.gradient(scaled, self.trainable_variables)
        head_gradients, encoder_gradients = self._split(gradients)
        head_variables, encoder_variables = self._split()
        self.optimizer.apply(head_gradients, head_variables)
        if self.encoder_optimizer is not None:
            self.encoder_optimizer.apply(encoder_gradients, encoder_variables)
        self.loss_tracker.update_state(share * num_replicas())
        self.objective.update_metric(self.task_metric, targets, logits)
        return replica_logs(self.metrics)
