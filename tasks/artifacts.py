"""The files that connect tasks: encoder.keras and projection_head.keras of a pretraining run,
model.keras and finetune.json of a fine-tuning run. Loading them with user-facing errors, checking
flags against them, and the encoder's content hash that fine-tuning fingerprints include."""
import json
import os
import zipfile

import keras

from simclr_tf.errors import UserError
from simclr_tf.evaluation.probes import projection_layer_count
from simclr_tf.io_utils import file_sha256, write_json_atomic
from simclr_tf.models.heads import build_projection_head
from simclr_tf.models.resnet import describe_encoder, feature_dim

from .console import say
from .encoders import build_encoder
from .flag_use import given

ENCODER_FILE = "encoder.keras"
PROJECTION_HEAD_FILE = "projection_head.keras"
MODEL_FILE = "model.keras"
FINETUNE_INFO_FILE = "finetune.json"
# Flags naming the architecture of an encoder; a loaded encoder.keras must agree with those given.
_ARCHITECTURE_FLAGS = ("backbone", "width_multiplier", "depthwise", "small_stem")


def load_keras_file(path, flag_name, what="model"):
    """keras.models.load_model(path) (safe mode on, not compiled), or UserError naming the flag and
    saying whether the file is damaged (truncated) or just not loadable."""
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001  (any failure to load is the user's file's problem)
        if not zipfile.is_zipfile(path):
            raise UserError(f"{flag_name}: {path} is damaged: it is not a complete .keras file (truncated by a full "
                            f"disk or an interrupted copy?). Restore it, or re-run the task that wrote this {what}."
                            ) from None
        raise UserError(f"{flag_name}: cannot load the {what} {path}: {e}") from None


def encoder_path(flag_values):
    """Path of encoder.keras under --pretrain_save_path (it may not exist)."""
    return os.path.join(flag_values.pretrain_save_path or "", ENCODER_FILE)


def encoder_fingerprint(flag_values):
    """What a fine-tuning run's results depend on about its encoder: the content hash of encoder.keras,
    or "random init" (the architecture flags and the seed, in the fingerprint too, then define it)."""
    path = encoder_path(flag_values)
    return {"encoder_sha256": file_sha256(path) if os.path.isfile(path) else "random init"}


def load_pretrained_encoder(flag_values, crop_size):
    """(encoder, pretrained) from --pretrain_save_path, or a random-init encoder when it holds none.

    The random-init case is the baseline that shows what pretraining bought; it is announced.
    Architecture flags given explicitly must agree with a loaded encoder (UserError otherwise).
    """
    path = encoder_path(flag_values)
    if flag_values.pretrain_save_path and os.path.isfile(path):
        encoder = load_keras_file(path, "--pretrain_save_path", "encoder")
        _check_architecture_flags(flag_values, encoder, path)
        say(f"Encoder: pretrained, loaded from {path}")
        return encoder, True
    encoder = build_encoder(flag_values, crop_size)
    start = "ImageNet-INITIALISED" if flag_values.backbone_weights not in (None, "", "none") else "RANDOMLY INITIALISED"
    say(f"Encoder: {start} {encoder.name} (no {ENCODER_FILE} in --pretrain_save_path="
        f"{flag_values.pretrain_save_path}): this is the no-pretraining baseline")
    return encoder, False


def _check_architecture_flags(flag_values, encoder, path):
    description = describe_encoder(encoder)
    if description is None:
        return
    disagreeing = [f"--{name}={flag_values[name].value} but {path} is {name}={description[name]}"
                   for name in _ARCHITECTURE_FLAGS if given(flag_values, name)
                   and flag_values[name].value is not None and flag_values[name].value != description[name]]
    if disagreeing:
        raise UserError("; ".join(disagreeing) + ". The loaded encoder defines the architecture: leave these flags "
                        "out, or point --pretrain_save_path at another run.")


def load_projection_head(flag_values, encoder):
    """(projection head, "trained" | "random"): projection_head.keras from --pretrain_save_path, or a
    randomly initialised head of --proj_layers / --proj_dim when there is none (said)."""
    path = os.path.join(flag_values.pretrain_save_path or "", PROJECTION_HEAD_FILE)
    if flag_values.pretrain_save_path and os.path.isfile(path):
        head = load_keras_file(path, "--pretrain_save_path", "projection head")
        say(f"Projection head: loaded from {path} ({projection_layer_count(head)} layers)")
        return head, "trained"
    head = build_projection_head(feature_dim(encoder), num_layers=flag_values.proj_layers,
                                 output_dim=flag_values.proj_dim)
    say(f"Projection head: RANDOMLY INITIALISED ({flag_values.proj_layers} layers, output "
        f"{flag_values.proj_dim}; no {PROJECTION_HEAD_FILE} in --pretrain_save_path)")
    return head, "random"


def write_finetune_info(save_path, info):
    """finetune.json: what `evaluate` and `predict` need to use model.keras (task, sizes, classes)."""
    write_json_atomic(os.path.join(save_path, FINETUNE_INFO_FILE), info)


def read_finetune_info(finetune_save_path):
    """The finetune.json of a fine-tuned model folder; UserError when there is no model there or the
    file is damaged."""
    info_path = os.path.join(finetune_save_path, FINETUNE_INFO_FILE)
    model_path = os.path.join(finetune_save_path, MODEL_FILE)
    if not (os.path.isfile(info_path) and os.path.isfile(model_path)):
        raise UserError(f"--finetune_save_path={finetune_save_path} holds no fine-tuned model ({MODEL_FILE} and "
                        f"{FINETUNE_INFO_FILE}); run --task=classification or --task=segmentation first.")
    try:
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
        _check_finetune_info(info)
        return info
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"--finetune_save_path: {info_path} is damaged ({e}). Re-run the fine-tuning task that "
                        "wrote it (with --resume=false --overwrite if needed).") from None


# A class count beyond this in finetune.json is damage, not a model (evaluation sizes arrays by it).
_MAX_SAVED_CLASSES = 1_000_000


def _check_finetune_info(info):
    """ValueError unless `info` holds what evaluate and predict read, with sane values."""
    if not isinstance(info, dict) or info.get("task") not in ("classification", "segmentation"):
        raise ValueError("no 'task' entry")
    num_classes = info.get("num_classes")
    if not (isinstance(num_classes, int) and 2 <= num_classes <= _MAX_SAVED_CLASSES):
        raise ValueError(f"'num_classes' is {num_classes!r}")
    for key in ("input_size", "crop_size"):
        size = info.get(key)
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and 0 < v <= 65536 for v in size)):
            raise ValueError(f"'{key}' is {size!r}, not [height, width]")
    names = info.get("class_names")
    if names is not None and not (isinstance(names, list) and len(names) == num_classes):
        raise ValueError(f"'class_names' does not name {num_classes} classes")


def check_num_classes_flag(flag_values, info):
    """A given --num_classes must be the saved model's (UserError naming both otherwise)."""
    if flag_values.num_classes is not None and flag_values.num_classes != int(info["num_classes"]):
        info_path = os.path.join(flag_values.finetune_save_path, FINETUNE_INFO_FILE)
        raise UserError(f"--num_classes={flag_values.num_classes} but the model in {info_path} was trained with "
                        f"{info['num_classes']} classes; leave --num_classes out.")


def load_finetuned_model(finetune_save_path):
    """The fine-tuned model.keras under --finetune_save_path (classification or segmentation)."""
    return load_keras_file(os.path.join(finetune_save_path, MODEL_FILE), "--finetune_save_path", "fine-tuned model")
