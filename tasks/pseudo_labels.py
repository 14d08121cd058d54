"""`--task=pseudo_labels`: G-SimCLR's pseudo-labels for guided batches (Chakraborty, Gosthipaty and
Paul, 2020). Latent vectors of the training images (a small denoising autoencoder trained here, or
with --pseudo_label_source=encoder the h of an existing encoder) are clustered with k-means into
--num_clusters pseudo-labels. Writes under --output_path:

* pseudo_labels.txt: `path,cluster` lines in the training list's order, itself a file list; give it
  to `--task=pretrain --pseudo_label_file=...` to build batches without two images of one cluster;
* pseudo_labels_tsne.png: a t-SNE of the latent vectors coloured by cluster;
* autoencoder.keras (the encoder part: image -> latent vector) when an autoencoder was trained.
"""
import math
import os

import keras
import numpy as np
import tensorflow as tf

from simclr_tf.data import filelist
from simclr_tf.data.guided_batches import guided_batch_summary
from simclr_tf.data.labelled import eval_dataset
from simclr_tf.data.sources import check_an_image_decodes
from simclr_tf.errors import UserError
from simclr_tf.evaluation.classification_plots import plot_tsne_panels
from simclr_tf.evaluation.clustering import kmeans_pseudo_labels
from simclr_tf.evaluation.probes import features_function, run_in_order, tsne_2d
from simclr_tf.io_utils import save_keras_atomic, write_text_atomic
from simclr_tf.models.autoencoder import build_denoising_autoencoder, latent_vectors

from . import artifacts
from .caching import cache_if_requested
from .console import progress_verbosity, say
from .flag_use import TaskFlags
from .image_files import image_source
from .list_inputs import read_list
from .sizes import image_sizes

FLAGS_READ = TaskFlags("pseudo_labels", results=(), also_reads=("write_list", 
    "randomness", "train_list", "image_size", "decoding", "pretrain_folder", "batch", "schedule", "performance",
    "pseudo_labels", "output_folder"))
LABELS_FILE = "pseudo_labels.txt"
TSNE_FILE = "pseudo_labels_tsne.png"
AUTOENCODER_FILE = "autoencoder.keras"
TSNE_MAX_POINTS = 5000
# The autoencoder's default optimiser: Adam at its usual rate (--learning_rate overrides it).
AUTOENCODER_LEARNING_RATE = 1e-3


def run(flag_values):
    input_size, crop_size = image_sizes(flag_values)
    image_list = read_list(flag_values, "--train_file_path", filelist.IMAGES)
    if flag_values.num_clusters > len(image_list):
        raise UserError(f"--num_clusters={flag_values.num_clusters} is more than the {len(image_list)} images of "
                        f"--train_file_path={flag_values.train_file_path}.")
    source = image_source(flag_values, image_list.paths, input_size)
    check_an_image_decodes(source, "--train_file_path")
    keras.utils.set_random_seed(flag_values.seed)
    source = cache_if_requested(flag_values, source, "training")
    output_path = flag_values.output_path
    if flag_values.pseudo_label_source == "encoder":
        vectors, ok = _encoder_features(flag_values, source, crop_size)
    else:
        vectors, ok = _autoencoder_latents(flag_values, source, crop_size, output_path)
    say(f"Clustering {int(ok.sum())} latent vectors ({vectors.shape[1]}-d) into {flag_values.num_clusters} clusters "
        "(k-means on centred, L2-normalised vectors) ...")
    clusters = np.zeros(len(source), np.int64)
    clusters[ok] = kmeans_pseudo_labels(vectors[ok], flag_values.num_clusters, seed=flag_values.seed)
    _write_labels(image_list, clusters, ok, output_path)
    _plot_clusters(vectors[ok], clusters[ok], flag_values, output_path)
    _summarise(clusters[ok], flag_values.batch_size, flag_values.num_clusters)


def _encoder_features(flag_values, source, crop_size):
    if not os.path.isfile(artifacts.encoder_path(flag_values)):
        raise UserError(f"--pseudo_label_source=encoder needs an {artifacts.ENCODER_FILE} in --pretrain_save_path="
                        f"{flag_values.pretrain_save_path}; pretrain one first, or use the autoencoder source.")
    encoder, _ = artifacts.load_pretrained_encoder(flag_values, crop_size)
    outputs, ok = run_in_order(features_function(encoder), eval_dataset(source, crop_size, flag_values.batch_size))
    return outputs["h"], ok


