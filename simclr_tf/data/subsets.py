"""Label fractions: which training images a run uses when it trains on part of its list.

One rounding rule for both kinds of subset: a group of n images keeps round(fraction x n) of them,
halves rounding up, and never fewer than one. The draws come from `seed` (an int or a sequence of
ints, e.g. (seed, repeat)), so the same seed gives the same subset, and indices come back sorted.
"""
import math

import numpy as np


def subset_size(fraction, count):
    """round(fraction x count), halves up, at least 1 (for count >= 1); `fraction` in (0, 1]."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, math.floor(fraction * count + 0.5)) if count else 0


def stratified_subset(labels, fraction, seed):
    """Sorted indices of a random subset holding `fraction` of every class (classification).

    Each class present in `labels` keeps `subset_size(fraction, its size)` images, so every class is
    represented however small the fraction. The draw is a per-class permutation, so for one seed a
    smaller fraction's subset is contained in a larger one's. `fraction` = 1 returns every index.
    """
    labels = np.asarray(labels)
    subset_size(fraction, 0)  # validates the fraction
    if fraction == 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.append(rng.permutation(members)[:subset_size(fraction, len(members))])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def random_subset(num_items, fraction, seed):
    """Sorted indices of `subset_size(fraction, num_items)` items drawn at random (segmentation,
    where a label map has no single class to stratify by); every index for `fraction` = 1."""
    count = subset_size(fraction, num_items)
    if fraction == 1.0:
        return np.arange(num_items)
    return np.sort(np.random.default_rng(seed).permutation(num_items)[:count])
