"""``keras.applications`` backbones as SimCLR encoders: image float32 in [0, 1] -> h.

An application encoder is a functional ``keras.Model`` named after the application (``"vgg16"``,
``"mobilenetv2"``, ...; see ``APPLICATIONS``) with three parts:

1. ``input_scaling``: an `ImageNetInputScaling` layer that turns the project's images (RGB in
   [0, 1]) into exactly what ``keras.applications.<module>.preprocess_input`` makes of the same
   image in [0, 255]:

   - ``"caffe"`` (VGG16/19, ResNet50/101/152): RGB -> BGR, minus the ImageNet mean pixel
     (103.939, 116.779, 123.68), no scaling;
   - ``"tf"`` (MobileNet, MobileNetV2, ResNetV2, Xception, InceptionV3, InceptionResNetV2):
     pixel / 127.5 - 1, in [-1, 1];
   - ``"torch"`` (DenseNet): pixel / 255, minus mean (0.485, 0.456, 0.406), over std
     (0.229, 0.224, 0.225);
   - ``"raw"`` (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3): pixels in [0, 255] and
     nothing else, because these models rescale inside themselves (their ``preprocess_input`` is
     the identity).

2. The application itself, ``include_top=False``, no pooling, nested as one layer (its own Keras
   name, e.g. ``mobilenetv2_1.00_None``; `base_model` finds it).
3. ``h``: ``GlobalAveragePooling2D`` in float32, of width ``feature_dim`` (512 for VGG16, 2048 for
   ResNet50, 1280 for MobileNetV2 and EfficientNetB0, 768 for ConvNeXtTiny; see ``describe``).

The input is ``(None, None, 3)`` by default, like the project's ResNets, so one encoder runs at
any size at or above the application's minimum (32 px for most; 71 for Xception, 75 for
InceptionV3 / InceptionResNetV2: Keras' own limits, below which some of them fail outright).

Weights: ``"none"`` is Keras' random initialisation; ``"imagenet"`` downloads the no-top file
into the Keras cache (atomically: a failed or interrupted download never leaves a file under the
final name), and without network raises `BackboneWeightsError` naming the file and URL to fetch
by hand; a local path builds exactly the model ``"imagenet"`` builds and loads that file instead
of downloading. (Keras' own ``weights=PATH`` builds a different EfficientNet B0-B7: it leaves out
the ``Rescaling`` that corrects the stored normalisation, so the ImageNet file would see inputs
scaled wrong. Going through the "imagenet" branch avoids that for every application.)

`ImageNetInputScaling` is registered as ``simclr_tf>ImageNetInputScaling``; importing this module
(which ``simclr_tf/__init__.py`` must do) is all ``keras.models.load_model`` needs, in safe mode,
to read a saved application encoder. Every other layer is Keras' own.

Segmentation: ``models.decoder.build_segmentation_model`` reads the ResNet layer names
``stem_out`` ... ``stage4_out`` and refuses application encoders (`supports_segmentation` is
False for them). `application_feature_layers` / `application_feature_model` give the five skip
features at strides 2, 4, 8, 16, 32 for the applications that have them (VGG, ResNet,
MobileNetV2, EfficientNet, DenseNet; not ConvNeXt, whose first feature is at stride 4), for a
decoder that takes arbitrary skips.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile

import keras
from keras import layers

# Private Keras modules, used for two things the public API cannot do: every application calls
# `file_utils.get_file` through this module attribute when it fetches its ImageNet weights (the one
# place to redirect it to a local file or make the download atomic), and `keras_home` is where
# `get_file` caches them.
from keras.src.backend import config as _keras_config
from keras.src.utils import file_utils as _file_utils

from simclr_tf.errors import UserError
from simclr_tf.models.resnet import FEATURE_LAYER_NAMES, REPRESENTATION_LAYER_NAME

WEIGHTS_FLAG = "--backbone_weights"
SCALING_LAYER_NAME = "input_scaling"
SCALING_MODES = ("caffe", "tf", "torch", "raw")
# Strides of the five skip features of `application_feature_layers`, shallowest first.
FEATURE_STRIDES = (2, 4, 8, 16, 32)

_EFFICIENTNET_SKIPS = ("block2a_expand_activation", "block3a_expand_activation",
                       "block4a_expand_activation", "block6a_expand_activation", "top_activation")
_DENSENET_SKIPS = ("conv1_relu", "pool2_relu", "pool3_relu", "pool4_relu", "relu")


def _resnet_skips(stage3_blocks: int, stage4_blocks: int) -> tuple[str, ...]:
    return ("conv1_relu", "conv2_block3_out", f"conv3_block{stage3_blocks}_out",
            f"conv4_block{stage4_blocks}_out", "conv5_block3_out")


@dataclasses.dataclass(frozen=True)
class Application:
    """How to build one ``keras.applications`` model and feed it.

    Attributes:
      constructor: the function's name in ``keras.applications`` (``"MobileNetV2"``).
      module: the ``keras.applications`` submodule whose ``preprocess_input`` `scaling` reproduces.
      scaling: one of ``SCALING_MODES``.
      min_size: smallest image side Keras accepts for it (pixels).
      feature_layers: names of its layers at strides 2, 4, 8, 16, 32, or None.
    """

    constructor: str
    module: str
    scaling: str
    min_size: int = 32
    feature_layers: tuple[str, ...] | None = None


def _family(names_and_constructors, module, scaling, min_size=32, feature_layers=None):
    return {name: Application(ctor, module, scaling, min_size, feature_layers)
            for name, ctor in names_and_constructors}


# Lower-case names without separators (see `canonical_name`). NASNet is left out: with a dynamic
# input shape its reduction cells add maps of different sizes and fail.
APPLICATIONS: dict[str, Application] = {
    "vgg16": Application("VGG16", "vgg16", "caffe", feature_layers=(
        "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3", "block5_pool")),
    "vgg19": Application("VGG19", "vgg19", "caffe", feature_layers=(
        "block2_conv2", "block3_conv4", "block4_conv4", "block5_conv4", "block5_pool")),
    "resnet50": Application("ResNet50", "resnet50", "caffe", feature_layers=_resnet_skips(4, 6)),
    "resnet101": Application("ResNet101", "resnet", "caffe", feature_layers=_resnet_skips(4, 23)),
    "resnet152": Application("ResNet152", "resnet", "caffe", feature_layers=_resnet_skips(8, 36)),
    **_family([("resnet50v2", "ResNet50V2"), ("resnet101v2", "ResNet101V2"),
               ("resnet152v2", "ResNet152V2")], "resnet_v2", "tf"),
    "mobilenet": Application("MobileNet", "mobilenet", "tf"),
    "mobilenetv2": Application("MobileNetV2", "mobilenet_v2", "tf", feature_layers=(
        "block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu",
        "block_13_expand_relu", "out_relu")),
    **_family([("mobilenetv3small", "MobileNetV3Small"), ("mobilenetv3large", "MobileNetV3Large")],
              "mobilenet_v3", "raw"),
    **_family([(f"efficientnetb{i}", f"EfficientNetB{i}") for i in range(8)], "efficientnet", "raw",
              feature_layers=_EFFICIENTNET_SKIPS),
    **_family([(f"efficientnetv2{v}", f"EfficientNetV2{v.upper()}")
               for v in ("b0", "b1", "b2", "b3", "s", "m", "l")], "efficientnet_v2", "raw"),
    **_family([("convnexttiny", "ConvNeXtTiny"), ("convnextsmall", "ConvNeXtSmall"),
               ("convnextbase", "ConvNeXtBase"), ("convnextlarge", "ConvNeXtLarge"),
               ("convnextxlarge", "ConvNeXtXLarge")], "convnext", "raw"),
    **_family([(f"densenet{n}", f"DenseNet{n}") for n in (121, 169, 201)], "densenet", "torch",
              feature_layers=_DENSENET_SKIPS),
    "xception": Application("Xception", "xception", "tf", min_size=71),
    "inceptionv3": Application("InceptionV3", "inception_v3", "tf", min_size=75),
    "inceptionresnetv2": Application("InceptionResNetV2", "inception_resnet_v2", "tf", min_size=75),
}

_RESERVED_KWARGS = ("include_top", "weights", "input_tensor", "input_shape", "pooling", "classes",
                    "classifier_activation")


class BackboneWeightsError(UserError, ValueError):
    """The backbone's weights cannot be had: download failed, file missing or not loadable.

    A `UserError` (``main.py`` prints the message and exits with status 2) and a ValueError.
    """


@keras.saving.register_keras_serializable(package="simclr_tf")
class ImageNetInputScaling(layers.Layer):
    """Maps RGB images in [0, 1] to the input a ``keras.applications`` model expects.

    The image is multiplied by 255 and then given to
    ``keras.applications.imagenet_utils.preprocess_input`` in ``mode`` (``"caffe"``, ``"tf"`` or
    ``"torch"``), the function every application's own ``preprocess_input`` calls, so the result is
    exactly theirs; ``"raw"`` stops after the multiplication (for models that rescale inside).
    Channels last only.
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in SCALING_MODES:
            raise ValueError(f"unknown input scaling {mode!r}; expected one of {SCALING_MODES}")
        self.mode = mode

    def call(self, images):
        pixels = keras.ops.multiply(keras.ops.cast(images, self.compute_dtype), 255.0)
        if self.mode == "raw":
            return pixels
        return keras.applications.imagenet_utils.preprocess_input(
            pixels, data_format="channels_last", mode=self.mode)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def canonical_name(name: str) -> str:
    """``"ResNet50"``, ``"convnext_tiny"``, ``"efficientnet-b0"`` -> the ``APPLICATIONS`` key.

    Raises:
      ValueError: for a name that is not in ``APPLICATIONS``.
    """
    key = "".join(ch for ch in str(name).strip().lower() if ch not in "_- ")
    if key not in APPLICATIONS:
        raise ValueError(f"unknown keras.applications backbone {name!r}; choose one of: "
                         f"{', '.join(APPLICATIONS)}")
    return key


