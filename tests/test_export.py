"""Exports for serving: SavedModels loaded in a process without simclr-tf, TFLite round trips,
the in-graph image preparation against the host path, and atomic writing.

Tolerances (relative = divided by max(1, largest |Keras output|)):
* `predict_images` and `serving_default` against the Keras model on the same prepared images:
  1e-5 relative (same float32 ops; measured ~1e-7). Segmentation label maps: equal wherever the
  two best logits are more than 1e-5 apart (closer ones may be ordered either way).
* In-graph preparation against the project's host path (Pillow, OpenCV resize, eval_view) on
  PNGs: every value within 2/255, mean below 1e-3 (measured: identical on these images); model
  outputs on the two within 0.02. `resize_like_host` alone: within 1 uint8 level of OpenCV on
  images with pixel-level edges.
* TFLite float32: 1e-4 relative (measured ~1e-6). int8: top-1 agreement >= 0.9 and mean
  probability difference <= 0.05 on held-out check images (the library defaults; measured 1.0
  and ~0.01).
"""
import io
import json
import os
import subprocess
import sys
import textwrap

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simclr_tf.data.decode import read_image, resize_image
from simclr_tf.export import (ExportCheckError, TFLiteCheckError, TFLiteTolerance, decode_and_prepare,
                              export_saved_model, export_tflite, load_tflite_interpreter, read_export_metadata,
                              resize_like_host, run_tflite)
from simclr_tf.export import saved_model as saved_model_module
from simclr_tf.export.saved_model import label_map_mismatches
from simclr_tf.models.decoder import build_segmentation_model
from simclr_tf.models.resnet import build_resnet

try:
    from simclr_tf.models.classifier import build_classifier, with_softmax
except ImportError:  # before the models/training reorganisation
    from simclr_tf.training.classifier_trainer import build_classifier, with_softmax

EXACT = 1e-5        # same float32 arithmetic, other graph
HOST_PIXELS = 2.0 / 255.0
TFLITE_FLOAT32 = 1e-4
# Tiny encoders (4 to 32 channels): the export machinery does not depend on the width.
WIDTH = 1.0 / 16.0
# Sizes of the test images: shrinking in both sides (area), growing (cubic), mixed (cubic).
IMAGE_SIZES = [(45, 37), (20, 27), (50, 30)]
CLASS_NAMES = ["red", "green", "blue", "grey"]

# kind -> (input_size, crop_size). The encoder's crop is above 32 px, so its evaluation view
# takes the 87.5% centre crop; the segmentation crop is odd at a decoder level (30 -> 15), so
# CropToMatch really crops; the classifier is the project's 32x32 setting.
SIZES = {"encoder": ((48, 48), (40, 40)), "classification": ((36, 36), (32, 32)),
         "segmentation": ((40, 40), (30, 30))}
MAIN_OUTPUT = {"encoder": "h", "classification": "probabilities", "segmentation": "label_map"}


