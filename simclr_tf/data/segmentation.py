"""Segmentation data: label-map checks, class weights, joint image + label-map augmentation, pipelines.

Label maps (contract section 4) are single-channel or palette PNGs of class indices (Pillow gives a
palette PNG's indices, see `decode.read_label_map`); `IGNORE_LABEL` (255) means "not labelled".

Augmentation (`augment_example`) moves the image and its label map with the SAME geometry:

* random resized crop (the box of `augment.sample_crop_box`: area in [crop_area_min, 1], aspect
  3/4-4/3 of the output's), resized to `crop_size`: bilinear for the image, nearest neighbour for
  the label map (both with half-pixel centres, so the two grids coincide);
* horizontal flip;
* rotation about the centre: bilinear for the image (uncovered corners filled by reflection, as in
  pretraining), nearest neighbour for the label map with uncovered pixels set to `IGNORE_LABEL`, so
  the reflected corners never count in the loss;
* colour jitter (SimCLR's, `augment._color_jitter`) on the image only.

Each step owns a fixed sub-seed, so switching one off does not change what the others draw. Images
and label maps are first resized to `input_size` when read (the label map with OpenCV's
INTER_NEAREST_EXACT, which uses the same pixel centres as the image's resize).

Training batches come from `pipeline.epoch_batches`: order and augmentations are a pure function of
(seed, epoch), so a resumed run sees the batches of an uninterrupted one.
"""
import concurrent.futures
import dataclasses
import math
import os

import cv2
import numpy as np
import tensorflow as tf
from PIL import Image

from simclr_tf.data import augment
from simclr_tf.data.decode import ImageDecodeError, read_image, read_label_map, resize_image
from simclr_tf.data.filelist import MAX_REPORTED_PROBLEMS
from simclr_tf.data.pipeline import AUTOTUNE, SkipLog, epoch_batches
from simclr_tf.errors import UserError
from simclr_tf.io_utils import atomic_path

IGNORE_LABEL = 255
_EXIF_ORIENTATION = 0x0112
_SEED_SLOTS = ("crop", "flip", "rotate", "jitter")
_graph_style = tf.autograph.experimental.do_not_convert


# --- checks before training ---------------------------------------------------------------------

def image_size_from_header(path):
    """(height, width) of an image as `decode.read_image` returns it, from the header only (cheap).

    EXIF orientations 5-8 (90 degree turns) swap the sides, as `read_image` applies them. None when
    Pillow cannot identify the file (it is then checked when it is decoded).
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        return None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _inspect_entry(entry, num_classes):
    """(pixel counts per class [num_classes], problem or None) of one `path,labelmap` entry."""
    try:
        label = read_label_map(entry.label)
    except ImageDecodeError as e:
        return None, str(e)
    image_size = image_size_from_header(entry.path)
    if image_size is not None and image_size != label.shape:
        return None, (f"label map {entry.label} is {label.shape[0]}x{label.shape[1]} (HxW) but its image "
                      f"{entry.path} is {image_size[0]}x{image_size[1]}")
    counts = np.bincount(label.ravel(), minlength=256)
    bad = [value for value in np.flatnonzero(counts[num_classes:]) + num_classes if value != IGNORE_LABEL]
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        return None, (f"label map {entry.label} holds class value(s) {shown}: classes must be in "
                      f"[0, {num_classes - 1}] (--num_classes={num_classes}) or {IGNORE_LABEL} (ignore)")
    return counts[:num_classes].astype(np.int64), None


def check_label_maps(file_list, num_classes, flag_name, workers=8):
    """Reads every label map of a segmentation `FileList` once and checks it against its image.

    Problems (undecodable or RGB label map, height/width differing from the image's, a value >=
    `num_classes` other than 255) are collected for the whole list and raised together as one
    `UserError` naming the flag, the list, each line and file (the first `MAX_REPORTED_PROBLEMS`
    and a count of the rest). Returns int64 pixel counts [len(file_list), num_classes] (ignore
    pixels left out), the input of `median_frequency_weights`.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda entry: _inspect_entry(entry, num_classes), file_list.entries))
    problems = [(entry.line, problem) for entry, (_, problem) in zip(file_list.entries, results) if problem]
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        lines = [f"{flag_name}: {file_list.list_path} has {len(problems)} label-map problem(s):"]
        lines += [f"  line {line}: {problem}" for line, problem in shown]
        if len(problems) > len(shown):
            lines.append(f"  ... and {len(problems) - len(shown)} more")
        raise UserError("\n".join(lines))
    return np.stack([counts for counts, _ in results]).reshape(len(results), num_classes)


