"""Labelled image pipelines (classification, linear evaluation, kNN) and stratified label fractions.

Training batches come from `pipeline.epoch_batches`, so like pretraining their order and
augmentation are a pure function of (seed, epoch): a resumed fine-tuning run sees exactly the
batches of an uninterrupted one. Evaluation batches keep the list order, hold every image (the last
batch may be smaller) and carry an `ok` flag per image so callers can leave undecodable files out.
"""
import math

import numpy as np
import tensorflow as tf

from simclr_tf.data import augment
from simclr_tf.data.pipeline import AUTOTUNE, epoch_batches, load_image_tensor


def stratified_subset(labels, fraction, seed):
    """Sorted indices of a random subset holding `fraction` of every class.

    Each class present in `labels` keeps round(fraction x its size) images (halves round up) and
    never fewer than one, so every class is represented however small the fraction. The draw is a
    per-class permutation from `seed` (an int or a sequence of ints, e.g. (seed, repeat)), so the
    same seed gives the same subset, and for one seed a smaller fraction's subset is contained in a
    larger one's. `fraction` = 1 returns every index.
    """
    labels = np.asarray(labels)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, math.floor(fraction * len(members) + 0.5))
        chosen.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def train_dataset(source, labels, view_config, batch_size, seed, start_epoch=0):
    """Infinite batches of (image, label) for fine-tuning, epoch-aligned from `start_epoch`.

    `source` is an image source (pipeline.FileImageSource, CachedImageSource, ArrayImageSource)
    and `labels` its integer labels. Views are random resized crop + flip only (augment.augment_view
    with `view_config`: an augment.finetune_config, or a crop size for its defaults);
    undecodable images are dropped (and logged by the source); full batches only.
    """
    label_table = tf.constant(np.asarray(labels, np.int64))
    if not isinstance(view_config, augment.AugmentConfig):
        view_config = augment.finetune_config(tuple(view_config))

    def load(index, element_seed):
        image, ok = load_image_tensor(source, index)
        return augment.augment_view(image, element_seed, view_config), tf.gather(label_table, index), ok

    return epoch_batches(len(source), batch_size, seed, start_epoch, load)


def eval_dataset(source, crop_size, batch_size):
    """Batches of (image, ok) for every image of `source` in order, with the evaluation view
    (augment.eval_view: centre crop, or the whole image at 32 px). `ok` is False for an
    undecodable image (a blank stand-in keeps positions aligned with the list)."""
    crop_size = tuple(crop_size)

    def load(index):
        image, ok = load_image_tensor(source, index)
        return augment.eval_view(image, crop_size), ok

    dataset = tf.data.Dataset.range(len(source)).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


class SubsetSource:
    """The images `indices` of another image source, as a source of their own (same interface:
    `paths`, `size`, `skip_log`, `load(i)`, `len`), e.g. a stratified label fraction."""

    def __init__(self, source, indices):
        self.source = source
        self.indices = np.asarray(indices, np.int64)
        self.paths = [source.paths[i] for i in self.indices]
        self.size = source.size
        self.skip_log = source.skip_log

    def __len__(self):
        return len(self.indices)

    def load(self, index):
        return self.source.load(self.indices[int(index)])
