"""CIFAR-10 as arrays: from a local copy of the python version, or through Keras' loader."""
import os

import numpy as np

from simclr_tf.data.safe_pickle import load_restricted
from simclr_tf.errors import UserError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
IMAGE_BYTES = 3 * 32 * 32


def load_cifar10(cifar10_dir=None):
    """(x_train, y_train, x_test, y_test): uint8 [N, 32, 32, 3] images and int64 labels.

    With `cifar10_dir`, reads the pickled batches of the "python version" archive from it (or
    from its `cifar-10-batches-py` subfolder); otherwise asks Keras, which downloads once.
    """
    if cifar10_dir:
        return _load_local(cifar10_dir)
    import keras
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as e:
        raise UserError(f"--cifar10: Keras could not load CIFAR-10 ({e}). Download the python version "
                        "and pass its folder with --cifar10_dir.") from None
    return x_train, y_train.reshape(-1).astype(np.int64), x_test, y_test.reshape(-1).astype(np.int64)


def _load_local(cifar10_dir):
    folder = cifar10_dir
    if not os.path.isfile(os.path.join(folder, TEST_BATCH)):
        folder = os.path.join(cifar10_dir, "cifar-10-batches-py")
    missing = [n for n in TRAIN_BATCHES + [TEST_BATCH] if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise UserError(f"--cifar10_dir={cifar10_dir}: missing {', '.join(missing)} "
                        "(expected the python version of CIFAR-10)")
    x_train, y_train = zip(*(_read_batch(os.path.join(folder, n)) for n in TRAIN_BATCHES))
    x_test, y_test = _read_batch(os.path.join(folder, TEST_BATCH))
    return np.concatenate(x_train), np.concatenate(y_train), x_test, y_test


def _read_batch(path):
    """(uint8 [N, 32, 32, 3], int64 [N]) of one batch file, read with a restricted unpickler (a crafted
    file cannot run code) and checked to be what CIFAR-10 holds; UserError naming the file otherwise."""
    try:
        with open(path, "rb") as f:
            batch = load_restricted(f, encoding="bytes")
        return _checked_batch(batch)
    except Exception as e:  # noqa: BLE001  (refused, damaged or not a CIFAR-10 batch: the file is at fault)
        raise UserError(f"--cifar10_dir: cannot read {path}: {e}") from None


def _checked_batch(batch):
    """The images and labels of an unpickled batch, refusing anything but CIFAR-10's own layout: a dict
    with a uint8 array `data` [N, 3072] and a list of N ints `labels` in [0, 9] (converting other shapes
    could expand a small crafted file into a huge array)."""
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError("not a CIFAR-10 batch (expected a dict with 'data' and 'labels')")
    data, labels = batch[b"data"], batch[b"labels"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == IMAGE_BYTES):
        raise ValueError(f"'data' is not a uint8 array of {IMAGE_BYTES} values per image")
    if not (isinstance(labels, (list, np.ndarray)) and len(labels) == len(data)):
        raise ValueError(f"'labels' is not a list of {len(data)} labels")
    if isinstance(labels, list) and not all(type(v) is int for v in labels):
        raise ValueError("'labels' holds something other than integers")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise ValueError("'labels' are not integers in [0, 9]")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)
