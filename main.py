"""simclr-tf command line: `python main.py --task=TASK [--flag=value ...]` (see --helpfull)."""
import contextlib
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines drown the output
# TensorFlow leaves oneDNN off on CPUs without AVX-512; without it, the input gradient of a 3x3
# convolution with 512 channels is ~100x slower (README, "Speed"). Must be set before TF is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from absl import app, flags, logging  # noqa: E402

if __package__:  # installed by pip: simclr_tf.cli.main, the `simclr-tf` console script
    from . import config  # noqa: E402  (defines the flags)
    _TASKS_PACKAGE = f"{__package__}.tasks"
else:  # `python main.py` in a checkout
    import config  # noqa: E402
    _TASKS_PACKAGE = "tasks"

USER_ERROR_STATUS = 2


def _fail(message):
    print(f"simclr-tf: error: {message}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_STATUS)


@contextlib.contextmanager
def _c_level_stderr_silenced():
    """Hides what TensorFlow's C++ start-up writes straight to file descriptor 2 (CUDA probing,
    oneDNN notices) before absl logging exists; TF_CPP_MIN_LOG_LEVEL does not reach those lines.
    Python exceptions raised inside still propagate and are printed after stderr is restored."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_task(task_name):
    with _c_level_stderr_silenced():
        module = importlib.import_module(f"{_TASKS_PACKAGE}.{task_name}")
        import tensorflow as tf
        tf.config.list_physical_devices()  # device probing prints, too
    return module


def _parse_flags(argv):
    """absl parsing, but a bad flag is a user error: one line on stderr and status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(f"{e}\nRun 'python main.py --helpfull' to see every flag.")
    except SystemExit as e:
        # absl exits with status 1 after printing --help/--helpfull; asking for help is not a failure.
        asked_for_help = any(a.split("=")[0] in ("--help", "-h", "--helpfull", "--helpshort", "-?") for a in argv)
        sys.exit(0 if asked_for_help and e.code == 1 else e.code)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])!r} (flags look like --name=value)")
    task_name = flags.FLAGS.task
    if task_name is None:
        _fail(f"--task is required: one of {', '.join(config.TASKS)}")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines (SavedModel writing, ...) are noise here
    task = _import_task(task_name)
    from simclr_tf.errors import UserError
    from simclr_tf.training.callbacks import NonFiniteLossError
    flag_use = importlib.import_module(f"{_TASKS_PACKAGE}.flag_use")
    try:
        flag_use.warn_unused(flags.FLAGS, task.FLAGS_READ)
        task.run(flags.FLAGS)
    except UserError as e:
        _fail(str(e))
    except NonFiniteLossError as e:
        print(f"simclr-tf: training diverged: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\nInterrupted. Run the same command again to resume from the last completed epoch.",
              file=sys.stderr, flush=True)
        sys.exit(130)


def run():
    """Console-script entry point (`simclr-tf`)."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
