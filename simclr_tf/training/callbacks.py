"""Callbacks shared by every training task: epoch metrics, epoch statistics, NaN guard, resumable
checkpoints."""
import glob
import json
import math
import os
import time

import keras
import numpy as np

from simclr_tf.io_utils import atomic_path, write_json_atomic


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def last_step_learning_rate(optimizer):
    """The learning rate the optimizer used in its most recent step, as a Python float.

    `optimizer.learning_rate` is the schedule's value at the NEXT step (its current iteration);
    an epoch's row reports the rate of the epoch's last step instead.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # through a LossScaleOptimizer
    schedule = getattr(inner, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        step = max(int(keras.ops.convert_to_numpy(inner.iterations)) - 1, 0)
        return float(keras.ops.convert_to_numpy(schedule(step)))
    return float(keras.ops.convert_to_numpy(inner.learning_rate))


class EpochMetrics(keras.callbacks.Callback):
    """Every `every` epochs, merges the dict returned by `compute()` into the epoch's logs: the one
    way evaluation numbers (validation accuracy, mean IoU, kNN accuracy) reach the epoch line,
    history.csv and TensorBoard.

    Place it before EpochStats / ResumableCheckpoint so they see the numbers. `compute` returns
    {name: float}; leave a value out rather than returning NaN (a NaN would stop the checkpoint,
    which guards against diverged runs).
    """

    def __init__(self, compute, every=1):
        super().__init__()
        self.compute = compute
        self.every = int(every)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.every > 0 and (epoch + 1) % self.every == 0:
            logs.update(self.compute())


class EpochStats(keras.callbacks.Callback):
    """Adds learning_rate, images_per_second, seconds, optimizer_steps and skipped_files to each
    epoch's logs and prints the epoch's one-line summary.

    Must come before callbacks that record logs (checkpoint, TensorBoard). `images_per_epoch`
    counts source images, not views. `seconds` and `images_per_second` cover the training steps
    only (first step to last step of the epoch), not the evaluation callbacks that run after them.
    `skip_log` reports undecodable files as they appear.
    """

    def __init__(self, images_per_epoch, skip_log=None, printer=print):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.skip_log = skip_log
        self.printer = printer
        self._start = None
        self._last_step_end = None
        self.total_skipped = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._last_step_end = None

    def on_train_batch_end(self, batch, logs=None):
        self._last_step_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        seconds = (self._last_step_end or time.perf_counter()) - self._start
        logs["learning_rate"] = last_step_learning_rate(self.model.optimizer)
        logs["images_per_second"] = self.images_per_epoch / seconds if seconds > 0 else float("nan")
        logs["seconds"] = seconds
        logs["optimizer_steps"] = int(self.model.optimizer.iterations.numpy())
        new_skips = self.skip_log.take_new() if self.skip_log is not None else []
        self.total_skipped += len(new_skips)
        logs["skipped_files"] = self.total_skipped
        self.printer(format_epoch_summary(epoch + 1, self.params.get("epochs"), logs))
        for path in new_skips:
            self.printer(f"  skipped undecodable file: {path}")


def format_epoch_summary(epoch, num_epochs, logs):
    """One line per epoch: every metric in logs plus speed, learning rate and skipped files."""
    skip = {"learning_rate", "images_per_second", "seconds", "skipped_files", "optimizer_steps"}
    metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in logs.items() if k not in skip)
    line = (f"epoch {epoch}/{num_epochs}  {metrics}  lr={logs['learning_rate']:.4g}  "
            f"{logs['images_per_second']:.1f} img/s  {logs['seconds']:.1f}s")
    if logs.get("skipped_files"):
        line += f"  skipped={logs['skipped_files']}"
    return line


def _fmt(value):
    value = float(value)
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training at the first NaN/inf loss, before an epoch-end checkpoint can store it."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"the loss became {float(loss)} at step {batch + 1} of this epoch. Training stopped; "
                "the last good checkpoint is kept. Try a lower --learning_rate or a longer warmup.")


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves weights + optimizer state and the run's history at the end of every epoch.

    The directory holds `epoch-NNNN.weights.h5` files and `state.json`; `state.json` is written
    last and atomically, so it always names a complete weights file: a crash at any moment leaves
    the previous epoch's checkpoint usable. `on_epoch_saved(state)` runs after each save (used to
    rewrite history.csv and plots from the saved history, which therefore never disagree with
    the checkpoint).
    """

    STATE = "state.json"

    def __init__(self, directory, fingerprint, history=None, on_epoch_saved=None):
        super().__init__()
        self.directory = directory
        self.fingerprint = fingerprint
        self.history = list(history or [])
        self.on_epoch_saved = on_epoch_saved

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if not all(math.isfinite(float(v)) for v in logs.values() if _is_number(v)):
            return  # never checkpoint a diverged model
        os.makedirs(self.directory, exist_ok=True)
        weights_name = f"epoch-{epoch + 1:04d}.weights.h5"
        with atomic_path(os.path.join(self.directory, weights_name), suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
        self.history.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items() if _is_number(v)}})
        state = {"epoch": epoch + 1, "weights": weights_name, "fingerprint": self.fingerprint,
                 "history": self.history}
        write_json_atomic(os.path.join(self.directory, self.STATE), state)
        _remove_other_weights(self.directory, keep=weights_name)
        if self.on_epoch_saved is not None:
            self.on_epoch_saved(state)


def read_checkpoint_state(directory):
    """The saved state dict of a checkpoint directory, or None when there is none."""
    path = os.path.join(directory, ResumableCheckpoint.STATE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def restore_checkpoint(model, directory, state):
    """Loads the weights and optimizer state named by `state` into a built, compiled model."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(directory, state["weights"]))


def _remove_other_weights(directory, keep):
    for path in glob.glob(os.path.join(directory, "epoch-*.weights.h5")):
        if os.path.basename(path) != keep:
            os.remove(path)


def _is_number(value):
    return isinstance(value, (int, float, np.floating, np.integer)) or (
        hasattr(value, "shape") and getattr(value, "shape", None) == ())
