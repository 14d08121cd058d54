"""k-means pseudo-labels of latent vectors (G-SimCLR: clusters of denoising-autoencoder latents).

`kmeans_pseudo_labels` runs scikit-learn's KMeans on preprocessed vectors. The default
preprocessing, "l2", centres the vectors (subtracts their mean) and scales each to unit length, so
k-means groups them by direction (spherical k-means; on unit vectors the squared Euclidean
distance is 2 - 2 cos). Reasons:

- An autoencoder latent's length mostly follows image energy (contrast, brightness), a nuisance
  for pseudo-classes; its direction carries the content.
- It is the geometry of the rest of the project: `probes.tsne_2d` uses cosine distances (so the
  t-SNE of the latents coloured by cluster shows the clusters k-means saw), and so do SimCLR and
  the kNN monitor.
- Centring first keeps directions informative when every latent shares a large common component
  (all vectors in a narrow cone).

"standardise" (per-dimension zero mean, unit variance) is the alternative when the latent
dimensions have unrelated scales; it also inflates near-constant, noisy dimensions, which is why
it is not the default. "none" clusters the raw vectors.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

NORMALISATIONS = ("l2", "standardise", "none")


def preprocess_vectors(vectors, normalise: str = "l2") -> np.ndarray:
    """The vectors `kmeans_pseudo_labels` clusters: float64 [N, D] after ``normalise``."""
    x = np.asarray(vectors, np.float64)
    if x.ndim != 2:
        raise ValueError(f"vectors must be [N, D], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("vectors contain NaN or infinite values")
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {normalise!r}")
    if normalise == "none" or len(x) == 0:
        return x
    x = x - x.mean(axis=0)
    if normalise == "standardise":
        std = x.std(axis=0)
        return x / np.where(std > 1e-12, std, 1.0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def kmeans_pseudo_labels(vectors, num_clusters: int, seed: int = 0, normalise: str = "l2",
                         n_init: int = 4, max_iter: int = 300) -> np.ndarray:
    """k-means cluster of every vector: int64 [N] in [0, num_clusters), largest cluster first.

    Args:
      vectors: [N, D] latent vectors (e.g. `models.autoencoder.latent_vectors`).
      num_clusters: K, at most N.
      seed: `random_state` of KMeans (k-means++ initialisations): the same vectors and seed give
        the same labels.
      normalise: "l2" (default: centre, then unit length; see the module docstring),
        "standardise" or "none".
      n_init: number of k-means++ restarts (fixed, not "auto", so results do not change with the
        scikit-learn version's default); the best inertia wins.
      max_iter: Lloyd iterations per restart.

    Returns:
      Cluster ids renumbered by decreasing size (ties by first occurrence), so id 0 is the largest
      cluster whatever KMeans' internal numbering. Should some clusters stay empty (fewer
      distinct vectors than K; scikit-learn warns), they get the last ids, so the ids used are
      still 0 .. K' - 1.

    Raises:
      ValueError: for bad shapes, non-finite values, K < 1 or K > N.
    """
    x = preprocess_vectors(vectors, normalise)
    if isinstance(num_clusters, bool) or int(num_clusters) != num_clusters or num_clusters < 1:
        raise ValueError(f"num_clusters must be a positive int, got {num_clusters!r}")
    num_clusters = int(num_clusters)
    if num_clusters > len(x):
        raise ValueError(f"num_clusters ({num_clusters}) is larger than the number of vectors ({len(x)})")
    kmeans = KMeans(n_clusters=num_clusters, n_init=int(n_init), max_iter=int(max_iter),
                    random_state=int(seed) % 2 ** 32)
    raw = kmeans.fit_predict(x.astype(np.float32))  # float32: half the memory, faster, same clusters
    # Renumber: decreasing size, ties broken by the first index holding the cluster.
    sizes = np.bincount(raw, minlength=num_clusters)
    first = np.full(num_clusters, len(raw))
    np.minimum.at(first, raw, np.arange(len(raw)))
    ranking = np.lexsort((first, -sizes))
    new_id = np.empty(num_clusters, np.int64)
    new_id[ranking] = np.arange(num_clusters)
    return new_id[raw]
