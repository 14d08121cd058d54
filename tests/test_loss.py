"""NT-Xent against a plain NumPy reference: values, gradients, accuracy, and the multi-replica path."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.training.loss import nt_xent_loss

REPO = Path(__file__).resolve().parents[1]


def reference_nt_xent(z_a, z_b, temperature):
    """Loss and accuracy written out anchor by anchor, with an explicit softmax over the 2N-1
    candidates that are not the anchor itself (no masking constant)."""
    z_a = np.asarray(z_a, np.float64)
    z_b = np.asarray(z_b, np.float64)
    n = z_a.shape[0]
    z = np.concatenate([z_a, z_b], axis=0)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    losses = []
    hits = 0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        candidates = [j for j in range(2 * n) if j != i]
        logits = np.array([z[i] @ z[j] / temperature for j in candidates])
        top = logits.max()
        log_sum_exp = top + np.log(np.sum(np.exp(logits - top)))
        losses.append(log_sum_exp - z[i] @ z[positive] / temperature)
        hits += candidates[int(np.argmax(logits))] == positive
    return float(np.mean(losses)), hits / (2 * n)


def finite_difference_grads(z_a, z_b, temperature, eps=1e-6):
    z_a = np.asarray(z_a, np.float64)
    z_b = np.asarray(z_b, np.float64)
    grads = []
    for which in range(2):
        base = [z_a.copy(), z_b.copy()]
        grad = np.zeros_like(base[which])
        for idx in np.ndindex(grad.shape):
            plus = [base[0].copy(), base[1].copy()]
            minus = [base[0].copy(), base[1].copy()]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            grad[idx] = (
                reference_nt_xent(*plus, temperature)[0] - reference_nt_xent(*minus, temperature)[0]
            ) / (2 * eps)
        grads.append(grad)
    return grads


def random_pair(n, d, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 2, 5, 16])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_values_match_reference(n, temperature):
    z_a, z_b = random_pair(n, 8, seed=n)
    loss, acc = nt_xent_loss(tf.constant(z_a), tf.constant(z_b), temperature)
    ref_loss, ref_acc = reference_nt_xent(z_a, z_b, temperature)
    assert loss.dtype == tf.float32 and loss.shape == () and acc.shape == ()
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=1e-5, atol=1e-6)
    assert acc.numpy() == pytest.approx(ref_acc)


@pytest.mark.parametrize("n", [2, 5])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_match_finite_differences(n, temperature, dtype):
    z_a, z_b = random_pair(n, 4, seed=10 + n)
    a = tf.constant(z_a.astype(dtype))
    b = tf.constant(z_b.astype(dtype))
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        loss, _ = nt_xent_loss(a, b, temperature)
    got = tape.gradient(loss, [a, b])
    want = finite_difference_grads(z_a, z_b, temperature)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-3, atol=1e-3 * np.abs(w).max())


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_identical_embeddings_give_log_2n_minus_1(n):
    z = tf.ones((n, 8)) * 3.0
    loss, _ = nt_xent_loss(z, z, 0.1)
    assert abs(loss.numpy() - np.log(2 * n - 1)) < 1e-5


def test_aligned_positives_beat_random():
    rng = np.random.default_rng(0)
    z_a = rng.normal(size=(16, 32)).astype(np.float32)
    aligned = z_a + 0.05 * rng.normal(size=z_a.shape).astype(np.float32)
    unrelated = rng.normal(size=z_a.shape).astype(np.float32)
    aligned_loss, _ = nt_xent_loss(z_a, aligned, 0.5)
    random_loss, _ = nt_xent_loss(z_a, unrelated, 0.5)
    assert aligned_loss.numpy() < random_loss.numpy()


def test_accuracy_one_for_separated_pairs_and_matches_reference_otherwise():
    rng = np.random.default_rng(1)
    base = np.eye(16, dtype=np.float32)
    z_a = base + 0.01 * rng.normal(size=base.shape).astype(np.float32)
    z_b = base + 0.01 * rng.normal(size=base.shape).astype(np.float32)
    _, acc = nt_xent_loss(z_a, z_b, 0.1)
    assert acc.numpy() == 1.0

    # Half-aligned pairs: some anchors find their positive, some do not.
    z_b = z_a + 1.2 * rng.normal(size=z_a.shape).astype(np.float32)
    _, acc = nt_xent_loss(z_a, z_b, 0.1)
    _, ref_acc = reference_nt_xent(z_a, z_b, 0.1)
    assert 0.0 < ref_acc < 1.0
    assert acc.numpy() == pytest.approx(ref_acc)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_inputs_computed_in_float32(dtype):
    z_a, z_b = random_pair(5, 8, seed=3)
    a = tf.cast(z_a, dtype)
    b = tf.cast(z_b, dtype)
    loss, acc = nt_xent_loss(a, b, 0.1)
    assert loss.dtype == tf.float32 and acc.dtype == tf.float32
    # The reference sees the same rounded inputs, so only float32 arithmetic separates them.
    ref_loss, _ = reference_nt_xent(tf.cast(a, tf.float64).numpy(), tf.cast(b, tf.float64).numpy(), 0.1)
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=1e-5)


def test_works_in_tf_function_with_unknown_batch():
    fn = tf.function(
        nt_xent_loss,
        input_signature=[
            tf.TensorSpec([None, 8], tf.float32),
            tf.TensorSpec([None, 8], tf.float32),
            tf.TensorSpec([], tf.float32),
        ],
    )
    z_a, z_b = random_pair(5, 8, seed=4)
    loss, _ = fn(z_a, z_b, tf.constant(0.5))
    np.testing.assert_allclose(loss.numpy(), reference_nt_xent(z_a, z_b, 0.5)[0], rtol=1e-5)


_MULTI_REPLICA_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from simclr_tf.training.loss import nt_xent_loss

    replicas, n_local, temperature = 2, 3, 0.5
    rng = np.random.default_rng(0)
    z_a = rng.normal(size=(replicas * n_local, 8)).astype(np.float32)
    z_b = rng.normal(size=(replicas * n_local, 8)).astype(np.float32)

    # Single device, whole batch.
    a, b = tf.constant(z_a), tf.constant(z_b)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        loss, acc = nt_xent_loss(a, b, temperature)
    grad_a, grad_b = tape.gradient(loss, [a, b])

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    def shard(z):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(z[ctx.replica_id_in_sync_group * n_local:
                                      (ctx.replica_id_in_sync_group + 1) * n_local]))
    def step(a, b):
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            loss, acc = nt_xent_loss(a, b, temperature)
            # Gradients of the replicas add up, so each contributes its share of the mean.
            scaled = loss / tf.distribute.get_replica_context().num_replicas_in_sync
        ga, gb = tape.gradient(scaled, [a, b])
        return loss, acc, ga, gb
    out = tf.function(lambda a, b: strategy.run(step, args=(a, b)))(shard(z_a), shard(z_b))
    local = [strategy.experimental_local_results(o) for o in out]
    np.testing.assert_allclose(np.mean([l.numpy() for l in local[0]]), loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(np.mean([x.numpy() for x in local[1]]), acc.numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.concatenate([g.numpy() for g in local[2]]), grad_a.numpy(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([g.numpy() for g in local[3]]), grad_b.numpy(),
                               rtol=1e-4, atol=1e-6)
    # Replicas must differ (each has its own anchors), or the offsets were not applied.
    assert not np.allclose(local[0][0].numpy(), local[0][1].numpy())
    print("MULTI_REPLICA_OK")
    """
)


def test_multi_replica_matches_single_device():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-c", _MULTI_REPLICA_SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0 and "MULTI_REPLICA_OK" in result.stdout, result.stderr[-4000:]
