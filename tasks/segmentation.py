"""`--task=segmentation`: fine-tunes the encoder with a U-Net decoder on `path,labelmap` lists.

model.keras maps float32 images in [0, 1] of any size to per-pixel LOGITS [H, W, num_classes] (no
softmax). Evaluation and prediction resize a whole image to the crop size, run the model, resize
the logits back to the image's original size (bilinear) and take the argmax. finetune.json records
what evaluate and predict need: sizes and number of classes.
"""
from simclr_tf.data import filelist
from simclr_tf.data import segmentation as seg
from simclr_tf.data.pipeline import steps_per_epoch
from simclr_tf.data.sources import check_an_image_decodes
from simclr_tf.data.subsets import random_subset
from simclr_tf.errors import UserError
from simclr_tf.models.applications import supports_segmentation
from simclr_tf.models.decoder import build_segmentation_model
from simclr_tf.training.callbacks import EpochMetrics
from simclr_tf.training.finetune_trainer import SegmentationObjective

from . import artifacts, distribution, finetuning, run_folder, segmenter_results
from .augmentation_flags import augment_config
from .caching import cache_if_requested
from .console import say
from .flag_use import TaskFlags
from .image_files import label_map_pair_source
from .list_inputs import class_names_beside, read_list
from .optimizer_flags import SEGMENTATION_DEFAULTS, describe_optimizer
from .sizes import image_sizes
from .training_loop import train_with_checkpoints

FLAGS_READ = TaskFlags("segmentation",
                       results=finetuning.RESULT_GROUPS + ("augment_colour_jitter", "augment_rotation",
                                                           "segmentation_loss"),
                       # read to refuse them: pretraining-only ops (augmentation_flags), --cifar10
                       also_reads=finetuning.ALSO_READS + ("augment_pretrain_only", "cifar10"))
RESULT_FILES = (artifacts.MODEL_FILE, artifacts.FINETUNE_INFO_FILE, segmenter_results.METRICS_FILE,
                segmenter_results.PREDICTIONS_FIGURE, "loss.png")


def run(flag_values):
    """Fine-tunes and writes model.keras, finetune.json, history, checkpoints and, with a validation
    list, metrics.json + predictions.png into --finetune_save_path."""
    num_classes = _required_num_classes(flag_values)
    devices = distribution.setup(flag_values)  # before TensorFlow runs anything else
    save_path = flag_values.finetune_save_path
    input_size, crop_size = image_sizes(flag_values)
    view_config = augment_config(flag_values, crop_size, "segmentation")
    train_list, val_list, subset, class_weights = _checked_data(flag_values, num_classes)
    train_source = label_map_pair_source(flag_values, [train_list.paths[i] for i in subset],
                                         [train_list.labels[i] for i in subset], input_size)
    check_an_image_decodes(train_source, "--train_file_path")
    plan = run_folder.plan_run(flag_values, FLAGS_READ, save_path, "--finetune_save_path", RESULT_FILES,
                               artifacts.encoder_fingerprint(flag_values), is_chief=devices.is_chief)

    steps = steps_per_epoch(len(subset), flag_values.batch_size)
    with devices.scope():
        encoder, pretrained = artifacts.load_pretrained_encoder(flag_values, crop_size)
        if not supports_segmentation(encoder):
            raise UserError(f"--task=segmentation needs one of the project's ResNet backbones (its U-Net decoder "
                            f"takes their stage outputs); {encoder.name} is not one.")
        model = finetuning.for_devices(build_segmentation_model(encoder, num_classes, freeze=flag_values.freeze),
                                       devices)
        trainer, peak_lr = finetuning.build_trainer(flag_values, model, model.get_layer("encoder"),
                                                    SegmentationObjective(), crop_size, steps, devices,
                                                    SEGMENTATION_DEFAULTS)
        plan.start()
        start_epoch = plan.resume(trainer)
    _describe_run(flag_values, len(subset), len(train_list), val_list, num_classes, encoder, steps, start_epoch,
                  peak_lr)
    # After the encoder's line: the first lines say whether it is pretrained (the contract).
    class_names = class_names_beside(flag_values.train_file_path, num_classes, background_implied=True)

    train_source = cache_if_requested(flag_values, train_source, "training image and label-map")
    validation = (segmenter_results.Validation(model, val_list, num_classes, input_size, crop_size, flag_values)
                  if val_list and plan.is_writer else None)
    callbacks = [EpochMetrics(validation.epoch_metrics)] if validation else []
    dataset = devices.distribute(lambda shard: seg.train_dataset(
        train_source, view_config, flag_values.batch_size, flag_values.seed, start_epoch, class_weights, shard))
    train_with_checkpoints(
        trainer, dataset, plan=plan, num_epochs=flag_values.num_epochs, steps_per_epoch=steps,
        images_per_epoch=steps * flag_values.batch_size, skip_log=train_source.skip_log,
        extra_callbacks=callbacks, plot_metrics=("loss", "pixel_accuracy", "val_mean_iou", "val_pixel_accuracy"),
        plot_title="Segmentation fine-tuning")

    if not plan.is_writer:
        return  # a non-chief worker: the chief writes the results
    info = _finetune_info(flag_values, num_classes, encoder, pretrained, input_size, crop_size, len(subset),
                          class_weights)
    info["class_names"] = class_names
    finetuning.save_finetuned(save_path, model, info, "image -> per-pixel logits")
    if validation is not None:
        # The last epoch's validation already evaluated the final model (unless the run had nothing
        # left to train, e.g. a finished run started again).
        trained_now = start_epoch < flag_values.num_epochs and validation.last is not None
        metrics, examples = validation.last if trained_now else validation.run()
        segmenter_results.write_evaluation(metrics, examples, val_list, validation.source, num_classes, save_path,
                                           class_names)


