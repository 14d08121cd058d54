"""Folders of images where a file list is expected (README, "Your own images").

Two readings of a folder, both giving the same `filelist.FileList` a list file gives:

* unlabelled (`filelist.IMAGES`): every image file under the folder, recursively;
* labelled (`filelist.CLASSIFICATION`): the convention of `keras.utils.image_dataset_from_directory`
  and torchvision's `ImageFolder`: one subfolder per class, classes in sorted subfolder order (label
  = position), class names = subfolder names, the images of a class found recursively in its folder.

Image files are recognised by extension (the formats `decode` reads, case-insensitive). Names that
start with '.' (hidden files and folders, macOS `._` resource forks) are skipped. Symbolic links to
files and folders are followed; a folder reached twice through links is read once (no loops). The
order is sorted by path components, so it is the same on every file system and every run.

`list_text` writes a FileList back as list text that `filelist.read_file_list` reads to the same
paths and labels (absolute paths; labelled lines split at the last comma, so commas in paths are safe).
"""
import hashlib
import os

from simclr_tf.data import filelist
from simclr_tf.errors import UserError

# The contract's formats (decode.SUPPORTED_FORMATS); lower case, compared case-insensitively.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def is_image_name(name):
    """True for a visible file name with an image extension (any case)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def read_list_or_folder(path, kind=filelist.IMAGES, num_classes=None, flag_name="--train_file_path"):
    """A list file (`filelist.read_file_list`) or a folder of images, as a checked `FileList`.

    A folder's FileList has `folder` set and, read as classification data, `class_names`. UserError
    (naming the flag and folder) for an empty folder, a class folder without images, fewer than two
    classes, a class count that differs from `num_classes`, broken links or file names a list cannot
    hold, and for segmentation, which needs a `path,labelmap_path` list.
    """
    if not (path and os.path.isdir(path)):
        return filelist.read_file_list(path, kind, num_classes=num_classes, flag_name=flag_name)
    if kind == filelist.SEGMENTATION:
        raise UserError(f"{flag_name}={path} is a folder, but segmentation pairs every image with its label map: "
                        "give a 'path,labelmap_path' list (README, 'Your own images').")
    if kind == filelist.CLASSIFICATION:
        return _class_folders(path, num_classes, flag_name)
    paths = image_files(path, flag_name)
    if not paths:
        raise UserError(f"{flag_name}={path}: the folder holds no image files ({_formats()}), in any subfolder.")
    return filelist.FileList(list_path=os.path.abspath(path), entries=[filelist.ListEntry(p) for p in paths],
                             folder=True)


def _class_folders(path, num_classes, flag_name):
    classes = sorted(name for name in _visible_entries(path, flag_name) if os.path.isdir(os.path.join(path, name)))
    where = f"{flag_name}={path}"
    if not classes:
        loose = [name for name in _visible_entries(path, flag_name) if is_image_name(name)]
        found = f" (it holds {len(loose)} image files directly)" if loose else ""
        raise UserError(f"{where}: no class subfolders{found}. Labelled images in a folder need one subfolder per "
                        "class (e.g. cat/, dog/), or give a 'path,label' list.")
    entries, empty = [], []
    for label, name in enumerate(classes):
        # A link inside a class folder back to the top folder must not pull other classes' images in.
        paths = image_files(os.path.join(path, name), flag_name, skip=(path,))
        if not paths:
            empty.append(name)
        entries += [filelist.ListEntry(p, label) for p in paths]
    if empty:
        raise UserError(f"{where}: {len(empty)} class folder(s) hold no image files ({_formats()}): "
                        f"{shown_names(empty)}. Add images or remove the folder(s).")
    if len(classes) < 2:
        raise UserError(f"{where}: only one class folder ({classes[0]}); a classifier needs at least two.")
    if num_classes is not None and num_classes != len(classes):
        raise UserError(f"{where} has {len(classes)} class folders ({shown_names(classes)}) but "
                        f"--num_classes={num_classes}; leave --num_classes out (the folders define it) or fix the "
                        "folders.")
    return filelist.FileList(list_path=os.path.abspath(path), entries=entries, folder=True, class_names=classes)


def image_files(folder, flag_name, skip=()):
    """Absolute paths of the visible image files under `folder` (recursively, through symbolic links,
    each real folder once, never into the folders `skip`), sorted by path components. UserError naming
    them for broken links and for names a list line cannot hold (line breaks, bytes that are not UTF-8)."""
    found, problems = [], []
    seen = {os.path.realpath(other) for other in skip}
    stack = [os.path.abspath(folder)]
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if real in seen:  # a link back to a folder already read (a loop, or two links to one folder)
            continue
        seen.add(real)
        for name in _visible_entries(current, flag_name):
            full = os.path.join(current, name)
            if os.path.isdir(full):
                stack.append(full)
            elif is_image_name(name):
                problem = _unlistable(full)
                if problem:
                    problems.append(problem)
                elif os.path.isfile(full):
                    found.append(full)
                else:
                    problems.append(f"broken symbolic link: {full!r}")
    if problems:
        raise UserError(f"{flag_name}={folder}: {len(problems)} problem(s):\n  "
                        + "\n  ".join(problems[:filelist.MAX_REPORTED_PROBLEMS])
                        + (f"\n  ... and {len(problems) - filelist.MAX_REPORTED_PROBLEMS} more"
                           if len(problems) > filelist.MAX_REPORTED_PROBLEMS else ""))
    root = os.path.abspath(folder)
    return sorted(found, key=lambda p: os.path.relpath(p, root).split(os.sep))


def _visible_entries(folder, flag_name):
    try:
        return [name for name in os.listdir(folder) if not name.startswith(".")]
    except OSError as e:
        raise UserError(f"{flag_name}: cannot read the folder {folder} ({e.strerror or e}).") from None


def _unlistable(path):
    """Why `path` cannot be a line of a list (None when it can)."""
    if "\n" in path or "\r" in path:
        return f"file name with a line break (rename it): {path!r}"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return f"file name that is not valid UTF-8 (rename it): {path!r}"
    return None


def _formats():
    return "/".join(ext[1:] for ext in IMAGE_EXTENSIONS)


def shown_names(names, limit=20):
    """'a, b, c' of at most `limit` names, then how many more (for messages)."""
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def list_text(file_list, header=None):
    """List text of a FileList: `path`, or `path,label` for an entry with a label (class index or label
    map); absolute paths, so the text means the same wherever it is written. `header` lines become `#`
    comments, which the reader ignores."""
    lines = [f"# {line}" for line in (header or [])]
    lines += [entry.path if entry.label is None else f"{entry.path},{entry.label}" for entry in file_list.entries]
    return "\n".join(lines) + "\n"


def content_digest(file_list, with_labels=True):
    """SHA-256 of what a list means: every entry's path relative to the list's folder (or to the image
    folder) and label (unless `with_labels` is False), and the class names of a folder. Comments, blank
    lines and spelling (./a.png, absolute or relative) do not change it; an image added, removed or
    relabelled does."""
    base = file_list.list_path if file_list.folder else os.path.dirname(file_list.list_path)
    digest = hashlib.sha256()
    for entry in file_list.entries:
        label = os.path.relpath(entry.label, base) if isinstance(entry.label, str) else entry.label
        label = label if with_labels else None
        digest.update(f"{os.path.relpath(entry.path, base)}\t{label}\n".encode("utf-8", "surrogateescape"))
    if file_list.class_names:
        digest.update(("classes\t" + "\t".join(file_list.class_names)).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def match_classes(file_list, class_names, flag_name, reference):
    """`file_list` (a folder of class folders) relabelled by `class_names` (the classes its labels must
    mean, e.g. the training classes): class folder `name` gets label class_names.index(name), so folders
    named 0, 1, ..., 10 match integer classes whatever their sorted order. UserError naming the classes
    that differ when the folder's classes are not exactly `class_names` (`reference` says whose they are)."""
    names = list(file_list.class_names)
    missing = [name for name in class_names if name not in names]
    extra = [name for name in names if name not in class_names]
    if missing or extra:
        differences = ([f"not in {flag_name}: {shown_names(missing)}"] if missing else []) + (
            [f"not among {reference}: {shown_names(extra)}"] if extra else [])
        raise UserError(f"{flag_name}={file_list.list_path}: its class folders differ from {reference} "
                        f"({'; '.join(differences)}). Class folders must have the same names.")
    index = {name: class_names.index(name) for name in names}
    entries = [filelist.ListEntry(e.path, index[names[e.label]], e.line) for e in file_list.entries]
    return filelist.FileList(list_path=file_list.list_path, entries=entries, folder=True, class_names=list(class_names))
