"""Damaged checkpoints (issue 9, item 4): every epoch's weights are verified before its state is written,
the previous epoch's checkpoint is kept, and a damaged newest checkpoint falls back to it."""
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.errors import UserError
from simclr_tf.training import callbacks as cb


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


def _data():
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, x.sum(1, keepdims=True))).batch(4).repeat()


def _train(directory, epochs, initial_epoch=0, history=None, model=None):
    model = model or _model()
    model.fit(_data(), epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=2, verbose=0, shuffle=False,
              callbacks=[cb.ResumableCheckpoint(directory, fingerprint={"seed": 0}, history=history)])
    return model


def _truncate(path, keep=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("trained") / "checkpoints")
    _train(directory, 3)
    return directory


@pytest.fixture
def three_epochs(trained, tmp_path):
    """A copy of a 3-epoch checkpoint directory for each test to damage."""
    return shutil.copytree(trained, str(tmp_path / "checkpoints"))


def test_the_last_two_verified_checkpoints_are_kept(three_epochs):
    assert sorted(os.listdir(three_epochs)) == ["epoch-0002.weights.h5", "epoch-0003.weights.h5", "state.json",
                                                "state.previous.json"]
    state = json.load(open(os.path.join(three_epochs, "state.json")))
    previous = json.load(open(os.path.join(three_epochs, "state.previous.json")))
    assert (state["epoch"], previous["epoch"]) == (3, 2)
    assert state["weights_bytes"] == os.path.getsize(os.path.join(three_epochs, "epoch-0003.weights.h5"))
    assert len(state["weights_sha256"]) == 64 and [row["epoch"] for row in state["history"]] == [1, 2, 3]
    assert cb.read_checkpoint_state(three_epochs)["epoch"] == 3


@pytest.mark.parametrize("damage", ["truncated state", "empty state", "state not a dict", "truncated weights",
                                    "changed weights", "missing weights"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(three_epochs, damage):
    state_path = os.path.join(three_epochs, "state.json")
    weights = os.path.join(three_epochs, "epoch-0003.weights.h5")
    if damage == "truncated state":
        _truncate(state_path)
    elif damage == "empty state":
        open(state_path, "w").close()
    elif damage == "state not a dict":
        open(state_path, "w").write("[1, 2]")
    elif damage == "truncated weights":
        _truncate(weights, 0.9)
    elif damage == "changed weights":
        data = bytearray(open(weights, "rb").read())
        data[-100] ^= 0xFF
        open(weights, "wb").write(bytes(data))
    else:
        os.remove(weights)
    reports = []
    state = cb.read_checkpoint_state(three_epochs, report=lambda problem, used: reports.append((problem, used)))
    assert state["epoch"] == 2 and [row["epoch"] for row in state["history"]] == [1, 2]
    (problem, used), = reports
    assert used is state
    assert ("state.json is damaged" if "state" in damage else "epoch-0003.weights.h5") in problem
    if damage not in ("truncated state", "truncated weights"):
        return
    # Resuming from it, the next save keeps the previous state and replaces the damaged one.
    model = _model()
    cb.restore_checkpoint(model, three_epochs, state)
    _train(three_epochs, 3, initial_epoch=2, history=state["history"], model=model)
    assert cb.read_checkpoint_state(three_epochs)["epoch"] == 3
    assert json.load(open(os.path.join(three_epochs, "state.previous.json")))["epoch"] == 2
    assert sorted(n for n in os.listdir(three_epochs) if n.endswith(".h5")) == ["epoch-0002.weights.h5",
                                                                               "epoch-0003.weights.h5"]


def test_nothing_usable_names_every_damaged_file(three_epochs):
    _truncate(os.path.join(three_epochs, "state.json"))
    _truncate(os.path.join(three_epochs, "epoch-0002.weights.h5"))
    with pytest.raises(cb.DamagedCheckpointError) as info:
        cb.read_checkpoint_state(three_epochs)
    assert "state.json is damaged" in str(info.value) and "epoch-0002.weights.h5 is damaged" in str(info.value)


def test_a_checkpoint_of_an_earlier_version_without_hashes_is_verified_by_reading_it(three_epochs):
    for name in ("state.json", "state.previous.json"):
        path = os.path.join(three_epochs, name)
        state = json.load(open(path))
        del state["weights_sha256"], state["weights_bytes"]
        json.dump(state, open(path, "w"))
    assert cb.read_checkpoint_state(three_epochs)["epoch"] == 3
    _truncate(os.path.join(three_epochs, "epoch-0003.weights.h5"), 0.9)
    assert cb.read_checkpoint_state(three_epochs)["epoch"] == 2


def test_weights_that_do_not_fit_the_model_are_a_damaged_checkpoint(three_epochs):
    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(cb.DamagedCheckpointError, match="epoch-0003.weights.h5 cannot be loaded into this model"):
        cb.restore_checkpoint(other, three_epochs, cb.read_checkpoint_state(three_epochs))


def test_weights_that_do_not_read_back_stop_training_and_keep_the_previous_checkpoint(three_epochs, monkeypatch):
    model = _model()
    checkpoint = cb.ResumableCheckpoint(three_epochs, fingerprint={"seed": 0})
    checkpoint.set_model(model)

    def short_write(path):
        open(path, "wb").write(b"\x89HDF\r\n\x1a\n" + bytes(100))  # what a full disk could leave
    monkeypatch.setattr(model, "save_weights", short_write)
    with pytest.raises(UserError, match="could not write a complete checkpoint .*the previous epoch's checkpoint"):
        checkpoint.on_epoch_end(3, {"loss": 1.0})
    assert cb.read_checkpoint_state(three_epochs)["epoch"] == 3
    assert not [n for n in os.listdir(three_epochs) if n.startswith(".tmp-") or n.startswith("epoch-0004")]
