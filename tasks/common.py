"""Plumbing every task shares: sizes from flags, save folders, flag files, reproducibility."""
import csv
import dataclasses
import io
import json
import os
import shutil
import sys

import keras

from simclr_tf.training.optimizers import build_optimizer
from simclr_tf.training.schedules import scaled_learning_rate, warmup_cosine_schedule, warmup_steps_for

from absl import flags

import config
from simclr_tf.errors import UserError
from simclr_tf.io_utils import write_json_atomic, write_text_atomic

@dataclasses.dataclass(frozen=True)
class OptimizerDefaults:
    """What an unset --optimizer / --learning_rate / --lr_scaling / --weight_decay means for a task."""

    optimizer: str
    lr_scaling: str
    weight_decay: float
    base_lr: dict  # per optimizer name
    warmup_epochs: int
    nesterov: bool = False


# Pretraining: LARS with square-root scaling (paper appendix B.1, best for small batches).
PRETRAIN_DEFAULTS = OptimizerDefaults("lars", "sqrt", 1e-6, {"lars": 0.075, "sgd": 0.075, "adam": 1e-3,
                                                             "adamw": 1e-3}, warmup_epochs=10)
# Fine-tuning / linear evaluation: Nesterov SGD, 0.1 x B/256, no weight decay (NOTES.md).
FINETUNE_DEFAULTS = OptimizerDefaults("sgd", "linear", 0.0, {"lars": 0.1, "sgd": 0.1, "adam": 1e-3,
                                                             "adamw": 1e-3}, warmup_epochs=0, nesterov=True)


def optimizer_from_flags(flag_values, steps_per_epoch, defaults, lr_multiplier=1.0):
    """(optimizer, peak learning rate) with linear warmup then cosine decay to zero.

    `lr_multiplier` scales the whole schedule (the encoder's optimizer under --encoder_lr_multiplier).
    """
    name = flag_values.optimizer or defaults.optimizer
    explicit_lr = flag_values.learning_rate is not None
    base_lr = flag_values.learning_rate if explicit_lr else defaults.base_lr[name]
    scaling = flag_values.lr_scaling or defaults.lr_scaling
    # Adam's default is already a per-step size; scaling it by the batch would be a surprise.
    unscaled = name in ("adam", "adamw") and not explicit_lr and flag_values.lr_scaling is None
    peak_lr = base_lr if unscaled else scaled_learning_rate(base_lr, flag_values.batch_size, scaling)
    peak_lr *= lr_multiplier
    total_steps = steps_per_epoch * flag_values.num_epochs
    warmup_epochs = defaults.warmup_epochs if flag_values.warmup_epochs is None else flag_values.warmup_epochs
    warmup = min(warmup_steps_for(warmup_epochs, steps_per_epoch, flag_values.warmup_steps),
                 max(total_steps - 1, 0))
    schedule = warmup_cosine_schedule(peak_lr, total_steps, warmup)
    weight_decay = defaults.weight_decay if flag_values.weight_decay is None else flag_values.weight_decay
    optimizer = build_optimizer(name, schedule, weight_decay=weight_decay, momentum=flag_values.momentum,
                                nesterov=defaults.nesterov and name == "sgd")
    return optimizer, peak_lr


# Flags that do not change what a run computes; they are left out of its fingerprint.
NON_SEMANTIC_FLAGS = {"resume", "overwrite", "cache", "output_path", "test_file_path", "task"}
CHECKPOINT_DIR = "checkpoints"


def image_sizes(flag_values):
    """(input_size, crop_size) as (H, W) tuples; the crop defaults to the input size."""
    try:
        input_size = config.parse_size(flag_values.input_size, "input_size")
        crop_size = (config.parse_size(flag_values.crop_size, "crop_size")
                     if flag_values.crop_size else input_size)
    except ValueError as e:
        raise UserError(str(e)) from None
    return input_size, crop_size


def config_flags(flag_values):
    """{name: value} of every flag defined in config.py."""
    return {f.name: f.value for f in flag_values.get_flags_for_module(config)}


def fingerprint(flag_values, ignore=()):
    """The flags that define a run's results, as plain JSON-able values."""
    skip = NON_SEMANTIC_FLAGS | set(ignore)
    return {k: v for k, v in sorted(config_flags(flag_values).items()) if k not in skip}


def flagfile_text(flag_values):
    """A flagfile that reproduces this run with `--flagfile` (config flags only)."""
    lines = [f.serialize() for f in flag_values.get_flags_for_module(config) if f.value is not None]
    return "\n".join(line for line in lines if line) + "\n"


