"""The one mapping from augmentation flags to an `augment.AugmentConfig`, per kind of task.

* pretraining reads every augmentation flag (blur defaults to on above 64 px);
* classification fine-tuning reads the crop and flip only (the paper's fine-tuning views);
* segmentation reads crop, flip, rotation and colour jitter, which it can apply to an image and its
  label map together, and refuses the pretraining-only ops when they are switched on.
The flags a kind reads are the `config.FLAG_GROUPS` named in `GROUPS_READ`; every other field keeps
the value that switches its op off. Adding an op touches the op, its AugmentConfig field and its
flag (in one of those groups), nothing else.
"""
import dataclasses

from simclr_tf.data import augment
from simclr_tf.errors import UserError

from . import config
from .flag_use import given

GROUPS_READ = {
    "pretrain": ("augment_crop_flip", "augment_colour_jitter", "augment_rotation", "augment_pretrain_only"),
    "classification": ("augment_crop_flip",),
    "segmentation": ("augment_crop_flip", "augment_colour_jitter", "augment_rotation"),
}
# What a field is when its flag is not read: every op off.
_OFF = {"crop": False, "flip": False, "jitter": False, "colordrop": False, "blur": False, "noise": False,
        "rotate": False, "cutout": False}
# Switches of the ops segmentation refuses (the pretraining-only group).
_SEGMENTATION_REFUSES = ("colordrop", "blur", "noise", "cutout")


def augment_config(flag_values, crop_size, kind):
    """The AugmentConfig of task kind `kind` ("pretrain", "classification", "segmentation")."""
    if kind == "segmentation":
        _refuse_pretrain_only_ops(flag_values)
    names = [name for group in GROUPS_READ[kind] for name in config.FLAG_GROUPS[group]]
    values = {name: flag_values[name].value for name in names}
    if "blur" in values and values["blur"] is None:
        values["blur"] = augment.default_blur(crop_size)
    fields = {f.name for f in dataclasses.fields(augment.AugmentConfig)}
    unknown = set(values) - fields
    if unknown:  # a flag in an augmentation group without its config field: a programming error
        raise ValueError(f"augmentation flags without an AugmentConfig field: {sorted(unknown)}")
    off = {name: value for name, value in _OFF.items() if name not in values}
    return augment.AugmentConfig(crop_size=tuple(crop_size), **off, **values)


def _refuse_pretrain_only_ops(flag_values):
    switched_on = [f"--{name}" for name in _SEGMENTATION_REFUSES if given(flag_values, name) and flag_values[name].value]
    if switched_on:
        raise UserError(f"--task=segmentation does not apply {', '.join(switched_on)}: it augments an image and its "
                        "label map with crop, flip, rotation and colour jitter only (README, 'Segmentation "
                        "training'). Leave these flags out.")
