"""Which flags each task reads, what defines its results, and the warning for flags it ignores.

`config.FLAG_GROUPS` names groups of flags. A task declares a `TaskFlags`: the groups whose values
define its results (they make its run folder's fingerprint) and the groups it reads without them
changing its results (resume control, output folders, speed, monitors). A flag given on the command
line (or in a --flagfile) that none of the task's groups holds is not used by it: the task says so
in one warning line instead of ignoring it silently.
"""
import dataclasses

from . import config
from .console import warn


@dataclasses.dataclass(frozen=True)
class TaskFlags:
    """The flag groups of one task (names of `config.FLAG_GROUPS`)."""

    task: str
    results: tuple
    also_reads: tuple = ()

    def __post_init__(self):
        unknown = [g for g in self.results + self.also_reads if g not in config.FLAG_GROUPS]
        if unknown:
            raise ValueError(f"unknown flag groups {unknown}")

    @property
    def result_flags(self):
        """Names of the flags that define the task's results, in definition order."""
        return tuple(name for group in self.results for name in config.FLAG_GROUPS[group])

    @property
    def read_flags(self):
        """Names of every flag the task reads (the task flag itself included)."""
        groups = ("task",) + self.results + self.also_reads
        return tuple(name for group in groups for name in config.FLAG_GROUPS[group])


def given(flag_values, name):
    """True when --name was set on the command line or in a flagfile (not just its default)."""
    return bool(flag_values[name].present)


def unused_given_flags(flag_values, task_flags):
    """The flags given explicitly that the task does not read."""
    read = set(task_flags.read_flags)
    return [name for group in config.FLAG_GROUPS.values() for name in group
            if name not in read and given(flag_values, name)]


def warn_unused(flag_values, task_flags, reason=""):
    """One warning line naming every given flag the task does not read (nothing when there is none)."""
    unused = unused_given_flags(flag_values, task_flags)
    if unused:
        names = ", ".join(f"--{name}" for name in unused)
        warn(f"--task={task_flags.task} does not use {names}: ignored{reason}")
    return unused
