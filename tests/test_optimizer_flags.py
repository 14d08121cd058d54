"""The optimiser from flags (tasks/optimizer_flags.py) and what the epoch rows report about it."""
import contextlib
import io
import os
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from simclr_tf.training import callbacks as cb
from tasks import optimizer_flags as of


def _flags(**overrides):
    values = dict(optimizer=None, learning_rate=None, lr_scaling=None, batch_size=256, num_epochs=100,
                  warmup_epochs=None, warmup_steps=None, weight_decay=None, momentum=0.9)
    return types.SimpleNamespace(**{**values, **overrides})


def test_an_explicit_adam_learning_rate_is_used_as_given_unless_scaling_is_asked_for():
    assert of.peak_learning_rate(_flags(optimizer="adam", learning_rate=1e-3), of.CLASSIFICATION_DEFAULTS) == 1e-3
    assert of.peak_learning_rate(_flags(optimizer="adamw", learning_rate=2e-4), of.PRETRAIN_DEFAULTS) == 2e-4
    scaled = of.peak_learning_rate(_flags(optimizer="adam", learning_rate=1e-3, lr_scaling="linear", batch_size=512),
                                   of.SEGMENTATION_DEFAULTS)
    assert scaled == pytest.approx(2e-3)
    # LARS and SGD scale as before: 0.075 x sqrt(256) for pretraining, 0.1 x B/256 for fine-tuning (the
    # classification default, and segmentation's with an explicit --optimizer=sgd); segmentation's default
    # (Adam) is 1e-3 at any batch.
    assert of.peak_learning_rate(_flags(), of.PRETRAIN_DEFAULTS) == pytest.approx(1.2)
    assert of.peak_learning_rate(_flags(), of.CLASSIFICATION_DEFAULTS) == pytest.approx(0.1)
    for defaults in (of.CLASSIFICATION_DEFAULTS, of.SEGMENTATION_DEFAULTS):
        assert of.peak_learning_rate(_flags(optimizer="sgd", batch_size=32), defaults) == pytest.approx(0.0125)
    assert of.peak_learning_rate(_flags(batch_size=32), of.SEGMENTATION_DEFAULTS) == pytest.approx(1e-3)


def _note(defaults, **overrides):
    flag_values = _flags(batch_size=32, **overrides)
    return of.describe_optimizer(flag_values, defaults, of.peak_learning_rate(flag_values, defaults))


def test_the_fine_tuning_defaults_are_what_the_readme_says_and_the_first_line_names_them():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    start = readme.index("### Fine-tuning defaults")
    section = readme[start:readme.index("\n#", start + 1)]
    cls, seg = of.CLASSIFICATION_DEFAULTS, of.SEGMENTATION_DEFAULTS
    for task, defaults, rule in (("classification", cls, "x batch/256"), ("segmentation", seg, "not scaled")):
        base_lr = defaults.base_lr[defaults.optimizer]
        stated = (f"{task}: `--optimizer={defaults.optimizer} --learning_rate={base_lr:g}` ({rule}), "
                  f"`--warmup_epochs={defaults.warmup_epochs}`, `--weight_decay={defaults.weight_decay:g}`")
        assert stated in section, stated
    assert _note(seg) == "optimizer adam (the segmentation default), peak lr 0.001 (default 0.001, unscaled)"
    assert _note(cls) == ("optimizer sgd with Nesterov momentum (the classification default), peak lr 0.0125 "
                          "(default 0.1 x 32/256)")
    # Explicit choices work as before: SGD with Nesterov momentum at 0.1 x B/256, Adam's rate as given.
    assert _note(seg, optimizer="sgd") == ("optimizer sgd with Nesterov momentum (--optimizer), peak lr 0.0125 "
                                           "(default 0.1 x 32/256)")
    assert _note(cls, optimizer="adam", learning_rate=1e-4) == (
        "optimizer adam (--optimizer), peak lr 0.0001 (--learning_rate 0.0001, unscaled)")
    optimizer, _ = of.optimizer_from_flags(_flags(optimizer="sgd", batch_size=32), 10, seg, announce=False)
    assert optimizer.nesterov is True


def _warmup(**overrides):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        steps = of.warmup_steps(_flags(**overrides), 10, of.PRETRAIN_DEFAULTS)
    return steps, stdout.getvalue(), stderr.getvalue()


def test_the_default_warmup_is_ten_epochs_but_at_most_a_tenth_of_a_short_run_and_says_so():
    assert _warmup(num_epochs=100) == (100, "", "")
    assert _warmup(num_epochs=300)[0] == 100
    steps, said, _ = _warmup(num_epochs=20)
    assert steps == 20 and "10% of this 20-epoch run" in said
    assert _warmup(num_epochs=2)[0] == 2


def test_an_explicit_warmup_is_honoured_and_one_covering_most_of_the_run_is_warned_about():
    assert _warmup(num_epochs=20, warmup_epochs=5) == (50, "", "")
    steps, _, warned = _warmup(num_epochs=20, warmup_epochs=15)
    assert steps == 150 and "covers most of the run" in warned
    assert _warmup(num_epochs=20, warmup_steps=7)[0] == 7


def test_the_epoch_row_reports_the_rate_of_the_last_step_and_the_training_time_only():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    schedule = keras.optimizers.schedules.PolynomialDecay(1.0, decay_steps=8, end_learning_rate=0.0)
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    data = tf.data.Dataset.from_tensors((np.ones((4, 2), np.float32), np.ones((4, 1), np.float32))).repeat()
    slow_evaluation = cb.EpochMetrics(lambda: time.sleep(3.0) or {"val_x": 1.0})
    stats = cb.EpochStats(images_per_epoch=16, printer=lambda line: None)
    rows = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: rows.append(dict(logs)))
    start = time.perf_counter()
    model.fit(data, epochs=2, steps_per_epoch=4, verbose=0, callbacks=[slow_evaluation, stats, record])
    wall = time.perf_counter() - start
    # Steps 0-3 in epoch 1: the last one ran at step 3 of the decay from 1 to 0 over 8 steps.
    assert rows[0]["learning_rate"] == pytest.approx(1.0 - 3 / 8)
    assert rows[1]["learning_rate"] == pytest.approx(1.0 - 7 / 8)
    # The 2 x 3 s of evaluation are not training time.
    assert rows[0]["seconds"] + rows[1]["seconds"] < wall - 5.5
    assert rows[1]["images_per_second"] == pytest.approx(16 / rows[1]["seconds"])