def min_image_size(name: str) -> int:
    """The smallest image side (pixels) the application accepts: 32, or 71 / 75 (see module doc)."""
    return APPLICATIONS[canonical_name(name)].min_size


def check_image_size(name: str, image_size) -> tuple[int, int]:
    """Returns ``(height, width)`` of ``image_size`` (an int or a pair) when the application accepts it.

    Raises:
      ValueError: when a side is below `min_image_size`.
    """
    sides = tuple(image_size) if hasattr(image_size, "__len__") else (image_size, image_size)
    if len(sides) != 2:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    height, width = (int(s) for s in sides)
    minimum = min_image_size(name)
    if min(height, width) < minimum:
        raise ValueError(
            f"{canonical_name(name)} needs images of at least {minimum}x{minimum} pixels (Keras' "
            f"limit for it); the crop size {height}x{width} is too small: use a larger crop size "
            "or the project's own ResNet backbones, which run at any size")
    return height, width


def build_application_encoder(name: str, weights="none", image_size=(32, 32),
                              input_shape=(None, None, 3), **application_kwargs) -> keras.Model:
    """Builds a ``keras.applications`` model as an encoder: image in [0, 1] -> h.

    Args:
      name: an ``APPLICATIONS`` name, case and ``_``/``-`` ignored (``"MobileNet_V2"`` works).
      weights: ``"none"`` (or None) for random initialisation, ``"imagenet"`` for Keras' download
        (cached in ``~/.keras/models``), or the path of the application's no-top ImageNet weights
        file (the ``..._notop.h5`` / ``..._no_top.h5`` Keras downloads, or any ``.h5`` /
        ``.weights.h5`` file saved from the same architecture with the same options).
      image_size: the crop size the encoder will see, an int or ``(height, width)``; checked against
        the application's minimum, nothing else depends on it.
      input_shape: the Keras input shape, ``(None, None, 3)`` (any size) by default.
      **application_kwargs: passed on to the constructor, e.g. ``alpha=0.35`` for MobileNetV2.
        With ImageNet weights Keras restricts some (MobileNet ``alpha``), and for MobileNet /
        MobileNetV2 a dynamic input shape selects the weights trained at 224 px.

    Returns:
      The encoder, named like the application's constructor (``"ResNet50"``), whose output is the
      float32 layer ``h``.

    Raises:
      ValueError: unknown name, image size below the minimum, or a reserved keyword argument.
      BackboneWeightsError: the ImageNet weights could not be downloaded (the message says how to
        pass a local file instead), or the local file is missing or does not fit the model.
    """
    key = canonical_name(name)
    application = APPLICATIONS[key]
    check_image_size(key, image_size)
    input_shape = _checked_input_shape(key, input_shape)
    reserved = sorted(set(application_kwargs) & set(_RESERVED_KWARGS))
    if reserved:
        raise ValueError(f"build_application_encoder sets {', '.join(reserved)} itself")
    if keras.config.image_data_format() != "channels_last":
        raise ValueError("application encoders need keras.config.image_data_format() == 'channels_last'")
    source = _weights_source(weights)
    base = _build_base(key, application, source, input_shape, application_kwargs)
    images = keras.Input(shape=input_shape, name="image")
    # float32 scaling: mean subtraction in [0, 255] would lose precision in float16.
    scaled = ImageNetInputScaling(application.scaling, name=SCALING_LAYER_NAME, dtype="float32")(images)
    h = layers.GlobalAveragePooling2D(name=REPRESENTATION_LAYER_NAME, dtype="float32")(base(scaled))
    # Named like the keras.applications constructor ("ResNet50"), never like the project's own
    # lower-case ResNets ("resnet50"), so a loaded encoder.keras says which kind it is.
    return keras.Model(images, h, name=application.constructor)


