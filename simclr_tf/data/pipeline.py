"""tf.data input pipelines: decoded images in, augmented batches out.

Data order is a pure function of (seed, epoch): every epoch is a stateless permutation of the
images and every image's augmentation seed is derived from (seed, epoch, position). A run resumed
at epoch k therefore sees exactly the batches an uninterrupted run would have seen.
"""
import threading

import numpy as np
import tensorflow as tf

from simclr_tf.data import augment
from simclr_tf.data.decode import ImageDecodeError, read_image_resized
from simclr_tf.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
# Effectively "forever": `fit` stops after num_epochs x steps_per_epoch batches.
_MAX_EPOCHS = 1 << 30


class SkipLog:
    """Thread-safe record of files that could not be decoded (decoding runs in parallel threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._skipped = {}
        self._unreported = []

    def add(self, path, reason):
        with self._lock:
            if path not in self._skipped:
                self._skipped[path] = reason
                self._unreported.append(path)

    def take_new(self):
        """Paths skipped since the previous call."""
        with self._lock:
            new, self._unreported = self._unreported, []
            return new

    @property
    def skipped(self):
        """{path: reason} of every file skipped so far."""
        with self._lock:
            return dict(self._skipped)


class FileImageSource:
    """Decodes image i of a list on demand, resized to `size`; undecodable files are logged."""

    def __init__(self, paths, size, skip_log=None):
        self.paths = list(paths)
        self.size = tuple(size)
        self.skip_log = skip_log if skip_log is not None else SkipLog()

    def __len__(self):
        return len(self.paths)

    def load(self, index):
        """Returns (uint8 image [H, W, 3], ok); a blank image and ok=False when undecodable."""
        path = self.paths[int(index)]
        try:
            return read_image_resized(path, self.size), np.bool_(True)
        except (ImageDecodeError, OSError) as e:
            self.skip_log.add(path, str(e))
            return np.zeros((*self.size, 3), np.uint8), np.bool_(False)


class CachedImageSource:
    """All images decoded once and held in memory (`--cache`), for small data sets."""

    def __init__(self, file_source, progress=None):
        self.paths = file_source.paths
        self.size = file_source.size
        self.skip_log = file_source.skip_log
        self._images = np.zeros((len(file_source), *self.size, 3), np.uint8)
        self._ok = np.zeros(len(file_source), bool)
        for i in range(len(file_source)):
            self._images[i], self._ok[i] = file_source.load(i)
            if progress is not None:
                progress(i + 1, len(file_source))

    def __len__(self):
        return len(self.paths)

    def load(self, index):
        index = int(index)
        return self._images[index], np.bool_(self._ok[index])


def check_an_image_decodes(source, what):
    """Raises UserError when not one image of `source` can be decoded.

    Training skips undecodable images, so with none left it would wait forever for a first batch.
    Decoding stops at the first success: one file in the usual case. `what` names the list.
    """
    for index in range(len(source)):
        if source.load(index)[-1]:  # the last item of what a source loads is its ok flag
            return
    skipped = source.skip_log.skipped
    examples = "".join(f"\n  {path}: {reason}" for path, reason in list(skipped.items())[:3])
    raise UserError(f"{what}: none of its {len(source)} images can be decoded, so there is nothing to train on. "
                    f"For example:{examples}")


def load_image_tensor(source, index):
    """Graph op around `source.load`: (float32 image in [0, 1] of static shape, ok flag)."""
    image, ok = tf.numpy_function(source.load, [index], [tf.uint8, tf.bool], stateful=False)
    image = tf.ensure_shape(image, (*source.size, 3))
    ok = tf.ensure_shape(ok, ())
    return tf.image.convert_image_dtype(image, tf.float32), ok


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
        image, ok = load_image_tensor(source, index)
        view_a, view_b = augment.augment_pair(image, element_seed, augment_config)
        return view_a, view_b, ok

    return epoch_batches(len(source), batch_size, seed, start_epoch, load_and_augment)


def sample_images(source, count):
    """The first `count` decodable images as float32 [count, H, W, 3] (for figures)."""
    images = []
    for i in range(len(source)):
        image, ok = source.load(i)
        if ok:
            images.append(image.astype(np.float32) / 255.0)
        if len(images) == count:
            break
    return np.stack(images) if images else np.zeros((0, *source.size, 3), np.float32)


class ArrayImageSource:
    """Images already in memory (e.g. CIFAR-10), resized once to `size`."""

    def __init__(self, images, size, names=None):
        from simclr_tf.data.decode import resize_image
        self.size = tuple(size)
        self._images = np.stack([resize_image(image, self.size) for image in images]) if len(images) else images
        self.paths = list(names) if names is not None else [f"array[{i}]" for i in range(len(images))]
        self.skip_log = SkipLog()

    def __len__(self):
        return len(self._images)

    def load(self, index):
        return self._images[int(index)], np.bool_(True)
