"""`--task=linear_eval`: logistic regression on frozen features, for several label fractions: of one
layer, of every layer (--feature_layer=all: h and each projection-head layer), or of h of several
encoders (--encoders: e.g. a pretraining run's snapshots, for accuracy against pretraining epoch).

Protocol (the same for a pretrained and a random-init encoder, so the two compare fairly): features
of the evaluation view (centre crop; the whole image at 32 px) of every training and validation image,
in inference mode; for each fraction, --repeats stratified subsets of the training images drawn from
(--seed, repeat); per subset a standardisation + logistic regression fitted on the subset and scored
on the whole validation set. A fraction of 1.0 has one possible subset, so it is fitted once.
"""
import json
import os
import re

import keras
import numpy as np

from simclr_tf.data.labelled import eval_dataset
from simclr_tf.data.subsets import stratified_subset
from simclr_tf.errors import UserError
from simclr_tf.evaluation.classification_plots import plot_accuracy_curves, plot_linear_eval
from simclr_tf.evaluation.probes import (features_function, parse_feature_layer, probe_accuracy,
                                         projection_layer_count, run_in_order)
from simclr_tf.io_utils import check_writable_folder, write_json_atomic

from . import artifacts, config
from .console import say
from .flag_use import TaskFlags
from .image_files import skipped_line
from .labelled_data import load_classification_data
from .sizes import image_sizes

FLAGS_READ = TaskFlags("linear_eval", results=(), also_reads=("write_list", 
    "randomness", "train_list", "val_list", "image_size", "decoding", "cifar10", "classes", "pretrain_folder", "encoder",
    "projection_head", "batch", "probes", "feature_layer"))

RESULT_FILE = "linear_eval.json"
PLOT_FILE = "linear_eval.png"
LAYERS_PLOT_FILE = "linear_eval_layers.png"
CURVE_FILE = "linear_eval_curve.json"
CURVE_PLOT_FILE = "linear_eval_curve.png"
# Inverse L2 strength of the probe: scikit-learn's default, on standardised features.
PROBE_C = 1.0
_SNAPSHOT = re.compile(r"encoder_epoch_(\d+)\.keras$")


def run(flag_values):
    """Writes linear_eval.json and its plot(s) into --pretrain_save_path; with --encoders, one probe per
    encoder into linear_eval_curve.json and linear_eval_curve.png (accuracy against pretraining epoch)."""
    input_size, crop_size = image_sizes(flag_values)
    wanted = _checked_layer(flag_values.feature_layer)
    fractions = config.parse_fractions(flag_values.train_fractions)
    data = load_classification_data(flag_values, input_size, need_val=True)
    # The results go into --pretrain_save_path: refused now if they cannot, not after the features.
    check_writable_folder(flag_values.pretrain_save_path, "--pretrain_save_path")
    keras.utils.set_random_seed(flag_values.seed)
    if flag_values.encoders:
        return _probe_encoders(flag_values, data, crop_size, fractions, wanted)
    encoder, pretrained = artifacts.load_pretrained_encoder(flag_values, crop_size)
    head, head_kind = (artifacts.load_projection_head(flag_values, encoder) if wanted != "h" else (None, None))
    layers = [wanted] if wanted != "all" else ["h"] + [f"proj{k}" for k in range(1, projection_layer_count(head) + 1)]
    by_layer = _probe_layers(encoder, head, layers, data, crop_size, fractions, flag_values)

    save_path = flag_values.pretrain_save_path
    first = by_layer[layers[0]]
    summary = {
        "feature_layer": wanted,
        "feature_dim": first["feature_dim"],
        "pretrained": bool(pretrained),
        "encoder": (os.path.join(save_path, artifacts.ENCODER_FILE) if pretrained
                    else f"random init {flag_values.backbone}"),
        "projection_head": head_kind,
        "probe": {"model": "scikit-learn LogisticRegression (lbfgs, multinomial, L2)", "C": PROBE_C,
                  "standardised": True, "view": "evaluation view (no augmentation)"},
        "num_classes": data.num_classes,
        "train_images": first["train_images"],
        "val_images": first["val_images"],
        "seed": flag_values.seed,
        "repeats": flag_values.repeats,
        "results": first["results"],
    }
    if wanted == "all":
        summary["by_layer"] = by_layer
    write_json_atomic(os.path.join(save_path, RESULT_FILE), summary)
    encoder_text = "pretrained encoder" if pretrained else "RANDOM-INIT encoder (no pretraining)"
    plot_linear_eval(first["results"], os.path.join(save_path, PLOT_FILE),
                     f"Linear evaluation of {layers[0]}, {encoder_text}")
    written = [RESULT_FILE, PLOT_FILE]
    if wanted == "all":
        plot_accuracy_curves({layer: by_layer[layer]["results"] for layer in layers},
                             os.path.join(save_path, LAYERS_PLOT_FILE), xlabel="feature layer",
                             title=f"Linear evaluation by layer, {encoder_text}")
        written.append(LAYERS_PLOT_FILE)
    say(f"Wrote {', '.join(written)} to {save_path}")


