"""`model.fit` with everything a training task wants: progress bar, one-line epoch summary, NaN guard,
resumable checkpoints (history.csv and loss.png rewritten from them each epoch), TensorBoard."""
import csv
import io
import os

import keras

from simclr_tf.evaluation import plots
from simclr_tf.io_utils import write_text_atomic
from simclr_tf.training import callbacks as cb

from .console import progress_callbacks, progress_verbosity, say

HISTORY_FILE = "history.csv"
SKIPPED_FILES = "skipped_files.txt"


def train_with_checkpoints(model, dataset, *, plan, num_epochs, steps_per_epoch, images_per_epoch, skip_log,
                           extra_callbacks=(), plot_metrics=("loss",), plot_title=None, extra_figures=None):
    """Trains `model` (compiled, built, and restored by `plan.resume` when resuming) from the plan's
    start epoch to `num_epochs`, checkpointing every epoch in the plan's folder.

    `extra_callbacks` run before the summary (e.g. `callbacks.EpochMetrics` adding val_* to the logs).
    loss.png shows `plot_metrics`; `extra_figures` {file name: (metrics, title)} adds figures of
    other columns, drawn once the history holds them. Returns the full history (per-epoch dicts).
    Everything is written where the plan says this process writes (a non-chief worker of a
    multi-worker job: its temporary folder).
    """
    save_path = plan.write_path
    figures = {"loss.png": (plot_metrics, plot_title), **(extra_figures or {})}

    def on_epoch_saved(saved_state):
        write_history_csv(saved_state["history"], os.path.join(save_path, HISTORY_FILE))
        for name, (metrics, title) in figures.items():
            plots.plot_training_curves(saved_state["history"], os.path.join(save_path, name), metrics=metrics,
                                       title=title)
        write_skipped_files(skip_log.skipped, save_path)

    checkpoint = cb.ResumableCheckpoint(plan.write_checkpoint_dir, plan.fingerprint,
                                        history=plan.state["history"] if plan.state else None,
                                        on_epoch_saved=on_epoch_saved)
    callbacks = progress_callbacks() + list(extra_callbacks) + [
        cb.EpochStats(images_per_epoch, skip_log, printer=say),
        cb.NonFiniteLossGuard(),
        checkpoint,
        keras.callbacks.TensorBoard(os.path.join(save_path, "tensorboard"), write_graph=False, profile_batch=0),
    ]
    model.fit(dataset, epochs=num_epochs, initial_epoch=plan.start_epoch, steps_per_epoch=steps_per_epoch,
              callbacks=callbacks, verbose=progress_verbosity(), shuffle=False)
    write_skipped_files(skip_log.skipped, save_path)
    return checkpoint.history


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


def write_skipped_files(skipped, folder):
    """skipped_files.txt: one 'path<TAB>reason' per undecodable file (only written when any)."""
    if skipped:
        text = "".join(f"{path}\t{reason}\n" for path, reason in sorted(skipped.items()))
        write_text_atomic(os.path.join(folder, SKIPPED_FILES), text)
