"""The README's Python API snippet runs as written (on the tiny demo data, in a fresh folder), and what it
saves is a pretraining folder the command line reads."""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, run_main

pytestmark = pytest.mark.slow


def _snippet():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    block = re.search(r"<!-- api-snippet:start -->\n```python\n(.*?)```\n<!-- api-snippet:end -->", readme, re.S)
    assert block, "the README lost its api-snippet markers"
    return block.group(1)


def test_the_readme_snippet_runs_as_written_and_its_folder_feeds_the_command_line(demo_data, tmp_path):
    code = _snippet()
    assert len(code.strip().splitlines()) < 15
    os.symlink(os.path.dirname(demo_data.unlabeled), tmp_path / "demo_data")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(None, 1280)" in result.stdout and "epoch 2/2" in result.stdout
    saved = tmp_path / "logs" / "api"
    assert (saved / "encoder.keras").is_file() and (saved / "checkpoints" / "state.json").is_file()
    again = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "epoch 1/2" not in again.stdout, again.stderr[-3000:]  # resumed at the end
    probe = run_main("--task=linear_eval", "--input_size=32 32", "--batch_size=16", "--train_fractions=1.0",
                     f"--train_file_path={demo_data.train}", f"--val_file_path={demo_data.val}",
                     f"--pretrain_save_path={saved}")
    assert probe.returncode == 0 and "Encoder: pretrained" in probe.stdout, probe.stderr[-3000:]
