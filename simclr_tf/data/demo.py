"""A small synthetic demo dataset: one shape per image on a textured background.

Used by the README's demo to pretrain SimCLR, then fine-tune a classifier and a
segmentation model, without downloading anything.  Pure NumPy + OpenCV.

Each image shows ONE main shape whose kind is the image's class (circle, square,
triangle, cross), with a random colour, size (50-80% of the side), position and
rotation (up to 20 degrees from upright), on a low-contrast textured background (smooth
noise, stripes, plaid, linear or radial gradient, in random colours, at 30% of their
contrast), plus sometimes a small irregular distractor blob.
Shape colour, background and distractor are drawn independently of the class, so a
classifier has to look at the shape's outline.

Label maps are single-channel 8-bit PNGs: 0 = background (distractors included),
``class_index + 1`` inside the main shape, and 255 ("ignore") on the pixels that the
shape's boundary only partly covers (a band about one pixel wide).  The shape is
drawn once, as a supersampled coverage mask, and both the image and the label map are
derived from that mask, so they are exactly aligned.

Output layout (list paths are relative to ``out_dir``, the lists' folder)::

    out_dir/images/{train,val}/NNNNN.png       RGB images
    out_dir/labelmaps/{train,val}/NNNNN.png    label maps
    out_dir/train_unlabeled.txt                "images/train/00000.png"
    out_dir/train.txt, val.txt                 "images/train/00000.png,2"
    out_dir/train_seg.txt, val_seg.txt         "images/train/00000.png,labelmaps/train/00000.png"
    out_dir/classes.txt, README.txt, params.json

Generation is deterministic for a given seed.  ``params.json`` is written last; if it
matches the requested parameters and everything it lists exists, a second call
returns at once without rewriting anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Callable, Optional

import cv2
import numpy as np

from simclr_tf.errors import UserError
from simclr_tf.io_utils import write_text_atomic

CLASS_NAMES = ("circle", "square", "triangle", "cross")

IGNORE_LABEL = 255

# Bump when the images the generator draws change, so cached datasets are rebuilt.
GENERATOR_VERSION = 2

# Shape extent as a fraction of the image side, largest rotation from the upright pose (radians),
# and how much of its own contrast the background texture keeps. Version 1 drew smaller shapes in
# any orientation on full-contrast textures: even supervised training from scratch stayed near
# chance at the demo's CPU budget, and SimCLR matched views by their backgrounds (README, demo).
SHAPE_SIZE_RANGE = (0.50, 0.80)
MAX_ROTATION = np.deg2rad(20.0)
BACKGROUND_CONTRAST = 0.3

_SUPERSAMPLE = 4   # the shape mask is drawn at this many times the image size
_SHIFT = 4         # cv2 fractional bits for sub-pixel vertex coordinates
_SPLIT_IDS = {"train": 0, "val": 1}

_LIST_NAMES = {
    "unlabeled": "train_unlabeled.txt",
    "train": "train.txt",
    "val": "val.txt",
    "train_seg": "train_seg.txt",
    "val_seg": "val_seg.txt",
}


@dataclasses.dataclass(frozen=True)
class DemoLists:
    """Absolute paths of the list files written by `generate_demo_dataset`."""

    unlabeled: str   # train_unlabeled.txt: one image path per line (all train images)
    train: str       # train.txt: "path,label"
    val: str         # val.txt: "path,label"
    train_seg: str   # train_seg.txt: "path,labelmap_path"
    val_seg: str     # val_seg.txt: "path,labelmap_path"
    num_classes: int
    num_seg_classes: int   # num_classes + 1 (0 = background)


# ---------------------------------------------------------------------------------
# Geometry


def _shape_polygon(kind: str, size: float, angle: float) -> np.ndarray:
    """Vertices (N, 2) float, centred on the origin, for a shape of extent `size`."""
    if kind == "circle":
        t = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * (size / 2.0)
    elif kind == "square":
        h = 0.85 * size / 2.0
        pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]], dtype=np.float64)
    elif kind == "triangle":
        # Equilateral triangle of height `size`, centred on its centroid.
        r = size * 2.0 / 3.0
        t = np.array([-np.pi / 2, -np.pi / 2 + 2 * np.pi / 3, -np.pi / 2 + 4 * np.pi / 3])
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * r
    elif kind == "cross":
        h = size / 2.0
        w = 0.18 * size   # half the arm width (arm width = 36% of the span)
        pts = np.array(
            [[-w, -h], [w, -h], [w, -w], [h, -w], [h, w], [w, w],
             [w, h], [-w, h], [-w, w], [-h, w], [-h, -w], [-w, -w]],
            dtype=np.float64,
        )
    else:  # pragma: no cover - CLASS_NAMES is fixed
        raise ValueError(f"unknown shape {kind!r}")
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return pts @ rot.T


def _coverage(polygon: np.ndarray, image_size: int) -> np.ndarray:
    """Fraction (0..1, float32) of each pixel covered by `polygon` (pixel coordinates)."""
    big = image_size * _SUPERSAMPLE
    mask = np.zeros((big, big), np.uint8)
    # Pixel (i, j) spans [j, j+1) x [i, i+1) in continuous coordinates; at the high
    # resolution, sub-pixel k's centre sits at (k + 0.5) / _SUPERSAMPLE.
    pts = (polygon * _SUPERSAMPLE - 0.5) * (1 << _SHIFT)
    pts = np.round(pts).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_8, shift=_SHIFT)
    small = cv2.resize(mask, (image_size, image_size), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


# ---------------------------------------------------------------------------------
# Backgrounds


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.random(3).astype(np.float32)


def _grid(image_size: int):
    coords = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size
    return np.meshgrid(coords, coords)   # x, y in (0, 1)


def _smooth_noise(rng: np.random.Generator, image_size: int, channels: int) -> np.ndarray:
    g = int(rng.integers(2, 7))
    low = rng.random((g, g, channels)).astype(np.float32)
    field = cv2.resize(low, (image_size, image_size), interpolation=cv2.INTER_CUBIC)
    field = field.reshape(image_size, image_size, channels)
    lo, hi = field.min(), field.max()
    return (field - lo) / max(hi - lo, 1e-6)


def _stripes(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    theta = rng.uniform(0.0, np.pi)
    freq = rng.uniform(1.5, 6.0)          # cycles per image side
    phase = rng.uniform(0.0, 2.0 * np.pi)
    t = 0.5 + 0.5 * np.sin(2.0 * np.pi * freq * (x * math.cos(theta) + y * math.sin(theta)) + phase)
    sharp = rng.uniform(1.0, 5.0)          # 1 = sinusoidal, larger = hard-edged stripes
    return np.clip((t - 0.5) * sharp + 0.5, 0.0, 1.0)


def _background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """(S, S, 3) float32 RGB in [0, 1]; independent of the class."""
    x, y = _grid(image_size)
    kind = rng.integers(0, 6)
    if kind == 0:     # colour noise: every channel its own smooth field
        base = _random_colour(rng)
        amp = rng.uniform(0.2, 0.6)
        bg = base + amp * (_smooth_noise(rng, image_size, 3) - 0.5)
        return np.clip(bg, 0.0, 1.0).astype(np.float32)
    if kind == 1:     # two-colour smooth noise
        t = _smooth_noise(rng, image_size, 1)[..., 0]
    elif kind == 2:   # stripes
        t = _stripes(rng, x, y)
    elif kind == 3:   # plaid
        t = 0.5 * (_stripes(rng, x, y) + _stripes(rng, x, y))
    elif kind == 4:   # linear gradient
        theta = rng.uniform(0.0, 2.0 * np.pi)
        p = x * math.cos(theta) + y * math.sin(theta)
        t = (p - p.min()) / max(float(p.max() - p.min()), 1e-6)
    else:             # radial gradient
        cx, cy = rng.uniform(-0.2, 1.2, size=2)
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        t = (d - d.min()) / max(float(d.max() - d.min()), 1e-6)
    c1 = _random_colour(rng)
    c2 = np.clip(c1 + rng.uniform(-0.6, 0.6, size=3), 0.0, 1.0).astype(np.float32)
    t = t[..., None].astype(np.float32)
    return (c1 * (1.0 - t) + c2 * t).astype(np.float32)


def _pick_shape_colour(rng: np.random.Generator, bg_pixels: np.ndarray) -> np.ndarray:
    """A uniformly random colour, redrawn while it is too close to the background under it.

    The choice depends only on the background, never on the class.
    """
    best, best_score = None, -1.0
    for _ in range(40):
        c = _random_colour(rng)
        d = np.linalg.norm(bg_pixels - c, axis=1)
        score = float(np.percentile(d, 10))
        if score >= 0.3:
            return c
        if score > best_score:
            best, best_score = c, score
    return best


# ---------------------------------------------------------------------------------
# One sample


def _render_sample(rng: np.random.Generator, label: int, image_size: int):
    """Returns (image uint8 (S,S,3) RGB, label map uint8 (S,S))."""
    s = image_size
    img = _background(rng, s)
    mean = img.mean(axis=(0, 1), keepdims=True)
    img = mean + BACKGROUND_CONTRAST * (img - mean)

    # Optional small distractor: an irregular blob under the main shape.
    if rng.random() < 0.5:
        n = int(rng.integers(5, 9))
        ang = np.sort(rng.uniform(0.0, 2.0 * np.pi, n))
        r = rng.uniform(0.06, 0.12) * s * rng.uniform(0.6, 1.0, n)
        blob = np.stack([np.cos(ang) * r, np.sin(ang) * r], axis=1) + rng.uniform(0.0, s, 2)
        a = _coverage(blob, s)[..., None]
        img = img * (1.0 - a) + _random_colour(rng) * a

    # Main shape.
    kind = CLASS_NAMES[label]
    size = rng.uniform(*SHAPE_SIZE_RANGE) * s
    poly = _shape_polygon(kind, size, rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    slack = 0.08 * size   # up to this much may stick out of the image
    centre = np.array([rng.uniform(-lo[k] - slack, s - hi[k] + slack) for k in range(2)])
    poly = poly + centre
    alpha = _coverage(poly, s)

    region = alpha > 0.0
    colour = _pick_shape_colour(rng, img[region])
    # Mild shading across the shape so it is not perfectly flat.
    x, y = _grid(s)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    shade = rng.uniform(0.0, 0.15) * ((x - 0.5) * math.cos(theta) + (y - 0.5) * math.sin(theta))
    fill = np.clip(colour + shade[..., None], 0.0, 1.0)
    a = alpha[..., None]
    img = img * (1.0 - a) + fill * a

    img = img + rng.normal(0.0, rng.uniform(0.0, 0.03), img.shape).astype(np.float32)
    img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)

    labelmap = np.zeros((s, s), np.uint8)
    labelmap[alpha >= 0.5] = label + 1
    eps = 1.0 / (_SUPERSAMPLE * _SUPERSAMPLE * 2)
    labelmap[(alpha > eps) & (alpha < 1.0 - eps)] = IGNORE_LABEL
    return img, labelmap


def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_IDS[split], index, 1]))


def _split_labels(seed: int, split: str, n: int, num_classes: int) -> np.ndarray:
    """Stratified labels (exactly n / num_classes per class when divisible), shuffled."""
    labels = np.arange(n) % num_classes
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_IDS[split], 0]))
    return rng.permutation(labels)


def render_demo_sample(seed: int, split: str, index: int, label: int, image_size: int = 32):
    """Draws one sample in memory (no files): (image RGB uint8, label map uint8)."""
    return _render_sample(_sample_rng(seed, split, index), label, image_size)


# ---------------------------------------------------------------------------------
# Files


def _write_png(path: str, array: np.ndarray) -> None:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:  # pragma: no cover
        raise OSError(f"could not encode {path}")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def _lists(out_dir: str) -> DemoLists:
    n = len(CLASS_NAMES)
    return DemoLists(
        **{k: os.path.join(out_dir, v) for k, v in _LIST_NAMES.items()},
        num_classes=n,
        num_seg_classes=n + 1,
    )


def _is_complete(out_dir: str, params: dict) -> bool:
    """True when out_dir holds a finished dataset generated with exactly `params`."""
    try:
        with open(os.path.join(out_dir, "params.json"), encoding="utf-8") as f:
            if json.load(f) != params:
                return False
        for key in ("train_seg", "val_seg"):
            with open(os.path.join(out_dir, _LIST_NAMES[key]), encoding="utf-8") as f:
                lines = [ln for ln in f.read().splitlines() if ln]
            expected = params["num_train"] if key == "train_seg" else params["num_val"]
            if len(lines) != expected:
                return False
            for line in lines:
                for rel in line.split(","):
                    if not os.path.isfile(os.path.join(out_dir, rel)):
                        return False
        return all(os.path.isfile(os.path.join(out_dir, v)) for v in _LIST_NAMES.values())
    except (OSError, ValueError):
        return False


def _readme(params: dict) -> str:
    names = ", ".join(f"{i} = {c}" for i, c in enumerate(CLASS_NAMES))
    return (
        "SimCLR-TF synthetic demo dataset\n"
        "================================\n\n"
        f"{params['num_train']} training and {params['num_val']} validation RGB images of "
        f"{params['image_size']}x{params['image_size']} pixels (seed {params['seed']}).\n"
        "Each image shows one main shape, whose kind is the image's class, with a random\n"
        "colour, size (50-80% of the side), position and rotation (up to 20 degrees), on a\n"
        "low-contrast textured background (smooth noise, stripes, plaid or gradients in random\n"
        "colours), sometimes with a small\n"
        "irregular distractor blob. Colour and background are independent of the class:\n"
        "only the shape's outline tells the classes apart.\n\n"
        f"Classes (classes.txt, line order = label): {names}.\n\n"
        "Label maps (labelmaps/): single-channel 8-bit PNG, 0 = background (distractors\n"
        "included), class index + 1 inside the main shape, 255 = ignore (the ~1-pixel band\n"
        "the shape's anti-aliased boundary only partly covers).\n\n"
        "Lists (paths relative to this folder):\n"
        "  train_unlabeled.txt  image path per line (all training images, for pretraining)\n"
        "  train.txt, val.txt   image_path,label\n"
        "  train_seg.txt, val_seg.txt  image_path,labelmap_path\n"
    )


def generate_demo_dataset(
    out_dir: str,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 32,
    seed: int = 0,
    progress: Optional[Callable[[int, int], None]] = None,
) -> DemoLists:
    """Writes the demo dataset under `out_dir` (see the module docstring) and returns its lists.

    `progress(done, total)` is called after each image, if given.  If `out_dir` already
    holds a complete dataset generated with the same parameters, nothing is rewritten.
    """
    for name, value, minimum in (("num_train", num_train, 1), ("num_val", num_val, 0),
                                 ("image_size", image_size, 16)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise UserError(f"--{name} must be an integer >= {minimum}, got {value!r}")
    params = {
        "generator_version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": int(image_size),
        "seed": int(seed),
        "classes": list(CLASS_NAMES),
    }
    out_dir = os.path.abspath(os.fspath(out_dir))
    lists = _lists(out_dir)
    if _is_complete(out_dir, params):
        return lists

    # Invalidate any previous dataset first: lists only reappear once all images exist.
    os.makedirs(out_dir, exist_ok=True)
    for name in list(_LIST_NAMES.values()) + ["params.json"]:
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            os.remove(path)

    num_classes = len(CLASS_NAMES)
    total = num_train + num_val
    done = 0
    rows = {}
    for split, n in (("train", num_train), ("val", num_val)):
        img_dir = os.path.join(out_dir, "images", split)
        lbl_dir = os.path.join(out_dir, "labelmaps", split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(lbl_dir, exist_ok=True)
        labels = _split_labels(seed, split, n, num_classes)
        rows[split] = []
        for i in range(n):
            label = int(labels[i])
            img, labelmap = render_demo_sample(seed, split, i, label, image_size)
            name = f"{i:05d}.png"
            _write_png(os.path.join(img_dir, name), img)
            _write_png(os.path.join(lbl_dir, name), labelmap)
            rows[split].append((f"images/{split}/{name}", label, f"labelmaps/{split}/{name}"))
            done += 1
            if progress is not None:
                progress(done, total)

    write_text_atomic(os.path.join(out_dir, "classes.txt"), "".join(c + "\n" for c in CLASS_NAMES))
    write_text_atomic(os.path.join(out_dir, "README.txt"), _readme(params))
    write_text_atomic(lists.unlabeled, "".join(f"{p}\n" for p, _, _ in rows["train"]))
    write_text_atomic(lists.train, "".join(f"{p},{c}\n" for p, c, _ in rows["train"]))
    write_text_atomic(lists.val, "".join(f"{p},{c}\n" for p, c, _ in rows["val"]))
    write_text_atomic(lists.train_seg, "".join(f"{p},{m}\n" for p, _, m in rows["train"]))
    write_text_atomic(lists.val_seg, "".join(f"{p},{m}\n" for p, _, m in rows["val"]))
    write_text_atomic(os.path.join(out_dir, "params.json"), json.dumps(params, indent=2) + "\n")
    return lists


# ---------------------------------------------------------------------------------
# CLI


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simclr_tf.data.demo",
        description="Generate the synthetic shapes demo dataset (images, label maps, lists).",
    )
    parser.add_argument("out_dir", help="folder to write the dataset to")
    parser.add_argument("--num_train", type=int, default=1000)
    parser.add_argument("--num_val", type=int, default=200)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    def show(done, total):
        if done == total or done % max(1, total // 20) == 0:
            print(f"\rgenerating {done}/{total}", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)

    try:
        lists = generate_demo_dataset(args.out_dir, args.num_train, args.num_val,
                                      args.image_size, args.seed, progress=show)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"classes: {lists.num_classes} ({', '.join(CLASS_NAMES)}); "
          f"segmentation classes: {lists.num_seg_classes} (0 = background, 255 = ignore)")
    for field in ("unlabeled", "train", "val", "train_seg", "val_seg"):
        print(f"{field:10s} {getattr(lists, field)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
