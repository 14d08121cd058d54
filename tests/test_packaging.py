"""`pip install .` (not only -e): the wheel holds the library and the command line under simclr_tf/, no
top-level main, config or tasks, and the installed program runs from outside the checkout."""
import glob
import os
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(names in the wheel, folder it was installed into with `pip install --target`)."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(root / "dist"), REPO], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = glob.glob(str(root / "dist" / "*.whl"))[0]
    target = root / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), wheel],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    return zipfile.ZipFile(wheel).namelist(), target


def _tracked_python_files():
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True).stdout.split()
    return [p for p in listed if p.startswith(("simclr_tf/", "tasks/")) or p in ("main.py", "config.py")]


def test_the_wheel_holds_every_module_under_simclr_tf_and_nothing_at_the_top(installed):
    names, _ = installed
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"simclr_tf"}
    for path in _tracked_python_files():
        packaged = path if path.startswith("simclr_tf/") else f"simclr_tf/cli/{path}"
        assert packaged in names, path


def test_the_installed_program_runs_outside_the_checkout(installed, tmp_path):
    _, target = installed
    env = dict(os.environ, PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    run = [sys.executable, "-c", "import sys; from simclr_tf.cli.main import run; sys.argv[0] = 'simclr-tf'; run()"]
    helped = subprocess.run(run + ["--helpfull"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and "--train_file_path" in helped.stdout, helped.stderr[-2000:]
    task = subprocess.run(run + ["--task=pretrain", "--train_file_path=missing.txt"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert task.returncode == 2 and "missing.txt" in task.stderr and "Traceback" not in task.stderr, task.stderr[-2000:]
    where = subprocess.run([sys.executable, "-c", "import simclr_tf.cli.tasks.pretrain as m; print(m.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert where.stdout.startswith(str(target)), (where.stdout, where.stderr[-2000:])
