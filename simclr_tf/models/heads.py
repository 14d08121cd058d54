"""Projection and classification heads for SimCLR, built from standard Keras layers only.

The projection head g maps the representation h to the embedding z used by the contrastive loss:
an MLP with BN where hidden layers are as wide as h (Dense without bias, BN, ReLU) and the last layer
is Dense without bias followed by BN without beta and no ReLU. Version 1 of the paper uses 2 layers,
the official code 3. The output of layer k (1-based) is the layer named ``proj_layer_{k}``, so
evaluation can probe or fine-tune from "projection-head layer k"; layer 0 means the head's input, h.
"""

from __future__ import annotations

import operator
import re

import keras
from keras import layers

_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
_LAYER_OUTPUT_RE = re.compile(r"^proj_layer_(\d+)$")


def _dense_initializer():
    # The official SimCLR code initialises its head layers with N(0, 0.01); a BN follows every
    # projection Dense, so the scale only matters for the classification logits, where small
    # initial logits give a loss near ln(num_classes) at the start.
    return keras.initializers.RandomNormal(stddev=0.01)


def _check_positive_int(value, what: str) -> int:
    # operator.index accepts Python and NumPy integers but not floats or bools-as-sizes.
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be a positive integer, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return number


def build_projection_head(
    input_dim: int,
    num_layers: int = 2,
    hidden_dim: int | None = None,
    output_dim: int = 128,
    name: str = "projection_head",
    synchronized_bn: bool = False,
) -> keras.Model:
    """Build the SimCLR projection head g: h -> z.

    Args:
      input_dim: size of h (e.g. 512 for ResNet-18, see ``resnet.feature_dim``).
      num_layers: number of Dense layers, >= 1; 1 is a linear projection followed by BN.
      hidden_dim: width of the hidden layers; defaults to ``input_dim`` (as wide as h).
      output_dim: size of z (128 in the paper; 64 is suggested for small batches).
      name: the model name.
      synchronized_bn: use ``BatchNormalization(synchronized=True)`` (global-batch statistics under
        a multi-replica strategy).

    Returns:
      A functional ``keras.Model`` from ``(batch, input_dim)`` to ``(batch, output_dim)``. Hidden
      layer k is Dense(use_bias=False) -> BN -> ReLU; the last is Dense(use_bias=False) ->
      BN(center=False) with no ReLU. The output of layer k is the layer ``proj_layer_{k}``.

    Raises:
      ValueError: for a non-positive ``input_dim``, ``num_layers``, ``hidden_dim`` or ``output_dim``.
    """
    input_dim = _check_positive_int(input_dim, "input_dim")
    num_layers = _check_positive_int(num_layers, "num_layers")
    output_dim = _check_positive_int(output_dim, "output_dim")
    hidden_dim = input_dim if hidden_dim is None else _check_positive_int(hidden_dim, "hidden_dim")

    inputs = keras.Input(shape=(input_dim,), name="h_input")
    x = inputs
    for k in range(1, num_layers + 1):
        last = k == num_layers
        x = layers.Dense(
            output_dim if last else hidden_dim,
            use_bias=False,  # the following BN's beta (or its centring) makes a bias redundant
            kernel_initializer=_dense_initializer(),
            name=f"proj_dense_{k}",
        )(x)
        if last:
            # No beta on the output BN (as in the official code): z is L2-normalised by the loss,
            # a learned offset would only add a constant direction shared by all embeddings.
            x = layers.BatchNormalization(
                momentum=_BN_MOMENTUM,
                epsilon=_BN_EPSILON,
                center=False,
                synchronized=synchronized_bn,
                name=f"proj_bn_{k}",
            )(x)
            # Identity layer that names the output; float32 so the loss stays in full precision
            # under a mixed-precision policy. No ReLU: z must be free to take negative values.
            x = layers.Activation("linear", dtype="float32", name=f"proj_layer_{k}")(x)
        else:
            x = layers.BatchNormalization(
                momentum=_BN_MOMENTUM,
                epsilon=_BN_EPSILON,
                synchronized=synchronized_bn,
                name=f"proj_bn_{k}",
            )(x)
            x = layers.Activation("relu", name=f"proj_layer_{k}")(x)
    return keras.Model(inputs, x, name=name)


def head_layer_output_names(head: keras.Model) -> list[str]:
    """Return the names of the projection head's layer outputs, layer 1 first.

    ``head_layer_output_names(head)[k - 1]`` is the output of layer k; the last entry is z. Layer 0
    (h, the head's input) is not listed.
    """
    found = []
    for layer in head.layers:
        match = _LAYER_OUTPUT_RE.match(layer.name)
        if match:
            found.append((int(match.group(1)), layer.name))
    return [name for _, name in sorted(found)]


def build_classification_head(
    input_dim: int,
    num_classes: int,
    kind: str = "linear",
    hidden_dim: int | None = None,
    name: str = "classification_head",
) -> keras.Model:
    """Build a classification head mapping features to logits.

    Args:
      input_dim: size of the input features (h, or a projection-head layer's output).
      num_classes: number of classes (size of the logits).
      kind: "linear" for one Dense with bias (linear evaluation / fine-tuning), or "mlp" for
        Dense(use_bias=False) -> BN -> ReLU -> Dense with bias.
      hidden_dim: width of the "mlp" hidden layer; defaults to ``input_dim``.
      name: the model name.

    Returns:
      A functional ``keras.Model`` from ``(batch, input_dim)`` to float32 logits
      ``(batch, num_classes)`` (no softmax), in a layer named ``logits``.

    Raises:
      ValueError: for an unknown ``kind`` or non-positive sizes.
    """
    input_dim = _check_positive_int(input_dim, "input_dim")
    num_classes = _check_positive_int(num_classes, "num_classes")
    if kind not in ("linear", "mlp"):
        raise ValueError(f"kind must be 'linear' or 'mlp', got {kind!r}")
    hidden_dim = input_dim if hidden_dim is None else _check_positive_int(hidden_dim, "hidden_dim")

    inputs = keras.Input(shape=(input_dim,), name="features")
    x = inputs
    if kind == "mlp":
        x = layers.Dense(
            hidden_dim, use_bias=False, kernel_initializer=_dense_initializer(), name="cls_dense_1"
        )(x)
        x = layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name="cls_bn_1")(x)
        x = layers.Activation("relu", name="cls_relu_1")(x)
    # float32 logits keep softmax cross-entropy accurate under a mixed-precision policy.
    logits = layers.Dense(
        num_classes,
        use_bias=True,
        kernel_initializer=_dense_initializer(),
        bias_initializer="zeros",
        dtype="float32",
        name="logits",
    )(x)
    return keras.Model(inputs, logits, name=name)
