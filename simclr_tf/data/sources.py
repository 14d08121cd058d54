"""Image sources: what a tf.data pipeline reads, one example at a time, by index.

A source decodes example `i` on demand (`load(i)`) and returns a tuple of NumPy arrays whose last
item is an `ok` flag: False when the file could not be decoded, with blank stand-ins of the right
shape so positions stay aligned with the list. `signature` gives the dtype and shape of every item,
which is all `load_tensors` needs to call any source from a graph, and all `CachedSource` needs to
hold any source in memory. Undecodable files are recorded in the source's `SkipLog` (decoding runs
in parallel tf.data threads, hence the lock). In a graph, `FileImageSource` decodes the files
TensorFlow's decoders read exactly with them (`load_graph`, `native_decode`), the rest with `load`.

Sources: `FileImageSource` (image files, optionally with their original size), `ArrayImageSource`
(images already in memory, e.g. CIFAR-10), `LabelMapPairSource` (image + label map files),
`SubsetSource` (some indices of another source) and `CachedSource` (any source decoded once).
"""
import os
import threading

import numpy as np
import tensorflow as tf

from simclr_tf.data import native_decode
from simclr_tf.data.decode import read_image, read_label_map, resize_image, resize_label_map
from simclr_tf.errors import UserError


class SkipLog:
    """Thread-safe record of files that could not be decoded."""

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


def _decoded_or_blank(source, index, decode):
    """`decode(index)` + (ok=True,), or the source's blank example + (ok=False,) when decoding fails.

    Any exception counts as "undecodable": a damaged file must be skipped and listed, never stop a
    run, whatever the decoder raised.
    """
    try:
        return tuple(decode(index)) + (np.bool_(True),)
    except Exception as e:  # noqa: BLE001  (see docstring)
        source.skip_log.add(source.paths[index], str(e) or type(e).__name__)
        return tuple(np.zeros(shape, dtype) for dtype, shape in source.signature[:-1]) + (np.bool_(False),)


class FileImageSource:
    """Image files decoded on demand and resized to `size` = (height, width): (uint8 [H, W, 3], ok),
    or with `keep_original_size` (uint8 [H, W, 3], int32 [2] original (height, width), ok).

    `max_pixels` bounds the decoded size of one image (decompression bombs); see `decode.read_image`.
    `load` decodes with the checked path (`decode.read_image`); in a graph (`load_tensors`), with
    `native_decoding`, the files TensorFlow reads to the same pixels are decoded by TensorFlow
    instead (`load_graph`), with the same resize and the same skipping of undecodable files.
    """

    def __init__(self, paths, size, skip_log=None, keep_original_size=False, max_pixels=None,
                 native_decoding=True):
        self.paths = list(paths)
        self.size = tuple(size)
        self.skip_log = skip_log if skip_log is not None else SkipLog()
        self.keep_original_size = keep_original_size
        self.max_pixels = max_pixels
        self.native_decoding = native_decoding
        image = (np.uint8, (*self.size, 3))
        self.signature = (image, (np.int32, (2,)), (np.bool_, ())) if keep_original_size else \
            (image, (np.bool_, ()))

    def __len__(self):
        return len(self.paths)

    def _decode(self, index):
        image = read_image(self.paths[index], max_pixels=self.max_pixels)
        resized = resize_image(image, self.size)
        return (resized, np.asarray(image.shape[:2], np.int32)) if self.keep_original_size else (resized,)

    def load(self, index):
        return _decoded_or_blank(self, int(index), self._decode)

    def _native_format(self, data):
        # numpy_function passes a string tensor as bytes or as a 0-d object array holding them.
        data = data.item() if isinstance(data, np.ndarray) else data
        return np.int32(native_decode.native_format(data, self.max_pixels))

    def _resize(self, image):
        return resize_image(image, self.size)

    @tf.autograph.experimental.do_not_convert  # plain ops and explicit tf.cond: nothing to convert
    def load_graph(self, index):
        """Graph op giving what `load(index)` gives: TensorFlow decodes the file when
        `native_decode.native_format` accepts its bytes, `load` (the checked path) decodes it otherwise.

        A file TensorFlow fails on although its header passed (truncated, corrupt, unreadable) goes to
        `load` too, which then skips and lists it: the native attempt is a one-element dataset whose
        errors `ignore_errors` turns into "no element", followed by a not-ok blank of which `take(1)`
        keeps the first element there is; a not-ok attempt (a checked file, or a failure) calls `load`.
        Per element, so order and positions are those of `load`.
        """
        # fsencode: a path that is not valid UTF-8 (a Linux file name) reaches read_file unchanged.
        path = tf.gather(tf.constant([os.fsencode(p) for p in self.paths], tf.string), index)
        not_ok = tuple(tf.zeros(shape, dtype) for dtype, shape in self.signature[:-1]) + (tf.constant(False),)

        def attempt(path):
            data = tf.io.read_file(path)
            kind = tf.numpy_function(self._native_format, [data], tf.int32, stateful=False)

            def decode():
                image = native_decode.decode_image_bytes(data)
                shape = tf.shape(image, out_type=tf.int32)
                # The checked path's own resize (OpenCV area / bicubic): both paths give the same pixels.
                resized = tf.cond(tf.reduce_all(tf.equal(shape[:2], self.size)), lambda: image,
                                  lambda: tf.numpy_function(self._resize, [image], tf.uint8, stateful=False))
                resized = tf.ensure_shape(resized, [*self.size, 3])
                return ((resized, shape[:2]) if self.keep_original_size else (resized,)) + (tf.constant(True),)

            return tf.cond(tf.not_equal(kind, native_decode.CHECKED), decode, lambda: not_ok)

        native = tf.data.Dataset.from_tensors(path).map(attempt).ignore_errors().concatenate(
            tf.data.Dataset.from_tensors(not_ok)).take(1).get_single_element()
        return tf.cond(native[-1], lambda: tuple(native), lambda: _checked_tensors(self, index))


