"""One training run per save folder at a time: an exclusive lock on a file in the folder.

`lock_folder(folder)` takes `fcntl.flock` on `<folder>/.simclr-tf.lock` and writes the holder's pid,
start time and host into it. The kernel releases a flock when its process dies, however it dies
(Ctrl-C, kill -9, a crash), so a killed run never leaves the folder locked: the next run finds the
lock free and the dead holder's line still in the file, takes it over and says so. A clean exit
empties the file before unlocking. A second run while the first is alive is refused (`FolderInUse`).

Only the process that writes the folder takes its lock (the chief, in a multi-worker job). The lock is
held for the life of the process (or until `FolderLock.release`); taking it again in the same
process returns the same lock. This module imports nothing heavy (no TensorFlow), so small helper
processes can use it.
"""
import atexit
import dataclasses
import datetime
import errno
import fcntl
import os
import socket

LOCK_FILE = ".simclr-tf.lock"

_HELD = {}  # realpath of the folder -> FolderLock of this process


class FolderInUse(Exception):
    """Another live process holds the folder's lock."""

    def __init__(self, folder, holder):
        self.folder = folder
        self.holder = holder  # "pid started host" line of the holder ("" when it has not written it yet)
        super().__init__(f"{folder} is already in use by {describe_holder(holder)}")


@dataclasses.dataclass
class FolderLock:
    folder: str
    fd: object  # None when the file system does not support locks
    previous_holder: str = ""  # the line a process that died holding the lock left behind ("" if none)
    unsupported: str = ""  # why the folder could not be locked (e.g. a file system without flock)
    remove_if_unused: bool = False  # the run made the folder: a run that wrote nothing leaves none behind

    def release(self):
        """Empties the lock file (so the next run sees no dead holder) and unlocks it; removes the folder
        too when the run created it and wrote nothing else into it (it failed before starting)."""
        _HELD.pop(os.path.realpath(self.folder), None)
        if self.fd is None:
            return
        unused = False
        try:
            os.ftruncate(self.fd, 0)
            unused = self.remove_if_unused and os.listdir(self.folder) == [LOCK_FILE]
            if unused:
                os.remove(os.path.join(self.folder, LOCK_FILE))
        except OSError:
            unused = False
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = None
        if unused:
            try:
                os.rmdir(self.folder)
            except OSError:
                pass


def describe_holder(line):
    """'process 123 (started 2024-01-02 03:04:05 on host)' from a lock file line."""
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].isdigit():
        return "another process"
    started = parts[1].replace("T", " ")
    host = f" on {parts[2]}" if len(parts) > 2 and parts[2] and parts[2] != socket.gethostname() else ""
    return f"process {parts[0]} (started {started}{host})"


def lock_folder(folder, remove_if_unused=False):
    """Takes the exclusive lock of `folder` (which must exist) for this process; returns its FolderLock.

    Raises FolderInUse when another live process holds it. Call it only in the process that writes the
    folder (the chief of a multi-worker job). `remove_if_unused`: the caller just created the folder,
    which `release` removes again when nothing but the lock file is in it.
    """
    key = os.path.realpath(folder)
    if key in _HELD:
        return _HELD[key]
    path = os.path.join(folder, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = _read_line(fd)
            os.close(fd)
            raise FolderInUse(folder, holder) from None
        os.close(fd)  # ENOLCK, EOPNOTSUPP...: a file system without locks
        lock = FolderLock(folder, None, unsupported=e.strerror or str(e))
        _HELD[key] = lock
        return lock
    previous = _read_line(fd)
    started = datetime.datetime.now().replace(microsecond=0).isoformat()
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {started} {socket.gethostname()}\n".encode(), 0)
    os.fsync(fd)
    lock = FolderLock(folder, fd, previous_holder=previous, remove_if_unused=remove_if_unused)
    _HELD[key] = lock
    return lock


def release_all():
    """Releases every lock this process holds (at exit; tests)."""
    for lock in list(_HELD.values()):
        lock.release()


def _read_line(fd):
    try:
        return os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


atexit.register(release_all)
