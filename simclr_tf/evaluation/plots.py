"""Figures written next to the results (matplotlib, no display needed)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simclr_tf.io_utils import save_figure_atomic  # noqa: E402


# Columns drawn as a dashed reference line in the panel of another (the value of a healthy run).
REFERENCE_COLUMNS = {"z_std": "z_std_healthy", "uniformity": "uniformity_healthy"}


def plot_training_curves(history, path, metrics=("loss", "contrastive_accuracy"), title=None):
    """One panel per metric present in `history` (a list of per-epoch dicts with an 'epoch' key);
    the panels of z_std and uniformity also show their healthy value (`REFERENCE_COLUMNS`)."""
    present = [m for m in metrics if any(m in row for row in history)]
    if not history or not present:
        return
    fig, axes = plt.subplots(1, len(present), figsize=(4.5 * len(present), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], present):
        rows = [row for row in history if metric in row]
        ax.plot([r["epoch"] for r in rows], [r[metric] for r in rows], marker="o", markersize=3)
        reference = REFERENCE_COLUMNS.get(metric)
        if reference and any(reference in r for r in rows):
            ax.plot([r["epoch"] for r in rows], [r.get(reference) for r in rows], linestyle="--", color="grey",
                    label="healthy (uniform on the sphere)")
            ax.legend(fontsize=7)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)


def plot_augmentation_grid(originals, views_a, views_b, path, title="original | view 1 | view 2"):
    """Rows of (original, view 1, view 2) triples; all arrays float in [0, 1], [N, H, W, 3]."""
    count = len(originals)
    columns = 3 * min(count, 4)
    rows = int(np.ceil(count / 4))
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(count):
        row, group = divmod(i, 4)
        for j, image in enumerate((originals[i], views_a[i], views_b[i])):
            ax = axes[row, 3 * group + j]
            ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
            if row == 0:
                ax.set_title(("original", "view 1", "view 2")[j], fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
