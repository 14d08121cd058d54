"""Decoupled contrastive loss (DCL / DCLW) against a plain NumPy reference: values, the
"nothing learned" value, gradients, accuracy, and the multi-replica path."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import atexit
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The multi-replica check needs 2 logical CPU devices, which TensorFlow accepts only before it has
# initialised its devices: it runs in a fresh process. That process is started here, before this
# module imports TensorFlow, so that its TensorFlow start-up overlaps the in-process tests.
_MULTI_REPLICA_SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from simclr_tf.training.loss import dcl_loss, von_mises_fisher_weight

    replicas, n_local, temperature = 2, 3, 0.2
    rng = np.random.default_rng(0)
    z_a = rng.normal(size=(replicas * n_local, 8)).astype(np.float32)
    z_b = (z_a + 0.8 * rng.normal(size=z_a.shape)).astype(np.float32)
    variants = {"dcl": None, "dclw": von_mises_fisher_weight(0.5),
                "dclw_undetached": von_mises_fisher_weight(0.5, stop_gradient=False)}

    def loss_and_grads(a, b, scale):
        out = {}
        for name, weight_fn in variants.items():
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                loss, acc = dcl_loss(a, b, temperature, weight_fn=weight_fn)
                scaled = loss / scale
            out[name] = (loss, acc, *tape.gradient(scaled, [a, b]))
        return out

    # Single device, whole batch.
    single = loss_and_grads(tf.constant(z_a), tf.constant(z_b), 1.0)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    def shard(z):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(z[ctx.replica_id_in_sync_group * n_local:
                                      (ctx.replica_id_in_sync_group + 1) * n_local]))
    # Gradients of the replicas add up, so each contributes its share of the mean.
    step = lambda a, b: loss_and_grads(a, b, tf.distribute.get_replica_context().num_replicas_in_sync)
    multi = tf.function(lambda a, b: strategy.run(step, args=(a, b)))(shard(z_a), shard(z_b))

    def relative_difference(got, want):
        return np.linalg.norm(got - want) / np.linalg.norm(want)

    for name in variants:
        loss, acc, grad_a, grad_b = [t.numpy() for t in single[name]]
        local = [[x.numpy() for x in strategy.experimental_local_results(o)] for o in multi[name]]
        np.testing.assert_allclose(np.mean(local[0]), loss, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(np.mean(local[1]), acc, rtol=1e-6, err_msg=name)
        for got, want in [(np.concatenate(local[2]), grad_a), (np.concatenate(local[3]), grad_b)]:
            assert relative_difference(got, want) < 1e-4, (name, relative_difference(got, want))
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=name)
        # Replicas must differ (each has its own anchors), or the offsets were not applied.
        assert not np.allclose(local[0][0], local[0][1]), name
        print(name, "ok", relative_difference(np.concatenate(local[2]), grad_a), flush=True)
    print("MULTI_REPLICA_OK")
    """
)


class _Background:
    """A subprocess started now whose CompletedProcess-like result is collected later."""

    def __init__(self, args, timeout):
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.timeout = timeout
        self.process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        atexit.register(self._stop)  # e.g. when the test is deselected: do not leave it running

    def result(self):
        stdout, stderr = self.process.communicate(timeout=self.timeout)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, stdout, stderr)

    def _stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


_MULTI_REPLICA = _Background([sys.executable, "-c", _MULTI_REPLICA_SCRIPT], timeout=240)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from simclr_tf.training.loss import dcl_loss, nt_xent_loss, von_mises_fisher_weight  # noqa: E402


def reference_vmf_weights(z_a, z_b, sigma):
    """w_i = 2 - exp(s_ii / sigma) / mean_j exp(s_jj / sigma), from the DCLW paper, directly."""
    z_a = np.asarray(z_a, np.float64)
    z_b = np.asarray(z_b, np.float64)
    z_a = z_a / np.linalg.norm(z_a, axis=1, keepdims=True)
    z_b = z_b / np.linalg.norm(z_b, axis=1, keepdims=True)
    e = np.exp(np.sum(z_a * z_b, axis=1) / sigma)
    return 2.0 - e / e.mean()


def reference_dcl(z_a, z_b, temperature, sigma=None, weights=None):
    """Loss and accuracy anchor by anchor: the positive term, and an explicit log-sum-exp over the
    2N-2 candidates that are neither the anchor nor its positive (no masking constant).

    `sigma` applies the vMF weight; `weights` ([N], one per pair) overrides it with fixed values."""
    z_a = np.asarray(z_a, np.float64)
    z_b = np.asarray(z_b, np.float64)
    n = z_a.shape[0]
    if weights is None:
        weights = np.ones(n) if sigma is None else reference_vmf_weights(z_a, z_b, sigma)
    z = np.concatenate([z_a, z_b], axis=0)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    losses = []
    hits = 0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        negatives = np.array([z[i] @ z[k] / temperature for k in range(2 * n) if k not in (i, positive)])
        top = negatives.max()
        log_sum_exp = top + np.log(np.sum(np.exp(negatives - top)))
        losses.append(log_sum_exp - weights[i % n] * (z[i] @ z[positive]) / temperature)
        # Accuracy as NT-Xent's: the positive must beat every negative.
        hits += (z[i] @ z[positive]) / temperature > top
    return float(np.mean(losses)), hits / (2 * n)


