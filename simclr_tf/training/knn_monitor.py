"""The kNN monitor of pretraining: weighted kNN accuracy of the encoder's h, added to the epoch logs."""
import numpy as np

from simclr_tf.evaluation.probes import features_function, knn_accuracy, run_in_order
from simclr_tf.training.callbacks import EpochMetrics


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
