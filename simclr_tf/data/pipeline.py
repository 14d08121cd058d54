"""tf.data input pipelines: decoded images in, augmented batches out.

Data order is a pure function of (seed, epoch): every epoch is a stateless permutation of the
images and every image's augmentation seed is derived from (seed, epoch, position). A run resumed
at epoch k therefore sees exactly the batches an uninterrupted run would have seen.
"""
import tensorflow as tf

from simclr_tf.data import augment
from simclr_tf.data.sources import load_tensors

AUTOTUNE = tf.data.AUTOTUNE
# Effectively "forever": `fit` stops after num_epochs x steps_per_epoch batches.
_MAX_EPOCHS = 1 << 30


def steps_per_epoch(num_images, batch_size):
    """Full batches per epoch (the remainder is dropped, as SimCLR needs equal-size batches)."""
    return num_images // batch_size


def epoch_order(num_images, seed, epoch):
    """Stateless permutation of image indices for one epoch."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_images, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))


def epoch_elements(num_images, batch_size, seed, epoch, order_fn=None, shard=None):
    """Dataset of (image index, element seed [2]) of one epoch: steps_per_epoch x batch_size elements.

    `order_fn(epoch)`, when given, is the epoch's image order (int64 [steps x batch_size], e.g.
    G-SimCLR's guided batches), else a stateless permutation. With `shard` = (index, count) the
    dataset holds only shard `index` of `count` equal slices of every global batch (one worker's
    share of a multi-worker step), in the same order, with the same element seeds.
    """
    steps = steps_per_epoch(num_images, batch_size)
    per_epoch = steps * batch_size
    epoch = tf.cast(epoch, tf.int64)
    order = order_fn(epoch) if order_fn is not None else epoch_order(num_images, seed, epoch)[:per_epoch]
    element_seeds = tf.stack([tf.fill([per_epoch], tf.cast(seed, tf.int64)),
                              epoch * num_images + tf.range(per_epoch, dtype=tf.int64)], axis=1)
    if shard is not None:
        index, count = shard
        width = batch_size // count
        order = tf.reshape(tf.reshape(order, [steps, batch_size])[:, index * width:(index + 1) * width], [-1])
        element_seeds = tf.reshape(
            tf.reshape(element_seeds, [steps, batch_size, 2])[:, index * width:(index + 1) * width], [-1, 2])
    return tf.data.Dataset.from_tensor_slices((order, element_seeds))


@tf.autograph.experimental.do_not_convert
def _is_decodable(*example_and_ok):
    return example_and_ok[-1]


@tf.autograph.experimental.do_not_convert
def _without_flag(*example_and_ok):
    return example_and_ok[:-1]


def epoch_batches(num_images, batch_size, seed, start_epoch, load, order_fn=None, shard=None):
    """Infinite dataset of full training batches, exactly steps_per_epoch per epoch from `start_epoch`.

    `load(index, element_seed)` returns a training example as a tuple whose last item is the
    image's ok flag (parallel map, deterministic order). Undecodable examples are dropped, and an
    epoch that lost some fills its last batch from its own first examples again: every epoch keeps
    its own images and batch count, so a run resumed at epoch k sees what an uninterrupted run saw,
    broken files or not.

    `order_fn`: see `epoch_elements`. `shard` = (pipeline index, pipelines, replicas of this
    pipeline) for one worker of a multi-worker job: the worker reads its slice of every global
    batch and yields it as per-replica batches (global batch / all replicas), `replicas` of them
    per step, as tf.distribute's `distribute_datasets_from_function` expects. When every file
    decodes, the replicas together see exactly the one-device run's global batches.
    """
    steps = steps_per_epoch(num_images, batch_size)
    slices, local_batch, per_step = None, batch_size, 1
    if shard is not None:
        index, pipelines, replicas = shard
        slices, local_batch, per_step = (index, pipelines), batch_size // (pipelines * replicas), replicas

    def one_epoch(epoch):
        examples = epoch_elements(num_images, batch_size, seed, epoch, order_fn, slices).map(
            load, num_parallel_calls=AUTOTUNE, deterministic=True)
        decodable = examples.filter(_is_decodable).map(_without_flag)
        # repeat() of an epoch with no decodable example ends at once instead of looping.
        return decodable.repeat().batch(local_batch, drop_remainder=True).take(steps * per_step)

    return tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(one_epoch).prefetch(AUTOTUNE)


def pretrain_dataset(source, augment_config, batch_size, seed, start_epoch=0, augment_on="host", order_fn=None,
                     shard=None):
    """Infinite dataset of SimCLR batches, epoch-aligned (see module doc): (view_a, view_b) made here
    with `augment_on="host"`, or (uint8 images, element seeds [B, 2]) with "device", for the views to
    be made inside the training step from the same seeds (`batch_augment`). `order_fn`, `shard`: see
    `epoch_batches`."""

    def load_and_augment(index, element_seed):
        image, ok = load_tensors(source, index)
        view_a, view_b = augment.augment_pair(tf.image.convert_image_dtype(image, tf.float32), element_seed,
                                              augment_config)
        return view_a, view_b, ok

    def load_only(index, element_seed):
        image, ok = load_tensors(source, index)
        return image, element_seed, ok

    load = load_and_augment if augment_on == "host" else load_only
    return epoch_batches(len(source), batch_size, seed, start_epoch, load, order_fn, shard)


def fixed_pairs_dataset(source, augment_config, batch_size, seed):
    """Batches of (view_a, view_b) of every image of `source` in order, from seeds fixed by (seed,
    position): the same pairs every time it is iterated (representation diagnostics). Undecodable
    images give blank views (the diagnostics sample comes from images checked to decode)."""

    def load(index):
        image, _ = load_tensors(source, index)
        element_seed = tf.stack([tf.cast(seed, tf.int64), -1 - index])  # never a training element seed
        return augment.augment_pair(tf.image.convert_image_dtype(image, tf.float32), element_seed, augment_config)

    dataset = tf.data.Dataset.range(len(source)).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)
