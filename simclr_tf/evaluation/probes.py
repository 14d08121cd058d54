"""Probes on frozen features: feature extraction, logistic regression, weighted kNN, t-SNE.

Feature layers are named "h" (the encoder output) or "proj<k>" (the output of projection-head
layer k, the `proj_layer_<k>` layer of models.heads; "proj<last>" is z). Features are always
computed in inference mode: BatchNorm uses its moving statistics, so a probe sees the same
function of each image whatever the batch.
"""
import re

import keras
import numpy as np
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from simclr_tf.models.heads import head_layer_output_names

_PROJ_RE = re.compile(r"^proj(\d+)$")


def parse_feature_layer(name):
    """'h' -> 0, 'proj<k>' -> k (k >= 1); ValueError for anything else."""
    if name == "h":
        return 0
    match = _PROJ_RE.match(name or "")
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"unknown feature layer {name!r}: expected 'h' or 'proj1', 'proj2', ...")
    return int(match.group(1))


def projection_layer_count(projection_head):
    """How many layers the projection head has (its last layer's output is z)."""
    return len(head_layer_output_names(projection_head))


def features_function(encoder, projection_head=None, layers=("h",)):
    """A tf.function mapping an image batch to {layer name: features} for the requested layers.

    Raises ValueError when a "proj<k>" layer is asked for and the head has no layer k (or there is
    no head).
    """
    depths = {name: parse_feature_layer(name) for name in layers}
    head_layers = sorted({d for d in depths.values() if d > 0})
    available = projection_layer_count(projection_head) if projection_head is not None else 0
    missing = [d for d in head_layers if d > available]
    if missing:
        raise ValueError(f"feature layer proj{missing[0]} does not exist: the projection head has "
                         f"{available} layer(s)")
    head_outputs = None
    if head_layers:
        outputs = [projection_head.get_layer(f"proj_layer_{d}").output for d in head_layers]
        head_outputs = keras.Model(projection_head.inputs, outputs)

    @tf.function(reduce_retracing=True)
    def compute(images):
        h = encoder(images, training=False)
        by_depth = {0: h}
        if head_outputs is not None:
            values = head_outputs(h, training=False)
            values = values if isinstance(values, (list, tuple)) else [values]
            by_depth.update(zip(head_layers, values))
        return {name: by_depth[depth] for name, depth in depths.items()}

    return compute


def run_in_order(function, dataset):
    """Applies `function` to every (images, ok) batch of `dataset` (labelled.eval_dataset).

    Returns (outputs, ok): `outputs` stacks the function's results over all images (a NumPy array,
    or a dict of arrays when the function returns a dict) and `ok` marks the decodable images.
    """
    chunks, oks = [], []
    for images, ok in dataset:
        chunks.append(function(images))
        oks.append(ok.numpy())
    ok = np.concatenate(oks) if oks else np.zeros(0, bool)
    if chunks and isinstance(chunks[0], dict):
        return {k: np.concatenate([np.asarray(c[k]) for c in chunks]) for k in chunks[0]}, ok
    return (np.concatenate([np.asarray(c) for c in chunks]) if chunks else np.zeros((0,))), ok


def logistic_regression_probe(train_features, train_labels, seed=0, c=1.0, max_iter=2000):
    """A fitted scikit-learn pipeline: per-feature standardisation (fitted on the training features
    only), then multinomial L2-regularised logistic regression (lbfgs) with inverse strength `c`."""
    probe = make_pipeline(StandardScaler(),
                          LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    return probe.fit(np.asarray(train_features, np.float64), np.asarray(train_labels))


def probe_accuracy(train_features, train_labels, test_features, test_labels, seed=0, c=1.0):
    """Top-1 accuracy on the test features of `logistic_regression_probe` fitted on the train ones."""
    probe = logistic_regression_probe(train_features, train_labels, seed=seed, c=c)
    return float(np.mean(probe.predict(np.asarray(test_features, np.float64)) == np.asarray(test_labels)))


def _l2_normalise(x):
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_predict(train_features, train_labels, test_features, num_classes, k=20, temperature=0.1, chunk=512):
    """Weighted kNN (Wu et al. 2018): cosine similarity, the k most similar training features vote
    for their class with weight exp(similarity / temperature); returns the predicted classes."""
    train = _l2_normalise(train_features)
    test = _l2_normalise(test_features)
    train_labels = np.asarray(train_labels, np.int64)
    k = min(int(k), len(train))
    predictions = []
    for start in range(0, len(test), chunk):
        similarity = test[start:start + chunk] @ train.T
        neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(similarity, neighbours, axis=1).astype(np.float64)
        # Subtracting each row's best similarity leaves the vote unchanged and exp() finite.
        weights = np.exp((top - top.max(axis=1, keepdims=True)) / temperature)
        scores = np.zeros((len(top), num_classes))
        np.add.at(scores, (np.arange(len(top))[:, None], train_labels[neighbours]), weights)
        predictions.append(np.argmax(scores, axis=1))
    return np.concatenate(predictions) if predictions else np.zeros(0, np.int64)


def knn_accuracy(train_features, train_labels, test_features, test_labels, num_classes, k=20, temperature=0.1):
    """Top-1 accuracy of `knn_predict`."""
    predicted = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return float(np.mean(predicted == np.asarray(test_labels))) if len(predicted) else 0.0


def tsne_2d(features, seed=0):
    """2-D t-SNE of `features` with cosine distances (the geometry SimCLR trains), PCA start.

    The perplexity is 30, lowered for small sets (it must stay below the number of points).
    """
    features = np.asarray(features, np.float32)
    perplexity = float(min(30.0, max(1.0, (len(features) - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    return tsne.fit_transform(features)
