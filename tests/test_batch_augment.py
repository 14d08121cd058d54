"""Tests of simclr_tf.data.batch_augment: the batch (device-side) SimCLR augmentation.

The host path (`augment.augment_view`, per image in a tf.data map) is the reference: the batch
path must make the same views from the same seeds, so most tests compare against it, either view
by view or, with independent seeds, distribution against distribution.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from simclr_tf.data import augment as A  # noqa: E402
from simclr_tf.data import batch_augment as BA  # noqa: E402

# Every optional op off, so a test can turn on just the one it checks.
NOTHING = dict(crop=False, flip=False, jitter=False, colordrop=False, blur=False,
               noise=False, rotate=False, cutout=False)
# Everything on, at the default probabilities (blur is off by default at 32 px, so turn it on).
FULL = A.AugmentConfig(crop_size=(32, 32), blur=True, rotate=True, noise=True, cutout=True)


def textured(count, height, width, seed=0):
    """Random RGB images in [0, 1]: every augmentation visibly changes them."""
    return np.random.default_rng(seed).random((count, height, width, 3), dtype=np.float32)


def smooth(count, height, width, seed=0):
    """Smooth random colour fields (bilinear upsampling of 4 x 4 noise), like natural images."""
    coarse = np.random.default_rng(seed).random((count, 4, 4, 3), dtype=np.float32)
    return tf.image.resize(coarse, (height, width), method="bilinear").numpy().clip(0.0, 1.0)


def seeds_for(count, start=0, dtype=np.int64):
    """[count, 2] element seeds shaped like the pipeline's (seed, epoch * N + index)."""
    return np.stack([np.full(count, 7), start + np.arange(count)], axis=1).astype(dtype)


def host_views(images, seeds, config):
    """augment.augment_view per image, in a tf.data map as the input pipeline runs it."""
    dataset = tf.data.Dataset.from_tensor_slices((images, seeds))
    dataset = dataset.map(lambda x, s: A.augment_view(x, s, config))
    return next(iter(dataset.batch(len(images)))).numpy()


def host_boxes(seeds, image_shape, area_min, aspect):
    """augment.sample_crop_box per seed (offsets and sizes, [N, 2] each)."""
    dataset = tf.data.Dataset.from_tensor_slices(seeds)
    dataset = dataset.map(lambda s: A.sample_crop_box(image_shape, s, area_min, aspect))
    offset, size = next(iter(dataset.batch(len(seeds))))
    return offset.numpy(), size.numpy()


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(np.sort(a), points, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), points, side="right") / len(b)
    return np.abs(cdf_a - cdf_b).max()


def ks_critical(n, m, alpha=1e-3):
    """Two-sample KS critical value at level alpha (asymptotic; conservative for discrete data)."""
    return math.sqrt(-0.5 * math.log(alpha / 2)) * math.sqrt((n + m) / (n * m))


def assert_rate(gates, prob):
    """A coin's observed rate is within 4 binomial standard deviations of `prob`."""
    gates = np.asarray(gates, bool)
    tolerance = 4 * math.sqrt(prob * (1 - prob) / len(gates))
    assert abs(gates.mean() - prob) <= tolerance, (gates.mean(), prob, tolerance)


def assert_roughly_uniform(values, low, high):
    """Values lie in [low, high] and their distribution is uniform (one-sample KS, alpha 1e-3)."""
    values = np.sort(np.asarray(values, np.float64))
    assert values.min() >= low and values.max() <= high, (values.min(), values.max(), low, high)
    uniform = (values - low) / (high - low)
    n = len(values)
    statistic = max(np.abs(np.arange(1, n + 1) / n - uniform).max(), np.abs(np.arange(n) / n - uniform).max())
    assert statistic < 1.95 / math.sqrt(n), statistic


# --- The random streams are TensorFlow's ---------------------------------------------------------


