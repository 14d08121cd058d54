"""How long the up-front check of a file list takes (README, "Running on several machines").

    python benchmarks/filelist_check.py [--lines 100000] [--folder /tmp/simclr_list_bench] [--repeats 3]

Writes `--lines` small real PNG files (8x8, 1000 per sub-folder) under `--folder` (kept, so a rerun
reuses them; default: a temporary folder, removed afterwards) and three lists naming them by
relative path: plain image lines, image lines with a trailing ',label' (each line needs two
lookups: the whole line may be a file name with a comma), and classification lines. Then it
times `filelist.read_file_list` on each, the way every task reads its lists before training,
and prints the median and range in seconds. Local disk, files in the page cache after writing.
"""
import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from simclr_tf.data import filelist  # noqa: E402

PER_FOLDER = 1000


def write_files(folder, lines):
    """`lines` 8x8 PNG files under `folder`; returns their paths relative to it."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buffer, format="PNG")
    data = buffer.getvalue()
    names = []
    for i in range(lines):
        sub = f"part{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        name = f"{sub}/img_{i:07d}.png"
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            with open(path, "wb") as f:
                f.write(data)
        names.append(name)
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--folder", default="", help="where the files go (kept); default a temporary folder")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    folder = args.folder or tempfile.mkdtemp(prefix="simclr_list_bench_")
    try:
        start = time.perf_counter()
        names = write_files(folder, args.lines)
        print(f"{args.lines} files under {folder} ready in {time.perf_counter() - start:.1f} s")
        lists = {"images": ("\n".join(names), filelist.IMAGES),
                 "images,label": ("\n".join(f"{n},{i % 10}" for i, n in enumerate(names)), filelist.IMAGES),
                 "classification": ("\n".join(f"{n},{i % 10}" for i, n in enumerate(names)), filelist.CLASSIFICATION)}
        for name, (text, kind) in lists.items():
            list_path = os.path.join(folder, f"list_{name.replace(',', '_')}.txt")
            with open(list_path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                checked = filelist.read_file_list(list_path, kind, num_classes=10)
                seconds.append(time.perf_counter() - start)
            assert len(checked) == args.lines
            print(f"{name:>15} list of {args.lines} lines: {statistics.median(seconds):.2f} s "
                  f"(range {min(seconds):.2f}-{max(seconds):.2f} s over {args.repeats} runs)")
    finally:
        if not args.folder:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
