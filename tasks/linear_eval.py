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

import config
from simclr_tf.data.labelled import eval_dataset, stratified_subset
from simclr_tf.errors import UserError
from simclr_tf.evaluation.classification_plots import plot_linear_eval
from simclr_tf.evaluation.probes import (features_function, parse_feature_layer, probe_accuracy,
                                         projection_layer_count, run_in_order)
from simclr_tf.io_utils import write_json_atomic
from simclr_tf.models.heads import build_projection_head
from simclr_tf.models.resnet import feature_dim
from tasks import common
from tasks.classification import load_classification_data

RESULT_FILE = "linear_eval.json"
PLOT_FILE = "linear_eval.png"
# Inverse L2 strength of the probe: scikit-learn's default, on standardised features.
PROBE_C = 1.0


def run(flag_values):
    """Writes linear_eval.json and linear_eval.png into --pretrain_save_path."""
    input_size, crop_size = common.image_sizes(flag_values)
    layer = _checked_layer(flag_values.feature_layer)
    fractions = config.parse_fractions(flag_values.train_fractions)
    data = load_classification_data(flag_values, input_size, need_val=True)
    keras.utils.set_random_seed(flag_values.seed)
    encoder, pretrained = common.encoder_from_flags(flag_values, crop_size)
    head, head_kind = (projection_head_from_flags(flag_values, encoder) if layer != "h" else (None, None))
    try:
        compute = features_function(encoder, head, [layer])
    except ValueError as e:
        raise UserError(f"--feature_layer={layer}: {e}") from None

    train_x, train_y = _features(compute, layer, data.train, crop_size, flag_values.batch_size)
    val_x, val_y = _features(compute, layer, data.val, crop_size, flag_values.batch_size)
    common.say(f"Linear evaluation of {layer} ({train_x.shape[1]} features): {len(train_y)} training and "
               f"{len(val_y)} validation images, {data.num_classes} classes, fractions {fractions}, "
               f"{flag_values.repeats} subset(s) each")
    results = [_probe_fraction(fraction, flag_values, train_x, train_y, val_x, val_y) for fraction in fractions]

    save_path = flag_values.pretrain_save_path
    summary = {
        "feature_layer": layer,
        "feature_dim": int(train_x.shape[1]),
        "pretrained": bool(pretrained),
        "encoder": (os.path.join(save_path, common.ENCODER_FILE) if pretrained
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
    common.say(f"Wrote {RESULT_FILE} and {PLOT_FILE} to {save_path}")


def _checked_layer(name):
    try:
        parse_feature_layer(name)
    except ValueError as e:
        raise UserError(f"--feature_layer: {e}") from None
    return name


def projection_head_from_flags(flag_values, encoder):
    """(projection head, "trained" | "random"): projection_head.keras from --pretrain_save_path, or a
    randomly initialised head of --proj_layers / --proj_dim when there is none (said)."""
    path = os.path.join(flag_values.pretrain_save_path or "", common.PROJECTION_HEAD_FILE)
    if flag_values.pretrain_save_path and os.path.isfile(path):
        try:
            head = keras.models.load_model(path, compile=False)
        except Exception as e:
            raise UserError(f"--pretrain_save_path: cannot load {path}: {e}") from None
        common.say(f"Projection head: loaded from {path} ({projection_layer_count(head)} layers)")
        return head, "trained"
    head = build_projection_head(feature_dim(encoder), num_layers=flag_values.proj_layers,
                                 output_dim=flag_values.proj_dim)
    common.say(f"Projection head: RANDOMLY INITIALISED ({flag_values.proj_layers} layers, output "
               f"{flag_values.proj_dim}; no {common.PROJECTION_HEAD_FILE} in --pretrain_save_path)")
    return head, "random"


def _features(compute, layer, data, crop_size, batch_size):
    """(features, labels) of the decodable images of a labelled set."""
    outputs, ok = run_in_order(compute, eval_dataset(data.source, crop_size, batch_size))
    for index in np.flatnonzero(~ok):
        common.say(f"  skipped undecodable file: {data.source.paths[index]}")
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
    common.say(f"  fraction {fraction:g} ({sizes[0]} images, {repeats} subset(s)): accuracy "
               f"{100 * result['accuracy_mean']:.2f} +- {100 * result['accuracy_std']:.2f} %")
    return result