def test_philox_streams_match_tf_stateless_ops():
    seeds = np.array([[0, 0], [1, 2], [-1, 5], [2 ** 40 + 3, -(2 ** 50)], [12345, 678]], np.int64)
    words = BA._random_bits(tf.constant(seeds), 12).numpy()
    for seed, row in zip(seeds, words):
        full = tf.random.stateless_uniform([12], seed=seed, minval=None, maxval=None, dtype=tf.uint32)
        np.testing.assert_array_equal(row, full.numpy().astype(np.int64))
        np.testing.assert_array_equal(BA._uniform(tf.constant(row[:5]), -0.3, 1.7).numpy(),
                                      tf.random.stateless_uniform([5], seed=seed, minval=-0.3, maxval=1.7).numpy())
        np.testing.assert_array_equal(tf.math.floormod(row[:3], 37).numpy(),
                                      tf.random.stateless_uniform([3], seed=seed, minval=0, maxval=37,
                                                                  dtype=tf.int32).numpy())
        np.testing.assert_allclose(BA._normal(tf.constant(row[:8])).numpy(),
                                   tf.random.stateless_normal([8], seed=seed).numpy(), rtol=1e-6, atol=1e-6)
    for dtype in (tf.int64, tf.int32):
        typed = tf.constant(seeds if dtype == tf.int64 else seeds % 1000 - 500, dtype)
        mine = BA._split(tf.cast(typed, tf.int64), 3, wide=dtype == tf.int64).numpy()
        for seed, row in zip(typed, mine):
            np.testing.assert_array_equal(row, tf.random.experimental.stateless_split(seed, 3).numpy())


# --- Random resized crop -------------------------------------------------------------------------


@pytest.mark.parametrize("image_shape,crop_size", [((40, 48), (32, 32)), ((48, 36), (24, 32)),
                                                  ((30, 30), (32, 16))])
def test_crop_boxes_equal_host_kernel(image_shape, crop_size):
    seeds = seeds_for(300)
    aspect = crop_size[1] / crop_size[0]
    offset, size = BA.sample_crop_boxes(seeds, image_shape, 0.08, aspect)
    host_offset, host_size = host_boxes(seeds, image_shape, 0.08, aspect)
    np.testing.assert_array_equal(offset.numpy(), host_offset)
    np.testing.assert_array_equal(size.numpy(), host_size)


def test_crop_boxes_fall_back_to_the_whole_image_like_the_kernel():
    # On a 4 x 4 image with half its area as the minimum few boxes fit: images need many attempts,
    # some exhaust all 100 and keep the whole image. (In a tf.function: 100 eager attempts are slow.)
    seeds = seeds_for(128)
    offset, size = tf.function(lambda s: BA.sample_crop_boxes(s, (4, 4), 0.5, 1.0))(seeds)
    host_offset, host_size = host_boxes(seeds, (4, 4), 0.5, 1.0)
    np.testing.assert_array_equal(offset.numpy(), host_offset)
    np.testing.assert_array_equal(size.numpy(), host_size)
    whole = np.all(size.numpy() == [4, 4], axis=1)
    assert 0 < whole.sum() < len(seeds) // 2


def test_uniform_below_follows_exact_uniform_int():
    # SimplePhilox::Uniform(n): a power of two masks the word; otherwise words below 2^32 mod n
    # are rejected and the next word is used.
    words = tf.constant([[5, 0, 7, 9, 11, 13, 15], [5, 1, 7, 9, 11, 13, 15], [5, 0, 7, 9, 11, 13, 15]], tf.int64)
    bounds = tf.constant([3, 3, 4], tf.int64)  # 2^32 - 1 = 0 mod 3: only the word 0 is rejected
    value, consumed = BA._uniform_below(words, tf.constant([1, 1, 1], tf.int64), bounds)
    np.testing.assert_array_equal(value.numpy(), [7 % 3, 1 % 3, 0])
    np.testing.assert_array_equal(consumed.numpy(), [2, 1, 1])


