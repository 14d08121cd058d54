"""Probes on frozen features (simclr_tf.evaluation.probes): layer choice, kNN, logistic regression."""
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.evaluation.probes import (features_function, knn_accuracy, knn_predict, parse_feature_layer,
                                         probe_accuracy, run_in_order, tsne_2d)
from simclr_tf.models.heads import build_projection_head
from simclr_tf.models.resnet import build_resnet


@pytest.fixture(scope="module")
def tiny_model():
    """A narrow ResNet-18 (h: 64-d) and a 2-layer head (hidden 64, z 16-d) with non-trivial BN statistics."""
    encoder = build_resnet("resnet18", width_multiplier=0.125, image_size=(16, 16))
    head = build_projection_head(64, num_layers=2, output_dim=16)
    rng = np.random.default_rng(0)
    for layer in head.layers:
        if "bn" in layer.name:  # moving statistics away from (0, 1) so inference mode is visible
            weights = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32) for w in weights])
    images = rng.uniform(0, 1, (6, 16, 16, 3)).astype(np.float32)
    return encoder, head, images


def test_parse_feature_layer():
    assert parse_feature_layer("h") == 0
    assert parse_feature_layer("proj1") == 1 and parse_feature_layer("proj12") == 12
    for bad in ("proj0", "z", "proj", "P1", ""):
        with pytest.raises(ValueError):
            parse_feature_layer(bad)


def test_feature_layer_selects_h_proj1_and_proj2(tiny_model):
    encoder, head, images = tiny_model
    features = features_function(encoder, head, ["h", "proj1", "proj2"])(images)
    h, proj1, proj2 = (np.asarray(features[k]) for k in ("h", "proj1", "proj2"))
    assert h.shape == (6, 64) and proj1.shape == (6, 64) and proj2.shape == (6, 16)
    np.testing.assert_allclose(h, encoder(images, training=False), rtol=1e-5, atol=1e-6)
    # Layer 1 by hand: Dense (no bias) -> BN with moving statistics -> ReLU.
    kernel = head.get_layer("proj_dense_1").get_weights()[0]
    gamma, beta, mean, variance = head.get_layer("proj_bn_1").get_weights()
    expected = np.maximum((h @ kernel - mean) / np.sqrt(variance + 1e-5) * gamma + beta, 0)
    np.testing.assert_allclose(proj1, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(proj2, head(h, training=False), rtol=1e-5, atol=1e-6)
    # Inference mode: an image's features do not depend on the rest of the batch.
    alone = np.asarray(features_function(encoder, head, ["proj2"])(images[:1])["proj2"])
    np.testing.assert_allclose(alone[0], proj2[0], rtol=1e-4, atol=1e-5)


def test_missing_head_layer_is_refused(tiny_model):
    encoder, head, _ = tiny_model
    with pytest.raises(ValueError, match="proj3"):
        features_function(encoder, head, ["proj3"])
    with pytest.raises(ValueError):
        features_function(encoder, None, ["proj1"])


def test_run_in_order_stacks_outputs_and_ok_flags():
    dataset = tf.data.Dataset.from_tensor_slices((np.arange(5, dtype=np.float32)[:, None],
                                                  np.array([True, False, True, True, True]))).batch(2)
    outputs, ok = run_in_order(lambda x: x * 2, dataset)
    assert outputs[:, 0].tolist() == [0, 2, 4, 6, 8] and ok.tolist() == [True, False, True, True, True]
    named, _ = run_in_order(lambda x: {"a": x, "b": x + 1}, dataset)
    assert named["b"][:, 0].tolist() == [1, 2, 3, 4, 5]


def _unit(angle_degrees):
    angle = np.radians(angle_degrees)
    return [np.cos(angle), np.sin(angle)]


def test_knn_weights_votes_by_similarity():
    # One class-0 neighbour very close to the query, two class-1 neighbours further away.
    train = np.array([_unit(5), _unit(40), _unit(45), _unit(180)])
    labels = np.array([0, 1, 1, 0])
    query = np.array([_unit(0)]) * 3.0  # scale must not matter: cosine similarity
    # Sharp weights (low temperature): the closest neighbour wins. exp(s/T) for s = cos 5, cos 40, cos 45.
    assert knn_predict(train, labels, query, num_classes=2, k=3, temperature=0.05).tolist() == [0]
    # Nearly uniform weights: the majority of the 3 neighbours wins.
    assert knn_predict(train, labels, query, num_classes=2, k=3, temperature=100.0).tolist() == [1]
    # k = 1 is the nearest neighbour; k larger than the reference set is capped.
    assert knn_predict(train, labels, query, num_classes=2, k=1).tolist() == [0]
    assert knn_accuracy(train, labels, np.array([_unit(42), _unit(178)]), [1, 0], 2, k=10, temperature=0.05) == 1.0


def test_knn_tiny_temperature_does_not_overflow():
    train = np.array([_unit(0), _unit(90)])
    assert knn_predict(train, [0, 1], np.array([_unit(10)]), num_classes=2, k=2, temperature=1e-4).tolist() == [0]


def test_logistic_probe_separates_blobs_whatever_the_feature_scale():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0]], float)
    labels = np.repeat(np.arange(3), 30)
    features = centres[labels] + rng.normal(0, 0.5, (90, 3))
    test_labels = np.repeat(np.arange(3), 10)
    test = centres[test_labels] + rng.normal(0, 0.5, (30, 3))
    assert probe_accuracy(features, labels, test, test_labels) == 1.0
    # Standardisation inside the probe: a feature in wildly different units changes nothing.
    scale = np.array([1e4, 1e-3, 1.0])
    assert probe_accuracy(features * scale, labels, test * scale, test_labels) == 1.0
    assert probe_accuracy(features, labels, test, (test_labels + 1) % 3) == 0.0


def test_tsne_gives_two_coordinates_per_point():
    points = tsne_2d(np.random.default_rng(0).normal(size=(12, 5)), seed=0)
    assert points.shape == (12, 2) and np.isfinite(points).all()
