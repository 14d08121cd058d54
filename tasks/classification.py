"""`--task=classification`: fine-tunes (or linearly evaluates, --freeze) the encoder with a classification
head; also evaluates and predicts with the saved model (`evaluate_saved`, `predict_saved`).

model.keras maps a float32 image in [0, 1] of the crop size to class PROBABILITIES (a softmax layer
named "probabilities" on top of the head's "logits" layer). finetune.json records what evaluate and
predict need: sizes, number and names of the classes.
"""
import csv
import dataclasses
import io
import os

import numpy as np
import tensorflow as tf

from simclr_tf.data import augment, filelist
from simclr_tf.data.cifar10 import load_cifar10
from simclr_tf.data.labelled import SubsetSource, eval_dataset, stratified_subset, train_dataset
from simclr_tf.data.pipeline import (ArrayImageSource, CachedImageSource, FileImageSource, check_an_image_decodes,
                                     steps_per_epoch)
from simclr_tf.errors import UserError
from simclr_tf.evaluation.classification_plots import plot_confusion_matrix
from simclr_tf.evaluation.metrics import classification_metrics, default_class_names, format_metrics_table
from simclr_tf.evaluation.probes import run_in_order
from simclr_tf.io_utils import save_keras_atomic, write_json_atomic, write_text_atomic
from simclr_tf.training.classifier_trainer import ClassifierTrainer, build_classifier, with_softmax
from simclr_tf.training.knn_monitor import EpochMetrics
from tasks import common