def _probe_layers(encoder, head, layers, data, crop_size, fractions, flag_values):
    """{layer: {"feature_dim", "train_images", "val_images", "results"}}: the features of every layer
    computed in one pass, then probed at every fraction."""
    try:
        compute = features_function(encoder, head, layers)
    except ValueError as e:
        raise UserError(f"--feature_layer={flag_values.feature_layer}: {e}") from None
    train = _features(compute, data.train, crop_size, flag_values.batch_size)
    val = _features(compute, data.val, crop_size, flag_values.batch_size)
    by_layer = {}
    for layer in layers:
        train_x, val_x = train[0][layer], val[0][layer]
        say(f"Linear evaluation of {layer} ({train_x.shape[1]} features): {len(train[1])} training and "
            f"{len(val[1])} validation images, {data.num_classes} classes, fractions {fractions}, "
            f"{flag_values.repeats} subset(s) each")
        by_layer[layer] = {"feature_dim": int(train_x.shape[1]), "train_images": int(len(train[1])),
                           "val_images": int(len(val[1])),
                           "results": [_probe_fraction(fraction, flag_values, train_x, train[1], val_x, val[1])
                                       for fraction in fractions]}
    return by_layer


def _probe_encoders(flag_values, data, crop_size, fractions, layer):
    """Probes of h of every encoder of --encoders, as a curve against pretraining epoch."""
    if layer != "h":
        raise UserError(f"--encoders probes h only (snapshots have no projection head); --feature_layer={layer} "
                        "is for one pretraining folder.")
    entries = encoder_files(flag_values.encoders)
    points = []
    for path, epoch in entries:
        encoder = artifacts.load_keras_file(path, "--encoders", "encoder")
        say(f"Encoder {path}" + (f" (after {epoch} pretraining epochs)" if epoch is not None else ""))
        results = _probe_layers(encoder, None, ["h"], data, crop_size, fractions, flag_values)["h"]["results"]
        points.append({"encoder": path, "epoch": epoch, "results": results})
    save_path = flag_values.pretrain_save_path
    write_json_atomic(os.path.join(save_path, CURVE_FILE),
                      {"feature_layer": "h", "num_classes": data.num_classes, "seed": flag_values.seed,
                       "repeats": flag_values.repeats, "probe": {"C": PROBE_C, "standardised": True},
                       "encoders": points})
    labels = {(str(p["epoch"]) if p["epoch"] is not None else os.path.basename(p["encoder"])): p["results"]
              for p in points}
    plot_accuracy_curves(labels, os.path.join(save_path, CURVE_PLOT_FILE), xlabel="pretraining epochs",
                         title="Linear evaluation of h against pretraining")
    say(f"Wrote {CURVE_FILE} and {CURVE_PLOT_FILE} to {save_path}")


def encoder_files(text):
    """[(path, pretraining epoch or None)] of --encoders: comma-separated .keras files or folders (a
    folder gives its encoder_epoch_N.keras snapshots, those of its snapshots/ subfolder, and its
    encoder.keras, whose epoch is the folder's last checkpoint), sorted by epoch."""
    found = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if os.path.isdir(item):
            for folder in (item, os.path.join(item, "snapshots")):
                if os.path.isdir(folder):
                    found += [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if _SNAPSHOT.search(name)]
            final = os.path.join(item, artifacts.ENCODER_FILE)
            if os.path.isfile(final):
                found.append(final)
        elif os.path.isfile(item):
            found.append(item)
        else:
            raise UserError(f"--encoders: {item} is neither an encoder file nor a folder")
    if not found:
        raise UserError(f"--encoders={text}: no encoder_epoch_N.keras or encoder.keras found")
    entries, epochs = [], set()
    for path in dict.fromkeys(found):
        epoch = _epoch_of(path)
        if epoch is None or epoch not in epochs:  # a final encoder.keras repeats its last snapshot
            entries.append((path, epoch))
            epochs.add(epoch)
    return sorted(entries, key=lambda entry: (entry[1] is None, entry[1] or 0))


def _epoch_of(path):
    match = _SNAPSHOT.search(path)
    if match:
        return int(match.group(1))
    state_path = os.path.join(os.path.dirname(path), "checkpoints", "state.json")
    try:
        with open(state_path, encoding="utf-8") as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _checked_layer(name):
    if name == "all":
        return name
    try:
        parse_feature_layer(name)
    except ValueError as e:
        raise UserError(f"--feature_layer: {e}") from None
    return name


def _features(compute, data, crop_size, batch_size):
    """({layer: features}, labels) of the decodable images of a labelled set."""
    outputs, ok = run_in_order(compute, eval_dataset(data.source, crop_size, batch_size))
    for index in np.flatnonzero(~ok):
        say(skipped_line(data.source, data.source.paths[index]))
    return {layer: values[ok] for layer, values in outputs.items()}, data.labels[ok]


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
