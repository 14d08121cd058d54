"""Labelled images for the tasks that need labels (classification, linear_eval, embed, the kNN
monitor, evaluate): `path,label` lists, folders of class folders or CIFAR-10, and class names."""
import dataclasses

import numpy as np

from simclr_tf.data import filelist
from simclr_tf.data.cifar10 import load_cifar10
from simclr_tf.data.sources import ArrayImageSource
from simclr_tf.errors import UserError

from .console import say, warn
from .flag_use import given
from .image_files import image_source
from .list_inputs import class_names_beside, read_list

# Without --num_classes, labels define the class count (largest + 1), which sizes the head, class names
# and the kNN vote. One typo (`img.png,1000000000000`) would make that 10^12: a count above
# SPARSITY x the distinct labels + SLACK is refused instead, naming the line of the largest label.
SPARSITY = 10
SLACK = 100
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# List flags that --cifar10 replaces.
_LIST_FLAGS = ("train_file_path", "val_file_path", "knn_train_file_path")


@dataclasses.dataclass
class LabelledImages:
    """An image source with one integer label per image, and where it came from (for messages)."""

    source: object
    labels: np.ndarray
    origin: str
    lines: object = None  # int64 [N]: line of each label in its list (None: not from a list, e.g. CIFAR-10)
    class_names: list = None  # read from a folder of class folders: their names (label i = class_names[i])

    def __len__(self):
        return len(self.labels)


@dataclasses.dataclass
class ClassificationData:
    train: LabelledImages
    val: object  # LabelledImages or None
    num_classes: int
    class_names: list


def read_labelled_list(flag_values, list_path, flag_name, num_classes, input_size, class_names=None, reference=None):
    """A checked `path,label` list, or folder of class folders, as LabelledImages (UserError naming the
    line and file otherwise). `class_names`: the classes a folder's class folders must be (`reference`:
    whose they are, for the message); `list_path` is the value of the flag `flag_name`."""
    image_list = read_list(flag_values, flag_name, filelist.CLASSIFICATION, num_classes=num_classes,
                           class_names=class_names, reference=reference)
    lines = None if image_list.folder else _lines(image_list)
    return LabelledImages(image_source(flag_values, image_list.paths, input_size),
                          np.asarray(image_list.labels, np.int64), f"{flag_name}={list_path}", lines,
                          image_list.class_names)


def labels_in_image_list(image_list, source, flag_name):
    """LabelledImages of an image list (`filelist.IMAGES`) whose every line carries a label >= 0, else
    None (the labels of a pretraining list, used by the kNN monitor)."""
    labels = image_list.labels
    if not labels or not all(label is not None and label >= 0 for label in labels):
        return None
    return LabelledImages(source, np.asarray(labels, np.int64), f"{flag_name}={image_list.list_path}",
                          _lines(image_list))


def _lines(image_list):
    return np.asarray([entry.line for entry in image_list.entries], np.int64)


def checked_class_count(labelled_sets, num_classes=None):
    """The number of classes that labelled sets (LabelledImages, or None to skip) make: --num_classes when
    given, else the largest label + 1. UserError naming the file and line of the offending label when a
    label is outside [0, num_classes), or, without --num_classes, when largest + 1 is more than
    SPARSITY x the number of distinct labels + SLACK (a typo would otherwise size arrays of 10^12 classes).
    """
    sets = [s for s in labelled_sets if s is not None and len(s.labels)]
    if not sets:
        return num_classes
    upper = np.inf if num_classes is None else num_classes
    for labelled in sets:
        bad = np.flatnonzero((labelled.labels < 0) | (labelled.labels >= upper))
        if len(bad):
            raise UserError(f"{_where(labelled, bad[0])}: label {labelled.labels[bad[0]]} is outside "
                            f"[0, {'...' if num_classes is None else num_classes - 1}] (--num_classes={num_classes})")
    if num_classes is not None:
        return int(num_classes)
    largest = max(sets, key=lambda labelled: int(labelled.labels.max()))
    position = int(np.argmax(largest.labels))
    count = int(largest.labels[position]) + 1
    distinct = len(np.unique(np.concatenate([labelled.labels for labelled in sets])))
    bound = SPARSITY * distinct + SLACK
    if count > bound:
        raise UserError(f"{_where(largest, position)}: label {count - 1} would make {count:,} classes, but the labels "
                        f"hold only {distinct} distinct values (at most {SPARSITY} x {distinct} + {SLACK} = {bound:,} "
                        "classes are inferred). Fix the label if it is a typo, or give --num_classes.")
    return count


