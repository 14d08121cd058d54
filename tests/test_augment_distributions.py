"""Distributions of the host-side augmentations (simclr_tf.data.augment), over many seeds: crop areas
and aspect ratios, colour-jitter factor ranges and order, application rates, blur strength.

Rates are checked against the paper's probabilities within 4.5 binomial standard deviations, so a
wrong rate (0.5 instead of 0.8, say) fails while sampling noise does not (false alarm ~1e-5).
"""
import math

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.data import augment as A

NOTHING = dict(crop=False, flip=False, jitter=False, colordrop=False, blur=False, noise=False, rotate=False,
               cutout=False)


def _seeds(count, salt=0):
    return np.stack([np.arange(count), np.full(count, 1000 + salt)], axis=1).astype(np.int64)


def _views(image, config, count, salt=0):
    """`count` views of one image with consecutive seeds, mapped in a tf.data pipeline as in training."""
    dataset = tf.data.Dataset.from_tensor_slices(_seeds(count, salt)).map(
        lambda s: A.augment_view(image, s, config), num_parallel_calls=tf.data.AUTOTUNE)
    return np.concatenate([b.numpy() for b in dataset.batch(256)])


def _assert_rate(hits, count, p):
    sigma = math.sqrt(p * (1 - p) / count)
    assert abs(hits / count - p) < 4.5 * sigma, (hits / count, p)


def _crop_boxes(image_shape, count, area_min, aspect):
    fn = tf.function(lambda s: A.sample_crop_box(image_shape, s, area_min, aspect))
    boxes = [fn(tf.constant(s)) for s in _seeds(count)]
    return np.array([[*o.numpy(), *z.numpy()] for o, z in boxes])


def test_the_smallest_crop_area_reaches_below_0_09_so_0_08_is_the_real_bound():
    # With the official min_object_covered=0.1 no crop would ever fall below 10% of the image.
    boxes = _crop_boxes([100, 100, 3], 600, area_min=0.08, aspect=1.0)
    areas = boxes[:, 2] * boxes[:, 3] / 100.0 ** 2
    assert areas.min() >= 0.08
    assert areas.min() < 0.09
    assert areas.max() > 0.9


@pytest.mark.parametrize("crop_size", [(32, 48), (48, 32)])
def test_crop_aspect_ratios_stay_within_3_4_to_4_3_of_a_non_square_output(crop_size):
    aspect = crop_size[1] / crop_size[0]
    boxes = _crop_boxes([120, 120, 3], 400, area_min=0.08, aspect=aspect)
    y, x, h, w = boxes.T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= 120).all() and (x + w <= 120).all()
    relative = (w / h) / aspect
    # Integer box sides: one pixel of rounding either way.
    assert (w <= 4 / 3 * aspect * h + 1).all() and (w >= 3 / 4 * aspect * h - 1).all()
    assert relative.min() < 0.8 and relative.max() > 1.25  # the whole range is used


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_jitter_factors_and_hue_cover_their_ranges_and_the_order_varies(strength):
    fn = tf.function(lambda s: A.jitter_parameters(s, strength))
    draws = [fn(tf.constant(s)) for s in _seeds(1500)]
    lower, upper, hue_max = max(0.0, 1 - 0.8 * strength), 1 + 0.8 * strength, 0.2 * strength
    for name in ("brightness", "contrast", "saturation"):
        values = np.array([d[name].numpy() for d in draws])
        assert values.min() >= lower and values.max() <= upper
        # Uniform: the extremes come close to the bounds and the mean sits in the middle.
        assert values.min() < lower + 0.02 and values.max() > upper - 0.02
        assert abs(values.mean() - 1.0) < 0.05
    hue = np.array([d["hue"].numpy() for d in draws])
    assert hue.min() >= -hue_max and hue.max() <= hue_max and hue.min() < -0.9 * hue_max and hue.max() > 0.9 * hue_max
    orders = {tuple(d["order"].numpy()) for d in draws}
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
    assert len(orders) == 24  # every one of the 4! orders occurs


def _colourful(size=32, seed=0):
    return np.random.default_rng(seed).uniform(0.2, 0.8, (size, size, 3)).astype(np.float32)


def test_colour_jitter_applies_to_80_percent_of_images():
    image = _colourful()
    views = _views(image, A.AugmentConfig(crop_size=(32, 32), **{**NOTHING, "jitter": True}), 1500)
    changed = np.abs(views - image).max(axis=(1, 2, 3)) > 1e-4
    _assert_rate(changed.sum(), len(views), 0.8)


def test_colour_drop_applies_to_20_percent_of_images():
    image = _colourful()
    views = _views(image, A.AugmentConfig(crop_size=(32, 32), **{**NOTHING, "colordrop": True}), 1500)
    grey = np.abs(views - views[..., :1]).max(axis=(1, 2, 3)) < 1e-6
    _assert_rate(grey.sum(), len(views), 0.2)


def test_flip_applies_to_half_the_images():
    image = _colourful()
    views = _views(image, A.AugmentConfig(crop_size=(32, 32), **{**NOTHING, "flip": True}), 1500)
    mirrored = np.abs(views - image[:, ::-1]).max(axis=(1, 2, 3)) < 1e-6
    _assert_rate(mirrored.sum(), len(views), 0.5)


def test_blur_applies_to_half_the_images_with_sigma_between_its_bounds():
    image = _colourful(64, seed=1)
    config = A.AugmentConfig(crop_size=(64, 64), **{**NOTHING, "blur": True})
    views = _views(image, config, 1200)
    blurred = np.abs(views - image).max(axis=(1, 2, 3)) > 1e-5
    _assert_rate(blurred.sum(), len(views), 0.5)
    # The detail left after a blur lies between what sigma_max and sigma_min leave.
    radius = A.blur_radius((64, 64))
    detail = lambda x: np.var(x - x.mean(axis=(0, 1)))  # noqa: E731
    weakest = detail(A._gaussian_blur(tf.constant(image), 0.1, radius).numpy())
    strongest = detail(A._gaussian_blur(tf.constant(image), 2.0, radius).numpy())
    spread = np.array([detail(v) for v in views[blurred]])
    assert spread.min() >= strongest - 1e-6 and spread.max() <= weakest + 1e-6
    # Uniform sigma: some views are blurred hard, others barely.
    assert spread.min() < strongest + 0.1 * (weakest - strongest)
    assert spread.max() > weakest - 0.1 * (weakest - strongest)
