"""Contrastive losses: NT-Xent, the loss of SimCLR (Chen et al. 2020, eq. 1), and the decoupled
contrastive loss DCL (Yeh et al. 2022), NT-Xent without the positive pair in the denominator.

Convention of this project: a loss is the MEAN over all 2N anchors of a batch of N image pairs.
With identical embeddings every candidate has the same logit, so NT-Xent is exactly ln(2N - 1) and
DCL exactly ln(2N - 2): a run whose loss stays there has learned nothing. The official SimCLR code
adds the losses of the two directions (a->b and b->a), each averaged over N, so its value is TWICE
ours (so does the common PyTorch DCL code).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import tensorflow as tf

# Subtracted from the self-similarity logits. Masking with a large constant instead of gathering
# the 2N-2 negatives keeps every shape static, which XLA and TPUs need; exp(-1e9 / T) is exactly 0.
LARGE_NUM = 1e9


def _compute_dtype(z: tf.Tensor) -> tf.DType:
    # float16/bfloat16 embeddings (mixed precision) lose too much in a softmax over thousands of
    # logits divided by a small temperature; float64 is kept so tests can check gradients tightly.
    return tf.float64 if z.dtype == tf.float64 else tf.float32


def _scalar(x, dtype: tf.DType) -> tf.Tensor:
    # tf.cast would turn a Python float into a float32 tensor first and cost float64 its precision.
    return tf.constant(x, dtype) if isinstance(x, (int, float)) else tf.cast(x, dtype)


class _PairLogits(NamedTuple):
    logits: tf.Tensor  # [2 n_local, 2 n_keys]; self-similarities pushed down by LARGE_NUM
    labels: tf.Tensor  # [2 n_local] int32, column of each anchor's positive
    z_a: tf.Tensor  # [n_local, d] L2-normalised local embeddings, compute dtype
    z_b: tf.Tensor
    keys_a: tf.Tensor  # [n_keys, d] L2-normalised embeddings of all replicas (z_a on one device)
    keys_b: tf.Tensor
    dtype: tf.DType


def _pair_logits(z_a, z_b, temperature) -> _PairLogits:
    """The logits shared by NT-Xent and DCL (see nt_xent_loss for the layout and the replicas)."""
    dtype = _compute_dtype(tf.convert_to_tensor(z_a))
    z_a = tf.math.l2_normalize(tf.cast(z_a, dtype), axis=1)
    z_b = tf.math.l2_normalize(tf.cast(z_b, dtype), axis=1)
    inv_t = 1.0 / tf.cast(temperature, dtype)

    n_local = z_a.shape[0]
    if n_local is None:
        n_local = tf.shape(z_a)[0]

    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        keys_a = ctx.all_gather(z_a, axis=0)
        keys_b = ctx.all_gather(z_b, axis=0)
        offset = tf.cast(ctx.replica_id_in_sync_group, tf.int32) * n_local
    else:
        keys_a, keys_b, offset = z_a, z_b, 0

    n_keys = keys_a.shape[0]
    if n_keys is None:
        n_keys = tf.shape(keys_a)[0]

    # Global index of each local anchor's image among the keys.
    idx = tf.range(n_local) + offset
    self_mask = tf.one_hot(idx, n_keys, dtype=dtype) * LARGE_NUM

    logits_ab = tf.matmul(z_a, keys_b, transpose_b=True) * inv_t
    logits_aa = tf.matmul(z_a, keys_a, transpose_b=True) * inv_t - self_mask
    logits_ba = tf.matmul(z_b, keys_a, transpose_b=True) * inv_t
    logits_bb = tf.matmul(z_b, keys_b, transpose_b=True) * inv_t - self_mask

    # The other view comes first in both halves, so the positive sits at column idx for every anchor.
    logits = tf.concat(
        [tf.concat([logits_ab, logits_aa], axis=1), tf.concat([logits_ba, logits_bb], axis=1)],
        axis=0,
    )
    labels = tf.concat([idx, idx], axis=0)
    return _PairLogits(logits, labels, z_a, z_b, keys_a, keys_b, dtype)


def _contrastive_accuracy(pair: _PairLogits) -> tf.Tensor:
    hits = tf.equal(tf.argmax(pair.logits, axis=1, output_type=tf.int32), pair.labels)
    return tf.reduce_mean(tf.cast(hits, pair.dtype))


def nt_xent_loss(z_a, z_b, temperature) -> tuple[tf.Tensor, tf.Tensor]:
    """Normalised-temperature cross-entropy over two views of the same N images.

    Args:
        z_a: [N, d] projections of view a. Row i of `z_a` and row i of `z_b` are a positive pair.
        z_b: [N, d] projections of view b.
        temperature: positive scalar; logits are cosine similarities divided by it.

    Returns:
        (loss, contrastive_accuracy), two scalars in float32 (float64 when both inputs are float64).
        `loss` is the mean softmax cross-entropy over the 2N anchors (the official SimCLR code
        reports twice this value: it sums the a->b and b->a terms). `contrastive_accuracy` is the
        fraction of the 2N anchors whose largest logit is their positive.

    Each anchor (a row of z_a or z_b) is scored against 2N candidates: the N rows of the other
    view (one is its positive) and the N rows of its own view, whose diagonal (itself) is pushed
    to -LARGE_NUM. That leaves one positive and 2N-2 negatives from both view sets.

    Several replicas (called inside `strategy.run` with `num_replicas_in_sync > 1`): the
    candidates are the embeddings of ALL replicas (`all_gather`), so negatives come from the
    global batch, while the anchors stay local. The labels and the self-similarity mask are
    offset by `replica_id * N_local`. The returned values are the means over this replica's
    anchors only; with equal local batches their mean over replicas equals the single-device
    value on the global batch. Scale the loss for gradient summation across replicas as Keras
    does (divide by `num_replicas_in_sync`) in the training step, not here.
    """
    pair = _pair_logits(z_a, z_b, temperature)
    per_anchor = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=pair.labels, logits=pair.logits)
    loss = tf.reduce_mean(per_anchor)
    return loss, _contrastive_accuracy(pair)


# A weight function of dcl_loss: (s_local [N_local], s_all [N_global]) -> weights [N_local], where
# s are the cosine similarities of the positive pairs (not divided by the temperature).
WeightFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def von_mises_fisher_weight(sigma: float = 0.5, stop_gradient: bool = True) -> WeightFn:
    """The negative von Mises-Fisher weighting of DCLW (Yeh et al. 2022), for `dcl_loss(weight_fn=)`.

    For the positive pair i with cosine similarity s_i:

        w_i = 2 - exp(s_i / sigma) / ((1 / N) * sum_j exp(s_j / sigma))

    where j runs over the N positive pairs of the GLOBAL batch (all replicas, so several replicas
    give the single-device value). The weights average to exactly 1 over the batch; a pair that is
    already more similar than average gets w < 1 (it can be negative), a harder one up to w < 2.
    The paper (and its experiments) use sigma = 0.5.

    The paper does not say whether gradients flow through w. With `stop_gradient=True` (the
    default, as in lightly's DCLWLoss) w is a weight on the positive term and nothing more; with
    False it is differentiated too, as in the raminnakhli/Decoupled-Contrastive-Learning code.
    """

    def weight(s_local: tf.Tensor, s_all: tf.Tensor) -> tf.Tensor:
        inv_sigma = 1.0 / _scalar(sigma, s_all.dtype)
        count = tf.cast(tf.shape(s_all)[0], s_all.dtype)
        # log of the batch mean of exp(s / sigma), without overflow for a small sigma.
        log_mean = tf.reduce_logsumexp(s_all * inv_sigma) - tf.math.log(count)
        w = 2.0 - tf.exp(s_local * inv_sigma - log_mean)
        return tf.stop_gradient(w) if stop_gradient else w

    return weight


def dcl_loss(z_a, z_b, temperature, weight_fn: Optional[WeightFn] = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Decoupled contrastive loss (Yeh et al., "Decoupled Contrastive Learning", ECCV 2022).

    NT-Xent with the positive pair removed from the denominator. For anchor i with positive p and
    cosine similarities s:

        loss_i = -w_i * s_ip / T + log sum_{k != i, k != p} exp(s_ik / T)

    over the same 2N-2 negatives as `nt_xent_loss` (both view sets, the anchor itself excluded),
    with w_i = 1 (DCL) unless `weight_fn` is given (DCLW: `weight_fn=von_mises_fisher_weight()`).
    The loss is the mean over the 2N anchors (this project's convention). The common PyTorch
    implementation (raminnakhli/Decoupled-Contrastive-Learning) sums the two directions, i.e.
    reports twice this value; lightly's DCLLoss takes one log-sum-exp per view set and adds them,
    which is a different function.

    Args:
        z_a, z_b: [N, d] projections of the two views; row i of each is a positive pair.
        temperature: positive scalar T.
        weight_fn: optional `(s_local, s_all) -> w`: s_local [N_local] are the cosine similarities
            of this replica's positive pairs, s_all [N_global] those of all replicas (the same
            tensor on one device); w [N_local] multiplies the positive term of both anchors of a pair.

    Returns:
        (loss, contrastive_accuracy), scalars in float32 (float64 when the inputs are float64;
        bfloat16/float16 inputs are computed in float32). `contrastive_accuracy` is that of
        NT-Xent: the fraction of anchors whose largest logit, the positive included, is the positive.

    Values: unlike NT-Xent the loss can be negative (unweighted, it is at least ln(2N-2) - 2/T).
    "Nothing learned": with identical embeddings every s is 1, so the loss is
    -1/T + ln((2N-2) exp(1/T)) = ln(2N-2), N being the global batch (with the vMF weight too,
    since then every w is 1). N = 1 leaves no negative and is refused when the shape is static.

    Several replicas: as `nt_xent_loss` (negatives from the global batch through `all_gather`,
    anchors local, values averaged over local anchors; their mean over replicas is the
    single-device value on the global batch).
    """
    # nt_xent_loss keeps its historical tf.cast of the temperature (float32 first for a Python
    # float, i.e. a float64 loss only accurate to ~1e-8); here the float64 path is exact.
    temperature = _scalar(temperature, _compute_dtype(tf.convert_to_tensor(z_a)))
    pair = _pair_logits(z_a, z_b, temperature)
    n_keys = pair.keys_a.shape[0]
    if n_keys is not None and n_keys < 2:
        raise ValueError(f"dcl_loss needs at least 2 images in the (global) batch, got {n_keys}: "
                         "with one image there is no negative")

    positive = tf.gather(pair.logits, pair.labels[:, None], batch_dims=1)[:, 0]
    positive_mask = tf.one_hot(pair.labels, tf.shape(pair.logits)[1], dtype=pair.dtype) * LARGE_NUM
    negatives = tf.reduce_logsumexp(pair.logits - positive_mask, axis=1)

    if weight_fn is not None:
        s_local = tf.reduce_sum(pair.z_a * pair.z_b, axis=1)
        s_all = tf.reduce_sum(pair.keys_a * pair.keys_b, axis=1)
        w = tf.cast(weight_fn(s_local, s_all), pair.dtype)
        positive = positive * tf.concat([w, w], axis=0)

    loss = tf.reduce_mean(negatives - positive)
    return loss, _contrastive_accuracy(pair)
