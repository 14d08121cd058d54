"""Label-map files that segmentation writes: palette PNGs of class indices and their names.

The palette is PASCAL VOC's, the usual colour map of indexed label maps, so predictions open in any
image viewer with the colours segmentation tools use, and figures (evaluation/segmentation_plots)
show every class in the same colour as the files.
"""
import os

import numpy as np
from PIL import Image

from simclr_tf.data.augment import IGNORE_LABEL
from simclr_tf.io_utils import atomic_path


def voc_palette():
    """The PASCAL VOC colour map [256, 3] uint8 (0 black, 1 dark red, 2 green, ...; 255 is cream
    (224, 224, 192) as VOC's "void"), the usual palette of indexed label maps."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, colour = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette[index] = colour
    palette[IGNORE_LABEL] = (224, 224, 192)
    return palette


def write_label_map_png(path, label_map):
    """Writes a [H, W] uint8 label map as a palette PNG (indices = classes, `voc_palette` colours),
    atomically."""
    image = Image.fromarray(np.asarray(label_map, np.uint8), mode="P")
    image.putpalette(voc_palette().ravel().tolist())
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")


def label_map_file_names(image_paths):
    """One '<stem>.png' per image, in list order; a repeated stem gets '_2', '_3', ... (the first
    free one, compared case-insensitively), so names are unique and depend only on the list's
    order. Commas in a stem become '_' so the names can stand in a 'path,labelmap' list."""
    taken, names = set(), []
    for path in image_paths:
        stem = os.path.splitext(os.path.basename(path))[0].replace(",", "_") or "image"
        name, k = f"{stem}.png", 2
        while name.lower() in taken:  # macOS and Windows file systems ignore case
            name, k = f"{stem}_{k}.png", k + 1
        taken.add(name.lower())
        names.append(name)
    return names

