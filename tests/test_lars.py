"""LARS against a NumPy hand computation, plus config and checkpoint round-trips."""

import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from simclr_tf.training.lars import LARS
from simclr_tf.training.schedules import warmup_cosine_schedule


def numpy_lars_step(w, g, v, lr, momentum, wd, eta, adapt, nesterov=False):
    """One step of the official SimCLR LARS (classic momentum), written out."""
    w = w.astype(np.float64)
    g = g.astype(np.float64)
    if adapt:
        g = g + wd * w
        w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
        trust = eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
    else:
        trust = 1.0
    scaled_lr = lr * trust
    next_v = momentum * v + scaled_lr * g
    update = momentum * next_v + scaled_lr * g if nesterov else next_v
    return w - update, next_v


def make_variables(rng):
    kernel = keras.Variable(rng.normal(size=(3, 2)).astype(np.float32), name="kernel")
    bias = keras.Variable(rng.normal(size=(2,)).astype(np.float32), name="bias")
    gamma = keras.Variable(1.0 + 0.1 * rng.normal(size=(2,)).astype(np.float32), name="gamma")
    return [kernel, bias, gamma]


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("eta", [0.001, 0.5])
def test_two_steps_match_hand_computation(nesterov, eta):
    rng = np.random.default_rng(0)
    variables = make_variables(rng)
    lr, momentum, wd = 0.3, 0.9, 0.05
    opt = LARS(learning_rate=lr, momentum=momentum, weight_decay=wd, trust_coefficient=eta, nesterov=nesterov)
    opt.build(variables)
    assert opt._adapt == (True, False, False)

    weights = [v.numpy().astype(np.float64) for v in variables]
    velocities = [np.zeros_like(w) for w in weights]
    for _ in range(2):
        grads = [rng.normal(size=w.shape).astype(np.float32) for w in weights]
        opt.apply(grads, variables)
        for i, adapt in enumerate([True, False, False]):
            weights[i], velocities[i] = numpy_lars_step(
                weights[i], grads[i], velocities[i], lr, momentum, wd, eta, adapt, nesterov
            )
        for var, slot, w, v in zip(variables, opt._momentums, weights, velocities):
            np.testing.assert_allclose(var.numpy(), w, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(slot.numpy(), v, rtol=1e-5, atol=1e-7)


def test_excluded_variables_get_plain_momentum_sgd():
    rng = np.random.default_rng(1)
    variables = make_variables(rng)
    start = [v.numpy() for v in variables]
    # A large weight decay would be obvious on the bias and gamma if it leaked into them.
    opt = LARS(learning_rate=0.1, momentum=0.9, weight_decay=10.0)
    opt.build(variables)
    g1 = [np.ones(v.shape, np.float32) for v in variables]
    g2 = [2 * np.ones(v.shape, np.float32) for v in variables]
    opt.apply(g1, variables)
    opt.apply(g2, variables)
    # v1 = 0.1 * 1; v2 = 0.9 * v1 + 0.1 * 2 = 0.29; w = w0 - v1 - v2.
    for i in (1, 2):
        np.testing.assert_allclose(variables[i].numpy(), start[i] - 0.1 - 0.29, rtol=1e-6)


def test_exclude_from_adaptation_by_path_substring():
    rng = np.random.default_rng(2)
    variables = make_variables(rng)
    start = variables[0].numpy()
    opt = LARS(learning_rate=0.1, momentum=0.0, weight_decay=10.0, exclude_from_adaptation=["kern"])
    opt.build(variables)
    assert opt._adapt == (False, False, False)
    grad = np.full((3, 2), 0.5, np.float32)
    opt.apply([grad, np.zeros(2, np.float32), np.zeros(2, np.float32)], variables)
    np.testing.assert_allclose(variables[0].numpy(), start - 0.1 * grad, rtol=1e-6)


def test_zero_weight_norm_gives_trust_ratio_one():
    kernel = keras.Variable(np.zeros((3, 2), np.float32), name="kernel")
    opt = LARS(learning_rate=0.1, momentum=0.9, weight_decay=0.01, trust_coefficient=0.001)
    opt.build([kernel])
    grad = np.arange(6, dtype=np.float32).reshape(3, 2)
    opt.apply([grad], [kernel])
    # w = 0 so g' = g, and ||w|| = 0 gives trust ratio 1: a plain SGD step.
    np.testing.assert_allclose(kernel.numpy(), -0.1 * grad, rtol=1e-6)


def test_zero_gradient_norm_gives_trust_ratio_one_and_no_nan():
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(3, 2)).astype(np.float32)
    kernel = keras.Variable(w0, name="kernel")
    opt = LARS(learning_rate=0.1, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001)
    opt.build([kernel])
    grad = rng.normal(size=(3, 2)).astype(np.float32)
    opt.apply([grad], [kernel])
    w1, v1 = numpy_lars_step(w0, grad, np.zeros((3, 2)), 0.1, 0.9, 0.0, 0.001, True)
    opt.apply([np.zeros((3, 2), np.float32)], [kernel])
    # ||g|| = 0: the momentum alone moves the weights.
    w2, v2 = w1 - 0.9 * v1, 0.9 * v1
    assert np.all(np.isfinite(kernel.numpy()))
    np.testing.assert_allclose(kernel.numpy(), w2, rtol=1e-5)
    np.testing.assert_allclose(opt._momentums[0].numpy(), v2, rtol=1e-5)


