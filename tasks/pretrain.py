"""`--task=pretrain`: SimCLR pretraining of a ResNet encoder on an image list (or CIFAR-10), with the
optional kNN monitor (weighted kNN accuracy of h on a labelled validation list every few epochs)."""
import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from simclr_tf.data import augment, batch_augment, filelist
from simclr_tf.data.guided_batches import guided_epoch_order_tensor
from simclr_tf.data.labelled import eval_dataset
from simclr_tf.data.pipeline import fixed_pairs_dataset, pretrain_dataset, steps_per_epoch
from simclr_tf.data.sources import SubsetSource, check_an_image_decodes, sample_images
from simclr_tf.data.subsets import random_subset
from simclr_tf.errors import UserError
from simclr_tf.evaluation import plots
from simclr_tf.io_utils import file_sha256, save_keras_atomic
from simclr_tf.models import unfreezing
from simclr_tf.models.heads import build_projection_head
from simclr_tf.models.rebuild import portable
from simclr_tf.models.resnet import feature_dim
from simclr_tf.training.diagnostics_monitor import RepresentationDiagnostics
from simclr_tf.training.knn_monitor import KnnMonitor
from simclr_tf.training.simclr_model import SimCLRModel

from . import artifacts, distribution, run_folder
from .augmentation_flags import augment_config
from .caching import cache_if_requested
from .console import say
from .encoders import build_encoder
from .flag_use import TaskFlags, given
from .image_files import image_source
from .labelled_data import checked_class_count, cifar10_splits, labels_in_image_list, read_labelled_list
from .list_inputs import read_list
from .optimizer_flags import PRETRAIN_DEFAULTS, optimizer_from_flags, warmup_steps
from .sizes import image_sizes
from .training_loop import train_with_checkpoints

FLAGS_READ = TaskFlags(
    "pretrain",
    results=("randomness", "train_list", "image_size", "decoding", "cifar10", "augment_crop_flip", "augment_colour_jitter",
             "augment_rotation", "augment_pretrain_only", "encoder", "unfreezing", "projection_head", "batch",
             "schedule", "contrastive_loss", "numerics", "guided_batches"),
    # The monitors only measure (a user may add a validation list when resuming a run).
    also_reads=("write_list", "run_control", "pretrain_folder", "performance", "val_list", "classes", "knn_monitor",
                "diagnostics", "snapshots"))
# Everything in --pretrain_save_path that belongs to one pretraining run, results derived from its
# encoder included (linear_eval's), so starting over leaves nothing stale behind.
DIAGNOSTICS_FIGURE = "diagnostics.png"
SNAPSHOT_DIR = "snapshots"
# The official code's CIFAR-10 recipe: what --cifar10 changes in the defaults (flags given win).
CIFAR10_RECIPE = {"small_stem": True, "blur": False, "strength": 0.5, "temperature": 0.5}
RESULT_FILES = (artifacts.ENCODER_FILE, artifacts.PROJECTION_HEAD_FILE, "loss.png", "augmentations.png",
                DIAGNOSTICS_FIGURE, SNAPSHOT_DIR, "linear_eval.json", "linear_eval.png", "linear_eval_layers.png",
                "linear_eval_curve.json", "linear_eval_curve.png")


