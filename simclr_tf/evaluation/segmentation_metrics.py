"""Segmentation metrics from a pixel confusion matrix, and model inference at the original image size.

Definitions (pixels labelled 255 are ignored everywhere; rows = true class, columns = predicted):

* IoU(c) = TP / (TP + FP + FN). A class absent from both the truth and the predictions (TP + FP +
  FN = 0) has no IoU: it is NaN in `per_class_iou` (null in metrics.json) and left out of the mean.
* mean IoU = mean of the defined IoUs (NaN / null when none is defined).
* pixel accuracy = correctly labelled pixels / labelled pixels (NaN / null when none is labelled).

Predicted values outside [0, num_classes) cannot occur (argmax over the logits); true values other
than 255 outside that range are rejected before evaluation (`data.segmentation.check_label_maps`).
"""
import math

import numpy as np
import tensorflow as tf

from simclr_tf.data.decode import read_label_map
from simclr_tf.data.augment import IGNORE_LABEL
from simclr_tf.data.segmentation import inference_dataset

METRIC_KEYS = ("mean_iou", "pixel_accuracy")


def confusion_matrix(true, pred, num_classes, ignore_label=IGNORE_LABEL):
    """[num_classes, num_classes] int64 pixel counts; pixels whose truth is `ignore_label` are left out."""
    true = np.asarray(true).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    keep = true != ignore_label
    codes = true[keep] * num_classes + pred[keep]
    return np.bincount(codes, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_iou(matrix):
    """IoU of every class [C] float64, NaN for a class absent from both truth and prediction."""
    matrix = np.asarray(matrix, np.float64)
    true_positive = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def metrics_from_confusion(matrix, num_samples):
    """The metrics.json dict (README, "What a run writes"): {"mean_iou", "pixel_accuracy", "per_class_iou",
    "num_samples"} (+ "confusion_matrix", pixel counts, rows = truth). Undefined values are None
    (JSON null), see the module docstring."""
    matrix = np.asarray(matrix, np.int64)
    ious = per_class_iou(matrix)
    labelled = matrix.sum()
    return {
        "mean_iou": _json_float(np.nanmean(ious) if np.isfinite(ious).any() else math.nan),
        "pixel_accuracy": _json_float(np.trace(matrix) / labelled if labelled else math.nan),
        "per_class_iou": [_json_float(v) for v in ious],
        "num_samples": int(num_samples),
        "confusion_matrix": matrix.tolist(),
    }


def _json_float(value):
    value = float(value)
    return None if math.isnan(value) else value


def format_metrics(metrics):
    """A short per-class table and the summary line printed after an evaluation."""
    lines = ["class  IoU"]
    for index, iou in enumerate(metrics["per_class_iou"]):
        lines.append(f"{index:>5}  {'n/a (absent)' if iou is None else f'{iou:.4f}'}")
    mean_iou, accuracy = metrics["mean_iou"], metrics["pixel_accuracy"]
    lines.append(f"mean IoU {_fmt(mean_iou)}, pixel accuracy {_fmt(accuracy)} on {metrics['num_samples']} images")
    return "\n".join(lines)


def _fmt(value):
    return "n/a" if value is None else f"{value:.4f}"


def upsampled_label_map(logits, size):
    """Class map [H, W] uint8 at `size` = (H, W): the logits [h, w, C] resized bilinearly, then argmax."""
    size = tuple(int(s) for s in size)
    logits = tf.convert_to_tensor(logits)
    if tuple(logits.shape[:2]) != size:
        logits = tf.image.resize(logits, size, method="bilinear")
    return tf.cast(tf.argmax(logits, axis=-1), tf.uint8).numpy()


def predict_label_maps(model, source, crop_size, batch_size):
    """Yields (index, uint8 label map at the image's original size) for every decodable image of an
    image source, in list order. Images are resized whole to `crop_size` for the network;
    the logits are resized back bilinearly before the argmax. Undecodable images are skipped (and
    logged by the source). `source` is a `sources.FileImageSource(..., keep_original_size=True)`."""
    for images, indices, sizes, ok in inference_dataset(source, crop_size, batch_size):
        logits = model.predict_on_batch(images)
        for i in np.flatnonzero(ok.numpy()):
            yield int(indices[i]), upsampled_label_map(logits[i], sizes[i].numpy())


def evaluate_model(model, source, label_paths, num_classes, crop_size, batch_size, keep=0):
    """(metrics dict, examples) of `model` on an image source (see `predict_label_maps`) whose i-th image has the label
    map `label_paths[i]`, compared at the label map's original size.

    `examples` holds (index, predicted map) of the first `keep` evaluated images, for figures.
    """
    matrix = np.zeros((num_classes, num_classes), np.int64)
    examples, count = [], 0
    for index, predicted in predict_label_maps(model, source, crop_size, batch_size):
        matrix += confusion_matrix(read_label_map(label_paths[index]), predicted, num_classes)
        count += 1
        if len(examples) < keep:
            examples.append((index, predicted))
    return metrics_from_confusion(matrix, count), examples