def median_frequency_weights(pixel_counts):
    """Median-frequency class balancing (Eigen & Fergus, 2015) from per-map pixel counts [N, C].

    freq(c) = pixels of class c / labelled pixels of the maps in which c appears;
    weight(c) = median over present classes of freq / freq(c). A class with no pixels gets 0 (it
    cannot contribute to the loss anyway). Ignore pixels count nowhere.
    """
    pixel_counts = np.asarray(pixel_counts, np.float64)
    per_map_total = pixel_counts.sum(axis=1, keepdims=True)
    support = ((pixel_counts > 0) * per_map_total).sum(axis=0)
    present = support > 0
    weights = np.zeros(pixel_counts.shape[1])
    if not present.any():
        return weights
    frequency = pixel_counts.sum(axis=0)[present] / support[present]
    weights[present] = np.median(frequency) / frequency
    return weights


def random_subset(num_items, fraction, seed):
    """Sorted indices of round(fraction x num_items) items (at least one), the same for the same seed."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.arange(num_items)
    count = max(1, math.floor(fraction * num_items + 0.5))
    return np.sort(np.random.default_rng(seed).permutation(num_items)[:count])


# --- sources: decoding in tf.data threads ---------------------------------------------------------

def resize_label_map(label, size):
    """Nearest-neighbour resize of a [H, W] label map to (height, width), pixel-centre aligned."""
    height, width = size
    if label.shape == (height, width):
        return label
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


class SegmentationSource:
    """Pairs (image, label map) resized to `size` when read; undecodable pairs are logged and skipped.

    `cache()` decodes everything once and keeps it in memory (for small data sets).
    """

    def __init__(self, image_paths, label_paths, size, skip_log=None):
        if len(image_paths) != len(label_paths):
            raise ValueError("one label map per image is needed")
        self.paths = list(image_paths)
        self.label_paths = list(label_paths)
        self.size = tuple(size)
        self.skip_log = skip_log if skip_log is not None else SkipLog()
        self._cache = None

    def __len__(self):
        return len(self.paths)

    def _decode(self, index):
        path = self.paths[index]
        try:
            image = resize_image(read_image(path), self.size)
            label = resize_label_map(read_label_map(self.label_paths[index]), self.size)
            return image, label, np.bool_(True)
        except (ImageDecodeError, OSError) as e:
            self.skip_log.add(path, str(e))
            return (np.zeros((*self.size, 3), np.uint8), np.full(self.size, IGNORE_LABEL, np.uint8),
                    np.bool_(False))

    def load(self, index):
        """(uint8 image [H, W, 3], uint8 label map [H, W], ok)."""
        index = int(index)
        return self._cache[index] if self._cache is not None else self._decode(index)

    def cache(self, progress=None):
        """Decodes every pair now and serves them from memory afterwards."""
        cached = []
        for i in range(len(self)):
            cached.append(self._decode(i))
            if progress is not None:
                progress(i + 1, len(self))
        self._cache = cached
        return self


class InferenceSource:
    """Images resized to `size` when read, with their original (height, width), for evaluation and
    prediction. `cache()` keeps them in memory (the validation set is read every epoch)."""

    def __init__(self, image_paths, size, skip_log=None):
        self.paths = list(image_paths)
        self.size = tuple(size)
        self.skip_log = skip_log if skip_log is not None else SkipLog()
        self._cache = None

    def __len__(self):
        return len(self.paths)

    def _decode(self, index):
        path = self.paths[index]
        try:
            image = read_image(path)
        except (ImageDecodeError, OSError) as e:
            self.skip_log.add(path, str(e))
            return np.zeros((*self.size, 3), np.uint8), np.zeros(2, np.int32), np.bool_(False)
        return resize_image(image, self.size), np.asarray(image.shape[:2], np.int32), np.bool_(True)

    def load(self, index):
        """(uint8 image [H, W, 3], int32 original size [2], ok)."""
        index = int(index)
        return self._cache[index] if self._cache is not None else self._decode(index)

    def cache(self):
        """Decodes every image now and serves them from memory afterwards."""
        self._cache = [self._decode(i) for i in range(len(self))]
        return self


# --- joint augmentation ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SegmentationAugmentConfig:
    """What `augment_example` applies; `crop_size` (height, width) is what the network sees."""

    crop_size: tuple
    crop: bool = True
    crop_prob: float = 1.0
    crop_area_min: float = 0.08
    flip: bool = True
    flip_prob: float = 0.5
    rotate: bool = False
    rotate_prob: float = 0.5
    rotate_degrees: float = 30.0
    jitter: bool = False
    jitter_prob: float = 0.8
    strength: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "crop_size", augment._size_pair(self.crop_size))
        for name in ("crop_prob", "flip_prob", "rotate_prob", "jitter_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.crop_area_min <= 1.0:
            raise ValueError(f"crop_area_min must be in (0, 1], got {self.crop_area_min}")


def _gate(seed, prob):
    """A boolean scalar that is True with probability `prob` (drawn from `seed`)."""
    return tf.random.stateless_uniform([], seed=seed) < prob


def _crop_box(shape, seed, config):
    """The random crop box, or the whole image when the crop is off (or not drawn)."""
    whole = (tf.zeros([2], tf.int32), tf.cast(shape[:2], tf.int32))
    if not config.crop or config.crop_prob <= 0.0:
        return whole
    gate_seed, box_seed = augment._split(seed, 2)
    height, width = config.crop_size
    offset, size = augment.sample_crop_box(shape, box_seed, config.crop_area_min, aspect=width / height)
    use = _gate(gate_seed, config.crop_prob)
    return tf.where(use, offset, whole[0]), tf.where(use, size, whole[1])


def _crop_and_resize(image, label, seed, config):
    offset, size = _crop_box(tf.shape(image), seed, config)
    image = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([size, [-1]], 0))
    label = tf.slice(label, offset, size)
    image = tf.clip_by_value(tf.image.resize(image, config.crop_size, method="bilinear"), 0.0, 1.0)
    label = tf.image.resize(label[..., tf.newaxis], config.crop_size, method="nearest")[..., 0]
    return image, label


def rotation_transform(angle, height, width):
    """The ImageProjectiveTransformV3 row [1, 8] of a rotation by `angle` radians about the centre.

    Computed in float64 (see `augment.rotate`) so eager and graph runs give the same pixels.
    """
    angle = tf.cast(angle, tf.float64)
    height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_offset = ((width - 1.0) - (cos * (width - 1.0) - sin * (height - 1.0))) / 2.0
    y_offset = ((height - 1.0) - (sin * (width - 1.0) + cos * (height - 1.0))) / 2.0
    zero = tf.zeros([], tf.float64)
    return tf.cast(tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zero, zero])[tf.newaxis], tf.float32)


def rotate_pair(image, label, angle):
    """Rotates image (bilinear, reflected corners) and label map (nearest, 255 corners) together."""
    shape = tf.shape(image)
    transform = rotation_transform(angle, shape[0], shape[1])
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis], transforms=transform, output_shape=shape[:2], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")[0]
    label_float = tf.cast(label, tf.float32)[tf.newaxis, :, :, tf.newaxis]
    rotated_label = tf.raw_ops.ImageProjectiveTransformV3(
        images=label_float, transforms=transform, output_shape=shape[:2], fill_value=float(IGNORE_LABEL),
        interpolation="NEAREST", fill_mode="CONSTANT")[0, :, :, 0]
    return tf.clip_by_value(rotated, 0.0, 1.0), tf.cast(rotated_label, label.dtype)


def _maybe_pair(image, label, seed, prob, fn):
    """Applies fn(image, label, seed) to both with probability `prob`."""
    gate_seed, op_seed = augment._split(seed, 2)
    if prob >= 1.0:
        return fn(image, label, op_seed)
    return tf.cond(_gate(gate_seed, prob), lambda: fn(image, label, op_seed), lambda: (image, label))


@_graph_style
def augment_example(image, label, seed, config: SegmentationAugmentConfig):
    """One training example: (image [H, W, 3] float32 in [0, 1], label map [H, W] uint8) ->
    (image [crop_h, crop_w, 3], label map [crop_h, crop_w]) with the same geometry for both.

    Order: crop-and-resize, flip, rotation, colour jitter (image only). `seed` is a [2] integer
    tensor; the same seed gives bit-identical outputs.
    """
    image = augment._as_image(image)
    seeds = dict(zip(_SEED_SLOTS, augment._split(augment._as_seed(seed), len(_SEED_SLOTS))))
    image, label = _crop_and_resize(image, label, seeds["crop"], config)
    if config.flip and config.flip_prob > 0.0:
        image, label = _maybe_pair(image, label, seeds["flip"], config.flip_prob,
                                   lambda x, y, s: (tf.reverse(x, [1]), tf.reverse(y, [1])))
    if config.rotate and config.rotate_prob > 0.0:
        max_angle = math.radians(config.rotate_degrees)
        image, label = _maybe_pair(
            image, label, seeds["rotate"], config.rotate_prob,
            lambda x, y, s: rotate_pair(x, y, tf.random.stateless_uniform([], s, -max_angle, max_angle)))
    if config.jitter and config.jitter_prob > 0.0:
        image = augment._maybe(image, seeds["jitter"], config.jitter_prob,
                               lambda x, s: augment._color_jitter(x, s, config.strength))
    crop_size = config.crop_size
    return tf.ensure_shape(image, [*crop_size, 3]), tf.ensure_shape(label, crop_size)


# --- tf.data pipelines ------------------------------------------------------------------------------

def load_pair_tensor(source, index):
    """Graph op around `source.load`: (float32 image in [0, 1], uint8 label map, ok)."""
    image, label, ok = tf.numpy_function(source.load, [index], [tf.uint8, tf.uint8, tf.bool], stateful=False)
    image = tf.ensure_shape(image, (*source.size, 3))
    label = tf.ensure_shape(label, source.size)
    return tf.image.convert_image_dtype(image, tf.float32), label, tf.ensure_shape(ok, ())


def weight_table(class_weights):
    """[256] float32 lookup: the weight of each class value, 0 for 255 and unused values."""
    table = np.zeros(256, np.float32)
    table[: len(class_weights)] = class_weights
    return tf.constant(table)


def train_dataset(source, config, batch_size, seed, start_epoch=0, class_weights=None):
    """Infinite batches of (image, label int32 [B, H, W]) or, with `class_weights`, (image, label,
    per-pixel weight [B, H, W]) for Keras' sample_weight; epoch-aligned from `start_epoch`, full
    batches only, undecodable pairs dropped (and logged by the source)."""
    table = weight_table(class_weights) if class_weights is not None else None

    def load(index, element_seed):
        image, label, ok = load_pair_tensor(source, index)
        image, label = augment_example(image, label, element_seed, config)
        label = tf.cast(label, tf.int32)
        return (image, label, ok) if table is None else (image, label, tf.gather(table, label), ok)

    return epoch_batches(len(source), batch_size, seed, start_epoch, load)


def inference_dataset(source, crop_size, batch_size):
    """Batches of (image [B, crop_h, crop_w, 3], index, original size [B, 2], ok) over an
    `InferenceSource` in list order; the whole image is resized to `crop_size` (no crop: every
    pixel gets a prediction). The last batch may be smaller."""
    crop_size = tuple(crop_size)

    def load(index):
        image, size, ok = tf.numpy_function(source.load, [index], [tf.uint8, tf.int32, tf.bool], stateful=False)
        image = tf.image.convert_image_dtype(tf.ensure_shape(image, (*source.size, 3)), tf.float32)
        if crop_size != source.size:
            image = tf.clip_by_value(tf.image.resize(image, crop_size, method="bilinear"), 0.0, 1.0)
        return image, index, tf.ensure_shape(size, (2,)), tf.ensure_shape(ok, ())

    dataset = tf.data.Dataset.range(len(source)).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


# --- label-map files ------------------------------------------------------------------------------

def voc_palette():
    """The PASCAL VOC colour map [256, 3] uint8 (0 black, 1 dark red, 2 green, ...; 255 is cream
    (224, 224, 192) as VOC's "void"), the usual palette of indexed label maps."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, colour = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette[index] = colour
    palette[IGNORE_LABEL] = (224, 224, 192)
    return palette


def write_label_map_png(path, label_map):
    """Writes a [H, W] uint8 label map as a palette PNG (indices = classes, `voc_palette` colours),
    atomically."""
    image = Image.fromarray(np.asarray(label_map, np.uint8), mode="P")
    image.putpalette(voc_palette().ravel().tolist())
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")


def label_map_file_names(image_paths):
    """One '<stem>.png' per image, in list order; a repeated stem gets '_2', '_3', ... (the first
    free one, compared case-insensitively), so names are unique and depend only on the list's
    order. Commas in a stem become '_' so the names can stand in a 'path,labelmap' list."""
    taken, names = set(), []
    for path in image_paths:
        stem = os.path.splitext(os.path.basename(path))[0].replace(",", "_") or "image"
        name, k = f"{stem}.png", 2
        while name.lower() in taken:  # macOS and Windows file systems ignore case
            name, k = f"{stem}_{k}.png", k + 1
        taken.add(name.lower())
        names.append(name)
    return names

