"""Copies of a functional model with another dtype policy or BatchNorm synchronisation, weights kept.

Why: a model trained under a mixed-precision policy or with synchronised BatchNorm (several
replicas) is saved as a portable float32 model with plain BatchNorm, which loads and runs anywhere;
and a saved float32 encoder is turned into a mixed-precision or synchronised one before it is
fine-tuned that way. The copy is made from the model's config (nested models included), so it
works for every model this project builds or loads, custom layers included (they are registered).

Under a mixed policy the model's OUTPUT layers (h, logits, z) and the input scaling of
keras.applications encoders stay float32: the outputs feed losses, argmaxes and probes, and mean
subtraction in [0, 255] would lose precision in float16.
"""
import copy

import keras

_FLOAT32_LAYER_NAMES = ("input_scaling",)


def _output_layer_names(config):
    outputs = config.get("output_layers", [])
    if outputs and isinstance(outputs[0], str):  # one output: ["h", 0, 0]
        outputs = [outputs]
    return {entry[0] for entry in outputs}


def _set_policy(layer_config, policy):
    dtype = layer_config.get("dtype")
    if isinstance(dtype, dict) and dtype.get("class_name") == "DTypePolicy":
        dtype["config"]["name"] = policy
    elif isinstance(dtype, str) or dtype is None:
        layer_config["dtype"] = policy


def _walk(model_config, policy, synchronized_bn):
    keep_float32 = _output_layer_names(model_config)
    for layer in model_config.get("layers", []):
        inner = layer["config"]
        if "layers" in inner:  # a nested functional model
            _walk(inner, policy, synchronized_bn)
        if policy is not None:
            wanted = "float32" if (layer["config"].get("name") in keep_float32 | set(_FLOAT32_LAYER_NAMES)
                                   or layer["class_name"] == "InputLayer") else policy
            _set_policy(inner, wanted)
        if synchronized_bn is not None and layer["class_name"] == "BatchNormalization":
            inner["synchronized"] = bool(synchronized_bn)


def rebuild(model, dtype_policy=None, synchronized_bn=None):
    """A new functional model like `model` with its weights, every layer under `dtype_policy` (e.g.
    "float32", "mixed_bfloat16"; None: unchanged, outputs kept float32 as above) and every
    BatchNormalization with `synchronized=synchronized_bn` (None: unchanged).

    Build it inside the strategy scope that will train it.
    """
    config = copy.deepcopy(model.get_config())
    _walk(config, dtype_policy, synchronized_bn)
    previous = keras.config.dtype_policy()
    if dtype_policy is not None:  # layers without a dtype in their config (inputs) follow the global one
        keras.config.set_dtype_policy(dtype_policy)
    try:
        copy_ = model.__class__.from_config(config)
    finally:
        keras.config.set_dtype_policy(previous)
    copy_.set_weights(model.get_weights())
    return copy_


def portable(model):
    """The float32 copy with plain BatchNorm that a run saves (loads and runs anywhere)."""
    return rebuild(model, dtype_policy="float32", synchronized_bn=False)


def is_portable(model):
    """True when every layer computes in float32 and no BatchNorm is synchronised."""
    def check(layers):
        for layer in layers:
            if isinstance(layer, keras.Model) and not check(layer.layers):
                return False
            if layer.dtype_policy.name != "float32" and not isinstance(layer, keras.layers.InputLayer):
                return False
            if isinstance(layer, keras.layers.BatchNormalization) and layer.synchronized:
                return False
        return True
    return check(model.layers)