MODEL_FILE = common.MODEL_FILE
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
RESULT_FILES = (MODEL_FILE, common.FINETUNE_INFO_FILE, METRICS_FILE, CONFUSION_FILE, "loss.png", "flags.txt")
CLASS_NAMES_FILE = "classes.txt"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Flags this task does not read (colour and other pretraining augmentations, loss, projection head,
# probes, kNN): changing them does not change its results, so they stay out of its fingerprint.
_PRETRAIN_ONLY_FLAGS = {
    "jitter", "jitter_prob", "strength", "colordrop",
    "colordrop_prob", "blur", "blur_prob", "blur_sigma_min", "blur_sigma_max", "noise", "noise_prob", "noise_std",
    "rotate", "rotate_prob", "rotate_degrees", "cutout", "cutout_prob", "cutout_fraction", "temperature",
    "proj_layers", "proj_dim", "train_fractions", "repeats", "feature_layer", "class_weights",
    "knn_train_file_path", "knn_every", "knn_k", "knn_temperature"}


@dataclasses.dataclass
class LabelledImages:
    """An image source with one integer label per image, and where it came from (for messages)."""

    source: object
    labels: np.ndarray
    origin: str

    def __len__(self):
        return len(self.labels)


@dataclasses.dataclass
class ClassificationData:
    train: LabelledImages
    val: object  # LabelledImages or None
    num_classes: int
    class_names: list


# --- data shared by classification, linear_eval and embed ------------------------------------------------

def read_labelled_list(list_path, flag_name, num_classes, input_size):
    """A checked `path,label` list as LabelledImages (UserError naming the line and file otherwise)."""
    image_list = filelist.read_file_list(list_path, filelist.CLASSIFICATION, num_classes=num_classes,
                                         flag_name=flag_name)
    return LabelledImages(FileImageSource(image_list.paths, input_size), np.asarray(image_list.labels, np.int64),
                          f"{flag_name}={list_path}")


def load_classification_data(flag_values, input_size, need_val=False):
    """Training (and validation) images and labels from the lists, or CIFAR-10 with --cifar10.

    Every list is checked before anything is written. Without --num_classes the number of classes
    is the largest training label + 1 (said). Class names come from a `classes.txt` beside the
    training list (one name per line, line order = label) when it names exactly that many classes.
    """
    if flag_values.cifar10:
        return _cifar10_data(flag_values, input_size)
    num_classes = flag_values.num_classes
    train = read_labelled_list(flag_values.train_file_path, "--train_file_path", num_classes, input_size)
    if num_classes is None:
        num_classes = int(train.labels.max()) + 1
        if num_classes < 2:
            raise UserError(f"--train_file_path={flag_values.train_file_path}: every label is 0; a classifier needs "
                            "at least 2 classes (set --num_classes).")
        common.say(f"--num_classes not given: using {num_classes} (largest label in --train_file_path + 1)")
    val = None
    if flag_values.val_file_path:
        val = read_labelled_list(flag_values.val_file_path, "--val_file_path", num_classes, input_size)
    elif need_val:
        raise UserError(f"--val_file_path is required for --task={flag_values.task} (a 'path,label' list).")
    return ClassificationData(train, val, num_classes, class_names_beside(flag_values.train_file_path, num_classes))


def _cifar10_data(flag_values, input_size):
    if flag_values.num_classes not in (None, 10):
        raise UserError(f"--num_classes={flag_values.num_classes} but CIFAR-10 (--cifar10) has 10 classes.")
    x_train, y_train, x_test, y_test = load_cifar10(flag_values.cifar10_dir)
    common.say(f"Data: CIFAR-10, {len(x_train)} training images; validation on its {len(x_test)} test images")
    train = LabelledImages(ArrayImageSource(x_train, input_size), y_train, "CIFAR-10 training split")
    val = LabelledImages(ArrayImageSource(x_test, input_size), y_test, "CIFAR-10 test split")
    return ClassificationData(train, val, 10, list(CIFAR10_CLASSES))


def class_names_beside(list_path, num_classes):
    """Names from classes.txt in the list's folder when it has exactly `num_classes` lines, else '0', '1', ..."""
    path = os.path.join(os.path.dirname(os.path.abspath(list_path or ".")), CLASS_NAMES_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8-sig") as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) == num_classes and len(set(names)) == num_classes:
            common.say(f"Class names from {path}: {', '.join(names)}")
            return names
        common.say(f"Ignoring {path}: it names {len(names)} classes, not {num_classes} distinct ones")
    return default_class_names(num_classes)


@dataclasses.dataclass
class KnnInputs:
    """What the pretraining kNN monitor compares: reference images (None: the training images) with
    their labels, and labelled validation images."""

    reference: object  # LabelledImages, or None for "the training source with `reference_labels`"
    reference_labels: np.ndarray
    validation: LabelledImages
    num_classes: int


def knn_monitor_inputs(flag_values, input_size, train_labels=None, test_split=None):
    """The kNN monitor's labelled data for pretraining, or None (and the reason said once).

    Validation: the labelled --val_file_path (with --cifar10: `test_split`, its test images).
    Reference: the labelled --knn_train_file_path, else `train_labels` (labels found in the lines of
    --train_file_path, or CIFAR-10's). Lists are checked here, before the run writes anything.
    """
    off = "kNN monitor: off"
    if flag_values.knn_every == 0:
        common.say(f"{off} (--knn_every=0)")
        return None
    if test_split is not None:
        validation = test_split
    elif flag_values.val_file_path:
        validation = read_labelled_list(flag_values.val_file_path, "--val_file_path", flag_values.num_classes,
                                        input_size)
    else:
        common.say(f"{off} (no labelled --val_file_path to measure it on)")
        return None
    reference = None
    if flag_values.knn_train_file_path:
        reference = read_labelled_list(flag_values.knn_train_file_path, "--knn_train_file_path",
                                       flag_values.num_classes, input_size)
        train_labels = reference.labels
    elif train_labels is None:
        common.say(f"{off} (the lines of --train_file_path carry no labels; give a labelled --knn_train_file_path)")
        return None
    # Labels found in --train_file_path lines are not range-checked, so the count covers them too.
    num_classes = max(flag_values.num_classes or 0, int(max(train_labels.max(), validation.labels.max())) + 1)
    return KnnInputs(reference, np.asarray(train_labels, np.int64), validation, num_classes)


def knn_monitor_callbacks(inputs, encoder, train_source, flag_values, crop_size):
    """[KnnMonitor] for pretraining's extra_callbacks ([] when `inputs` is None)."""
    from simclr_tf.training.knn_monitor import KnnMonitor
    if inputs is None:
        return []
    reference_source = inputs.reference.source if inputs.reference is not None else train_source
    reference_source = maybe_cached(flag_values, reference_source, "kNN reference")
    validation_source = maybe_cached(flag_values, inputs.validation.source, "kNN validation")
    batch_size = flag_values.batch_size
    origin = inputs.reference.origin if inputs.reference is not None else "labels of the training images"
    common.say(f"kNN monitor: weighted kNN accuracy of h (k={flag_values.knn_k}, temperature "
               f"{flag_values.knn_temperature:g}, cosine) of {len(inputs.validation)} images of "
               f"{inputs.validation.origin} against {len(inputs.reference_labels)} reference images ({origin}), "
               f"every {flag_values.knn_every} epoch(s), logged as knn_accuracy")
    return [KnnMonitor(encoder, (eval_dataset(reference_source, crop_size, batch_size), inputs.reference_labels),
                       (eval_dataset(validation_source, crop_size, batch_size), inputs.validation.labels),
                       inputs.num_classes, k=flag_values.knn_k, temperature=flag_values.knn_temperature,
                       every=flag_values.knn_every)]


def maybe_cached(flag_values, source, what):
    """`source` decoded into memory once when --cache is set (file lists only)."""
    if not flag_values.cache or isinstance(source, (ArrayImageSource, CachedImageSource)):
        return source
    common.say(f"Decoding {len(source)} {what} images into memory (--cache) ...")
    return CachedImageSource(source)


# --- classification ------------------------------------------------------------------------------------

def run(flag_values):
    """Fine-tunes and writes model.keras, finetune.json, history, checkpoints and, with a validation
    list, metrics.json + confusion_matrix.png into --finetune_save_path."""
    save_path = flag_values.finetune_save_path
    input_size, crop_size = common.image_sizes(flag_values)
    data = load_classification_data(flag_values, input_size)
    subset = stratified_subset(data.train.labels, flag_values.train_fraction, flag_values.seed)
    train = LabelledImages(SubsetSource(data.train.source, subset), data.train.labels[subset], data.train.origin)
    if len(train) < flag_values.batch_size:
        raise UserError(f"--batch_size={flag_values.batch_size} is larger than the {len(train)} training images "
                        f"(--train_fraction={flag_values.train_fraction} of {len(data.train)}); lower --batch_size.")
    check_an_image_decodes(train.source, "--train_file_path")
    state, run_fingerprint = common.open_run_folder(flag_values, save_path, _PRETRAIN_ONLY_FLAGS, RESULT_FILES,
                                                    "--finetune_save_path")

    encoder, pretrained = common.encoder_from_flags(flag_values, crop_size)
    steps = steps_per_epoch(len(train), flag_values.batch_size)
    classifier, trainer, peak_lr = _build_trainer(flag_values, encoder, data.num_classes, crop_size, steps)
    start_epoch = common.resume_from(trainer, save_path, state)
    _describe_run(flag_values, train, data, steps, start_epoch, peak_lr)

    train_source = maybe_cached(flag_values, train.source, "training")
    val = data.val
    extra_callbacks = []
    if val is not None:
        val = dataclasses.replace(val, source=maybe_cached(flag_values, val.source, "validation"))
        extra_callbacks.append(EpochMetrics(_validation_metrics(classifier, val, crop_size, flag_values.batch_size)))
    dataset = train_dataset(train_source, train.labels, finetune_view_config(flag_values, crop_size),
                            flag_values.batch_size, flag_values.seed, start_epoch)
    common.train_with_checkpoints(
        trainer, dataset, flag_values=flag_values, save_path=save_path, state=state, run_fingerprint=run_fingerprint,
        steps_per_epoch=steps, images_per_epoch=steps * flag_values.batch_size, skip_log=train_source.skip_log,
        extra_callbacks=extra_callbacks, plot_metrics=("loss", "accuracy", "val_accuracy"),
        plot_title="Classification fine-tuning")

    model = with_softmax(classifier)
    info = _finetune_info(flag_values, data, encoder, pretrained, input_size, crop_size, len(train))
    save_keras_atomic(model, os.path.join(save_path, MODEL_FILE))
    common.write_finetune_info(save_path, info)
    common.say(f"Saved the fine-tuned model to {os.path.join(save_path, MODEL_FILE)} (image -> class probabilities)")
    if val is not None:
        evaluate_model(model, val, info, save_path, flag_values.batch_size)


def _build_trainer(flag_values, encoder, num_classes, crop_size, steps):
    """(classifier, compiled ClassifierTrainer with built optimizers, peak learning rate of the head)."""
    classifier = build_classifier(encoder, num_classes, crop_size, head=flag_values.head, freeze=flag_values.freeze)
    optimizer, peak_lr = common.optimizer_from_flags(flag_values, steps, common.FINETUNE_DEFAULTS)
    encoder_optimizer = None
    if not flag_values.freeze and flag_values.encoder_lr_multiplier != 1.0:
        encoder_optimizer, _ = common.optimizer_from_flags(flag_values, steps, common.FINETUNE_DEFAULTS,
                                                           lr_multiplier=flag_values.encoder_lr_multiplier)
    trainer = ClassifierTrainer(classifier, encoder, encoder_optimizer)
    trainer.compile(optimizer=optimizer, jit_compile=flag_values.jit_compile)
    trainer(np.zeros((1, *crop_size, 3), np.float32))  # create the variables before any restore
    trainer.build_optimizers()
    return classifier, trainer, peak_lr


def _describe_run(flag_values, train, data, steps, start_epoch, peak_lr):
    if flag_values.freeze:
        mode = "encoder FROZEN (linear evaluation protocol: BatchNorm in inference mode, only the head trains)"
        if flag_values.encoder_lr_multiplier != 1.0:
            mode += "; --encoder_lr_multiplier has no effect"
    else:
        mode = "whole network fine-tuned" + (f", encoder learning rate x {flag_values.encoder_lr_multiplier:g}"
                                             if flag_values.encoder_lr_multiplier != 1.0 else "")
    fraction = (f" (stratified {flag_values.train_fraction:g} of {len(data.train)}, --seed={flag_values.seed})"
                if flag_values.train_fraction < 1.0 else "")
    validation = f", validating on {len(data.val)} images" if data.val is not None else ", no validation list"
    common.say(f"Classification: {len(train)} training images{fraction}, {data.num_classes} classes{validation}; "
               f"{flag_values.head} head, {mode}; batch {flag_values.batch_size}, {steps} steps/epoch, "
               f"epochs {start_epoch + 1}-{flag_values.num_epochs}, peak lr {peak_lr:.4g}")


def finetune_view_config(flag_values, crop_size):
    """The training view (random resized crop and flip) from the --crop* and --flip* flags."""
    return augment.finetune_config(tuple(crop_size), crop=flag_values.crop, crop_prob=flag_values.crop_prob,
                                   crop_area_min=flag_values.crop_area_min, flip=flag_values.flip,
                                   flip_prob=flag_values.flip_prob)


def _validation_metrics(classifier, val, crop_size, batch_size):
    """A function computing val_loss and val_accuracy of the classifier (inference mode)."""
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


def _finetune_info(flag_values, data, encoder, pretrained, input_size, crop_size, num_train):
    return {
        "task": "classification",
        "num_classes": data.num_classes,
        "class_names": data.class_names,
        "input_size": list(input_size),
        "crop_size": list(crop_size),
        "output": "probabilities",
        "encoder_layer": encoder.name,
        "head": flag_values.head,
        "freeze": bool(flag_values.freeze),
        "encoder_lr_multiplier": flag_values.encoder_lr_multiplier,
        "pretrained": bool(pretrained),
        "pretrain_save_path": flag_values.pretrain_save_path,
        "train_fraction": flag_values.train_fraction,
        "num_train_images": int(num_train),
    }


# --- evaluate and predict with a saved model ------------------------------------------------------------

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
    common.say(f"Evaluation on {data.origin}:\n{format_metrics_table(metrics)}")
    common.say(f"Wrote {METRICS_FILE} and {CONFUSION_FILE} to {save_path}")
    return metrics


def _report_skipped(source, ok):
    for index in np.flatnonzero(~ok):
        common.say(f"  skipped undecodable file: {source.paths[index]}")


def evaluate_saved(flag_values, info):
    """`--task=evaluate`: the saved model on --val_file_path (or the CIFAR-10 test split)."""
    input_size = tuple(info["input_size"])
    if flag_values.cifar10:
        _, _, x_test, y_test = load_cifar10(flag_values.cifar10_dir)
        data = LabelledImages(ArrayImageSource(x_test, input_size), y_test, "CIFAR-10 test split")
    elif not flag_values.val_file_path:
        raise UserError("--val_file_path is required for --task=evaluate (a 'path,label' list).")
    else:
        data = read_labelled_list(flag_values.val_file_path, "--val_file_path", info["num_classes"], input_size)
    model = common.load_finetuned_model(flag_values.finetune_save_path)
    evaluate_model(model, data, info, flag_values.finetune_save_path, flag_values.batch_size)


def predict_saved(flag_values, info):
    """`--task=predict`: predictions.csv (path, prediction, confidence, prob_0 ... prob_{K-1}) under
    --output_path for every decodable image of --test_file_path; prediction is the class index."""
    image_list = filelist.read_file_list(flag_values.test_file_path, filelist.IMAGES, flag_name="--test_file_path")
    source = FileImageSource(image_list.paths, tuple(info["input_size"]))
    model = common.load_finetuned_model(flag_values.finetune_save_path)
    probabilities, ok = predict_probabilities(model, source, info["crop_size"], flag_values.batch_size)
    _report_skipped(source, ok)
    path = os.path.join(flag_values.output_path, "predictions.csv")
    write_text_atomic(path, predictions_csv(np.asarray(source.paths)[ok], probabilities[ok]))
    common.say(f"Wrote predictions for {int(ok.sum())} images to {path}"
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
