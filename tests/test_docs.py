"""The README documents every flag and the --helpfull output lists every flag the contract names."""
import os

from absl import flags

import config
from conftest import REPO, run_main

CONTRACT_FLAGS = ("task input_size crop_size train_file_path val_file_path test_file_path batch_size num_epochs "
                  "learning_rate temperature strength num_classes freeze pretrain_save_path finetune_save_path "
                  "cifar10 cifar10_dir backbone seed output_path train_fractions resume overwrite blur crop flip "
                  "jitter colordrop noise rotate cutout").split()


def test_readme_flag_table_lists_every_flag():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    missing = [f.name for f in flags.FLAGS.get_flags_for_module(config) if f"`--{f.name}`" not in readme]
    assert not missing, f"run python scripts/flag_table.py; missing: {missing}"


def test_helpfull_lists_the_contract_flags_without_importing_tensorflow():
    result = run_main("--helpfull")
    assert result.returncode == 0
    missing = [name for name in CONTRACT_FLAGS
               if f"--{name}:" not in result.stdout and f"--[no]{name}:" not in result.stdout]
    assert not missing, missing
    for name in ("blur", "crop", "flip", "jitter", "colordrop", "noise", "rotate", "cutout"):
        assert f"--[no]{name}" in result.stdout and f"--{name}_prob" in result.stdout
