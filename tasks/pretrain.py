"""`--task=pretrain`: SimCLR pretraining of a ResNet encoder on an image list (or CIFAR-10)."""
import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from simclr_tf.data import augment, filelist
from simclr_tf.data.cifar10 import load_cifar10
from simclr_tf.data.pipeline import (ArrayImageSource, CachedImageSource, FileImageSource, check_an_image_decodes,
                                     pretrain_dataset, sample_images, steps_per_epoch)
from simclr_tf.errors import UserError
from simclr_tf.evaluation import plots
from simclr_tf.io_utils import save_keras_atomic
from simclr_tf.models.heads import build_projection_head
from simclr_tf.models.resnet import build_resnet, feature_dim
from simclr_tf.training.simclr_model import SimCLRModel
from tasks import common
from tasks.classification import LabelledImages, knn_monitor_callbacks, knn_monitor_inputs

RESULT_FILES = (common.ENCODER_FILE, common.PROJECTION_HEAD_FILE, "loss.png", "augmentations.png", "flags.txt")


# Flags that cannot change the pretrained weights: fine-tuning-only flags, and the kNN monitor's,
# which only measures (a user may add a validation list when resuming a run).
_NOT_IN_FINGERPRINT = {
    "finetune_save_path", "num_classes", "head", "freeze", "encoder_lr_multiplier", "train_fraction",
    "train_fractions", "repeats", "feature_layer", "class_weights",
    "val_file_path", "knn_train_file_path", "knn_every", "knn_k", "knn_temperature"}


def run(flag_values):
    """Pretrains and writes every output of contract section 5 into --pretrain_save_path."""
    save_path = flag_values.pretrain_save_path
    input_size, crop_size = common.image_sizes(flag_values)
    source, train_labels, test_split = _image_source(flag_values, input_size)
    knn_inputs = knn_monitor_inputs(flag_values, input_size, train_labels, test_split)  # checks its lists now
    batch_size = flag_values.batch_size
    if len(source) < batch_size:
        raise UserError(f"--batch_size={batch_size} is larger than the {len(source)} images to train on; "
                        "lower --batch_size.")
    check_an_image_decodes(source, "--train_file_path")
    state, run_fingerprint = common.open_run_folder(flag_values, save_path, _NOT_IN_FINGERPRINT, RESULT_FILES,
                                                    "--pretrain_save_path")

    augment_config = augmentation_config(flag_values, crop_size)
    if flag_values.cache and isinstance(source, FileImageSource):
        common.say(f"Decoding {len(source)} images into memory (--cache) ...")
        source = CachedImageSource(source, progress=_progress_printer("decoded"))
    _write_augmentation_grid(source, augment_config, flag_values.seed, save_path)

    steps = steps_per_epoch(len(source), batch_size)
    model, peak_lr = build_simclr_model(flag_values, crop_size, steps)
    start_epoch = common.resume_from(model, save_path, state)
    _describe_run(flag_values, source, steps, model, start_epoch, peak_lr)

    dataset = pretrain_dataset(source, augment_config, batch_size, flag_values.seed, start_epoch)
    common.train_with_checkpoints(
        model, dataset, flag_values=flag_values, save_path=save_path, state=state, run_fingerprint=run_fingerprint,
        steps_per_epoch=steps, images_per_epoch=steps * batch_size, skip_log=source.skip_log,
        extra_callbacks=knn_monitor_callbacks(knn_inputs, model.encoder, source, flag_values, crop_size),
        plot_metrics=("loss", "contrastive_accuracy", "knn_accuracy"), plot_title="SimCLR pretraining")
    _export(model, save_path, source)


def _image_source(flag_values, input_size):
    """(training images, their labels or None, CIFAR-10's labelled test split or None): the labels
    and test split only serve the kNN monitor."""
    if flag_values.cifar10:
        x_train, y_train, x_test, y_test = load_cifar10(flag_values.cifar10_dir)
        test_split = LabelledImages(ArrayImageSource(x_test, input_size), y_test, "CIFAR-10 test split")
        return ArrayImageSource(x_train, input_size), y_train, test_split
    image_list = filelist.read_file_list(flag_values.train_file_path, filelist.IMAGES,
                                         flag_name="--train_file_path")
    labels = image_list.labels
    labelled = all(label is not None and label >= 0 for label in labels)
    return FileImageSource(image_list.paths, input_size), (np.asarray(labels, np.int64) if labelled else None), None


def augmentation_config(flag_values, crop_size):
    """The pretraining augmentation settings from flags (blur defaults to on above 64 px)."""
    blur = augment.default_blur(crop_size) if flag_values.blur is None else flag_values.blur
    names = {f.name for f in dataclasses.fields(augment.AugmentConfig)} - {"crop_size", "blur"}
    values = {name: getattr(flag_values, name) for name in names}
    return augment.AugmentConfig(crop_size=tuple(crop_size), blur=blur, **values)


def build_simclr_model(flag_values, crop_size, steps):
    """(model, peak learning rate): encoder + projection head + optimizer with its warmup-cosine
    schedule, compiled and built."""
    encoder = build_resnet(flag_values.backbone, width_multiplier=flag_values.width_multiplier,
                           small_stem=flag_values.small_stem, image_size=crop_size)
    head = build_projection_head(feature_dim(encoder), num_layers=flag_values.proj_layers,
                                 output_dim=flag_values.proj_dim)
    model = SimCLRModel(encoder, head, temperature=flag_values.temperature)
    optimizer, peak_lr = common.optimizer_from_flags(flag_values, steps, common.PRETRAIN_DEFAULTS)
    model.compile(optimizer=optimizer, jit_compile=flag_values.jit_compile)
    model(np.zeros((2, *crop_size, 3), np.float32))  # create the variables before any restore
    return model, peak_lr


def _export(model, save_path, source):
    save_keras_atomic(model.encoder, os.path.join(save_path, common.ENCODER_FILE))
    save_keras_atomic(model.projection_head, os.path.join(save_path, common.PROJECTION_HEAD_FILE))
    common.write_skipped_files(source.skip_log.skipped, save_path)
    skipped = len(source.skip_log.skipped)
    common.say(f"Saved the encoder to {os.path.join(save_path, 'encoder.keras')}"
               + (f"; {skipped} undecodable file(s) skipped, listed in skipped_files.txt" if skipped else ""))


def _write_augmentation_grid(source, augment_config, seed, save_path, count=8):
    originals = sample_images(source, count)
    if len(originals) == 0:
        return
    views = [augment.augment_pair(tf.constant(image), tf.constant([seed, i], tf.int64), augment_config)
             for i, image in enumerate(originals)]
    plots.plot_augmentation_grid(originals, np.stack([v[0] for v in views]), np.stack([v[1] for v in views]),
                                 os.path.join(save_path, "augmentations.png"))


def _describe_run(flag_values, source, steps, model, start_epoch, peak_lr):
    encoder_params = model.encoder.count_params()
    common.say(f"SimCLR pretraining: {len(source)} images, {flag_values.backbone} "
               f"({encoder_params / 1e6:.2f}M parameters), batch {flag_values.batch_size} "
               f"({2 * flag_values.batch_size} views), {steps} steps/epoch, epochs {start_epoch + 1}-"
               f"{flag_values.num_epochs}, peak lr {peak_lr:.4g}, temperature {flag_values.temperature}")


def _progress_printer(what):
    bar = keras.utils.Progbar(None, unit_name=what, verbose=common.progress_verbosity() or 2)

    def progress(done, total):
        if bar.target is None:
            bar.target = total
        if done == total or done % 64 == 0:
            bar.update(done)
    return progress
