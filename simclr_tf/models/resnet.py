"""ResNet encoders for SimCLR, built with the Keras functional API from standard layers only.

The encoder maps images (float32 in [0, 1], any height and width) to the representation ``h``, the
global average pool of the last stage. Because every layer is a stock Keras layer, a saved ``.keras``
file loads with ``keras.models.load_model`` in a fresh process without custom objects.

Architecture (ResNet v1, "v1.5" stride placement as in torchvision and the official SimCLR code):

- Stem, small images (min side <= 32, the official code's CIFAR switch): 3x3 conv stride 1, BN, ReLU,
  no max-pool. Otherwise: 7x7 conv stride 2, BN, ReLU, 3x3 stride-2 max-pool.
- Four stages with widths 64/128/256/512 x ``width_multiplier`` and strides 1, 2, 2, 2. Basic blocks
  (ResNet-18/34) or bottleneck blocks with 4x expansion (ResNet-50/101/152; the stride sits on the
  3x3 convolution).
- Shortcut: identity, or a projection (1x1 conv with the block's stride + BN) when the shape changes.
  This is the plain ResNet v1 shortcut, not the SimCLRv2 / ResNet-D average-pool variant.
- Convolutions have no bias and the official code's initialisation, VarianceScaling(1.0, fan_in,
  truncated normal), not ``he_normal`` (README, "Parity with the official code": under LARS with
  weight decay, larger weights learn less; with the official gradient scale this closed a 14-point
  probe gap at the official recipe); BN uses momentum 0.9 and epsilon 1e-5; the last BN of every
  residual branch starts with gamma = 0 so each block starts as the identity.

Stable layer names (other code, e.g. a segmentation decoder, takes features from them):
``stem_out``, ``stage1_out`` ... ``stage4_out`` and ``h``; see ``FEATURE_LAYER_NAMES`` and
``feature_strides``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras
from keras import layers

# Block type and number of blocks in each of the four stages.
BACKBONES = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}

# Names of the multi-scale feature layers, shallowest first, then the pooled representation.
FEATURE_LAYER_NAMES = ("stem_out", "stage1_out", "stage2_out", "stage3_out", "stage4_out")
REPRESENTATION_LAYER_NAME = "h"

_STAGE_WIDTHS = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)
_BOTTLENECK_EXPANSION = 4
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
_SMALL_IMAGE_MAX_SIDE = 32


def small_stem_default(image_size) -> bool:
    """Return True when images this size should use the small (CIFAR) stem.

    Args:
      image_size: an int (square images) or a ``(height, width)`` pair.

    Returns:
      True when ``min(height, width) <= 32``, the switch used by the official SimCLR code.
    """
    # A scalar (Python or NumPy int) means a square image; anything else is a sequence of sides.
    sides = tuple(image_size) if hasattr(image_size, "__len__") else (image_size,)
    if not sides:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    return min(int(s) for s in sides) <= _SMALL_IMAGE_MAX_SIDE


def feature_strides(small_stem: bool) -> dict[str, int]:
    """Return the spatial stride (input size / feature size) of each named feature layer.

    With the ImageNet stem, ``stem_out`` is the stem's ReLU *before* the max-pool (stride 2), so a
    decoder gets a stride-2 skip; ``stage1_out`` is then at stride 4. Sizes round up
    (``ceil(size / stride)``) for inputs that are not multiples of the stride.
    """
    stem = 1 if small_stem else 2
    stage1 = 1 if small_stem else 4
    strides = {"stem_out": stem, "stage1_out": stage1}
    for i in range(2, 5):
        strides[f"stage{i}_out"] = stage1 * 2 ** (i - 1)
    return strides


_NAME_PATTERN = re.compile(r"^(resnet\d+)(?:_w(\d+))?(_dw)?$")


def describe_encoder(encoder: keras.Model) -> dict | None:
    """{"backbone", "width_multiplier", "depthwise", "small_stem"} of an encoder built by `build_resnet` (with its
    default name), read from the model itself; None for any other model.

    Lets a task check that flags naming an architecture agree with a loaded `encoder.keras`.
    """
    match = _NAME_PATTERN.match(encoder.name)
    if not match or match.group(1) not in BACKBONES:
        return None
    return {"backbone": match.group(1), "width_multiplier": int(match.group(2) or 1),
            "depthwise": match.group(3) is not None,
            "small_stem": not any(layer.name == "stem_pool" for layer in encoder.layers)}


def feature_dim(encoder: keras.Model) -> int:
    """Return the size of the representation h produced by ``encoder`` (e.g. 512 for ResNet-18)."""
    return int(encoder.outputs[0].shape[-1])


def _batch_norm(name: str, zero_gamma: bool = False, synchronized: bool = False):
    return layers.BatchNormalization(
        momentum=_BN_MOMENTUM,
        epsilon=_BN_EPSILON,
        gamma_initializer="zeros" if zero_gamma else "ones",
        synchronized=synchronized,
        name=name,
    )


def _conv_initializer():
    """The official SimCLR ResNet's kernel initialiser: std 1/sqrt(fan_in), truncated normal.

    Behind BatchNorm the scale of a kernel does not change the forward pass, but it does change
    LARS: the trust ratio makes every step a fixed fraction of ||w||, and the step's direction is
    g + wd * w where ||g|| falls as 1/||w||, so larger weights (he_normal: sqrt(2) x) give weight
    decay a larger share of every step and leave less for learning.
    """
    return keras.initializers.VarianceScaling(scale=1.0, mode="fan_in", distribution="truncated_normal")


def _conv(x, filters: int, kernel: int, stride: int, name: str, depthwise: bool = False):
    """Convolution without bias; strided convolutions pad explicitly and symmetrically.

    With ``padding="same"`` and stride 2 on an even input, TensorFlow pads only the bottom/right, so
    the 3x3 kernel centres sit on odd pixels while the 1x1 projection shortcut samples even pixels:
    the two branches of a block would be misaligned by one pixel. Symmetric padding (the official
    code's ``fixed_padding``, torchvision's ``padding=k//2``) keeps them aligned and gives the same
    output size, ``ceil(size / stride)``.
    """
    if depthwise:
        if stride > 1:
            x = layers.ZeroPadding2D(((kernel - 1) // 2, kernel // 2), name=f"{name}_pad")(x)
        # Depthwise: one 3x3 filter per channel, no mixing across channels (the 1x1 convolutions
        # around it do that), ~width x fewer weights than a full 3x3 convolution.
        return layers.DepthwiseConv2D(kernel, strides=stride, padding="valid" if stride > 1 else "same",
                                      use_bias=False, depthwise_initializer=_conv_initializer(), name=name)(x)
    if stride > 1 and kernel > 1:
        pad_total = kernel - 1
        pad_begin = pad_total // 2
        pad_end = pad_total - pad_begin
        x = layers.ZeroPadding2D(((pad_begin, pad_end), (pad_begin, pad_end)), name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_initializer=_conv_initializer(),
        name=name,
    )(x)


def _shortcut(x, out_channels: int, stride: int, prefix: str, sync_bn: bool):
    if stride == 1 and x.shape[-1] == out_channels:
        return x
    # Projection shortcut (ResNet v1 "option B"): 1x1 conv with the block's stride, then BN.
    s = _conv(x, out_channels, 1, stride, name=f"{prefix}_proj_conv")
    return _batch_norm(f"{prefix}_proj_bn", synchronized=sync_bn)(s)


def _basic_block(x, width: int, stride: int, prefix: str, out_name: str, sync_bn: bool, depthwise: bool = False):
    shortcut = _shortcut(x, width, stride, prefix, sync_bn)
    y = _conv(x, width, 3, stride, name=f"{prefix}_conv1")
    y = _batch_norm(f"{prefix}_bn1", synchronized=sync_bn)(y)
    y = layers.Activation("relu", name=f"{prefix}_relu1")(y)
    y = _conv(y, width, 3, 1, name=f"{prefix}_conv2")
    # Zero gamma on the branch's last BN: the block starts as the identity, which stabilises
    # early training of deep and large-batch networks (Goyal et al. 2017, used by SimCLR).
    y = _batch_norm(f"{prefix}_bn2", zero_gamma=True, synchronized=sync_bn)(y)
    y = layers.Add(name=f"{prefix}_add")([shortcut, y])
    return layers.Activation("relu", name=out_name)(y)


def _bottleneck_block(x, width: int, stride: int, prefix: str, out_name: str, sync_bn: bool,
                      depthwise: bool = False):
    out_channels = width * _BOTTLENECK_EXPANSION
    shortcut = _shortcut(x, out_channels, stride, prefix, sync_bn)
    y = _conv(x, width, 1, 1, name=f"{prefix}_conv1")
    y = _batch_norm(f"{prefix}_bn1", synchronized=sync_bn)(y)
    y = layers.Activation("relu", name=f"{prefix}_relu1")(y)
    # Stride on the 3x3 convolution (ResNet "v1.5", as torchvision and the official SimCLR code).
    y = _conv(y, width, 3, stride, name=f"{prefix}_conv2", depthwise=depthwise)
    y = _batch_norm(f"{prefix}_bn2", synchronized=sync_bn)(y)
    y = layers.Activation("relu", name=f"{prefix}_relu2")(y)
    y = _conv(y, out_channels, 1, 1, name=f"{prefix}_conv3")
    y = _batch_norm(f"{prefix}_bn3", zero_gamma=True, synchronized=sync_bn)(y)
    y = layers.Add(name=f"{prefix}_add")([shortcut, y])
    return layers.Activation("relu", name=out_name)(y)


def build_resnet(
    backbone: str = "resnet18",
    width_multiplier: int = 1,
    small_stem: bool | None = None,
    image_size=(32, 32),
    input_shape: Sequence[int | None] = (None, None, 3),
    name: str | None = None,
    synchronized_bn: bool = False,
    depthwise: bool = False,
) -> keras.Model:
    """Build a ResNet encoder mapping images to the representation h.

    Args:
      backbone: one of ``BACKBONES`` ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152").
      width_multiplier: multiplies every convolution's width (1, 2, 3, 4 in the SimCLR paper).
      small_stem: True for the 3x3 stride-1 stem without max-pool, False for the ImageNet stem
        (7x7 stride 2 + max-pool); None chooses from ``image_size`` with ``small_stem_default``.
      image_size: the size the network will see, an int or ``(height, width)``; only used to choose
        the stem. The model itself accepts any size unless ``input_shape`` fixes one.
      input_shape: the Keras input shape, ``(None, None, 3)`` by default so the same encoder runs at
        any image size. Inputs are float32 images in [0, 1] (no mean/std normalisation).
      name: the model name; defaults to ``backbone`` (with ``_w{width}`` when the width is not 1).
      synchronized_bn: use ``BatchNormalization(synchronized=True)`` so BN statistics are computed
        over the global batch under a multi-replica ``tf.distribute`` strategy.
      depthwise: bottleneck backbones only: the 3x3 convolution of every bottleneck is depthwise
        (one filter per channel), as in the "ResNet-50 x2 with depthwise bottlenecks" variant.

    Returns:
      A functional ``keras.Model`` whose output is h, shape ``(batch, feature_dim)``, with
      ``feature_dim`` 512 x width for ResNet-18/34 and 2048 x width for ResNet-50/101/152. Its layers
      ``stem_out``, ``stage1_out`` ... ``stage4_out`` and ``h`` give the multi-scale features.

    Raises:
      ValueError: for an unknown backbone, a non-positive width multiplier, or ``depthwise`` with a
        basic-block backbone.
    """
    if backbone not in BACKBONES:
        raise ValueError(
            f"unknown backbone {backbone!r}; choose one of: {', '.join(BACKBONES)}"
        )
    if isinstance(width_multiplier, bool) or not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier!r}")
    if small_stem is None:
        small_stem = small_stem_default(image_size)
    block_type, blocks_per_stage = BACKBONES[backbone]
    if depthwise and block_type != "bottleneck":
        raise ValueError(f"depthwise convolutions are for bottleneck blocks (resnet50 and deeper), not {backbone}")
    block_fn = _basic_block if block_type == "basic" else _bottleneck_block
    if name is None:
        name = (backbone if width_multiplier == 1 else f"{backbone}_w{width_multiplier}") + ("_dw" if depthwise else "")

    def width(base: int) -> int:
        return max(1, int(round(base * width_multiplier)))

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    if small_stem:
        x = _conv(inputs, width(64), 3, 1, name="stem_conv")
        x = _batch_norm("stem_bn", synchronized=synchronized_bn)(x)
        x = layers.Activation("relu", name="stem_out")(x)
        stage_input = x
    else:
        x = _conv(inputs, width(64), 7, 2, name="stem_conv")
        x = _batch_norm("stem_bn", synchronized=synchronized_bn)(x)
        # stem_out is taken before the max-pool so a decoder gets a stride-2 feature map.
        x = layers.Activation("relu", name="stem_out")(x)
        stage_input = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)

    x = stage_input
    for stage, (base, stride, num_blocks) in enumerate(
        zip(_STAGE_WIDTHS, _STAGE_STRIDES, blocks_per_stage), start=1
    ):
        for block in range(1, num_blocks + 1):
            prefix = f"stage{stage}_block{block}"
            out_name = f"stage{stage}_out" if block == num_blocks else f"{prefix}_out"
            x = block_fn(
                x,
                width(base),
                stride if block == 1 else 1,
                prefix,
                out_name,
                synchronized_bn,
                depthwise,
            )

    # h is float32 even under a mixed-precision policy: it feeds the heads and the loss.
    h = layers.GlobalAveragePooling2D(name=REPRESENTATION_LAYER_NAME, dtype="float32")(x)
    return keras.Model(inputs, h, name=name)
