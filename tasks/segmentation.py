"""`--task=segmentation`: fine-tunes the encoder with a U-Net decoder on `path,labelmap` lists; also
evaluates and predicts with the saved model (`evaluate_saved`, `predict_saved`).

model.keras maps float32 images in [0, 1] of any size to per-pixel LOGITS [H, W, num_classes] (no
softmax). Evaluation and prediction resize a whole image to the crop size, run the model, resize
the logits back to the image's original size (bilinear) and take the argmax. finetune.json records
what evaluate and predict need: sizes and number of classes.
"""
import os

import numpy as np

from simclr_tf.data import filelist
from simclr_tf.data import segmentation as seg
from simclr_tf.data.decode import read_image, read_label_map
from simclr_tf.data.pipeline import check_an_image_decodes, steps_per_epoch
from simclr_tf.errors import UserError
from simclr_tf.evaluation.segmentation_metrics import (SegmentationValidation, evaluate_model, format_metrics,
                                                       predict_label_maps)
from simclr_tf.evaluation.segmentation_plots import plot_segmentation_predictions
from simclr_tf.io_utils import save_keras_atomic, write_json_atomic, write_text_atomic
from simclr_tf.models.decoder import build_segmentation_model
from simclr_tf.training.segmentation_trainer import SegmentationTrainer
from tasks import common

MODEL_FILE = common.MODEL_FILE
METRICS_FILE = "metrics.json"
PREDICTIONS_FIGURE = "predictions.png"
PREDICTIONS_LIST = "predictions.txt"
RESULT_FILES = (MODEL_FILE, common.FINETUNE_INFO_FILE, METRICS_FILE, PREDICTIONS_FIGURE, "loss.png", "flags.txt")
FIGURE_EXAMPLES = 8

# Flags this task does not read (pretraining-only augmentations and loss, projection head, probes,
# classification head, kNN): they stay out of its fingerprint.
_UNUSED_FLAGS = {
    "colordrop", "colordrop_prob", "blur", "blur_prob", "blur_sigma_min", "blur_sigma_max", "noise", "noise_prob",
    "noise_std", "cutout", "cutout_prob", "cutout_fraction", "temperature", "proj_layers", "proj_dim",
    "train_fractions", "repeats", "feature_layer", "head", "knn_train_file_path", "knn_every", "knn_k",
    "knn_temperature", "cifar10_dir"}


# --- training ----------------------------------------------------------------------------------------------

def run(flag_values):
    """Fine-tunes and writes model.keras, finetune.json, history, checkpoints and, with a validation
    list, metrics.json + predictions.png into --finetune_save_path."""
    save_path = flag_values.finetune_save_path
    num_classes = _required_num_classes(flag_values)
    input_size, crop_size = common.image_sizes(flag_values)
    train_list, val_list, subset, class_weights = _checked_data(flag_values, num_classes)
    train_source = seg.SegmentationSource([train_list.paths[i] for i in subset], [train_list.labels[i] for i in subset],
                                          input_size)
    check_an_image_decodes(train_source, "--train_file_path")
    state, run_fingerprint = common.open_run_folder(flag_values, save_path, _UNUSED_FLAGS, RESULT_FILES,
                                                    "--finetune_save_path")

    encoder, pretrained = common.encoder_from_flags(flag_values, crop_size)
    steps = steps_per_epoch(len(subset), flag_values.batch_size)
    model, trainer, peak_lr = _build_trainer(flag_values, encoder, num_classes, crop_size, steps)
    start_epoch = common.resume_from(trainer, save_path, state)
    _describe_run(flag_values, len(subset), len(train_list), val_list, num_classes, encoder, steps, start_epoch,
                  peak_lr)

    if flag_values.cache:
        common.say(f"Decoding {len(train_source)} training images and label maps into memory (--cache) ...")
        train_source.cache()
    validation = _Validation(model, val_list, num_classes, input_size, crop_size, flag_values) if val_list else None
    callbacks = [SegmentationValidation(validation)] if validation else []
    dataset = seg.train_dataset(train_source, augmentation_config(flag_values, crop_size), flag_values.batch_size,
                                flag_values.seed, start_epoch, class_weights)
    common.train_with_checkpoints(
        trainer, dataset, flag_values=flag_values, save_path=save_path, state=state, run_fingerprint=run_fingerprint,
        steps_per_epoch=steps, images_per_epoch=steps * flag_values.batch_size, skip_log=train_source.skip_log,
        extra_callbacks=callbacks, plot_metrics=("loss", "pixel_accuracy", "val_mean_iou", "val_pixel_accuracy"),
        plot_title="Segmentation fine-tuning")

    info = _finetune_info(flag_values, num_classes, encoder, pretrained, input_size, crop_size, len(subset),
                          class_weights)
    save_keras_atomic(model, os.path.join(save_path, MODEL_FILE))
    common.write_finetune_info(save_path, info)
    common.say(f"Saved the fine-tuned model to {os.path.join(save_path, MODEL_FILE)} (image -> per-pixel logits)")
    if validation is not None:
        last = callbacks[0].last_epoch == flag_values.num_epochs - 1 and validation.last is not None
        metrics, examples = validation.last if last else validation.run()
        _write_evaluation(metrics, examples, val_list, validation.source, num_classes, save_path)