def _checked_input_shape(key, input_shape):
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape!r}")
    static = [s for s in shape[:2] if s is not None]
    if static:
        check_image_size(key, [s if s is not None else APPLICATIONS[key].min_size for s in shape[:2]])
    return shape


def _weights_source(weights):
    """None for random initialisation, "imagenet", or an existing local path."""
    if weights is None:
        return None
    text = os.fspath(weights) if isinstance(weights, os.PathLike) else str(weights)
    keyword = text.strip().lower()
    if keyword == "none":
        return None
    if keyword == "imagenet":
        return "imagenet"
    path = os.path.expanduser(text)
    if not os.path.isfile(path):
        raise BackboneWeightsError(
            f"{WEIGHTS_FLAG}={text}: no such file (expected 'none', 'imagenet' or the path of the "
            "backbone's no-top weights .h5 file)")
    if not path.endswith((".h5", ".hdf5")):
        raise BackboneWeightsError(
            f"{WEIGHTS_FLAG}={text}: expected a Keras weights file ending in .h5 (such as the "
            "'..._notop.h5' file Keras downloads), not an encoder.keras or other file")
    return path


def _build_base(key, application, source, input_shape, kwargs):
    constructor = getattr(keras.applications, application.constructor)
    arguments = dict(include_top=False, input_shape=input_shape, **kwargs)
    if source is None:
        return constructor(weights=None, **arguments)
    fetch = _LocalWeights(source) if source != "imagenet" else _AtomicDownload(key, _file_utils.get_file)
    try:
        # Always the "imagenet" branch, so a local file gets the very model the download would.
        with _redirect_get_file(fetch):
            base = constructor(weights="imagenet", **arguments)
    except BackboneWeightsError:
        raise
    except ValueError as error:
        if fetch.path is None:  # Keras' checks of the "imagenet" branch (MobileNet's alpha, ...)
            raise BackboneWeightsError(
                f"{key} has no ImageNet weights with the options {kwargs or '(defaults)'}, so neither "
                f"'imagenet' nor a weights file can be used ({_one_line(error)}); use weights 'none'"
            ) from error
        raise BackboneWeightsError(_load_failure_message(key, fetch, error)) from error
    except Exception as error:
        if fetch.path is None:
            raise
        raise BackboneWeightsError(_load_failure_message(key, fetch, error)) from error
    if fetch.path is None:
        raise BackboneWeightsError(
            f"keras.applications.{application.constructor} has no ImageNet weights for the options "
            f"{kwargs or '(defaults)'}; use weights 'none'")
    return base


