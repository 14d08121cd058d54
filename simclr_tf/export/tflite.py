"""TFLite (LiteRT) export, float32 or full-integer int8, checked against the Keras model first.

The TFLite model's input is ``images`` float32 [N, crop_h, crop_w, 3] in [0, 1], already prepared
(decoding, resizing and the evaluation view are the app's job: see `preprocess` for what they must
do); N defaults to 1 and can be resized. Its one output is the Keras model's: ``probabilities``
[N, K] (classification), ``h`` [N, D] (encoder) or ``logits`` [N, crop_h, crop_w, C]
(segmentation; the input is fixed at the crop size, since TFLite wants static spatial shapes).

With ``quantization="int8"`` weights and activations are int8 (biases int32; activation ranges
calibrated on `calibration_images` through the converter's representative dataset) and only the
input and output stay float32: the model starts with a QUANTIZE op and ends with a DEQUANTIZE op
(checked on a ResNet-18 classifier: every other op runs on int8), so apps feed the same float
images to both variants. Accelerators that need int8 tensors at
the boundaries (Edge TPU) are not served by this file.

Interpreter: TensorFlow 2.21 still ships `tf.lite.Interpreter`, with a warning that it is
deprecated in favour of the `ai_edge_litert` package (LiteRT). The converter itself,
`tf.lite.TFLiteConverter`, is not deprecated. `load_tflite_interpreter` uses
`ai_edge_litert.interpreter.Interpreter` when that package is installed and `tf.lite.Interpreter`
(with its deprecation warning silenced) otherwise, so the project needs no new dependency.
"""

import dataclasses
import math
import os
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from simclr_tf.export import preprocess
from simclr_tf.export._files import write_bytes_atomic
from simclr_tf.export.saved_model import (_check_model, label_map_mismatches, prepared_images,
                                          synthetic_check_images, tf_variables)

QUANTIZATIONS = ("float32", "int8")
OUTPUT_NAMES = {"classification": "probabilities", "encoder": "h", "segmentation": "logits"}
# Check images used by default with int8: the first calibration images, at most this many.
DEFAULT_INT8_CHECK_IMAGES = 16


@dataclasses.dataclass(frozen=True)
class TFLiteTolerance:
    """What the check of `export_tflite` requires of the TFLite model against the Keras model.

    Differences are relative to max(1, max |Keras output|) over the check images, so the same
    bound serves probabilities, features and logits of any scale. A bound left as None is not
    checked.

    Attributes:
      max_abs_diff: largest |TFLite - Keras| over every output value.
      max_mean_abs_diff: mean |TFLite - Keras|.
      min_agreement: classification: share of check images with the same top-1 class;
        segmentation: share of pixels with the same argmax. Not used for encoders.
      min_cosine: encoder: smallest cosine similarity of TFLite's and Keras' h over the images.
    """

    max_abs_diff: float | None = None
    max_mean_abs_diff: float | None = None
    min_agreement: float | None = None
    min_cosine: float | None = None


# float32 runs the same arithmetic with other kernels (XNNPACK, fused BN): ~1e-6 measured.
FLOAT32_TOLERANCE = TFLiteTolerance(max_abs_diff=1e-4)
# int8 changes the numbers; what must survive is the decision (top-1 class, per-pixel class) and,
# for features, their direction. Probabilities are also bounded on average: int8 softmax outputs
# come in steps of 1/256.
INT8_TOLERANCE = {
    "classification": TFLiteTolerance(max_mean_abs_diff=0.05, min_agreement=0.9),
    "segmentation": TFLiteTolerance(min_agreement=0.9),
    "encoder": TFLiteTolerance(min_cosine=0.95),
}


def default_tolerance(kind, quantization):
    """The `TFLiteTolerance` `export_tflite` uses when none is given."""
    return FLOAT32_TOLERANCE if quantization == "float32" else INT8_TOLERANCE[kind]


@dataclasses.dataclass(frozen=True)
class TFLiteCheck:
    """What the TFLite model did on the check images, compared with the Keras model.

    `max_abs_diff` and `mean_abs_diff` are relative to max(1, max |Keras output|); `agreement` is
    the share of images (classification) or pixels (segmentation) with the same class, None for
    encoders; `min_cosine` the smallest cosine similarity of h (encoders), else None. `failures`
    lists the bounds of `tolerance` that were not met (empty when `passed`).
    """

    kind: str
    quantization: str
    num_images: int
    max_abs_diff: float
    mean_abs_diff: float
    agreement: float | None
    min_cosine: float | None
    tolerance: TFLiteTolerance
    failures: tuple
    path: str | None = None
    size_bytes: int = 0

    @property
    def passed(self):
        """True when every bound of `tolerance` was met."""
        return not self.failures


