"""Plumbing every task shares: sizes from flags, save folders, flag files, reproducibility."""
import csv
import io
import os
import shutil
import sys

import keras

from absl import flags

import config
from simclr_tf.errors import UserError
from simclr_tf.io_utils import write_text_atomic

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
