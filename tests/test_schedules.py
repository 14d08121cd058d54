"""Learning-rate scaling, the warmup + cosine schedule, warmup step counts and build_optimizer."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import math

import keras
import pytest

from simclr_tf.training.lars import LARS
from simclr_tf.training.optimizers import build_optimizer
from simclr_tf.training.schedules import scaled_learning_rate, warmup_cosine_schedule, warmup_steps_for


def lr_at(schedule, step):
    return float(schedule(step))


def test_warmup_then_cosine_values():
    schedule = warmup_cosine_schedule(peak_lr=2.0, total_steps=110, warmup_steps=10)
    assert lr_at(schedule, 0) == 0.0
    assert lr_at(schedule, 5) == pytest.approx(1.0, rel=1e-6)  # linear warmup
    assert lr_at(schedule, 10) == pytest.approx(2.0, rel=1e-6)  # end of warmup: peak
    assert lr_at(schedule, 60) == pytest.approx(1.0, rel=1e-6)  # halfway through the cosine
    quarter = 2.0 * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert lr_at(schedule, 35) == pytest.approx(quarter, rel=1e-6)
    assert lr_at(schedule, 110) == pytest.approx(0.0, abs=1e-7)
    assert lr_at(schedule, 500) == pytest.approx(0.0, abs=1e-7)  # stays at 0 past the end


def test_schedule_is_monotonic_up_then_down():
    schedule = warmup_cosine_schedule(peak_lr=1.0, total_steps=50, warmup_steps=7)
    values = [lr_at(schedule, s) for s in range(51)]
    assert values[:8] == sorted(values[:8])
    assert values[7:] == sorted(values[7:], reverse=True)


def test_no_warmup_starts_at_peak():
    schedule = warmup_cosine_schedule(peak_lr=0.5, total_steps=100, warmup_steps=0)
    assert lr_at(schedule, 0) == pytest.approx(0.5, rel=1e-6)
    assert lr_at(schedule, 50) == pytest.approx(0.25, rel=1e-6)
    assert lr_at(schedule, 100) == pytest.approx(0.0, abs=1e-7)


def test_warmup_longer_than_training_is_clamped():
    schedule = warmup_cosine_schedule(peak_lr=1.0, total_steps=10, warmup_steps=25)
    assert lr_at(schedule, 0) == 0.0
    assert lr_at(schedule, 9) == pytest.approx(1.0, rel=1e-6)
    assert lr_at(schedule, 10) == pytest.approx(0.0, abs=1e-7)


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError):
        warmup_cosine_schedule(1.0, total_steps=0, warmup_steps=0)
    with pytest.raises(ValueError):
        warmup_cosine_schedule(1.0, total_steps=10, warmup_steps=-1)


def test_schedule_serialises():
    schedule = warmup_cosine_schedule(peak_lr=2.0, total_steps=110, warmup_steps=10)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    for step in (0, 5, 10, 60, 110):
        assert lr_at(restored, step) == lr_at(schedule, step)


def test_scaled_learning_rate():
    assert scaled_learning_rate(0.3, 256) == pytest.approx(0.3)
    assert scaled_learning_rate(1.0, 512, "linear") == pytest.approx(2.0)
    assert scaled_learning_rate(0.2, 64, "sqrt") == pytest.approx(1.6)
    assert scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(4.8)
    with pytest.raises(ValueError):
        scaled_learning_rate(0.1, 256, "cubic")
    with pytest.raises(ValueError):
        scaled_learning_rate(0.1, 0)


def test_warmup_steps_for():
    assert warmup_steps_for(10, 97) == 970
    assert warmup_steps_for(0.5, 15) == 8  # rounds
    assert warmup_steps_for(10, 97, warmup_steps=1000) == 1000  # explicit count wins
    assert warmup_steps_for(10, 97, warmup_steps=0) == 0
    with pytest.raises(ValueError):
        warmup_steps_for(-1, 10)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("lars", LARS),
        ("sgd", keras.optimizers.SGD),
        ("adam", keras.optimizers.Adam),
        ("adamw", keras.optimizers.AdamW),
        ("LARS", LARS),
    ],
)
def test_build_optimizer_classes(name, cls):
    schedule = warmup_cosine_schedule(1.0, 100, 10)
    for lr in (0.1, schedule):
        opt = build_optimizer(name, lr, weight_decay=1e-4, momentum=0.9, nesterov=True)
        assert type(opt) is cls


def test_build_optimizer_settings():
    lars = build_optimizer("lars", 0.1, weight_decay=1e-6, momentum=0.9)
    assert lars.lars_weight_decay == 1e-6 and lars.weight_decay is None and lars.momentum == 0.9
    sgd = build_optimizer("sgd", 0.1, momentum=0.9, nesterov=True)
    assert sgd.momentum == 0.9 and sgd.nesterov is True and sgd.weight_decay is None
    sgd = build_optimizer("sgd", 0.1, weight_decay=5e-4, momentum=0)
    assert sgd.weight_decay == 5e-4 and sgd.momentum == 0.0
    adamw = build_optimizer("adamw", 1e-3, weight_decay=0.05)
    assert adamw.weight_decay == 0.05


def test_build_optimizer_rejects_unknown_name():
    with pytest.raises(ValueError, match="rmsprop"):
        build_optimizer("rmsprop", 0.1)


def test_keras_weight_decay_skips_bn_and_biases():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.BatchNormalization()])
    opt = build_optimizer("sgd", 0.1, weight_decay=0.5, momentum=0.0)
    before = {v.path: v.numpy() for v in model.trainable_variables}
    opt.apply([keras.ops.zeros(v.shape) for v in model.trainable_variables], model.trainable_variables)
    for v in model.trainable_variables:
        # Zero gradients: only the decoupled decay w -= lr * wd * w can move a weight.
        expected = before[v.path] * (0.95 if v.name == "kernel" else 1.0)
        assert keras.ops.convert_to_numpy(v) == pytest.approx(expected, rel=1e-6), v.path
