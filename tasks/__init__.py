"""The tasks of the command line, one module each (`--task=NAME` runs tasks/NAME.py's `run`).

No task imports another task: what two tasks share lives in a module of this package named for what
it holds (README, "Where the code is").

Installed by pip, this package is `simclr_tf.cli.tasks` beside `simclr_tf.cli.config`; in a
checkout it is the top-level `tasks` beside the top-level `config`. Task modules therefore import
the flag definitions as `from . import config`, which this line makes work in both layouts.
"""
import importlib

config = importlib.import_module("config" if __name__ == "tasks" else __name__.rpartition(".")[0] + ".config")
