"""The life of a training run's folder: fingerprint, resume / refuse / start over, flags.txt.

A run folder (--pretrain_save_path, --finetune_save_path) holds one run's results and checkpoints.
Its configuration's FINGERPRINT is the values of the flags that define the task's results
(`TaskFlags.results`), the content digests of the lists or image folders they name, plus what a task
adds (the encoder file's content hash for fine-tuning). Paths that only say where outputs go are not
in it, so a folder can be moved or copied and still resumes.

Running again in a folder:
* same fingerprint, --resume (default): resume from the last completed epoch;
* same fingerprint, --resume=false: start over;
* different fingerprint: refused (exit 2) unless --overwrite, which starts over.
Fingerprints stored by earlier versions may hold flags that are no longer part of it (the save path
itself, jit_compile), which are ignored, and may lack flags added since, which count as their
default: a new flag never breaks the resume of an old folder unless it is given another value.

Nothing of a previous run is written or removed while the plan is made: `plan_run` first makes sure
the folder exists and is writable and takes its lock (one run per folder at a time, `locking`), then
only reads. `RunPlan.start()`, called by the task once every input has been loaded and checked,
clears the previous run's outputs (when starting over) and writes flags.txt.

Damaged checkpoints: when checkpoints/state.json or its weights are damaged, the previous epoch's
checkpoint is used (said); when no checkpoint is usable the run stops (exit 2) naming the files, and
`--resume=false --overwrite` starts over without reading them.
"""
import atexit
import dataclasses
import os
import shutil
import tempfile

import keras

from simclr_tf.errors import UserError
from simclr_tf.io_utils import check_writable_folder, write_text_atomic
from simclr_tf.training import callbacks as cb

from . import config, list_inputs, locking
from .console import say, warn

CHECKPOINT_DIR = "checkpoints"
FLAGS_FILE = "flags.txt"
# Outputs every training run writes besides its task's own result files.
RUN_OUTPUTS = (CHECKPOINT_DIR, "tensorboard", "history.csv", "skipped_files.txt", FLAGS_FILE)


def fingerprint(flag_values, task_flags, extra=None):
    """{flag: value} of the flags that define the task's results, the content digests of the lists (or
    image folders) those flags name (`list_inputs`: an image added to a folder is a new configuration,
    like an edited list), plus `extra` (non-flag facts)."""
    values = {name: flag_values[name].value for name in task_flags.result_flags}
    values.update(list_inputs.content_fingerprint(flag_values, task_flags.result_flags))
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
    lock: object = None  # the folder's locking.FolderLock, held for the life of the process
    # Where this process writes: the run folder, or for a non-chief worker of a multi-worker job a
    # temporary folder removed at exit (TensorFlow's rule: every worker saves, only the chief's count).
    write_path: str = None

    def __post_init__(self):
        if self.write_path is None:
            self.write_path = self.save_path

    @property
    def is_writer(self):
        """True for the process whose outputs are the run's (the chief)."""
        return self.write_path == self.save_path

    @property
    def checkpoint_dir(self):
        """The run's checkpoints (what a resume reads)."""
        return os.path.join(self.save_path, CHECKPOINT_DIR)

    @property
    def write_checkpoint_dir(self):
        """Where this process writes its checkpoints."""
        return os.path.join(self.write_path, CHECKPOINT_DIR)

    @property
    def start_epoch(self):
        return self.state["epoch"] if self.state else 0

    def start(self):
        """Clears the previous run's outputs when starting over and writes flags.txt. Call it once every
        input of the run has been loaded and checked, so a failing run never costs a finished one.
        A non-chief worker only creates its temporary folder."""
        if not self.is_writer:
            os.makedirs(self.write_path, exist_ok=True)
            atexit.register(shutil.rmtree, self.write_path, ignore_errors=True)
            return
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
        try:
            cb.restore_checkpoint(trainer, self.checkpoint_dir, self.state)
        except cb.DamagedCheckpointError as e:
            raise UserError(_damaged_message(self.flag_name, self.save_path, e)) from None
        say(f"Resuming from epoch {self.state['epoch']}")
        return self.state["epoch"]


def lock_save_path(save_path, flag_name, created=False):
    """Takes the lock of a training run's folder (which exists) for this process, or UserError when another
    live run holds it. Only the process that writes the folder (the chief) calls it. `created`: the run
    just made the folder, so a run that fails before writing anything leaves none behind (at exit)."""
    try:
        lock = locking.lock_folder(save_path, remove_if_unused=created)
    except locking.FolderInUse as e:
        raise UserError(f"{flag_name}={save_path} is already in use by {locking.describe_holder(e.holder)}: one "
                        "run per folder at a time. Wait for it to finish, or use another folder.") from None
    except OSError as e:
        raise UserError(f"{flag_name}={save_path}: cannot create its lock file ({e.strerror or e}).") from None
    if lock.previous_holder:
        say(f"{flag_name}={save_path}: taking over the lock of {locking.describe_holder(lock.previous_holder)}, "
            "which ended without releasing it")
        lock.previous_holder = ""  # said once
    if lock.unsupported:
        warn(f"{flag_name}={save_path}: the file system does not support locks ({lock.unsupported}); make sure no "
             "other run uses this folder")
        lock.unsupported = ""
    return lock


def _damaged_message(flag_name, save_path, error):
    return (f"{flag_name}={save_path}: the checkpoint cannot be used: {error}. Restore the folder from a copy, or "
            "start over with --resume=false --overwrite (which deletes the checkpoints and results in it).")


def _read_state(flag_values, save_path, flag_name):
    """The checkpoint state to resume from or compare with (None when there is none), never read for
    --resume=false --overwrite; falls back to the previous checkpoint when the newest is damaged."""
    if flag_values.overwrite and not flag_values.resume:
        return None

    def report(problem, state):
        use = "resuming from" if flag_values.resume else "comparing the configuration with"
        warn(f"{problem}; {use} the previous checkpoint, epoch {state['epoch']}")
    try:
        return cb.read_checkpoint_state(os.path.join(save_path, CHECKPOINT_DIR), report=report)
    except cb.DamagedCheckpointError as e:
        raise UserError(_damaged_message(flag_name, save_path, e)) from None


def plan_run(flag_values, task_flags, save_path, flag_name, owned_files, extra_fingerprint=None, is_chief=True):
    """Decides between a fresh start, a resume and a refusal, reading only; seeds every generator.

    `owned_files` are the task's result files in the folder (all removed when starting over, so no
    stale result of another configuration survives). Raises UserError for a different configuration
    without --overwrite, for a folder that is not writable or in use by another run, and for a
    checkpoint none of whose epochs is usable (unless --resume=false --overwrite).

    `is_chief` False (a non-chief worker of a multi-worker job): the decision is read from the run
    folder as the chief reads it, but the process writes into a temporary folder of its own and
    takes no lock (the chief holds it).
    """
    existed = os.path.isdir(save_path)
    lock, write_path = None, None
    if is_chief:
        check_writable_folder(save_path, flag_name)
        lock = lock_save_path(save_path, flag_name, created=not existed)
    else:
        write_path = tempfile.mkdtemp(prefix="simclr-tf-worker-")
    current = fingerprint(flag_values, task_flags, extra_fingerprint)
    state = _read_state(flag_values, save_path, flag_name)
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
                   flags_text=flagfile_text(flag_values, task_flags), seed=flag_values.seed, lock=lock,
                   write_path=write_path)