def test_crop_boxes_min_object_covered_and_int32_seeds_equal_kernel():
    seeds = seeds_for(120, dtype=np.int32)
    offset, size = BA.sample_crop_boxes(seeds, (36, 28), area_min=0.05, aspect=1.2, min_object_covered=0.4)

    def kernel(seed):
        begin, box, _ = tf.image.stateless_sample_distorted_bounding_box(
            [36, 28, 3], tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed, min_object_covered=0.4,
            aspect_ratio_range=(0.75 * 1.2, 4 / 3 * 1.2), area_range=(0.05, 1.0), max_attempts=100,
            use_image_if_no_bounding_boxes=True)
        return begin[:2], box[:2]

    begin, box = next(iter(tf.data.Dataset.from_tensor_slices(seeds).map(kernel).batch(len(seeds))))
    np.testing.assert_array_equal(offset.numpy(), begin.numpy())
    np.testing.assert_array_equal(size.numpy(), box.numpy())
    assert (size.numpy().prod(axis=1) >= 0.4 * 36 * 28).all()


@pytest.mark.parametrize("image_shape,crop_size", [((40, 48), (32, 32)), ((40, 48), (24, 36))])
def test_crop_distribution_matches_host(image_shape, crop_size):
    # Independent seeds on each side: a distribution test, not a replay of the same draws.
    config = A.AugmentConfig(crop_size=crop_size, **{**NOTHING, "crop": True})
    n_device, n_host = 3000, 1500
    params = BA.sample_view_parameters(seeds_for(n_device), config, image_shape)
    size = params["crop_size"].numpy().astype(np.float64)
    offset = params["crop_offset"].numpy()
    _, host_size = host_boxes(seeds_for(n_host, start=10 ** 6), image_shape, config.crop_area_min,
                              crop_size[1] / crop_size[0])
    host_size = host_size.astype(np.float64)
    height, width = image_shape
    aspect = crop_size[1] / crop_size[0]

    def area_and_ratio(s):
        return s[:, 0] * s[:, 1] / (height * width), s[:, 1] / s[:, 0]

    area, ratio = area_and_ratio(size)
    host_area, host_ratio = area_and_ratio(host_size)
    critical = ks_critical(n_device, n_host)
    assert ks_statistic(area, host_area) < critical
    assert ks_statistic(ratio, host_ratio) < critical
    for mine, theirs in ((area, host_area), (ratio, host_ratio)):
        standard_error = math.sqrt(mine.var() / n_device + theirs.var() / n_host)
        assert abs(mine.mean() - theirs.mean()) < 4 * standard_error
        # Each decile of one sample lies between the host's quantiles at p -+ the KS bound.
        for p in np.linspace(0.1, 0.9, 9):
            assert np.quantile(theirs, p - critical) <= np.quantile(mine, p) <= np.quantile(theirs, p + critical)
    # Bounds: area never below crop_area_min (the whole image when every attempt failed), the
    # stretch within [3/4, 4/3] x the output aspect up to the rounding of integer widths.
    whole = (size[:, 0] == height) & (size[:, 1] == width)
    assert area.min() >= config.crop_area_min - 1e-6
    slack = 0.5 / size[:, 0] + 1e-6
    assert (whole | (ratio >= 0.75 * aspect - slack)).all() and (whole | (ratio <= 4 / 3 * aspect + slack)).all()
    assert (offset >= 0).all() and (offset + size <= [height, width]).all()
    # The area fraction spreads over the whole range, not just near 1.
    assert area.min() < 0.1 and np.quantile(area, 0.25) < 0.35 and area.max() > 0.9


# --- Parameters: rates and ranges ----------------------------------------------------------------


@pytest.fixture(scope="module")
def drawn():
    """Parameters of 2500 images with everything on (crop_prob 0.7 so the crop coin is drawn too)."""
    config = A.AugmentConfig(crop_size=(32, 32), crop_prob=0.7, blur=True, rotate=True, noise=True,
                             cutout=True, rotate_degrees=25.0)
    params = BA.sample_view_parameters(seeds_for(2500), config, (40, 48))
    return config, {name: value.numpy() for name, value in params.items()}


def test_gate_rates_within_binomial_tolerance(drawn):
    config, params = drawn
    for name in ("crop", "flip", "jitter", "colordrop", "blur", "rotate", "noise", "cutout"):
        assert_rate(params[name], getattr(config, f"{name}_prob"))
    # The coins are independent of one another (here: flip and colour drop).
    both = params["flip"] & params["colordrop"]
    assert_rate(both, config.flip_prob * config.colordrop_prob)


