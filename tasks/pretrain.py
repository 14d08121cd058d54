"""`--task=pretrain`: SimCLR pretraining of a ResNet encoder on an image list (or CIFAR-10), with the
optional kNN monitor (weighted kNN accuracy of h on a labelled validation list every few epochs)."""
import dataclasses
import os

import numpy as np
import tensorflow as tf

from simclr_tf.data import augment, filelist
from simclr_tf.data.labelled import eval_dataset
from simclr_tf.data.pipeline import pretrain_dataset, steps_per_epoch
from simclr_tf.data.sources import check_an_image_decodes, sample_images
from simclr_tf.errors import UserError
from simclr_tf.evaluation import plots
from simclr_tf.io_utils import save_keras_atomic
from simclr_tf.models.heads import build_projection_head
from simclr_tf.models.resnet import build_resnet, feature_dim
from simclr_tf.training.knn_monitor import KnnMonitor
from simclr_tf.training.simclr_model import SimCLRModel

from . import artifacts, run_folder
from .augmentation_flags import augment_config
from .caching import cache_if_requested
from .console import say
from .flag_use import TaskFlags
from .image_files import image_source
from .labelled_data import cifar10_splits, read_labelled_list
from .optimizer_flags import PRETRAIN_DEFAULTS, optimizer_from_flags
from .sizes import image_sizes
from .training_loop import train_with_checkpoints

FLAGS_READ = TaskFlags(
    "pretrain",
    results=("randomness", "train_list", "image_size", "decoding", "cifar10", "augment_crop_flip", "augment_colour_jitter",
             "augment_rotation", "augment_pretrain_only", "encoder", "projection_head", "batch", "schedule",
             "contrastive_loss"),
    # The kNN monitor only measures (a user may add a validation list when resuming a run).
    also_reads=("run_control", "pretrain_folder", "performance", "val_list", "classes", "knn_monitor"))
# Everything in --pretrain_save_path that belongs to one pretraining run, results derived from its
# encoder included (linear_eval's), so starting over leaves nothing stale behind.
RESULT_FILES = (artifacts.ENCODER_FILE, artifacts.PROJECTION_HEAD_FILE, "loss.png", "augmentations.png",
                "linear_eval.json", "linear_eval.png")


def run(flag_values):
    """Pretrains and writes encoder.keras, projection_head.keras, history, figures and checkpoints
    into --pretrain_save_path."""
    save_path = flag_values.pretrain_save_path
    input_size, crop_size = image_sizes(flag_values)
    source, train_labels, test_split = _image_source(flag_values, input_size)
    knn_inputs = knn_monitor_inputs(flag_values, input_size, train_labels, test_split)  # checks its lists now
    batch_size = flag_values.batch_size
    if len(source) < batch_size:
        raise UserError(f"--batch_size={batch_size} is larger than the {len(source)} images to train on; "
                        "lower --batch_size.")
    check_an_image_decodes(source, "--train_file_path")
    config = augment_config(flag_values, crop_size, "pretrain")
    plan = run_folder.plan_run(flag_values, FLAGS_READ, save_path, "--pretrain_save_path", RESULT_FILES)

    steps = steps_per_epoch(len(source), batch_size)
    model, peak_lr = build_simclr_model(flag_values, crop_size, steps)
    plan.start()
    start_epoch = plan.resume(model)
    source = cache_if_requested(flag_values, source, "training")
    _write_augmentation_grid(source, config, flag_values.seed, save_path)
    _describe_run(flag_values, source, steps, model, start_epoch, peak_lr)

    dataset = pretrain_dataset(source, config, batch_size, flag_values.seed, start_epoch)
    train_with_checkpoints(
        model, dataset, plan=plan, num_epochs=flag_values.num_epochs, steps_per_epoch=steps,
        images_per_epoch=steps * batch_size, skip_log=source.skip_log,
        extra_callbacks=knn_monitor_callbacks(knn_inputs, model.encoder, source, flag_values, crop_size),
        plot_metrics=("loss", "contrastive_accuracy", "knn_accuracy"), plot_title="SimCLR pretraining")
    _export(model, save_path, source)


def _image_source(flag_values, input_size):
    """(training images, their labels or None, CIFAR-10's labelled test split or None): the labels
    and test split only serve the kNN monitor."""
    if flag_values.cifar10:
        train, test = cifar10_splits(flag_values, input_size)
        return train.source, train.labels, test
    image_list = filelist.read_file_list(flag_values.train_file_path, filelist.IMAGES,
                                         flag_name="--train_file_path")
    labels = image_list.labels
    labelled = all(label is not None and label >= 0 for label in labels)
    return image_source(flag_values, image_list.paths, input_size), (np.asarray(labels, np.int64) if labelled else None), None


def build_simclr_model(flag_values, crop_size, steps):
    """(model, peak learning rate): encoder + projection head + optimizer with its warmup-cosine
    schedule, compiled and built."""
    encoder = build_resnet(flag_values.backbone, width_multiplier=flag_values.width_multiplier,
                           small_stem=flag_values.small_stem, image_size=crop_size)
    head = build_projection_head(feature_dim(encoder), num_layers=flag_values.proj_layers,
                                 output_dim=flag_values.proj_dim)
    model = SimCLRModel(encoder, head, temperature=flag_values.temperature)
    optimizer, peak_lr = optimizer_from_flags(flag_values, steps, PRETRAIN_DEFAULTS)
    model.compile(optimizer=optimizer, jit_compile=flag_values.jit_compile)
    model(np.zeros((2, *crop_size, 3), np.float32))  # create the variables before any restore
    return model, peak_lr


