"""Classification, evaluate, predict, linear_eval, embed and the pretraining kNN monitor.

The trainer tests run in-process; the rest goes through main.py in a subprocess at 32x32 and shares
one tiny pretraining run and one frozen fine-tuning run (module fixtures) to stay fast.
"""
import csv
import json
import os
import shutil
import types

import keras
import numpy as np
import pytest

from conftest import assert_user_error, run_main
from simclr_tf.models.resnet import build_resnet
from simclr_tf.models.classifier import build_classifier
from simclr_tf.training.finetune_trainer import ClassificationObjective, FineTuneTrainer
from tasks import optimizer_flags

slow = pytest.mark.slow
# The ImageNet stem: at 32 px it is several times cheaper than the small stem, and nothing checked here
# depends on the stem (test_models and test_decoder cover both).
SMALL = ["--input_size=32 32", "--small_stem=false", "--batch_size=8", "--seed=1"]


# --- in-process: the encoder learning-rate multiplier ---------------------------------------------------

def _one_step_changes(optimizer_class, multiplier):
    """Weight changes (head, encoder) after one training step from the same start on the same batch."""
    keras.utils.set_random_seed(0)
    encoder = build_resnet("resnet18", width_multiplier=0.125, image_size=(16, 16))
    classifier = build_classifier(encoder, 3, (16, 16))
    encoder_optimizer = optimizer_class(learning_rate=0.1 * multiplier) if multiplier is not None else None
    trainer = FineTuneTrainer(classifier, encoder, ClassificationObjective(), encoder_optimizer)
    trainer.compile(optimizer=optimizer_class(learning_rate=0.1))
    trainer(np.zeros((1, 16, 16, 3), np.float32))
    trainer.build_optimizers()
    rng = np.random.default_rng(0)
    images, labels = rng.uniform(0, 1, (8, 16, 16, 3)).astype(np.float32), rng.integers(0, 3, 8)
    head_before = [v.numpy().copy() for v in classifier.get_layer("classification_head").trainable_variables]
    encoder_before = [v.numpy().copy() for v in encoder.trainable_variables]
    trainer.train_on_batch(images, labels)
    head = [v.numpy() - b for v, b in zip(classifier.get_layer("classification_head").trainable_variables, head_before)]
    encoder_change = [v.numpy() - b for v, b in zip(encoder.trainable_variables, encoder_before)]
    return np.concatenate([c.ravel() for c in head]), np.concatenate([c.ravel() for c in encoder_change])


@pytest.mark.parametrize("optimizer_class", [keras.optimizers.SGD, keras.optimizers.Adam])
def test_encoder_lr_multiplier_scales_the_encoder_step_only(optimizer_class):
    head_one, encoder_one = _one_step_changes(optimizer_class, None)
    head_half, encoder_half = _one_step_changes(optimizer_class, 0.5)
    assert np.abs(encoder_one).max() > 0
    np.testing.assert_allclose(head_half, head_one, rtol=1e-4, atol=1e-7)
    # Adam normalises gradients: only a real learning-rate change (not a scaled gradient) halves its step.
    np.testing.assert_allclose(encoder_half, 0.5 * encoder_one, rtol=1e-3, atol=1e-7)


def test_optimizer_from_flags_scales_the_whole_schedule():
    flags = types.SimpleNamespace(optimizer=None, learning_rate=None, lr_scaling=None, batch_size=64, num_epochs=4,
                                  warmup_epochs=1, warmup_steps=None, weight_decay=None, momentum=0.9)
    head, head_peak = optimizer_flags.optimizer_from_flags(flags, 10, optimizer_flags.CLASSIFICATION_DEFAULTS)
    encoder, encoder_peak = optimizer_flags.optimizer_from_flags(flags, 10, optimizer_flags.CLASSIFICATION_DEFAULTS,
                                                                 lr_multiplier=0.1)
    assert encoder_peak == pytest.approx(0.1 * head_peak)
    for step in (0, 5, 10, 25):
        head.iterations.assign(step)
        encoder.iterations.assign(step)
        assert float(encoder.learning_rate) == pytest.approx(0.1 * float(head.learning_rate))


# --- end to end ----------------------------------------------------------------------------------------