def _where(labelled, index):
    """'--train_file_path=PATH, line N' of the label at `index` (just the origin when lines are unknown)."""
    if labelled.lines is None:
        return f"{labelled.origin}, image {index + 1}"
    return f"{labelled.origin}, line {int(labelled.lines[index])}"


def load_classification_data(flag_values, input_size, need_val=False):
    """Training (and validation) images and labels from the lists, or CIFAR-10 with --cifar10.

    Every list is checked before anything is written. Without --num_classes the number of classes
    is the largest training label + 1 (said). Class names come from a `classes.txt` beside the
    training list (one name per line, line order = label) when it names exactly that many classes; a
    training folder of class folders gives the classes' number and names, and a validation folder's
    class folders must have the same names.
    """
    if flag_values.cifar10:
        return cifar10_data(flag_values, input_size)
    num_classes = flag_values.num_classes
    train = read_labelled_list(flag_values, flag_values.train_file_path, "--train_file_path", num_classes, input_size)
    if train.class_names:
        num_classes, names = len(train.class_names), train.class_names
    else:
        if num_classes is None:
            num_classes = checked_class_count([train])
            if num_classes < 2:
                raise UserError(f"--train_file_path={flag_values.train_file_path}: every label is 0; a classifier "
                                "needs at least 2 classes (set --num_classes).")
            say(f"--num_classes not given: using {num_classes} (largest label in --train_file_path + 1)")
        names = class_names_beside(flag_values.train_file_path, num_classes)
    val = None
    if flag_values.val_file_path:
        val = read_labelled_list(flag_values, flag_values.val_file_path, "--val_file_path", num_classes, input_size,
                                 class_names=names, reference="the classes of --train_file_path")
    elif need_val:
        raise UserError(f"--val_file_path is required for --task={flag_values.task} (a 'path,label' list, or a "
                        "folder of class folders).")
    return ClassificationData(train, val, num_classes, names)


def warn_lists_ignored_with_cifar10(flag_values):
    """One warning line when list flags are given together with --cifar10 (which replaces them)."""
    ignored = [f"--{name}" for name in _LIST_FLAGS if given(flag_values, name)]
    if ignored:
        warn(f"--cifar10 replaces the file lists: {', '.join(ignored)} ignored")


def cifar10_splits(flag_values, input_size):
    """(training split, test split) of CIFAR-10 as LabelledImages."""
    warn_lists_ignored_with_cifar10(flag_values)
    x_train, y_train, x_test, y_test = load_cifar10(flag_values.cifar10_dir)
    return (LabelledImages(ArrayImageSource(x_train, input_size), y_train, "CIFAR-10 training split"),
            LabelledImages(ArrayImageSource(x_test, input_size), y_test, "CIFAR-10 test split"))


def cifar10_data(flag_values, input_size):
    """CIFAR-10 as ClassificationData: its training split, and its test split for validation."""
    if flag_values.num_classes not in (None, 10):
        raise UserError(f"--num_classes={flag_values.num_classes} but CIFAR-10 (--cifar10) has 10 classes.")
    train, test = cifar10_splits(flag_values, input_size)
    say(f"Data: CIFAR-10, {len(train)} training images; validation on its {len(test)} test images")
    return ClassificationData(train, test, 10, list(CIFAR10_CLASSES))
