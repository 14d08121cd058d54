"""A NaN or infinite loss stops training with a clear error and keeps the last good checkpoint."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.training import callbacks as cb


def _batches(poisoned_batch, num_batches=6, batch_size=4):
    """Regression batches; every input of batch number `poisoned_batch` is NaN."""
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(num_batches, batch_size, 3)).astype(np.float32)
    xs[poisoned_batch] = np.nan
    ys = xs.sum(axis=2, keepdims=True)
    return tf.data.Dataset.from_tensor_slices((xs, ys))


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    directory = str(tmp_path / "checkpoints")
    checkpoint = cb.ResumableCheckpoint(directory, fingerprint="f")
    # Two batches per epoch: epochs 1 and 2 are clean, the first batch of epoch 3 is NaN.
    with pytest.raises(cb.NonFiniteLossError, match="nan at step 1 .*last good checkpoint is kept"):
        model.fit(_batches(poisoned_batch=4), epochs=3, steps_per_epoch=2, verbose=0,
                  callbacks=[cb.NonFiniteLossGuard(), checkpoint])
    state = cb.read_checkpoint_state(directory)
    assert state["epoch"] == 2 and [row["epoch"] for row in state["history"]] == [1, 2]
    assert set(os.listdir(directory)) == {"state.json", "state.previous.json", "epoch-0001.weights.h5",
                                          "epoch-0002.weights.h5"}
    # The kept weights are finite and load back.
    restored = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    restored.compile(optimizer="sgd", loss="mse")
    cb.restore_checkpoint(restored, directory, state)
    assert all(np.isfinite(w).all() for w in restored.get_weights())
    assert json.load(open(os.path.join(directory, "state.json")))["fingerprint"] == "f"


def test_an_epoch_with_a_non_finite_metric_is_never_checkpointed(tmp_path):
    directory = str(tmp_path / "checkpoints")
    checkpoint = cb.ResumableCheckpoint(directory, fingerprint="f")
    checkpoint.set_model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
    checkpoint.on_epoch_end(0, {"loss": float("inf")})
    assert cb.read_checkpoint_state(directory) is None
