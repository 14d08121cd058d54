"""Flag groups, fingerprints and ignored flags (tasks/flag_use.py, tasks/run_folder.py).

tests/data/legacy_fingerprints.json holds the fingerprints the code of the previous release (before
flag groups) computed for a few command lines; old run folders store those, so they must still
match what the groups give, apart from the documented changes.
"""
import contextlib
import io
import json
import os

import pytest
from absl import flags

import config
from conftest import REPO, parsed
from tasks import classification, embed, evaluate, linear_eval, predict, pretrain, run_folder, segmentation
from tasks.flag_use import unused_given_flags, warn_unused

TASKS = {"pretrain": pretrain, "classification": classification, "segmentation": segmentation,
         "linear_eval": linear_eval, "embed": embed, "evaluate": evaluate, "predict": predict}
# What the groups deliberately changed in the fingerprints of earlier versions: paths that only say
# where outputs go (or, for fine-tuning, where the encoder is: its content hash replaces the path),
# the speed-only --jit_compile, and --cifar10 for segmentation, which refuses it.
DROPPED = {"pretrain": {"pretrain_save_path", "jit_compile"},
           "classification": {"pretrain_save_path", "finetune_save_path", "jit_compile"},
           "segmentation": {"pretrain_save_path", "finetune_save_path", "jit_compile", "cifar10"}}


def test_every_flag_is_in_exactly_one_group():
    defined = [f.name for f in flags.FLAGS.get_flags_for_module(config)]
    grouped = [name for group in config.FLAG_GROUPS.values() for name in group]
    assert sorted(grouped) == sorted(defined)
    assert len(grouped) == len(set(grouped))


def test_every_task_declares_existing_groups_and_reads_the_task_flag():
    for name, module in TASKS.items():
        assert module.FLAGS_READ.task == name
        assert "task" in module.FLAGS_READ.read_flags
        assert set(module.FLAGS_READ.result_flags) <= set(module.FLAGS_READ.read_flags)


