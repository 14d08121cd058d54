"""TensorFlow SavedModel export of a fine-tuned model or a pretrained encoder, for TF Serving.

The SavedModel holds plain TensorFlow graphs: the Keras model is traced into tf.functions and only
its variables are saved with them, so loading it needs TensorFlow only, neither simclr-tf nor its
custom Keras objects (the segmentation decoder's `CropToMatch` becomes a strided slice).

Signatures (N images per request; every output has N rows):

``serving_default(image_bytes: string [N])``: encoded JPEG / PNG / BMP / GIF (first frame) / WebP
files. Decoded, resized to the input size and given the evaluation view inside the graph
(`preprocess.decode_and_prepare`); images of different sizes may share a batch. Outputs:

* classification: ``probabilities`` float32 [N, K], ``class_index`` int64 [N] (the argmax),
  ``class_name`` string [N] (the name of that class).
* segmentation: ``label_map`` uint8 [N, crop_h, crop_w], class indices at the network's resolution;
  ``original_size`` int32 [N, 2], each image's decoded (height, width); ``label_map_original`` uint8
  [N, H_max, W_max]: each image's map at its original size, made as `--task=predict` makes it (the
  logits resized bilinearly to the original size, then the argmax), in the top-left corner and
  padded with 255 (the project's ignore label) up to the largest image of the batch; crop row i to
  ``original_size[i]``. A request of one image has no padding.
* encoder: ``h`` float32 [N, D], the representation.

``predict_images(images: float32 [N, crop_h, crop_w, 3])``: images already prepared (values in
[0, 1], at the crop size, e.g. by the client's own pipeline). The same outputs; for segmentation
``original_size`` is the crop size and ``label_map_original`` equals ``label_map``.

A corrupt image in a ``serving_default`` batch fails the whole request (InvalidArgumentError), as
any decode op in a TensorFlow graph does. Through TF Serving's REST API a request is
``{"signature_name": "serving_default", "instances": [{"b64": "<base64 of the file>"}, ...]}``.

Why the full-resolution map is computed in the graph rather than left to the client: resizing the
label map with nearest neighbour (all a client can do with class indices) is not what the project's
evaluation and `--task=predict` do, which interpolate the logits. Padding to the batch's largest
image is the one way to return maps of different sizes as one dense tensor; `original_size` says
where each ends. Its cost grows with H x W x classes per image; a client that only needs the
network-resolution map can ask for ``label_map`` alone (TF Serving's gRPC output filter then does
not compute the rest).

The folder also holds ``assets.extra/simclr_export.json`` (kind, sizes, class names, versions),
which TF Serving ignores.
"""

import json
import os

import numpy as np
import tensorflow as tf

from simclr_tf.export import preprocess
from simclr_tf.export._files import atomic_directory

METADATA_FILE = os.path.join("assets.extra", "simclr_export.json")
METADATA_FORMAT_VERSION = 1
# Padding of `label_map_original` beyond an image's size: the project's ignore label.
PADDING_LABEL = 255
# `predict_images` of the written SavedModel must reproduce the Keras model to this, relative to
# max(1, largest output magnitude): the same float32 ops, only grappler's graph rewrites differ.
VERIFY_TOLERANCE = 1e-5
# Rows of a classification model's output must sum to 1 within this to count as probabilities.
_PROBABILITY_SUM_TOLERANCE = 1e-3


class ExportCheckError(RuntimeError):
    """The written export does not reproduce the Keras model; nothing was left under its name."""


