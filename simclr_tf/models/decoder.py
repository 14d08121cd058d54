"""U-Net-style segmentation decoder on the skip features of a ResNet encoder (`models.resnet`).

Architecture (the decoder of U-Net / `segmentation_models` "Unet" on a ResNet encoder):

- The encoder's named feature layers are the skips: ``stem_out``, ``stage1_out`` ... ``stage4_out``
  (strides 1, 1, 2, 4, 8 with the small stem; 2, 4, 8, 16, 32 with the ImageNet stem).
- Starting from ``stage4_out``, each decoder block upsamples by 2 (bilinear; no upsampling when the
  skip has the same resolution, as ``stem_out`` / ``stage1_out`` with the small stem), crops to the
  skip's size, concatenates the skip, then applies two 3x3 convolution + BN + ReLU. Block widths are
  ``DECODER_WIDTHS`` = 256, 128, 64, 32 (towards stage3, stage2, stage1, stem).
- A last block (16 channels, two 3x3 conv + BN + ReLU, no skip) brings the result to the input
  resolution (upsampling by 2 with the ImageNet stem), and a 1x1 convolution gives float32 per-pixel
  logits for ``num_classes`` classes (no softmax), in a layer named ``logits``.

Any input size works, not only multiples of 32: strided layers of the encoder output
``ceil(size / 2)``, so upsampling by 2 gives the skip's size or one pixel more, and `CropToMatch`
drops that extra row / column (bottom and right; the encoder pads symmetrically, so the grids stay
aligned to within half a pixel at the coarsest level). Nothing is resized to a fixed shape, so the
same model runs on 32x32 crops in training and on larger images in prediction.

`CropToMatch` is the one custom layer; it is registered as ``simclr_tf>CropToMatch`` and
``simclr_tf/__init__.py`` imports this module, so ``import simclr_tf`` is enough for
``keras.models.load_model`` to read a segmentation model.
"""

from __future__ import annotations

import keras
from keras import layers

from simclr_tf.models.resnet import FEATURE_LAYER_NAMES, feature_strides

# Widths of the decoder blocks that merge stage3, stage2, stage1 and the stem, then the last block.
DECODER_WIDTHS = (256, 128, 64, 32)
FINAL_WIDTH = 16
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="simclr_tf")
class CropToMatch(layers.Layer):
    """Crops ``x`` ([B, H, W, C]) to the height and width of ``reference``: ``x[:, :h, :w]``.

    Called as ``CropToMatch()([x, reference])``. Used after a 2x upsampling, which can be one pixel
    larger than the skip it joins when the skip's size is odd; sizes are read at run time, so the
    model works for any input size.
    """

    def call(self, inputs):
        x, reference = inputs
        shape = keras.ops.shape(reference)
        return x[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shapes):
        x_shape, reference_shape = input_shapes
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


def uses_small_stem(encoder: keras.Model) -> bool:
    """True when the encoder has the 3x3 stride-1 stem (no ``stem_pool`` max-pool layer)."""
    return not any(layer.name == "stem_pool" for layer in encoder.layers)


def skip_feature_model(encoder: keras.Model, name: str = "encoder") -> keras.Model:
    """A model sharing ``encoder``'s layers that outputs its five skip features, shallowest first."""
    try:
        outputs = [encoder.get_layer(layer_name).output for layer_name in FEATURE_LAYER_NAMES]
    except ValueError as e:
        raise ValueError(f"the encoder lacks the feature layers {FEATURE_LAYER_NAMES}: {e}") from None
    return keras.Model(encoder.inputs, outputs, name=name)


def _conv_bn_relu(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _upsample_to(x, reference, factor: int, name: str):
    """Upsamples ``x`` by ``factor`` (1 or 2, bilinear) and crops it to ``reference``'s size."""
    if factor == 1:
        return x
    x = layers.UpSampling2D(factor, interpolation="bilinear", name=f"{name}_up")(x)
    return CropToMatch(name=f"{name}_crop")([x, reference])


def _decoder_block(x, skip, factor: int, filters: int, name: str):
    x = _upsample_to(x, skip, factor, name)
    x = layers.Concatenate(name=f"{name}_concat")([x, skip])
    x = _conv_bn_relu(x, filters, f"{name}_1")
    return _conv_bn_relu(x, filters, f"{name}_2")


def build_segmentation_model(encoder: keras.Model, num_classes: int, freeze: bool = False,
                             name: str = "segmentation") -> keras.Model:
    """Encoder + U-Net decoder: images [B, H, W, 3] in [0, 1] -> logits [B, H, W, num_classes].

    Args:
      encoder: a ResNet from ``models.resnet.build_resnet`` (or loaded from encoder.keras), any depth
        and width; its layers are shared, not copied.
      num_classes: number of classes, background included.
      freeze: keep the encoder fixed (``trainable = False``): only the decoder trains, and the
        encoder's BatchNormalization layers run in inference mode (Keras 3 semantics of a
        non-trainable BN layer), so its statistics are not updated either.
      name: the model's name.

    Returns:
      A functional ``keras.Model``; the encoder part is the nested model named ``encoder``.
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes!r}")
    features = skip_feature_model(encoder)
    features.trainable = not freeze
    strides = feature_strides(uses_small_stem(encoder))
    inputs = keras.Input(shape=(None, None, 3), name="image")
    skips = features(inputs)
    x = skips[-1]
    deep_stride = strides[FEATURE_LAYER_NAMES[-1]]
    # Deepest first: stage3, stage2, stage1, stem.
    for skip, skip_name, width in zip(skips[-2::-1], FEATURE_LAYER_NAMES[-2::-1], DECODER_WIDTHS):
        factor = deep_stride // strides[skip_name]
        x = _decoder_block(x, skip, factor, width, f"decoder_{skip_name.removesuffix('_out')}")
        deep_stride = strides[skip_name]
    x = _upsample_to(x, inputs, deep_stride, "decoder_final")
    x = _conv_bn_relu(x, FINAL_WIDTH, "decoder_final_1")
    x = _conv_bn_relu(x, FINAL_WIDTH, "decoder_final_2")
    # float32 logits even under a mixed-precision policy: they feed the loss and the argmax.
    logits = layers.Conv2D(int(num_classes), 1, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)