def test_crop_gate_off_means_whole_image(drawn):
    _, params = drawn
    off = ~params["crop"]
    assert off.any()
    assert (params["crop_size"][off] == [40, 48]).all() and (params["crop_offset"][off] == 0).all()


def test_jitter_factors_ranges_and_spread(drawn):
    config, params = drawn
    lower, upper = 1.0 - 0.8 * config.strength, 1.0 + 0.8 * config.strength
    for name in ("brightness", "contrast", "saturation"):
        assert_roughly_uniform(params[name], max(0.0, lower), upper)
    assert_roughly_uniform(params["hue"], -0.2 * config.strength, 0.2 * config.strength)
    # The factors of one image are independent draws, not one draw reused.
    assert abs(np.corrcoef(params["brightness"], params["contrast"])[0, 1]) < 0.1


def test_hue_delta_capped_at_half_a_turn():
    config = A.AugmentConfig(crop_size=(32, 32), **{**NOTHING, "jitter": True}, strength=4.0)
    params = BA.sample_view_parameters(seeds_for(2000), config, (32, 32))
    assert_roughly_uniform(params["hue"].numpy(), -0.5, 0.5)
    assert params["brightness"].numpy().min() >= 0.0


def test_jitter_order_is_a_permutation_that_varies(drawn):
    _, params = drawn
    order = params["jitter_order"]
    np.testing.assert_array_equal(np.sort(order, axis=1), np.tile(np.arange(4), (len(order), 1)))
    codes, counts = np.unique(order @ np.array([64, 16, 4, 1]), return_counts=True)
    assert len(codes) == 24
    expected = len(order) / 24
    assert (np.abs(counts - expected) <= 4 * math.sqrt(expected)).all(), counts


def test_blur_sigma_angle_and_cutout_centre_ranges(drawn):
    config, params = drawn
    assert_roughly_uniform(params["blur_sigma"], config.blur_sigma_min, config.blur_sigma_max)
    max_angle = math.radians(config.rotate_degrees)
    assert_roughly_uniform(params["rotate_angle"], -max_angle, max_angle)
    centre = params["cutout_centre"]
    assert (centre >= 0).all() and (centre < 32).all()
    assert len(np.unique(centre[:, 0])) == 32 and len(np.unique(centre[:, 1])) == 32


def test_disabled_ops_are_never_drawn():
    config = A.AugmentConfig(crop_size=(32, 32), flip_prob=0.0, jitter=False, blur=False)
    params = BA.sample_view_parameters(seeds_for(64), config, (32, 32))
    for name in ("flip", "jitter", "blur", "rotate", "noise", "cutout"):
        assert not params[name].numpy().any(), name
    assert (params["brightness"].numpy() == 1.0).all() and (params["hue"].numpy() == 0.0).all()


# --- Same views as the host path -----------------------------------------------------------------


@pytest.fixture(scope="module")
def full_batch():
    """uint8 images, their seeds, and the host's views with FULL: single views, then both views of
    `augment_pair` (its seeds split in two), all from one tf.data map."""
    images = np.concatenate([smooth(5, 36, 44), textured(3, 36, 44, seed=1)])
    images = (images * 255).round().astype(np.uint8)  # what the host decodes
    seeds = seeds_for(len(images), start=100)
    halves = np.stack([tf.random.experimental.stateless_split(seed, 2).numpy() for seed in seeds])
    host = host_views(np.tile(images, (3, 1, 1, 1)), np.concatenate([seeds, halves[:, 0], halves[:, 1]]), FULL)
    return images, seeds, np.split(host, 3)


# Same parameters, same kernels: only the last float32 bits of some sums may differ.
SAME = dict(rtol=0, atol=2e-6)


def test_views_equal_host_views(full_batch):
    images, seeds, (host, _, _) = full_batch
    np.testing.assert_allclose(BA.augment_batch(images, seeds, FULL).numpy(), host, **SAME)


