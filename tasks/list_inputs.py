"""The list flags (--train_file_path, --val_file_path, --test_file_path, --knn_train_file_path): a list
file or a folder of images (`simclr_tf.data.image_folders`), --write_list, and the content digests
that go into run fingerprints.

Every task reads its lists through `read_list`, which
* reads and checks the list or folder (UserError naming the flag otherwise) and says what a folder became;
* records the content digest of what it read, so that `content_fingerprint` (run_folder) can tell a
  run from a folder that gained, lost or relabelled images from a resumable one, as for an edited list;
* with --write_list, writes the list it read (see `write_target` for the file names).
"""
import os

from simclr_tf.data import filelist, image_folders
from simclr_tf.errors import UserError
from simclr_tf.evaluation.metrics import default_class_names
from simclr_tf.io_utils import write_text_atomic

from .console import say

CLASS_NAMES_FILE = "classes.txt"
# --write_list=PATH names the task's main list; the others get this before PATH's extension.
_WRITE_SUFFIX = {"--val_file_path": ".val", "--knn_train_file_path": ".knn_train"}
# {flag name: (the flag's value when read, content digest)} of the lists this process read.
_DIGESTS = {}


def read_list(flag_values, flag_name, kind, num_classes=None, class_names=None, reference=None):
    """The checked `FileList` of the list flag `flag_name` ('--val_file_path'), a list file or a folder.

    `class_names` (labelled reads): the classes its labels must mean; a folder's class folders must be
    exactly these (`reference` says whose they are, for the message) and are relabelled to match.
    """
    path = flag_values[flag_name[2:]].value
    if class_names is not None and path and os.path.isdir(path):
        num_classes = None  # the folder's classes are compared by name below, a clearer message than a count
    file_list = image_folders.read_list_or_folder(path, kind, num_classes=num_classes, flag_name=flag_name)
    if file_list.folder:
        if file_list.class_names and class_names is not None:
            file_list = image_folders.match_classes(file_list, list(class_names), flag_name, reference)
        names = file_list.class_names
        classes = f" in {len(names)} class folders ({image_folders.shown_names(names)})" if names else ""
        say(f"{flag_name}={path} is a folder: {len(file_list)} images{classes}")
    # The labels of an image list only feed the kNN monitor, which measures and never changes a result.
    _DIGESTS[flag_name] = (path, image_folders.content_digest(file_list, with_labels=kind != filelist.IMAGES))
    if flag_values.write_list:
        _write(flag_values, flag_name, file_list)
    return file_list


def content_fingerprint(flag_values, flag_names):
    """{'<flag>_content_sha256': digest} of the lists among `flag_names` (flag names without '--') that
    this process read with its current value: what the lists mean, beside the paths the flags hold."""
    result = {}
    for name in flag_names:
        recorded = _DIGESTS.get(f"--{name}")
        if recorded and recorded[0] == flag_values[name].value:
            result[f"{name}_content_sha256"] = recorded[1]
    return result


def write_target(write_list, flag_name, task):
    """Where --write_list=PATH puts the list of `flag_name`: PATH for the task's main list (the training
    list; the test list of embed and predict; the validation list of evaluate), PATH with '.val' or
    '.knn_train' before its extension for the others (frozen.txt -> frozen.val.txt)."""
    suffix = "" if task == "evaluate" else _WRITE_SUFFIX.get(flag_name, "")
    root, ext = os.path.splitext(write_list)
    return f"{root}{suffix}{ext}"


def _write(flag_values, flag_name, file_list):
    target = os.path.abspath(write_target(flag_values.write_list, flag_name, flag_values.task))
    if target == file_list.list_path:
        say(f"--write_list: {target} is {flag_name} itself; left as it is")
        return
    if os.path.isdir(target):
        raise UserError(f"--write_list={flag_values.write_list}: {target} is a folder; give the path of a list file.")
    origin = "folder" if file_list.folder else "list"
    header = [f"{flag_name} of simclr-tf --task={flag_values.task}: the {origin} {file_list.list_path}",
              f"{len(file_list)} images; absolute paths; labelled lines split at the last comma"]
    try:
        write_text_atomic(target, image_folders.list_text(file_list, header))
        if file_list.class_names:
            _write_class_names(target, file_list.class_names)
    except OSError as e:
        raise UserError(f"--write_list={flag_values.write_list}: cannot write {target} ({e.strerror or e}).") from None
    names = f" and its class names to {CLASS_NAMES_FILE} beside it" if file_list.class_names else ""
    say(f"--write_list: wrote the {len(file_list)} entries of {flag_name}{names} to {target} "
        f"(reuse: {flag_name}={target})")


def _write_class_names(list_path, names):
    """classes.txt beside a written list (the names a list's labels get, `class_names_beside`); an
    existing classes.txt with other names is never replaced."""
    path = os.path.join(os.path.dirname(list_path), CLASS_NAMES_FILE)
    if os.path.isfile(path):
        if _read_names(path) == list(names):
            return
        raise UserError(f"--write_list: {path} exists with other class names; the list's classes ({', '.join(names)}) "
                        "would not be read back. Write the list into another folder, or remove that file.")
    write_text_atomic(path, "".join(name + "\n" for name in names))


def _read_names(path):
    with open(path, encoding="utf-8-sig") as f:
        return [line.strip() for line in f if line.strip()]


def class_names_beside(list_path, num_classes, background_implied=False):
    """Names from classes.txt in the list's folder when it names exactly `num_classes` distinct classes
    (line order = label), else '0', '1', ... `background_implied` (segmentation, whose class 0 is the
    background): a classes.txt naming the num_classes - 1 other classes is accepted too, class 0 then
    being 'background' (the demo's classes.txt names its four shapes, label maps hold 0 to 4)."""
    path = os.path.join(os.path.dirname(os.path.abspath(list_path or ".")), CLASS_NAMES_FILE)
    if os.path.isfile(path):
        names = _read_names(path)
        if background_implied and len(names) == num_classes - 1 and "background" not in names:
            names = ["background"] + names
        if len(names) == num_classes and len(set(names)) == num_classes:
            say(f"Class names from {path}: {', '.join(names)}")
            return names
        say(f"Ignoring {path}: it names {len(names)} classes, not {num_classes} distinct ones")
    return default_class_names(num_classes)