@contextlib.contextmanager
def _redirect_get_file(replacement):
    # Process-wide for the duration of one constructor call: not for concurrent builds in threads.
    original = _file_utils.get_file
    _file_utils.get_file = replacement
    try:
        yield
    finally:
        _file_utils.get_file = original


class _LocalWeights:
    """Stands in for ``get_file``: answers every request with the user's file."""

    def __init__(self, path):
        self.local_path = path
        self.path = None
        self.request = (None, None)

    def __call__(self, fname=None, origin=None, **_):
        self.request = (fname, origin)
        self.path = self.local_path
        return self.path


class _AtomicDownload:
    """Stands in for ``get_file``: downloads to a scratch folder, renames into the cache on success.

    Keras' ``get_file`` writes straight to the final cache name and only removes it on a Python
    exception; a killed process (or a file without a hash, as MobileNet's) could leave a truncated
    file that later runs would load. Failures become `BackboneWeightsError`.
    """

    def __init__(self, application_name, get_file):
        self.application_name = application_name
        self.get_file = get_file
        self.path = None
        self.request = (None, None)

    def __call__(self, fname=None, origin=None, cache_subdir="datasets", file_hash=None, **kwargs):
        self.request = (fname, origin)
        cache_dir = _keras_cache_dir(cache_subdir)
        final = os.path.join(cache_dir, fname)
        if os.path.isfile(final) and (file_hash is None or _file_utils.validate_file(final, file_hash)):
            self.path = final
            return final
        created = not os.path.isdir(cache_dir)
        try:
            os.makedirs(cache_dir, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".partial-", dir=cache_dir) as scratch:
                # An absolute cache_subdir makes get_file download into it.
                downloaded = self.get_file(fname, origin, cache_subdir=scratch, file_hash=file_hash,
                                           **kwargs)
                os.replace(downloaded, final)
        except Exception as error:
            if created:
                _remove_if_empty(cache_dir)
            raise BackboneWeightsError(
                _download_failure_message(self.application_name, fname, origin, cache_dir, error)
            ) from error
        self.path = final
        return final


