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


def epoch_elements(num_images, batch_size, seed, epoch):
    """Dataset of (image index, element seed [2]) of one epoch: steps_per_epoch x batch_size elements."""
    per_epoch = steps_per_epoch(num_images, batch_size) * batch_size
    epoch = tf.cast(epoch, tf.int64)
    order = epoch_order(num_images, seed, epoch)
    element_seeds = tf.stack([tf.fill([per_epoch], tf.cast(seed, tf.int64)),
                              epoch * num_images + tf.range(per_epoch, dtype=tf.int64)], axis=1)
    return tf.data.Dataset.from_tensor_slices((order[:per_epoch], element_seeds))


@tf.autograph.experimental.do_not_convert
def _is_decodable(*example_and_ok):
    return example_and_ok[-1]


@tf.autograph.experimental.do_not_convert
def _without_flag(*example_and_ok):
    return example_and_ok[:-1]


def epoch_batches(num_images, batch_size, seed, start_epoch, load):
    """Infinite dataset of full training batches, exactly steps_per_epoch per epoch from `start_epoch`.

    `load(index, element_seed)` returns a training example as a tuple whose last item is the
    image's ok flag (parallel map, deterministic order). Undecodable examples are dropped, and an
    epoch that lost some fills its last batch from its own first examples again: every epoch keeps
    its own images and batch count, so a run resumed at epoch k sees what an uninterrupted run saw,
    broken files or not.
    """
    steps = steps_per_epoch(num_images, batch_size)

    def one_epoch(epoch):
        examples = epoch_elements(num_images, batch_size, seed, epoch).map(
            load, num_parallel_calls=AUTOTUNE, deterministic=True)
        decodable = examples.filter(_is_decodable).map(_without_flag)
        # repeat() of an epoch with no decodable example ends at once instead of looping.
        return decodable.repeat().batch(batch_size, drop_remainder=True).take(steps)

    return tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(one_epoch).prefetch(AUTOTUNE)


def pretrain_dataset(source, augment_config, batch_size, seed, start_epoch=0):
    """Infinite dataset of batches of (view_a, view_b) for SimCLR, epoch-aligned (see module doc)."""

    def load_and_augment(index, element_seed):
        image, ok = load_tensors(source, index)
        view_a, view_b = augment.augment_pair(tf.image.convert_image_dtype(image, tf.float32), element_seed,
                                              augment_config)
        return view_a, view_b, ok

    return epoch_batches(len(source), batch_size, seed, start_epoch, load_and_augment)
