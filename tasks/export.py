"""`--task=export`: a fine-tuned model.keras (--export_model=finetuned, from --finetune_save_path) or a
pretrained encoder.keras (--export_model=encoder, from --pretrain_save_path) as artifacts a serving
stack loads without simclr-tf (README, "Export for serving"), under --output_path:

* saved_model/: a TensorFlow SavedModel (TF Serving, `tf.saved_model.load`) whose default signature
  takes encoded image bytes and does decoding, resizing and the evaluation view inside the graph,
  and whose `predict_images` signature takes prepared float images;
* with --export_format=tflite / tflite_int8 also model.tflite (int8: calibrated on the images of
  --calibration_file_path), checked against the Keras model before it is written.
"""
import os

import numpy as np

from simclr_tf.data import filelist
from simclr_tf.data.labelled import eval_dataset
from simclr_tf.errors import UserError
from simclr_tf.evaluation.probes import run_in_order
from simclr_tf.export import ExportCheckError, TFLiteCheckError, export_saved_model, export_tflite

from . import artifacts
from .console import say
from .flag_use import TaskFlags
from .image_files import image_source
from .sizes import image_sizes

FLAGS_READ = TaskFlags("export", results=(), also_reads=(
    "image_size", "decoding", "pretrain_folder", "finetune_folder", "output_folder", "batch", "export"))
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
# Images of the calibration list used to calibrate int8, and held out to check it.
CALIBRATION_IMAGES, CHECK_IMAGES = 256, 32


def run(flag_values):
    model, kind, input_size, crop_size, class_names = _model_to_export(flag_values)
    output_path = flag_values.output_path
    calibration, check = (None, None)
    if flag_values.export_format == "tflite_int8":
        calibration, check = _calibration_images(flag_values, input_size, crop_size)
    try:
        path = export_saved_model(model, kind, os.path.join(output_path, SAVED_MODEL_DIR), input_size=input_size,
                                  crop_size=crop_size, class_names=class_names, overwrite=True)
        say(f"Wrote the SavedModel {path} ({kind}; signatures serving_default: encoded image bytes, "
            "predict_images: prepared float images), checked against the Keras model")
        if flag_values.export_format != "saved_model":
            quantization = "int8" if flag_values.export_format == "tflite_int8" else "float32"
            result = export_tflite(model, os.path.join(output_path, TFLITE_FILE), kind=kind, crop_size=crop_size,
                                   quantization=quantization, calibration_images=calibration, check_images=check)
            agreement = "" if result.agreement is None else f", agreement {result.agreement:.3f}"
            say(f"Wrote {os.path.join(output_path, TFLITE_FILE)} ({quantization}, {result.size_bytes / 1e6:.1f} MB), "
                f"checked on {result.num_images} images against the Keras model: max difference "
                f"{result.max_abs_diff:.2e}{agreement}")
    except (ExportCheckError, TFLiteCheckError) as e:
        raise UserError(f"--task=export: the exported model does not reproduce the Keras model, so it was not "
                        f"written: {e}") from None
    except ValueError as e:
        raise UserError(f"--task=export: {e}") from None


def _model_to_export(flag_values):
    """(model, kind, input size, crop size, class names) of --export_model."""
    if flag_values.export_model == "encoder":
        path = artifacts.encoder_path(flag_values)
        if not os.path.isfile(path):
            raise UserError(f"--export_model=encoder: no {artifacts.ENCODER_FILE} in --pretrain_save_path="
                            f"{flag_values.pretrain_save_path}.")
        input_size, crop_size = image_sizes(flag_values)
        return artifacts.load_keras_file(path, "--pretrain_save_path", "encoder"), "encoder", input_size, \
            crop_size, None
    info = artifacts.read_finetune_info(flag_values.finetune_save_path)
    model = artifacts.load_finetuned_model(flag_values.finetune_save_path)
    return model, info["task"], tuple(info["input_size"]), tuple(info["crop_size"]), info.get("class_names")


def _calibration_images(flag_values, input_size, crop_size):
    """(calibration images, held-out check images or None) from --calibration_file_path, prepared as
    the network sees them (the evaluation view)."""
    if not flag_values.calibration_file_path:
        raise UserError("--export_format=tflite_int8 needs --calibration_file_path: a list of a few hundred images "
                        "like those the model will see (their activation ranges set the int8 scales).")
    image_list = filelist.read_file_list(flag_values.calibration_file_path, filelist.IMAGES,
                                         flag_name="--calibration_file_path")
    paths = image_list.paths[:CALIBRATION_IMAGES + CHECK_IMAGES]
    images, ok = run_in_order(lambda batch: batch, eval_dataset(image_source(flag_values, paths, input_size),
                                                                crop_size, flag_values.batch_size))
    images = np.asarray(images)[ok]
    if len(images) < 8:
        raise UserError(f"--calibration_file_path={flag_values.calibration_file_path}: only {len(images)} decodable "
                        "images; give at least 8 (a few hundred is better).")
    calibration = images[:CALIBRATION_IMAGES]
    check = images[CALIBRATION_IMAGES:] if len(images) > CALIBRATION_IMAGES + 4 else None
    return calibration, check
