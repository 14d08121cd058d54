"""Segmentation data: label-map checks, class weights and the training / inference pipelines.

Label maps (README, "File lists") are single-channel or palette PNGs of class indices (Pillow gives
a palette PNG's indices, see `decode.read_label_map`); `IGNORE_LABEL` (255) means "not labelled".

Training examples come from a `sources.LabelMapPairSource` (image and label map resized to the input
size when read) and are augmented by `augment.augment_view` with the label map: crop, flip and
rotation move both with the same geometry, colour jitter touches the image only. Batches come from
`pipeline.epoch_batches`: order and augmentations are a pure function of (seed, epoch), so a
resumed run sees the batches of an uninterrupted one.
"""
import concurrent.futures

import numpy as np
import tensorflow as tf
from PIL import Image

from simclr_tf.data import augment
from simclr_tf.data.augment import IGNORE_LABEL
from simclr_tf.data.decode import ImageDecodeError, read_label_map
from simclr_tf.data.filelist import MAX_REPORTED_PROBLEMS
from simclr_tf.data.pipeline import AUTOTUNE, epoch_batches
from simclr_tf.data.sources import load_tensors
from simclr_tf.errors import UserError

_EXIF_ORIENTATION = 0x0112
# Label maps are 8-bit and 255 means "ignore", so at most 255 classes (0 ... 254) fit.
MAX_CLASSES = IGNORE_LABEL


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


def _inspect_entry(entry, num_classes, max_pixels):
    """(pixel counts per class [num_classes], problem or None) of one `path,labelmap` entry."""
    try:
        label = read_label_map(entry.label, max_pixels=max_pixels)
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


def check_label_maps(file_list, num_classes, flag_name, workers=8, max_pixels=None):
    """Reads every label map of a segmentation `FileList` once and checks it against its image.

    Problems (undecodable or RGB label map, height/width differing from the image's, a value >=
    `num_classes` other than 255) are collected for the whole list and raised together as one
    `UserError` naming the flag, the list, each line and file (the first `MAX_REPORTED_PROBLEMS`
    and a count of the rest). Returns int64 pixel counts [len(file_list), num_classes] (ignore
    pixels left out), the input of `median_frequency_weights`.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda entry: _inspect_entry(entry, num_classes, max_pixels), file_list.entries))
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


def weight_table(class_weights):
    """[256] float32 lookup: the weight of each class value, 0 for 255 and unused values."""
    table = np.zeros(256, np.float32)
    table[: len(class_weights)] = class_weights
    return tf.constant(table)


def train_dataset(source, config, batch_size, seed, start_epoch=0, class_weights=None, shard=None):
    """Infinite batches of (image, label int32 [B, H, W]) or, with `class_weights`, (image, label,
    per-pixel weight [B, H, W]) for Keras' sample_weight; epoch-aligned from `start_epoch`, full
    batches only, undecodable pairs dropped (and logged by the source).

    `source` yields (image, label map, ok) (a `sources.LabelMapPairSource`, possibly cached or a
    subset); `config` is an `augment.AugmentConfig` (cutout is refused with label maps). `shard`: one
    worker's share of every global batch (see `pipeline.epoch_batches`)."""
    table = weight_table(class_weights) if class_weights is not None else None

    def load(index, element_seed):
        image, label, ok = load_tensors(source, index)
        image, label = augment.augment_view(tf.image.convert_image_dtype(image, tf.float32), element_seed, config,
                                            label_map=label)
        label = tf.cast(label, tf.int32)
        return (image, label, ok) if table is None else (image, label, tf.gather(table, label), ok)

    return epoch_batches(len(source), batch_size, seed, start_epoch, load, shard=shard)


def inference_dataset(source, crop_size, batch_size):
    """Batches of (image [B, crop_h, crop_w, 3], index, original size [B, 2], ok) in list order over
    a `sources.FileImageSource` made with `keep_original_size=True`; the whole image is resized to
    `crop_size` (no crop: every pixel gets a prediction). The last batch may be smaller."""
    crop_size = tuple(crop_size)

    def load(index):
        image, size, ok = load_tensors(source, index)
        image = tf.image.convert_image_dtype(image, tf.float32)
        if crop_size != source.size:
            image = tf.clip_by_value(tf.image.resize(image, crop_size, method="bilinear"), 0.0, 1.0)
        return image, index, size, ok

    dataset = tf.data.Dataset.range(len(source)).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