def _history(save_path):
    with open(os.path.join(save_path, "history.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pretrained(demo_data, tmp_path_factory):
    """A one-epoch pretraining with the kNN monitor (labels from --knn_train_file_path)."""
    save_path = str(tmp_path_factory.mktemp("clf") / "pretrain")
    result = run_main("--task=pretrain", *SMALL, "--num_epochs=1", "--warmup_epochs=0", "--proj_dim=32",
                      "--diagnostics_every=0", f"--train_file_path={demo_data.unlabeled}",
                      f"--knn_train_file_path={demo_data.train}", f"--val_file_path={demo_data.val}", "--knn_k=5",
                      f"--pretrain_save_path={save_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    return save_path, result


@pytest.fixture(scope="module")
def frozen_run(pretrained, demo_data, tmp_path_factory):
    """Linear evaluation protocol (--freeze=true) with a validation list."""
    save_path = str(tmp_path_factory.mktemp("clf") / "frozen")
    result = run_main("--task=classification", *SMALL, "--num_epochs=2", "--freeze=true", "--num_classes=4",
                      f"--train_file_path={demo_data.train}", f"--val_file_path={demo_data.val}",
                      f"--pretrain_save_path={pretrained[0]}", f"--finetune_save_path={save_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    return save_path, result


@slow
def test_pretraining_reports_knn_accuracy(pretrained):
    save_path, result = pretrained
    assert "kNN monitor: weighted kNN accuracy of h (k=5" in result.stdout
    rows = _history(save_path)
    assert 0.0 <= float(rows[0]["knn_accuracy"]) <= 1.0
    assert "knn_accuracy=" in result.stdout  # in the epoch line


@slow
def test_pretraining_without_labels_says_the_monitor_is_off(demo_data, tmp_path):
    # The monitor is decided (and said) before the run starts; an oversized batch then stops it cheaply.
    result = run_main("--task=pretrain", "--input_size=32 32", "--batch_size=64", f"--val_file_path={demo_data.val}",
                      f"--train_file_path={demo_data.unlabeled}", f"--pretrain_save_path={tmp_path / 'run'}")
    assert_user_error(result, "--batch_size=64")
    assert result.stdout.count("kNN monitor: off") == 1
    assert "--train_file_path carry no labels" in result.stdout


@slow
def test_classification_writes_every_output(frozen_run):
    save_path, result = frozen_run
    for name in ("model.keras", "history.csv", "flags.txt", "finetune.json", "metrics.json", "confusion_matrix.png",
                 "checkpoints/state.json"):
        assert os.path.isfile(os.path.join(save_path, name)), name
    assert os.listdir(os.path.join(save_path, "tensorboard"))
    assert "Encoder: pretrained" in result.stdout and "encoder FROZEN" in result.stdout
    rows = _history(save_path)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0 <= float(r["val_accuracy"]) <= 1 and float(r["val_loss"]) > 0 for r in rows)
    metrics = json.load(open(os.path.join(save_path, "metrics.json")))
    assert set(metrics) >= {"accuracy", "num_samples", "per_class", "confusion_matrix"}
    assert metrics["num_samples"] == 16 and np.asarray(metrics["confusion_matrix"]).sum() == 16
    assert list(metrics["per_class"]) == ["circle", "square", "triangle", "cross"]  # the demo's classes.txt
    assert set(metrics["per_class"]["circle"]) == {"precision", "recall", "f1", "support"}
    assert "precision  recall" in result.stdout and "cross" in result.stdout  # the printed table
    info = json.load(open(os.path.join(save_path, "finetune.json")))
    assert info["task"] == "classification" and info["num_classes"] == 4 and info["crop_size"] == [32, 32]


@slow
def test_freeze_leaves_encoder_weights_and_bn_statistics_unchanged(frozen_run, pretrained):
    save_path, _ = frozen_run
    model = keras.models.load_model(os.path.join(save_path, "model.keras"))
    original = keras.models.load_model(os.path.join(pretrained[0], "encoder.keras"))
    info = json.load(open(os.path.join(save_path, "finetune.json")))
    tuned = model.get_layer(info["encoder_layer"])
    moving = [w for w in original.weights if "moving" in w.path]
    assert moving and len(tuned.weights) == len(original.weights)
    for after, before in zip(tuned.weights, original.weights):
        np.testing.assert_array_equal(after.numpy(), before.numpy(), err_msg=before.path)
    # The head did train, and the saved model outputs probabilities.
    head = model.get_layer("classification_head").get_layer("logits").get_weights()[1]
    assert np.abs(head).max() > 0
    probabilities = np.asarray(model(np.random.default_rng(0).uniform(0, 1, (3, 32, 32, 3)).astype("float32")))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@slow
def test_evaluate_and_predict_with_the_saved_model(frozen_run, demo_data, tmp_path):
    save_path, _ = frozen_run
    os.remove(os.path.join(save_path, "metrics.json"))
    evaluated = run_main("--task=evaluate", "--batch_size=8", f"--val_file_path={demo_data.val}",
                         f"--finetune_save_path={save_path}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.load(open(os.path.join(save_path, "metrics.json")))["num_samples"] == 16
    predicted = run_main("--task=predict", "--batch_size=8", f"--test_file_path={demo_data.unlabeled}",
                         f"--finetune_save_path={save_path}", f"--output_path={tmp_path / 'out'}")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "prediction", "confidence", "prob_0", "prob_1", "prob_2", "prob_3"]
    assert len(rows) == 32 and os.path.isfile(rows[0]["path"])
    for row in rows:
        probabilities = [float(row[f"prob_{k}"]) for k in range(4)]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert int(row["prediction"]) == int(np.argmax(probabilities))
        assert float(row["confidence"]) == pytest.approx(max(probabilities))


@slow
def test_label_out_of_range_names_the_line_and_the_file(demo_data, tmp_path):
    lines = open(demo_data.train).read().splitlines()
    folder = os.path.dirname(demo_data.train)
    listing = tmp_path / "bad.txt"
    bad = lines[2].rsplit(",", 1)[0] + ",7"
    listing.write_text("\n".join(os.path.join(folder, line) for line in lines[:2] + [bad] + lines[3:]) + "\n")
    result = run_main("--task=classification", *SMALL, "--num_classes=4", f"--train_file_path={listing}",
                      f"--finetune_save_path={tmp_path / 'out'}")
    assert_user_error(result, "--train_file_path", str(listing), "line 3", "label 7")
    assert not os.path.exists(tmp_path / "out")


@slow
def test_fine_tuning_a_fraction_with_an_mlp_head_resumes_and_refuses_other_configs(pretrained, demo_data, tmp_path):
    save_path = str(tmp_path / "tuned")
    args = ["--task=classification", *SMALL, "--num_epochs=1", "--head=mlp", "--train_fraction=0.5",
            "--encoder_lr_multiplier=0.1", f"--train_file_path={demo_data.train}",
            f"--pretrain_save_path={pretrained[0]}", f"--finetune_save_path={save_path}"]
    first = run_main(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "stratified 0.5 of 32" in first.stdout and "encoder learning rate x 0.1" in first.stdout
    info = json.load(open(os.path.join(save_path, "finetune.json")))
    assert info["num_train_images"] == 16 and info["head"] == "mlp"
    model = keras.models.load_model(os.path.join(save_path, "model.keras"))
    assert model.get_layer("classification_head").get_layer("cls_relu_1") is not None
    original = keras.models.load_model(os.path.join(pretrained[0], "encoder.keras"))
    changed = [not np.array_equal(a, b) for a, b in zip(model.get_layer(info["encoder_layer"]).get_weights(),
                                                        original.get_weights())]
    assert any(changed)  # fine-tuned, not frozen

    again = run_main(*args)
    assert again.returncode == 0 and "Resuming from epoch 1" in again.stdout, again.stderr[-2000:]
    assert len(_history(save_path)) == 1
    other = run_main(*[a for a in args if a != "--head=mlp"])
    assert_user_error(other, "--finetune_save_path", "different configuration", "--head", "--overwrite")


@slow
def test_linear_eval_of_a_pretrained_and_a_random_encoder(pretrained, demo_data, tmp_path):
    common_args = ["--task=linear_eval", *SMALL, "--train_fractions=1.0 0.5", "--repeats=2",
                   f"--train_file_path={demo_data.train}", f"--val_file_path={demo_data.val}"]
    result = run_main(*common_args, "--feature_layer=proj1", f"--pretrain_save_path={pretrained[0]}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.load(open(os.path.join(pretrained[0], "linear_eval.json")))
    assert summary["pretrained"] is True and summary["feature_layer"] == "proj1" and summary["feature_dim"] == 512
    assert [r["fraction"] for r in summary["results"]] == [1.0, 0.5]
    half = summary["results"][1]
    assert half["repeats"] == 2 and len(half["accuracies"]) == 2 and half["num_train"] == 16
    assert half["accuracy_mean"] == pytest.approx(np.mean(half["accuracies"]))
    assert half["accuracy_std"] == pytest.approx(np.std(half["accuracies"]))
    assert os.path.isfile(os.path.join(pretrained[0], "linear_eval.png"))

    empty = tmp_path / "random"
    baseline = run_main(*common_args, f"--pretrain_save_path={empty}")
    assert baseline.returncode == 0, baseline.stderr[-3000:]
    assert "RANDOMLY INITIALISED" in "\n".join(baseline.stdout.splitlines()[:4])
    random_summary = json.load(open(empty / "linear_eval.json"))
    assert random_summary["pretrained"] is False and random_summary["feature_layer"] == "h"

    bad_layer = run_main(*common_args, "--feature_layer=proj9", f"--pretrain_save_path={pretrained[0]}")
    assert_user_error(bad_layer, "--feature_layer=proj9")


@slow
def test_linear_eval_of_every_layer_and_of_several_encoders(pretrained, demo_data, tmp_path):
    run_folder = tmp_path / "pretrain"
    shutil.copytree(pretrained[0], run_folder)
    common_args = ["--task=linear_eval", *SMALL, "--train_fractions=1.0", f"--train_file_path={demo_data.train}",
                   f"--val_file_path={demo_data.val}", f"--pretrain_save_path={run_folder}"]
    result = run_main(*common_args, "--feature_layer=all")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.load(open(run_folder / "linear_eval.json"))
    # The default head has 2 layers (paper v1); proj2 is z, of --proj_dim=32 units.
    assert list(summary["by_layer"]) == ["h", "proj1", "proj2"]
    assert summary["by_layer"]["h"]["feature_dim"] == 512 and summary["by_layer"]["proj2"]["feature_dim"] == 32
    assert summary["results"] == summary["by_layer"]["h"]["results"]
    assert os.path.isfile(run_folder / "linear_eval_layers.png")

    # A folder gives its snapshots and its encoder.keras; the final encoder repeats the epoch-1 snapshot.
    (run_folder / "snapshots").mkdir()
    shutil.copy(run_folder / "encoder.keras", run_folder / "snapshots" / "encoder_epoch_0001.keras")
    shutil.copy(run_folder / "encoder.keras", tmp_path / "other.keras")
    curve = run_main(*common_args, f"--encoders={run_folder},{tmp_path / 'other.keras'}")
    assert curve.returncode == 0, curve.stderr[-3000:]
    points = json.load(open(run_folder / "linear_eval_curve.json"))["encoders"]
    assert [(os.path.basename(p["encoder"]), p["epoch"]) for p in points] == [
        ("encoder_epoch_0001.keras", 1), ("other.keras", None)]
    assert points[0]["results"] == points[1]["results"]  # the same weights probed the same way
    assert os.path.isfile(run_folder / "linear_eval_curve.png")

    assert_user_error(run_main(*common_args, f"--encoders={tmp_path / 'none'}"), "--encoders")
    assert_user_error(run_main(*common_args, f"--encoders={run_folder}", "--feature_layer=proj1"), "--encoders")


@slow
def test_embed_writes_embeddings_and_tsne(pretrained, demo_data, tmp_path):
    result = run_main("--task=embed", *SMALL, f"--test_file_path={demo_data.val}",
                      f"--pretrain_save_path={pretrained[0]}", f"--output_path={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "embeddings.npz") as arrays:
        assert arrays["h"].shape == (16, 512) and arrays["z"].shape == (16, 32)
        assert arrays["labels"].tolist() == [int(line.rsplit(",", 1)[1]) for line in open(demo_data.val)]
        assert len(arrays["paths"]) == 16 and os.path.isfile(str(arrays["paths"][0]))
    assert os.path.isfile(tmp_path / "tsne.png")


@slow
def test_fine_tuning_follows_its_encoder_file_and_architecture_flags_must_agree(pretrained, demo_data, tmp_path):
    encoder_run = tmp_path / "pretrain"
    shutil.copytree(pretrained[0], encoder_run)
    (encoder_run / "linear_eval.json").write_text("{}")  # a result derived from this encoder
    tune = ["--task=classification", *SMALL, "--num_epochs=1", "--num_classes=4", f"--train_file_path={demo_data.train}",
            f"--pretrain_save_path={encoder_run}", f"--finetune_save_path={tmp_path / 'tuned'}"]
    assert run_main(*tune).returncode == 0

    mismatch = run_main(*tune[:-1], "--backbone=resnet34", f"--finetune_save_path={tmp_path / 'other'}")
    assert_user_error(mismatch, "--backbone=resnet34", "backbone=resnet18", str(encoder_run))
    assert not os.path.exists(tmp_path / "other")

    # Pretraining again into the same folder (another configuration) replaces its derived results too ...
    again = run_main("--task=pretrain", *SMALL, "--num_epochs=1", "--warmup_epochs=0", "--proj_dim=32",
                     "--diagnostics_every=0", "--temperature=0.5", f"--train_file_path={demo_data.unlabeled}",
                     f"--pretrain_save_path={encoder_run}", "--overwrite")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (encoder_run / "linear_eval.json").exists()
    # ... and the finished fine-tuning made from the old encoder is not taken for this one's.
    stale = run_main(*tune)
    assert_user_error(stale, "different configuration", "encoder_sha256", "--overwrite")
    assert "Resuming" not in stale.stdout