def colour_images(rng, count, size):
    """uint8 images and labels of 4 easy classes: red, green or blue dominant, or grey; smooth
    texture plus a sharp-edged rectangle (edges are where resampling methods differ most)."""
    height, width = size
    labels = np.arange(count) % 4
    images = []
    for label in labels:
        base = np.full(3, 0.25) if label == 3 else np.eye(3)[label] * 0.5 + 0.15
        coarse = base + rng.uniform(-0.12, 0.12, (height // 6 + 2, width // 6 + 2, 3))
        image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[top:top + height // 3, left:left + width // 3] += rng.uniform(-0.1, 0.1)
        images.append(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return images, labels


def encode(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def prepared(images_bytes, kind):
    """The images as the serving graph prepares them, run eagerly here."""
    input_size, crop_size = SIZES[kind]
    return np.stack([decode_and_prepare(b, input_size, crop_size, kind)[0].numpy() for b in images_bytes])


def host_prepared(paths, kind):
    """The project's own evaluation inputs for these files: a FileImageSource (Pillow decoding, OpenCV
    resize to the input size), then labelled.eval_dataset (eval_view) for classification and
    encoders, segmentation.inference_dataset (whole image, bilinear) for segmentation."""
    input_size, crop_size = SIZES[kind]
    try:
        from simclr_tf.data.sources import FileImageSource

        def source(keep_original_size):
            return FileImageSource(paths, input_size, keep_original_size=keep_original_size)
    except ImportError:  # before the data-sources reorganisation
        from simclr_tf.data.pipeline import FileImageSource as PlainSource
        from simclr_tf.data.segmentation import InferenceSource

        def source(keep_original_size):
            return InferenceSource(paths, input_size) if keep_original_size else PlainSource(paths, input_size)
    if kind == "segmentation":
        from simclr_tf.data.segmentation import inference_dataset
        images, _, _, ok = next(iter(inference_dataset(source(True), crop_size, len(paths))))
    else:
        from simclr_tf.data.labelled import eval_dataset
        images, ok = next(iter(eval_dataset(source(False), crop_size, len(paths))))
    assert np.all(ok.numpy())
    return images.numpy()


def relative_diff(actual, expected):
    expected = np.asarray(expected, np.float64)
    difference = float(np.max(np.abs(np.asarray(actual, np.float64) - expected)))
    return difference / max(1.0, float(np.abs(expected).max()))


def fit_easy_head(classifier, encoder, rng):
    """Least-squares head on the (random) encoder's features of colour images, so that the
    classifier is confident and right: an easy model whose top-1 class survives int8."""
    images, labels = colour_images(rng, 64, (32, 32))
    features = np.asarray(encoder(np.stack(images).astype(np.float32) / 255.0, training=False), np.float64)
    features = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    targets = 6.0 * (np.eye(4)[labels] - 0.25)
    # Ridge, not plain least squares: many ReLU features of a random encoder are dead or collinear,
    # and unbounded weights would make the model ill-conditioned (large cancelling logits). Scaled to
    # the features' own size (a random encoder in inference mode shrinks or grows its input with
    # its initialiser).
    gram = features.T @ features
    ridge = 1e-3 * np.trace(gram) / features.shape[1] * np.eye(features.shape[1])
    solution = np.linalg.solve(gram + ridge, features.T @ targets)
    classifier.get_layer("classification_head").get_layer("logits").set_weights(
        [solution[:-1].astype(np.float32), solution[-1].astype(np.float32)])


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    encoder = build_resnet("resnet18", width_multiplier=WIDTH, image_size=32)
    classifier_encoder = build_resnet("resnet18", width_multiplier=WIDTH, image_size=32)
    classifier = with_softmax(build_classifier(classifier_encoder, 4, SIZES["classification"][1]))
    fit_easy_head(classifier, classifier_encoder, np.random.default_rng(1))
    segmentation = build_segmentation_model(build_resnet("resnet18", width_multiplier=WIDTH, image_size=32), 3)
    # The project's one custom layer must be in the exported graph for the test to mean anything.
    assert any(type(layer).__name__ == "CropToMatch" for layer in segmentation.layers)
    return {"encoder": encoder, "classification": classifier, "segmentation": segmentation}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Test images of three sizes as PNG / JPEG bytes and as PNG files (for the host path)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(2)
    arrays = [colour_images(rng, 1, size)[0][0] for size in IMAGE_SIZES]
    paths = []
    for i, array in enumerate(arrays):
        paths.append(str(folder / f"image_{i}.png"))
        with open(paths[-1], "wb") as f:
            f.write(encode(array, "PNG"))
    return {"arrays": arrays, "png": [encode(a, "PNG") for a in arrays],
            "jpeg": [encode(a, "JPEG") for a in arrays], "paths": paths}


# Runs in a fresh interpreter that imports only TensorFlow and NumPy; simclr_tf is made
# unimportable, so any hidden dependency of the SavedModel on the project's code fails loudly.
LOADER = textwrap.dedent("""
    import importlib.abc, json, sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "simclr_tf" or name.startswith("simclr_tf."):
                raise ImportError("simclr_tf must not be needed to serve an export")
            return None

    sys.meta_path.insert(0, Refuse())
    import os, time
    import numpy as np
    import tensorflow as tf

    # Started before the exports are written, so that importing TensorFlow overlaps with them; the
    # spec file appears (by a rename) when every export is complete.
    deadline = time.time() + 300
    while not os.path.exists(sys.argv[1]):
        if time.time() > deadline:
            sys.exit("no exports to load")
        time.sleep(0.05)
    spec = json.load(open(sys.argv[1]))
    results = {}
    for name, job in spec.items():
        loaded = tf.saved_model.load(job["dir"])
        result = {"signatures": sorted(loaded.signatures)}
        for fmt in ("png", "jpeg"):
            encoded = [open(path, "rb").read() for path in job[fmt]]
            outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(encoded))
            result[fmt] = {key: value.numpy().tolist() for key, value in outputs.items()
                           if key != "class_name"}
            if "class_name" in outputs:
                result[fmt]["class_name"] = [s.decode() for s in outputs["class_name"].numpy()]
        empty = loaded.signatures["serving_default"](image_bytes=tf.constant([], tf.string))
        result["empty_shapes"] = {key: value.shape.as_list() for key, value in empty.items()}
        try:
            loaded.signatures["serving_default"](image_bytes=tf.constant([b"not an image"]))
            result["corrupt"] = "accepted"
        except tf.errors.InvalidArgumentError:
            result["corrupt"] = "InvalidArgumentError"
        images = np.load(job["prepared"])
        outputs = loaded.signatures["predict_images"](images=tf.constant(images))
        result["predict_images"] = {key: value.numpy().tolist() for key, value in outputs.items()
                                    if key != "class_name"}
        # TF Serving's loader restores variables through the graph, not the object graph:
        # a TF1 session load is that path (one kind is enough: the variables are saved alike).
        if not job["tf1_session"]:
            results[name] = result
            continue
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], job["dir"])
            signature = meta_graph.signature_def["predict_images"]
            output = signature.outputs[job["main_output"]].name
            result["tf1_session"] = session.run(output, {signature.inputs["images"].name: images}).tolist()
        results[name] = result
    results["simclr_tf_imported"] = any(m == "simclr_tf" or m.startswith("simclr_tf.") for m in sys.modules)
    print(json.dumps(results))
""")


class Exported:
    """The exports of every kind; `outputs` is the fresh subprocess's JSON, waited for on first use,
    so that the subprocess (one core) overlaps with the tests that need none of it (the other)."""

    def __init__(self, folder, prepared_images, process):
        self.folder, self.prepared, self.process, self._outputs = folder, prepared_images, process, None

    @property
    def outputs(self):
        if self._outputs is None:
            stdout, stderr = self.process.communicate(timeout=300)
            assert self.process.returncode == 0, stderr[-4000:]
            self._outputs = json.loads(stdout.strip().splitlines()[-1])
        return self._outputs


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    """(folder, the fresh subprocess running LOADER, waiting for folder/spec.json)."""
    folder = tmp_path_factory.mktemp("exports")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1", TF_ENABLE_ONEDNN_OPTS="1")
    process = subprocess.Popen([sys.executable, "-c", LOADER, str(folder / "spec.json")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=str(folder), env=env)
    try:
        yield folder, process
    finally:
        if process.poll() is None:  # a failed or deselected test never collected it
            process.kill()
            process.communicate()


@pytest.fixture(scope="module")
def exports(loader, models, images):
    """Every kind exported once, then loaded and run by the fresh subprocess."""
    folder, process = loader
    files = {}
    for fmt in ("png", "jpeg"):
        files[fmt] = []
        for i, data in enumerate(images[fmt]):
            files[fmt].append(str(folder / f"image_{i}.{fmt}"))
            with open(files[fmt][-1], "wb") as f:
                f.write(data)
    spec, prepared_images = {}, {}
    for kind, model in models.items():
        input_size, crop_size = SIZES[kind]
        prepared_images[kind] = prepared(images["png"], kind)
        np.save(str(folder / f"{kind}.npy"), prepared_images[kind])
        # verify=False: the library's own check (a reload in this process) is tested on a tiny model
        # below; the subprocess checks every kind more strictly.
        export_saved_model(model, kind, str(folder / kind / "1"), input_size=input_size, crop_size=crop_size,
                           class_names=CLASS_NAMES if kind == "classification" else None, verify=False)
        spec[kind] = {"dir": str(folder / kind / "1"), "png": files["png"], "jpeg": files["jpeg"],
                      "prepared": str(folder / f"{kind}.npy"), "main_output": MAIN_OUTPUT[kind],
                      "tf1_session": kind == "classification"}
    with open(folder / "spec.tmp", "w") as f:
        json.dump(spec, f)
    os.replace(folder / "spec.tmp", folder / "spec.json")
    return Exported(folder, prepared_images, process)


def test_export_metadata_and_refusals(exports, models, tmp_path):
    # First in the file: it starts the subprocess that the last tests collect.
    metadata = read_export_metadata(str(exports.folder / "classification" / "1"))
    assert metadata["kind"] == "classification" and metadata["class_names"] == CLASS_NAMES
    assert metadata["input_size"] == [36, 36] and metadata["crop_size"] == [32, 32]
    classifier = models["classification"]
    # Logits are not probabilities: refused before anything is written.
    inputs = keras.Input((32, 32, 3))
    logits_model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(inputs)))
    with pytest.raises(ValueError, match="not probabilities"):
        export_saved_model(logits_model, "classification", str(tmp_path / "x"), input_size=32, crop_size=32)
    with pytest.raises(ValueError, match="class names"):
        export_saved_model(classifier, "classification", str(tmp_path / "x"), input_size=32, crop_size=32,
                           class_names=["a"])
    with pytest.raises(ValueError, match="crop_size"):
        export_saved_model(classifier, "classification", str(tmp_path / "x"), input_size=32, crop_size=40)
    with pytest.raises(ValueError, match="kind"):
        export_saved_model(classifier, "detection", str(tmp_path / "x"), input_size=32, crop_size=32)
    with pytest.raises(ValueError, match="no classes"):
        export_saved_model(models["encoder"], "encoder", str(tmp_path / "x"), input_size=32, crop_size=32,
                           class_names=["a"])
    assert os.listdir(tmp_path) == []


def test_resize_like_host_is_within_one_level_of_opencv():
    rng = np.random.default_rng(3)
    for source, target in [((45, 37), (36, 36)), ((64, 64), (32, 32)), ((20, 27), (36, 36)),
                           ((50, 30), (36, 36)), ((7, 5), (40, 33)), ((36, 36), (36, 36))]:
        image = colour_images(rng, 1, source)[0][0]
        image[::3, ::4] = rng.integers(0, 256, image[::3, ::4].shape)  # hard edges everywhere
        ours = resize_like_host(image, target).numpy().astype(int)
        theirs = resize_image(image, target).astype(int)
        assert ours.shape == theirs.shape and np.max(np.abs(ours - theirs)) <= 1, (source, target)


def test_jpeg_and_other_formats_decode_like_the_host_path(images, tmp_path):
    from simclr_tf.export import decode_image_bytes
    array = images["arrays"][0]
    grey = array[..., 0]
    frames = [Image.fromarray(array), Image.fromarray(255 - array)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    cases = {"jpeg": images["jpeg"][0], "grey.png": encode(grey, "PNG"), "bmp": encode(array, "BMP"),
             "rgba.png": encode(np.dstack([array, grey]), "PNG"), "animated.gif": buffer.getvalue()}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert np.array_equal(decode_image_bytes(data).numpy(), read_image(str(path))), name


def tiny_model():
    """A functional image -> feature model (kind does not matter for the file handling)."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_a_failure_midway_leaves_no_export_and_no_temporary_folder(tmp_path, monkeypatch):
    model = tiny_model()
    written = []

    def fail_after_writing(export_dir, *args):
        written.extend(os.listdir(export_dir))  # the SavedModel is complete at this point
        raise ExportCheckError("simulated failure")

    monkeypatch.setattr(saved_model_module, "_verify", fail_after_writing)
    parent = tmp_path / "serving" / "tiny"
    with pytest.raises(ExportCheckError, match="simulated"):
        export_saved_model(model, "encoder", str(parent / "1"), input_size=16, crop_size=16)
    assert "saved_model.pb" in written and "variables" in written
    assert os.listdir(parent) == []
    monkeypatch.undo()

    # A finished export is never overwritten by accident, and replaced whole when asked to.
    target = str(parent / "1")
    export_saved_model(model, "encoder", target, input_size=16, crop_size=16, verify=False)
    with pytest.raises(FileExistsError):
        export_saved_model(model, "encoder", target, input_size=16, crop_size=16, verify=False)
    os.remove(os.path.join(target, "fingerprint.pb"))
    export_saved_model(model, "encoder", target, input_size=16, crop_size=16, verify=True, overwrite=True)
    assert os.path.exists(os.path.join(target, "fingerprint.pb"))
    assert sorted(os.listdir(parent)) == ["1"]


def test_verification_catches_an_export_that_tf_serving_could_not_load(tmp_path, monkeypatch):
    # Tracking the Keras variables instead of their tf.Variables loads with tf.saved_model.load but
    # not through the graph (TF Serving's way): the verification must refuse such an export.
    monkeypatch.setattr(saved_model_module, "tf_variables", lambda model: list(model.variables))
    with pytest.raises(ExportCheckError, match="TF Serving"):
        export_saved_model(tiny_model(), "encoder", str(tmp_path / "1"), input_size=16, crop_size=16)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", ["classification", "encoder"])
def test_tflite_float32_round_trip(models, tmp_path, kind):
    crop_size = (32, 32)
    if kind == "classification":
        # The project's classifier (build_classifier + with_softmax) on a tiny encoder: the ResNet
        # itself is converted by the encoder case and by the int8 test, each conversion takes seconds.
        model = with_softmax(build_classifier(tiny_model(), 4, crop_size))
    else:
        model = models[kind]
    images, _ = colour_images(np.random.default_rng(4), 6, crop_size)
    check_images = np.stack(images).astype(np.float32) / 255.0
    path = tmp_path / f"{kind}.tflite"
    check = export_tflite(model, str(path), kind=kind, crop_size=crop_size, check_images=check_images)
    assert check.passed and check.path == str(path) and check.size_bytes == path.stat().st_size
    assert check.max_abs_diff <= TFLITE_FLOAT32
    # The written file, read back, gives the Keras outputs (a batch size other than the check's).
    expected = np.asarray(model(check_images[:3], training=False))
    got = run_tflite(str(path), check_images[:3])[MAIN_OUTPUT[kind]]
    assert relative_diff(got, expected) <= TFLITE_FLOAT32


def test_tflite_int8_classifier_passes_its_check_on_an_easy_model(models, tmp_path):
    rng = np.random.default_rng(5)
    calibration, _ = colour_images(rng, 32, (32, 32))
    held_out, labels = colour_images(rng, 12, (32, 32))
    calibration = np.stack(calibration).astype(np.float32) / 255.0
    held_out = np.stack(held_out).astype(np.float32) / 255.0
    classifier = models["classification"]
    # The easy model is right on the held-out images, so agreement is about the decision.
    assert np.mean(np.argmax(classifier(held_out, training=False), axis=1) == labels) >= 0.9
    path = tmp_path / "classifier_int8.tflite"
    check = export_tflite(classifier, str(path), kind="classification", crop_size=(32, 32), quantization="int8",
                          calibration_images=calibration, check_images=held_out)
    assert check.passed and path.exists()
    assert check.agreement >= 0.9 and check.mean_abs_diff <= 0.05
    assert np.mean(np.argmax(run_tflite(str(path), held_out)["probabilities"], axis=1) == labels) >= 0.9
    # Full-integer inside, float at the boundaries.
    interpreter = load_tflite_interpreter(model_path=str(path))
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    tensor_types = [detail["dtype"] for detail in interpreter.get_tensor_details()]
    assert tensor_types.count(np.int8) > 10 * tensor_types.count(np.float32)
    with pytest.raises(ValueError, match="calibration_images"):
        export_tflite(classifier, str(tmp_path / "x.tflite"), kind="classification", crop_size=(32, 32),
                      quantization="int8")


def test_a_tflite_model_that_fails_its_check_is_not_written(tmp_path):
    model = tiny_model()
    path = tmp_path / "tiny.tflite"
    path.write_bytes(b"previous version")
    images = np.random.default_rng(6).random((8, 16, 16, 3)).astype(np.float32)
    impossible = TFLiteTolerance(max_mean_abs_diff=-1.0)  # no model can be closer than 0
    with pytest.raises(TFLiteCheckError, match="mean_abs_diff") as caught:
        export_tflite(model, str(path), kind="encoder", crop_size=(16, 16), quantization="int8",
                      calibration_images=images, tolerance=impossible)
    check = caught.value.check
    assert not check.passed and check.quantization == "int8"
    assert check.min_cosine >= 0.95  # the model itself was fine: only the check was absurd
    assert path.read_bytes() == b"previous version"
    assert sorted(os.listdir(tmp_path)) == ["tiny.tflite"]


# --- the fresh subprocess's results (collected last, see Exported) ---

def test_the_export_loads_and_runs_without_simclr_tf(exports):
    outputs = exports.outputs
    # (`import tensorflow` itself imports keras in TF 2.21; what matters is that no project code is.)
    assert outputs["simclr_tf_imported"] is False
    for kind in SIZES:
        assert outputs[kind]["signatures"] == ["predict_images", "serving_default"]
        # An empty request is answered with empty outputs; a corrupt file fails its request.
        assert all(shape[0] == 0 for shape in outputs[kind]["empty_shapes"].values())
        assert outputs[kind]["corrupt"] == "InvalidArgumentError"


def _readme_client():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    block = readme.split("<!-- export-client:start -->")[1].split("<!-- export-client:end -->")[0]
    return block.split("```python")[1].split("```")[0]


def test_the_readme_client_prints_the_exported_classes(exports, tmp_path):
    # The README's client, run as written (in a folder holding export/saved_model) by an
    # interpreter that cannot import simclr_tf.
    (tmp_path / "export").mkdir()
    os.symlink(exports.folder / "classification" / "1", tmp_path / "export" / "saved_model")
    files = sorted(str(p) for p in exports.folder.glob("image_*.png"))
    refuse = LOADER.split("import os, time")[0]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    result = subprocess.run([sys.executable, "-c", refuse + _readme_client(), *files], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = [line.split() for line in result.stdout.strip().splitlines()]
    expected = exports.outputs["classification"]["png"]
    assert [row[0] for row in printed] == files
    assert [row[1] for row in printed] == expected["class_name"]
    assert [float(row[2]) for row in printed] == pytest.approx(
        [max(p) for p in expected["probabilities"]], abs=1e-3)


@pytest.mark.parametrize("kind", list(SIZES))
def test_predict_images_reproduces_the_keras_model(exports, models, kind):
    images = exports.prepared[kind]
    expected = np.asarray(models[kind](images, training=False))
    got = exports.outputs[kind]["predict_images"]
    if kind == "segmentation":
        assert np.asarray(got["label_map"]).shape == expected.shape[:-1]
        assert label_map_mismatches(got["label_map"], expected, EXACT) == 0
        assert np.array_equal(got["label_map_original"], got["label_map"])
        assert np.all(np.asarray(got["original_size"]) == SIZES[kind][1])
    else:
        assert relative_diff(got[MAIN_OUTPUT[kind]], expected) <= EXACT
    if kind == "classification":
        assert relative_diff(exports.outputs[kind]["tf1_session"], expected) <= EXACT


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("kind", list(SIZES))
def test_serving_default_on_image_bytes_matches_the_same_preparation(exports, models, images, kind, fmt):
    # Prepared here with the same TensorFlow ops the graph runs, then through the Keras model.
    expected = np.asarray(models[kind](prepared(images[fmt], kind), training=False))
    got = exports.outputs[kind][fmt]
    if kind == "segmentation":
        assert label_map_mismatches(got["label_map"], expected, EXACT) == 0
    else:
        assert relative_diff(got[MAIN_OUTPUT[kind]], expected) <= EXACT
    if kind == "classification":
        assert got["class_index"] == np.argmax(got["probabilities"], axis=1).tolist()
        assert got["class_name"] == [CLASS_NAMES[i] for i in got["class_index"]]
        assert np.allclose(np.sum(got["probabilities"], axis=1), 1.0, atol=1e-5)


def test_segmentation_maps_at_the_original_size_are_padded_per_image(exports, models, images):
    got = exports.outputs["segmentation"]["png"]
    sizes = np.asarray(got["original_size"])
    assert sizes.tolist() == [list(size) for size in IMAGE_SIZES]
    full = np.asarray(got["label_map_original"])
    assert full.shape == (len(IMAGE_SIZES), *sizes.max(axis=0))
    logits = np.asarray(models["segmentation"](prepared(images["png"], "segmentation"), training=False))
    for i, (height, width) in enumerate(sizes):
        # What --task=predict does: bilinear logits at the original size, then the argmax.
        upsampled = tf.image.resize(logits[i], (height, width), method="bilinear").numpy()
        assert label_map_mismatches(full[i, :height, :width], upsampled, EXACT) == 0
        assert np.all(full[i, height:, :] == 255) and np.all(full[i, :, width:] == 255)


@pytest.mark.parametrize("kind", list(SIZES))
def test_in_graph_preparation_is_close_to_the_host_path(exports, models, images, kind):
    graph = exports.prepared[kind]
    host = host_prepared(images["paths"], kind)
    assert graph.shape == host.shape
    assert np.max(np.abs(graph - host)) <= HOST_PIXELS
    assert np.mean(np.abs(graph - host)) <= 1e-3
    expected = np.asarray(models[kind](host, training=False))
    got = exports.outputs[kind]["png"]
    if kind == "classification":
        assert np.max(np.abs(np.asarray(got["probabilities"]) - expected)) <= 0.02
        assert got["class_index"] == np.argmax(expected, axis=1).tolist()
    elif kind == "encoder":
        assert relative_diff(got["h"], expected) <= 0.02
    else:
        assert np.mean(np.asarray(got["label_map"]) == np.argmax(expected, axis=-1)) >= 0.99
