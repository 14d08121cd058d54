"""Representation diagnostics on constructed embeddings whose values are known by hand, and the
warnings on constructed histories."""

import math

import numpy as np
import pytest
from scipy import special

from simclr_tf.evaluation.diagnostics import (
    DIAGNOSTIC_COLUMNS, alignment, chance_loss, collapse_warning, diagnose, effective_rank,
    normalized_std, normalized_std_per_dimension, shortcut_warning, stuck_loss_warning, uniformity,
    uniformity_of_uniform_sphere, warnings_for)


def sphere(n, d, seed):
    """n points uniform on the unit sphere of R^d (normalised Gaussians)."""
    z = np.random.default_rng(seed).normal(size=(n, d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def collapsed(n, d, seed):
    """n rows with the same direction and different lengths."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 3.0, size=(n, 1)) * rng.normal(size=(1, d))


def brute_force_uniformity(z, t):
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    terms = [math.exp(-t * float(np.sum((z[i] - z[j]) ** 2)))
             for i in range(len(z)) for j in range(i + 1, len(z))]
    return math.log(sum(terms) / len(terms))


def bessel_uniformity(d, t):
    """Closed form: E exp(k u) = Gamma(d/2) (k/2)^(1-d/2) I_{d/2-1}(k) for u = x.y, k = 2t."""
    k = 2.0 * t
    nu = d / 2.0 - 1.0
    # ive(nu, k) = I_nu(k) exp(-k)
    return -k + special.gammaln(d / 2.0) - nu * math.log(k / 2.0) + math.log(special.ive(nu, k)) + k


# ---------------------------------------------------------------------------------------------
# Collapse: all rows equal
# ---------------------------------------------------------------------------------------------

def test_collapsed_embedding_scores_zero_everywhere():
    z = collapsed(50, 16, seed=0)
    assert normalized_std(z) == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.abs(normalized_std_per_dimension(z)) < 1e-12)
    assert alignment(z, z) == pytest.approx(0.0, abs=1e-12)
    assert alignment(z, 3.0 * z[::-1], alpha=1) == pytest.approx(0.0, abs=1e-6)
    assert uniformity(z) == pytest.approx(0.0, abs=1e-12)
    assert uniformity(z, t=5.0) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Uniform on the sphere
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [4, 16, 128])
def test_sphere_std_is_one_over_sqrt_d(d):
    z = sphere(4000, d, seed=d)
    assert normalized_std(z) == pytest.approx(1 / math.sqrt(d), rel=0.02)
    assert normalized_std_per_dimension(z).shape == (d,)


def test_std_never_exceeds_one_over_sqrt_d():
    rng = np.random.default_rng(1)
    for d in (2, 8, 64):
        scales = rng.uniform(0.1, 3.0, size=d)
        for z in (rng.normal(size=(300, d)) * scales, rng.normal(size=(300, d)) + 2.0, sphere(300, d, d)):
            assert normalized_std(z) <= 1 / math.sqrt(d) + 1e-12


def test_std_of_a_k_dimensional_subsphere():
    # Uniform on the sphere of a k-dimensional coordinate subspace: k coordinates with std
    # 1/sqrt(k), d-k at 0, so z_std = sqrt(k) / d.
    k, d = 4, 64
    z = np.zeros((6000, d))
    z[:, :k] = sphere(6000, k, seed=2)
    assert normalized_std(z) == pytest.approx(math.sqrt(k) / d, rel=0.02)


@pytest.mark.parametrize("d", [2, 3, 5, 16, 64, 128])
@pytest.mark.parametrize("t", [1.0, 2.0])
def test_sphere_uniformity_value_matches_closed_form(d, t):
    assert uniformity_of_uniform_sphere(d, t) == pytest.approx(bessel_uniformity(d, t), abs=1e-8)


def test_sphere_uniformity_special_cases():
    # d = 3: u = x.y is uniform on [-1, 1], E exp(4u) = sinh(4) / 4.
    assert uniformity_of_uniform_sphere(3, 2.0) == pytest.approx(-4 + math.log(math.sinh(4) / 4), abs=1e-9)
    # d = 1: two points, distance^2 0 or 4 with probability 1/2.
    assert uniformity_of_uniform_sphere(1, 2.0) == pytest.approx(math.log((1 + math.exp(-8)) / 2))
    # Large d: u is about N(0, 1/d), so the value tends to -2t + (2t)^2 / (2d).
    assert uniformity_of_uniform_sphere(4096, 2.0) == pytest.approx(-4 + 16 / 8192, abs=1e-5)


@pytest.mark.parametrize("d", [3, 16])
def test_sampled_sphere_uniformity_near_analytic_value(d):
    z = sphere(2000, d, seed=10 + d)
    analytic = -4 + math.log(math.sinh(4) / 4) if d == 3 else bessel_uniformity(d, 2.0)
    assert uniformity(z, t=2.0) == pytest.approx(analytic, abs=0.02)


# ---------------------------------------------------------------------------------------------
# Uniformity: exact values and the chunked computation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_uniformity_matches_brute_force(t):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(9, 5)) * rng.uniform(0.1, 5, size=(9, 1))
    assert uniformity(z, t) == pytest.approx(brute_force_uniformity(z, t), abs=1e-12)


def test_uniformity_hand_values():
    # Two antipodal points: ||x - y||^2 = 4, so log exp(-4t) = -4t, the minimum.
    assert uniformity(np.array([[1.0, 0.0], [-2.0, 0.0]]), t=2.0) == pytest.approx(-8.0, abs=1e-12)
    # A regular simplex of n points (the n basis vectors, centred): every ||x - y||^2 = 2n / (n-1).
    n = 5
    simplex = np.eye(n) - 1.0 / n
    assert uniformity(simplex, t=2.0) == pytest.approx(-2.0 * 2 * n / (n - 1), abs=1e-12)


def test_chunked_uniformity_equals_one_block():
    z = np.random.default_rng(4).normal(size=(53, 6))
    whole = uniformity(z)
    for chunk_size in (1, 2, 7, 52, 53, 1000):
        assert uniformity(z, chunk_size=chunk_size) == pytest.approx(whole, abs=1e-12)


def test_uniformity_needs_two_samples():
    with pytest.raises(ValueError):
        uniformity(np.ones((1, 3)))


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_alignment_hand_values(alpha):
    z = sphere(20, 8, seed=5)
    assert alignment(z, 2.5 * z, alpha) == pytest.approx(0.0, abs=1e-12)
    assert alignment(z, -0.3 * z, alpha) == pytest.approx(2.0 ** alpha, abs=1e-12)
    # Orthogonal pairs: ||x - y|| = sqrt(2).
    e = np.eye(4)
    assert alignment(e, np.roll(e, 1, axis=1), alpha) == pytest.approx(2.0 ** (alpha / 2), abs=1e-12)


def test_alignment_two_is_two_minus_twice_the_cosine():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    cos = np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert alignment(a, b) == pytest.approx(np.mean(2 - 2 * cos), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Effective rank
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 5, 12])
def test_effective_rank_of_k_equal_singular_values_is_k(k):
    rng = np.random.default_rng(k)
    u, _ = np.linalg.qr(rng.normal(size=(40, k)))
    v, _ = np.linalg.qr(rng.normal(size=(16, k)))
    h = 3.0 * u @ v.T  # [40, 16], k singular values equal to 3, the others 0
    assert effective_rank(h) == pytest.approx(k, abs=1e-9)
    identity_like = np.zeros((30, 20))
    identity_like[:k, :k] = 7.0 * np.eye(k)
    assert effective_rank(identity_like) == pytest.approx(k, abs=1e-12)


def test_effective_rank_of_rank_one_and_hand_spectrum():
    rng = np.random.default_rng(7)
    assert effective_rank(np.outer(rng.normal(size=50), rng.normal(size=10))) == pytest.approx(1.0, abs=1e-12)
    # Singular values 3 and 1: p = (3/4, 1/4), erank = exp(-(3/4 ln 3/4 + 1/4 ln 1/4)).
    h = np.diag([3.0, 1.0, 0.0])
    assert effective_rank(h) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert effective_rank(np.zeros((4, 3))) == 0.0


def test_effective_rank_centring():
    # A constant offset is one direction uncentred, nothing once the column means are removed.
    assert effective_rank(np.ones((10, 4))) == pytest.approx(1.0)
    assert effective_rank(np.ones((10, 4)), center=True) == 0.0
    # k equal directions with zero column means, plus a large offset: centring recovers k exactly.
    k = 3
    rng = np.random.default_rng(8)
    a = rng.normal(size=(40, k))
    q, _ = np.linalg.qr(a - a.mean(axis=0))  # orthonormal columns, each of mean 0
    v, _ = np.linalg.qr(rng.normal(size=(6, k)))
    h = q @ v.T + 5.0
    assert effective_rank(h, center=True) == pytest.approx(k, abs=1e-9)
    assert effective_rank(h) < 1.5  # uncentred, the offset direction dominates


# ---------------------------------------------------------------------------------------------
# diagnose
# ---------------------------------------------------------------------------------------------

def test_diagnose_columns_and_values():
    z = sphere(300, 16, seed=9)
    h = np.zeros((300, 32))
    h[:, :5] = np.kron(np.ones((60, 1)), np.eye(5))  # 5 equal singular values
    out = diagnose(z, z, h)
    assert tuple(out) == DIAGNOSTIC_COLUMNS
    assert all(isinstance(v, float) for v in out.values())
    assert out["alignment"] == pytest.approx(0.0, abs=1e-12)
    assert out["z_std_healthy"] == pytest.approx(0.25)
    assert out["z_std"] == pytest.approx(normalized_std(z))
    assert out["uniformity"] == pytest.approx(uniformity(z))
    assert out["uniformity_healthy"] == pytest.approx(bessel_uniformity(16, 2.0), abs=1e-8)
    assert out["h_effective_rank"] == pytest.approx(5.0, abs=1e-9)
    assert "h_effective_rank" not in diagnose(z, -z)
    assert diagnose(z, -z)["alignment"] == pytest.approx(4.0)


# ---------------------------------------------------------------------------------------------
# Warnings
# ---------------------------------------------------------------------------------------------

def test_chance_loss():
    assert chance_loss(128) == pytest.approx(math.log(255))
    assert chance_loss(128, "dcl") == pytest.approx(math.log(254))
    with pytest.raises(ValueError):
        chance_loss(1)
    with pytest.raises(ValueError):
        chance_loss(8, "triplet")


def test_collapse_warning():
    d = 128
    healthy = 1 / math.sqrt(d)
    bad = [{"epoch": 1, "z_std": 0.08, "z_std_healthy": healthy},
           {"epoch": 2, "z_std": 0.01, "z_std_healthy": healthy}]
    message = collapse_warning(bad)
    assert message and "collaps" in message and "epoch 2" in message
    assert collapse_warning([{"epoch": 3, "z_std": 0.01}], dim=d)  # d given instead of the column
    assert collapse_warning([{"epoch": 3, "z_std": 0.01}]) is None  # d unknown
    assert collapse_warning([{"epoch": 1, "z_std": 0.07, "z_std_healthy": healthy}]) is None
    # Just below / above the threshold.
    assert collapse_warning([{"z_std": 0.199 * healthy, "z_std_healthy": healthy}])
    assert collapse_warning([{"z_std": 0.201 * healthy, "z_std_healthy": healthy}]) is None
    # Recovered runs are judged by their latest value; rows without z_std are skipped.
    assert collapse_warning(bad[::-1] + [{"epoch": 3, "loss": 4.0}]) is None
    assert collapse_warning([]) is None


def test_stuck_loss_warning():
    n, warmup = 128, 2
    chance = math.log(2 * n - 1)
    stuck = [{"epoch": e, "loss": chance + delta} for e, delta in enumerate([0.3, 0.0, -0.02, -0.05], 1)]
    message = stuck_loss_warning(stuck, n, warmup)
    assert message and "ln(2N-1)" in message and "epoch 4" in message
    learning = [{"epoch": e, "loss": v} for e, v in enumerate([5.5, 5.0, 4.5, 4.0], 1)]
    assert stuck_loss_warning(learning, n, warmup) is None
    # Still in warmup: no judgement yet.
    assert stuck_loss_warning(stuck[:2], n, warmup) is None
    # The tolerance: just below / above chance - 0.1.
    assert stuck_loss_warning([{"epoch": 5, "loss": chance - 0.099}], n, warmup)
    assert stuck_loss_warning([{"epoch": 5, "loss": chance - 0.101}], n, warmup) is None
    # DCL's chance level is ln(2N-2); a NaN or missing loss is skipped (epoch 5 is judged).
    dcl = [{"epoch": 5, "loss": math.log(2 * n - 2) - 0.05}, {"epoch": 6, "loss": float("nan")},
           {"epoch": 7}]
    assert "ln(2N-2)" in stuck_loss_warning(dcl, n, warmup, loss="dcl")
    learned = [{"epoch": 5, "loss": math.log(2 * n - 2) - 0.2}]
    assert stuck_loss_warning(learned, n, warmup, loss="dcl") is None


def with_knn(history, knn_of_epoch):
    """history with knn_accuracy measured every 2nd epoch ("" elsewhere, as in history.csv)."""
    return [dict(row, knn_accuracy=knn_of_epoch(row["epoch"]) if row["epoch"] % 2 == 0 else "")
            for row in history]


def test_shortcut_warning():
    # 12 epochs, contrastive accuracy rising 5 points per epoch; the window is epochs 3-12.
    history = [{"epoch": e, "contrastive_accuracy": 0.1 + 0.05 * e} for e in range(1, 13)]
    noisy_flat = with_knn(history, lambda e: 0.20 + 0.004 * (-1) ** (e // 2))
    message = shortcut_warning(noisy_flat)
    assert message and "kNN" in message and "shortcut" in message and "epochs 3-12" in message
    # kNN improving with the contrastive accuracy: silent.
    assert shortcut_warning(with_knn(history, lambda e: 0.2 + 0.02 * e)) is None
    # The flatness threshold (1 point over the window's first kNN value, at epoch 4).
    assert shortcut_warning(with_knn(history, lambda e: 0.2 + 0.009 * (e == 12)))
    assert shortcut_warning(with_knn(history, lambda e: 0.2 + 0.011 * (e == 12))) is None
    # kNN falling while the contrastive accuracy rises: fires too.
    assert shortcut_warning(with_knn(history, lambda e: 0.4 - 0.02 * e))
    # kNN never measured, contrastive accuracy flat, or a history shorter than the window: silent.
    assert shortcut_warning(history) is None
    flat_accuracy = [dict(row, contrastive_accuracy=0.3) for row in noisy_flat]
    assert shortcut_warning(flat_accuracy) is None
    assert shortcut_warning(noisy_flat[:9]) is None


def test_warnings_for_bad_and_healthy_histories():
    n, warmup, d = 64, 2, 128
    healthy_std = 1 / math.sqrt(d)
    bad = [{"epoch": e, "loss": math.log(2 * n - 1), "contrastive_accuracy": 0.05 * e,
            "knn_accuracy": 0.1 if e % 5 == 0 else "", "z_std": 0.001, "z_std_healthy": healthy_std}
           for e in range(1, 16)]
    messages = warnings_for(bad, n, warmup)
    assert len(messages) == 3 and all(isinstance(m, str) and m for m in messages)
    good = [{"epoch": e, "loss": 4.8 - 0.1 * e, "contrastive_accuracy": 0.05 * e,
             "knn_accuracy": 0.2 + 0.02 * e if e % 5 == 0 else "", "z_std": 0.08,
             "z_std_healthy": healthy_std} for e in range(1, 16)]
    assert warnings_for(good, n, warmup) == []
    # Rows as read back from history.csv: every value a string.
    as_csv = [{k: str(v) for k, v in row.items()} for row in bad]
    assert len(warnings_for(as_csv, n, warmup)) == 3
    assert warnings_for([], n, warmup) == []
