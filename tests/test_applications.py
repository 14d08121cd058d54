"""Tests for keras.applications encoders (models/applications.py) and gradual unfreezing
(models/unfreezing.py). Applications are built with random weights at 32 px, each at most once
(module fixture); nothing touches the network (get_file is replaced wherever weights are asked for).
"""

import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras.src.backend import config as keras_config  # noqa: E402
from keras.src.utils import file_utils  # noqa: E402

from simclr_tf.errors import UserError  # noqa: E402
from simclr_tf.models import applications as apps  # noqa: E402
from simclr_tf.models.applications import APPLICATIONS  # noqa: E402
from simclr_tf.models import unfreezing as uf  # noqa: E402
from simclr_tf.models.resnet import build_resnet  # noqa: E402
from simclr_tf.training import callbacks as cb  # noqa: E402
from simclr_tf.training.optimizers import build_optimizer  # noqa: E402

# Application -> (h width, constructor options). MobileNetV2 at alpha 0.35 keeps its 1280-wide top;
# MobileNet at alpha 0.25 (the smallest and quickest, with unhashed ImageNet files like MobileNetV2)
# serves the weights-file tests.
REQUIRED = {
    "vgg16": (512, {}),
    "resnet50": (2048, {}),
    "mobilenetv2": (1280, {"alpha": 0.35}),
    "efficientnetb0": (1280, {}),
    "convnexttiny": (768, {}),
}
OPTIONS = {**{name: options for name, (_, options) in REQUIRED.items()}, "mobilenet": {"alpha": 0.25}}
SMALL = "mobilenet"
SMALL_FILE = "mobilenet_2_5_224_tf_no_top.h5"  # what Keras asks for at alpha 0.25, any input size
IMAGES = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")


@pytest.fixture(scope="module")
def encoder_of():
    """name -> encoder with random weights, built on first use and shared by the module's tests."""
    built = {}

    def get(name):
        if name not in built:
            built[name] = apps.build_application_encoder(name, weights="none", image_size=32,
                                                         **OPTIONS[name])
        return built[name]

    return get


def _h(encoder, images=IMAGES):
    return keras.ops.convert_to_numpy(encoder(images, training=False))


def _save_base_weights(encoder, path):
    apps.base_model(encoder).save_weights(str(path))
    return str(path)


def _no_download(*args, **kwargs):
    raise AssertionError(f"get_file called: {args} {kwargs}")


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """A private Keras cache folder, so no test reads or writes ~/.keras."""
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setattr(keras_config, "keras_home", lambda: str(home))
    return home


def _files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


# ---------------------------------------------------------------------------------------------
# Encoders


@pytest.mark.parametrize("name", list(REQUIRED))
def test_encoder_maps_images_to_h_of_the_base_models_width(encoder_of, name):
    encoder = encoder_of(name)
    assert encoder.name == APPLICATIONS[name].constructor
    h_layer = encoder.get_layer("h")
    assert isinstance(h_layer, keras.layers.GlobalAveragePooling2D) and h_layer.dtype == "float32"
    assert encoder.outputs[0].shape[-1] == REQUIRED[name][0]
    h = _h(encoder)
    assert h.shape == (2, REQUIRED[name][0]) and h.dtype == np.float32 and np.isfinite(h).all()
    info = apps.describe(encoder)
    assert info["kind"] == "application" and info["backbone"] == APPLICATIONS[name].constructor
    assert info["feature_dim"] == REQUIRED[name][0] and info["min_image_size"] == 32
    assert info["input_scaling"] == apps.APPLICATIONS[name].scaling
    assert not apps.supports_segmentation(encoder)


@pytest.fixture(scope="module")
def resnet18():
    return build_resnet("resnet18", image_size=(32, 32))


def test_describe_tells_project_resnets_apart(resnet18):
    resnet = resnet18
    assert apps.describe(resnet) == {"backbone": "resnet18", "feature_dim": 512,
                                     "supports_segmentation": True, "kind": "resnet"}
    assert not apps.is_application_encoder(resnet)


def test_names_are_normalised_and_unknown_ones_refused():
    assert apps.canonical_name("MobileNet_V2") == "mobilenetv2"
    assert apps.canonical_name("ConvNeXt-Tiny") == "convnexttiny"
    with pytest.raises(ValueError, match="unknown keras.applications backbone 'resnet18'"):
        apps.build_application_encoder("resnet18")
    with pytest.raises(ValueError, match="pooling"):
        apps.build_application_encoder("vgg16", pooling="avg")


