"""Shared fixtures: a tiny demo data set built once per session, and helpers to run main.py."""
import contextlib
import os
import pickle
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # fast convolution gradients on CPU (see main.py)

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """32 train / 16 val images at 32x32 of the project's own demo data (lists + label maps)."""
    from simclr_tf.data.demo import generate_demo_dataset
    return generate_demo_dataset(str(tmp_path_factory.mktemp("demo")), num_train=32, num_val=16,
                                 image_size=32, seed=0)


def run_main(*args, timeout=600, env=None):
    """Runs `python main.py ARGS` in a subprocess; returns the CompletedProcess (text mode)."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1", **(env or {}))
    return subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=full_env)


def assert_user_error(result, *fragments):
    """Exit status 2, no traceback, and every fragment in stderr."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


def write_fake_cifar10(folder, per_batch=6):
    """A CIFAR-10 "python version" folder with `per_batch` random images in each of its 6 batches."""
    import numpy as np
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f)


@contextlib.contextmanager
def parsed(argv):
    """The global absl FLAGS parsed from `argv` (after main.py) for the duration of the block."""
    from absl import flags
    import config  # noqa: F401 (defines the flags)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["main.py", *argv])
    try:
        yield flags.FLAGS
    finally:
        flags.FLAGS.unparse_flags()


def load_script(relative_path):
    """A script of the repository (e.g. "benchmarks/recipe_sweep.py") as a module, for its helpers."""
    import importlib.util
    path = os.path.join(REPO, relative_path)
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
