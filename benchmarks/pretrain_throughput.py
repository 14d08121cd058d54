"""Pretraining throughput on this machine: input pipeline alone, and full SimCLR training steps.

    python benchmarks/pretrain_throughput.py [--configs resnet18:32,resnet18:32:imagenet,resnet50:224] [--batch 128]

A config is backbone:image_size[:stem], stem "small" or "imagenet" (default: chosen by image size).

Prints source images per second (each gives two views) and the process's peak memory. Images are
written to a temporary folder as PNG files first, so decoding is measured too. Not a test.
"""
import argparse
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as main.py does; set it to 0 to compare
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from simclr_tf.data.augment import AugmentConfig, default_blur  # noqa: E402
from simclr_tf.data.pipeline import pretrain_dataset  # noqa: E402
from simclr_tf.data.sources import FileImageSource  # noqa: E402
from simclr_tf.models.heads import build_projection_head  # noqa: E402
from simclr_tf.models.resnet import build_resnet, feature_dim, small_stem_default  # noqa: E402
from simclr_tf.training.lars import LARS  # noqa: E402
from simclr_tf.training.simclr_model import SimCLRModel  # noqa: E402


def write_images(folder, count, size):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"{i:05d}.jpg")
        # Smooth random images compress like photos; pure noise would make decoding unrealistically slow.
        small = rng.integers(0, 255, (size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def pipeline_rate(paths, size, batch, batches):
    config = AugmentConfig(crop_size=(size, size), blur=default_blur((size, size)))
    dataset = pretrain_dataset(FileImageSource(paths, (size, size)), config, batch, seed=0)
    iterator = iter(dataset)
    next(iterator)  # warm-up: tracing, thread pools
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def training_rate(paths, backbone, size, small_stem, batch, steps):
    config = AugmentConfig(crop_size=(size, size), blur=default_blur((size, size)))
    dataset = pretrain_dataset(FileImageSource(paths, (size, size)), config, batch, seed=0)
    encoder = build_resnet(backbone, small_stem=small_stem, image_size=(size, size))
    model = SimCLRModel(encoder, build_projection_head(feature_dim(encoder)), temperature=0.2)
    model.compile(optimizer=LARS(0.3, weight_decay=1e-6))
    model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0)  # warm-up: tracing
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="resnet18:32,resnet18:32:imagenet,resnet50:224",
                        help="comma-separated backbone:image_size[:small|imagenet] configs")
    parser.add_argument("--batch", type=int, default=128, help="source images per batch (views = 2x)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--pipeline_batches", type=int, default=10, help="timed pipeline batches")
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, TF_ENABLE_ONEDNN_OPTS="
          f"{os.environ['TF_ENABLE_ONEDNN_OPTS']}, batch {args.batch} images "
          f"({2 * args.batch} views)")
    for item in args.configs.split(","):
        backbone, size, *stem = item.split(":")
        size = int(size)
        small_stem = {"small": True, "imagenet": False}[stem[0]] if stem else small_stem_default(size)
        with tempfile.TemporaryDirectory() as folder:
            paths = write_images(folder, args.batch * 2, size)
            pipe = pipeline_rate(paths, size, args.batch, args.pipeline_batches)
            train = training_rate(paths, backbone, size, small_stem, args.batch, args.steps)
        stem_name = "small" if small_stem else "ImageNet"
        print(f"{backbone} @ {size}x{size}, {stem_name} stem: input pipeline {pipe:8.1f} img/s | training step {train:7.2f} img/s "
              f"| peak RSS {peak_rss_gb():.2f} GB", flush=True)


if __name__ == "__main__":
    main()
