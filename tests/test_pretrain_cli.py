"""End to end through main.py in a subprocess: outputs, fresh-process loading, resume, user errors."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, assert_user_error, run_main, write_fake_cifar10

pytestmark = pytest.mark.slow

# No diagnostics (test_family_cli and test_diagnostics check them): they cost more than these runs' steps.
# COMMON keeps the default small stem, on which two epochs already lower the loss; the other runs take
# the ImageNet stem, several times cheaper at 32 px, since what they check does not depend on the stem.
NO_DIAGNOSTICS = "--diagnostics_every=0"
IMAGENET_STEM = "--small_stem=false"
COMMON = ["--task=pretrain", "--input_size=32 32", "--batch_size=8", "--num_epochs=2", "--warmup_epochs=1",
          "--seed=1", NO_DIAGNOSTICS]
FAST = [IMAGENET_STEM, NO_DIAGNOSTICS]


def _history(save_path):
    with open(os.path.join(save_path, "history.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_run(demo_data, tmp_path_factory):
    save_path = str(tmp_path_factory.mktemp("pretrain") / "run")
    result = run_main(*COMMON, f"--train_file_path={demo_data.unlabeled}", f"--pretrain_save_path={save_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    return save_path, result


def test_pretrain_writes_every_output(finished_run):
    save_path, result = finished_run
    for name in ("encoder.keras", "projection_head.keras", "history.csv", "loss.png", "augmentations.png",
                 "flags.txt", "checkpoints/state.json"):
        assert os.path.isfile(os.path.join(save_path, name)), name
    assert os.listdir(os.path.join(save_path, "tensorboard"))
    rows = _history(save_path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for column in ("loss", "contrastive_accuracy", "learning_rate", "images_per_second", "optimizer_steps"):
        assert all(np.isfinite(float(r[column])) for r in rows), column
    assert float(rows[-1]["optimizer_steps"]) == 2 * (32 // 8)
    assert all(float(r["images_per_second"]) > 0 for r in rows)
    # It learns: the loss falls, and positives are found far more often than by chance (1 in 2N-1 = 15).
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[-1]["contrastive_accuracy"]) > 2 / 15
    assert "epoch 1/2" in result.stdout and "epoch 2/2" in result.stdout  # the one-line summaries
    assert not [n for n in os.listdir(save_path) if n.startswith(".tmp-")]  # no temporary leftovers


def _encoder_weights(save_path):
    import keras
    return keras.models.load_model(os.path.join(save_path, "encoder.keras"), compile=False).get_weights()


def _assert_same_weights(save_path_a, save_path_b):
    for a, b in zip(_encoder_weights(save_path_a), _encoder_weights(save_path_b)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def rerun_from_flags_file(finished_run, tmp_path_factory):
    """The finished run's flags.txt run again into another folder."""
    save_path, _ = finished_run
    text = open(os.path.join(save_path, "flags.txt")).read()
    assert "--batch_size=8" in text and "--num_epochs=2" in text and "--task=pretrain" in text
    assert "--pretrain_save_path" in text and "--resume" not in text and "--freeze" not in text
    again = str(tmp_path_factory.mktemp("again") / "run")
    result = run_main(f"--flagfile={os.path.join(save_path, 'flags.txt')}", f"--pretrain_save_path={again}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning" not in result.stderr  # the flags file holds only flags the task reads
    return again


def test_flags_file_reproduces_the_run(finished_run, rerun_from_flags_file):
    save_path, _ = finished_run
    first, second = _history(save_path), _history(rerun_from_flags_file)
    assert [r["loss"] for r in first] == [r["loss"] for r in second]
    _assert_same_weights(save_path, rerun_from_flags_file)


def test_encoder_loads_in_a_fresh_process_and_embeds_an_image(finished_run, demo_data):
    save_path, _ = finished_run
    image = open(demo_data.unlabeled).readline().strip()
    code = (
        "import sys, numpy as np, keras, simclr_tf\n"
        "from simclr_tf.data.decode import read_image_resized\n"
        f"encoder = keras.models.load_model({os.path.join(save_path, 'encoder.keras')!r})\n"
        f"x = read_image_resized({os.path.join(os.path.dirname(demo_data.unlabeled), image)!r}, (32, 32))\n"
        "h = encoder(x[None].astype('float32') / 255.0, training=False)\n"
        "print('SHAPE', tuple(h.shape), bool(np.isfinite(np.asarray(h)).all()))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert "SHAPE (1, 512) True" in result.stdout, result.stderr[-3000:]


def test_rerunning_a_finished_run_resumes_at_the_end_and_a_different_config_is_refused(finished_run, demo_data):
    save_path, _ = finished_run
    again = run_main(*COMMON, f"--train_file_path={demo_data.unlabeled}", f"--pretrain_save_path={save_path}")
    assert again.returncode == 0 and "Resuming from epoch 2" in again.stdout, again.stderr[-2000:]
    assert len(_history(save_path)) == 2
    # The kNN monitor only measures: adding a validation list is not a different configuration.
    monitored = run_main(*COMMON, f"--train_file_path={demo_data.unlabeled}", f"--pretrain_save_path={save_path}",
                         f"--val_file_path={demo_data.val}", f"--knn_train_file_path={demo_data.train}")
    assert monitored.returncode == 0 and "Resuming from epoch 2" in monitored.stdout, monitored.stderr[-2000:]
    different = run_main(*COMMON, "--temperature=0.7", f"--train_file_path={demo_data.unlabeled}",
                         f"--pretrain_save_path={save_path}")
    assert_user_error(different, "--pretrain_save_path", "different configuration", "--temperature", "--overwrite")
    assert len(_history(save_path)) == 2


def test_a_run_killed_after_its_first_epoch_resumes_with_the_same_steps(demo_data, tmp_path, finished_run):
    save_path = str(tmp_path / "killed")
    args = [*COMMON, f"--train_file_path={demo_data.unlabeled}", f"--pretrain_save_path={save_path}"]
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "main.py"), *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    state_path = os.path.join(save_path, "checkpoints", "state.json")
    deadline = time.time() + 300
    while not os.path.isfile(state_path) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.load(open(state_path))["epoch"] == 1
    assert not os.path.exists(os.path.join(save_path, "encoder.keras"))

    resumed = run_main(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from epoch 1" in resumed.stdout
    uninterrupted = _history(finished_run[0])
    rows = _history(save_path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [r["optimizer_steps"] for r in rows] == [r["optimizer_steps"] for r in uninterrupted]
    np.testing.assert_allclose([float(r["learning_rate"]) for r in rows],
                               [float(r["learning_rate"]) for r in uninterrupted], rtol=1e-6)
    # Same data order, augmentations and optimizer state after the resume: the same run.
    np.testing.assert_allclose(float(rows[1]["loss"]), float(uninterrupted[1]["loss"]), rtol=1e-4)
    _assert_same_weights(save_path, finished_run[0])


def test_undecodable_file_is_skipped_and_reported(demo_data, tmp_path):
    folder = os.path.dirname(demo_data.unlabeled)
    images = [os.path.join(folder, line.strip()) for line in open(demo_data.unlabeled) if line.strip()][:15]
    broken = tmp_path / "broken.png"
    data = open(images[0], "rb").read()
    broken.write_bytes(data[: len(data) // 2])
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(images + [str(broken)]) + "\n")
    save_path = str(tmp_path / "run")
    result = run_main("--task=pretrain", "--input_size=32 32", "--batch_size=4", "--num_epochs=1", *FAST,
                      f"--train_file_path={listing}", f"--pretrain_save_path={save_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(broken) in open(os.path.join(save_path, "skipped_files.txt")).read()
    assert str(broken) in result.stdout and "skipped=1" in result.stdout


def test_user_errors_exit_2_without_traceback(tmp_path, demo_data):
    missing_list = run_main("--task=pretrain", f"--train_file_path={tmp_path / 'none.txt'}")
    assert_user_error(missing_list, "--train_file_path", "none.txt")

    listing = tmp_path / "list.txt"
    listing.write_text(f"{os.path.dirname(demo_data.unlabeled)}/images/train/00000.png\nnope.png\n")
    missing_image = run_main("--task=pretrain", f"--train_file_path={listing}",
                             f"--pretrain_save_path={tmp_path / 'out'}")
    assert_user_error(missing_image, "line 2", "nope.png", str(listing))
    assert not os.path.exists(tmp_path / "out")  # no partial outputs

    bad_flag = run_main("--task=pretrain", "--input_size=abc")
    assert_user_error(bad_flag, "--input_size")
    no_task = run_main()
    assert_user_error(no_task, "--task")
    too_big = run_main("--task=pretrain", f"--train_file_path={demo_data.unlabeled}", "--batch_size=64",
                       f"--pretrain_save_path={tmp_path / 'big'}")
    assert_user_error(too_big, "--batch_size=64")

    # Every image undecodable: training would wait forever for a first batch.
    broken = tmp_path / "broken.txt"
    for i in range(3):
        (tmp_path / f"broken{i}.png").write_bytes(b"not an image")
    broken.write_text("".join(f"broken{i}.png\n" for i in range(3)))
    nothing_decodes = run_main("--task=pretrain", f"--train_file_path={broken}", "--batch_size=2",
                               f"--pretrain_save_path={tmp_path / 'broken_run'}", timeout=120)
    assert_user_error(nothing_decodes, "--train_file_path", "none of its 3 images can be decoded", "broken0.png")
    assert not os.path.exists(tmp_path / "broken_run")


def test_cifar10_from_a_local_copy(tmp_path):
    write_fake_cifar10(str(tmp_path))
    save_path = str(tmp_path / "run")
    result = run_main("--task=pretrain", "--cifar10", f"--cifar10_dir={tmp_path}", "--batch_size=8",
                      "--num_epochs=1", *FAST, f"--pretrain_save_path={save_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "30 images" in result.stdout and os.path.isfile(os.path.join(save_path, "encoder.keras"))


def test_a_diverging_run_exits_1_with_a_clear_message(demo_data, tmp_path):
    save_path = str(tmp_path / "run")
    result = run_main(*COMMON, IMAGENET_STEM, "--optimizer=sgd", "--learning_rate=1e30", "--warmup_epochs=0",
                      f"--train_file_path={demo_data.unlabeled}", f"--pretrain_save_path={save_path}")
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    assert "training diverged: the loss became" in result.stderr and "--learning_rate" in result.stderr
    assert not os.path.exists(os.path.join(save_path, "encoder.keras"))
