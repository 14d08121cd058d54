"""G-SimCLR guided batches: distinct clusters per batch, even spread, determinism, coverage, tf.data form."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from simclr_tf.data.guided_batches import (  # noqa: E402
    guided_batch_summary,
    guided_epoch_order,
    guided_epoch_order_tensor,
)
from simclr_tf.data.pipeline import epoch_elements  # noqa: E402


def _sizes(*sizes):
    """Cluster ids with the given cluster sizes, shuffled (ids 0, 1, ...)."""
    ids = np.repeat(np.arange(len(sizes)), sizes)
    return np.random.default_rng(len(sizes)).permutation(ids)


# (name, cluster ids, batch sizes <= K)
DISTINCT_CASES = [
    ("balanced", _sizes(*[100] * 10), (2, 7, 10)),
    ("balanced_with_remainder", _sizes(*[101] * 9, 94), (4, 10)),
    ("unbalanced_40_percent", _sizes(400, *[67] * 8, 64), (3, 8, 10)),
    ("extreme_one_cluster_95_percent", _sizes(950, 1, 2, 3, 5, 8, 13, 8, 5, 5), (2, 6, 10)),
    ("two_big_many_tiny", _sizes(300, 300, *[2] * 30), (8, 32)),
    ("every_image_its_own_cluster", np.arange(57), (5, 57)),
    ("zipf", _sizes(*[int(1000 / r) for r in range(1, 41)]), (16, 40)),
]


def _uses(order, n):
    return np.bincount(order, minlength=n)


def _check_common(ids, order, batch_size):
    steps = len(ids) // batch_size
    assert order.dtype == np.int64 and order.shape == (steps * batch_size,)
    assert order.min() >= 0 and order.max() < len(ids)
    # Within a cluster, uses per image differ by at most one (0/1, or floor/ceil when reused).
    uses = _uses(order, len(ids))
    for k in np.unique(ids):
        u = uses[ids == k]
        assert u.max() - u.min() <= 1, (k, np.bincount(u))
    # An image is reused only when the constraint forces it.
    sizes = np.bincount(np.unique(ids, return_inverse=True)[1])
    cap = steps if batch_size <= len(sizes) else np.inf
    if np.minimum(sizes, cap).sum() >= steps * batch_size:
        assert uses.max() <= 1
    return order.reshape(steps, batch_size)


@pytest.mark.parametrize("name, ids, batch_sizes", DISTINCT_CASES, ids=[c[0] for c in DISTINCT_CASES])
def test_no_batch_holds_two_images_of_a_cluster_when_batch_size_is_at_most_k(name, ids, batch_sizes):
    for batch_size in batch_sizes:
        assert batch_size <= len(np.unique(ids))
        for seed in range(3):
            for epoch in range(4):
                order = guided_epoch_order(ids, batch_size, seed, epoch)
                batches = _check_common(ids, order, batch_size)
                clusters = np.sort(ids[batches], axis=1)
                assert not (clusters[:, 1:] == clusters[:, :-1]).any(), (name, batch_size, seed, epoch)


def test_a_cluster_too_big_for_the_epoch_fills_one_place_per_batch_and_rotates_its_images():
    ids = _sizes(400, *[67] * 8, 64)  # 40% in cluster 0; B = 8: S = 125 < 400
    steps = len(ids) // 8
    used = np.zeros(len(ids), bool)
    for epoch in range(4):  # ceil(400 / 125) = 4 epochs cover the big cluster
        order = guided_epoch_order(ids, 8, 5, epoch)
        big = order[ids[order] == 0]
        assert len(big) == steps and len(set(big)) == steps  # once per batch, distinct images
        used[big] = True
    assert used[ids == 0].all()
    # The other clusters must fill 7 of every 8 places from 600 images: each image 1-2 times.
    uses = _uses(guided_epoch_order(ids, 8, 5, 0), len(ids))
    assert set(np.unique(uses[ids != 0])) <= {1, 2}
    summary = guided_batch_summary(ids, 8)
    assert summary["distinct_clusters"] and summary["steps"] == steps
    assert summary["reused_places_per_epoch"] == pytest.approx(steps * 7 - 600)
    assert summary["images_used_per_epoch"] == pytest.approx(725) and summary["max_uses_per_image"] == 2


@pytest.mark.parametrize("sizes, batch_size", [((250,) * 4, 10), ((500, 300, 200), 16), ((990, 10), 8),
                                               ((37, 501, 123, 88, 251), 64)])
def test_clusters_are_spread_evenly_when_the_batch_is_larger_than_k(sizes, batch_size):
    ids = _sizes(*sizes)
    steps = len(ids) // batch_size
    for seed, epoch in [(0, 0), (1, 3), (2, 7)]:
        order = guided_epoch_order(ids, batch_size, seed, epoch)
        batches = _check_common(ids, order, batch_size)
        assert _uses(order, len(ids)).max() == 1  # no reuse when B > K
        counts = np.stack([np.bincount(row, minlength=len(sizes)) for row in ids[batches]])  # [S, K]
        per_epoch = counts.sum(0)
        share = np.asarray(sizes) * steps * batch_size / len(ids)
        assert np.all((per_epoch >= np.floor(share)) & (per_epoch <= np.ceil(share)))
        assert np.all(counts >= np.floor(per_epoch / steps)) and np.all(counts <= np.ceil(per_epoch / steps))
    if len(set(sizes)) == 1:  # balanced: floor / ceil of B / K
        assert set(np.unique(counts)) <= {batch_size // len(sizes), -(-batch_size // len(sizes))}


def test_the_order_is_deterministic_and_changes_with_epoch_and_seed():
    ids = _sizes(300, 120, 80, 50, *[40] * 12)
    first = guided_epoch_order(ids, 8, 3, 2)
    np.testing.assert_array_equal(first, guided_epoch_order(list(ids), 8, 3, np.int64(2)))
    np.testing.assert_array_equal(first, guided_epoch_order(ids.copy(), 8, 3, 2))
    others = [guided_epoch_order(ids, 8, seed, epoch) for seed, epoch in [(3, 3), (4, 2), (3, 0)]]
    for other in others:
        assert not np.array_equal(first, other)
        assert np.mean(first == other) < 0.05  # a different order, not a small perturbation
    # Cluster ids are only labels: any values; an order-preserving relabelling gives the same batches.
    relabelled = np.array([-7, 3, 12, *range(20, 32), 1000])[ids]
    np.testing.assert_array_equal(first, guided_epoch_order(relabelled, 8, 3, 2))


@pytest.mark.parametrize("batch_size", [6, 12, 24])
def test_balanced_clusters_use_every_image_exactly_once_per_epoch(batch_size):
    ids = _sizes(*[120] * 12)  # N = 1440, a multiple of every batch size here
    for epoch in range(3):
        order = guided_epoch_order(ids, batch_size, 0, epoch)
        np.testing.assert_array_equal(np.sort(order), np.arange(len(ids)))
    # With a remainder, S * B distinct images and the left-out ones change from epoch to epoch.
    ids = _sizes(*[101] * 10)
    orders = [guided_epoch_order(ids, 16, 0, epoch) for epoch in range(2)]
    for order in orders:
        assert len(order) == (1010 // 16) * 16 and len(set(order)) == len(order)
    # The left-out images are a fresh random choice every epoch, as in a vanilla epoch: 2 per
    # epoch here, and (almost) never the same image twice in a row.
    left_out = [set(range(len(ids))) - set(guided_epoch_order(ids, 16, 0, epoch)) for epoch in range(30)]
    assert all(len(s) == 1010 - len(orders[0]) for s in left_out)
    assert sum(len(a & b) for a, b in zip(left_out, left_out[1:])) <= 1
    assert len(set().union(*left_out)) >= 50


def test_clusters_share_batches_at_random_not_in_a_fixed_pattern():
    ids = _sizes(*[100] * 20)
    batch_size, steps = 5, 400
    batches = ids[guided_epoch_order(ids, batch_size, 0, 0).reshape(steps, batch_size)]
    pairs = np.zeros((20, 20), int)
    for row in batches:
        pairs[np.ix_(row, row)] += 1
    off_diagonal = pairs[~np.eye(20, dtype=bool)]
    expected = steps * batch_size * (batch_size - 1) / (20 * 19)  # 21 per pair
    assert off_diagonal.mean() == pytest.approx(expected)
    assert off_diagonal.min() >= 5 and off_diagonal.max() <= 40  # every pair meets, none dominates
    # Where an image lands moves around from epoch to epoch.
    positions = np.array([np.argsort(guided_epoch_order(ids, batch_size, 0, e))[:50] for e in range(40)])
    assert abs(positions.mean() / len(ids) - 0.5) < 0.05
    assert np.all(positions.std(axis=0) > 0.15 * len(ids))


def test_edge_cases_and_bad_arguments():
    assert guided_epoch_order(np.arange(3), 4, 0, 0).shape == (0,)
    assert guided_epoch_order(np.zeros(0, np.int64), 4, 0, 0).shape == (0,)
    one_cluster = guided_epoch_order(np.zeros(8, int), 4, 0, 0)  # K = 1 < B: spread = all of it
    np.testing.assert_array_equal(np.sort(one_cluster), np.arange(8))
    assert len(guided_epoch_order(np.arange(10) % 3, 1, -5, -1)) == 10  # negative seed / epoch are fine
    with pytest.raises(ValueError):
        guided_epoch_order(np.arange(10), 0, 0, 0)
    with pytest.raises(ValueError):
        guided_epoch_order(np.zeros((4, 4), int), 2, 0, 0)


def test_an_epoch_of_100000_images_is_quick():
    ids = np.random.default_rng(0).integers(0, 100, 100_000)
    for batch_size in (256, 32):
        order = guided_epoch_order(ids, batch_size, 0, 1)
        assert len(order) == (100_000 // batch_size) * batch_size
        clusters = np.sort(ids[order].reshape(-1, batch_size), axis=1)
        if batch_size <= 100:
            assert not (clusters[:, 1:] == clusters[:, :-1]).any()
        assert len(set(order)) == len(order)


def test_the_tf_data_form_matches_numpy_and_keeps_the_pipelines_element_seeds():
    ids = _sizes(40, 30, 20, 10, 10)
    batch_size, seed = 4, 9
    orders = tf.data.Dataset.range(3).map(lambda e: guided_epoch_order_tensor(ids, batch_size, seed, e))
    assert orders.element_spec.shape == (len(ids) // batch_size * batch_size,)
    for epoch, order in enumerate(orders.as_numpy_iterator()):
        np.testing.assert_array_equal(order, guided_epoch_order(ids, batch_size, seed, epoch))
    order_fn = lambda epoch: guided_epoch_order_tensor(ids, batch_size, seed, epoch)  # noqa: E731
    guided = list(epoch_elements(len(ids), batch_size, seed, 2, order_fn=order_fn).as_numpy_iterator())
    vanilla = list(epoch_elements(len(ids), batch_size, seed, 2).as_numpy_iterator())
    np.testing.assert_array_equal([i for i, _ in guided], guided_epoch_order(ids, batch_size, seed, 2))
    np.testing.assert_array_equal(np.stack([s for _, s in guided]), np.stack([s for _, s in vanilla]))
