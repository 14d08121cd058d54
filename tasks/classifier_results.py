"""Results of a fine-tuned classifier: metrics.json + confusion_matrix.png on a labelled set (after
training and for --task=evaluate) and predictions.csv (--task=predict)."""
import csv
import io
import os

import numpy as np
import tensorflow as tf

from simclr_tf.data import filelist
from simclr_tf.data.labelled import eval_dataset
from simclr_tf.errors import UserError
from simclr_tf.evaluation.classification_plots import plot_confusion_matrix
from simclr_tf.evaluation.metrics import classification_metrics, default_class_names, format_metrics_table
from simclr_tf.evaluation.probes import run_in_order
from simclr_tf.io_utils import check_writable_folder, write_json_atomic, write_text_atomic

from .artifacts import load_finetuned_model
from .console import say
from .image_files import image_source, skipped_line
from .labelled_data import cifar10_splits, read_labelled_list
from .list_inputs import read_list

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
PREDICTIONS_FILE = "predictions.csv"


def predict_probabilities(model, source, crop_size, batch_size):
    """(probabilities [N, K], ok [N]) of the model on every image of `source`, in order."""
    probabilities_of = tf.function(lambda images: model(images, training=False), reduce_retracing=True)
    return run_in_order(probabilities_of, eval_dataset(source, crop_size, batch_size))


def evaluate_model(model, data, info, save_path, batch_size):
    """metrics.json, confusion_matrix.png and the printed per-class table for one labelled set."""
    probabilities, ok = predict_probabilities(model, data.source, info["crop_size"], batch_size)
    _report_skipped(data.source, ok)
    names = info.get("class_names") or default_class_names(info["num_classes"])
    metrics = classification_metrics(data.labels[ok], np.argmax(probabilities[ok], axis=1), info["num_classes"], names)
    write_json_atomic(os.path.join(save_path, METRICS_FILE), metrics)
    plot_confusion_matrix(metrics["confusion_matrix"], names, os.path.join(save_path, CONFUSION_FILE),
                          title=f"accuracy {100 * metrics['accuracy']:.1f}% on {metrics['num_samples']} images")
    say(f"Evaluation on {data.origin}:\n{format_metrics_table(metrics)}")
    say(f"Wrote {METRICS_FILE} and {CONFUSION_FILE} to {save_path}")
    return metrics


def validation_metrics(classifier, val, crop_size, batch_size):
    """A function computing val_loss and val_accuracy of the classifier (image -> logits, inference
    mode) on a labelled set, for `callbacks.EpochMetrics`."""
    dataset = eval_dataset(val.source, crop_size, batch_size)
    logits_of = tf.function(lambda images: classifier(images, training=False), reduce_retracing=True)

    def compute():
        logits, ok = run_in_order(logits_of, dataset)
        logits, labels = logits[ok], val.labels[ok]
        if not len(labels):
            return {}
        log_probabilities = tf.nn.log_softmax(logits.astype(np.float64), axis=1).numpy()
        return {"val_loss": float(-np.mean(log_probabilities[np.arange(len(labels)), labels])),
                "val_accuracy": float(np.mean(np.argmax(logits, axis=1) == labels))}
    return compute


def _report_skipped(source, ok):
    for index in np.flatnonzero(~ok):
        say(skipped_line(source, source.paths[index]))


def evaluate_saved(flag_values, info):
    """`--task=evaluate`: the saved model on --val_file_path (or the CIFAR-10 test split)."""
    check_writable_folder(flag_values.finetune_save_path, "--finetune_save_path")  # metrics.json goes there
    input_size = tuple(info["input_size"])
    if flag_values.cifar10:
        _, data = cifar10_splits(flag_values, input_size)
    elif not flag_values.val_file_path:
        raise UserError("--val_file_path is required for --task=evaluate (a 'path,label' list, or a folder of "
                        "class folders).")
    else:
        data = read_labelled_list(flag_values, flag_values.val_file_path, "--val_file_path", info["num_classes"], input_size,
                                  class_names=info.get("class_names") or default_class_names(info["num_classes"]),
                                  reference="the classes of the model (finetune.json)")
    model = load_finetuned_model(flag_values.finetune_save_path)
    evaluate_model(model, data, info, flag_values.finetune_save_path, flag_values.batch_size)


def predict_saved(flag_values, info):
    """`--task=predict`: predictions.csv (path, prediction, confidence, prob_0 ... prob_{K-1}) under
    --output_path for every decodable image of --test_file_path; prediction is the class index."""
    image_list = read_list(flag_values, "--test_file_path", filelist.IMAGES)
    check_writable_folder(flag_values.output_path, "--output_path")  # before inference, not after
    source = image_source(flag_values, image_list.paths, tuple(info["input_size"]))
    model = load_finetuned_model(flag_values.finetune_save_path)
    probabilities, ok = predict_probabilities(model, source, info["crop_size"], flag_values.batch_size)
    _report_skipped(source, ok)
    path = os.path.join(flag_values.output_path, PREDICTIONS_FILE)
    write_text_atomic(path, predictions_csv(np.asarray(source.paths)[ok], probabilities[ok]))
    say(f"Wrote predictions for {int(ok.sum())} images to {path}"
        + (f" ({int((~ok).sum())} undecodable file(s) skipped)" if (~ok).any() else ""))


def predictions_csv(paths, probabilities):
    """CSV text: path, prediction (class index), confidence (its probability), prob_<k> per class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    num_classes = probabilities.shape[1] if probabilities.ndim == 2 else 0
    writer.writerow(["path", "prediction", "confidence"] + [f"prob_{k}" for k in range(num_classes)])
    for path, row in zip(paths, probabilities):
        best = int(np.argmax(row))
        writer.writerow([path, best, f"{row[best]:.6f}"] + [f"{p:.6f}" for p in row])
    return buffer.getvalue()
