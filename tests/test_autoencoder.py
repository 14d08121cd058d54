"""Denoising autoencoder (G-SimCLR pseudo-labels) and k-means pseudo-labels of its latents."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from simclr_tf.evaluation.clustering import kmeans_pseudo_labels, preprocess_vectors  # noqa: E402
from simclr_tf.models.autoencoder import build_denoising_autoencoder, latent_vectors  # noqa: E402


def _smooth_images(count, height, width, seed=0):
    """Random low-frequency colour fields in [0, 1]: 3x3 noise upsampled bilinearly."""
    coarse = np.random.default_rng(seed).uniform(0, 1, (count, 3, 3, 3)).astype(np.float32)
    return tf.image.resize(coarse, (height, width), method="bilinear").numpy().clip(0, 1)


@pytest.mark.parametrize("size", [(32, 32), (24, 40), (17, 9)])
def test_shapes_for_any_image_size(size):
    autoencoder, encoder = build_denoising_autoencoder(size, latent_dim=8, widths=(4, 8))
    images = _smooth_images(2, *size)
    reconstruction = autoencoder(images, training=False).numpy()
    assert reconstruction.shape == (2, *size, 3) and reconstruction.dtype == np.float32
    assert reconstruction.min() >= 0 and reconstruction.max() <= 1
    assert encoder(images).shape == (2, 8)
    # The encoder is the autoencoder's: same weights, no noise of its own.
    assert autoencoder.get_layer("ae_encoder") is encoder
    assert not any(isinstance(layer, keras.layers.GaussianNoise) for layer in encoder.layers)


def test_noise_only_in_training():
    autoencoder, _ = build_denoising_autoencoder(16, latent_dim=8, widths=(4, 8), noise_std=0.2)
    images = _smooth_images(2, 16, 16)
    np.testing.assert_array_equal(autoencoder(images, training=False), autoencoder(images, training=False))
    noise = autoencoder.get_layer("noise")
    np.testing.assert_array_equal(noise(images, training=False), images)
    assert np.std(noise(images, training=True) - images) == pytest.approx(0.2, rel=0.1)


def test_a_few_training_steps_lower_the_reconstruction_loss():
    keras.utils.set_random_seed(0)
    images = _smooth_images(32, 24, 40)  # not powers of two
    mean_image_loss = float(np.mean((images - images.mean(axis=0)) ** 2))  # what "no content" scores
    autoencoder, encoder = build_denoising_autoencoder((24, 40), latent_dim=16, widths=(16, 32),
                                                       noise_std=0.05)
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")

    def loss():  # inference mode: no noise, BN moving statistics
        return float(np.mean((autoencoder(images, training=False).numpy() - images) ** 2))

    before = loss()
    autoencoder.fit(images, images, batch_size=8, epochs=15, verbose=0, shuffle=False)  # 60 steps
    after = loss()
    # Below the mean image's loss: the reconstructions carry each image's own content (about 0.4x
    # for seeds 0-2; the plateau without BatchNorm stays near 1x for hundreds of steps).
    assert after < 0.7 * before and after < 0.7 * mean_image_loss, (before, after, mean_image_loss)
    vectors = latent_vectors(encoder, images, batch_size=12)  # 32 = 12 + 12 + 8: a ragged last batch
    assert vectors.shape == (32, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, encoder(images, training=False).numpy(), rtol=1e-4, atol=1e-5)
    uint8 = latent_vectors(encoder, (images * 255).round().astype(np.uint8))
    np.testing.assert_allclose(uint8, vectors, atol=0.1 * np.abs(vectors).max())
    dataset = tf.data.Dataset.from_tensor_slices((images, np.ones(32, bool))).batch(10)
    np.testing.assert_allclose(latent_vectors(encoder, dataset), vectors, rtol=1e-4, atol=1e-5)


def test_saved_models_load_in_safe_mode(tmp_path):
    autoencoder, encoder = build_denoising_autoencoder((24, 40), latent_dim=8, widths=(4, 8))
    images = _smooth_images(3, 24, 40)
    for model, name in ((encoder, "encoder.keras"), (autoencoder, "autoencoder.keras")):
        path = str(tmp_path / name)
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        np.testing.assert_allclose(loaded(images, training=False), model(images, training=False), atol=1e-6)


def test_bad_arguments():
    for kwargs in ({"image_size": 0}, {"image_size": (32, 32, 3)}, {"image_size": 32, "widths": ()},
                   {"image_size": 32, "latent_dim": 0}, {"image_size": 32, "noise_std": -1.0}):
        with pytest.raises(ValueError):
            build_denoising_autoencoder(**kwargs)


def _blobs(seed, counts=(60, 40, 25, 15), dim=16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5.0, (len(counts), dim)) + 20.0  # a shared offset: all in one cone
    labels = np.repeat(np.arange(len(counts)), counts)
    return centres[labels] + rng.normal(0, 0.5, (len(labels), dim)), labels


@pytest.mark.parametrize("normalise", ["l2", "standardise", "none"])
def test_kmeans_recovers_well_separated_clusters(normalise):
    vectors, truth = _blobs(0)
    labels = kmeans_pseudo_labels(vectors, 4, seed=0, normalise=normalise)
    assert labels.dtype == np.int64 and labels.shape == truth.shape
    assert adjusted_rand_score(truth, labels) > 0.99
    # Renumbered by decreasing size: the blobs have 60, 40, 25, 15 points.
    np.testing.assert_array_equal(np.bincount(labels), [60, 40, 25, 15])


def test_kmeans_is_deterministic_for_a_seed():
    vectors = np.random.default_rng(1).normal(size=(300, 8))  # no real clusters: initialisation matters
    first = kmeans_pseudo_labels(vectors, 7, seed=3)
    np.testing.assert_array_equal(first, kmeans_pseudo_labels(vectors.copy(), 7, seed=3))
    assert set(np.unique(first)) == set(range(7))
    sizes = np.bincount(first)
    assert np.all(sizes[:-1] >= sizes[1:])


def test_l2_preprocessing_and_bad_arguments():
    x = preprocess_vectors(np.random.default_rng(0).normal(3.0, 1.0, (50, 4)))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    with pytest.raises(ValueError):
        kmeans_pseudo_labels(np.zeros((5, 2)), 6)
    with pytest.raises(ValueError):
        kmeans_pseudo_labels(np.zeros(5), 2)
    with pytest.raises(ValueError):
        kmeans_pseudo_labels(np.array([[np.nan, 0.0]] * 3), 2)
    with pytest.raises(ValueError):
        kmeans_pseudo_labels(np.zeros((5, 2)), 2, normalise="pca")
