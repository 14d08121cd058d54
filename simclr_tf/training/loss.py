"""NT-Xent, the contrastive loss of SimCLR (Chen et al. 2020, eq. 1).

Convention of this project: the loss is the MEAN cross-entropy over all 2N anchors of a batch of N
image pairs. With identical embeddings every candidate has the same logit, so the loss is exactly
ln(2N - 1): a run whose loss stays there has learned nothing. The official SimCLR code adds the
losses of the two directions (a->b and b->a), each averaged over N, so its value is TWICE ours.
"""

from __future__ import annotations

import tensorflow as tf

# Subtracted from the self-similarity logits. Masking with a large constant instead of gathering
# the 2N-2 negatives keeps every shape static, which XLA and TPUs need; exp(-1e9 / T) is exactly 0.
LARGE_NUM = 1e9


def _compute_dtype(z: tf.Tensor) -> tf.DType:
    # float16/bfloat16 embeddings (mixed precision) lose too much in a softmax over thousands of
    # logits divided by a small temperature; float64 is kept so tests can check gradients tightly.
    return tf.float64 if z.dtype == tf.float64 else tf.float32


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

    per_anchor = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    loss = tf.reduce_mean(per_anchor)
    hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), labels)
    accuracy = tf.reduce_mean(tf.cast(hits, dtype))
    return loss, accuracy
