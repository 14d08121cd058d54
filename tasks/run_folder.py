"""The life of a training run's folder: fingerprint, resume / refuse / start over, flags.txt.

A run folder (--pretrain_save_path, --finetune_save_path) holds one run's results and checkpoints.
Its configuration's FINGERPRINT is the values of the flags that define the task's results
(`TaskFlags.results`), plus what a task adds (the encoder file's content hash for fine-tuning). Paths
that only say where outputs go are not in it, so a folder can be moved or copied and still resumes.

Running again in a folder:
* same fingerprint, --resume (default): resume from the last completed epoch;
* same fingerprint, --resume=false: start over;
* different fingerprint: refused (exit 2) unless --overwrite, which starts over.
Fingerprints stored by earlier versions may hold flags that are no longer part of it (the save path
itself, jit_compile), which are ignored, and may lack flags added since, which count as their
default: a new flag never breaks the resume of an old folder unless it is given another value.

Nothing is written or removed while the plan is made: `plan_run` only reads, and `RunPlan.start()`,
called by the task once every input has been loaded and checked, clears the previous run's outputs
(when starting over) and writes flags.txt.
"""
import dataclasses
import os
import shutil

import keras

from simclr_tf.errors import UserError
from simclr_tf.io_utils import write_text_atomic
from simclr_tf.training import callbacks as cb

from . import config
from .console import say

CHECKPOINT_DIR = "checkpoints"
FLAGS_FILE = "flags.txt"
# Outputs every training run writes besides its task's own result files.
RUN_OUTPUTS = (CHECKPOINT_DIR, "tensorboard", "history.csv", "skipped_files.txt", FLAGS_FILE)


def fingerprint(flag_values, task_flags, extra=None):
    """{flag: value} of the flags that define the task's results, plus `extra` (non-flag facts)."""
    values = {name: flag_values[name].value for name in task_flags.result_flags}
    values.update(extra or {})
    return dict(sorted(values.items()))


def _flag_defaults():
    return {name: config.FLAGS[name].default for group in config.FLAG_GROUPS.values() for name in group}


def _describe_differences(stored, current, keys):
    defaults = _flag_defaults()
    shown = []
    for key in keys[:6]:
        old = stored.get(key, defaults.get(key))
        shown.append(f"{'--' if key in defaults else ''}{key}: {old!r} -> {current.get(key)!r}")
    return ", ".join(shown)


def fingerprint_differences(stored, current):
    """The keys whose values differ between a stored and the current fingerprint ([] when the run can
    resume). Stored keys the current fingerprint lacks are ignored; current keys the stored one lacks
    count as their flag default (a non-flag key, e.g. a hash an older version did not store, is
    accepted)."""
    defaults = _flag_defaults()
    differing = []
    for key, value in current.items():
        if key in stored:
            if stored[key] != value:
                differing.append(key)
        elif key in defaults and defaults[key] != value:
            differing.append(key)
    return differing


def flagfile_text(flag_values, task_flags):
    """A flagfile that re-runs this configuration (`--flagfile`): the task and every flag it reads,
    except the run-control flags (--resume, --overwrite), which are the rerun's own decision."""
    control = set(config.FLAG_GROUPS["run_control"])
    lines = [flag_values[name].serialize() for name in task_flags.read_flags
             if name not in control and flag_values[name].value is not None]
    return "\n".join(line for line in lines if line) + "\n"


@dataclasses.dataclass
class RunPlan:
    """What a training task will do in its folder; `state` is the checkpoint state to resume from."""

    save_path: str
    flag_name: str
    fingerprint: dict
    state: object
    start_over: bool
    owned_files: tuple
    flags_text: str
    seed: int

    @property
    def checkpoint_dir(self):
        return os.path.join(self.save_path, CHECKPOINT_DIR)

    @property
    def start_epoch(self):
        return self.state["epoch"] if self.state else 0

    def start(self):
        """Clears the previous run's outputs when starting over and writes flags.txt. Call it once every
        input of the run has been loaded and checked, so a failing run never costs a finished one."""
        if self.start_over:
            for name in self.owned_files + RUN_OUTPUTS:
                path = os.path.join(self.save_path, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
        os.makedirs(self.save_path, exist_ok=True)
        write_text_atomic(os.path.join(self.save_path, FLAGS_FILE), self.flags_text)

    def resume(self, trainer):
        """Restores `trainer` (built and compiled) from the checkpoint; returns the first epoch to train."""
        if self.state is None:
            return 0
        cb.restore_checkpoint(trainer, self.checkpoint_dir, self.state)
        say(f"Resuming from epoch {self.state['epoch']}")
        return self.state["epoch"]


def plan_run(flag_values, task_flags, save_path, flag_name, owned_files, extra_fingerprint=None):
    """Decides between a fresh start, a resume and a refusal, reading only; seeds every generator.

    `owned_files` are the task's result files in the folder (all removed when starting over, so no
    stale result of another configuration survives). Raises UserError for a different configuration
    without --overwrite.
    """
    current = fingerprint(flag_values, task_flags, extra_fingerprint)
    state = None if flag_values.overwrite and not flag_values.resume else cb.read_checkpoint_state(
        os.path.join(save_path, CHECKPOINT_DIR))
    has_results = any(os.path.exists(os.path.join(save_path, name)) for name in owned_files[:1])
    differing = fingerprint_differences(state["fingerprint"], current) if state is not None else None
    same = differing == []
    if (has_results or state is not None) and not same and not flag_values.overwrite:
        shown = _describe_differences(state["fingerprint"], current, differing) if differing else ""
        raise UserError(f"{flag_name}={save_path} already holds results of a different configuration"
                        f"{' (differs in ' + shown + ')' if shown else ''}. "
                        "Use another folder, or --overwrite to replace them.")
    resume = same and flag_values.resume
    keras.utils.set_random_seed(flag_values.seed)
    return RunPlan(save_path=save_path, flag_name=flag_name, fingerprint=current, state=state if resume else None,
                   start_over=not resume, owned_files=tuple(owned_files),
                   flags_text=flagfile_text(flag_values, task_flags), seed=flag_values.seed)
