"""`--task=embed`: h and z of every image of --test_file_path into embeddings.npz, and with labels a
t-SNE plot of h and of z side by side (tsne.png), under --output_path.

embeddings.npz: `h` [N, feature_dim] (encoder output), `z` [N, proj_dim] (projection-head output
before the L2 normalisation the loss applies), `paths` [N] (absolute image paths, str), `labels` [N]
(int64, only when every line of the list is `path,label`), and `proj<k>` when --feature_layer names
an intermediate projection-head layer. Features are computed on the evaluation view in inference mode;
undecodable images are left out (and reported).
"""
import os

import keras
import numpy as np

from simclr_tf.data import filelist
from simclr_tf.data.labelled import eval_dataset
from simclr_tf.errors import UserError
from simclr_tf.evaluation.classification_plots import plot_tsne_panels
from simclr_tf.evaluation.probes import features_function, parse_feature_layer, projection_layer_count, \
    run_in_order, tsne_2d
from simclr_tf.io_utils import atomic_path, check_writable_folder

from . import artifacts
from .console import say
from .flag_use import TaskFlags
from .image_files import image_source, skipped_line
from .labelled_data import LabelledImages, checked_class_count
from .list_inputs import class_names_beside, read_list
from .sizes import image_sizes

FLAGS_READ = TaskFlags("embed", results=(), also_reads=("write_list", 
    "randomness", "test_list", "image_size", "decoding", "classes", "pretrain_folder", "encoder", "projection_head", "batch",
    "feature_layer", "output_folder"))

EMBEDDINGS_FILE = "embeddings.npz"
TSNE_FILE = "tsne.png"
# t-SNE of more points than this takes minutes on a CPU and shows nothing new: a random sample is drawn.
TSNE_MAX_POINTS = 5000


def run(flag_values):
    input_size, crop_size = image_sizes(flag_values)
    try:
        extra_depth = parse_feature_layer(flag_values.feature_layer)
    except ValueError as e:
        raise UserError(f"--feature_layer: {e}") from None
    image_list = read_list(flag_values, "--test_file_path", filelist.IMAGES)
    labels = _labels(image_list, flag_values.num_classes)
    check_writable_folder(flag_values.output_path, "--output_path")  # before any inference, not after
    keras.utils.set_random_seed(flag_values.seed)
    encoder, _ = artifacts.load_pretrained_encoder(flag_values, crop_size)
    head, _ = artifacts.load_projection_head(flag_values, encoder)
    last = projection_layer_count(head)
    if extra_depth > last:
        raise UserError(f"--feature_layer={flag_values.feature_layer}: the projection head has {last} layer(s)")
    layers = ["h", f"proj{last}"] + ([f"proj{extra_depth}"] if 0 < extra_depth < last else [])

    source = image_source(flag_values, image_list.paths, input_size)
    outputs, ok = run_in_order(features_function(encoder, head, layers),
                               eval_dataset(source, crop_size, flag_values.batch_size))
    for index in np.flatnonzero(~ok):
        say(skipped_line(source, source.paths[index]))
    arrays = {"h": outputs["h"][ok], "z": outputs[f"proj{last}"][ok], "paths": np.asarray(source.paths)[ok]}
    arrays.update({name: outputs[name][ok] for name in layers[2:]})
    if labels is not None:
        arrays["labels"] = labels[ok]
    path = os.path.join(flag_values.output_path, EMBEDDINGS_FILE)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    say(f"Wrote {', '.join(arrays)} of {int(ok.sum())} images to {path}")
    if labels is None:
        say(f"No t-SNE plot: --test_file_path={flag_values.test_file_path} has no labels ('path,label' lines)")
        return
    _plot_tsne(arrays, layers, flag_values)


def _labels(image_list, num_classes):
    """Labels as an int64 array when every line carries one (checked against --num_classes), else None."""
    labels = image_list.labels
    if not any(label is not None for label in labels):
        return None
    unlabelled = [e for e in image_list.entries if e.label is None]
    if unlabelled:
        say(f"Labels ignored: {len(unlabelled)} line(s) of {image_list.list_path} have none "
                   f"(first: line {unlabelled[0].line})")
        return None
    # Labels in [0, --num_classes), or without it a class count near the distinct labels (t-SNE colours
    # and class names are sized by it).
    labelled = LabelledImages(None, np.asarray(labels, np.int64), f"--test_file_path={image_list.list_path}",
                              np.asarray([e.line for e in image_list.entries], np.int64))
    checked_class_count([labelled], num_classes)
    return labelled.labels


def _plot_tsne(arrays, layers, flag_values):
    labels = arrays["labels"]
    if len(labels) < 5:
        say(f"No t-SNE plot: only {len(labels)} images")
        return
    chosen = np.arange(len(labels))
    if len(chosen) > TSNE_MAX_POINTS:
        chosen = np.sort(np.random.default_rng(flag_values.seed).choice(chosen, TSNE_MAX_POINTS, replace=False))
        say(f"t-SNE of a random sample of {TSNE_MAX_POINTS} of the {len(labels)} images")
    num_classes = flag_values.num_classes or int(labels.max()) + 1
    names = class_names_beside(flag_values.test_file_path, num_classes)
    panels = ["h"] + layers[2:] + ["z"]
    points = {name: tsne_2d(arrays[name][chosen], seed=flag_values.seed) for name in panels}
    path = os.path.join(flag_values.output_path, TSNE_FILE)
    plot_tsne_panels(points, labels[chosen], names, path)
    say(f"Wrote {path} (t-SNE of {' and '.join(panels)}, coloured by class)")