class TFLiteCheckError(RuntimeError):
    """The converted model does not reproduce the Keras model within the tolerance; no file was
    written. `check` holds the measured `TFLiteCheck`."""

    def __init__(self, message, check):
        super().__init__(message)
        self.check = check


def interpreter_api():
    """(Interpreter class, "ai_edge_litert" or "tf.lite"): LiteRT when installed, else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai_edge_litert"
    except ImportError:
        return tf.lite.Interpreter, "tf.lite"


def load_tflite_interpreter(model_path=None, model_content=None, num_threads=None):
    """A TFLite interpreter for a file or for model bytes (see `interpreter_api`)."""
    interpreter_class, api = interpreter_api()
    with warnings.catch_warnings():
        if api == "tf.lite":
            # The deprecation notice is addressed at apps; the fallback is deliberate here.
            warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")
        return interpreter_class(model_path=model_path, model_content=model_content, num_threads=num_threads)


def run_tflite(model, images):
    """Runs a TFLite model (a path, model bytes or an interpreter) on float32 images [N, h, w, 3].

    Returns its output dict (name -> array) of the `serving_default` signature that
    `export_tflite` writes.
    """
    if isinstance(model, (bytes, bytearray)):
        interpreter = load_tflite_interpreter(model_content=bytes(model))
    elif isinstance(model, (str, os.PathLike)):
        interpreter = load_tflite_interpreter(model_path=os.fspath(model))
    else:
        interpreter = model
    runner = interpreter.get_signature_runner("serving_default")
    # The signature runner resizes the batch dimension to what it is given.
    outputs = runner(images=np.ascontiguousarray(images, np.float32))
    return {name: np.asarray(value) for name, value in outputs.items()}


def _convert(model, kind, crop_size, quantization, calibration_images):
    """TFLite flatbuffer bytes of `model` at a fixed crop size."""
    output_name = OUTPUT_NAMES[kind]

    def serve(images):
        return {output_name: tf.cast(model(images, training=False), tf.float32)}

    # Through a SavedModel, as Keras' own LiteRT exporter does, whose root tracks the tf.Variables
    # (`tf_variables`): with the Keras variables tracked instead, the converted model computed NaN.
    with tempfile.TemporaryDirectory(prefix="simclr-tflite-") as saved_model_dir:
        module = tf.Module(name="simclr_tflite")
        module.model_variables = tf_variables(model)
        module.serve = tf.function(
            serve, input_signature=[tf.TensorSpec([None, *crop_size, 3], tf.float32, name="images")],
            autograph=False)
        tf.saved_model.save(module, saved_model_dir, signatures={"serving_default": module.serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
        if quantization == "int8":
            def representative_dataset():
                for image in calibration_images:
                    yield [image[np.newaxis]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative_dataset
            # Only int8 kernels: conversion fails rather than silently keeping float ops.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.float32
            converter.inference_output_type = tf.float32
        with warnings.catch_warnings():
            # "Statistics for quantized inputs were expected": the float input needs none.
            warnings.filterwarnings("ignore", message=r".*Statistics for quantized inputs.*")
            return converter.convert()


def check_tflite(content, model, kind, check_images, quantization, tolerance=None):
    """Compares TFLite model bytes with the Keras `model` on `check_images`; returns a TFLiteCheck."""
    tolerance = tolerance or default_tolerance(kind, quantization)
    expected = np.asarray(model(check_images, training=False), np.float64)
    try:
        got = np.asarray(run_tflite(content, check_images)[OUTPUT_NAMES[kind]], np.float64)
    except (RuntimeError, ValueError) as e:
        # A model the default interpreter cannot run (e.g. XNNPACK refusing a quantization scale)
        # fails the check like a wrong one: apps would meet the same error.
        return TFLiteCheck(kind=kind, quantization=quantization, num_images=len(check_images), tolerance=tolerance,
                           max_abs_diff=math.inf, mean_abs_diff=math.inf, agreement=None, min_cosine=None,
                           failures=(f"the TFLite interpreter cannot run it ({str(e).strip()[:300]})",))
    if got.shape != expected.shape:
        return TFLiteCheck(kind=kind, quantization=quantization, num_images=len(check_images), tolerance=tolerance,
                           max_abs_diff=math.inf, mean_abs_diff=math.inf, agreement=None, min_cosine=None,
                           failures=(f"output shape {got.shape} (the Keras model's: {expected.shape})",))
    scale = max(1.0, float(np.max(np.abs(expected))))
    diff = np.abs(got - expected) / scale
    agreement = min_cosine = None
    if kind == "classification":
        agreement = float(np.mean(np.argmax(got, axis=1) == np.argmax(expected, axis=1)))
    elif kind == "segmentation":
        if quantization == "float32":
            # Near ties may flip between two float32 implementations; those pixels do not count.
            mismatches = label_map_mismatches(np.argmax(got, axis=-1), expected, tolerance=1e-4)
            agreement = 1.0 - mismatches / float(np.prod(expected.shape[:-1]))
        else:
            agreement = float(np.mean(np.argmax(got, axis=-1) == np.argmax(expected, axis=-1)))
    else:
        norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
        cosines = np.sum(got * expected, axis=1) / np.maximum(norms, 1e-12)
        # Two zero vectors are the same vector.
        cosines = np.where(norms > 0, cosines, np.where(np.linalg.norm(got - expected, axis=1) == 0, 1.0, 0.0))
        min_cosine = float(np.min(cosines))
    values = dict(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()), agreement=agreement,
                  min_cosine=min_cosine)
    failures = []
    bounds = (("max_abs_diff", "max_abs_diff", "<="), ("max_mean_abs_diff", "mean_abs_diff", "<="),
              ("min_agreement", "agreement", ">="), ("min_cosine", "min_cosine", ">="))
    for bound_name, value_name, relation in bounds:
        bound, value = getattr(tolerance, bound_name), values[value_name]
        if bound is None or value is None:
            continue
        ok = value <= bound if relation == "<=" else value >= bound
        if not ok or math.isnan(value):
            failures.append(f"{value_name} {value:.4g} (required {relation} {bound:g})")
    return TFLiteCheck(kind=kind, quantization=quantization, num_images=len(check_images), tolerance=tolerance,
                       failures=tuple(failures), **values)


def export_tflite(model, path, *, kind, crop_size, quantization="float32", calibration_images=None,
                  check_images=None, tolerance=None):
    """Converts `model` to a TFLite file, checks it against the Keras model, then writes it.

    Args:
      model: a classifier outputting probabilities, a segmentation model outputting logits, or an
        encoder outputting h (see `export_saved_model`).
      path: the `.tflite` file to write (replaced atomically if it exists).
      kind: "classification", "segmentation" or "encoder".
      crop_size: (height, width) of the network's input, fixed in the TFLite model.
      quantization: "float32", or "int8" for full-integer quantization (float input and output).
      calibration_images: int8 only, required: float32 [n, crop_h, crop_w, 3] in [0, 1], prepared
        like real inputs (the evaluation view); a few hundred images of the target data are
        typical. Activation ranges come from these, so synthetic images make a poor model.
      check_images: float32 [n, crop_h, crop_w, 3] in [0, 1] to compare the TFLite and Keras models
        on. Default: float32: four synthetic images (any input tests the arithmetic); int8: the
        first 16 calibration images (optimistic: pass held-out images for an honest check).
      tolerance: a `TFLiteTolerance`; default `default_tolerance(kind, quantization)`: float32:
        max difference <= 1e-4 x max(1, |output|); int8: classification top-1 agreement >= 0.9 and
        mean probability difference <= 0.05; segmentation pixel agreement >= 0.9; encoder cosine
        similarity of h >= 0.95 on every check image.

    Returns:
      The `TFLiteCheck` of the written file (with `path` and `size_bytes`).

    Raises:
      ValueError: bad arguments (unknown kind or quantization, missing or malformed images).
      TFLiteCheckError: the converted model failed the check; nothing is written (an existing file
        at `path` is left as it was).
    """
    preprocess.check_kind(kind)
    crop_size = preprocess.size_pair(crop_size, "crop_size")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}; got {quantization!r}")
    _check_model(model, kind, crop_size)
    if quantization == "int8":
        if calibration_images is None:
            raise ValueError("int8 quantization needs calibration_images (prepared images of the target data)")
        calibration_images = prepared_images(calibration_images, crop_size, "calibration_images")
    if check_images is None:
        check_images = (calibration_images[:DEFAULT_INT8_CHECK_IMAGES] if quantization == "int8"
                        else synthetic_check_images(crop_size, count=4))
    check_images = prepared_images(check_images, crop_size, "check_images")

    content = _convert(model, kind, crop_size, quantization, calibration_images)
    check = check_tflite(content, model, kind, check_images, quantization, tolerance)
    if not check.passed:
        raise TFLiteCheckError(f"the {quantization} TFLite model of this {kind} model fails its check on "
                               f"{check.num_images} images: {'; '.join(check.failures)}; {path} was not written",
                               check)
    path = os.path.abspath(os.fspath(path))
    write_bytes_atomic(path, content)
    return dataclasses.replace(check, path=path, size_bytes=len(content))
