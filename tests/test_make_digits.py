"""The coloured-digits data set of the parity table (README, "Parity with the official code")."""
import os
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import make_digits  # noqa: E402


def test_digits_split_lists_and_independent_colours(tmp_path):
    make_digits.main(["--out_dir", str(tmp_path), "--size", "16"])
    train = [line.rsplit(",", 1) for line in open(tmp_path / "train.txt").read().splitlines()]
    test = [line.rsplit(",", 1) for line in open(tmp_path / "test.txt").read().splitlines()]
    assert len(train) == 1297 and len(test) == 500
    assert open(tmp_path / "pretrain.txt").read().splitlines() == [path for path, _ in train]
    per_class = np.bincount([int(label) for _, label in test], minlength=10)
    assert per_class.min() >= 48 and per_class.max() <= 51
    image = np.asarray(Image.open(tmp_path / train[0][0]))
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    # Colour carries no class: the mean colour of an image is not predictable from its digit, so
    # the per-class mean colours are all close to the overall mean (uniform colours: std ~74 per
    # channel, ~130 images per class -> a class mean within ~20 of the overall one).
    split = np.load(tmp_path / "split.npz")
    means = split["x_train"].reshape(len(train), -1, 3).mean(axis=1)
    labels = split["y_train"]
    overall = means.mean(axis=0)
    for digit in range(10):
        assert np.abs(means[labels == digit].mean(axis=0) - overall).max() < 25


def test_printed_digits_are_whole_sharp_and_carry_their_class():
    rng = np.random.default_rng(0)
    labels = np.arange(600) % 10
    masks = np.stack([make_digits.draw_printed(label, 32, rng) for label in labels])
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    ink = (masks > 0.5).mean(axis=(1, 2))
    assert ink.min() > 0.02 and ink.max() < 0.3  # a digit, not an empty or filled square
    border = np.concatenate([masks[:, 0], masks[:, -1], masks[:, :, 0], masks[:, :, -1]], axis=1)
    assert (border.max(axis=1) > 0.3).mean() < 0.05  # almost always whole inside the frame
    # Sharp strokes: most of the digit's pixels are (nearly) full ink, unlike an upscaled 8x8 blob.
    assert (masks > 0.95).sum() > 0.4 * (masks > 0.05).sum()
    # The shape carries the class: nearest class mean (of the first 500) labels the last 100 above
    # chance (10%, +-3 points on 100 draws; 25% measured), although font, size, stroke, rotation
    # and position all vary.
    flat = masks.reshape(len(masks), -1)
    means = np.stack([flat[:500][labels[:500] == c].mean(axis=0) for c in range(10)])
    predicted = np.argmin(((flat[500:, None] - means[None]) ** 2).sum(axis=2), axis=1)
    assert (predicted == labels[500:]).mean() > 0.2


def test_printed_source_writes_the_same_split(tmp_path):
    make_digits.main(["--out_dir", str(tmp_path / "h"), "--size", "16"])
    make_digits.main(["--out_dir", str(tmp_path / "p"), "--size", "16", "--source", "printed",
                      "--min_color_distance", "100"])
    assert open(tmp_path / "h" / "train.txt").read() == open(tmp_path / "p" / "train.txt").read()
    split = np.load(tmp_path / "p" / "split.npz")
    assert split["x_train"].shape == (1297, 16, 16, 3)
    # With --min_color_distance=100 every digit is visible: some pixel is far from the corner's
    # colour (the background; anti-aliased strokes at 16 px may not reach the full foreground).
    images = split["x_test"].astype(np.float64)
    farthest = np.linalg.norm(images - images[:, :1, :1], axis=3).reshape(500, -1).max(axis=1)
    assert farthest.min() > 70


def test_white_on_black_images_have_no_colour(tmp_path):
    make_digits.main(["--out_dir", str(tmp_path), "--size", "16", "--source", "printed",
                      "--colors", "white_on_black"])
    images = np.load(tmp_path / "split.npz")["x_train"].astype(np.int64)
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()
    assert (images[:, 0, 0] == 0).mean() > 0.95 and images.reshape(len(images), -1).max(axis=1).min() > 200


def test_colour_distance_is_refused_where_colours_are_fixed(tmp_path):
    with pytest.raises(SystemExit) as caught:
        make_digits.main(["--out_dir", str(tmp_path), "--colors", "white_on_black", "--min_color_distance", "100"])
    assert caught.value.code == 2 and not os.listdir(tmp_path)
