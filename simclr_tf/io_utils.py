"""Atomic file output: a crash never leaves a truncated result behind."""
import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_path(final_path, suffix=""):
    """Yields a temporary path beside `final_path`; renames it over `final_path` on success.

    `suffix` lets writers that insist on an extension (Keras wants `.keras`, `.weights.h5`,
    matplotlib infers the format from `.png`) see the one they expect.
    """
    directory = os.path.dirname(os.path.abspath(final_path)) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are for everyone
        os.replace(tmp_path, final_path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def write_text_atomic(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path, obj):
    """Writes `obj` as indented JSON to `path` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_keras_atomic(model, path):
    """Saves a Keras model in `.keras` format to `path` atomically."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def save_figure_atomic(figure, path, **kwargs):
    """Saves a matplotlib figure to `path` (format from its extension) atomically."""
    suffix = os.path.splitext(path)[1]
    with atomic_path(path, suffix=suffix) as tmp:
        figure.savefig(tmp, **kwargs)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