def _required_num_classes(flag_values):
    if flag_values.num_classes is None:
        raise UserError("--num_classes is required for --task=segmentation: the number of classes in the label "
                        "maps, background included (e.g. --num_classes=5 for background + 4 classes).")
    return flag_values.num_classes


def _checked_data(flag_values, num_classes):
    """(train list, val list or None, training subset indices, class weights or None), every list and
    label map checked before anything is written."""
    train_list, val_list = _read_lists(flag_values)
    common.say(f"Checking {len(train_list) + (len(val_list) if val_list else 0)} label maps ...")
    pixel_counts = seg.check_label_maps(train_list, num_classes, "--train_file_path")
    if val_list is not None:
        seg.check_label_maps(val_list, num_classes, "--val_file_path")
    subset = seg.random_subset(len(train_list), flag_values.train_fraction, flag_values.seed)
    if len(subset) < flag_values.batch_size:
        raise UserError(f"--batch_size={flag_values.batch_size} is larger than the {len(subset)} training images "
                        f"(--train_fraction={flag_values.train_fraction} of {len(train_list)}); lower --batch_size.")
    return train_list, val_list, subset, _class_weights(flag_values, pixel_counts[subset])


def _read_lists(flag_values):
    """The checked `path,labelmap` training and (optional) validation lists."""
    if flag_values.cifar10:
        raise UserError("--cifar10 has no label maps; --task=segmentation needs --train_file_path with "
                        "'path,labelmap' lines.")
    train_list = filelist.read_file_list(flag_values.train_file_path, filelist.SEGMENTATION,
                                         flag_name="--train_file_path")
    val_list = None
    if flag_values.val_file_path:
        val_list = filelist.read_file_list(flag_values.val_file_path, filelist.SEGMENTATION,
                                           flag_name="--val_file_path")
    return train_list, val_list


def _class_weights(flag_values, pixel_counts):
    """None, or the median-frequency weights of the training subset's label maps (printed)."""
    if flag_values.class_weights != "auto":
        return None
    weights = seg.median_frequency_weights(pixel_counts)
    shown = "  ".join(f"{c}={w:.3f}" if w > 0 else f"{c}=n/a (no pixels)" for c, w in enumerate(weights))
    common.say(f"Class weights (--class_weights=auto: median-frequency balancing over {len(pixel_counts)} training "
               f"label maps): {shown}")
    return weights


def augmentation_config(flag_values, crop_size):
    """Joint geometric augmentation (crop, flip, rotation) and image-only colour jitter, from flags."""
    return seg.SegmentationAugmentConfig(
        crop_size=tuple(crop_size), crop=flag_values.crop, crop_prob=flag_values.crop_prob,
        crop_area_min=flag_values.crop_area_min, flip=flag_values.flip, flip_prob=flag_values.flip_prob,
        rotate=flag_values.rotate, rotate_prob=flag_values.rotate_prob, rotate_degrees=flag_values.rotate_degrees,
        jitter=flag_values.jitter, jitter_prob=flag_values.jitter_prob, strength=flag_values.strength)


