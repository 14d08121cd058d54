"""CIFAR-10 as arrays: from a local copy of the python version, or through Keras' loader."""
import os
import pickle

import numpy as np

from simclr_tf.errors import UserError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"


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
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as e:
        raise UserError(f"--cifar10_dir: cannot read {path}: {e}") from None
    return data, labels
