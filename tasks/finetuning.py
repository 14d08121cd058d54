"""What classification and segmentation fine-tuning share: the trainer with its optimiser(s), the
description of what trains, and saving the fine-tuned model with its finetune.json."""
import os

import numpy as np

from simclr_tf.errors import UserError
from simclr_tf.io_utils import save_keras_atomic
from simclr_tf.models.rebuild import portable, rebuild
from simclr_tf.training.finetune_trainer import FineTuneTrainer

from .artifacts import MODEL_FILE, write_finetune_info
from .console import say
from .optimizer_flags import optimizer_from_flags

# Groups of flags every fine-tuning task reads (results), beside its own.
RESULT_GROUPS = ("randomness", "train_list", "val_list", "image_size", "decoding", "classes", "augment_crop_flip",
                 "encoder", "batch", "schedule", "finetune", "numerics")
ALSO_READS = ("run_control", "pretrain_folder", "finetune_folder", "performance", "write_list")


def for_devices(encoder, devices):
    """The (loaded, float32, plain-BatchNorm) encoder as this run computes with it: under the
    precision policy and with synchronised BatchNorm when `devices` asks for them. Call in the scope."""
    if devices.precision == "float32" and not devices.sync_bn:
        return encoder
    return rebuild(encoder, dtype_policy=devices.precision, synchronized_bn=devices.sync_bn)


def build_trainer(flag_values, model, encoder, objective, crop_size, steps_per_epoch, devices, defaults):
    """(compiled FineTuneTrainer with built optimizers, peak learning rate of the head/decoder).

    `defaults` is the task's optimiser recipe (`optimizer_flags.CLASSIFICATION_DEFAULTS` or
    `SEGMENTATION_DEFAULTS`): what unset optimisation flags mean.

    With --encoder_lr_multiplier != 1 (and an encoder that trains) the encoder gets its own optimizer
    whose whole schedule is the head's times the multiplier.
    """
    optimizer, peak_lr = optimizer_from_flags(flag_values, steps_per_epoch, defaults)
    encoder_optimizer = None
    if not flag_values.freeze and flag_values.encoder_lr_multiplier != 1.0:
        if devices.precision == "mixed_float16":
            # Loss scaling of two optimizers would need one shared scale, which Keras' LossScaleOptimizer
            # does not offer; bfloat16 needs no loss scaling at all.
            raise UserError("--encoder_lr_multiplier with --precision=mixed_float16 is not supported: use "
                            "--precision=mixed_bfloat16 (GPUs from Ampere on, TPUs) or --encoder_lr_multiplier=1.")
        encoder_optimizer, _ = optimizer_from_flags(flag_values, steps_per_epoch, defaults,
                                                    lr_multiplier=flag_values.encoder_lr_multiplier, announce=False)
    trainer = FineTuneTrainer(model, encoder, objective, encoder_optimizer)
    trainer.compile(optimizer=optimizer, jit_compile=devices.jit_compile)
    trainer(np.zeros((1, *crop_size, 3), np.float32))  # create the variables before any restore
    trainer.build_optimizers()
    return trainer, peak_lr


def training_mode(flag_values, head_name):
    """How the network trains, in words for the run's first line (`head_name`: "head", "decoder")."""
    if flag_values.freeze:
        mode = f"encoder FROZEN (BatchNorm in inference mode, only the {head_name} trains)"
        if flag_values.encoder_lr_multiplier != 1.0:
            mode += "; --encoder_lr_multiplier has no effect"
        return mode
    multiplier = flag_values.encoder_lr_multiplier
    return "whole network fine-tuned" + (f", encoder learning rate x {multiplier:g}" if multiplier != 1.0 else "")


def fraction_note(flag_values, num_listed, how):
    """' (stratified 0.1 of 500, --seed=0)' when training on a fraction, else ''."""
    if flag_values.train_fraction >= 1.0:
        return ""
    return f" ({how} {flag_values.train_fraction:g} of {num_listed}, --seed={flag_values.seed})"


def save_finetuned(save_path, model, info, output_description):
    """model.keras (float32, plain BatchNorm) and finetune.json, both written atomically."""
    path = os.path.join(save_path, MODEL_FILE)
    save_keras_atomic(portable(model), path)
    write_finetune_info(save_path, info)
    say(f"Saved the fine-tuned model to {path} ({output_description})")
