"""Results of a fine-tuned segmentation model: validation during training, metrics.json +
predictions.png on a labelled set (after training and for --task=evaluate), and label-map PNGs
(--task=predict)."""
import os

import numpy as np

from simclr_tf.data import filelist
from simclr_tf.data import segmentation as seg
from simclr_tf.data.decode import ImageDecodeError, read_image, read_label_map, resize_image, resize_label_map
from simclr_tf.data.label_map_files import label_map_file_names, write_label_map_png
from simclr_tf.errors import UserError
from simclr_tf.evaluation.segmentation_metrics import METRIC_KEYS, evaluate_model, format_metrics, \
    predict_label_maps
from simclr_tf.evaluation.segmentation_plots import plot_segmentation_predictions
from simclr_tf.io_utils import check_writable_folder, write_json_atomic, write_text_atomic

from .artifacts import load_finetuned_model
from .caching import cache_if_requested
from .console import say
from .image_files import image_source, skipped_line
from .list_inputs import read_list
from .training_loop import write_skipped_files

METRICS_FILE = "metrics.json"
PREDICTIONS_FIGURE = "predictions.png"
PREDICTIONS_LIST = "predictions.txt"
FIGURE_EXAMPLES = 8
# Longest side of an example in predictions.png: a figure needs no more, and 8 images at the full
# --max_image_pixels would take gigabytes.
FIGURE_SIDE = 512


class Validation:
    """Evaluates a model on a `path,labelmap` list; keeps the last (metrics, examples) and the epoch
    they belong to, so the final evaluation after training need not run twice."""

    def __init__(self, model, val_list, num_classes, input_size, crop_size, flag_values):
        self.model = model
        self.val_list = val_list
        self.num_classes = num_classes
        self.crop_size = crop_size
        self.batch_size = flag_values.batch_size
        self.source = cache_if_requested(flag_values, image_source(flag_values, val_list.paths, input_size,
                                                                   keep_original_size=True), "validation")
        self.last = None

    def run(self):
        self.last = evaluate_model(self.model, self.source, self.val_list.labels, self.num_classes, self.crop_size,
                                   self.batch_size, keep=FIGURE_EXAMPLES)
        return self.last

    def epoch_metrics(self):
        """val_mean_iou and val_pixel_accuracy for `callbacks.EpochMetrics` (undefined values left out)."""
        metrics = self.run()[0]
        return {f"val_{key}": metrics[key] for key in METRIC_KEYS if metrics[key] is not None}


def write_evaluation(metrics, examples, val_list, source, num_classes, save_path, class_names=None):
    """metrics.json, predictions.png (its legend naming the classes by `class_names` when given) and the
    printed per-class IoU table."""
    write_json_atomic(os.path.join(save_path, METRICS_FILE), metrics)
    images, truths, predictions = [], [], []
    max_pixels = getattr(source, "max_pixels", None)
    for index, predicted in examples:
        try:  # read again at the original size; a file that fails now is left out of the figure
            image = read_image(val_list.paths[index], max_pixels=max_pixels)
            truth = read_label_map(val_list.labels[index], max_pixels=max_pixels)
        except ImageDecodeError as e:
            say(f"  {PREDICTIONS_FIGURE}: example left out ({e})")
            continue
        size = _figure_size(truth.shape)
        images.append(resize_image(image, size))
        truths.append(resize_label_map(truth, size))
        predictions.append(resize_label_map(np.asarray(predicted, np.uint8), size))
    plot_segmentation_predictions(images, truths, predictions, os.path.join(save_path, PREDICTIONS_FIGURE),
                                  num_classes, class_names=class_names)
    _report_skipped(source)
    say(f"Evaluation on {val_list.list_path}:\n{format_metrics(metrics)}")
    say(f"Wrote {METRICS_FILE} and {PREDICTIONS_FIGURE} to {save_path}")


def _figure_size(shape):
    """(height, width) of `shape` shrunk to at most FIGURE_SIDE on its longer side."""
    height, width = shape[:2]
    scale = min(1.0, FIGURE_SIDE / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _report_skipped(source):
    for path in sorted(source.skip_log.skipped):
        say(skipped_line(source, path))


def evaluate_saved(flag_values, info):
    """`--task=evaluate`: metrics.json and predictions.png of the saved model on --val_file_path."""
    num_classes = int(info["num_classes"])
    if not flag_values.val_file_path:
        raise UserError("--val_file_path is required for --task=evaluate (a 'path,labelmap' list).")
    check_writable_folder(flag_values.finetune_save_path, "--finetune_save_path")  # metrics.json goes there
    val_list = read_list(flag_values, "--val_file_path", filelist.SEGMENTATION)
    seg.check_label_maps(val_list, num_classes, "--val_file_path", max_pixels=flag_values.max_image_pixels)
    model = load_finetuned_model(flag_values.finetune_save_path)
    source = image_source(flag_values, val_list.paths, tuple(info["input_size"]), keep_original_size=True)
    metrics, examples = evaluate_model(model, source, val_list.labels, num_classes, tuple(info["crop_size"]),
                                       flag_values.batch_size, keep=FIGURE_EXAMPLES)
    write_evaluation(metrics, examples, val_list, source, num_classes, flag_values.finetune_save_path,
                     info.get("class_names"))


def predict_saved(flag_values, info):
    """`--task=predict`: one palette PNG label map per decodable image of --test_file_path, at the image's
    original size, under --output_path, named after the image (see `label_map_file_names`), plus
    predictions.txt ('image,labelmap' lines, itself a segmentation list)."""
    image_list = read_list(flag_values, "--test_file_path", filelist.IMAGES)
    names = label_map_file_names(image_list.paths)
    output_path = flag_values.output_path
    check_writable_folder(output_path, "--output_path")  # before inference, not after
    model = load_finetuned_model(flag_values.finetune_save_path)
    source = image_source(flag_values, image_list.paths, tuple(info["input_size"]), keep_original_size=True)
    written = []
    for index, predicted in predict_label_maps(model, source, tuple(info["crop_size"]), flag_values.batch_size):
        write_label_map_png(os.path.join(output_path, names[index]), predicted)
        written.append(f"{image_list.paths[index]},{names[index]}\n")
    write_text_atomic(os.path.join(output_path, PREDICTIONS_LIST), "".join(written))
    write_skipped_files(source.skip_log.skipped, output_path)
    _report_skipped(source)
    skipped = len(source.skip_log.skipped)
    say(f"Wrote {len(written)} label maps (palette PNG, class indices) and {PREDICTIONS_LIST} to {output_path}"
        + (f"; {skipped} undecodable file(s) skipped, listed in skipped_files.txt" if skipped else ""))
