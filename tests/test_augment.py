"""Tests of simclr_tf.data.augment: shapes, ranges, per-image randomness, determinism, each op."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.data import augment as A

# Every optional op off, so a test can turn on just the one it checks.
NOTHING = dict(crop=False, flip=False, jitter=False, colordrop=False, blur=False,
               noise=False, rotate=False, cutout=False)


def textured(height, width, seed=0):
    """A random RGB image in [0, 1]: every augmentation visibly changes it."""
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


def seed(i):
    return tf.constant([i, 12345], dtype=tf.int64)


def map_identical(config, count=8, size=(48, 48)):
    """Maps augment_view over `count` identical images with different seeds, as the pipeline does."""
    images = np.stack([textured(*size)] * count)
    seeds = np.stack([[i, 99] for i in range(count)]).astype(np.int64)

    def view(image, s):
        return A.augment_view(image, s, config)

    dataset = tf.data.Dataset.from_tensor_slices((images, seeds))
    dataset = dataset.map(view, num_parallel_calls=tf.data.AUTOTUNE).batch(count)
    return next(iter(dataset)).numpy()


def distinct(views):
    return len({v.tobytes() for v in views})


OPTIONAL_OPS = [
    dict(),
    dict(noise=True, noise_prob=1.0),
    dict(rotate=True, rotate_prob=1.0),
    dict(cutout=True, cutout_prob=1.0),
    dict(blur=True, blur_prob=1.0),
    dict(blur=False, jitter=False, colordrop=False, flip=False),
    dict(noise=True, rotate=True, cutout=True, blur=True, noise_prob=1.0, rotate_prob=1.0,
         cutout_prob=1.0, blur_prob=1.0, jitter_prob=1.0, colordrop_prob=1.0),
]


@pytest.mark.parametrize("ops", OPTIONAL_OPS)
@pytest.mark.parametrize("input_size,crop_size", [((48, 40), (32, 32)), ((32, 32), (48, 48)),
                                                  ((48, 48), (32, 24))])
def test_shape_dtype_range(ops, input_size, crop_size):
    config = A.AugmentConfig(crop_size=crop_size, **ops)
    view = A.augment_view(textured(*input_size), seed(1), config).numpy()
    assert view.shape == (*crop_size, 3)
    assert view.dtype == np.float32
    assert view.min() >= 0.0 and view.max() <= 1.0


def test_crop_off_shape_and_uint8_input():
    config = A.AugmentConfig(crop_size=(32, 32), crop=False)
    image = (textured(48, 40) * 255).astype(np.uint8)
    view = A.augment_view(image, seed(2), config).numpy()
    assert view.shape == (32, 32, 3) and view.dtype == np.float32
    assert 0.0 <= view.min() and view.max() <= 1.0


def test_works_in_tf_function_with_int32_seed():
    config = A.AugmentConfig(crop_size=(32, 32), rotate=True, noise=True, cutout=True)
    image = textured(48, 48)
    graph = tf.function(lambda x, s: A.augment_view(x, s, config))
    s = tf.constant([3, 4], dtype=tf.int32)
    np.testing.assert_array_equal(graph(image, s).numpy(),
                                  A.augment_view(image, s, config).numpy())


def test_pair_views_differ():
    config = A.AugmentConfig(crop_size=(32, 32))
    view1, view2 = A.augment_pair(textured(48, 48), seed(3), config)
    assert view1.shape == view2.shape == (32, 32, 3)
    assert not np.array_equal(view1.numpy(), view2.numpy())


def test_same_seed_same_view_different_seed_different_view():
    config = A.AugmentConfig(crop_size=(32, 32), rotate=True, noise=True, cutout=True)
    image = textured(48, 48)
    first = A.augment_view(image, seed(4), config).numpy()
    again = A.augment_view(image, seed(4), config).numpy()
    other = A.augment_view(image, seed(5), config).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    pair1 = [v.numpy() for v in A.augment_pair(image, seed(6), config)]
    pair2 = [v.numpy() for v in A.augment_pair(image, seed(6), config)]
    np.testing.assert_array_equal(pair1, pair2)


def test_dataset_map_draws_per_image():
    views = map_identical(A.AugmentConfig(crop_size=(32, 32)))
    assert distinct(views) == 8


def test_dataset_map_is_deterministic():
    config = A.AugmentConfig(crop_size=(32, 32), noise=True)
    np.testing.assert_array_equal(map_identical(config), map_identical(config))


@pytest.mark.parametrize("ops", [
    dict(crop=True),
    dict(jitter=True, jitter_prob=1.0),
    dict(blur=True, blur_prob=1.0),
    dict(rotate=True, rotate_prob=1.0),
    dict(noise=True, noise_prob=1.0),
    dict(cutout=True, cutout_prob=1.0),
], ids=lambda ops: next(iter(ops)))
def test_each_op_draws_per_image(ops):
    views = map_identical(A.AugmentConfig(crop_size=(32, 32), **{**NOTHING, **ops}))
    assert distinct(views) == 8


@pytest.mark.parametrize("op", ["flip", "colordrop"])
def test_coin_flip_ops_draw_per_image(op):
    # These ops have no parameter, only a per-image coin: with p = 0.5 both outcomes must occur.
    config = A.AugmentConfig(crop_size=(32, 32), **{**NOTHING, op: True, f"{op}_prob": 0.5})
    views = map_identical(config, count=16)
    assert distinct(views) == 2


def test_colordrop_gives_grey():
    config = A.AugmentConfig(crop_size=(32, 32), colordrop_prob=1.0)
    view = A.augment_view(textured(48, 48), seed(7), config).numpy()
    np.testing.assert_array_equal(view[..., 0], view[..., 1])
    np.testing.assert_array_equal(view[..., 1], view[..., 2])


def test_jitter_strength_zero_is_identity():
    image = textured(48, 48)
    config = A.AugmentConfig(crop_size=(32, 32), **{**NOTHING, "jitter": True},
                             jitter_prob=1.0, strength=0.0)
    resized = A.augment_view(image, seed(8), A.AugmentConfig(crop_size=(32, 32), **NOTHING))
    for i in range(3):
        view = A.augment_view(image, seed(8 + i), config)
        np.testing.assert_allclose(view.numpy(), resized.numpy(), atol=1e-5)


def test_jitter_changes_colours():
    image = textured(32, 32)
    config = A.AugmentConfig(crop_size=(32, 32), **{**NOTHING, "jitter": True}, jitter_prob=1.0)
    view = A.augment_view(image, seed(9), config).numpy()
    assert np.abs(view - image).mean() > 0.01


def test_blur_reduces_variance():
    image = textured(48, 48)
    config = A.AugmentConfig(crop_size=(48, 48), **{**NOTHING, "blur": True}, blur_prob=1.0,
                             blur_sigma_min=1.0)
    for i in range(3):
        view = A.augment_view(image, seed(10 + i), config).numpy()
        assert view.var() < 0.5 * image.var()
        # A blur keeps the mean grey level (reflection padding does not darken the borders).
        assert abs(view.mean() - image.mean()) < 0.01


def test_blur_kernel_size():
    assert A.blur_radius((224, 224)) == 11  # 23-tap kernel, about 10% of the side
    assert A.blur_radius((32, 32)) == 1
    assert A.blur_radius(96) == 4


def test_flip_mirrors():
    image = textured(32, 32)
    config = A.AugmentConfig(crop_size=(32, 32), **{**NOTHING, "flip": True}, flip_prob=1.0)
    view = A.augment_view(image, seed(13), config).numpy()
    np.testing.assert_allclose(view, image[:, ::-1], atol=1e-6)


def test_rotate_direction_and_zero_angle():
    image = np.zeros((5, 5, 3), np.float32)
    image[0, 2] = 1.0
    turned = A.rotate(image, math.pi / 2).numpy()
    np.testing.assert_allclose(turned, np.rot90(image, 1), atol=1e-5)  # counter-clockwise
    textured_image = textured(32, 32)
    np.testing.assert_allclose(A.rotate(textured_image, 0.0).numpy(), textured_image, atol=1e-6)
    config = A.AugmentConfig(crop_size=(32, 32), **{**NOTHING, "rotate": True}, rotate_prob=1.0,
                             rotate_degrees=0.0)
    np.testing.assert_allclose(A.augment_view(textured_image, seed(14), config).numpy(),
                               textured_image, atol=1e-5)


def test_noise_std():
    image = np.full((48, 48, 3), 0.5, np.float32)
    config = A.AugmentConfig(crop_size=(48, 48), **{**NOTHING, "noise": True}, noise_prob=1.0,
                             noise_std=0.05)
    view = A.augment_view(image, seed(15), config).numpy()
    assert abs(view.std() - 0.05) < 0.005 and abs(view.mean() - 0.5) < 0.005


def test_cutout_erases_a_clipped_square():
    image = np.full((32, 32, 3), 0.5, np.float32)
    config = A.AugmentConfig(crop_size=(32, 32), **{**NOTHING, "cutout": True}, cutout_prob=1.0,
                             cutout_fraction=0.25)
    for i in range(10):
        view = A.augment_view(image, seed(16 + i), config).numpy()
        erased = np.all(view == 0.0, axis=-1)
        rows, cols = np.nonzero(erased)
        assert 16 <= erased.sum() <= 64  # an 8x8 square, at least a quarter of it inside
        assert erased.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # a rectangle
        assert np.all(view[~erased] == 0.5)


def test_crop_box_statistics():
    areas, aspects = [], []
    for i in range(200):
        offset, size = A.sample_crop_box([64, 64, 3], seed(i), area_min=0.08)
        (y, x), (h, w) = offset.numpy(), size.numpy()
        assert 0 <= y and y + h <= 64 and 0 <= x and x + w <= 64
        areas.append(h * w / 64.0 ** 2)
        # Integer box sides: allow one pixel of rounding in the aspect ratio.
        assert 0.75 * h - 1 <= w <= 4.0 / 3.0 * h + 1
        aspects.append(w / h)
    areas = np.array(areas)
    assert areas.min() >= 0.08 and areas.max() <= 1.0
    # The whole range is used, not only large crops.
    assert areas.min() < 0.15 and areas.max() > 0.85
    assert min(aspects) < 0.85 and max(aspects) > 1.2


def test_crop_box_respects_area_min():
    for i in range(50):
        _, size = A.sample_crop_box(tf.constant([48, 48, 3]), seed(i), area_min=0.5)
        h, w = size.numpy()
        assert h * w >= 0.5 * 48 * 48


def test_eval_view_keeps_centre():
    # A 4-pixel frame around a textured centre: the 87.5% crop of 64 px is exactly rows/cols 4..59.
    image = np.ones((64, 64, 3), np.float32)
    centre = textured(56, 56)
    image[4:60, 4:60] = centre
    view = A.eval_view(image, (64, 64)).numpy()
    expected = np.clip(tf.image.resize(centre, (64, 64), method="bicubic").numpy(), 0.0, 1.0)
    np.testing.assert_allclose(view, expected, atol=1e-6)
    assert view.shape == (64, 64, 3) and view.dtype == np.float32


def test_eval_view_small_is_plain_resize():
    image = textured(48, 48)
    view = A.eval_view(image, (32, 32)).numpy()
    expected = np.clip(tf.image.resize(image, (32, 32), method="bicubic").numpy(), 0.0, 1.0)
    np.testing.assert_allclose(view, expected, atol=1e-6)
    same_size = textured(32, 32)
    np.testing.assert_allclose(A.eval_view(same_size, 32).numpy(), same_size, atol=1e-5)


def test_finetune_view():
    image = textured(48, 40)
    config = A.finetune_config((32, 32))
    first = A.augment_view(image, seed(20), config).numpy()
    assert first.shape == (32, 32, 3) and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(first, A.augment_view(image, seed(20), config).numpy())
    assert not np.array_equal(first, A.augment_view(image, seed(21), config).numpy())


def test_default_blur_and_config_checks():
    assert not A.default_blur((32, 32))
    assert not A.default_blur(64)
    assert A.default_blur((96, 96))
    assert A.AugmentConfig(crop_size=32).crop_size == (32, 32)
    with pytest.raises(ValueError, match="flip_prob"):
        A.AugmentConfig(crop_size=(32, 32), flip_prob=1.5)
    with pytest.raises(ValueError, match="blur_sigma"):
        A.AugmentConfig(crop_size=(32, 32), blur_sigma_min=3.0)


def test_crop_prob_zero_is_a_plain_resize_and_one_always_crops():
    image = tf.random.stateless_uniform([48, 48, 3], seed=[3, 4])
    plain = A.AugmentConfig(crop_size=(32, 32), crop_prob=0.0, flip=False, jitter=False,
                                  colordrop=False, blur=False)
    resized = A.augment_view(image, tf.constant([1, 2]), dataclasses.replace(plain, crop=False))
    np.testing.assert_allclose(A.augment_view(image, tf.constant([1, 2]), plain), resized)
    always = dataclasses.replace(plain, crop_prob=1.0)
    outputs = [A.augment_view(image, tf.constant([s, 0]), always) for s in range(4)]
    assert all(np.abs(o - resized).max() > 1e-3 for o in outputs)
