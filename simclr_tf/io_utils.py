"""Atomic file output (a crash never leaves a truncated result behind), and the writability check every
output folder gets before any work."""
import contextlib
import errno
import hashlib
import json
import os
import tempfile

from simclr_tf.errors import UserError


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
        fsync_directory(directory)  # the rename itself survives a power loss
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


def fsync_file(path):
    """Flushes a written file's content to disk (before it is renamed into place)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def file_sha256(path):
    """Hex SHA-256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_directory(directory):
    """Flushes a folder's entries (renames) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable_folder(path, flag_name):
    """Creates folder `path` when missing and proves it writable (a temporary file is created and
    removed), so a run fails before any work instead of after it. UserError naming the flag when the
    path is a file, cannot be created, or is read-only (permissions, a read-only file system)."""
    shown = f"{flag_name}={path}"
    if not path:
        raise UserError(f"{flag_name} is empty: give the folder to write to.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{shown} is a file, not a folder: give a folder path (the outputs go inside it), "
                        "or move the file away.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{shown}: cannot create the folder ({_reason(e)}).") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"{shown}: cannot write into the folder ({_reason(e)}). Give a writable folder.") from None


def _reason(error):
    if error.errno == errno.EROFS:
        return "read-only file system"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        return "a part of the path is a file, not a folder"
    if error.errno == errno.ENOSPC:
        return "no space left on the device"
    return error.strerror or str(error)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