def _check_model(model, kind, crop_size):
    """Output width (K classes or D features) of `model`, after checking its shapes fit `kind`."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"expected a model with one input and one output, got {len(model.inputs)} and "
                         f"{len(model.outputs)}")
    input_shape = tuple(model.inputs[0].shape)
    if len(input_shape) != 4 or input_shape[3] not in (None, 3):
        raise ValueError(f"expected an image model with input [batch, height, width, 3], got {input_shape}")
    for fixed, wanted in zip(input_shape[1:3], crop_size):
        if fixed is not None and fixed != wanted:
            raise ValueError(f"crop_size {tuple(crop_size)} does not fit the model's input shape {input_shape}")
    output_shape = tuple(model.outputs[0].shape)
    rank = 4 if kind == "segmentation" else 2
    if len(output_shape) != rank or output_shape[-1] is None:
        what = "per-pixel logits [batch, height, width, classes]" if rank == 4 else "[batch, features]"
        raise ValueError(f"a {kind} model must output {what}; this one outputs {output_shape}")
    return int(output_shape[-1])


def _class_names(class_names, num_classes):
    if class_names is None:
        return [str(i) for i in range(num_classes)]  # what the project itself uses without classes.txt
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} class names for a model with {num_classes} classes")
    return names


def prepared_images(images, crop_size, what):
    """`images` as float32 [n >= 1, crop_h, crop_w, 3] with values in [0, 1]; ValueError otherwise."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (*crop_size, 3) or len(images) == 0:
        raise ValueError(f"{what} must be float images [n >= 1, {crop_size[0]}, {crop_size[1]}, 3], "
                         f"got shape {images.shape}")
    if not np.all(np.isfinite(images)) or images.min() < -1e-6 or images.max() > 1.0 + 1e-6:
        raise ValueError(f"{what} must hold prepared images with values in [0, 1] (the evaluation view "
                         f"of `preprocess.prepare_image`), got values in [{images.min()}, {images.max()}]")
    return images


