"""Tests for the ResNet encoders and the projection / classification heads."""

import math
import os
import re
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from simclr_tf.models.heads import (  # noqa: E402
    build_classification_head,
    build_projection_head,
    head_layer_output_names,
)
from simclr_tf.models.resnet import (  # noqa: E402
    BACKBONES,
    FEATURE_LAYER_NAMES,
    build_resnet,
    feature_dim,
    feature_strides,
    small_stem_default,
)

# Names of the last BN of each residual branch: bn2 in basic blocks, bn3 in bottleneck blocks.
_LAST_BRANCH_BN = {"basic": re.compile(r"^stage\d_block\d+_bn2$"),
                   "bottleneck": re.compile(r"^stage\d_block\d+_bn3$")}


def _images(batch, height, width, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (batch, height, width, 3)).astype("float32")


def _trainable_params(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.fixture(scope="module")
def resnet18():
    return build_resnet("resnet18", image_size=(32, 32))


@pytest.fixture(scope="module")
def resnet50():
    # Built once for the whole module (the slowest model here); ImageNet stem so that its
    # parameter count is directly comparable with torchvision's.
    return build_resnet("resnet50", small_stem=False)


# --- feature dimensions and shapes ---------------------------------------------------------------

def test_backbone_table():
    assert set(BACKBONES) == {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}
    assert BACKBONES["resnet18"] == ("basic", (2, 2, 2, 2))
    assert BACKBONES["resnet34"] == ("basic", (3, 4, 6, 3))
    assert BACKBONES["resnet50"] == ("bottleneck", (3, 4, 6, 3))
    assert BACKBONES["resnet101"] == ("bottleneck", (3, 4, 23, 3))
    assert BACKBONES["resnet152"] == ("bottleneck", (3, 8, 36, 3))


@pytest.mark.parametrize("size", [(32, 32), (48, 40), (33, 35)])
def test_resnet18_output_shape_any_size(resnet18, size):
    out = resnet18(_images(2, *size), training=False)
    assert tuple(out.shape) == (2, 512)
    assert out.dtype == "float32"
    assert feature_dim(resnet18) == 512


def test_resnet34_feature_dim_and_params():
    model = build_resnet("resnet34", small_stem=False)
    assert feature_dim(model) == 512
    assert tuple(model(_images(2, 32, 32), training=False).shape) == (2, 512)
    assert _trainable_params(model) == pytest.approx(21_284_672, rel=0.005)


def test_resnet50_feature_dim_and_params(resnet50):
    assert feature_dim(resnet50) == 2048
    assert tuple(resnet50(_images(2, 32, 32), training=False).shape) == (2, 2048)
    assert _trainable_params(resnet50) == pytest.approx(23_508_032, rel=0.005)


def test_resnet18_params_imagenet_stem():
    model = build_resnet("resnet18", small_stem=False)
    assert _trainable_params(model) == pytest.approx(11_176_512, rel=0.005)
    # BN moving statistics exist but are not trainable (torchvision counts them as buffers).
    num_bn = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert len(model.non_trainable_weights) == 2 * num_bn


def test_width_multiplier_doubles_features():
    model = build_resnet("resnet18", width_multiplier=2)
    assert feature_dim(model) == 1024
    assert tuple(model(_images(2, 48, 40), training=False).shape) == (2, 1024)
    assert model.name == "resnet18_w2"


def test_invalid_arguments():
    with pytest.raises(ValueError, match="resnet18"):
        build_resnet("resnet19")
    with pytest.raises(ValueError):
        build_resnet("resnet18", width_multiplier=0)
    with pytest.raises(ValueError):
        build_projection_head(512, num_layers=0)
    with pytest.raises(ValueError):
        build_classification_head(512, 10, kind="deep")


# --- stem ----------------------------------------------------------------------------------------

def _has_max_pool(model):
    return any(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)


def test_small_stem_default():
    assert small_stem_default((32, 32))
    assert small_stem_default(32)
    assert small_stem_default((240, 32))
    assert not small_stem_default((33, 33))
    assert not small_stem_default((96, 96))


def test_stem_choice(resnet18):
    conv = resnet18.get_layer("stem_conv")
    assert conv.kernel_size == (3, 3) and conv.strides == (1, 1)
    assert not _has_max_pool(resnet18)

    big = build_resnet("resnet18", image_size=(96, 96))
    conv = big.get_layer("stem_conv")
    assert conv.kernel_size == (7, 7) and conv.strides == (2, 2)
    assert _has_max_pool(big)
    pool = big.get_layer("stem_pool")
    assert pool.pool_size == (3, 3) and pool.strides == (2, 2) and pool.padding == "same"

    # An explicit choice overrides the image size.
    forced_small = build_resnet("resnet18", small_stem=True, image_size=(96, 96))
    assert forced_small.get_layer("stem_conv").kernel_size == (3, 3)
    assert not _has_max_pool(forced_small)
    forced_big = build_resnet("resnet18", small_stem=False, image_size=(32, 32))
    assert forced_big.get_layer("stem_conv").kernel_size == (7, 7)
    assert _has_max_pool(forced_big)


# --- initialisation and layer settings -----------------------------------------------------------

def _check_layer_settings(model, block_type):
    last_bn = _LAST_BRANCH_BN[block_type]
    num_zero = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert not layer.use_bias, layer.name
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.momentum == pytest.approx(0.9), layer.name
            assert layer.epsilon == pytest.approx(1e-5), layer.name
            gamma = layer.gamma.numpy()
            if last_bn.match(layer.name):
                num_zero += 1
                assert np.all(gamma == 0), layer.name
            else:
                assert np.all(gamma == 1), layer.name
    return num_zero


def test_zero_gamma_and_layer_settings_basic(resnet18):
    assert _check_layer_settings(resnet18, "basic") == sum(BACKBONES["resnet18"][1])


def test_zero_gamma_and_layer_settings_bottleneck(resnet50):
    assert _check_layer_settings(resnet50, "bottleneck") == sum(BACKBONES["resnet50"][1])


def test_convolutions_start_with_the_official_kernel_scale(resnet18):
    """std 1/sqrt(fan_in) (VarianceScaling(1.0)), not he_normal's sqrt(2/fan_in): README, "Parity
    with the official code". Checked on every convolution with enough weights for a tight estimate."""
    checked = 0
    for layer in resnet18.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel.shape.num_elements() >= 4096:
            kernel = layer.kernel.numpy()
            fan_in = int(np.prod(kernel.shape[:-1]))
            assert abs(kernel.std() * np.sqrt(fan_in) - 1.0) < 0.05, layer.name
            # Truncated normal: cut at 2 sigma of the underlying normal, whose sigma is the target
            # std / 0.8796 (the std of a standard normal truncated at +-2).
            assert np.abs(kernel).max() <= 2.0 / 0.87962566 / np.sqrt(fan_in) + 1e-6, layer.name
            checked += 1
    assert checked >= 15


def test_synchronized_bn_option():
    model = build_resnet("resnet18", synchronized_bn=True)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.synchronized for layer in bns)


