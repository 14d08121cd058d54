"""Guided SimCLR batches (G-SimCLR, Chakraborty et al. 2020): no two images of a batch share a pseudo-label.

G-SimCLR clusters the latent vectors of a denoising autoencoder into K pseudo-labels
(`models.autoencoder`, `evaluation.clustering`) and builds every SimCLR batch from images of
distinct clusters, so that the negatives of an image are (mostly) not of its own class.
`guided_epoch_order` is the drop-in replacement of `pipeline.epoch_order` that does this: like it,
it is a pure function of (cluster ids, batch size, seed, epoch), so a resumed run sees the batches
of an uninterrupted one.

With N images, batch size B and K clusters (the number of distinct ids), an epoch has
S = N // B batches, as a vanilla run, and its order is S x B indices: consecutive chunks of B are
the batches.

Guaranteed, for any clustering:

- determinism: the same (cluster_ids, batch_size, seed, epoch) give the same order;
- exactly S * B indices, every one a valid index into ``cluster_ids``;
- B <= K: no batch holds two images of the same cluster (so never the same image twice either);
- B > K: in every batch, cluster k appears floor(c_k / S) or ceil(c_k / S) times, where
  c_k ~ n_k * S * B / N is its share of the epoch (floor or ceil of it); no image is used twice in
  an epoch.

Best effort, when the clustering allows it:

- every image is used at most once per epoch, and all but the N - S * B images of the dropped
  remainder are used (as in a vanilla epoch). With balanced clusters and N a multiple of B, every
  image appears exactly once.

The rule for unbalanced clusters when B <= K. A cluster can appear at most once in each batch, so
at most S times per epoch. The epoch's S * B places are shared out as
``c_k = min(S, lam * n_k)`` (rounded to integers summing to S * B), with one "water level" lam for
all clusters:

- A cluster with more than S images (more than 1/B of the data: e.g. a 40% cluster whenever B >= 3)
  fills one place in every batch and uses S of its images per epoch, not all of them. Which ones
  rotates: cluster k walks a fixed (seeded) cyclic order of its images, S per epoch, so every
  image of it is used exactly once or twice in every ceil(n_k / S) consecutive epochs.
- The places the big clusters cannot take must then come from the other clusters. When the big
  clusters' surplus exceeds the remainder N - S * B, i.e. when ``sum_k min(n_k, S) < S * B``, the
  others have too few images for them: lam > 1, and their images are reused within the epoch,
  each image of cluster k floor(c_k / n_k) or ceil(c_k / n_k) times (always in different
  batches; which images get the extra use is drawn at random each epoch). One level for all
  clusters makes the largest reuse factor as small as possible and keeps the batch composition
  proportional to cluster size below the cap. `guided_batch_summary` reports the reuse.
- Otherwise lam <= 1 and each image is used at most once; the fewer than B images left over are
  spread over the clusters in proportion to their size and drawn at random within each cluster
  every epoch, as a vanilla epoch drops a random remainder.

Which clusters share a batch is random: batches are filled one at a time (then put in random
order), each drawing its clusters without replacement with probability proportional to the
places they still have to fill this epoch, except that a cluster with as many places left as
there are batches left must be drawn (this keeps the schedule completable, so it never fails).
Images are assigned to their cluster's places in random order, and every batch is shuffled.

In tf.data: `guided_epoch_order_tensor` (a `tf.numpy_function`, once per epoch), the `order_fn` of
`pipeline.epoch_elements` / `pipeline.pretrain_dataset` (same element seeds as a vanilla run). Note
that `pipeline.epoch_batches` drops undecodable examples *before* batching, which shifts the batch
boundaries of the rest of that epoch: the guarantees above hold for the order, so with guided
batches broken files must be excluded before the order is computed (or replaced within their
batch).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

# Random streams: one fixed by the seed (per-cluster cyclic image orders), one per (seed, epoch).
_STREAM_CLUSTER_ORDER = 1
_STREAM_EPOCH = 2
# Random numbers are drawn for this many batches at a time while scheduling.
_SCHEDULE_CHUNK = 1024


def _rng(seed, stream, epoch=0):
    # Python's % maps negative seeds / epochs to valid SeedSequence entropy; the stream tag keeps
    # the seed-only stream apart from every epoch's stream (all entropy lists have length 3).
    return np.random.default_rng([int(seed) % 2 ** 64, stream, int(epoch) % 2 ** 64])


def _prepare(cluster_ids, batch_size):
    ids = np.asarray(cluster_ids)
    if ids.ndim != 1:
        raise ValueError(f"cluster_ids must be one-dimensional, got shape {ids.shape}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    if len(ids) == 0:
        return ids, np.zeros(0, np.int64), np.zeros(0, np.int64), batch_size, 0
    _, inverse, sizes = np.unique(ids, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1).astype(np.int64)
    return ids, inverse, sizes.astype(np.int64), batch_size, len(ids) // batch_size


def _real_quotas(sizes, steps, batch_size):
    """Places per epoch of each cluster before rounding: min(cap, lam * n_k), summing to S * B."""
    total = steps * batch_size
    sizes_f = sizes.astype(np.float64)
    if batch_size > len(sizes):  # no per-cluster cap: a proportional share of the epoch
        return sizes_f * (total / sizes_f.sum()), np.inf
    cap = float(steps)
    capped = np.zeros(len(sizes), bool)
    # Water filling: capping a cluster raises the level for the rest; at most K rounds, usually 1-3.
    while True:
        free = sizes_f[~capped].sum()
        if free == 0:
            break
        level = (total - cap * capped.sum()) / free
        newly = ~capped & (level * sizes_f >= cap)
        if not newly.any():
            break
        capped |= newly
    quotas = np.where(capped, cap, np.minimum(cap, level * sizes_f) if free else cap)
    return quotas, cap


def _round_quotas(quotas, cap, total, rng):
    """Integers c_k in {floor(q_k), ceil(q_k)}, at most `cap`, summing exactly to `total`."""
    counts = np.floor(quotas + 1e-9).astype(np.int64)
    if np.isfinite(cap):
        counts = np.minimum(counts, int(cap))
    extra = total - int(counts.sum())
    if extra > 0:
        room = counts < cap
        weights = np.clip(quotas - counts, 0.0, 1.0) + 1e-9  # the fractions, as sampling weights
        # Efraimidis-Spirakis: the `extra` smallest Exp(1) / weight among clusters with room.
        keys = np.where(room, rng.standard_exponential(len(quotas)) / weights, np.inf)
        counts[np.argpartition(keys, extra - 1)[:extra]] += 1
    elif extra < 0:  # only float round-off could bring this; take places back from the largest
        counts[np.argsort(-counts, kind="stable")[:-extra]] -= 1
    return counts


def _schedule(extras, steps, picks, rng):
    """[steps, picks] cluster ids, distinct in every row, cluster k in exactly extras[k] rows.

    Requires extras[k] <= steps and sum(extras) == steps * picks. Row t draws its clusters without
    replacement with probability proportional to the places left, after taking every cluster whose
    places left equal the rows left (it has to be in all of them). This keeps the invariant
    max(left) <= rows left, which is all a completion needs, so the schedule never dead-ends.
    """
    out = np.empty((steps, picks), np.int64)
    num = len(extras)
    if picks == 0 or steps == 0:
        return out
    if picks == num:
        out[:] = np.arange(num)
        return out
    left = extras.astype(np.float64)
    kth = picks - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        for start in range(0, steps, _SCHEDULE_CHUNK):
            noise = rng.standard_exponential((min(_SCHEDULE_CHUNK, steps - start), num))
            for row, e in enumerate(noise):
                t = start + row
                keys = e / left  # +inf where nothing is left: never drawn (enough others remain)
                keys[left == steps - t] = -1.0  # forced: must be in every remaining batch
                chosen = np.argpartition(keys, kth)[:picks]
                left[chosen] -= 1.0
                out[t] = chosen
    return out


def _shuffled_groups(group, rng):
    """Indices sorting `group` (ints in [0, 2**31)), in random order within each group."""
    # One integer sort (group in the high bits, random tie-breaker in the low bits) is several
    # times faster than np.lexsort.
    keys = (group.astype(np.int64) << 32) | rng.integers(0, 1 << 32, len(group), dtype=np.int64)
    return np.argsort(keys)


def guided_epoch_order(cluster_ids, batch_size, seed, epoch):
    """Image indices of one guided epoch: S * B int64, S = N // B batches of B consecutive indices.

    Args:
      cluster_ids: [N] integer pseudo-label of every image (any values; K is the number of
        distinct ones, so empty clusters do not count).
      batch_size: B, the SimCLR batch size.
      seed: the run's seed (any int).
      epoch: the epoch number (any int; a NumPy scalar is fine).

    Returns:
      int64 array of S * B indices into ``cluster_ids`` (empty when N < B).

    Guarantees (see the module docstring for the rule behind them): deterministic in its four
    arguments; B <= K: every batch holds B images of B distinct clusters, even for very
    unbalanced clusterings (then some images of the small clusters are reused within the epoch,
    never within a batch); B > K: every cluster appears floor or ceil of its share c_k / S in
    every batch and no image is used twice. Best effort: every image at most once per epoch and
    all but the remainder used.
    """
    _, inverse, sizes, batch_size, steps = _prepare(cluster_ids, batch_size)
    total = steps * batch_size
    if total == 0:
        return np.zeros(0, np.int64)
    num_clusters = len(sizes)
    rng = _rng(seed, _STREAM_EPOCH, epoch)

    quotas, cap = _real_quotas(sizes, steps, batch_size)
    counts = _round_quotas(quotas, cap, total, rng)

    # Places per batch: `base` of every cluster in every batch, plus `picks` extra places drawn
    # from distinct clusters (cluster k in extras[k] batches). B <= K: base is 1 for a cluster that
    # fills a place in every batch, else 0.
    base, extras = np.divmod(counts, steps)
    picks = batch_size - int(base.sum())
    slots = np.empty((steps, batch_size), np.int64)
    slots[:, :batch_size - picks] = np.repeat(np.arange(num_clusters), base)
    slots[:, batch_size - picks:] = _schedule(extras, steps, picks, rng)
    slots = slots[rng.permutation(steps)]
    slots = rng.permuted(slots, axis=1).reshape(-1)

    # The images of each cluster: counts[k] places, read cyclically from an order of its images.
    # A cluster capped at S places (more than S images) walks one seeded order, S images per epoch
    # from epoch * S on, so every image comes round every ceil(n_k / S) epochs. The others read a
    # fresh random order of the epoch from its start: the (< B) images left out, or the images used
    # once more than the rest, are a random choice each epoch, as in a vanilla epoch.
    rotating = (counts == steps) & (sizes > steps) & np.isfinite(cap)
    fixed_key = _rng(seed, _STREAM_CLUSTER_ORDER).integers(0, 1 << 32, len(inverse), dtype=np.int64)
    epoch_key = rng.integers(0, 1 << 32, len(inverse), dtype=np.int64)
    member_order = np.argsort((inverse << 32) | np.where(rotating[inverse], fixed_key, epoch_key))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    window_start = np.where(rotating, (int(epoch) * steps) % sizes, 0).astype(np.int64)
    owner = np.repeat(np.arange(num_clusters), counts)  # cluster of each place, grouped by cluster
    first_place = np.concatenate([[0], np.cumsum(counts)[:-1]])
    step_in_window = np.arange(total) - first_place[owner]
    position = (window_start[owner] + step_in_window) % sizes[owner]
    images = member_order[offsets[owner] + position]
    images = images[_shuffled_groups(owner, rng)]  # random order within each cluster

    order = np.empty(total, np.int64)
    order[np.argsort(slots, kind="stable")] = images  # slots grouped by cluster, like `images`
    return order


def guided_batch_summary(cluster_ids, batch_size):
    """What guided batching does with this clustering (for a log line or a warning), epoch-independent.

    Returns a dict: ``num_images``, ``num_clusters``, ``steps`` (S), ``distinct_clusters`` (True when
    B <= K: no batch repeats a cluster), ``largest_cluster_fraction``, ``images_used_per_epoch``
    (expected distinct images per epoch), ``reused_places_per_epoch`` (places filled by an image's
    second or later use; 0 unless ``sum_k min(n_k, S) < S * B`` with B <= K), ``max_uses_per_image`` and
    ``quotas`` (expected places of each cluster per epoch, clusters in sorted id order).
    """
    _, _, sizes, batch_size, steps = _prepare(cluster_ids, batch_size)
    if steps == 0:
        quotas = np.zeros(len(sizes))
    else:
        quotas, _ = _real_quotas(sizes, steps, batch_size)
    used = np.minimum(quotas, sizes)
    return {
        "num_images": int(sizes.sum()),
        "num_clusters": len(sizes),
        "steps": steps,
        "distinct_clusters": batch_size <= len(sizes),
        "largest_cluster_fraction": float(sizes.max() / sizes.sum()) if len(sizes) else 0.0,
        "images_used_per_epoch": float(used.sum()),
        "reused_places_per_epoch": float((quotas - used).sum()),
        "max_uses_per_image": int(np.ceil(np.max(quotas / sizes) - 1e-9)) if len(sizes) else 0,
        "quotas": quotas,
    }


def guided_epoch_order_tensor(cluster_ids, batch_size, seed, epoch):
    """Graph form of `guided_epoch_order` for tf.data: int64 [S * B] for a (scalar) epoch tensor.

    A `tf.numpy_function` computed per epoch, not a precomputed table: the order is needed for an
    unbounded number of epochs, one call is cheap (0.05-0.3 s for 100,000 images and K = 100,
    B = 256 ... 8, on one CPU core), and it runs
    once per epoch inside `Dataset.flat_map`, off the training step. ``cluster_ids``,
    ``batch_size`` and ``seed`` are fixed Python / NumPy values captured by the op.
    """
    ids = np.array(cluster_ids, copy=True)
    _, _, _, batch_size, steps = _prepare(ids, batch_size)
    seed = int(seed)

    def compute(epoch_value):
        return guided_epoch_order(ids, batch_size, seed, int(epoch_value))

    order = tf.numpy_function(compute, [tf.cast(epoch, tf.int64)], tf.int64, stateful=False)
    return tf.ensure_shape(order, [steps * batch_size])
