"""Input pipeline: epoch-aligned deterministic order, resumability, caching, skipping broken files."""
import os

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.data.augment import AugmentConfig
from simclr_tf.data.cifar10 import load_cifar10
from simclr_tf.data.sources import CachedSource, FileImageSource, check_an_image_decodes
from simclr_tf.data.pipeline import epoch_elements, epoch_order, pretrain_dataset, steps_per_epoch
from simclr_tf.errors import UserError

from conftest import write_fake_cifar10

CONFIG = AugmentConfig(crop_size=(32, 32))


@pytest.fixture(scope="module")
def source(demo_data):
    folder = os.path.dirname(demo_data.unlabeled)
    paths = [os.path.join(folder, line.strip()) for line in open(demo_data.unlabeled) if line.strip()]
    return FileImageSource(paths[:20], (32, 32))


def _batches(dataset, count):
    return [tuple(np.asarray(t) for t in batch) for batch in dataset.take(count)]


def test_epoch_order_is_a_seeded_permutation_that_changes_every_epoch():
    first = epoch_order(10, 3, tf.constant(0, tf.int64)).numpy()
    assert sorted(first) == list(range(10))
    np.testing.assert_array_equal(first, epoch_order(10, 3, tf.constant(0, tf.int64)).numpy())
    assert not np.array_equal(first, epoch_order(10, 3, tf.constant(1, tf.int64)).numpy())
    assert not np.array_equal(first, epoch_order(10, 4, tf.constant(0, tf.int64)).numpy())


def test_each_epoch_contributes_whole_batches_and_every_element_gets_its_own_seed():
    elements = [e for epoch in (0, 1) for e in epoch_elements(10, 4, seed=0, epoch=epoch).as_numpy_iterator()]
    assert len(elements) == 16
    first_epoch = [int(i) for i, _ in elements[:8]]
    assert len(set(first_epoch)) == 8 and steps_per_epoch(10, 4) == 2  # remainder of 2 dropped
    seeds = {tuple(s) for _, s in elements}
    assert len(seeds) == 16


def test_same_seed_same_batches_and_views_differ(source):
    first = _batches(pretrain_dataset(source, CONFIG, 4, seed=7), 2)
    second = _batches(pretrain_dataset(source, CONFIG, 4, seed=7), 2)
    other = _batches(pretrain_dataset(source, CONFIG, 4, seed=8), 1)
    for (a1, b1), (a2, b2) in zip(first, second):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(b1, b2)
    assert first[0][0].shape == (4, 32, 32, 3) and first[0][0].dtype == np.float32
    assert np.abs(first[0][0] - first[0][1]).mean() > 0.01  # two views of each image differ
    assert np.abs(first[0][0] - other[0][0]).mean() > 0.01


def test_a_stream_started_at_epoch_k_equals_the_uninterrupted_one_from_there(source):
    steps = steps_per_epoch(len(source), 4)
    uninterrupted = _batches(pretrain_dataset(source, CONFIG, 4, seed=1), 2 * steps)
    resumed = _batches(pretrain_dataset(source, CONFIG, 4, seed=1, start_epoch=1), steps)
    for (a1, b1), (a2, b2) in zip(uninterrupted[steps:], resumed):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(b1, b2)


def test_with_undecodable_files_every_epoch_keeps_its_batches_and_resumes_exactly(source, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    mixed = FileImageSource(source.paths[:10] + [str(broken)] * 2, (32, 32))  # 12 listed, 10 decodable
    steps = steps_per_epoch(len(mixed), 4)  # 3 batches per epoch, whatever is undecodable
    uninterrupted = _batches(pretrain_dataset(mixed, CONFIG, 4, seed=1), 3 * steps)
    resumed = _batches(pretrain_dataset(mixed, CONFIG, 4, seed=1, start_epoch=2), steps)
    assert all(a.shape == (4, 32, 32, 3) for a, _ in uninterrupted)
    for (a1, b1), (a2, b2) in zip(uninterrupted[2 * steps:], resumed):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(b1, b2)


def test_cached_source_gives_the_same_images(source):
    cached = CachedSource(source)
    for i in (0, 5, 19):
        np.testing.assert_array_equal(cached.load(i)[0], source.load(i)[0])


def test_undecodable_files_are_skipped_and_logged(source, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths = source.paths[:7] + [str(broken)]
    mixed = FileImageSource(paths, (32, 32))
    # One whole epoch, so every listed file has been read: 4 batches of 2 although only 7 images decode
    # (the last batch is completed with the epoch's first image again).
    batches = _batches(pretrain_dataset(mixed, CONFIG, 2, seed=0), steps_per_epoch(len(mixed), 2))
    assert len(batches) == 4 and all(a.shape == (2, 32, 32, 3) for a, _ in batches)
    assert list(mixed.skip_log.skipped) == [str(broken)]
    assert mixed.skip_log.take_new() == [str(broken)] and mixed.skip_log.take_new() == []


def test_cifar10_from_a_local_copy(tmp_path):
    write_fake_cifar10(str(tmp_path))
    x_train, y_train, x_test, y_test = load_cifar10(str(tmp_path))
    assert x_train.shape == (30, 32, 32, 3) and x_train.dtype == np.uint8 and y_train.shape == (30,)
    assert x_test.shape == (6, 32, 32, 3)
    with pytest.raises(UserError, match="missing data_batch_1"):
        load_cifar10(str(tmp_path / "nowhere"))


def test_a_source_with_no_decodable_image_is_refused_after_one_decode_otherwise(tmp_path, source):
    broken = []
    for i in range(3):
        path = tmp_path / f"broken{i}.png"
        path.write_bytes(b"not an image")
        broken.append(str(path))
    with pytest.raises(UserError, match=r"--train_file_path: none of its 3 images can be decoded(.|\n)*broken0.png"):
        check_an_image_decodes(FileImageSource(broken, (32, 32)), "--train_file_path")
    # One good image among broken ones is enough; the check stops at the first decodable image.
    mixed = FileImageSource(broken + source.paths[:1] + broken, (32, 32))
    check_an_image_decodes(mixed, "--train_file_path")
    assert set(mixed.skip_log.skipped) == set(broken)


def _index_batches(shard=None, steps=6):
    from simclr_tf.data.pipeline import epoch_batches
    load = lambda index, element_seed: (index, element_seed, tf.constant(True))  # noqa: E731
    dataset = epoch_batches(20, 8, seed=4, start_epoch=0, load=load, shard=shard)
    return [(i.numpy(), s.numpy()) for i, s in dataset.take(steps)]


def test_worker_shards_of_each_global_batch_put_together_are_the_one_device_batches():
    whole = _index_batches(steps=4)  # 2 steps per epoch (20 // 8): epochs 1 and 2
    first = _index_batches(shard=(0, 2, 1), steps=4)
    second = _index_batches(shard=(1, 2, 1), steps=4)
    for (indices, seeds), (a, sa), (b, sb) in zip(whole, first, second):
        np.testing.assert_array_equal(indices, np.concatenate([a, b]))
        np.testing.assert_array_equal(seeds, np.concatenate([sa, sb]))
    # One pipeline feeding two local replicas: two per-replica batches per global step, in order.
    local = _index_batches(shard=(0, 1, 2), steps=8)
    for step, (indices, _) in enumerate(whole):
        np.testing.assert_array_equal(indices, np.concatenate([local[2 * step][0], local[2 * step + 1][0]]))
