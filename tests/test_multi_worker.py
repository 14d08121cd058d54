"""--strategy=multi_worker with two worker processes on localhost (MultiWorkerMirroredStrategy from
TF_CONFIG): only the chief writes the run folder, a job killed after its first epoch and started again
on both workers resumes there and ends with the uninterrupted run's steps and losses."""
import csv
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(args, ports):
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    processes = []
    for index in range(len(ports)):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen([sys.executable, os.path.join(REPO, "main.py"), *args], cwd=REPO, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return processes


def _finish(processes, timeout=600):
    outputs = [p.communicate(timeout=timeout) for p in processes]
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs)]


def _losses(save_path):
    with open(os.path.join(save_path, "history.csv")) as f:
        return [(row["epoch"], row["optimizer_steps"], row["loss"]) for row in csv.DictReader(f)]


def test_two_workers_train_write_only_the_chiefs_folder_and_resume_after_a_kill(demo_data, tmp_path):
    args = ["--task=pretrain", "--strategy=multi_worker", "--input_size=32 32", "--small_stem=false", "--batch_size=8",
            "--num_epochs=2", "--warmup_epochs=0", "--diagnostics_every=0", f"--train_file_path={demo_data.unlabeled}"]
    temporary_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "simclr-tf-worker-*")))
    uninterrupted = str(tmp_path / "uninterrupted")
    for code, out, err in _finish(_start_workers(args + [f"--pretrain_save_path={uninterrupted}"], _free_ports(2))):
        assert code == 0, err[-3000:]
    assert "(chief)" in out or "worker" in out
    assert os.path.isfile(os.path.join(uninterrupted, "encoder.keras"))
    # The non-chief worker wrote into a temporary folder, removed when it ended.
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "simclr-tf-worker-*"))) == temporary_before

    killed = str(tmp_path / "killed")
    processes = _start_workers(args + [f"--pretrain_save_path={killed}"], _free_ports(2))
    state = os.path.join(killed, "checkpoints", "state.json")
    deadline = time.time() + 400
    while not os.path.isfile(state) and time.time() < deadline and all(p.poll() is None for p in processes):
        time.sleep(0.1)
    for p in processes:  # one worker dies; the other would wait for it forever: both are stopped
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert json.load(open(state))["epoch"] < 2
    results = _finish(_start_workers(args + [f"--pretrain_save_path={killed}"], _free_ports(2)))
    for code, out, err in results:
        assert code == 0 and "Resuming from epoch" in out, err[-3000:]
    assert _losses(killed) == _losses(uninterrupted)
