"""Where the user's files live: local paths, or any URI `tf.io.gfile` reads (gs://, s3://, hdfs://, ram://).

Lists name their images by local path or by URI, and the list itself may be a URI. Local files go
through the operating system directly (a stat is microseconds; TensorFlow's file system layer adds
nothing there); URIs go through `tf.io.gfile`, where one request costs a network round trip, so
checking many of them is spread over a thread pool (`existing_files`). `existing_files` is how a
list's every line is checked before training (benchmarks/filelist_check.py: a 100,000-line list of
local files in 2-5 s on this project's shared 2-core machine under load).
"""
import concurrent.futures
import io
import os
import posixpath
import re
import unicodedata

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# Requests in flight when checking URIs: round trips overlap, and the pool's threads wait, not compute.
URI_CHECK_THREADS = 64
# Local paths in one folder from which the folder is listed instead of stat'ing each (listing a huge
# folder for a handful of its files would cost more than the stats).
LISTED_FOLDER_MIN = 64


def is_uri(path):
    """True for 'scheme://...' (gs://bucket/a.jpg), False for a local path."""
    return bool(_URI.match(path))


def _gfile():
    # TensorFlow is imported only when a URI is met: lists of local files need none of it.
    import tensorflow as tf
    return tf.io.gfile


def resolve(path, base_dir):
    """`path` of a list line as an absolute local path or a URI: relative paths are relative to
    `base_dir` (the list's folder, itself a local path or a URI); `~` is expanded in local paths."""
    if is_uri(path):
        return path
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return os.path.normpath(path)
    if is_uri(base_dir):
        scheme, rest = base_dir.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, path))}"
    return os.path.normpath(os.path.join(base_dir, path))


def folder_of(path):
    """The absolute folder holding the file `path` (a local path or a URI)."""
    if is_uri(path):
        return path.rsplit("/", 1)[0] if "/" in path.split("://", 1)[1] else path
    return os.path.dirname(os.path.abspath(path))


def isfile(path):
    """True when `path` (local or URI) is an existing file, not a folder."""
    if not is_uri(path):
        return os.path.isfile(path)
    gfile = _gfile()
    try:
        return not gfile.stat(path).is_directory
    except Exception:  # noqa: BLE001  (NotFoundError, or a file system that cannot say: not a file we can read)
        return False


def isdir(path):
    """True when `path` (local or URI) is an existing folder."""
    return _gfile().isdir(path) if is_uri(path) else os.path.isdir(path)


def existing_files(paths):
    """The set of `paths` that are existing files. Local ones: a folder named by many of them is
    listed once (one `scandir` instead of a stat per file), the others are stat'ed; URIs are checked
    by `URI_CHECK_THREADS` threads at once."""
    paths = list(dict.fromkeys(paths))
    remote = [p for p in paths if is_uri(p)]
    by_folder = {}
    for path in paths:
        if not is_uri(path):
            by_folder.setdefault(os.path.dirname(path), []).append(path)
    found = set()
    for folder, members in by_folder.items():
        found.update(_listed_files(folder, members) if len(members) >= LISTED_FOLDER_MIN else
                     (p for p in members if os.path.isfile(p)))
    if remote:
        with concurrent.futures.ThreadPoolExecutor(min(URI_CHECK_THREADS, len(remote))) as pool:
            found.update(p for p, ok in zip(remote, pool.map(isfile, remote)) if ok)
    return found


def _fold(name):
    return unicodedata.normalize("NFC", name).casefold()


def _listed_files(folder, members):
    """The `members` (paths in `folder`) that are files, from one listing of the folder. A name the
    listing lacks but holds in another case or Unicode form is stat'ed after all: case-insensitive
    and normalising file systems (macOS, Windows) open it under either spelling."""
    try:
        with os.scandir(folder) as listing:
            files = {entry.name: entry for entry in listing}
    except OSError:  # unlistable (no read permission on the folder, missing, not a folder): stat each
        return {p for p in members if os.path.isfile(p)}
    folded = None
    found = set()
    for path in members:
        entry = files.get(os.path.basename(path))
        if entry is not None:
            try:
                if entry.is_file():  # follows symbolic links, as os.path.isfile does
                    found.add(path)
            except OSError:
                pass
            continue
        if folded is None:
            folded = {_fold(name) for name in files}
        if _fold(os.path.basename(path)) in folded and os.path.isfile(path):
            found.add(path)
    return found


def read_bytes(path):
    """The whole content of a local file or URI."""
    if not is_uri(path):
        with open(path, "rb") as f:
            return f.read()
    with _gfile().GFile(path, "rb") as f:
        return f.read()


def open_binary(path):
    """A readable, seekable binary file object: the local file, or a URI's bytes in memory (Pillow
    seeks back and forth in headers; a remote file is read once)."""
    return open(path, "rb") if not is_uri(path) else io.BytesIO(read_bytes(path))
