"""Labelled image pipelines: classification fine-tuning batches, and in-order evaluation batches
(classification, linear evaluation, kNN, embeddings).

Training batches come from `pipeline.epoch_batches`, so like pretraining their order and
augmentation are a pure function of (seed, epoch): a resumed fine-tuning run sees exactly the
batches of an uninterrupted one. Evaluation batches keep the list order, hold every image (the last
batch may be smaller) and carry an `ok` flag per image so callers can leave undecodable files out.
"""
import numpy as np
import tensorflow as tf

from simclr_tf.data import augment
from simclr_tf.data.pipeline import AUTOTUNE, epoch_batches
from simclr_tf.data.sources import load_tensors


def train_dataset(source, labels, view_config, batch_size, seed, start_epoch=0, shard=None):
    """Infinite batches of (image, label) for fine-tuning, epoch-aligned from `start_epoch`.

    `source` is an image source (`sources`: yields (image, ok)) and `labels` its integer labels.
    Views are `augment.augment_view` with `view_config` (an augment.AugmentConfig, or a crop size
    for `augment.finetune_config`'s crop + flip defaults);
    undecodable images are dropped (and logged by the source); full batches only. `shard`: one
    worker's share of every global batch (see `pipeline.epoch_batches`).
    """
    label_table = tf.constant(np.asarray(labels, np.int64))
    if not isinstance(view_config, augment.AugmentConfig):
        view_config = augment.finetune_config(tuple(view_config))

    def load(index, element_seed):
        image, ok = load_tensors(source, index)
        image = tf.image.convert_image_dtype(image, tf.float32)
        return augment.augment_view(image, element_seed, view_config), tf.gather(label_table, index), ok

    return epoch_batches(len(source), batch_size, seed, start_epoch, load, shard=shard)


def eval_dataset(source, crop_size, batch_size):
    """Batches of (image, ok) for every image of `source` in order, with the evaluation view
    (augment.eval_view: centre crop, or the whole image at 32 px). `ok` is False for an
    undecodable image (a blank stand-in keeps positions aligned with the list)."""
    crop_size = tuple(crop_size)

    def load(index):
        image, ok = load_tensors(source, index)
        return augment.eval_view(tf.image.convert_image_dtype(image, tf.float32), crop_size), ok

    dataset = tf.data.Dataset.range(len(source)).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)