def finite_difference_grads(loss_of, z_a, z_b, eps=1e-6):
    """Central differences of loss_of(z_a, z_b) (a NumPy float) in every coordinate."""
    grads = []
    for which in range(2):
        grad = np.zeros_like(z_a if which == 0 else z_b)
        for idx in np.ndindex(grad.shape):
            plus = [z_a.copy(), z_b.copy()]
            minus = [z_a.copy(), z_b.copy()]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            grad[idx] = (loss_of(*plus) - loss_of(*minus)) / (2 * eps)
        grads.append(grad)
    return grads


def random_pair(n, d, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(dtype), rng.normal(size=(n, d)).astype(dtype)


@pytest.mark.parametrize("n,d", [(2, 3), (3, 8), (7, 5), (16, 32)])
@pytest.mark.parametrize("temperature", [0.05, 0.2, 1.0])
def test_float64_values_match_reference(n, d, temperature):
    z_a, z_b = random_pair(n, d, seed=100 * n + d)
    loss, acc = dcl_loss(tf.constant(z_a), tf.constant(z_b), temperature)
    ref_loss, ref_acc = reference_dcl(z_a, z_b, temperature)
    assert loss.dtype == tf.float64 and loss.shape == () and acc.shape == ()
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=1e-12, atol=1e-12)
    assert acc.numpy() == pytest.approx(ref_acc)


@pytest.mark.parametrize("n", [2, 5, 16])
@pytest.mark.parametrize("sigma", [0.2, 0.5])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_vmf_weighted_values_match_reference(n, sigma, temperature):
    z_a, z_b = random_pair(n, 6, seed=n)
    z_b = z_a + 0.7 * z_b  # spread-out positive similarities, so the weights differ
    for stop_gradient in (True, False):
        loss, _ = dcl_loss(tf.constant(z_a), tf.constant(z_b), temperature,
                           weight_fn=von_mises_fisher_weight(sigma, stop_gradient=stop_gradient))
        np.testing.assert_allclose(loss.numpy(), reference_dcl(z_a, z_b, temperature, sigma=sigma)[0],
                                   rtol=1e-12, atol=1e-12)


def test_vmf_weights_formula_and_mean_one():
    z_a, z_b = random_pair(9, 4, seed=1)
    z_b = z_a + 0.5 * z_b
    norm = lambda z: z / np.linalg.norm(z, axis=1, keepdims=True)  # noqa: E731
    s = tf.constant(np.sum(norm(z_a) * norm(z_b), axis=1))
    w = von_mises_fisher_weight(0.5)(s, s).numpy()
    np.testing.assert_allclose(w, reference_vmf_weights(z_a, z_b, 0.5), rtol=1e-12)
    assert w.mean() == pytest.approx(1.0, abs=1e-12)
    assert np.ptp(w) > 0.1
    # A tiny sigma would overflow a naive exp; the log-sum-exp form stays finite.
    w_small = von_mises_fisher_weight(0.001)(s, s).numpy()
    assert np.all(np.isfinite(w_small)) and w_small.mean() == pytest.approx(1.0, abs=1e-9)


def test_float32_values_match_reference():
    z_a, z_b = random_pair(12, 16, seed=5, dtype=np.float32)
    loss, acc = dcl_loss(z_a, z_b, 0.1)
    assert loss.dtype == tf.float32 and acc.dtype == tf.float32
    np.testing.assert_allclose(loss.numpy(), reference_dcl(z_a, z_b, 0.1)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [2, 3, 8, 64])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_identical_embeddings_give_log_2n_minus_2(n, temperature):
    z = tf.ones((n, 8)) * 3.0
    for weight_fn in (None, von_mises_fisher_weight()):
        loss, _ = dcl_loss(z, z, temperature, weight_fn=weight_fn)
        assert abs(loss.numpy() - np.log(2 * n - 2)) < 1e-5
    z64 = tf.ones((n, 8), tf.float64)
    assert abs(dcl_loss(z64, z64, temperature)[0].numpy() - np.log(2 * n - 2)) < 1e-12


