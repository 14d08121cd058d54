"""Callbacks shared by every training task: epoch metrics, epoch statistics, NaN guard, resumable
checkpoints."""
import glob
import json
import math
import os
import re
import time

import keras
import numpy as np

from simclr_tf.errors import UserError
from simclr_tf.io_utils import atomic_path, file_sha256, fsync_file, write_json_atomic


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
    # Reference values (a healthy run's) belong in history.csv and the figures, not in every line.
    metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in logs.items() if k not in skip and not k.endswith("_healthy"))
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


class DamagedCheckpointError(Exception):
    """A checkpoint directory holds a checkpoint, but no usable one (`str` says which file and why)."""


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves weights + optimizer state and the run's history at the end of every epoch.

    The directory holds `epoch-NNNN.weights.h5` files, `state.json` and `state.previous.json`. Each
    epoch: the weights are written to a temporary file, flushed, re-opened and read back in full
    (refused, keeping the previous checkpoint, when that fails), renamed into place; then the
    state that was current becomes `state.previous.json` and the new `state.json` (epoch, weights
    file with its size and SHA-256, fingerprint, history) is written atomically; only the weights of
    these two states are kept. A crash at any moment, or a newest checkpoint damaged later, leaves
    the previous epoch's checkpoint usable (`read_checkpoint_state` falls back to it).
    `on_epoch_saved(state)` runs after each save (used to rewrite history.csv and plots from the saved
    history, which therefore never disagree with the checkpoint).
    """

    STATE = "state.json"
    PREVIOUS_STATE = "state.previous.json"

    def __init__(self, directory, fingerprint, history=None, on_epoch_saved=None):
        super().__init__()
        self.directory = directory
        self.fingerprint = fingerprint
        self.history = list(history or [])
        self.on_epoch_saved = on_epoch_saved
        self._current = None  # the last state this callback wrote (known good)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if not all(math.isfinite(float(v)) for v in logs.values() if _is_number(v)):
            return  # never checkpoint a diverged model
        os.makedirs(self.directory, exist_ok=True)
        weights_name = f"epoch-{epoch + 1:04d}.weights.h5"
        try:
            state = self._save(epoch + 1, weights_name, logs)
        except OSError as e:
            raise UserError(f"could not write a complete checkpoint in {self.directory} ({e}; a full disk?). Training "
                            "stopped; the previous epoch's checkpoint is kept: free some space and run the same "
                            "command again to resume from it.") from None
        if self.on_epoch_saved is not None:
            self.on_epoch_saved(state)

    def _save(self, epoch, weights_name, logs):
        with atomic_path(os.path.join(self.directory, weights_name), suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp)
            fsync_file(tmp)
            problem = verify_weights_file(tmp, read_data=True)
            if problem:
                raise OSError(f"the weights written do not read back: {problem}")
            digest, size = file_sha256(tmp), os.path.getsize(tmp)
        previous = self._current if self._current is not None else _usable_state(self.directory, self.STATE)[0]
        history = self.history + [{"epoch": epoch, **{k: float(v) for k, v in logs.items() if _is_number(v)}}]
        state = {"epoch": epoch, "weights": weights_name, "weights_bytes": size, "weights_sha256": digest,
                 "fingerprint": self.fingerprint, "history": history}
        if previous is not None and previous.get("weights") != weights_name:
            write_json_atomic(os.path.join(self.directory, self.PREVIOUS_STATE), previous)
        write_json_atomic(os.path.join(self.directory, self.STATE), state)
        self.history, self._current = history, state
        kept_previous = _read_json(os.path.join(self.directory, self.PREVIOUS_STATE))
        keep = {weights_name} | ({kept_previous.get("weights")} if isinstance(kept_previous, dict) else set())
        _remove_other_weights(self.directory, keep=keep)
        return state


def read_checkpoint_state(directory, report=None):
    """The saved state dict of a checkpoint directory, or None when it holds no checkpoint.

    The state and the weights file it names are verified (size and SHA-256 when recorded, else the
    file is read in full). When state.json or its weights are damaged, state.previous.json (the epoch
    before) is used and `report(problem, state)` is called with what was wrong and the state used.
    Raises DamagedCheckpointError, naming every damaged file, when the directory holds a checkpoint but
    no usable one.
    """
    names = (ResumableCheckpoint.STATE, ResumableCheckpoint.PREVIOUS_STATE)
    if not any(os.path.exists(os.path.join(directory, name)) for name in names):
        return None
    problems = []
    for name in names:
        state, problem = _usable_state(directory, name)
        if state is not None:
            if problems and report is not None:
                report(problems[0], state)
            return state
        if problem:
            problems.append(problem)
    raise DamagedCheckpointError("; ".join(problems))


def restore_checkpoint(model, directory, state):
    """Loads the weights and optimizer state named by `state` into a built, compiled model.

    Raises DamagedCheckpointError when the weights file cannot be read or does not fit the model.
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    path = os.path.join(directory, state["weights"])
    try:
        model.load_weights(path)
    except Exception as e:  # noqa: BLE001  (h5py OSError, Keras ValueError: the file is at fault)
        raise DamagedCheckpointError(f"{path} cannot be loaded into this model: {str(e).strip()[:300]}") from None


_WEIGHTS_NAME = re.compile(r"epoch-[0-9]{4,}\.weights\.h5")


def _usable_state(directory, name):
    """(state, None) when `name` in `directory` is a complete state whose weights verify, else (None, the
    problem) (None, None) when the file does not exist."""
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        return None, None
    state = _read_json(path)
    if state is _DAMAGED or not (isinstance(state, dict) and isinstance(state.get("epoch"), int)
                                 and state["epoch"] >= 1 and isinstance(state.get("weights"), str)
                                 and _WEIGHTS_NAME.fullmatch(state["weights"])
                                 and isinstance(state.get("history"), list) and "fingerprint" in state):
        return None, f"{path} is damaged (not a complete checkpoint state)"
    weights = os.path.join(directory, state["weights"])
    if not os.path.isfile(weights):
        return None, f"{path} names {weights}, which is missing"
    size, digest = state.get("weights_bytes"), state.get("weights_sha256")
    if size is not None and os.path.getsize(weights) != size:
        return None, f"{weights} is damaged ({os.path.getsize(weights)} bytes instead of {size}: truncated?)"
    if digest is not None:
        if file_sha256(weights) != digest:
            return None, f"{weights} is damaged (its content changed since it was written)"
    else:  # written by an earlier version: no size or hash recorded
        problem = verify_weights_file(weights, read_data=True)
        if problem:
            return None, f"{weights} is damaged ({problem})"
    return state, None


_DAMAGED = object()


def _read_json(path):
    """The parsed JSON of `path`, None when missing, `_DAMAGED` when unreadable or not JSON."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return _DAMAGED


def verify_weights_file(path, read_data=False):
    """None when `path` is a complete HDF5 file (it opens and, with `read_data`, every dataset reads
    back), else a short description of the problem."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            if read_data:
                def read(_, obj):
                    if isinstance(obj, h5py.Dataset):
                        obj[()]
                f.visititems(read)
    except Exception as e:  # noqa: BLE001  (truncated files raise OSError; anything else is damage too)
        return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return None


def _remove_other_weights(directory, keep):
    for path in glob.glob(os.path.join(directory, "epoch-*.weights.h5")):
        if os.path.basename(path) not in keep:
            os.remove(path)


def _is_number(value):
    return isinstance(value, (int, float, np.floating, np.integer)) or (
        hasattr(value, "shape") and getattr(value, "shape", None) == ())