def _build_trainer(flag_values, encoder, num_classes, crop_size, steps):
    """(segmentation model, compiled trainer with built optimizers, peak learning rate of the decoder)."""
    model = build_segmentation_model(encoder, num_classes, freeze=flag_values.freeze)
    optimizer, peak_lr = common.optimizer_from_flags(flag_values, steps, common.FINETUNE_DEFAULTS)
    encoder_optimizer = None
    if not flag_values.freeze and flag_values.encoder_lr_multiplier != 1.0:
        encoder_optimizer, _ = common.optimizer_from_flags(flag_values, steps, common.FINETUNE_DEFAULTS,
                                                           lr_multiplier=flag_values.encoder_lr_multiplier)
    trainer = SegmentationTrainer(model, model.get_layer("encoder"), encoder_optimizer)
    trainer.compile(optimizer=optimizer, jit_compile=flag_values.jit_compile)
    trainer(np.zeros((1, *crop_size, 3), np.float32))  # builds the trainer so a checkpoint can be loaded
    trainer.build_optimizers()
    return model, trainer, peak_lr


def _describe_run(flag_values, num_train, num_listed, val_list, num_classes, encoder, steps, start_epoch, peak_lr):
    if flag_values.freeze:
        mode = "encoder FROZEN (BatchNorm in inference mode, only the decoder trains)"
        if flag_values.encoder_lr_multiplier != 1.0:
            mode += "; --encoder_lr_multiplier has no effect"
    else:
        mode = "whole network fine-tuned" + (f", encoder learning rate x {flag_values.encoder_lr_multiplier:g}"
                                             if flag_values.encoder_lr_multiplier != 1.0 else "")
    fraction = (f" (random {flag_values.train_fraction:g} of {num_listed}, --seed={flag_values.seed})"
                if flag_values.train_fraction < 1.0 else "")
    validation = f", validating on {len(val_list)} images" if val_list else ", no validation list"
    common.say(f"Segmentation: {num_train} training images{fraction}, {num_classes} classes{validation}; "
               f"U-Net decoder on {encoder.name}, {mode}; batch {flag_values.batch_size}, {steps} steps/epoch, "
               f"epochs {start_epoch + 1}-{flag_values.num_epochs}, peak lr {peak_lr:.4g}")


def _finetune_info(flag_values, num_classes, encoder, pretrained, input_size, crop_size, num_train, class_weights):
    return {
        "task": "segmentation",
        "num_classes": int(num_classes),
        "input_size": list(input_size),
        "crop_size": list(crop_size),
        "output": "logits",
        "ignore_label": seg.IGNORE_LABEL,
        "encoder": encoder.name,
        "freeze": bool(flag_values.freeze),
        "encoder_lr_multiplier": flag_values.encoder_lr_multiplier,
        "pretrained": bool(pretrained),
        "pretrain_save_path": flag_values.pretrain_save_path,
        "train_fraction": flag_values.train_fraction,
        "num_train_images": int(num_train),
        "class_weights": None if class_weights is None else [float(w) for w in class_weights],
    }


class _Validation:
    """Evaluates the model on the validation list; keeps the last (metrics, examples)."""

    def __init__(self, model, val_list, num_classes, input_size, crop_size, flag_values):
        self.model = model
        self.val_list = val_list
        self.num_classes = num_classes
        self.crop_size = crop_size
        self.batch_size = flag_values.batch_size
        self.source = seg.InferenceSource(val_list.paths, input_size)
        if flag_values.cache:
            common.say(f"Decoding {len(self.source)} validation images into memory (--cache) ...")
            self.source.cache()
        self.last = None

    def run(self):
        self.last = evaluate_model(self.model, self.source, self.val_list.labels, self.num_classes, self.crop_size,
                                   self.batch_size, keep=FIGURE_EXAMPLES)
        return self.last

    def __call__(self, _trainer):
        return self.run()[0]


