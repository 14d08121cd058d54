"""Digits at 32x32, hand-written (scikit-learn) or printed (OpenCV), in random colours or white on black.

A small labelled benchmark whose colour carries no class information: every image gets its own
foreground and background colour, drawn independently of its digit. It is built to the
description of the held-out set an outside reviewer used (1797 = 1297 training + 500 test images,
10 classes, colour independent of the class), but it is not that set (README, "Parity with the
official code"). Two sources of digit shapes (--source):

- `handwritten` (default): scikit-learn's 8x8 `load_digits`, upscaled. Blurry blobs that small
  crops reduce to a few original pixels: nothing learns them in 20 epochs.
- `printed`: the same 1797 labels, each digit drawn anew with one of OpenCV's eight Hershey fonts
  (optionally italic) at a random size, stroke width, rotation (+-20 degrees) and position,
  anti-aliased (drawn at 4x and reduced by area averaging): sharp strokes at the output size.

Writes, under --out_dir:

    images/train/00000.png ...      32x32 RGB PNGs (--size), 8-bit
    images/test/00000.png ...
    pretrain.txt                    training images, one path per line (SimCLR pretraining list)
    train.txt, test.txt             'path,label' lines (classification / linear_eval lists)
    classes.txt                     class names, one per line, line = label ("0" ... "9")
    split.npz                       the same images and labels as arrays (x_train, y_train, x_test,
                                    y_test; uint8 [N, H, W, 3] and int64), for code that does not
                                    read file lists, e.g. a driver around the official SimCLR code
    README.txt                      how the data were made (the command line and the counts)

Paths in the lists are relative to --out_dir, as the project's list format allows.

How an image is made: a grey mask of the digit in [0, 1] (handwritten: the 8x8 digit, values 0-16,
scaled to [0, 1], resized bicubically to --size and clipped, since bicubic overshoots; printed: drawn
as described above) is the alpha mask of a foreground colour over a background colour:
pixel = (1 - a) * background + a * foreground. With --colors=random (the default) both colours are uniform in RGB [0, 255]^3 per image; with --colors=white_on_black
every digit is white on black, so that shape is all an image has (no colour for a contrastive
model to match views by). With random colours and --min_color_distance > 0 a pair closer than
that (Euclidean distance in RGB, 0-441) is redrawn, so that no digit is invisible; the default 0
keeps the colours fully independent.

The split is stratified (500 test images, 48-51 per class; the rest for training) and, like
the colours, a pure function of --seed.

    python benchmarks/make_digits.py --out_dir=digits
"""
import argparse
import json
import os
import sys

import cv2
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

NUM_TEST = 500
DIGIT_MAX = 16.0  # load_digits pixel values are integers in [0, 16]
HERSHEY_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
                 cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL,
                 cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_SCRIPT_COMPLEX)
SUPERSAMPLE = 4  # printed digits are drawn at 4x the output size, then area-averaged
WHITE_ON_BLACK = (np.full(3, 255.0), np.zeros(3))  # (foreground, background) of --colors=white_on_black


def upscale(digit, size):
    """[8, 8] digit in [0, 16] -> [size, size] float32 mask in [0, 1] (bicubic, clipped)."""
    grey = Image.fromarray((np.asarray(digit, np.float32) / DIGIT_MAX).astype(np.float32), mode="F")
    mask = np.asarray(grey.resize((size, size), Image.Resampling.BICUBIC), np.float32)
    return np.clip(mask, 0.0, 1.0)


