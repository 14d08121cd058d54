"""Per-epoch representation diagnostics and warnings for known failures of contrastive pretraining.

Pure NumPy (float64), no TensorFlow: feed it arrays of embeddings computed however the caller likes.

- `diagnose(z_a, z_b, h)` returns one dict of numbers for an epoch, under the column names of
  `DIAGNOSTIC_COLUMNS` (z is the projection-head output of the two views, row i of z_a and z_b being
  a positive pair; h the encoder features).
- `warnings_for(history, ...)` reads the list of per-epoch dicts (the rows of history.csv) and
  returns short human messages for collapse, a loss stuck at its "nothing learned" value, and a
  contrastive accuracy that rises while the kNN accuracy stays flat.

Every embedding is L2-normalised first as the loss does (x / sqrt(max(||x||^2, 1e-12)), so an
all-zero row stays zero).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

# Column names written by `diagnose`, in this order (h_effective_rank only when h is given).
DIAGNOSTIC_COLUMNS = ("z_std", "z_std_healthy", "alignment", "uniformity", "uniformity_healthy",
                      "h_effective_rank")

# Collapse: z_std below this fraction of 1/sqrt(d). 1/sqrt(d) is the most z_std can be (see
# `normalized_std`) and where healthy runs sit; collapsed ones go to 0 (SimSiam, Chen & He 2021,
# fig. 2). At 0.2 x 1/sqrt(d) an embedding whose leftover spread is even across dimensions has
# ||mean||^2 = 1 - 0.2^2 = 0.96, i.e. two unrelated images have a cosine similarity of 0.96 on
# average; one uniform over a k-dimensional subspace has sqrt(k/d) = 0.2, i.e. uses 4% of its
# dimensions. Either is collapse, and the wide margin keeps merely anisotropic runs quiet.
COLLAPSE_STD_FRACTION = 0.2

# Stuck loss: the latest loss after warmup is above (chance - this many nats), chance being the
# "nothing learned" value ln(2N-1) (NT-Xent) or ln(2N-2) (DCL). For NT-Xent, chance - loss is the
# InfoNCE lower bound (van den Oord et al. 2018) on the information shared by the two views'
# embeddings, and 0.1 nats means a positive whose softmax probability is only 10% above the
# 1/(2N-1) of chance. Most learning runs leave it fast (the official CIFAR-10 recipe in our code at
# batch 128 logs 5.2 in its first epoch against ln(255) = 5.54, and about 4.7 later), but not all:
# hence a warning, never a stop (README, "Is pretraining learning?").
# Unrelated (random, not collapsed) embeddings can sit ABOVE chance, by about 1/(2 d T^2), so
# only the lower side needs a margin.
STUCK_LOSS_TOLERANCE = 0.1

# Shortcut: over the last SHORTCUT_WINDOW_EPOCHS epochs the contrastive accuracy rose by at least
# SHORTCUT_ACCURACY_RISE (5 points: training-set averages are smooth, so this is a real rise) while
# no kNN accuracy measured after the window's first one beat it by SHORTCUT_KNN_FLAT (1 point,
# about the standard error of an accuracy on a few thousand validation images; taking the best
# later value makes noise err on the side of silence). A pretext task solved without learning
# features, e.g. from colour statistics or per-view BatchNorm statistics, looks exactly like this.
SHORTCUT_WINDOW_EPOCHS = 10
SHORTCUT_ACCURACY_RISE = 0.05
SHORTCUT_KNN_FLAT = 0.01

# uniformity() builds pairwise distances in blocks of this many rows (memory: chunk_size x N floats).
UNIFORMITY_CHUNK_SIZE = 2048


# ---------------------------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------------------------

def _matrix(x, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty [N, d] matrix, got shape {x.shape}")
    return x


def _l2_normalize(z) -> np.ndarray:
    return z / np.sqrt(np.maximum(np.sum(z * z, axis=1, keepdims=True), 1e-12))


def _logsumexp(x: np.ndarray) -> float:
    top = float(np.max(x))
    return top + math.log(float(np.sum(np.exp(x - top))))


def normalized_std_per_dimension(z) -> np.ndarray:
    """[d] standard deviation over the samples (ddof = 0) of each coordinate of z / ||z||."""
    return np.std(_l2_normalize(_matrix(z, "z")), axis=0)


def normalized_std(z) -> float:
    """Collapse indicator of SimSiam (Chen & He 2021): mean over the d dimensions of the standard
    deviation over the N samples (ddof = 0) of the L2-normalised z,

        z_std = (1/d) sum_k std_i(z_ik / ||z_i||).

    It is 0 when every sample has the same direction (collapse) and about 1/sqrt(d) for an
    embedding spread evenly over the sphere; 1/sqrt(d) is also its maximum, since the variances of
    unit vectors sum to 1 - ||mean||^2 <= 1. Per-dimension values: `normalized_std_per_dimension`.
    """
    return float(np.mean(normalized_std_per_dimension(z)))


def healthy_std(dim: int) -> float:
    """1/sqrt(d): z_std of an embedding spread evenly over the sphere of R^d, and its maximum."""
    return 1.0 / math.sqrt(dim)


def alignment(z_a, z_b, alpha: float = 2.0) -> float:
    """Alignment of Wang & Isola (2020): mean over the N positive pairs of the L2-normalised rows,

        alignment = (1/N) sum_i ||f(x_i) - f(y_i)||_2^alpha,   in [0, 2^alpha].

    0 means the two views of every image land on the same point; 2^alpha that they are antipodal
    (for alpha = 2 it is 2 - 2 x the mean positive cosine similarity). Lower is better, but a
    collapsed embedding also scores 0, so read it together with `uniformity`.
    """
    z_a = _l2_normalize(_matrix(z_a, "z_a"))
    z_b = _l2_normalize(_matrix(z_b, "z_b"))
    if z_a.shape != z_b.shape:
        raise ValueError(f"z_a and z_b must have the same shape, got {z_a.shape} and {z_b.shape}")
    squared = np.sum((z_a - z_b) ** 2, axis=1)
    return float(np.mean(squared ** (alpha / 2.0)))


def uniformity(z, t: float = 2.0, chunk_size: int = UNIFORMITY_CHUNK_SIZE) -> float:
    """Uniformity of Wang & Isola (2020): over the N(N-1)/2 distinct pairs i < j of L2-normalised rows,

        uniformity = log( (2 / (N(N-1))) sum_{i<j} exp(-t ||f(x_i) - f(x_j)||^2) ),   in [-4t, 0],

    computed as a log-sum-exp minus log(N(N-1)/2), so it neither underflows nor overflows.
    It is 0 when all the samples coincide (collapse) and more negative the more evenly they cover
    the sphere, about `uniformity_of_uniform_sphere(d, t)` for a uniform spread (few points can go
    lower: two antipodal points give -4t).

    Rows are processed in blocks of `chunk_size` against the rows after them, so the memory is
    chunk_size x N floats (one block when N <= chunk_size).
    """
    z = _l2_normalize(_matrix(z, "z"))
    n = z.shape[0]
    if n < 2:
        raise ValueError("uniformity needs at least 2 samples")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    sq_norms = np.sum(z * z, axis=1)
    block_lse = []
    for start in range(0, n - 1, chunk_size):
        stop = min(start + chunk_size, n)
        rows, cols = z[start:stop], z[start:]
        sq = sq_norms[start:stop, None] + sq_norms[None, start:] - 2.0 * rows @ cols.T
        np.maximum(sq, 0.0, out=sq)
        # Keep column j (global start + c) only when j > i (global start + r).
        upper = np.arange(cols.shape[0])[None, :] > np.arange(stop - start)[:, None]
        block_lse.append(_logsumexp(-t * sq[upper]))
    return _logsumexp(np.array(block_lse)) - math.log(n * (n - 1) / 2.0)


def uniformity_of_uniform_sphere(dim: int, t: float = 2.0) -> float:
    """log E exp(-t ||x - y||^2) for x, y independent and uniform on the unit sphere of R^dim: the
    uniformity of an embedding spread uniformly, the limit of its minimum for many samples.

    With u = x.y, ||x - y||^2 = 2 - 2u, and u = cos(theta) with theta distributed as
    sin^(dim-2)(theta) on [0, pi], so the value is
    log( int exp(-2t (1 - cos theta)) sin^(dim-2) theta dtheta / int sin^(dim-2) theta dtheta ),
    evaluated with a 20000-point midpoint rule in log space (closed form: -2t + log(Gamma(dim/2)
    t^(1-dim/2) I_{dim/2-1}(2t))). Exact for dim = 1 and dim = 3, where the midpoint rule would be
    least accurate (1e-9): u is then +-1, or uniform on [-1, 1], giving log(1 - exp(-4t)) - log(4t).
    """
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    if dim == 1:  # the "sphere" {-1, 1}: ||x - y||^2 is 0 or 4 with probability 1/2 each
        return math.log((1.0 + math.exp(-4.0 * t)) / 2.0)
    if dim == 3:  # E exp(-2t (1 - u)) = (1 - exp(-4t)) / (4t) for u uniform on [-1, 1]
        return math.log1p(-math.exp(-4.0 * t)) - math.log(4.0 * t)
    theta = (np.arange(20000) + 0.5) * (math.pi / 20000)
    log_density = (dim - 2) * np.log(np.sin(theta))
    return _logsumexp(-2.0 * t * (1.0 - np.cos(theta)) + log_density) - _logsumexp(log_density)


def effective_rank(h, center: bool = False) -> float:
    """Effective rank of Roy & Vetterli (2007): exp of the Shannon entropy of the normalised
    singular values of the [N, D] feature matrix,

        p_k = sigma_k / sum_j sigma_j,   erank = exp(-sum_k p_k ln p_k),   in [1, min(N, D)],

    with 0 ln 0 = 0. It counts how many directions the features really use: k equal singular
    values give exactly k, a rank-1 matrix 1; a drop over epochs is dimensional collapse.

    The matrix is taken as given (uncentred), as in Roy & Vetterli's definition and in RankMe
    (Garrido et al. 2023), its common use on self-supervised embeddings; `center=True` subtracts
    the column means first (then a common offset, e.g. the positive mean of ReLU features, does
    not count as a direction). Singular values below sigma_max x max(N, D) x machine epsilon
    (numpy.linalg.matrix_rank's tolerance) count as 0, so rounding noise adds nothing (RankMe adds
    1e-7 to every p_k instead). An all-zero matrix gives 0. Cost: one SVD, O(N D min(N, D)).
    """
    h = _matrix(h, "h")
    if center:
        h = h - h.mean(axis=0, keepdims=True)
    sigma = np.linalg.svd(h, compute_uv=False)
    if sigma[0] <= 0.0:
        return 0.0
    sigma = sigma[sigma > sigma[0] * max(h.shape) * np.finfo(np.float64).eps]
    p = sigma / np.sum(sigma)
    return float(np.exp(-np.sum(p * np.log(p))))


def diagnose(z_a, z_b, h=None, alpha: float = 2.0, t: float = 2.0) -> dict:
    """The diagnostics of one epoch, keyed by the column names of DIAGNOSTIC_COLUMNS:

    - z_std: `normalized_std` of both views together ([2N, d]);
    - z_std_healthy: 1/sqrt(d), its value for an evenly spread embedding (and its maximum);
    - alignment: `alignment(z_a, z_b, alpha)` over the N positive pairs;
    - uniformity: the mean of `uniformity(z_a, t)` and `uniformity(z_b, t)` (each view on its own,
      as Wang & Isola's training code does, so positive pairs are not counted as "spread");
    - uniformity_healthy: `uniformity_of_uniform_sphere(d, t)`, its value for a uniform spread;
    - h_effective_rank: `effective_rank(h)` (uncentred), only when h ([M, D] features) is given.

    Floats, ready for history.csv. z_a and z_b need N >= 2 rows.
    """
    z_a = _matrix(z_a, "z_a")
    z_b = _matrix(z_b, "z_b")
    dim = z_a.shape[1]
    out = {
        "z_std": normalized_std(np.concatenate([z_a, z_b], axis=0)),
        "z_std_healthy": healthy_std(dim),
        "alignment": alignment(z_a, z_b, alpha),
        "uniformity": 0.5 * (uniformity(z_a, t) + uniformity(z_b, t)),
        "uniformity_healthy": uniformity_of_uniform_sphere(dim, t),
    }
    if h is not None:
        out["h_effective_rank"] = effective_rank(h)
    return out


# ---------------------------------------------------------------------------------------------
# Warnings from the per-epoch history
# ---------------------------------------------------------------------------------------------

def chance_loss(batch_size: int, loss: str = "nt_xent") -> float:
    """The "nothing learned" loss (mean over 2N anchors, N = global batch of image pairs):
    ln(2N - 1) for NT-Xent, ln(2N - 2) for DCL / DCLW, the values with identical embeddings."""
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2, got {batch_size}")
    if loss == "nt_xent":
        return math.log(2 * batch_size - 1)
    if loss in ("dcl", "dclw"):
        return math.log(2 * batch_size - 2)
    raise ValueError(f"unknown loss {loss!r}: expected 'nt_xent', 'dcl' or 'dclw'")


def _number(row: Mapping, key: str) -> Optional[float]:
    """row[key] as a float, or None when absent, empty (a csv cell) or not a finite number."""
    value = row.get(key)
    if value is None or value == "":
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _epochs(history: Sequence[Mapping]) -> list:
    """(epoch, row) pairs; a row without an "epoch" is numbered by its position (from 1)."""
    out = []
    for position, row in enumerate(history, start=1):
        epoch = _number(row, "epoch")
        out.append((int(epoch) if epoch is not None else position, row))
    return out


def collapse_warning(history: Sequence[Mapping], dim: Optional[int] = None) -> Optional[str]:
    """A message when the latest z_std is below COLLAPSE_STD_FRACTION x 1/sqrt(d), else None.

    d comes from the row's z_std_healthy (= 1/sqrt(d)) or from `dim`; rows without z_std are skipped.
    """
    for epoch, row in reversed(_epochs(history)):
        z_std = _number(row, "z_std")
        if z_std is None:
            continue
        healthy = _number(row, "z_std_healthy")
        if healthy is None:
            if dim is None:
                return None
            healthy = healthy_std(dim)
        if z_std < COLLAPSE_STD_FRACTION * healthy:
            return (f"epoch {epoch}: the embedding has collapsed: z_std {z_std:.4f} is below "
                    f"{COLLAPSE_STD_FRACTION} x 1/sqrt(d) = {COLLAPSE_STD_FRACTION * healthy:.4f} "
                    f"(a healthy run stays near {healthy:.4f}); all images map to nearly the same "
                    "direction (often a learning rate too high for the batch size).")
        return None
    return None


def stuck_loss_warning(history: Sequence[Mapping], batch_size: int, warmup_epochs: int,
                       loss: str = "nt_xent") -> Optional[str]:
    """A message when the latest loss after `warmup_epochs` is still within STUCK_LOSS_TOLERANCE
    nats of (or above) `chance_loss(batch_size, loss)`, else None (also during warmup).

    `batch_size` is the global number of image pairs per step (all replicas together)."""
    chance = chance_loss(batch_size, loss)
    for epoch, row in reversed(_epochs(history)):
        value = _number(row, "loss")
        if value is None:
            continue
        if epoch <= warmup_epochs:
            return None
        if value > chance - STUCK_LOSS_TOLERANCE:
            name = "ln(2N-1)" if loss == "nt_xent" else "ln(2N-2)"
            return (f"epoch {epoch}: the loss {value:.3f} has not left {name} = {chance:.3f} (batch "
                    f"{batch_size}), its value when nothing is learned, {epoch - warmup_epochs} "
                    "epoch(s) after warmup. Check the learning rate, that both views come from the "
                    "same image, and that the augmentations are not too strong; some runs learn useful "
                    "features all the same, which the kNN monitor or a linear probe shows.")
        return None
    return None


def shortcut_warning(history: Sequence[Mapping], window_epochs: int = SHORTCUT_WINDOW_EPOCHS,
                     min_rise: float = SHORTCUT_ACCURACY_RISE,
                     flat: float = SHORTCUT_KNN_FLAT) -> Optional[str]:
    """A message when, over the last `window_epochs` epochs, contrastive_accuracy rose by at least
    `min_rise` while knn_accuracy did not: no kNN value measured after the window's first one
    exceeds that first one by `flat` or more. None otherwise, and when the history does not yet
    cover the window or holds fewer than 2 kNN values in it (kNN absent: nothing to compare)."""
    rows = _epochs(history)
    if not rows:
        return None
    last_epoch = rows[-1][0]
    first_epoch = last_epoch - window_epochs + 1
    if rows[0][0] > first_epoch:
        return None  # the history is shorter than the window
    window = [(epoch, row) for epoch, row in rows if epoch >= first_epoch]
    accuracy = [(e, v) for e, v in ((e, _number(r, "contrastive_accuracy")) for e, r in window)
                if v is not None]
    knn = [(e, v) for e, v in ((e, _number(r, "knn_accuracy")) for e, r in window) if v is not None]
    if len(accuracy) < 2 or len(knn) < 2:
        return None
    rise = accuracy[-1][1] - accuracy[0][1]
    knn_gain = max(v for _, v in knn[1:]) - knn[0][1]
    if rise >= min_rise and knn_gain < flat:
        return (f"epochs {accuracy[0][0]}-{accuracy[-1][0]}: the contrastive accuracy rose from "
                f"{accuracy[0][1]:.3f} to {accuracy[-1][1]:.3f} while the kNN accuracy stayed at "
                f"{knn[0][1]:.3f} (best later {knn_gain + knn[0][1]:.3f}): the network may solve "
                "the pretext task with a shortcut (colour statistics, per-view BatchNorm "
                "statistics) instead of learning features. Check the crop and colour "
                "augmentations and that both views go through one forward pass.")
    return None


def warnings_for(history: Sequence[Mapping], batch_size: int, warmup_epochs: int,
                 loss: str = "nt_xent", dim: Optional[int] = None) -> list:
    """The messages of collapse_warning, stuck_loss_warning and shortcut_warning that fire, in
    that order, for a list of per-epoch dicts (numbers, or the strings of a history.csv row)."""
    messages = [
        collapse_warning(history, dim=dim),
        stuck_loss_warning(history, batch_size, warmup_epochs, loss=loss),
        shortcut_warning(history),
    ]
    return [m for m in messages if m is not None]