def test_pair_in_tf_function_equals_host_pair(full_batch):
    # A tf.function (no XLA) is how the train step runs by default.
    images, seeds, (_, host_a, host_b) = full_batch
    view_a, view_b = tf.function(lambda x, s: BA.augment_batch_pair(x, s, FULL))(images, seeds)
    np.testing.assert_allclose(view_a.numpy(), host_a, **SAME)
    np.testing.assert_allclose(view_b.numpy(), host_b, **SAME)
    assert not np.any(np.all(view_a.numpy() == view_b.numpy(), axis=(1, 2, 3)))


@pytest.mark.parametrize("config", [
    A.AugmentConfig(crop_size=(24, 32), crop_prob=0.5, jitter_prob=1.0, strength=0.5, blur=True,
                    rotate=True, rotate_prob=1.0, noise=True, noise_std=0.1),
    A.AugmentConfig(crop_size=(40, 40), crop=False, blur=True, colordrop_prob=0.5, cutout=True,
                    cutout_prob=1.0),
], ids=["non-square-crop-coin", "no-crop-upsample"])
def test_other_configs_equal_host_views(config):
    images = (np.concatenate([smooth(6, 36, 44, seed=2), textured(2, 36, 44, seed=3)]) * 255).astype(np.uint8)
    seeds = seeds_for(len(images), start=200, dtype=np.int32)
    np.testing.assert_allclose(BA.augment_batch(images, seeds, config).numpy(), host_views(images, seeds, config),
                               **SAME)


def test_view_statistics_match_host_with_independent_seeds():
    # Constant-colour and smooth images; per-view mean brightness and saturation compared as
    # distributions, host and device drawing from different seeds.
    config = A.AugmentConfig(crop_size=(24, 24), noise=True, rotate=True, cutout=True)
    constant = np.broadcast_to(np.array([0.8, 0.3, 0.2], np.float32), (8, 24, 24, 3))
    images = np.concatenate([constant, smooth(8, 24, 24, seed=4)])
    repeats = 12
    tiled = np.tile(images, (repeats, 1, 1, 1))
    device = BA.augment_batch(tiled, seeds_for(len(tiled)), config).numpy()
    host = host_views(tiled, seeds_for(len(tiled), start=10 ** 6), config)

    def statistics(views):
        brightness = views.mean(axis=(1, 2, 3))
        value = views.max(axis=-1)
        saturation = np.where(value > 0, (value - views.min(axis=-1)) / np.maximum(value, 1e-6), 0)
        return brightness, saturation.mean(axis=(1, 2))

    critical = ks_critical(len(tiled), len(tiled))
    for mine, theirs in zip(statistics(device), statistics(host)):
        assert ks_statistic(mine, theirs) < critical
        assert abs(mine.mean() - theirs.mean()) < 4 * math.sqrt((mine.var() + theirs.var()) / len(tiled))


# --- Each op, forced on alone, on a hand-checkable input ----------------------------------------


def only(op, crop_size=(32, 32), **extra):
    """A config with just `op` on, at probability 1."""
    return A.AugmentConfig(crop_size=crop_size, **{**NOTHING, op: True, f"{op}_prob": 1.0, **extra})


def test_plain_resize_is_identity_at_same_size():
    images = textured(3, 32, 32)
    views = BA.augment_batch(images, seeds_for(3), A.AugmentConfig((32, 32), **NOTHING)).numpy()
    np.testing.assert_array_equal(views, images)


def test_crop_resizes_the_drawn_box_bicubically():
    images = smooth(4, 40, 48, seed=5)
    config = only("crop")
    params = BA.sample_view_parameters(seeds_for(4), config, (40, 48))
    views = BA.apply_view_parameters(images, params, config).numpy()
    for i in range(4):
        (y, x), (h, w) = params["crop_offset"][i].numpy(), params["crop_size"][i].numpy()
        expected = tf.image.resize(images[i, y:y + h, x:x + w], (32, 32), method="bicubic").numpy().clip(0, 1)
        np.testing.assert_allclose(views[i], expected, atol=1e-6)


def test_flip_mirrors():
    images = textured(4, 32, 32)
    views = BA.augment_batch(images, seeds_for(4), only("flip")).numpy()
    np.testing.assert_array_equal(views, images[:, :, ::-1])