# --- named feature layers ------------------------------------------------------------------------

def _feature_shapes(model, height, width):
    names = list(FEATURE_LAYER_NAMES) + ["h"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    outs = probe(_images(2, height, width), training=False)
    return {n: tuple(o.shape) for n, o in zip(names, outs)}


def test_named_layers_small_stem(resnet18):
    shapes = _feature_shapes(resnet18, 32, 32)
    sides = {n: shapes[n][1:3] for n in FEATURE_LAYER_NAMES}
    assert sides == {"stem_out": (32, 32), "stage1_out": (32, 32), "stage2_out": (16, 16),
                     "stage3_out": (8, 8), "stage4_out": (4, 4)}
    assert [shapes[n][-1] for n in FEATURE_LAYER_NAMES] == [64, 64, 128, 256, 512]
    assert shapes["h"] == (2, 512)
    assert feature_strides(True) == {"stem_out": 1, "stage1_out": 1, "stage2_out": 2,
                                     "stage3_out": 4, "stage4_out": 8}


def test_named_layers_imagenet_stem_odd_size():
    model = build_resnet("resnet18", small_stem=False)
    strides = feature_strides(False)
    assert strides == {"stem_out": 2, "stage1_out": 4, "stage2_out": 8,
                       "stage3_out": 16, "stage4_out": 32}
    shapes = _feature_shapes(model, 48, 40)
    for name in FEATURE_LAYER_NAMES:
        expected = (math.ceil(48 / strides[name]), math.ceil(40 / strides[name]))
        assert shapes[name][1:3] == expected, name


# --- projection head -----------------------------------------------------------------------------

@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_projection_head(num_layers):
    head = build_projection_head(64, num_layers=num_layers, output_dim=16)
    names = head_layer_output_names(head)
    assert names == [f"proj_layer_{k}" for k in range(1, num_layers + 1)]

    x = np.random.default_rng(1).normal(size=(2, 64)).astype("float32")
    probe = keras.Model(head.input, [head.get_layer(n).output for n in names])
    outs = probe(x, training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    for k, out in enumerate(outs, start=1):
        assert tuple(out.shape) == ((2, 16) if k == num_layers else (2, 64))

    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    assert len(dense) == num_layers and not any(layer.use_bias for layer in dense)
    bns = [layer for layer in head.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == num_layers
    for bn in bns[:-1]:
        assert bn.center and bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)
    assert not bns[-1].center and bns[-1].scale

    # Hidden outputs pass through ReLU, the last output does not (z can be negative).
    last = head.get_layer(names[-1])
    assert last.get_config()["activation"] == "linear"
    for name in names[:-1]:
        assert head.get_layer(name).get_config()["activation"] == "relu"
    z = keras.ops.convert_to_numpy(head(x, training=True))
    assert tuple(z.shape) == (2, 16)
    assert (z < 0).any()


def test_projection_head_hidden_dim():
    head = build_projection_head(64, num_layers=3, hidden_dim=32, output_dim=8)
    assert head.get_layer("proj_dense_1").units == 32
    assert head.get_layer("proj_dense_2").units == 32
    assert head.get_layer("proj_dense_3").units == 8


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_classification_head(kind):
    head = build_classification_head(64, 5, kind=kind, hidden_dim=32)
    out = head(np.ones((2, 64), "float32"), training=False)
    assert tuple(out.shape) == (2, 5)
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    assert len(dense) == (1 if kind == "linear" else 2)
    assert dense[-1].use_bias and dense[-1].name == "logits"
    if kind == "mlp":
        assert dense[0].units == 32 and not dense[0].use_bias


# --- save and load in a fresh process ------------------------------------------------------------

def _randomise_bn(model, rng):
    """Give every BN non-trivial gamma/beta/moving statistics so a faulty reload would show."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for var in layer.weights:
                shape = tuple(var.shape)
                if "variance" in var.path:
                    var.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
                else:
                    var.assign(rng.normal(0, 0.5, shape).astype("float32"))


# Keras' own saving code converts TF variables with np.array(copy=False), which NumPy 2 flags.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_save_and_load_in_fresh_process(tmp_path):
    rng = np.random.default_rng(3)
    encoder = build_resnet("resnet18")
    head = build_projection_head(feature_dim(encoder), num_layers=3, output_dim=32)
    _randomise_bn(encoder, rng)
    _randomise_bn(head, rng)

    x = _images(2, 32, 32, seed=4)
    h = keras.ops.convert_to_numpy(encoder(x, training=False))
    z = keras.ops.convert_to_numpy(head(h, training=False))
    assert np.abs(h).max() > 0 and np.abs(z).max() > 0

    encoder.save(tmp_path / "x.keras")
    head.save(tmp_path / "head.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "h.npy", h)
    np.save(tmp_path / "z.npy", z)

    # The fresh process does not import simclr_tf: the files must need no custom objects.
    script = textwrap.dedent(f"""
        import os
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        import keras, numpy as np
        d = {str(tmp_path)!r}
        encoder = keras.models.load_model(os.path.join(d, "x.keras"))
        head = keras.models.load_model(os.path.join(d, "head.keras"))
        x = np.load(os.path.join(d, "x.npy"))
        h = keras.ops.convert_to_numpy(encoder(x, training=False))
        z = keras.ops.convert_to_numpy(head(h, training=False))
        np.testing.assert_allclose(h, np.load(os.path.join(d, "h.npy")), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(z, np.load(os.path.join(d, "z.npy")), rtol=1e-5, atol=1e-5)
        for name in ("stem_out", "stage1_out", "stage2_out", "stage3_out", "stage4_out", "h"):
            encoder.get_layer(name)
        assert [l.name for l in head.layers if l.name.startswith("proj_layer_")] == [
            "proj_layer_1", "proj_layer_2", "proj_layer_3"]
        print("OK")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


def _resnet50_parameters(width, depthwise):
    """ResNet-50's parameter count from its architecture (7x7 stem, bottlenecks [3, 4, 6, 3] of
    widths 64..512 x width with 4x expansion, projection shortcut on each stage's first block; no
    biases; BatchNorm: 4 numbers per channel), counted by hand rather than by Keras."""
    channels = 64 * width
    total = 7 * 7 * 3 * channels + 4 * channels
    for base, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        mid, out = base * width, 4 * base * width
        for block in range(blocks):
            middle_conv = 9 * mid if depthwise else 9 * mid * mid
            total += channels * mid + 4 * mid + middle_conv + 4 * mid + mid * out + 4 * out
            if block == 0:
                total += channels * out + 4 * out
            channels = out
    return total


def test_readme_parameter_counts_are_the_models():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    table = readme.split("<!-- param-counts:start -->")[1].split("<!-- param-counts:end -->")[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        name, count = [cell.strip() for cell in line.strip("|").split("|")]
        rows[name] = int(count.replace(",", ""))
    expected = {"ResNet-50 (x1)": (1, False), "ResNet-50 (x1), `--depthwise`": (1, True),
                "ResNet-50 x2 (`--width_multiplier=2`)": (2, False), "ResNet-50 x2, `--depthwise`": (2, True)}
    assert set(rows) == set(expected)
    for name, (width, depthwise) in expected.items():
        model = build_resnet("resnet50", width_multiplier=width, depthwise=depthwise, image_size=(64, 64))
        assert model.count_params() == _resnet50_parameters(width, depthwise) == rows[name], name
        keras.backend.clear_session()