def synthetic_check_images(crop_size, count=2, seed=0):
    """`count` float32 images [count, crop_h, crop_w, 3] in [0, 1]: smooth random colour fields with
    a sharp-edged rectangle, deterministic for `seed`. Used to check an export when no real images
    are given; any input works for comparing two implementations of the same arithmetic."""
    height, width = preprocess.size_pair(crop_size, "crop_size")
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = rng.random((1, 4, 4, 3)).astype(np.float32)
        image = tf.image.resize(coarse, (height, width), method="bilinear").numpy()[0]
        top, left = rng.integers(0, max(1, height // 2)), rng.integers(0, max(1, width // 2))
        image[top:top + max(1, height // 3), left:left + max(1, width // 3)] = rng.random(3)
        images.append(image)
    return np.clip(np.stack(images), 0.0, 1.0).astype(np.float32)


def _label_maps_at_original_size(logits, sizes):
    """uint8 [N, H_max, W_max]: the argmax of `logits` [N, h, w, C] resized bilinearly to each
    image's `sizes` [N, 2], padded with PADDING_LABEL (as `upsampled_label_map` does per image)."""
    max_size = tf.reduce_max(sizes, axis=0)

    def one_image(args):
        image_logits, size = args
        same = tf.reduce_all(tf.shape(image_logits)[:2] == size)
        resized = tf.cond(same, lambda: image_logits,
                          lambda: tf.image.resize(image_logits, size, method="bilinear"))
        label_map = tf.cast(tf.argmax(resized, axis=-1), tf.uint8)
        padding = tf.stack([[0, max_size[0] - size[0]], [0, max_size[1] - size[1]]])
        return tf.pad(label_map, padding, constant_values=PADDING_LABEL)

    def all_images():
        return tf.map_fn(one_image, (logits, sizes), fn_output_signature=tf.TensorSpec([None, None], tf.uint8))

    # map_fn cannot stack zero elements of a partly unknown shape: an empty request gets [0, 0, 0].
    return tf.cond(tf.shape(logits)[0] > 0, all_images, lambda: tf.zeros([0, 0, 0], tf.uint8))


def _signature_outputs(kind, model_output, original_sizes, class_names):
    """The output dict of a signature, from the model's output on prepared images."""
    if kind == "encoder":
        return {"h": tf.cast(model_output, tf.float32)}
    if kind == "classification":
        probabilities = tf.cast(model_output, tf.float32)
        class_index = tf.argmax(probabilities, axis=1, output_type=tf.int64)
        return {"probabilities": probabilities, "class_index": class_index,
                "class_name": tf.gather(tf.constant(class_names, tf.string), class_index)}
    logits = tf.cast(model_output, tf.float32)
    return {"label_map": tf.cast(tf.argmax(logits, axis=-1), tf.uint8),
            "original_size": original_sizes,
            "label_map_original": _label_maps_at_original_size(logits, original_sizes)}


def tf_variables(model):
    """The tf.Variables behind `model`'s Keras variables, to be tracked by a SavedModel's root.

    Tracking the Keras variables themselves is not enough: `tf.saved_model.load` then restores
    them, but the graph-based loaders, TF Serving's C++ loader and TFLiteConverter.from_saved_model,
    do not find them (measured: "Could not find variable ..." in a TF1 session, NaN outputs from the
    converted TFLite model).
    """
    variables = [variable.value for variable in model.variables]
    if not all(isinstance(variable, tf.Variable) for variable in variables):
        raise TypeError("exporting needs the TensorFlow backend of Keras (its variables are tf.Variables)")
    return variables


def serving_module(model, kind, input_size, crop_size, class_names=None):
    """(tf.Module holding `model`'s variables and the two signature functions, signatures dict).

    `tf.saved_model.save(module, path, signatures=signatures)` writes it; nothing is traced before. Not
    `keras.export.ExportArchive`: that traces every endpoint twice (once to collect the variables
    it uses, again inside the save), which doubled the export time of a ResNet here; the model has
    no lookup tables or other resources that only ExportArchive would find.
    """
    images_spec = tf.TensorSpec([None, *crop_size, 3], tf.float32, name="images")
    if kind == "classification" and class_names is None:
        class_names = _class_names(None, _check_model(model, kind, crop_size))

    output_width = _check_model(model, kind, crop_size)
    output_shape = [*crop_size, output_width] if kind == "segmentation" else [output_width]

    # One traced copy of the network, called by both signatures, instead of one per signature.
    @tf.function(input_signature=[images_spec], autograph=False)
    def forward(images):
        def run():
            return tf.cast(model(images, training=False), tf.float32)

        # An empty request must not reach the network: with oneDNN, TensorFlow 2.21's convolution
        # returns a wrongly shaped tensor for a batch of 0 and the next layer fails.
        return tf.cond(tf.shape(images)[0] > 0, run, lambda: tf.zeros([0, *output_shape], tf.float32))

    def serving_default(image_bytes):
        def prepare(one):
            return preprocess.decode_and_prepare(one, input_size, crop_size, kind)

        images, original_sizes = tf.map_fn(
            prepare, image_bytes,
            fn_output_signature=(tf.TensorSpec([*crop_size, 3], tf.float32), tf.TensorSpec([2], tf.int32)))
        return _signature_outputs(kind, forward(images), original_sizes, class_names)

    def predict_images(images):
        crop_sizes = tf.tile(tf.constant([crop_size], tf.int32), [tf.shape(images)[0], 1])
        return _signature_outputs(kind, forward(images), crop_sizes, class_names)

    module = tf.Module(name="simclr_export")
    module.model_variables = tf_variables(model)
    module.serving_default = tf.function(
        serving_default, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False)
    module.predict_images = tf.function(predict_images, input_signature=[images_spec], autograph=False)
    return module, {"serving_default": module.serving_default, "predict_images": module.predict_images}


def _png_bytes(image):
    """PNG encoding of a float image in [0, 1] (uint8, rounded)."""
    return tf.io.encode_png(tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)).numpy()


def _max_relative_diff(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def label_map_mismatches(label_map, logits, tolerance=VERIFY_TOLERANCE):
    """Pixels where `label_map` is not the argmax of `logits` [..., C], ignoring near ties.

    Two float32 implementations of the same network may order two classes whose logits are within
    rounding of each other differently; a pixel counts only when its label's logit falls short of
    the largest by more than `tolerance` x max(1, max |logits|).
    """
    logits = np.asarray(logits, np.float64)
    label_map = np.asarray(label_map).astype(np.int64)
    scale = max(1.0, float(np.max(np.abs(logits), initial=0.0)))
    chosen = np.take_along_axis(logits, label_map[..., np.newaxis], axis=-1)[..., 0]
    return int(np.count_nonzero(logits.max(axis=-1) - chosen > tolerance * scale))


def _output_difference(kind, got, expected):
    """Max relative difference of an output, or for segmentation 0 / inf: no / some label mismatch."""
    if kind == "segmentation":
        if got.shape != expected.shape[:-1]:
            return float("inf")
        return 0.0 if label_map_mismatches(got, expected) == 0 else float("inf")
    return _max_relative_diff(got, expected)


def _verify(export_dir, model, kind, input_size, crop_size, check_images):
    """Loads the written SavedModel and compares both signatures with the Keras model; raises
    ExportCheckError on a mismatch."""
    main_output = {"classification": "probabilities", "segmentation": "label_map", "encoder": "h"}[kind]
    loaded = tf.saved_model.load(export_dir)
    expected = np.asarray(model(check_images, training=False))
    got = loaded.signatures["predict_images"](images=tf.constant(check_images))
    diff = _output_difference(kind, got[main_output].numpy(), expected)
    if not diff <= VERIFY_TOLERANCE:
        raise ExportCheckError(f"the SavedModel's predict_images differs from the Keras model "
                               f"(max relative difference {diff:.3g} > {VERIFY_TOLERANCE})")
    # TF Serving restores variables through the graph's saver, not the object graph that
    # tf.saved_model.load uses; a TF1 session load takes the same path.
    logger, level = tf.get_logger(), tf.get_logger().level
    try:
        logger.setLevel("ERROR")  # the TF1 loader's deprecation notice is addressed at model code, not here
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
            signature = meta_graph.signature_def["predict_images"]
            graph_output = session.run(signature.outputs[main_output].name,
                                       {signature.inputs["images"].name: check_images})
    except tf.errors.OpError as e:
        raise ExportCheckError(f"the SavedModel cannot run when loaded through its graph, as TF Serving loads it: "
                               f"{e.message.splitlines()[0]}") from None
    finally:
        logger.setLevel(level)
    diff = _output_difference(kind, graph_output, expected)
    if not diff <= VERIFY_TOLERANCE:
        raise ExportCheckError(f"the SavedModel loaded through its graph (as TF Serving loads it) differs from "
                               f"the Keras model (max relative difference {diff:.3g} > {VERIFY_TOLERANCE})")
    # The bytes path, against the same preparation run eagerly: catches a broken decoding graph.
    encoded = [_png_bytes(image) for image in check_images]
    prepared = np.stack([preprocess.decode_and_prepare(b, input_size, crop_size, kind)[0].numpy()
                         for b in encoded])
    expected = np.asarray(model(prepared, training=False))
    got = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
    diff = _output_difference(kind, got[main_output].numpy(), expected)
    if not diff <= VERIFY_TOLERANCE:
        raise ExportCheckError(f"the SavedModel's serving_default differs from the Keras model on the same "
                               f"prepared images (max relative difference {diff:.3g} > {VERIFY_TOLERANCE})")


def _metadata(kind, input_size, crop_size, class_names, output_width):
    import keras
    import simclr_tf
    outputs = {
        "classification": {"probabilities": "float32 [N, K]", "class_index": "int64 [N]",
                           "class_name": "string [N]"},
        "segmentation": {"label_map": "uint8 [N, crop_h, crop_w]", "original_size": "int32 [N, 2]",
                         "label_map_original": f"uint8 [N, H_max, W_max], padded with {PADDING_LABEL}"},
        "encoder": {"h": "float32 [N, D]"},
    }[kind]
    metadata = {
        "format_version": METADATA_FORMAT_VERSION,
        "kind": kind,
        "input_size": list(input_size),
        "crop_size": list(crop_size),
        "signatures": {
            "serving_default": {"inputs": {"image_bytes": "string [N], encoded image files"}, "outputs": outputs},
            "predict_images": {"inputs": {"images": f"float32 [N, {crop_size[0]}, {crop_size[1]}, 3] in [0, 1]"},
                               "outputs": outputs},
        },
        "simclr_tf_version": simclr_tf.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    if kind == "encoder":
        metadata["feature_dim"] = output_width
    else:
        metadata["num_classes"] = output_width
        metadata["class_names"] = class_names
    return metadata


def export_saved_model(model, kind, export_dir, *, input_size, crop_size, class_names=None,
                       check_images=None, verify=True, overwrite=False):
    """Writes `model` as a SavedModel with the signatures `serving_default` and `predict_images`.

    Args:
      model: a Keras model: a classifier that outputs class probabilities (`model.keras` of
        `--task=classification`, i.e. `with_softmax(build_classifier(...))`), a segmentation model
        that outputs per-pixel logits (`model.keras` of `--task=segmentation`), or an encoder that
        outputs h (`encoder.keras`). Keras' TensorFlow backend.
      kind: "classification", "segmentation" or "encoder".
      export_dir: the folder to create. For TF Serving use ``<model base path>/<version number>``.
      input_size: (height, width) images are resized to when read (finetune.json's "input_size").
      crop_size: (height, width) the network sees (finetune.json's "crop_size").
      class_names: names of the K classes; default "0", "1", ... Classification: the `class_name`
        output and the metadata; segmentation: the metadata only (label maps hold indices).
      check_images: float32 [n, crop_h, crop_w, 3] in [0, 1] to verify the export with; default two
        synthetic images.
      verify: load the written SavedModel and check that `predict_images` reproduces the Keras model
        (max difference <= 1e-5 x max(1, |output|); segmentation: the same label maps up to near
        ties), also when loaded through the graph as TF Serving's C++ loader does, and that
        `serving_default` does so on PNG-encoded check images, before it gets its final name.
      overwrite: replace an existing `export_dir` (otherwise FileExistsError before any work).

    Returns:
      The absolute path of `export_dir`.

    Raises:
      ValueError: `kind`, sizes or class names do not fit the model, or a classifier outputs values
        that are not probabilities (wrap it with the classifier builder's `with_softmax`).
      FileExistsError: `export_dir` exists and `overwrite` is False.
      ExportCheckError: the verification failed.

    The SavedModel is written to a temporary folder beside `export_dir` and renamed when complete
    and verified; on any failure neither `export_dir` nor the temporary folder remains.
    """
    preprocess.check_kind(kind)
    input_size = preprocess.size_pair(input_size, "input_size")
    crop_size = preprocess.size_pair(crop_size, "crop_size")
    output_width = _check_model(model, kind, crop_size)
    if kind == "encoder" and class_names is not None:
        raise ValueError("an encoder has no classes; class_names is for classification and segmentation models")
    names = _class_names(class_names, output_width) if kind != "encoder" else None
    if kind == "segmentation" and output_width >= PADDING_LABEL:
        raise ValueError(f"a segmentation model with {output_width} classes does not fit uint8 label maps "
                         f"whose value {PADDING_LABEL} marks padding (at most {PADDING_LABEL - 1} classes)")
    check_images = prepared_images(synthetic_check_images(crop_size) if check_images is None else check_images,
                                   crop_size, "check_images")
    if kind == "classification":
        probabilities = np.asarray(model(check_images, training=False), np.float64)
        sums_off = np.max(np.abs(probabilities.sum(axis=1) - 1.0))
        if probabilities.min() < 0.0 or sums_off > _PROBABILITY_SUM_TOLERANCE:
            raise ValueError("the classification model's outputs are not probabilities (rows must be >= 0 and sum "
                             "to 1); export with_softmax(classifier), as model.keras holds")

    with atomic_directory(export_dir, overwrite=overwrite) as tmp_dir:
        module, signatures = serving_module(model, kind, input_size, crop_size,
                                            names if kind == "classification" else None)
        tf.saved_model.save(module, tmp_dir, signatures=signatures)
        os.makedirs(os.path.join(tmp_dir, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp_dir, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(_metadata(kind, input_size, crop_size, names, output_width), f, indent=2)
            f.write("\n")
        if verify:
            _verify(tmp_dir, model, kind, input_size, crop_size, check_images)
    return os.path.abspath(export_dir)


def read_export_metadata(export_dir):
    """The `assets.extra/simclr_export.json` dict of an export (kind, sizes, class names, ...)."""
    with open(os.path.join(export_dir, METADATA_FILE), encoding="utf-8") as f:
        return json.load(f)