def _required_num_classes(flag_values):
    if flag_values.num_classes is None:
        raise UserError("--num_classes is required for --task=segmentation: the number of classes in the label "
                        "maps, background included (e.g. --num_classes=5 for background + 4 classes).")
    if flag_values.num_classes > seg.MAX_CLASSES:
        raise UserError(f"--num_classes={flag_values.num_classes}: label maps are 8-bit with 255 meaning 'ignore', "
                        f"so segmentation supports at most {seg.MAX_CLASSES} classes (values 0 to "
                        f"{seg.MAX_CLASSES - 1}).")
    return flag_values.num_classes


def _checked_data(flag_values, num_classes):
    """(train list, val list or None, training subset indices, class weights or None), every list and
    label map checked before anything is written."""
    train_list, val_list = _read_lists(flag_values)
    say(f"Checking {len(train_list) + (len(val_list) if val_list else 0)} label maps ...")
    pixel_counts = seg.check_label_maps(train_list, num_classes, "--train_file_path",
                                         max_pixels=flag_values.max_image_pixels)
    if val_list is not None:
        seg.check_label_maps(val_list, num_classes, "--val_file_path", max_pixels=flag_values.max_image_pixels)
    subset = random_subset(len(train_list), flag_values.train_fraction, flag_values.seed)
    if len(subset) < flag_values.batch_size:
        raise UserError(f"--batch_size={flag_values.batch_size} is larger than the {len(subset)} training images "
                        f"(--train_fraction={flag_values.train_fraction} of {len(train_list)}); lower --batch_size.")
    return train_list, val_list, subset, _class_weights(flag_values, pixel_counts[subset])


def _read_lists(flag_values):
    """The checked `path,labelmap` training and (optional) validation lists."""
    if flag_values.cifar10:
        raise UserError("--cifar10 has no label maps; --task=segmentation needs --train_file_path with "
                        "'path,labelmap' lines.")
    train_list = read_list(flag_values, "--train_file_path", filelist.SEGMENTATION)
    val_list = None
    if flag_values.val_file_path:
        val_list = read_list(flag_values, "--val_file_path", filelist.SEGMENTATION)
    return train_list, val_list


def _class_weights(flag_values, pixel_counts):
    """None, or the median-frequency weights of the training subset's label maps (printed)."""
    if flag_values.class_weights != "auto":
        return None
    weights = seg.median_frequency_weights(pixel_counts)
    shown = "  ".join(f"{c}={w:.3f}" if w > 0 else f"{c}=n/a (no pixels)" for c, w in enumerate(weights))
    say(f"Class weights (--class_weights=auto: median-frequency balancing over {len(pixel_counts)} training "
        f"label maps): {shown}")
    return weights


def _describe_run(flag_values, num_train, num_listed, val_list, num_classes, encoder, steps, start_epoch, peak_lr):
    fraction = finetuning.fraction_note(flag_values, num_listed, "random")
    validation = f", validating on {len(val_list)} images" if val_list else ", no validation list"
    say(f"Segmentation: {num_train} training images{fraction}, {num_classes} classes{validation}; "
        f"U-Net decoder on {encoder.name}, {finetuning.training_mode(flag_values, 'decoder')}; batch "
        f"{flag_values.batch_size}, {steps} steps/epoch, epochs {start_epoch + 1}-{flag_values.num_epochs}, "
        f"{describe_optimizer(flag_values, SEGMENTATION_DEFAULTS, peak_lr)}")


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