def _remove_if_empty(directory):
    try:
        os.rmdir(directory)
    except OSError:
        pass  # not empty (another process uses it) or already gone


def _keras_cache_dir(cache_subdir):
    # The folder get_file uses (including its fallback when the Keras home is not writable).
    base = os.path.expanduser(_keras_config.keras_home())
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(base, cache_subdir)


def _download_failure_message(application_name, fname, origin, cache_dir, error):
    return (
        f"could not download the ImageNet weights of {application_name} ({_one_line(error)}). "
        f"Without network access, download {origin} on a machine that has it, copy the file here "
        f"and pass {WEIGHTS_FLAG}=/path/to/{fname} (weights=PATH in Python), or put it in "
        f"{cache_dir}/, where Keras looks before downloading. Nothing was written to the cache.")


def _load_failure_message(application_name, fetch, error):
    fname, origin = fetch.request
    expected = f" Expected the file {fname} ({origin})." if fname else ""
    # A cached download without a hash (MobileNet's) can only be found bad by loading it.
    retry = " Delete it to download it again." if isinstance(fetch, _AtomicDownload) else ""
    return (f"could not load {fetch.path} as the no-top ImageNet weights of {application_name} "
            f"({_one_line(error)}).{expected}{retry}")


def _one_line(error):
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def _key(encoder: keras.Model) -> str:
    """The `APPLICATIONS` key of an encoder's name ("ResNet50" -> "resnet50")."""
    return "".join(ch for ch in encoder.name.lower() if ch not in "_- ")