# --- evaluate and predict with a saved model ---------------------------------------------------------------

def _write_evaluation(metrics, examples, val_list, source, num_classes, save_path):
    """metrics.json, predictions.png and the printed per-class IoU table."""
    write_json_atomic(os.path.join(save_path, METRICS_FILE), metrics)
    images, truths, predictions = [], [], []
    for index, predicted in examples:
        images.append(read_image(val_list.paths[index]))
        truths.append(read_label_map(val_list.labels[index]))
        predictions.append(predicted)
    plot_segmentation_predictions(images, truths, predictions, os.path.join(save_path, PREDICTIONS_FIGURE),
                                  num_classes)
    _report_skipped(source)
    common.say(f"Evaluation on {val_list.list_path}:\n{format_metrics(metrics)}")
    common.say(f"Wrote {METRICS_FILE} and {PREDICTIONS_FIGURE} to {save_path}")


def _report_skipped(source):
    for path in sorted(source.skip_log.skipped):
        common.say(f"  skipped undecodable file: {path}")


def evaluate_saved(flag_values, info):
    """`--task=evaluate`: metrics.json and predictions.png of the saved model on --val_file_path."""
    num_classes = int(info["num_classes"])
    info_path = os.path.join(flag_values.finetune_save_path, common.FINETUNE_INFO_FILE)
    if flag_values.num_classes is not None and flag_values.num_classes != num_classes:
        raise UserError(f"--num_classes={flag_values.num_classes} but the model in {info_path} was trained with "
                        f"{num_classes} classes; leave --num_classes out.")
    if not flag_values.val_file_path:
        raise UserError("--val_file_path is required for --task=evaluate (a 'path,labelmap' list).")
    val_list = filelist.read_file_list(flag_values.val_file_path, filelist.SEGMENTATION, flag_name="--val_file_path")
    seg.check_label_maps(val_list, num_classes, "--val_file_path")
    model = common.load_finetuned_model(flag_values.finetune_save_path)
    source = seg.InferenceSource(val_list.paths, tuple(info["input_size"]))
    metrics, examples = evaluate_model(model, source, val_list.labels, num_classes, tuple(info["crop_size"]),
                                       flag_values.batch_size, keep=FIGURE_EXAMPLES)
    _write_evaluation(metrics, examples, val_list, source, num_classes, flag_values.finetune_save_path)


def predict_saved(flag_values, info):
    """`--task=predict`: one palette PNG label map per decodable image of --test_file_path, at the image's
    original size, under --output_path, named after the image (see `seg.label_map_file_names`), plus
    predictions.txt ('image,labelmap' lines, itself a segmentation list)."""
    image_list = filelist.read_file_list(flag_values.test_file_path, filelist.IMAGES, flag_name="--test_file_path")
    names = seg.label_map_file_names(image_list.paths)
    model = common.load_finetuned_model(flag_values.finetune_save_path)
    source = seg.InferenceSource(image_list.paths, tuple(info["input_size"]))
    output_path = flag_values.output_path
    os.makedirs(output_path, exist_ok=True)
    written = []
    for index, predicted in predict_label_maps(model, source, tuple(info["crop_size"]), flag_values.batch_size):
        seg.write_label_map_png(os.path.join(output_path, names[index]), predicted)
        written.append(f"{image_list.paths[index]},{names[index]}\n")
    write_text_atomic(os.path.join(output_path, PREDICTIONS_LIST), "".join(written))
    common.write_skipped_files(source.skip_log.skipped, output_path)
    _report_skipped(source)
    skipped = len(source.skip_log.skipped)
    common.say(f"Wrote {len(written)} label maps (palette PNG, class indices) and {PREDICTIONS_LIST} to {output_path}"
               + (f"; {skipped} undecodable file(s) skipped, listed in skipped_files.txt" if skipped else ""))