def test_get_config_round_trip_with_schedule():
    schedule = warmup_cosine_schedule(1.2, total_steps=100, warmup_steps=10)
    opt = LARS(
        learning_rate=schedule,
        momentum=0.8,
        weight_decay=1e-4,
        trust_coefficient=0.002,
        nesterov=True,
        exclude_from_adaptation=["head"],
    )
    # Our decay must not reach the Keras base class, whose decoupled decay is another algorithm.
    assert opt.weight_decay is None
    config = opt.get_config()
    assert config["weight_decay"] == 1e-4
    for restored in (
        # Keras' from_config replaces the schedule dict in place: hand it a copy.
        LARS.from_config(copy.deepcopy(config)),
        keras.optimizers.deserialize(keras.optimizers.serialize(opt)),
    ):
        assert isinstance(restored, LARS)
        assert restored.weight_decay is None
        assert restored.lars_weight_decay == 1e-4
        assert restored.momentum == 0.8
        assert restored.trust_coefficient == 0.002
        assert restored.nesterov is True
        assert restored.exclude_from_adaptation == ("head",)
        assert float(restored.learning_rate) == pytest.approx(0.0)  # step 0 of the warmup
        assert restored.get_config() == config


def _small_model():
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )


def test_fit_and_save_load_weights_restores_momentum(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = rng.normal(size=(16, 2)).astype(np.float32)

    keras.utils.set_random_seed(0)
    model = _small_model()
    schedule = warmup_cosine_schedule(1.0, total_steps=10, warmup_steps=1)
    model.compile(LARS(schedule, weight_decay=1e-4), loss="mse")
    before = [w.numpy() for w in model.trainable_weights]
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)  # step 0 has lr 0, step 1 trains
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    slots = [v.numpy() for v in model.optimizer._momentums]
    assert all(np.any(s != 0) for s in slots)
    assert int(model.optimizer.iterations.numpy()) == 2

    path = str(tmp_path / "lars.weights.h5")
    model.save_weights(path)

    fresh = _small_model()
    fresh.compile(LARS(schedule, weight_decay=1e-4), loss="mse")
    fresh.optimizer.build(fresh.trainable_variables)
    fresh.load_weights(path)
    assert int(fresh.optimizer.iterations.numpy()) == 2
    for saved, restored in zip(slots, fresh.optimizer._momentums):
        np.testing.assert_array_equal(saved, restored.numpy())
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