class LabelMapPairSource:
    """(image, label map) file pairs resized to `size` when read: (uint8 [H, W, 3], uint8 [H, W], ok).

    The label map is resized by nearest neighbour on the image's pixel centres (`resize_label_map`).
    A blank stand-in label map is all `blank_label` (255, "ignore"), so it can never train a class.
    """

    def __init__(self, image_paths, label_paths, size, skip_log=None, max_pixels=None, blank_label=255):
        if len(image_paths) != len(label_paths):
            raise ValueError("one label map per image is needed")
        self.paths = list(image_paths)
        self.label_paths = list(label_paths)
        self.size = tuple(size)
        self.skip_log = skip_log if skip_log is not None else SkipLog()
        self.max_pixels = max_pixels
        self.blank_label = blank_label
        self.signature = ((np.uint8, (*self.size, 3)), (np.uint8, self.size), (np.bool_, ()))

    def __len__(self):
        return len(self.paths)

    def _decode(self, index):
        image = resize_image(read_image(self.paths[index], max_pixels=self.max_pixels), self.size)
        label = resize_label_map(read_label_map(self.label_paths[index], max_pixels=self.max_pixels), self.size)
        return image, label

    def load(self, index):
        example = _decoded_or_blank(self, int(index), self._decode)
        if not example[-1]:
            example = (example[0], np.full(self.size, self.blank_label, np.uint8), example[-1])
        return example


class ArrayImageSource:
    """Images already in memory (e.g. CIFAR-10), resized once to `size`: (uint8 [H, W, 3], ok)."""

    def __init__(self, images, size, names=None):
        self.size = tuple(size)
        self._images = np.stack([resize_image(image, self.size) for image in images]) if len(images) else images
        self.paths = list(names) if names is not None else [f"array[{i}]" for i in range(len(images))]
        self.skip_log = SkipLog()
        self.signature = ((np.uint8, (*self.size, 3)), (np.bool_, ()))

    def __len__(self):
        return len(self._images)

    def load(self, index):
        return self._images[int(index)], np.bool_(True)


class SubsetSource:
    """The examples `indices` of another source, as a source of its own (e.g. a label fraction)."""

    def __init__(self, source, indices):
        self.source = source
        self.indices = np.asarray(indices, np.int64)
        self.paths = [source.paths[i] for i in self.indices]
        self.size = source.size
        self.skip_log = source.skip_log
        self.signature = source.signature
        self.max_pixels = getattr(source, "max_pixels", None)

    def __len__(self):
        return len(self.indices)

    def load(self, index):
        return self.source.load(self.indices[int(index)])


class CachedSource:
    """Any source decoded once, every example held in memory (`--cache`, for small data sets).

    `progress(done, total)` is called after each example (e.g. a progress bar).
    """

    def __init__(self, source, progress=None):
        self.paths = source.paths
        self.size = source.size
        self.skip_log = source.skip_log
        self.signature = source.signature
        self.max_pixels = getattr(source, "max_pixels", None)  # of the files it was decoded from (figures re-read them)
        self._items = [np.zeros((len(source), *shape), dtype) for dtype, shape in source.signature]
        for i in range(len(source)):
            for store, value in zip(self._items, source.load(i)):
                store[i] = value
            if progress is not None:
                progress(i + 1, len(source))

    def __len__(self):
        return len(self.paths)

    def load(self, index):
        index = int(index)
        return tuple(store[index] for store in self._items)


def load_tensors(source, index):
    """Graph op around `source.load(index)`: its items as tensors of static shape (uint8 images stay
    uint8; callers convert). Sources with native decoding decode in the graph (`load_graph`)."""
    if isinstance(source, SubsetSource):
        return load_tensors(source.source, tf.gather(source.indices, index))
    if getattr(source, "native_decoding", False):
        return source.load_graph(index)
    return _checked_tensors(source, index)


def _checked_tensors(source, index):
    """`source.load(index)` called from the graph."""
    dtypes = [tf.as_dtype(dtype) for dtype, _ in source.signature]
    values = tf.numpy_function(source.load, [index], dtypes, stateful=False)
    return tuple(tf.ensure_shape(value, shape) for value, (_, shape) in zip(values, source.signature))


def check_an_image_decodes(source, what):
    """Raises UserError when not one example of `source` can be decoded.

    Training skips undecodable examples, so with none left it would wait forever for a first batch.
    Decoding stops at the first success: one file in the usual case. `what` names the list.
    """
    for index in range(len(source)):
        if source.load(index)[-1]:
            return
    skipped = source.skip_log.skipped
    examples = "".join(f"\n  {path}: {reason}" for path, reason in list(skipped.items())[:3])
    raise UserError(f"{what}: none of its {len(source)} images can be decoded, so there is nothing to train on. "
                    f"For example:{examples}")


def sample_images(source, count):
    """The first `count` decodable images as float32 [count, H, W, 3] in [0, 1] (for figures)."""
    images = []
    for i in range(len(source)):
        example = source.load(i)
        if example[-1]:
            images.append(example[0].astype(np.float32) / 255.0)
        if len(images) == count:
            break
    return np.stack(images) if images else np.zeros((0, *source.size, 3), np.float32)