def is_application_encoder(encoder: keras.Model) -> bool:
    """True for an encoder from `build_application_encoder` (or loaded from its ``.keras`` file)."""
    try:
        scaling = encoder.get_layer(SCALING_LAYER_NAME)
    except ValueError:
        return False
    return _key(encoder) in APPLICATIONS and isinstance(scaling, ImageNetInputScaling)


def base_model(encoder: keras.Model) -> keras.Model:
    """The nested ``keras.applications`` model of an application encoder.

    Raises:
      ValueError: when ``encoder`` is not an application encoder.
    """
    if not is_application_encoder(encoder):
        raise ValueError(f"{encoder.name!r} is not a keras.applications encoder")
    nested = [layer for layer in encoder.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"{encoder.name!r} should hold exactly one nested model, found {len(nested)}")
    return nested[0]


def supports_segmentation(encoder: keras.Model) -> bool:
    """Whether ``models.decoder.build_segmentation_model`` accepts ``encoder`` as it is.

    True when the encoder has the project's named features ``stem_out`` ... ``stage4_out`` (the
    ResNets of ``models.resnet``); False for application encoders, whose features sit inside the
    nested model under other names (see `application_feature_layers`).
    """
    names = {layer.name for layer in encoder.layers}
    return all(name in names for name in FEATURE_LAYER_NAMES)


def application_feature_layers(encoder: keras.Model) -> tuple[str, ...]:
    """Names of the base model's layers at strides 2, 4, 8, 16, 32 (``FEATURE_STRIDES``).

    The strides are exact for sides that are multiples of 32; otherwise VGG, MobileNetV2,
    EfficientNet and DenseNet round some sizes down where ResNet rounds up, so a decoder must resize
    (not only crop) to join them.

    Raises:
      ValueError: not an application encoder, or one without such features (ConvNeXt starts at
        stride 4; MobileNet v1/v3, ResNetV2, EfficientNetV2, Xception and Inception are not mapped).
    """
    base_model(encoder)  # validates
    names = APPLICATIONS[_key(encoder)].feature_layers
    if names is None:
        raise ValueError(f"{encoder.name} has no skip features at strides {FEATURE_STRIDES} mapped; "
                         "segmentation needs one of: "
                         f"{', '.join(k for k, a in APPLICATIONS.items() if a.feature_layers)}")
    return names


def application_feature_model(encoder: keras.Model, name: str = "encoder") -> keras.Model:
    """A model sharing ``encoder``'s layers: image in [0, 1] -> the five skip features, shallowest first."""
    names = application_feature_layers(encoder)
    base = base_model(encoder)
    inner = keras.Model(base.inputs, [base.get_layer(n).output for n in names], name=f"{name}_features")
    images = keras.Input(shape=(None, None, 3), name="image")
    return keras.Model(images, inner(encoder.get_layer(SCALING_LAYER_NAME)(images)), name=name)


def describe(encoder: keras.Model) -> dict:
    """What a (loaded) encoder is, for the task layer and logs.

    Returns:
      ``{"backbone": name, "kind": "application" | "resnet" | "unknown", "feature_dim": width of h,
      "supports_segmentation": bool}``, plus for applications ``"input_scaling"``,
      ``"min_image_size"``, ``"base_model"`` (Keras' name of the nested model) and
      ``"segmentation_features"`` (the layer names, or None).
    """
    info = {"backbone": encoder.name, "feature_dim": int(encoder.outputs[0].shape[-1]),
            "supports_segmentation": supports_segmentation(encoder)}
    if is_application_encoder(encoder):
        application = APPLICATIONS[_key(encoder)]
        info.update(kind="application", input_scaling=application.scaling,
                    min_image_size=application.min_size, base_model=base_model(encoder).name,
                    segmentation_features=application.feature_layers)
    else:
        info["kind"] = "resnet" if info["supports_segmentation"] else "unknown"
    return info
