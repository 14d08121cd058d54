"""Labelled pipelines and stratified label fractions (simclr_tf.data.labelled)."""
import numpy as np
import pytest
from PIL import Image

from simclr_tf.data.labelled import eval_dataset, train_dataset
from simclr_tf.data.sources import ArrayImageSource, FileImageSource, SubsetSource
from simclr_tf.data.subsets import stratified_subset

# 4 classes of very different sizes, in no particular order.
LABELS = np.array([0] * 40 + [1] * 25 + [2] * 10 + [3] * 3)
np.random.default_rng(0).shuffle(LABELS)


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_every_class_is_present_with_its_share(fraction):
    subset = stratified_subset(LABELS, fraction, seed=7)
    assert len(np.unique(subset)) == len(subset)  # no duplicates
    counts = np.bincount(LABELS[subset], minlength=4)
    sizes = np.bincount(LABELS)
    expected = [max(1, int(np.floor(fraction * n + 0.5))) for n in sizes]
    assert counts.tolist() == expected
    assert all(c >= 1 for c in counts)


def test_same_seed_same_subset_other_seed_other_subset():
    a = stratified_subset(LABELS, 0.2, seed=3)
    assert np.array_equal(a, stratified_subset(LABELS, 0.2, seed=3))
    assert not np.array_equal(a, stratified_subset(LABELS, 0.2, seed=4))
    assert not np.array_equal(stratified_subset(LABELS, 0.2, seed=(3, 0)), stratified_subset(LABELS, 0.2, seed=(3, 1)))


def test_smaller_fraction_is_inside_larger_one_and_full_fraction_is_everything():
    small, large = stratified_subset(LABELS, 0.1, seed=5), stratified_subset(LABELS, 0.5, seed=5)
    assert set(small) <= set(large)
    assert np.array_equal(stratified_subset(LABELS, 1.0, seed=5), np.arange(len(LABELS)))
    with pytest.raises(ValueError):
        stratified_subset(LABELS, 0.0, seed=5)


def _constant_images(count, size=16):
    """Image i is uniformly grey at level 10 * i: crop and flip leave it unchanged, so a view tells
    which image it came from."""
    return np.stack([np.full((size, size, 3), 10 * i, np.uint8) for i in range(count)])


def _image_index(batch_images):
    return np.rint(batch_images[:, 0, 0, 0] * 255 / 10).astype(int)


def test_train_batches_pair_each_view_with_its_label_and_resume_exactly():
    labels = np.arange(12) % 3
    source = ArrayImageSource(_constant_images(12), (16, 16))
    batch, steps = 4, 3
    full = [(x.numpy(), y.numpy()) for x, y in train_dataset(source, labels, (16, 16), batch, seed=1).take(2 * steps)]
    for images, batch_labels in full:
        assert images.shape == (batch, 16, 16, 3)
        assert np.array_equal(batch_labels, labels[_image_index(images)])
    epoch_one = np.concatenate([_image_index(x) for x, _ in full[:steps]])
    assert sorted(epoch_one) == list(range(12))  # one epoch = every image once
    resumed = [(x.numpy(), y.numpy()) for x, y in
               train_dataset(source, labels, (16, 16), batch, seed=1, start_epoch=1).take(steps)]
    for (x_full, y_full), (x_resumed, y_resumed) in zip(full[steps:], resumed):
        np.testing.assert_array_equal(x_full, x_resumed)
        np.testing.assert_array_equal(y_full, y_resumed)


def test_train_views_are_random_crops_and_flips_of_the_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 24, 24, 3), dtype=np.uint8)
    source = ArrayImageSource(np.repeat(image, 4, axis=0), (24, 24))
    views = np.concatenate([x.numpy() for x, _ in train_dataset(source, np.zeros(4), (16, 16), 4, seed=0).take(1)])
    assert views.shape == (4, 16, 16, 3)
    assert len({v.tobytes() for v in views}) == 4  # drawn per image
    # No colour augmentation: a crop-and-resize keeps the colours of the original image.
    assert abs(views.mean() - image.mean() / 255) < 0.08


def test_train_views_follow_the_crop_and_flip_settings():
    from simclr_tf.data.augment import finetune_config
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    source = ArrayImageSource(images, (16, 16))
    plain = finetune_config((16, 16), crop=False, flip=False)
    views = np.concatenate([x.numpy() for x, _ in train_dataset(source, np.zeros(4), plain, 4, seed=0).take(1)])
    as_float = images.astype(np.float32) / 255
    # Each view is one whole, unflipped image: the settings reached the pipeline.
    assert all(min(np.abs(v - im).max() for im in as_float) < 1e-6 for v in views)
    flipped = finetune_config((16, 16), crop=False, flip=True, flip_prob=1.0)
    views = np.concatenate([x.numpy() for x, _ in train_dataset(source, np.zeros(4), flipped, 4, seed=0).take(1)])
    assert all(min(np.abs(v - im[:, ::-1]).max() for im in as_float) < 1e-6 for v in views)


def test_eval_batches_keep_order_and_every_image_and_flag_undecodable_ones(tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(path)
        paths.append(str(path))
    broken = tmp_path / "broken.png"
    broken.write_bytes(open(paths[0], "rb").read()[:30])
    paths.insert(2, str(broken))
    source = FileImageSource(paths, (16, 16))
    batches = list(eval_dataset(source, (16, 16), batch_size=4))
    assert [len(x) for x, _ in batches] == [4, 2]  # no drop_remainder
    ok = np.concatenate([o.numpy() for _, o in batches])
    assert ok.tolist() == [True, True, False, True, True, True]
    images = np.concatenate([x.numpy() for x, _ in batches])
    np.testing.assert_allclose(images[ok][:, 8, 8, 0] * 255, [0, 40, 80, 120, 160], atol=1)
    assert str(broken) in source.skip_log.skipped


def test_subset_source_reads_the_chosen_images():
    source = ArrayImageSource(_constant_images(6), (16, 16))
    subset = SubsetSource(source, [4, 1])
    assert len(subset) == 2 and subset.paths == ["array[4]", "array[1]"]
    assert subset.load(0)[0][0, 0, 0] == 40 and subset.load(1)[0][0, 0, 0] == 10