def _autoencoder_widths(crop_size):
    """Stride-2 stages until the last feature map is at most 8 px (at least 3, at most 6 stages)."""
    stages = min(6, max(3, math.ceil(math.log2(min(crop_size) / 4))))
    return (32, 64, 128, 256, 256, 256)[:stages]


def _autoencoder_latents(flag_values, source, crop_size, output_path):
    """Trains the denoising autoencoder on the evaluation views; returns (latents, ok)."""
    autoencoder, encoder = build_denoising_autoencoder(crop_size, latent_dim=128,
                                                       widths=_autoencoder_widths(crop_size))
    learning_rate = flag_values.learning_rate or AUTOENCODER_LEARNING_RATE
    autoencoder.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    batches = eval_dataset(source, crop_size, flag_values.batch_size)
    ok = np.concatenate([flags.numpy() for _, flags in batches])
    # Decodable images only, reshuffled every epoch (from --seed) for the optimiser's sake.
    training = batches.unbatch().filter(_decodable).map(_as_target).shuffle(
        4096, seed=flag_values.seed).batch(flag_values.batch_size).repeat()
    say(f"Training a denoising autoencoder ({encoder.count_params() / 1e6:.2f}M-parameter encoder, 128-d latent) on "
        f"{int(ok.sum())} images for {flag_values.num_epochs} epoch(s), Adam lr {learning_rate:g} ...")
    history = autoencoder.fit(training, epochs=flag_values.num_epochs, verbose=progress_verbosity() or 2,
                              steps_per_epoch=-(-int(ok.sum()) // flag_values.batch_size), shuffle=False)
    losses = history.history["loss"]
    say(f"Reconstruction error (MSE): {losses[0]:.5f} after the first epoch, {losses[-1]:.5f} after the last")
    save_keras_atomic(encoder, os.path.join(output_path, AUTOENCODER_FILE))
    return latent_vectors(encoder, batches), ok


@tf.autograph.experimental.do_not_convert
def _decodable(image, ok):
    return ok


@tf.autograph.experimental.do_not_convert
def _as_target(image, ok):
    return image, image


def _write_labels(image_list, clusters, ok, output_path):
    lines = [f"{entry.path},{int(cluster)}\n" for entry, cluster in zip(image_list.entries, clusters)]
    path = os.path.join(output_path, LABELS_FILE)
    write_text_atomic(path, "".join(lines))
    skipped = int((~ok).sum())
    say(f"Wrote {path} ({len(lines)} lines, `path,cluster`)"
        + (f"; {skipped} undecodable image(s) got cluster 0 (training skips them anyway)" if skipped else ""))


def _plot_clusters(vectors, clusters, flag_values, output_path):
    chosen = np.arange(len(vectors))
    if len(chosen) > TSNE_MAX_POINTS:
        chosen = np.sort(np.random.default_rng(flag_values.seed).choice(chosen, TSNE_MAX_POINTS, replace=False))
    if len(chosen) < 5:
        return
    points = tsne_2d(vectors[chosen], seed=flag_values.seed)
    names = [f"cluster {k}" for k in range(flag_values.num_clusters)]
    path = os.path.join(output_path, TSNE_FILE)
    plot_tsne_panels({"latent vectors": points}, clusters[chosen], names, path)
    say(f"Wrote {path} (t-SNE of the latent vectors, coloured by cluster)")


def _summarise(clusters, batch_size, num_clusters):
    sizes = np.bincount(clusters, minlength=num_clusters)
    summary = guided_batch_summary(clusters, batch_size)
    say(f"Cluster sizes: smallest {sizes.min()}, median {int(np.median(sizes))}, largest {sizes.max()} "
        f"({100 * summary['largest_cluster_fraction']:.1f}% of the images)")
    if batch_size <= num_clusters:
        say(f"Guided batches of {batch_size}: no two images of a cluster share a batch; "
            f"{summary['reused_places_per_epoch']:.0f} place(s) per epoch reuse an image of an over-small cluster")
    else:
        say(f"Guided batches of {batch_size} > {num_clusters} clusters: every cluster is spread evenly over each batch")
