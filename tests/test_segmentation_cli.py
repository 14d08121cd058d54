"""Segmentation, evaluate and predict end to end through main.py in a subprocess at 32x32.

One random-init fine-tuning run (module fixture) is shared by the output, fresh-process, resume,
evaluate and predict tests; a second run checks the pretrained + --freeze path.
"""
import csv
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, assert_user_error, run_main

pytestmark = pytest.mark.slow

NUM_CLASSES = 5
# The ImageNet stem: several times cheaper at 32 px; test_decoder checks the decoder on both stems.
SMALL = ["--input_size=32 32", "--small_stem=false", "--batch_size=8", "--num_epochs=1", "--seed=1"]


def _train_args(demo_data, save_path, pretrain_path, *extra):
    return ["--task=segmentation", *SMALL, f"--train_file_path={demo_data.train_seg}",
            f"--val_file_path={demo_data.val_seg}", f"--num_classes={NUM_CLASSES}",
            f"--finetune_save_path={save_path}", f"--pretrain_save_path={pretrain_path}", *extra]


@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    """A random-init run with class weights, rotation and a training fraction."""
    folder = tmp_path_factory.mktemp("segmentation")
    args = _train_args(demo_data, str(folder / "run"), str(folder / "no_pretraining"),
                       "--class_weights=auto", "--rotate", "--train_fraction=0.75")
    result = run_main(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return str(folder / "run"), args, result


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_segmentation_writes_every_output(trained):
    save_path, _, result = trained
    for name in ("model.keras", "history.csv", "flags.txt", "finetune.json", "metrics.json", "predictions.png",
                 "loss.png", "checkpoints/state.json"):
        assert os.path.isfile(os.path.join(save_path, name)), name
    assert os.listdir(os.path.join(save_path, "tensorboard"))
    assert not [n for n in os.listdir(save_path) if n.startswith(".tmp-")]
    info = _json(os.path.join(save_path, "finetune.json"))
    assert info["task"] == "segmentation" and info["num_classes"] == NUM_CLASSES
    assert info["input_size"] == [32, 32] and info["crop_size"] == [32, 32] and info["pretrained"] is False
    assert len(info["class_weights"]) == NUM_CLASSES and min(info["class_weights"]) > 0
    metrics = _json(os.path.join(save_path, "metrics.json"))
    assert metrics["num_samples"] == 16
    assert 0.0 <= metrics["mean_iou"] <= 1.0 and 0.0 <= metrics["pixel_accuracy"] <= 1.0
    assert len(metrics["per_class_iou"]) == NUM_CLASSES
    assert all(v is None or 0.0 <= v <= 1.0 for v in metrics["per_class_iou"])
    with open(os.path.join(save_path, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["optimizer_steps"]) == 24 // 8  # 0.75 of 32 images
    assert float(rows[0]["val_mean_iou"]) == pytest.approx(metrics["mean_iou"], abs=1e-6)
    first_lines = result.stdout.splitlines()[:4]
    assert any("RANDOMLY INITIALISED" in line for line in first_lines), first_lines
    assert "Class weights" in result.stdout and "24 training images" in result.stdout
    # The run's first lines name the optimiser and learning rate it chose (README, "Fine-tuning defaults").
    assert "optimizer adam (the segmentation default), peak lr 0.001 (default 0.001, unscaled)" in result.stdout
    assert "val_mean_iou=" in result.stdout and "mean IoU" in result.stdout


def test_model_loads_in_a_fresh_process_and_segments_any_size(trained):
    save_path, _, _ = trained
    code = ("import numpy as np, keras, simclr_tf\n"
            f"model = keras.models.load_model({os.path.join(save_path, 'model.keras')!r})\n"
            "logits = model(np.random.rand(1, 33, 47, 3).astype('float32'), training=False)\n"
            "print('SHAPE', tuple(logits.shape), bool(np.isfinite(np.asarray(logits)).all()))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert f"SHAPE (1, 33, 47, {NUM_CLASSES}) True" in result.stdout, result.stderr[-3000:]


def test_rerun_resumes_at_the_end(trained):
    save_path, args, _ = trained
    again = run_main(*args)
    assert again.returncode == 0 and "Resuming from epoch 1" in again.stdout, again.stderr[-2000:]
    assert os.path.isfile(os.path.join(save_path, "metrics.json"))


def test_evaluate_rewrites_the_same_metrics(trained, demo_data):
    save_path, _, _ = trained
    expected = _json(os.path.join(save_path, "metrics.json"))
    for name in ("metrics.json", "predictions.png"):
        os.remove(os.path.join(save_path, name))
    result = run_main("--task=evaluate", f"--val_file_path={demo_data.val_seg}", f"--finetune_save_path={save_path}",
                      "--batch_size=8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(os.path.join(save_path, "predictions.png"))
    metrics = _json(os.path.join(save_path, "metrics.json"))
    assert metrics["num_samples"] == expected["num_samples"]
    assert metrics["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-6)
    assert metrics["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=1e-6)


def test_predict_writes_label_maps_at_the_original_sizes(trained, tmp_path):
    save_path, _, _ = trained
    rng = np.random.default_rng(0)
    sizes = {"a/scene.png": (40, 36), "b/scene.jpg": (21, 50), "b/other.png": (32, 32)}
    for relative, (height, width) in sizes.items():
        os.makedirs(tmp_path / os.path.dirname(relative), exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(tmp_path / relative)
    listing = tmp_path / "test.txt"
    listing.write_text("".join(f"{p}\n" for p in sizes))
    output = tmp_path / "out"
    result = run_main("--task=predict", f"--test_file_path={listing}", f"--finetune_save_path={save_path}",
                      f"--output_path={output}", "--batch_size=8")
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {"scene.png": (40, 36), "scene_2.png": (21, 50), "other.png": (32, 32)}
    assert sorted(os.listdir(output)) == sorted([*expected, "predictions.txt"])
    for name, (height, width) in expected.items():
        with Image.open(output / name) as img:
            assert img.mode == "P" and img.size == (width, height), name
            assert np.asarray(img).max() < NUM_CLASSES
    lines = (output / "predictions.txt").read_text().splitlines()
    assert lines[1] == f"{tmp_path / 'b/scene.jpg'},scene_2.png"


def test_pretrained_frozen_encoder_is_loaded_and_left_unchanged(demo_data, tmp_path):
    import keras
    from simclr_tf.io_utils import save_keras_atomic
    from simclr_tf.models.resnet import build_resnet
    pretrain_path = tmp_path / "pretrain"
    keras.utils.set_random_seed(3)
    encoder = build_resnet("resnet18", small_stem=False, image_size=(32, 32))
    save_keras_atomic(encoder, str(pretrain_path / "encoder.keras"))
    save_path = tmp_path / "frozen"
    result = run_main(*_train_args(demo_data, str(save_path), str(pretrain_path), "--freeze"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Encoder: pretrained, loaded from" in result.stdout and "FROZEN" in result.stdout
    assert _json(save_path / "finetune.json")["pretrained"] is True
    model = keras.models.load_model(str(save_path / "model.keras"), compile=False)
    saved = {w.path: w.value.numpy() for w in model.get_layer("encoder").weights}
    original = {w.path: w.value.numpy() for w in encoder.weights}
    assert saved.keys() == original.keys()  # kernels and BatchNorm moving statistics alike
    for path, value in original.items():
        np.testing.assert_array_equal(saved[path], value, err_msg=path)


def test_bad_label_maps_exit_2_naming_the_files_and_nothing_is_written(demo_data, tmp_path):
    folder = os.path.dirname(demo_data.train_seg)
    image = os.path.join(folder, open(demo_data.train_seg).readline().split(",")[0])
    small_map = tmp_path / "small.png"
    Image.fromarray(np.zeros((30, 32), np.uint8)).save(small_map)
    bad_values = tmp_path / "values.png"
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(bad_values)
    listing = tmp_path / "bad.txt"
    listing.write_text(f"# a comment\n{image},{small_map}\n{image},{bad_values}\n")
    save_path = tmp_path / "run"
    result = run_main("--task=segmentation", *SMALL, f"--train_file_path={listing}", f"--num_classes={NUM_CLASSES}",
                      f"--finetune_save_path={save_path}", f"--pretrain_save_path={tmp_path / 'none'}")
    assert_user_error(result, "--train_file_path", str(listing), "line 2", str(small_map), image, "30x32",
                      "line 3", str(bad_values), "7", "--num_classes=5")
    assert not save_path.exists()


def test_num_classes_is_required():
    # In-process (the message is what main.py prints with status 2): a subprocess would only add the
    # TensorFlow start-up time.
    from simclr_tf.errors import UserError
    from tasks import segmentation
    with pytest.raises(UserError, match="--num_classes is required"):
        segmentation.run(types.SimpleNamespace(num_classes=None, finetune_save_path="unused"))


def test_more_classes_than_an_8_bit_label_map_holds_are_refused_before_anything_runs():
    from simclr_tf.errors import UserError
    from tasks import segmentation
    with pytest.raises(UserError, match="at most 255 classes"):
        segmentation.run(types.SimpleNamespace(num_classes=300, finetune_save_path="unused"))