def test_jitter_of_grey_is_brightness_only():
    # Contrast, saturation and hue leave a uniform grey unchanged; brightness scales it.
    images = np.full((16, 32, 32, 3), 0.4, np.float32)
    config = only("jitter")
    params = BA.sample_view_parameters(seeds_for(16), config, (32, 32))
    views = BA.apply_view_parameters(images, params, config).numpy()
    expected = np.clip(np.float32(0.4) * params["brightness"].numpy(), 0, 1)
    np.testing.assert_allclose(views, np.broadcast_to(expected[:, None, None, None], views.shape), atol=1e-6)


def test_colordrop_gives_equal_channels():
    images = textured(4, 32, 32)
    views = BA.augment_batch(images, seeds_for(4), only("colordrop")).numpy()
    np.testing.assert_allclose(views[..., 0], views[..., 1])
    np.testing.assert_allclose(views[..., 0], views[..., 2])
    np.testing.assert_allclose(views[..., 0], images @ np.array([0.2989, 0.5870, 0.1140], np.float32), atol=1e-6)


def test_blur_keeps_constant_image_and_is_the_drawn_gaussian():
    config = only("blur", crop_size=(64, 64))  # kernel radius 3
    constant = np.full((4, 64, 64, 3), 0.3, np.float32)
    np.testing.assert_allclose(BA.augment_batch(constant, seeds_for(4), config).numpy(), constant, atol=1e-6)
    images = textured(4, 64, 64)
    params = BA.sample_view_parameters(seeds_for(4), config, (64, 64))
    params["blur_sigma"] = tf.constant([0.3, 0.8, 1.4, 2.0])
    blurred = BA.apply_view_parameters(images, params, config).numpy()
    for image, view, sigma in zip(images, blurred, [0.3, 0.8, 1.4, 2.0]):
        kernel = np.exp(-np.arange(-3, 4) ** 2 / (2 * sigma ** 2))
        kernel /= kernel.sum()
        padded = np.pad(image, [(3, 3), (3, 3), (0, 0)], mode="reflect")
        rows = sum(k * padded[i:i + 64] for i, k in enumerate(kernel))
        expected = sum(k * rows[:, i:i + 64] for i, k in enumerate(kernel))
        np.testing.assert_allclose(view, expected, atol=1e-5)
    # Wider kernels smooth more.
    assert np.all(np.diff(blurred.std(axis=(1, 2, 3))) < 0)


def test_rotation_quarter_turn_and_symmetric_pattern():
    config = only("rotate", rotate_degrees=90.0)
    images = textured(2, 32, 32)
    params = BA.sample_view_parameters(seeds_for(2), config, (32, 32))
    params["rotate_angle"] = tf.constant([math.pi / 2, -math.pi / 2], tf.float32)
    quarter = BA.apply_view_parameters(images, params, config).numpy()
    # Positive = counter-clockwise as displayed, like np.rot90 and like the host's rotate.
    np.testing.assert_allclose(quarter[0], np.rot90(images[0]), atol=1e-5)
    np.testing.assert_allclose(quarter[1], np.rot90(images[1], k=-1), atol=1e-5)
    np.testing.assert_allclose(quarter[0], A.rotate(images[0], math.pi / 2).numpy(), atol=1e-5)
    # A radially symmetric pattern is unchanged inside the disc by whatever angle is drawn.
    y, x = np.mgrid[0:33, 0:33] - 16.0
    radius = np.hypot(y, x)
    pattern = np.repeat((0.5 + 0.4 * np.cos(radius / 3.0))[None, :, :, None], 3, axis=-1).astype(np.float32)
    config = only("rotate", crop_size=(33, 33))
    params = BA.sample_view_parameters(seeds_for(8), config, (33, 33))
    angles = np.abs(params["rotate_angle"].numpy())
    assert angles.max() > math.radians(5) and angles.max() <= math.radians(30)
    views = BA.apply_view_parameters(np.repeat(pattern, 8, axis=0), params, config).numpy()
    inside = radius < 15
    assert np.abs(views[:, inside] - pattern[:, inside]).max() < 0.02
    # ... while a non-symmetric image does change.
    rotated = BA.apply_view_parameters(textured(8, 33, 33), params, config).numpy()
    assert np.abs(rotated - textured(8, 33, 33)).mean() > 0.1