@pytest.mark.parametrize("name,minimum", [("vgg16", 32), ("resnet50", 32), ("mobilenetv2", 32),
                                          ("efficientnetb0", 32), ("convnexttiny", 32),
                                          ("xception", 71), ("inceptionv3", 75)])
def test_too_small_images_are_refused_before_building(name, minimum):
    assert apps.min_image_size(name) == minimum
    with pytest.raises(ValueError, match=f"at least {minimum}x{minimum} pixels"):
        apps.build_application_encoder(name, image_size=(minimum, minimum - 1))
    with pytest.raises(ValueError, match=f"at least {minimum}x{minimum}"):
        apps.build_application_encoder(name, input_shape=(minimum - 1, None, 3))


@pytest.mark.parametrize("name", list(apps.APPLICATIONS))
def test_input_scaling_is_exactly_the_applications_preprocess_input(name):
    application = apps.APPLICATIONS[name]
    images = np.random.default_rng(1).uniform(0, 1, (2, 5, 4, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(apps.ImageNetInputScaling(application.scaling)(images))
    preprocess = getattr(keras.applications, application.module).preprocess_input
    np.testing.assert_allclose(ours, preprocess(images * 255.0), rtol=0, atol=1e-5)


def test_input_scaling_conventions():
    white_red = np.array([[[[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]]], "float32")

    def scale(mode):
        return keras.ops.convert_to_numpy(apps.ImageNetInputScaling(mode)(white_red))[0, 0]

    bgr_mean = np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(scale("caffe"), [255 - bgr_mean, [-103.939, -116.779, 255 - 123.68]],
                               atol=1e-4)  # BGR order, mean subtracted, no scaling
    np.testing.assert_allclose(scale("tf"), [[1, 1, 1], [1, -1, -1]], atol=1e-6)
    np.testing.assert_allclose(scale("raw"), [[255, 255, 255], [255, 0, 0]], atol=1e-4)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(scale("torch"), [(1 - mean) / std, (np.array([1, 0, 0]) - mean) / std],
                               atol=1e-5)
    with pytest.raises(ValueError, match="unknown input scaling"):
        apps.ImageNetInputScaling("bgr")


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "mobilenetv2", "efficientnetb0"])
def test_application_feature_model_gives_strides_2_to_32(encoder_of, name):
    encoder = encoder_of(name)
    features = apps.application_feature_model(encoder)(np.zeros((1, 64, 64, 3), "float32"))
    assert [tuple(f.shape[1:3]) for f in features] == [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    assert apps.describe(encoder)["segmentation_features"] == apps.application_feature_layers(encoder)


def test_convnext_has_no_stride_2_features(encoder_of):
    with pytest.raises(ValueError, match="no skip features"):
        apps.application_feature_layers(encoder_of("convnexttiny"))


def test_saved_encoders_load_in_a_fresh_process_with_the_same_h(encoder_of, tmp_path):
    """Safe mode, after importing the module that registers ImageNetInputScaling (and only then)."""
    names = ["mobilenetv2"]
    for name in names:
        encoder_of(name).save(str(tmp_path / f"{name}.keras"))
        np.save(tmp_path / f"{name}.npy", _h(encoder_of(name)))
    np.save(tmp_path / "images.npy", IMAGES)
    script = textwrap.dedent(f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import keras, numpy as np
        folder, names = {str(tmp_path)!r}, {names!r}
        try:
            keras.models.load_model(os.path.join(folder, names[0] + ".keras"))
            raise SystemExit("loaded without the registering import")
        except TypeError as e:
            assert "ImageNetInputScaling" in str(e), e
        import simclr_tf.models.applications as apps
        images = np.load(os.path.join(folder, "images.npy"))
        for name in names:
            encoder = keras.models.load_model(os.path.join(folder, name + ".keras"), safe_mode=True)
            assert apps.describe(encoder)["kind"] == "application", name
            h = keras.ops.convert_to_numpy(encoder(images, training=False))
            np.testing.assert_allclose(h, np.load(os.path.join(folder, name + ".npy")), rtol=1e-5, atol=1e-6)
        print("OK")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


# ---------------------------------------------------------------------------------------------
# Weights


def test_imagenet_without_network_raises_one_clear_error_and_leaves_nothing(keras_home, monkeypatch):
    requests = []

    def failing_download(fname, origin, cache_subdir="datasets", **kwargs):
        requests.append((fname, origin))
        # Worst case: the download leaves a partial file where it was told to write, then fails.
        with open(os.path.join(keras_home, cache_subdir, fname), "wb") as f:
            f.write(b"partial")
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure")

    monkeypatch.setattr(file_utils, "get_file", failing_download)
    with pytest.raises(apps.BackboneWeightsError) as caught:
        apps.build_application_encoder(SMALL, weights="imagenet", **OPTIONS[SMALL])
    (fname, origin), = requests
    assert fname == SMALL_FILE and origin.startswith("https://")
    message = str(caught.value)
    assert f"--backbone_weights=/path/to/{fname}" in message and f"download {origin}" in message
    assert "Temporary failure" in message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, UserError)
    assert _files_under(keras_home) == []
    assert file_utils.get_file is failing_download  # the redirection was undone


def test_local_file_download_and_cache_give_the_same_h(encoder_of, tmp_path, keras_home, monkeypatch):
    reference = encoder_of(SMALL)
    legacy = str(tmp_path / "small.h5")
    apps.base_model(reference).save(legacy)  # the legacy HDF5 format of Keras' own downloads
    monkeypatch.setattr(file_utils, "get_file", _no_download)
    local = apps.build_application_encoder(SMALL, weights=legacy, **OPTIONS[SMALL])
    np.testing.assert_allclose(_h(local), _h(reference), rtol=1e-5, atol=1e-6)

    def successful_download(fname, origin, cache_subdir="datasets", **kwargs):
        target = os.path.join(cache_subdir, fname)
        with open(legacy, "rb") as src, open(target, "wb") as dst:
            dst.write(src.read())
        return target

    monkeypatch.setattr(file_utils, "get_file", successful_download)
    downloaded = apps.build_application_encoder(SMALL, weights="imagenet", **OPTIONS[SMALL])
    np.testing.assert_allclose(_h(downloaded), _h(reference), rtol=1e-5, atol=1e-6)
    assert _files_under(keras_home) == [f"models/{SMALL_FILE}"]  # renamed into place, no scratch left
    monkeypatch.setattr(file_utils, "get_file", _no_download)
    from_cache = apps.build_application_encoder(SMALL, weights="imagenet", **OPTIONS[SMALL])
    np.testing.assert_allclose(_h(from_cache), _h(reference), rtol=1e-5, atol=1e-6)


def test_a_local_efficientnet_file_gets_the_imagenet_models_stddev_rescaling(encoder_of, tmp_path,
                                                                             monkeypatch):
    """Keras' own EfficientNet(weights=PATH) leaves out the Rescaling(1/sqrt(stddev)) that follows the
    stored normalisation in the weights="imagenet" model; ours has it. The random-init model's
    Normalization is the identity, so with its weights the only difference is that rescaling."""
    monkeypatch.setattr(file_utils, "get_file", _no_download)
    random_init = encoder_of("efficientnetb0")
    path = _save_base_weights(random_init, tmp_path / "effb0.weights.h5")
    local = apps.build_application_encoder("efficientnetb0", weights=path)

    def rescalings(encoder):
        return sum(isinstance(layer, keras.layers.Rescaling) for layer in apps.base_model(encoder).layers)

    assert rescalings(local) == rescalings(random_init) + 1
    stddev = np.array([0.229, 0.224, 0.225], "float32")
    np.testing.assert_allclose(_h(local), _h(random_init, IMAGES / np.sqrt(stddev)), rtol=1e-4, atol=1e-5)


def test_missing_or_unfitting_weights_files_raise_weights_errors(encoder_of, tmp_path, monkeypatch):
    monkeypatch.setattr(file_utils, "get_file", _no_download)
    with pytest.raises(apps.BackboneWeightsError, match="no such file"):
        apps.build_application_encoder("vgg16", weights=str(tmp_path / "missing.h5"))
    (tmp_path / "encoder.keras").write_bytes(b"x")
    with pytest.raises(apps.BackboneWeightsError, match="ending in .h5"):
        apps.build_application_encoder("vgg16", weights=str(tmp_path / "encoder.keras"))
    wrong = _save_base_weights(encoder_of(SMALL), tmp_path / "small.weights.h5")
    with pytest.raises(apps.BackboneWeightsError, match="could not load .* as the no-top ImageNet "
                                                        "weights of vgg16"):
        apps.build_application_encoder("vgg16", weights=wrong)
    with pytest.raises(apps.BackboneWeightsError, match="no ImageNet weights with the options .*alpha"):
        apps.build_application_encoder("mobilenet", weights=wrong, alpha=0.3)


# ---------------------------------------------------------------------------------------------
# Unfreezing: layers, schedules


def test_backbone_layers_are_the_weighted_layers_of_the_base(encoder_of, resnet18):
    mobilenet = uf.backbone_layers(encoder_of("mobilenetv2"))
    assert (mobilenet[0].name, mobilenet[-1].name, len(mobilenet)) == ("Conv1", "Conv_1_bn", 104)
    efficientnet = [layer.name for layer in uf.backbone_layers(encoder_of("efficientnetb0"))]
    assert efficientnet[0] == "stem_conv" and "normalization" not in efficientnet  # statistics only
    convnext = [layer.name for layer in uf.backbone_layers(encoder_of("convnexttiny"))]
    assert convnext[:2] == ["convnext_tiny_stem_conv", "convnext_tiny_stem_layernorm"]  # nested stem
    resnet = [layer.name for layer in uf.backbone_layers(resnet18)]
    assert resnet[:2] == ["stem_conv", "stem_bn"] and resnet[-1] == "stage4_block2_bn2"


def test_set_trainable_top_layers(encoder_of):
    encoder = encoder_of("mobilenetv2")
    units = uf.backbone_layers(encoder)
    try:
        assert uf.set_trainable_top_layers(encoder, 3) == 3
        assert [layer.trainable for layer in units] == [False] * (len(units) - 3) + [True] * 3
        assert {v.path.split("/")[-2] for v in encoder.trainable_variables} == {"block_16_project_BN",
                                                                                 "Conv_1", "Conv_1_bn"}
        assert uf.set_trainable_top_layers(encoder, 0) == 0 and encoder.trainable_variables == []
        assert uf.set_trainable_top_layers(encoder, 10_000) == len(units)
        with pytest.raises(ValueError, match="integer >= 0"):
            uf.set_trainable_top_layers(encoder, -1)
    finally:
        uf.set_trainable_top_layers(encoder, None)
    assert all(layer.trainable for layer in units)


def test_frozen_bn_of_an_application_keeps_its_statistics_in_training_mode(encoder_of):
    encoder = encoder_of("mobilenetv2")
    saved = encoder.get_weights()
    frozen_bn = apps.base_model(encoder).get_layer("bn_Conv1")
    try:
        uf.set_trainable_top_layers(encoder, 1)
        trainable_bn = uf.backbone_layers(encoder)[-1]
        assert isinstance(trainable_bn, keras.layers.BatchNormalization) and trainable_bn.trainable
        before = [np.array(bn.moving_mean) for bn in (frozen_bn, trainable_bn)]
        encoder(IMAGES, training=True)
        after = [np.array(bn.moving_mean) for bn in (frozen_bn, trainable_bn)]
        assert np.array_equal(after[0], before[0]) and not np.array_equal(after[1], before[1])
    finally:
        uf.set_trainable_top_layers(encoder, None)
        encoder.set_weights(saved)


def test_parse_unfreeze_schedule():
    assert uf.parse_unfreeze_schedule(" 10:all, 2:4 ,5:40") == [(2, 4), (5, 40), (10, None)]
    assert uf.parse_unfreeze_schedule("") == [] and uf.parse_unfreeze_schedule(None) == []
    for text, fragment in [("3", "is not EPOCH:K"), ("a:1", "is not an integer"),
                           ("0:5", "must be >= 1"), ("2:-1", "must be >= 0"), ("2:x", "nor 'all'"),
                           ("2:5,2:6", "appears twice"), ("2:10,4:5", "decreases from 10"),
                           ("2:all,4:5", "decreases from all")]:
        with pytest.raises(ValueError, match=fragment):
            uf.parse_unfreeze_schedule(text)


def test_trainable_layers_at():
    schedule = "2:4,5:all"
    assert [uf.trainable_layers_at(e, 1, schedule) for e in range(7)] == [1, 1, 4, 4, 4, None, None]
    assert uf.trainable_layers_at(3, 0, [(2, 4)]) == 4
    with pytest.raises(ValueError, match="fewer than the initial 8"):
        uf.check_schedule(8, schedule)
    with pytest.raises(ValueError, match="fewer than the initial all"):
        uf.GradualUnfreezing(keras.Sequential(), initial_k=None, schedule=schedule)


# ---------------------------------------------------------------------------------------------
# Unfreezing during fit, with checkpoints: a tiny encoder + head under a custom train_step that,
# like SimCLRModel, takes gradients for self.trainable_variables and calls apply_gradients.

LAYERS = ("c1", "bn1", "c2", "bn2", "c3", "bn3")  # backbone layers, input side first
INITIAL_K, SCHEDULE = 2, "1:4,2:all"  # epoch 0: c3, bn3; epoch 1: + c2, bn2; epoch 2: + c1, bn1


class TinyTrainer(keras.Model):
    def __init__(self, encoder, head, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = head
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, images, training=False):
        return self.head(self.encoder(images, training=training), training=training)

    def train_step(self, data):
        images, targets = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(images, training=True) - targets))
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