def write_flags_file(flag_values, save_path):
    write_text_atomic(os.path.join(save_path, "flags.txt"), flagfile_text(flag_values))


def prepare_run_folder(save_path, state, run_fingerprint, resume, overwrite, result_files, flag_name):
    """Decides between a fresh start and a resume; returns the checkpoint state to resume from or None.

    `state` is the saved checkpoint state (or None); `result_files[0]` is the run's final product
    (e.g. encoder.keras). A finished result or checkpoints of a DIFFERENT configuration are only
    replaced with --overwrite (contract section 6); starting over removes every file in
    `result_files` along with checkpoints, TensorBoard logs and history.
    """
    has_results = os.path.exists(os.path.join(save_path, result_files[0]))
    same_config = state is not None and state.get("fingerprint") == run_fingerprint
    if (has_results or state is not None) and not same_config and not overwrite:
        differing = _differences(state.get("fingerprint") if state else None, run_fingerprint)
        raise UserError(
            f"{flag_name}={save_path} already holds results of a different configuration"
            f"{' (differs in ' + differing + ')' if differing else ''}. "
            "Use another folder, or --overwrite to replace them.")
    if same_config and resume:
        return state
    _clear_outputs(save_path, result_files)
    return None


def open_run_folder(flag_values, save_path, ignore, result_files, flag_name):
    """Starts or resumes a training run in `save_path`; returns (checkpoint state or None, fingerprint).

    The configuration's fingerprint leaves out the flags in `ignore` (they cannot change this task's
    results); `prepare_run_folder` decides between resuming, refusing and starting over. Then
    flags.txt is written and every random generator is seeded from --seed.
    """
    from simclr_tf.training import callbacks as cb

    run_fingerprint = fingerprint(flag_values, ignore=ignore)
    saved = cb.read_checkpoint_state(os.path.join(save_path, CHECKPOINT_DIR))
    state = prepare_run_folder(save_path, saved, run_fingerprint, flag_values.resume, flag_values.overwrite,
                               result_files, flag_name)
    os.makedirs(save_path, exist_ok=True)
    write_flags_file(flag_values, save_path)
    keras.utils.set_random_seed(flag_values.seed)
    return state, run_fingerprint


def resume_from(trainer, save_path, state):
    """Restores `trainer` (built and compiled) from the checkpoint `state`; returns the first epoch to
    train (0 for a new run, when `state` is None)."""
    if state is None:
        return 0
    from simclr_tf.training import callbacks as cb

    cb.restore_checkpoint(trainer, os.path.join(save_path, CHECKPOINT_DIR), state)
    say(f"Resuming from epoch {state['epoch']}")
    return state["epoch"]


def _differences(old, new):
    if not old:
        return ""
    names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"--{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in names[:6])


def _clear_outputs(save_path, result_files):
    for name in list(result_files) + [CHECKPOINT_DIR, "tensorboard", "history.csv", "skipped_files.txt"]:
        path = os.path.join(save_path, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def write_history_csv(history, path, first_columns=("epoch",)):
    """history.csv from a list of per-epoch dicts; columns in first-seen order."""
    columns = list(first_columns)
    for row in history:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _csv_value(row.get(k, "")) for k in columns})
    write_text_atomic(path, buffer.getvalue())


def _csv_value(value):
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 1e15 else f"{value:.6g}"
    return value


def write_skipped_files(skipped, save_path):
    """skipped_files.txt: one 'path<TAB>reason' per undecodable file (only written when any)."""
    if skipped:
        text = "".join(f"{path}\t{reason}\n" for path, reason in sorted(skipped.items()))
        write_text_atomic(os.path.join(save_path, "skipped_files.txt"), text)


def progress_verbosity():
    """Keras' live progress bar on a terminal; in logs and pipes only our one line per epoch."""
    return 1 if sys.stdout.isatty() else 0


def progress_callbacks():
    """The progress bar placed FIRST, so it closes its line before our epoch summary is printed."""
    return [keras.callbacks.ProgbarLogger()] if progress_verbosity() else []


def say(message):
    """User-facing progress line (stdout, flushed so it interleaves with Keras' output)."""
    print(message, flush=True)


FLAGS = flags.FLAGS


ENCODER_FILE = "encoder.keras"
PROJECTION_HEAD_FILE = "projection_head.keras"
FINETUNE_INFO_FILE = "finetune.json"
MODEL_FILE = "model.keras"


