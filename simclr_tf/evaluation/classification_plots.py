"""Figures of the classification tasks: confusion matrix, linear-evaluation bars, t-SNE panels."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simclr_tf.io_utils import save_figure_atomic  # noqa: E402


def _save(fig, path):
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)


def plot_confusion_matrix(matrix, class_names, path, title="Confusion matrix"):
    """Counts with each cell shaded by its share of the true class (rows: true, columns: predicted)."""
    matrix = np.asarray(matrix, np.int64)
    row_share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(3.5, 0.55 * len(class_names) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(row_share, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(class_names) <= 30:  # numbers stop being readable beyond that
        for (row, col), count in np.ndenumerate(matrix):
            ax.text(col, row, str(count), ha="center", va="center", fontsize=8,
                    color="white" if row_share[row, col] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def plot_linear_eval(results, path, title):
    """Mean accuracy per label fraction with the standard deviation over repeats as error bars.

    `results` is linear_eval.json's list of {"fraction", "accuracy_mean", "accuracy_std", ...}.
    """
    labels = [f"{100 * r['fraction']:g}%" for r in results]
    means = [100 * r["accuracy_mean"] for r in results]
    stds = [100 * r["accuracy_std"] for r in results]
    fig, ax = plt.subplots(figsize=(1.2 * len(results) + 2.5, 3.4))
    bars = ax.bar(labels, means, yerr=stds, capsize=4, color="tab:blue")
    ax.bar_label(bars, labels=[f"{m:.1f}" for m in means], padding=3, fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_xlabel("labelled training images used")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_accuracy_curves(results_by_point, path, xlabel, title):
    """Mean accuracy (error bars: std over repeats) of each label fraction against an ordered x axis.

    `results_by_point` maps each x label (a layer, a pretraining epoch) to linear_eval.json's list of
    {"fraction", "accuracy_mean", "accuracy_std"}, in plotting order.
    """
    labels = list(results_by_point)
    fractions = [r["fraction"] for r in results_by_point[labels[0]]]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(labels) + 2.5), 3.4))
    for fraction in fractions:
        rows = [next(r for r in results_by_point[label] if r["fraction"] == fraction) for label in labels]
        ax.errorbar(range(len(labels)), [100 * r["accuracy_mean"] for r in rows],
                    yerr=[100 * r["accuracy_std"] for r in rows], marker="o", capsize=3,
                    label=f"{100 * fraction:g}% of the labels")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_tsne_panels(points_by_name, labels, class_names, path):
    """Side-by-side scatter plots of 2-D points (e.g. {"h": ..., "z": ...}) coloured by class."""
    labels = np.asarray(labels)
    names = list(points_by_name)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.2), squeeze=False)
    colours = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for ax, name in zip(axes[0], names):
        points = np.asarray(points_by_name[name])
        for index, class_name in enumerate(class_names):
            chosen = labels == index
            if chosen.any():
                ax.scatter(points[chosen, 0], points[chosen, 1], s=8, color=colours(index % colours.N),
                           label=class_name)
        ax.set_title(f"t-SNE of {name}")
        ax.set_xticks([])
        ax.set_yticks([])
    if len(class_names) <= 20:
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2)
    _save(fig, path)