def test_loss_is_negative_at_its_lower_bound():
    # Two images on opposite poles: every positive has s = 1, every negative s = -1, so each
    # anchor's loss is -1/T + ln(2 exp(-1/T)) = ln 2 - 2/T = ln(2N-2) - 2/T.
    z = np.array([[1.0, 0.0], [-1.0, 0.0]])
    for temperature in (0.1, 0.5, 1.0):
        loss, acc = dcl_loss(tf.constant(z), tf.constant(z), temperature)
        assert loss.numpy() == pytest.approx(np.log(2) - 2 / temperature, abs=1e-12)
        assert acc.numpy() == 1.0
    assert dcl_loss(tf.constant(z), tf.constant(z), 0.1)[0].numpy() < 0


def test_below_nt_xent_and_same_accuracy():
    # Removing exp(s_ip / T) from every denominator lowers every anchor's loss.
    for seed in range(5):
        z_a, z_b = random_pair(10, 8, seed=seed, dtype=np.float32)
        z_b = z_a + (0.3 + 0.3 * seed) * z_b
        dcl, dcl_acc = dcl_loss(z_a, z_b, 0.2)
        nt, nt_acc = nt_xent_loss(z_a, z_b, 0.2)
        assert dcl.numpy() < nt.numpy()
        assert dcl_acc.numpy() == nt_acc.numpy()
        assert dcl_acc.numpy() == pytest.approx(reference_dcl(z_a, z_b, 0.2)[1])


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("weighting", ["none", "vmf", "vmf_detached"])
def test_float64_gradients_match_finite_differences(n, temperature, weighting):
    z_a, z_b = random_pair(n, 3, seed=20 + n)
    z_b = z_a + 0.8 * z_b
    weight_fn = None
    if weighting == "none":
        loss_of = lambda a, b: reference_dcl(a, b, temperature)[0]  # noqa: E731
    elif weighting == "vmf":
        weight_fn = von_mises_fisher_weight(0.5, stop_gradient=False)
        loss_of = lambda a, b: reference_dcl(a, b, temperature, sigma=0.5)[0]  # noqa: E731
    else:
        # Detached: the weights are constants, frozen at the point where we differentiate.
        weight_fn = von_mises_fisher_weight(0.5, stop_gradient=True)
        frozen = reference_vmf_weights(z_a, z_b, 0.5)
        loss_of = lambda a, b: reference_dcl(a, b, temperature, weights=frozen)[0]  # noqa: E731
    a, b = tf.constant(z_a), tf.constant(z_b)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        loss, _ = dcl_loss(a, b, temperature, weight_fn=weight_fn)
    got = tape.gradient(loss, [a, b])
    want = finite_difference_grads(loss_of, z_a, z_b)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-6, atol=1e-7 * np.abs(w).max())


def test_detaching_the_weight_changes_the_gradient():
    z_a, z_b = random_pair(4, 3, seed=3)
    z_b = z_a + 0.8 * z_b
    grads = []
    for stop_gradient in (True, False):
        a = tf.constant(z_a)
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss, _ = dcl_loss(a, z_b, 0.5, weight_fn=von_mises_fisher_weight(0.5, stop_gradient))
        grads.append(tape.gradient(loss, a).numpy())
    assert not np.allclose(*grads)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_inputs_computed_in_float32(dtype):
    z_a, z_b = random_pair(5, 8, seed=3, dtype=np.float32)
    a, b = tf.cast(z_a, dtype), tf.cast(z_b, dtype)
    loss, acc = dcl_loss(a, b, 0.1, weight_fn=von_mises_fisher_weight())
    assert loss.dtype == tf.float32 and acc.dtype == tf.float32
    ref = reference_dcl(tf.cast(a, tf.float64).numpy(), tf.cast(b, tf.float64).numpy(), 0.1, sigma=0.5)[0]
    np.testing.assert_allclose(loss.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_works_in_tf_function_with_unknown_batch():
    fn = tf.function(
        lambda a, b, t: dcl_loss(a, b, t, weight_fn=von_mises_fisher_weight()),
        input_signature=[tf.TensorSpec([None, 8], tf.float32)] * 2 + [tf.TensorSpec([], tf.float32)],
    )
    z_a, z_b = random_pair(5, 8, seed=4, dtype=np.float32)
    loss, _ = fn(z_a, z_b, tf.constant(0.5))
    np.testing.assert_allclose(loss.numpy(), reference_dcl(z_a, z_b, 0.5, sigma=0.5)[0], rtol=1e-5)


def test_single_image_refused():
    with pytest.raises(ValueError, match="at least 2"):
        dcl_loss(tf.ones((1, 4)), tf.ones((1, 4)), 0.1)


def test_multi_replica_matches_single_device():
    result = _MULTI_REPLICA.result()
    assert result.returncode == 0 and "MULTI_REPLICA_OK" in result.stdout, (
        result.stdout[-2000:] + result.stderr[-4000:])