def draw_printed(digit, size, rng):
    """[size, size] float32 mask in [0, 1] of `digit` (0-9) in a random Hershey font and pose."""
    big = size * SUPERSAMPLE
    font = int(rng.choice(HERSHEY_FONTS)) | (cv2.FONT_ITALIC if rng.random() < 0.3 else 0)
    text = str(int(digit))
    (width, height), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = rng.uniform(0.45, 0.75) * big / max(width, height)  # the digit's longer side: 45-75% of the image
    thickness = max(1, int(round(rng.uniform(0.04, 0.12) * big)))
    (width, height), _ = cv2.getTextSize(text, font, scale, thickness)
    canvas = np.zeros((big, big), np.uint8)
    origin = ((big - width) // 2, (big + height) // 2)
    cv2.putText(canvas, text, origin, font, scale, 255, thickness, cv2.LINE_AA)
    shift = rng.uniform(-0.12, 0.12, size=2) * big
    turn = cv2.getRotationMatrix2D((big / 2.0, big / 2.0), rng.uniform(-20.0, 20.0), 1.0)
    turn[:, 2] += shift
    canvas = cv2.warpAffine(canvas, turn, (big, big), flags=cv2.INTER_LINEAR)
    small = cv2.resize(canvas.astype(np.float32) / 255.0, (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(small, 0.0, 1.0)


def draw_colors(rng, min_distance):
    """(foreground, background): two float RGB colours in [0, 255], at least `min_distance` apart."""
    while True:
        foreground, background = rng.uniform(0.0, 255.0, size=(2, 3))
        if np.linalg.norm(foreground - background) >= min_distance:
            return foreground, background


def colorize(mask, foreground, background):
    """uint8 [H, W, 3] image: the mask blends the background (0) into the foreground (1)."""
    alpha = mask[..., None]
    image = (1.0 - alpha) * background + alpha * foreground
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def make_images(digits, labels, size, rng, min_distance, source, colors):
    """uint8 [N, size, size, 3]: each digit's mask (from `source`) in its own colour pair."""
    images = np.zeros((len(digits), size, size, 3), np.uint8)
    for i, (digit, label) in enumerate(zip(digits, labels)):
        mask = upscale(digit, size) if source == "handwritten" else draw_printed(label, size, rng)
        foreground, background = draw_colors(rng, min_distance) if colors == "random" else WHITE_ON_BLACK
        images[i] = colorize(mask, foreground, background)
    return images


def write_split(out_dir, name, images, labels):
    """Writes the PNGs of one split; returns their paths relative to `out_dir`."""
    folder = os.path.join("images", name)
    os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = os.path.join(folder, f"{i:05d}.png")
        Image.fromarray(image, mode="RGB").save(os.path.join(out_dir, path))
        paths.append(path)
    return paths


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", required=True, help="folder to write (created; files are overwritten)")
    parser.add_argument("--size", type=int, default=32, help="side of the square output images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the colours")
    parser.add_argument("--source", choices=("handwritten", "printed"), default="handwritten",
                        help="digit shapes: scikit-learn's 8x8 hand-written digits, or drawn in Hershey fonts")
    parser.add_argument("--colors", choices=("random", "white_on_black"), default="random",
                        help="a random foreground and background colour per image, or white on black")
    parser.add_argument("--min_color_distance", type=float, default=0.0,
                        help="redraw colour pairs closer than this in RGB (0 = fully independent)")
    args = parser.parse_args(argv)
    if args.colors == "white_on_black" and args.min_color_distance:
        parser.error("--min_color_distance only applies to --colors=random")

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target.astype(np.int64), test_size=NUM_TEST, stratify=digits.target,
        random_state=args.seed)
    # One generator per split, so that the test images do not depend on the training set's size.
    train_rng, test_rng = (np.random.default_rng([args.seed, k]) for k in (1, 2))
    train_images = make_images(x_train, y_train, args.size, train_rng, args.min_color_distance, args.source,
                               args.colors)
    test_images = make_images(x_test, y_test, args.size, test_rng, args.min_color_distance, args.source,
                               args.colors)

    out_dir = args.out_dir
    os.makedirs(out_dir, exist_ok=True)
    train_paths = write_split(out_dir, "train", train_images, y_train)
    test_paths = write_split(out_dir, "test", test_images, y_test)
    write_lines(os.path.join(out_dir, "pretrain.txt"), train_paths)
    write_lines(os.path.join(out_dir, "train.txt"), [f"{p},{y}" for p, y in zip(train_paths, y_train)])
    write_lines(os.path.join(out_dir, "test.txt"), [f"{p},{y}" for p, y in zip(test_paths, y_test)])
    write_lines(os.path.join(out_dir, "classes.txt"), [str(c) for c in range(10)])
    np.savez_compressed(os.path.join(out_dir, "split.npz"), x_train=train_images, y_train=y_train,
                        x_test=test_images, y_test=y_test,
                        train_paths=np.array(train_paths), test_paths=np.array(test_paths))
    info = {"command": " ".join([os.path.basename(sys.argv[0])] + (argv if argv is not None else sys.argv[1:])),
            "source": args.source, "labels": "sklearn.datasets.load_digits (1797 images, 10 classes)",
            "size": args.size, "seed": args.seed, "colors": args.colors,
            "min_color_distance": args.min_color_distance,
            "train_images": len(y_train), "test_images": len(y_test),
            "train_per_class": np.bincount(y_train, minlength=10).tolist(),
            "test_per_class": np.bincount(y_test, minlength=10).tolist()}
    with open(os.path.join(out_dir, "README.txt"), "w", encoding="utf-8") as f:
        f.write(__doc__.split("\n\n")[0] + "\n\n" + json.dumps(info, indent=2) + "\n")
    print(f"Wrote {len(y_train)} training and {len(y_test)} test images of {args.size} px to {out_dir}")


if __name__ == "__main__":
    main()