def _tiny_encoder():
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for i in (1, 2, 3):
        x = keras.layers.Conv2D(4, 3, padding="same", name=f"c{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="h")(x), name="tiny")


def _make_trainer(initial_weights=None):
    trainer = TinyTrainer(_tiny_encoder(), keras.layers.Dense(3, name="head"))
    trainer.compile(optimizer=build_optimizer("lars", 0.5, weight_decay=1e-4))
    trainer(np.zeros((1, 8, 8, 3), "float32"))
    if initial_weights is not None:
        trainer.set_weights(initial_weights)
    return trainer


def _dataset():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(16, 8, 8, 3)).astype("float32")
    targets = rng.normal(size=(16, 3)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((images, targets)).batch(4)  # 4 steps, fixed order


def _layer_weights(trainer):
    """layer name -> list of arrays, BN moving statistics included."""
    return {name: [np.array(w) for w in trainer.encoder.get_layer(name).get_weights()] for name in LAYERS}


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


class _Snapshots(keras.callbacks.Callback):
    def __init__(self, trainer):
        super().__init__()
        self.trainer, self.at_start, self.after_epoch = trainer, None, {}

    def on_train_begin(self, logs=None):
        self.at_start = _layer_weights(self.trainer)

    def on_epoch_end(self, epoch, logs=None):
        self.after_epoch[epoch] = _layer_weights(self.trainer)


def _optimizer_state(trainer):
    return [np.array(v) for v in trainer.optimizer.variables]


@pytest.fixture(scope="module")
def uninterrupted():
    """(initial weights, trainer after 3 epochs, snapshots) of the run without interruption."""
    trainer = _make_trainer()
    initial = trainer.get_weights()
    uf.build_optimizer_for_unfreezing(trainer, trainer.encoder)
    snapshots = _Snapshots(trainer)
    unfreezing = uf.GradualUnfreezing(trainer.encoder, INITIAL_K, SCHEDULE)
    trainer.fit(_dataset(), epochs=3, callbacks=[unfreezing, snapshots], verbose=0)
    return initial, trainer, snapshots


def test_frozen_layers_and_their_bn_statistics_stay_unchanged_until_their_epoch(uninterrupted):
    _, trainer, snap = uninterrupted
    start, after = snap.at_start, snap.after_epoch
    for name in ("c1", "bn1", "c2", "bn2"):  # frozen in epoch 0 (BN moving mean/variance included)
        assert _same(after[0][name], start[name]), name
    for name in ("c3", "bn3"):
        assert not _same(after[0][name], start[name]), name
    moving_mean_bn3 = [w.path for w in trainer.encoder.get_layer("bn3").weights].index("bn3/moving_mean")
    assert not np.array_equal(after[0]["bn3"][moving_mean_bn3], start["bn3"][moving_mean_bn3])
    for name in ("c1", "bn1"):  # still frozen in epoch 1
        assert _same(after[1][name], start[name]), name
    for name in ("c2", "bn2"):
        assert not _same(after[1][name], after[0][name]), name
    for name in ("c1", "bn1"):  # unfrozen at epoch 2
        assert not _same(after[2][name], after[1][name]), name
    assert int(trainer.optimizer.iterations) == 12
    assert all(layer.trainable for layer in uf.backbone_layers(trainer.encoder))


def test_resumed_run_matches_the_uninterrupted_one(uninterrupted, tmp_path):
    initial, reference, _ = uninterrupted
    checkpoints = str(tmp_path / "checkpoints")

    first = _make_trainer(initial)
    uf.build_optimizer_for_unfreezing(first, first.encoder)
    first.fit(_dataset(), epochs=2, verbose=0,
              callbacks=[uf.GradualUnfreezing(first.encoder, INITIAL_K, SCHEDULE),
                         cb.ResumableCheckpoint(checkpoints, fingerprint="test")])

    resumed = _make_trainer()
    uf.build_optimizer_for_unfreezing(resumed, resumed.encoder)  # before the restore
    state = cb.read_checkpoint_state(checkpoints)
    assert state["epoch"] == 2
    cb.restore_checkpoint(resumed, checkpoints, state)
    assert int(resumed.optimizer.iterations) == 8
    for restored, saved in zip(_optimizer_state(resumed), _optimizer_state(first)):
        np.testing.assert_array_equal(restored, saved)

    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen[epoch] = [layer.trainable for layer in uf.backbone_layers(resumed.encoder)]

    messages = []
    unfreezing = uf.GradualUnfreezing(resumed.encoder, INITIAL_K, SCHEDULE, printer=messages.append)
    resumed.fit(_dataset(), epochs=3, initial_epoch=2, verbose=0, callbacks=[unfreezing, Probe()])
    assert seen == {2: [True] * len(LAYERS)}
    assert messages == ["epoch 3: the top 6 of 6 backbone layers are trainable"]
    assert int(resumed.optimizer.iterations) == 12
    for got, want in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(_optimizer_state(resumed), _optimizer_state(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fit_without_an_optimizer_built_for_unfreezing_is_refused_at_once():
    trainer = _make_trainer()
    uf.set_trainable_top_layers(trainer.encoder, INITIAL_K)
    unfreezing = uf.GradualUnfreezing(trainer.encoder, INITIAL_K, SCHEDULE)
    with pytest.raises(ValueError, match="build_optimizer_for_unfreezing"):  # optimizer not built
        trainer.fit(_dataset(), epochs=1, verbose=0, callbacks=[unfreezing])
    # What restore_checkpoint does for an unbuilt optimizer: build it on today's trainable set only.
    trainer.optimizer.build(trainer.trainable_variables)
    with pytest.raises(ValueError, match="build_optimizer_for_unfreezing"):
        trainer.fit(_dataset(), epochs=1, verbose=0, callbacks=[unfreezing])
    assert int(trainer.optimizer.iterations) == 0
    with pytest.raises(ValueError, match="lacks slots"):
        uf.build_optimizer_for_unfreezing(trainer, trainer.encoder)


def test_two_optimizers_may_share_the_variables_between_them():
    """A trainer with its own encoder optimizer (ClassifierTrainer) builds each on its share."""
    trainer = _make_trainer()
    every = uf.trainable_variables_when_unfrozen(trainer, trainer.encoder)
    encoder_ids = {id(v) for v in uf.trainable_variables_when_unfrozen(trainer.encoder, trainer.encoder)}
    encoder_optimizer = keras.optimizers.SGD(0.1)
    encoder_optimizer.build([v for v in every if id(v) in encoder_ids])
    trainer.optimizer.build([v for v in every if id(v) not in encoder_ids])
    check = uf.GradualUnfreezing(trainer.encoder, INITIAL_K, SCHEDULE,
                                 optimizers=[trainer.optimizer, encoder_optimizer])
    check.set_model(trainer)
    check.on_train_begin()
    check.optimizers = [trainer.optimizer]
    with pytest.raises(ValueError, match="no slots"):
        check.on_train_begin()


def test_keras_keeps_the_traced_trainable_set_until_the_train_function_is_retraced():
    """Why GradualUnfreezing calls make_train_function(force=True): flags alone change nothing."""
    trainer = _make_trainer()
    uf.build_optimizer_for_unfreezing(trainer, trainer.encoder)

    class FlagsOnly(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            uf.set_trainable_top_layers(trainer.encoder, uf.trainable_layers_at(epoch, INITIAL_K, SCHEDULE))

    snapshots = _Snapshots(trainer)
    trainer.fit(_dataset(), epochs=2, callbacks=[FlagsOnly(), snapshots], verbose=0)
    assert trainer.encoder.get_layer("c2").trainable
    assert _same(snapshots.after_epoch[1]["c2"], snapshots.at_start["c2"])  # trainable, not trained
