"""Labelled images for the tasks that need labels (classification, linear_eval, embed, the kNN
monitor, evaluate): `path,label` lists or CIFAR-10, and class names."""
import dataclasses
import os

import numpy as np

from simclr_tf.data import filelist
from simclr_tf.data.cifar10 import load_cifar10
from simclr_tf.data.sources import ArrayImageSource
from simclr_tf.errors import UserError
from simclr_tf.evaluation.metrics import default_class_names

from .console import say, warn
from .flag_use import given
from .image_files import image_source

CLASS_NAMES_FILE = "classes.txt"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# List flags that --cifar10 replaces.
_LIST_FLAGS = ("train_file_path", "val_file_path", "knn_train_file_path")


@dataclasses.dataclass
class LabelledImages:
    """An image source with one integer label per image, and where it came from (for messages)."""

    source: object
    labels: np.ndarray
    origin: str

    def __len__(self):
        return len(self.labels)


@dataclasses.dataclass
class ClassificationData:
    train: LabelledImages
    val: object  # LabelledImages or None
    num_classes: int
    class_names: list


def read_labelled_list(flag_values, list_path, flag_name, num_classes, input_size):
    """A checked `path,label` list as LabelledImages (UserError naming the line and file otherwise)."""
    image_list = filelist.read_file_list(list_path, filelist.CLASSIFICATION, num_classes=num_classes,
                                         flag_name=flag_name)
    return LabelledImages(image_source(flag_values, image_list.paths, input_size), np.asarray(image_list.labels, np.int64),
                          f"{flag_name}={list_path}")


def load_classification_data(flag_values, input_size, need_val=False):
    """Training (and validation) images and labels from the lists, or CIFAR-10 with --cifar10.

    Every list is checked before anything is written. Without --num_classes the number of classes
    is the largest training label + 1 (said). Class names come from a `classes.txt` beside the
    training list (one name per line, line order = label) when it names exactly that many classes.
    """
    if flag_values.cifar10:
        return cifar10_data(flag_values, input_size)
    num_classes = flag_values.num_classes
    train = read_labelled_list(flag_values, flag_values.train_file_path, "--train_file_path", num_classes, input_size)
    if num_classes is None:
        num_classes = int(train.labels.max()) + 1
        if num_classes < 2:
            raise UserError(f"--train_file_path={flag_values.train_file_path}: every label is 0; a classifier needs "
                            "at least 2 classes (set --num_classes).")
        say(f"--num_classes not given: using {num_classes} (largest label in --train_file_path + 1)")
    val = None
    if flag_values.val_file_path:
        val = read_labelled_list(flag_values, flag_values.val_file_path, "--val_file_path", num_classes, input_size)
    elif need_val:
        raise UserError(f"--val_file_path is required for --task={flag_values.task} (a 'path,label' list).")
    return ClassificationData(train, val, num_classes, class_names_beside(flag_values.train_file_path, num_classes))


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


def class_names_beside(list_path, num_classes):
    """Names from classes.txt in the list's folder when it has exactly `num_classes` lines, else '0', '1', ..."""
    path = os.path.join(os.path.dirname(os.path.abspath(list_path or ".")), CLASS_NAMES_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8-sig") as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) == num_classes and len(set(names)) == num_classes:
            say(f"Class names from {path}: {', '.join(names)}")
            return names
        say(f"Ignoring {path}: it names {len(names)} classes, not {num_classes} distinct ones")
    return default_class_names(num_classes)
