"""Exports for serving stacks that do not install simclr-tf: a TensorFlow SavedModel (TF Serving)
with image decoding and the evaluation view inside the graph, and a checked TFLite file.

    from simclr_tf.export import export_saved_model, export_tflite
    export_saved_model(model, "classification", "serving/my_model/1", input_size=(96, 96),
                       crop_size=(96, 96), class_names=names)
    export_tflite(model, "my_model.tflite", kind="classification", crop_size=(96, 96),
                  quantization="int8", calibration_images=calibration)

`calibration` holds images prepared as the network sees them (float32 [n, 96, 96, 3] in [0, 1]).
See `saved_model` for the signatures, `tflite` for the TFLite model's interface and check, and
`preprocess` for how the in-graph image preparation relates to the training-time host path.
"""
from simclr_tf.export.preprocess import (KINDS, decode_and_prepare, decode_image_bytes, prepare_image,
                                         resize_like_host)
from simclr_tf.export.saved_model import (ExportCheckError, export_saved_model, read_export_metadata,
                                          synthetic_check_images)
from simclr_tf.export.tflite import (FLOAT32_TOLERANCE, INT8_TOLERANCE, TFLiteCheck, TFLiteCheckError,
                                     TFLiteTolerance, check_tflite, default_tolerance, export_tflite,
                                     interpreter_api, load_tflite_interpreter, run_tflite)

__all__ = [
    "KINDS", "decode_and_prepare", "decode_image_bytes", "prepare_image", "resize_like_host",
    "ExportCheckError", "export_saved_model", "read_export_metadata", "synthetic_check_images",
    "FLOAT32_TOLERANCE", "INT8_TOLERANCE", "TFLiteCheck", "TFLiteCheckError", "TFLiteTolerance", "check_tflite",
    "default_tolerance", "export_tflite", "interpreter_api", "load_tflite_interpreter", "run_tflite",
]
