"""One training step under MirroredStrategy on 2 logical CPUs equals the one-device step on the same
global batch (the replica-scaling rule of simclr_tf.training.replicas; synchronised BatchNorm).
The checks run in one subprocess (tests/multi_device_script.py): logical devices must be set up
before TensorFlow starts."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, os.path.join(REPO, "tests", "multi_device_script.py")], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return {row["check"]: row for row in rows}


@pytest.mark.parametrize("check", ["simclr", "classification", "segmentation"])
def test_a_mirrored_step_equals_the_one_device_step(results, check):
    row = results[check]
    assert row["replicas"] == 2
    assert row["loss_mirrored"] == pytest.approx(row["loss_single"], rel=1e-4)
    assert row["max_rel_weight_change_diff"] < 1e-4