def _legacy():
    with open(os.path.join(REPO, "tests", "data", "legacy_fingerprints.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("case", sorted(_legacy()))
def test_fingerprints_of_earlier_versions_are_unchanged_apart_from_the_documented_changes(case):
    stored = _legacy()[case]
    task = case.split("/")[0]
    with parsed(stored["argv"]) as flag_values:
        current = run_folder.fingerprint(flag_values, TASKS[task].FLAGS_READ)
    expected = {k: v for k, v in stored["fingerprint"].items() if k not in DROPPED[task]}
    # Flags added since then appear at their defaults; everything the earlier version stored is kept.
    added = {k: v for k, v in current.items() if k not in stored["fingerprint"]}
    assert all(v == flags.FLAGS[k].default for k, v in added.items()), added
    assert {k: v for k, v in current.items() if k not in added} == expected
    # ... so a folder of the earlier version resumes: the stored extras are ignored.
    assert run_folder.fingerprint_differences(stored["fingerprint"], current) == []


def test_a_flag_added_later_never_breaks_a_resume_unless_it_is_given_another_value():
    stored = _legacy()["pretrain/defaults"]
    with parsed(stored["argv"]) as flag_values:
        current = run_folder.fingerprint(flag_values, pretrain.FLAGS_READ)
    older = {k: v for k, v in stored["fingerprint"].items() if k != "temperature"}  # as if it were new
    assert run_folder.fingerprint_differences(older, current) == []
    assert run_folder.fingerprint_differences(older, {**current, "temperature": 0.9}) == ["temperature"]
    # A non-flag entry an older folder lacks (the encoder hash of fine-tuning) is accepted.
    assert run_folder.fingerprint_differences(older, {**current, "encoder_sha256": "abc"}) == []
    assert run_folder.fingerprint_differences({**older, "encoder_sha256": "abc"},
                                              {**current, "encoder_sha256": "def"}) == ["encoder_sha256"]


def test_flags_a_task_does_not_read_leave_its_fingerprint_alone():
    base = ["--task=classification", "--train_file_path=T"]
    with parsed(base) as flag_values:
        plain = run_folder.fingerprint(flag_values, classification.FLAGS_READ)
    with parsed(base + ["--strength=0.3", "--temperature=0.9", "--knn_k=3", "--finetune_save_path=/elsewhere",
                        "--cache"]) as flag_values:
        assert run_folder.fingerprint(flag_values, classification.FLAGS_READ) == plain


def test_given_flags_a_task_does_not_read_get_one_warning_line():
    argv = ["--task=classification", "--train_file_path=T", "--strength=0.5", "--train_fractions=0.5",
            "--batch_size=8"]
    with parsed(argv) as flag_values:
        assert unused_given_flags(flag_values, classification.FLAGS_READ) == ["strength", "train_fractions"]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            warn_unused(flag_values, classification.FLAGS_READ)
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1 and "--strength, --train_fractions" in lines[0] and "classification" in lines[0]
    with parsed(["--task=linear_eval", "--train_fraction=0.5"]) as flag_values:
        assert unused_given_flags(flag_values, linear_eval.FLAGS_READ) == ["train_fraction"]
    with parsed(["--task=pretrain", "--strength=0.5", "--val_file_path=V", "--knn_k=5"]) as flag_values:
        assert unused_given_flags(flag_values, pretrain.FLAGS_READ) == []


def test_flags_file_holds_the_task_and_the_flags_it_reads_but_not_resume_control():
    with parsed(["--task=segmentation", "--train_file_path=T", "--num_classes=5", "--overwrite",
                 "--temperature=0.3"]) as flag_values:
        text = run_folder.flagfile_text(flag_values, segmentation.FLAGS_READ)
    lines = text.splitlines()
    assert "--task=segmentation" in lines and "--num_classes=5" in lines and "--train_file_path=T" in lines
    assert not [line for line in lines if "overwrite" in line or "resume" in line or "temperature" in line]


def test_one_mapping_from_flags_to_augmentation_configs_per_task_kind():
    from simclr_tf.errors import UserError
    from tasks.augmentation_flags import augment_config
    with parsed(["--task=pretrain", "--strength=0.5", "--crop_area_min=0.3", "--rotate"]) as flag_values:
        pretrain_config = augment_config(flag_values, (96, 96), "pretrain")
        classification_config = augment_config(flag_values, (96, 96), "classification")
        segmentation_config = augment_config(flag_values, (96, 96), "segmentation")
    assert pretrain_config.strength == 0.5 and pretrain_config.blur and pretrain_config.colordrop
    assert pretrain_config.rotate and pretrain_config.crop_area_min == 0.3
    assert classification_config.crop_area_min == 0.3 and classification_config.flip
    assert not (classification_config.jitter or classification_config.colordrop or classification_config.blur
                or classification_config.rotate)
    assert segmentation_config.jitter and segmentation_config.strength == 0.5 and segmentation_config.rotate
    assert not (segmentation_config.colordrop or segmentation_config.blur or segmentation_config.cutout)
    for refused in ("--blur", "--cutout", "--colordrop", "--noise"):
        with parsed(["--task=segmentation", refused]) as flag_values, pytest.raises(UserError, match=refused):
            augment_config(flag_values, (32, 32), "segmentation")
    with parsed(["--task=segmentation", "--noblur"]) as flag_values:
        assert not augment_config(flag_values, (32, 32), "segmentation").blur


def test_every_augmentation_flag_is_a_config_field_of_the_same_name():
    # Renaming a field or a flag alone must fail here, not silently drop the flag.
    import dataclasses
    from simclr_tf.data.augment import AugmentConfig
    from tasks.augmentation_flags import GROUPS_READ
    augmentation_flags = {name for group in GROUPS_READ["pretrain"] for name in config.FLAG_GROUPS[group]}
    fields = {f.name for f in dataclasses.fields(AugmentConfig)} - {"crop_size"}
    assert augmentation_flags == fields
