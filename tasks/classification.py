"""`--task=classification`: fine-tunes (or linearly evaluates, --freeze) the encoder with a
classification head.

model.keras maps a float32 image in [0, 1] of the crop size to class PROBABILITIES (a softmax layer
named "probabilities" on top of the head's "logits" layer). finetune.json records what evaluate and
predict need: sizes, number and names of the classes.
"""
import dataclasses

from simclr_tf.data.labelled import train_dataset
from simclr_tf.data.sources import SubsetSource, check_an_image_decodes
from simclr_tf.data.pipeline import steps_per_epoch
from simclr_tf.data.subsets import stratified_subset
from simclr_tf.errors import UserError
from simclr_tf.models.classifier import build_classifier, with_softmax
from simclr_tf.training.callbacks import EpochMetrics
from simclr_tf.training.finetune_trainer import ClassificationObjective

from . import artifacts, classifier_results, distribution, finetuning, run_folder
from .augmentation_flags import augment_config
from .caching import cache_if_requested
from .console import say
from .flag_use import TaskFlags
from .labelled_data import LabelledImages, load_classification_data
from .optimizer_flags import CLASSIFICATION_DEFAULTS, describe_optimizer
from .sizes import image_sizes
from .training_loop import train_with_checkpoints

FLAGS_READ = TaskFlags("classification", results=finetuning.RESULT_GROUPS + ("cifar10", "classification_head"),
                       also_reads=finetuning.ALSO_READS)
# Everything the task writes into --finetune_save_path besides the run outputs (checkpoints, ...).
RESULT_FILES = (artifacts.MODEL_FILE, artifacts.FINETUNE_INFO_FILE, classifier_results.METRICS_FILE,
                classifier_results.CONFUSION_FILE, "loss.png")


def run(flag_values):
    """Fine-tunes and writes model.keras, finetune.json, history, checkpoints and, with a validation
    list, metrics.json + confusion_matrix.png into --finetune_save_path."""
    devices = distribution.setup(flag_values)  # before TensorFlow runs anything else
    save_path = flag_values.finetune_save_path
    input_size, crop_size = image_sizes(flag_values)
    data = load_classification_data(flag_values, input_size)
    subset = stratified_subset(data.train.labels, flag_values.train_fraction, flag_values.seed)
    train = LabelledImages(SubsetSource(data.train.source, subset), data.train.labels[subset], data.train.origin)
    if len(train) < flag_values.batch_size:
        raise UserError(f"--batch_size={flag_values.batch_size} is larger than the {len(train)} training images "
                        f"(--train_fraction={flag_values.train_fraction} of {len(data.train)}); lower --batch_size.")
    check_an_image_decodes(train.source, "--train_file_path")
    view_config = augment_config(flag_values, crop_size, "classification")
    plan = run_folder.plan_run(flag_values, FLAGS_READ, save_path, "--finetune_save_path", RESULT_FILES,
                               artifacts.encoder_fingerprint(flag_values), is_chief=devices.is_chief)

    steps = steps_per_epoch(len(train), flag_values.batch_size)
    with devices.scope():
        encoder, pretrained = artifacts.load_pretrained_encoder(flag_values, crop_size)
        classifier = finetuning.for_devices(build_classifier(encoder, data.num_classes, crop_size, head=flag_values.head,
                                                             freeze=flag_values.freeze), devices)
        encoder = classifier.get_layer(encoder.name)
        trainer, peak_lr = finetuning.build_trainer(flag_values, classifier, encoder, ClassificationObjective(),
                                                    crop_size, steps, devices, CLASSIFICATION_DEFAULTS)
        plan.start()
        start_epoch = plan.resume(trainer)
    _describe_run(flag_values, train, data, steps, start_epoch, peak_lr)

    train_source = cache_if_requested(flag_values, train.source, "training")
    val = data.val
    extra_callbacks = []
    if val is not None and plan.is_writer:
        val = dataclasses.replace(val, source=cache_if_requested(flag_values, val.source, "validation"))
        extra_callbacks.append(EpochMetrics(classifier_results.validation_metrics(classifier, val, crop_size,
                                                                                   flag_values.batch_size)))
    dataset = devices.distribute(lambda shard: train_dataset(
        train_source, train.labels, view_config, flag_values.batch_size, flag_values.seed, start_epoch, shard))
    train_with_checkpoints(
        trainer, dataset, plan=plan, num_epochs=flag_values.num_epochs, steps_per_epoch=steps,
        images_per_epoch=steps * flag_values.batch_size, skip_log=train_source.skip_log,
        extra_callbacks=extra_callbacks, plot_metrics=("loss", "accuracy", "val_accuracy"),
        plot_title="Classification fine-tuning")

    if not plan.is_writer:
        return  # a non-chief worker: the chief writes the results
    model = with_softmax(classifier)
    info = _finetune_info(flag_values, data, encoder, pretrained, input_size, crop_size, len(train))
    finetuning.save_finetuned(save_path, model, info, "image -> class probabilities")
    if val is not None:
        classifier_results.evaluate_model(model, val, info, save_path, flag_values.batch_size)


def _describe_run(flag_values, train, data, steps, start_epoch, peak_lr):
    fraction = finetuning.fraction_note(flag_values, len(data.train), "stratified")
    validation = f", validating on {len(data.val)} images" if data.val is not None else ", no validation list"
    say(f"Classification: {len(train)} training images{fraction}, {data.num_classes} classes{validation}; "
        f"{flag_values.head} head, {finetuning.training_mode(flag_values, 'head')}; batch {flag_values.batch_size}, "
        f"{steps} steps/epoch, epochs {start_epoch + 1}-{flag_values.num_epochs}; "
        f"{describe_optimizer(flag_values, CLASSIFICATION_DEFAULTS, peak_lr)}")


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
