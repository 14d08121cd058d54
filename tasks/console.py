"""What a task prints: progress lines on stdout, warnings on stderr, Keras' progress bar on a terminal."""
import sys

import keras


def say(message):
    """User-facing progress line (stdout, flushed so it interleaves with Keras' output)."""
    print(message, flush=True)


def warn(message):
    """One warning line on stderr."""
    print(f"simclr-tf: warning: {message}", file=sys.stderr, flush=True)


def progress_verbosity():
    """Keras' live progress bar on a terminal; in logs and pipes only our one line per epoch."""
    return 1 if sys.stdout.isatty() else 0


def progress_callbacks():
    """The progress bar placed FIRST, so it closes its line before our epoch summary is printed."""
    return [keras.callbacks.ProgbarLogger()] if progress_verbosity() else []


def progress_printer(what):
    """A `progress(done, total)` function drawing a progress bar of `what` (e.g. images decoded)."""
    bar = keras.utils.Progbar(None, unit_name=what, verbose=progress_verbosity() or 2)

    def progress(done, total):
        if bar.target is None:
            bar.target = total
        if done == total or done % 64 == 0:
            bar.update(done)
    return progress
