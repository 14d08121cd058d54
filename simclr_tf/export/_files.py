"""Atomic creation of an export folder: it appears whole under its final name, or not at all."""
import contextlib
import os
import shutil
import tempfile

from simclr_tf.io_utils import fsync_directory, fsync_file


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_tree(root):
    # Flushed before the rename, so after a power loss the new name never points at empty files.
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_file(os.path.join(folder, name))
        fsync_directory(folder)


@contextlib.contextmanager
def atomic_directory(final_dir, overwrite=False):
    """Yields an empty temporary folder beside `final_dir`; renames it to `final_dir` on success.

    The temporary folder (``.tmp-<name>-XXXX``, a name TF Serving's version scan ignores) is
    removed when the body raises, so a failure leaves neither `final_dir` nor a temporary folder.
    With `overwrite`, an existing `final_dir` is moved aside, replaced and then deleted; without it,
    an existing `final_dir` is a FileExistsError raised before anything is written.
    """
    final_dir = os.path.abspath(final_dir)
    parent, name = os.path.split(final_dir)
    if os.path.exists(final_dir) and not overwrite:
        raise FileExistsError(f"{final_dir} already exists; pass overwrite=True to replace it")
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=parent)
    try:
        yield tmp_dir
        # mkdtemp makes a 0700 folder; a server running as another user must be able to read it.
        os.chmod(tmp_dir, 0o777 & ~_umask())
        _fsync_tree(tmp_dir)
        if os.path.exists(final_dir):
            # POSIX cannot rename a folder over a non-empty one: move the old one aside first. For a
            # moment neither exists, but a half-written folder never has the final name.
            old_dir = tempfile.mkdtemp(prefix=f".old-{name}-", dir=parent)
            os.replace(final_dir, os.path.join(old_dir, name))
            try:
                os.replace(tmp_dir, final_dir)
            except BaseException:
                os.replace(os.path.join(old_dir, name), final_dir)
                shutil.rmtree(old_dir, ignore_errors=True)
                raise
            shutil.rmtree(old_dir, ignore_errors=True)
        else:
            os.replace(tmp_dir, final_dir)
        fsync_directory(parent)
    finally:
        if os.path.exists(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)


def write_bytes_atomic(path, data):
    """Writes `data` to `path` through a temporary file beside it and a rename: readers see the old
    file or the whole new one, never a partial write; a failure leaves no temporary file."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f".tmp-{os.path.basename(path)}-", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp_path, path)
        fsync_directory(parent)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
