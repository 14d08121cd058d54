"""Callbacks that add evaluation numbers to the epoch logs, before the epoch summary and checkpoint
record them: a generic one (used for per-epoch validation) and the kNN monitor of pretraining."""
import keras
import numpy as np

from simclr_tf.evaluation.probes import features_function, knn_accuracy, run_in_order


class EpochMetrics(keras.callbacks.Callback):
    """Every `every` epochs, merges the dict returned by `compute()` into the epoch's logs.

    Place it before EpochStats / ResumableCheckpoint (train_with_checkpoints' extra_callbacks) so
    the numbers appear in the epoch line, history.csv and TensorBoard.
    """

    def __init__(self, compute, every=1):
        super().__init__()
        self.compute = compute
        self.every = int(every)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.every > 0 and (epoch + 1) % self.every == 0:
            logs.update(self.compute())


class KnnMonitor(EpochMetrics):
    """Weighted kNN accuracy of the encoder's h on a labelled validation set (Wu et al. 2018):
    cosine similarity to the reference images' h, the `k` nearest vote with weight
    exp(similarity / temperature). Logged as `knn_accuracy` every `every` epochs.

    `reference` and `validation` are (labelled.eval_dataset, labels) pairs; undecodable images are
    left out. `encoder` is the live encoder being trained (features use BN moving statistics).
    """

    def __init__(self, encoder, reference, validation, num_classes, k=20, temperature=0.1, every=1):
        super().__init__(self._knn_accuracy, every)
        self.features = features_function(encoder)
        self.reference = reference
        self.validation = validation
        self.num_classes = num_classes
        self.k = k
        self.temperature = temperature

    def _features(self, dataset, labels):
        outputs, ok = run_in_order(self.features, dataset)
        return outputs["h"][ok], np.asarray(labels)[ok]

    def _knn_accuracy(self):
        train_h, train_labels = self._features(*self.reference)
        val_h, val_labels = self._features(*self.validation)
        if not len(train_h) or not len(val_h):
            return {}  # nothing decodable to compare: no number rather than a made-up one
        accuracy = knn_accuracy(train_h, train_labels, val_h, val_labels, self.num_classes, self.k, self.temperature)
        return {"knn_accuracy": accuracy}
