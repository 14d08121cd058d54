"""predictions.png: validation images with their true and predicted label maps overlaid.

Colours are the fixed PASCAL VOC palette of `data.segmentation.voc_palette` (also the palette of
the label-map PNGs `predict` writes), so a class has the same colour in every figure and file.
The image is shown in grey levels under the masks; class 0 (background) is left untinted, other
classes are blended at `alpha`, ignore pixels (255) with VOC's cream "void" colour.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as mpatches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simclr_tf.data.augment import IGNORE_LABEL  # noqa: E402
from simclr_tf.data.label_map_files import voc_palette  # noqa: E402
from simclr_tf.io_utils import save_figure_atomic  # noqa: E402

BACKGROUND = 0
MAX_LEGEND_CLASSES = 20  # beyond this a legend no longer helps


def overlay(image, label_map, alpha=0.6):
    """float [H, W, 3] in [0, 1]: `image` (uint8, or float in [0, 1]) in grey levels, tinted by
    `label_map` [H, W]. Grey, because class colours blended into a colourful image are unreadable."""
    image = _as_float(image)
    grey = np.repeat((image @ np.float32([0.299, 0.587, 0.114]))[..., None], 3, axis=2)
    label_map = np.asarray(label_map)
    colours = voc_palette()[label_map].astype(np.float32) / 255.0
    tinted = (label_map != BACKGROUND)[..., None]
    return np.clip(np.where(tinted, (1 - alpha) * grey + alpha * colours, grey), 0.0, 1.0)


def _as_float(image):
    image = np.asarray(image)
    scale = 255.0 if np.issubdtype(image.dtype, np.integer) else 1.0
    return image.astype(np.float32) / scale


def plot_segmentation_predictions(images, true_maps, predicted_maps, path, num_classes,
                                  title="image | true mask | predicted mask", class_names=None):
    """A grid of (image, true label map overlaid, predicted label map overlaid) triples, two
    triples per row when there are more than four.

    `images` are [H, W, 3] arrays (uint8, or float in [0, 1]; sizes may differ between examples)
    and the maps [H, W] of the matching size. A legend shows the colour of every class, with its
    name from `class_names` (one per class, class 0 first) when given.
    """
    count = len(images)
    if count == 0:
        return
    groups = 2 if count > 4 else 1
    rows = -(-count // groups)
    fig, axes = plt.subplots(rows, 3 * groups, figsize=(2.0 * 3 * groups, 2.0 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, truth, predicted) in enumerate(zip(images, true_maps, predicted_maps)):
        row, group = divmod(i, groups)
        panels = (_as_float(image), overlay(image, truth), overlay(image, predicted))
        for j, panel in enumerate(panels):
            ax = axes[row, 3 * group + j]
            ax.imshow(panel, interpolation="nearest")
            if row == 0:
                ax.set_title(("image", "true", "predicted")[j], fontsize=9)
    fig.legend(handles=_legend_handles(num_classes, class_names), loc="lower center", ncol=min(num_classes + 1, 6), fontsize=7,
               frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.7 / (2.0 * rows + 0.8), 1, 1))
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)


def legend_labels(num_classes, class_names=None):
    """The legend's texts, class 0 first: the class index (the value in the label-map PNGs), with its
    name when `class_names` gives one; at most MAX_LEGEND_CLASSES classes, then '... N more', then
    the ignore value."""
    def named(c, default=""):
        name = class_names[c] if class_names is not None and c < len(class_names) else ""
        name = default if name in ("", str(c)) else name  # a default name ('3') says nothing the index does not
        return f"{c} {name}" if name else str(c)
    labels = [f"{named(0, 'background')} (untinted)"]
    shown = min(num_classes, MAX_LEGEND_CLASSES)
    labels += [named(c) for c in range(1, shown)]
    if shown < num_classes:
        labels.append(f"... {num_classes - shown} more")
    return labels + [f"{IGNORE_LABEL} (ignore)"]


def _legend_handles(num_classes, class_names=None):
    palette = voc_palette() / 255.0
    labels = legend_labels(num_classes, class_names)
    shown = min(num_classes, MAX_LEGEND_CLASSES)
    handles = [mpatches.Patch(facecolor="white", edgecolor="grey", label=labels[0])]
    handles += [mpatches.Patch(color=palette[c], label=labels[c]) for c in range(1, shown)]
    if shown < num_classes:
        handles.append(mpatches.Patch(color="none", label=labels[shown]))
    handles.append(mpatches.Patch(color=palette[IGNORE_LABEL], label=labels[-1]))
    return handles
