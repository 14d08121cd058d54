"""The coloured-digits data set of the parity table (README, "Parity with the official code")."""
import os
import sys

import numpy as np
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