def _export(model, save_path, source):
    save_keras_atomic(model.encoder, os.path.join(save_path, artifacts.ENCODER_FILE))
    save_keras_atomic(model.projection_head, os.path.join(save_path, artifacts.PROJECTION_HEAD_FILE))
    skipped = len(source.skip_log.skipped)
    say(f"Saved the encoder to {os.path.join(save_path, artifacts.ENCODER_FILE)}"
        + (f"; {skipped} undecodable file(s) skipped, listed in skipped_files.txt" if skipped else ""))


def _write_augmentation_grid(source, config, seed, save_path, count=8):
    originals = sample_images(source, count)
    if len(originals) == 0:
        return
    views = [augment.augment_pair(tf.constant(image), tf.constant([seed, i], tf.int64), config)
             for i, image in enumerate(originals)]
    plots.plot_augmentation_grid(originals, np.stack([v[0] for v in views]), np.stack([v[1] for v in views]),
                                 os.path.join(save_path, "augmentations.png"))


def _describe_run(flag_values, source, steps, model, start_epoch, peak_lr):
    encoder_params = model.encoder.count_params()
    say(f"SimCLR pretraining: {len(source)} images, {flag_values.backbone} "
        f"({encoder_params / 1e6:.2f}M parameters), batch {flag_values.batch_size} "
        f"({2 * flag_values.batch_size} views), {steps} steps/epoch, epochs {start_epoch + 1}-"
        f"{flag_values.num_epochs}, peak lr {peak_lr:.4g}, temperature {flag_values.temperature}")


# --- the kNN monitor ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class KnnInputs:
    """What the kNN monitor compares: reference images (None: the training images) with their
    labels, and labelled validation images."""

    reference: object  # LabelledImages, or None for "the training source with `reference_labels`"
    reference_labels: np.ndarray
    validation: object  # LabelledImages
    num_classes: int


def knn_monitor_inputs(flag_values, input_size, train_labels=None, test_split=None):
    """The kNN monitor's labelled data, or None (and the reason said once).

    Validation: the labelled --val_file_path (with --cifar10: `test_split`, its test images).
    Reference: the labelled --knn_train_file_path, else `train_labels` (labels found in the lines of
    --train_file_path, or CIFAR-10's). Lists are checked here, before the run writes anything.
    """
    off = "kNN monitor: off"
    if flag_values.knn_every == 0:
        say(f"{off} (--knn_every=0)")
        return None
    if test_split is not None:
        validation = test_split
    elif flag_values.val_file_path:
        validation = read_labelled_list(flag_values, flag_values.val_file_path, "--val_file_path", flag_values.num_classes,
                                        input_size)
    else:
        say(f"{off} (no labelled --val_file_path to measure it on)")
        return None
    reference = None
    if flag_values.knn_train_file_path and not flag_values.cifar10:
        reference = read_labelled_list(flag_values, flag_values.knn_train_file_path, "--knn_train_file_path",
                                       flag_values.num_classes, input_size)
        train_labels = reference.labels
    elif train_labels is None:
        say(f"{off} (the lines of --train_file_path carry no labels; give a labelled --knn_train_file_path)")
        return None
    # Labels found in --train_file_path lines are not range-checked, so the count covers them too.
    num_classes = max(flag_values.num_classes or 0, int(max(train_labels.max(), validation.labels.max())) + 1)
    return KnnInputs(reference, np.asarray(train_labels, np.int64), validation, num_classes)


def knn_monitor_callbacks(inputs, encoder, train_source, flag_values, crop_size):
    """[KnnMonitor] for the training loop's extra_callbacks ([] when `inputs` is None)."""
    if inputs is None:
        return []
    reference_source = inputs.reference.source if inputs.reference is not None else train_source
    reference_source = cache_if_requested(flag_values, reference_source, "kNN reference")
    validation_source = cache_if_requested(flag_values, inputs.validation.source, "kNN validation")
    batch_size = flag_values.batch_size
    origin = inputs.reference.origin if inputs.reference is not None else "labels of the training images"
    say(f"kNN monitor: weighted kNN accuracy of h (k={flag_values.knn_k}, temperature "
        f"{flag_values.knn_temperature:g}, cosine) of {len(inputs.validation)} images of "
        f"{inputs.validation.origin} against {len(inputs.reference_labels)} reference images ({origin}), "
        f"every {flag_values.knn_every} epoch(s), logged as knn_accuracy")
    return [KnnMonitor(encoder, (eval_dataset(reference_source, crop_size, batch_size), inputs.reference_labels),
                       (eval_dataset(validation_source, crop_size, batch_size), inputs.validation.labels),
                       inputs.num_classes, k=flag_values.knn_k, temperature=flag_values.knn_temperature,
                       every=flag_values.knn_every)]