def test_noise_has_the_configured_spread():
    config = only("noise", noise_std=0.05)
    views = BA.augment_batch(np.full((8, 32, 32, 3), 0.5, np.float32), seeds_for(8), config).numpy()
    residual = views - 0.5
    assert abs(residual.mean()) < 0.002
    np.testing.assert_allclose(residual.std(axis=(1, 2, 3)), 0.05, rtol=0.05)


def test_cutout_zeroes_a_square_of_the_right_side():
    config = only("cutout", cutout_fraction=0.25)  # side round(0.25 * 32) = 8
    images = np.full((32, 32, 32, 3), 0.5, np.float32)
    params = BA.sample_view_parameters(seeds_for(32), config, (32, 32))
    views = BA.apply_view_parameters(images, params, config).numpy()
    for view, (cy, cx) in zip(views, params["cutout_centre"].numpy()):
        top, left = cy - 4, cx - 4
        expected = np.full((32, 32), 0.5, np.float32)
        expected[max(top, 0):max(top + 8, 0), max(left, 0):max(left + 8, 0)] = 0.0
        np.testing.assert_array_equal(view[..., 0], expected)
        assert (view == view[..., :1]).all()
    # Interior centres give the full 8 x 8 square.
    zeros = (views[..., 0] == 0).sum(axis=(1, 2))
    interior = np.all((params["cutout_centre"].numpy() >= 4) & (params["cutout_centre"].numpy() <= 28), axis=1)
    assert interior.any() and (zeros[interior] == 64).all()


# --- Per-image randomness and determinism --------------------------------------------------------


def test_per_image_randomness_and_determinism():
    images = np.repeat(smooth(1, 40, 40, seed=6), 6, axis=0)
    seeds, other_seeds = seeds_for(6), seeds_for(6, start=1000)
    first = BA.augment_batch(images, seeds, FULL).numpy()
    # Identical images get different views.
    assert len({view.tobytes() for view in first}) == 6
    # The same seeds give the same views bit for bit, wherever they sit in whatever batch; other
    # seeds give other views.
    again = BA.augment_batch(images[:5], np.concatenate([other_seeds[:3], seeds[2:4]]), FULL).numpy()
    np.testing.assert_array_equal(again[3:], first[2:4])
    assert not np.any(np.all(again[:3, None] == first[None], axis=(2, 3, 4)))


def test_xla_compiles_and_matches_host(full_batch):
    images, seeds, (host, _, _) = full_batch
    compiled = tf.function(lambda x, s: BA.augment_batch(x, s, FULL), jit_compile=True)
    # Eager views equal the host's (test_views_equal_host_views). XLA fuses multiply-adds and
    # keeps excess precision, so continuous values may move in their last bits: a few 1e-6 here.
    np.testing.assert_allclose(compiled(images, tf.constant(seeds)).numpy(), host, rtol=0, atol=1e-4)


# --- Shapes and dtypes ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, tf.bfloat16.as_numpy_dtype])
def test_shape_dtype_range(dtype):
    images = textured(3, 40, 48, seed=8)
    images = (images * 255).astype(np.uint8) if dtype == np.uint8 else images.astype(dtype)
    config = A.AugmentConfig(crop_size=(24, 36), rotate=True, noise=True)
    view = BA.augment_batch(images, seeds_for(3), config)
    assert view.shape == (3, 24, 36, 3) and view.dtype == tf.float32
    assert view.numpy().min() >= 0.0 and view.numpy().max() <= 1.0


def test_rejects_images_without_static_size():
    graph = tf.function(lambda x, s: BA.augment_batch(x, s, FULL),
                        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8),
                                         tf.TensorSpec([None, 2], tf.int64)])
    with pytest.raises(ValueError, match="static height and width"):
        graph.get_concrete_function()