def run(flag_values):
    """Pretrains and writes encoder.keras, projection_head.keras, history, figures and checkpoints
    into --pretrain_save_path."""
    devices = distribution.setup(flag_values)  # before TensorFlow runs anything else
    if flag_values.cifar10:
        apply_cifar10_recipe(flag_values)
    save_path = flag_values.pretrain_save_path
    input_size, crop_size = image_sizes(flag_values)
    source, train_labelled, test_split = _image_source(flag_values, input_size)
    knn_inputs = knn_monitor_inputs(flag_values, input_size, train_labelled, test_split)  # checks its lists now
    batch_size = flag_values.batch_size
    if len(source) < batch_size:
        raise UserError(f"--batch_size={batch_size} is larger than the {len(source)} images to train on; "
                        "lower --batch_size.")
    check_an_image_decodes(source, "--train_file_path")
    config = augment_config(flag_values, crop_size, "pretrain")
    schedule = _unfreeze_schedule(flag_values)
    clusters, clusters_hash = _pseudo_labels(flag_values, source)
    plan = run_folder.plan_run(flag_values, FLAGS_READ, save_path, "--pretrain_save_path", RESULT_FILES,
                               {"pseudo_labels_sha256": clusters_hash} if clusters_hash else None,
                               is_chief=devices.is_chief)

    steps = steps_per_epoch(len(source), batch_size)
    with devices.scope():
        model, peak_lr, warmup_steps = build_simclr_model(flag_values, crop_size, steps, devices, config)
        plan.start()
        start_epoch = plan.resume(model)
    source = cache_if_requested(flag_values, source, "training")
    _write_augmentation_grid(source, config, flag_values.seed, plan.write_path)
    _describe_run(flag_values, source, steps, model, start_epoch, peak_lr)

    order_fn = None
    if clusters is not None:
        order_fn = lambda epoch: guided_epoch_order_tensor(clusters, batch_size, flag_values.seed, epoch)  # noqa: E731
    dataset = devices.distribute(lambda shard: pretrain_dataset(
        source, config, batch_size, flag_values.seed, start_epoch, flag_values.augment_on, order_fn, shard))
    callbacks = []
    if plan.is_writer:  # the monitors only measure: the chief's measurements are the run's
        callbacks += knn_monitor_callbacks(knn_inputs, model.encoder, source, flag_values, crop_size)
        callbacks += diagnostics_callbacks(flag_values, model, source, config, crop_size, plan,
                                           warmup_epochs=-(-warmup_steps // steps))
    if flag_values.save_every:
        callbacks.append(EncoderSnapshots(model.encoder, os.path.join(plan.write_path, SNAPSHOT_DIR),
                                          flag_values.save_every))
    if schedule is not None:
        callbacks.append(unfreezing.GradualUnfreezing(model.encoder, flag_values.num_unfrozen_layers, schedule,
                                                      printer=say))
    train_with_checkpoints(
        model, dataset, plan=plan, num_epochs=flag_values.num_epochs, steps_per_epoch=steps,
        images_per_epoch=steps * batch_size, skip_log=source.skip_log, extra_callbacks=callbacks,
        plot_metrics=("loss", "contrastive_accuracy", "knn_accuracy"), plot_title="SimCLR pretraining",
        extra_figures={DIAGNOSTICS_FIGURE: (("z_std", "alignment", "uniformity", "h_effective_rank"),
                                            "Representation diagnostics")})
    if plan.is_writer:
        _export(model, save_path, source)


def apply_cifar10_recipe(flag_values):
    """With --cifar10, the official CIFAR-10 recipe replaces the defaults of the flags not given
    (the recipe's values are then what flags.txt and the fingerprint record); says what changed."""
    changed = []
    for name, value in CIFAR10_RECIPE.items():
        if not given(flag_values, name) and flag_values[name].value != value:
            flag_values[name].value = value
            changed.append(f"--{name}={value}")
    if changed:
        say(f"--cifar10: the official CIFAR-10 recipe sets {', '.join(changed)} (give a flag to choose otherwise)")


class EncoderSnapshots(keras.callbacks.Callback):
    """Saves `snapshots/encoder_epoch_NNNN.keras` (float32, plain BatchNorm) every `every` epochs,
    before the epoch's checkpoint, so a resumed run never misses one."""

    def __init__(self, encoder, folder, every):
        super().__init__()
        self.encoder, self.folder, self.every = encoder, folder, int(every)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            save_keras_atomic(portable(self.encoder), os.path.join(self.folder, snapshot_name(epoch + 1)))


def snapshot_name(epoch):
    """The file name of the encoder snapshot after `epoch` epochs."""
    return f"encoder_epoch_{epoch:04d}.keras"


def _pseudo_labels(flag_values, source):
    """(cluster of every training image in list order, the file's hash), or (None, None) without
    --pseudo_label_file. UserError naming the first lines at fault when the file does not cover the
    training list exactly."""
    path = flag_values.pseudo_label_file
    if not path:
        return None, None
    if flag_values.cifar10:
        raise UserError("--pseudo_label_file names files of a list; it cannot be used with --cifar10.")
    labelled = filelist.read_file_list(path, filelist.CLASSIFICATION, flag_name="--pseudo_label_file")
    cluster_of, problems = {}, []
    for entry in labelled.entries:
        if entry.path in cluster_of:
            problems.append(f"line {entry.line}: {entry.path} is listed twice")
        cluster_of[entry.path] = entry.label
    training = set(source.paths)
    problems += [f"line {e.line}: {e.path} is not in --train_file_path" for e in labelled.entries
                 if e.path not in training]
    missing = [p for p in source.paths if p not in cluster_of]
    if problems or missing:
        shown = problems[:5] + [f"{p} (of --train_file_path) has no pseudo-label" for p in missing[:5]]
        raise UserError(f"--pseudo_label_file={path} does not match --train_file_path={flag_values.train_file_path} "
                        f"({len(problems)} line(s) at fault, {len(missing)} training image(s) missing):\n  "
                        + "\n  ".join(shown))
    clusters = np.asarray([cluster_of[p] for p in source.paths], np.int64)
    num_clusters, batch = len(np.unique(clusters)), flag_values.batch_size
    spread = ("no batch holds two images of one cluster" if batch <= num_clusters else
              f"--batch_size={batch} > {num_clusters} clusters: clusters spread as evenly as possible over each batch")
    say(f"Guided batches (G-SimCLR): {num_clusters} pseudo-label clusters from {path}; {spread}")
    return clusters, file_sha256(path)


def _image_source(flag_values, input_size):
    """(training images, the same images as LabelledImages when every line carries a label (else
    None), CIFAR-10's labelled test split or None): the labels and test split only serve the kNN monitor."""
    if flag_values.cifar10:
        train, test = cifar10_splits(flag_values, input_size)
        return train.source, train, test
    image_list = read_list(flag_values, "--train_file_path", filelist.IMAGES)
    source = image_source(flag_values, image_list.paths, input_size)
    return source, labels_in_image_list(image_list, source, "--train_file_path"), None


def build_simclr_model(flag_values, crop_size, steps, devices, config):
    """(model, peak learning rate, warmup steps): encoder + projection head + optimizer with its
    warmup-cosine schedule, compiled and built. Call inside `devices.scope()`."""
    encoder = build_encoder(flag_values, crop_size, synchronized_bn=devices.sync_bn)
    if devices.sync_bn and not all(getattr(layer, "synchronized", True) for layer in _batch_norms(encoder)):
        from simclr_tf.models.rebuild import rebuild
        encoder = rebuild(encoder, synchronized_bn=True)
    head = build_projection_head(feature_dim(encoder), num_layers=flag_values.proj_layers,
                                 output_dim=flag_values.proj_dim, synchronized_bn=devices.sync_bn)
    view_maker = None
    if flag_values.augment_on == "device":
        view_maker = lambda images, seeds: batch_augment.augment_batch_pair(images, seeds, config)  # noqa: E731
    model = SimCLRModel(encoder, head, temperature=flag_values.temperature, loss=flag_values.loss,
                        view_maker=view_maker)
    optimizer, peak_lr = optimizer_from_flags(flag_values, steps, PRETRAIN_DEFAULTS)
    model.compile(optimizer=optimizer, jit_compile=devices.jit_compile)
    model(np.zeros((2, *crop_size, 3), np.float32))  # create the variables before any restore
    if flag_values.num_unfrozen_layers is not None:
        unfreezing.set_trainable_top_layers(encoder, flag_values.num_unfrozen_layers)
    # Slots for every variable that will ever train, so unfreezing later and checkpoints work.
    unfreezing.build_optimizer_for_unfreezing(model, encoder)
    return model, peak_lr, warmup_steps(flag_values, steps, PRETRAIN_DEFAULTS, announce=False)


def _batch_norms(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _batch_norms(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            yield layer


def _unfreeze_schedule(flag_values):
    """The parsed --unfreeze_schedule ([] when only --num_unfrozen_layers is set, None when neither is)."""
    if flag_values.unfreeze_schedule is None and flag_values.num_unfrozen_layers is None:
        return None
    try:
        schedule = unfreezing.parse_unfreeze_schedule(flag_values.unfreeze_schedule or "")
        return unfreezing.check_schedule(flag_values.num_unfrozen_layers, schedule)
    except ValueError as e:
        raise UserError(f"--unfreeze_schedule={flag_values.unfreeze_schedule}: {e}") from None


def _export(model, save_path, source):
    unfreezing.set_trainable_top_layers(model.encoder, None)  # the saved encoder trains whole by default
    save_keras_atomic(portable(model.encoder), os.path.join(save_path, artifacts.ENCODER_FILE))
    save_keras_atomic(portable(model.projection_head), os.path.join(save_path, artifacts.PROJECTION_HEAD_FILE))
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
    say(f"SimCLR pretraining: {len(source)} images, {model.encoder.name} "
        f"({encoder_params / 1e6:.2f}M parameters), batch {flag_values.batch_size} "
        f"({2 * flag_values.batch_size} views, made on the {flag_values.augment_on}), {steps} steps/epoch, epochs "
        f"{start_epoch + 1}-{flag_values.num_epochs}, peak lr {peak_lr:.4g}, {flag_values.loss} loss, temperature "
        f"{flag_values.temperature}")


# --- the kNN monitor ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class KnnInputs:
    """What the kNN monitor compares: reference images (None: the training images) with their
    labels, and labelled validation images."""

    reference: object  # LabelledImages, or None for "the training source with `reference_labels`"
    reference_labels: np.ndarray
    validation: object  # LabelledImages
    num_classes: int


def knn_monitor_inputs(flag_values, input_size, train_labelled=None, test_split=None):
    """The kNN monitor's labelled data, or None (and the reason said once).

    Validation: the labelled --val_file_path (with --cifar10: `test_split`, its test images).
    Reference: the labelled --knn_train_file_path, else `train_labelled` (labels found in the lines of
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
                                       flag_values.num_classes, input_size, class_names=validation.class_names,
                                       reference="the class folders of --val_file_path")
        train_labelled = reference
    elif train_labelled is None:
        say(f"{off} (the lines of --train_file_path carry no labels; give a labelled --knn_train_file_path, e.g. "
            "the training folder itself when it holds one subfolder per class)")
        return None
    num_classes = checked_class_count([train_labelled, validation], flag_values.num_classes)
    return KnnInputs(reference, np.asarray(train_labelled.labels, np.int64), validation, num_classes)


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


# --- representation diagnostics -----------------------------------------------------------------------------

def diagnostics_callbacks(flag_values, model, source, config, crop_size, plan, warmup_epochs):
    """[RepresentationDiagnostics] on a fixed sample of decodable training images ([] when off)."""
    if flag_values.diagnostics_every == 0:
        return []
    chosen = random_subset(len(source), min(1.0, 2 * flag_values.diagnostics_images / len(source)), plan.seed)
    decodable = [int(i) for i in chosen if source.load(i)[-1]][:flag_values.diagnostics_images]
    if len(decodable) < 2:
        return []
    sample = SubsetSource(source, decodable)
    batch = min(flag_values.batch_size, 256)
    eval_images = eval_dataset(sample, crop_size, batch).map(lambda images, ok: images)
    say(f"Diagnostics: z_std, alignment, uniformity and effective rank on {len(sample)} training images every "
        f"{flag_values.diagnostics_every} epoch(s) (README, 'Is pretraining learning?')")
    return [RepresentationDiagnostics(model.encoder, model.projection_head, eval_images,
                                      fixed_pairs_dataset(sample, config, batch, plan.seed),
                                      every=flag_values.diagnostics_every,
                                      history=plan.state["history"] if plan.state else (),
                                      batch_size=flag_values.batch_size, warmup_epochs=warmup_epochs,
                                      loss=flag_values.loss, printer=say)]
