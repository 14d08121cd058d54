"""The SimCLR family features end to end through main.py: the decoupled loss, views made in the training
step, mixed precision, snapshots and diagnostics in one pretraining; G-SimCLR pseudo-labels and guided
batches; keras.applications backbones; export for serving."""
import csv
import os

import numpy as np
import pytest

from conftest import assert_user_error, run_main

pytestmark = pytest.mark.slow

TINY = ["--input_size=32 32", "--small_stem=false", "--batch_size=8", "--seed=3"]


def _history(save_path):
    with open(os.path.join(save_path, "history.csv")) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pretrained(demo_data, tmp_path_factory):
    """DCL loss, device-side views, bfloat16 mixed precision, a snapshot every epoch, diagnostics."""
    save_path = str(tmp_path_factory.mktemp("family") / "pretrain")
    result = run_main("--task=pretrain", *TINY, "--num_epochs=2", "--loss=dcl", "--augment_on=device",
                      "--precision=mixed_bfloat16", "--save_every=1", f"--train_file_path={demo_data.unlabeled}",
                      f"--pretrain_save_path={save_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    return save_path, result


def test_one_pretraining_with_the_family_options_writes_snapshots_diagnostics_and_a_float32_encoder(pretrained):
    import keras
    from simclr_tf.models.rebuild import is_portable
    save_path, result = pretrained
    assert "dcl loss" in result.stdout and "made on the device" in result.stdout and "mixed_bfloat16" in result.stdout
    assert sorted(os.listdir(os.path.join(save_path, "snapshots"))) == ["encoder_epoch_0001.keras",
                                                                       "encoder_epoch_0002.keras"]
    rows = _history(save_path)
    for column in ("z_std", "z_std_healthy", "alignment", "uniformity", "h_effective_rank"):
        assert all(np.isfinite(float(row[column])) for row in rows), column
    assert float(rows[0]["z_std"]) <= float(rows[0]["z_std_healthy"]) + 1e-9  # 1/sqrt(d) is its maximum
    assert os.path.isfile(os.path.join(save_path, "diagnostics.png"))
    encoder = keras.models.load_model(os.path.join(save_path, "encoder.keras"))
    assert is_portable(encoder)
    h = np.asarray(encoder(np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")))
    assert h.dtype == np.float32 and np.isfinite(h).all()


def test_export_of_the_encoder_writes_a_saved_model_and_a_checked_tflite_file(pretrained, tmp_path):
    result = run_main("--task=export", "--export_model=encoder", "--export_format=tflite", "--input_size=32 32",
                      f"--pretrain_save_path={pretrained[0]}", f"--output_path={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(tmp_path / "saved_model" / "saved_model.pb") and os.path.isfile(tmp_path / "model.tflite")
    assert "checked" in result.stdout


def test_pseudo_labels_then_guided_batches_and_a_file_that_does_not_match_the_list(demo_data, tmp_path):
    labels = run_main("--task=pseudo_labels", *TINY, "--num_clusters=8", "--num_epochs=1",
                      f"--train_file_path={demo_data.unlabeled}", f"--output_path={tmp_path}")
    assert labels.returncode == 0, labels.stderr[-3000:]
    lines = open(tmp_path / "pseudo_labels.txt").read().splitlines()
    assert len(lines) == 32 and {int(line.rsplit(",", 1)[1]) for line in lines} <= set(range(8))
    assert os.path.isfile(tmp_path / "pseudo_labels_tsne.png")
    guided = run_main("--task=pretrain", *TINY, "--num_epochs=1", "--diagnostics_every=0",
                      f"--pseudo_label_file={tmp_path / 'pseudo_labels.txt'}", f"--train_file_path={demo_data.unlabeled}",
                      f"--pretrain_save_path={tmp_path / 'guided'}")
    assert guided.returncode == 0, guided.stderr[-3000:]
    assert "Guided batches (G-SimCLR): " in guided.stdout
    partial = tmp_path / "partial.txt"
    partial.write_text("\n".join(lines[:-2] + [lines[0]]) + "\n")  # two images missing, one listed twice
    refused = run_main("--task=pretrain", *TINY, f"--pseudo_label_file={partial}",
                       f"--train_file_path={demo_data.unlabeled}", f"--pretrain_save_path={tmp_path / 'refused'}")
    assert_user_error(refused, "--pseudo_label_file", "line 31", "listed twice", "has no pseudo-label")
    assert not os.path.exists(tmp_path / "refused")


def test_a_keras_applications_backbone_pretrains_and_its_weights_flag_is_checked(demo_data, tmp_path):
    result = run_main("--task=pretrain", "--input_size=32 32", "--batch_size=8", "--num_epochs=1",
                      "--backbone=MobileNetV2", "--num_unfrozen_layers=20", "--unfreeze_schedule=1:all",
                      "--diagnostics_every=0", f"--train_file_path={demo_data.unlabeled}",
                      f"--pretrain_save_path={tmp_path / 'mobilenet'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MobileNetV2" in result.stdout and os.path.isfile(tmp_path / "mobilenet" / "encoder.keras")
    missing = run_main("--task=pretrain", "--batch_size=8", "--backbone=VGG16", f"--backbone_weights={tmp_path / 'none.h5'}",
                       f"--train_file_path={demo_data.unlabeled}", f"--pretrain_save_path={tmp_path / 'vgg'}")
    assert_user_error(missing, "--backbone_weights", "none.h5")
    wrong_kind = run_main("--task=pretrain", "--batch_size=8", "--backbone=VGG16", "--width_multiplier=2",
                          f"--train_file_path={demo_data.unlabeled}", f"--pretrain_save_path={tmp_path / 'vgg'}")
    assert_user_error(wrong_kind, "--width_multiplier", "ResNets")