def load_finetuned_model(finetune_save_path):
    """The fine-tuned `model.keras` under --finetune_save_path (classification or segmentation)."""
    path = os.path.join(finetune_save_path, MODEL_FILE)
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # a damaged or foreign file: the user's problem, not a crash
        raise UserError(f"--finetune_save_path: cannot load {path}: {e}") from None


def load_pretrained_encoder(pretrain_save_path, backbone, width_multiplier, small_stem, crop_size):
    """(encoder, pretrained) from --pretrain_save_path, or a random-init encoder when it holds none.

    The random-init case is the baseline that shows what pretraining bought; it is announced.
    """
    from simclr_tf.models.resnet import build_resnet
    path = os.path.join(pretrain_save_path or "", ENCODER_FILE)
    if pretrain_save_path and os.path.isfile(path):
        try:
            encoder = keras.models.load_model(path, compile=False)
        except Exception as e:
            raise UserError(f"--pretrain_save_path: cannot load {path}: {e}") from None
        say(f"Encoder: pretrained, loaded from {path}")
        return encoder, True
    encoder = build_resnet(backbone, width_multiplier=width_multiplier, small_stem=small_stem, image_size=crop_size)
    say(f"Encoder: RANDOMLY INITIALISED {backbone} (no {ENCODER_FILE} in --pretrain_save_path="
        f"{pretrain_save_path}): this is the no-pretraining baseline")
    return encoder, False


def encoder_from_flags(flag_values, crop_size):
    """load_pretrained_encoder with the model flags."""
    return load_pretrained_encoder(flag_values.pretrain_save_path, flag_values.backbone,
                                   flag_values.width_multiplier, flag_values.small_stem, crop_size)


def write_finetune_info(save_path, info):
    """finetune.json: what `evaluate` and `predict` need to use model.keras (task, sizes, classes)."""
    write_json_atomic(os.path.join(save_path, FINETUNE_INFO_FILE), info)


def read_finetune_info(finetune_save_path):
    """The finetune.json of a fine-tuned model folder; UserError when there is no model there."""
    info_path = os.path.join(finetune_save_path, FINETUNE_INFO_FILE)
    model_path = os.path.join(finetune_save_path, "model.keras")
    if not (os.path.isfile(info_path) and os.path.isfile(model_path)):
        raise UserError(f"--finetune_save_path={finetune_save_path} holds no fine-tuned model (model.keras and "
                        f"{FINETUNE_INFO_FILE}); run --task=classification or --task=segmentation first.")
    with open(info_path, encoding="utf-8") as f:
        return json.load(f)


def train_with_checkpoints(model, dataset, *, flag_values, save_path, state, run_fingerprint, steps_per_epoch,
                           images_per_epoch, skip_log, extra_callbacks=(), plot_metrics=("loss",), plot_title=None):
    """`model.fit` with everything every task wants: progress bar, one-line epoch summary, NaN guard,
    resumable checkpoints (history.csv and loss.png rewritten from them each epoch), TensorBoard.

    `model` must be compiled and built, and already restored from `state` when resuming;
    `run_fingerprint` is what prepare_run_folder compared (stored with every checkpoint).
    `extra_callbacks` run before the summary (e.g. a validation callback adding val_* to the logs).
    Returns the full history (list of per-epoch dicts).
    """
    from simclr_tf.evaluation import plots
    from simclr_tf.training import callbacks as cb

    def on_epoch_saved(saved_state):
        write_history_csv(saved_state["history"], os.path.join(save_path, "history.csv"))
        plots.plot_training_curves(saved_state["history"], os.path.join(save_path, "loss.png"),
                                   metrics=plot_metrics, title=plot_title)
        write_skipped_files(skip_log.skipped, save_path)

    checkpoint = cb.ResumableCheckpoint(os.path.join(save_path, CHECKPOINT_DIR), run_fingerprint,
                                        history=state["history"] if state else None, on_epoch_saved=on_epoch_saved)
    callbacks = progress_callbacks() + list(extra_callbacks) + [
        cb.EpochStats(images_per_epoch, skip_log, printer=say),
        cb.NonFiniteLossGuard(),
        checkpoint,
        keras.callbacks.TensorBoard(os.path.join(save_path, "tensorboard"), write_graph=False, profile_batch=0),
    ]
    start_epoch = state["epoch"] if state else 0
    model.fit(dataset, epochs=flag_values.num_epochs, initial_epoch=start_epoch, steps_per_epoch=steps_per_epoch,
              callbacks=callbacks, verbose=progress_verbosity(), shuffle=False)
    write_skipped_files(skip_log.skipped, save_path)
    return checkpoint.history
