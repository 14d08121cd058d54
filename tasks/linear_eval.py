"""`--task=linear_eval`: logistic regression on frozen features of one layer, for several label fractions.

Protocol (the same for a pretrained and a random-init encoder, so the two compare fairly): features
of the evaluation view (centre crop; the whole image at 32 px) of every training and validation image,
in inference mode; for each fraction, --repeats stratified subsets of the training images drawn from
(--seed, repeat); per subset a standardisation + logistic regression fitted on the subset and scored
on the whole validation set. A fraction of 1.0 has one possible subset, so it is fitted once.
"""
import os

import keras
import numpy as np

from simclr_tf.data.labelled import eval_dataset
from simclr_tf.data.subsets import stratified_subset
from simclr_tf.errors import UserError
from simclr_tf.evaluation.classification_plots import plot_linear_eval
from simclr_tf.evaluation.probes import features_function, parse_feature_layer, probe_accuracy, run_in_order
from simclr_tf.io_utils import check_writable_folder, write_json_atomic

from . import artifacts, config
from .console import say
from .flag_use import TaskFlags
from .image_files import skipped_line
from .labelled_data import load_classification_data
from .sizes import image_sizes

FLAGS_READ = TaskFlags("linear_eval", results=(), also_reads=(
    "randomness", "train_list", "val_list", "image_size", "decoding", "cifar10", "classes", "pretrain_folder", "encoder",
    "projection_head", "batch", "probes", "feature_layer"))

RESULT_FILE = "linear_eval.json"
PLOT_FILE = "linear_eval.png"
# Inverse L2 strength of the probe: scikit-learn's default, on standardised features.
PROBE_C = 1.0


def run(flag_values):
    """Writes linear_eval.json and linear_eval.png into --pretrain_save_path."""
    input_size, crop_size = image_sizes(flag_values)
    layer = _checked_layer(flag_values.feature_layer)
    fractions = config.parse_fractions(flag_values.train_fractions)
    data = load_classification_data(flag_values, input_size, need_val=True)
    # linear_eval.json goes into --pretrain_save_path: refused now if it cannot, not after the features.
    check_writable_folder(flag_values.pretrain_save_path, "--pretrain_save_path")
    keras.utils.set_random_seed(flag_values.seed)
    encoder, pretrained = artifacts.load_pretrained_encoder(flag_values, crop_size)
    head, head_kind = (artifacts.load_projection_head(flag_values, encoder) if layer != "h" else (None, None))
    try:
        compute = features_function(encoder, head, [layer])
    except ValueError as e:
        raise UserError(f"--feature_layer={layer}: {e}") from None

    train_x, train_y = _features(compute, layer, data.train, crop_size, flag_values.batch_size)
    val_x, val_y = _features(compute, layer, data.val, crop_size, flag_values.batch_size)
    say(f"Linear evaluation of {layer} ({train_x.shape[1]} features): {len(train_y)} training and "
               f"{len(val_y)} validation images, {data.num_classes} classes, fractions {fractions}, "
               f"{flag_values.repeats} subset(s) each")
    results = [_probe_fraction(fraction, flag_values, train_x, train_y, val_x, val_y) for fraction in fractions]

    save_path = flag_values.pretrain_save_path
    summary = {
        "feature_layer": layer,
        "feature_dim": int(train_x.shape[1]),
        "pretrained": bool(pretrained),
        "encoder": (os.path.join(save_path, artifacts.ENCODER_FILE) if pretrained
                    else f"random init {flag_values.backbone}"),
        "projection_head": head_kind,
        "probe": {"model": "scikit-learn LogisticRegression (lbfgs, multinomial, L2)", "C": PROBE_C,
                  "standardised": True, "view": "evaluation view (no augmentation)"},
        "num_classes": data.num_classes,
        "train_images": int(len(train_y)),
        "val_images": int(len(val_y)),
        "seed": flag_values.seed,
        "repeats": flag_values.repeats,
        "results": results,
    }
    write_json_atomic(os.path.join(save_path, RESULT_FILE), summary)
    encoder_text = "pretrained encoder" if pretrained else "RANDOM-INIT encoder (no pretraining)"
    plot_linear_eval(results, os.path.join(save_path, PLOT_FILE), f"Linear evaluation of {layer}, {encoder_text}")
    say(f"Wrote {RESULT_FILE} and {PLOT_FILE} to {save_path}")


def _checked_layer(name):
    try:
        parse_feature_layer(name)
    except ValueError as e:
        raise UserError(f"--feature_layer: {e}") from None
    return name


def _features(compute, layer, data, crop_size, batch_size):
    """(features, labels) of the decodable images of a labelled set."""
    outputs, ok = run_in_order(compute, eval_dataset(data.source, crop_size, batch_size))
    for index in np.flatnonzero(~ok):
        say(skipped_line(data.source, data.source.paths[index]))
    return outputs[layer][ok], data.labels[ok]


def _probe_fraction(fraction, flag_values, train_x, train_y, val_x, val_y):
    repeats = flag_values.repeats if fraction < 1.0 else 1
    accuracies, sizes = [], []
    for repeat in range(repeats):
        subset = stratified_subset(train_y, fraction, (flag_values.seed, repeat))
        if len(np.unique(train_y[subset])) < 2:
            raise UserError("--train_file_path: the training images hold a single class; a probe needs two.")
        accuracies.append(probe_accuracy(train_x[subset], train_y[subset], val_x, val_y, seed=flag_values.seed,
                                         c=PROBE_C))
        sizes.append(len(subset))
    result = {"fraction": fraction, "num_train": int(sizes[0]), "repeats": repeats,
              "accuracy_mean": float(np.mean(accuracies)), "accuracy_std": float(np.std(accuracies)),
              "accuracies": [float(a) for a in accuracies]}
    say(f"  fraction {fraction:g} ({sizes[0]} images, {repeats} subset(s)): accuracy "
               f"{100 * result['accuracy_mean']:.2f} +- {100 * result['accuracy_std']:.2f} %")
    return result
