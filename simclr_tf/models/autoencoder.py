"""Small convolutional denoising autoencoder whose latent vectors are clustered into G-SimCLR pseudo-labels.

G-SimCLR (Chakraborty, Gosthipaty and Paul, 2020) trains a small denoising autoencoder on the
unlabelled images, clusters its latent vectors with k-means (`evaluation.clustering`) and builds
SimCLR batches of distinct clusters (`data.guided_batches`).

Architecture, for images of ``image_size`` (H, W), float32 in [0, 1]:

- ``noise``: additive Gaussian noise of standard deviation ``noise_std`` (`keras.layers.GaussianNoise`,
  active only in training, not clipped), so the autoencoder learns to reconstruct the clean image
  from a corrupted one. The noise sits in the autoencoder, before the encoder: the encoder alone
  never adds noise, and ``autoencoder.fit(images, images)`` is the whole training recipe.
- Encoder (``ae_encoder``): for each of ``widths``, a 3x3 stride-2 convolution ("same" padding, so a
  side of s becomes ceil(s / 2): any size works, not only powers of two), BatchNorm and ReLU; then
  Flatten and a Dense layer to the ``latent_dim``-vector named ``latent`` (linear, float32).
- Decoder (``ae_decoder``): Dense + BatchNorm + ReLU back to the encoder's last feature map, one 3x3
  stride-2 transposed convolution + BatchNorm + ReLU per encoder stage (widths in reverse), a 3x3
  convolution to 3 channels with a sigmoid (float32), and a `Cropping2D` of the bottom / right rows
  and columns by which the doubled sizes exceed (H, W) (the stride-2 "same" convolutions align to
  the top left).
- BatchNorm (momentum 0.9, as the ResNets here; the G-SimCLR autoencoder also uses conv + BN +
  ReLU) matters: without it this narrow-bottleneck autoencoder sits for a long time at the
  "mean image" plateau. Latents are therefore computed in inference mode (`latent_vectors`).

Every layer is a stock Keras layer, so ``.keras`` files of the encoder and the autoencoder load with
``keras.models.load_model`` (safe mode on) in a fresh process, without custom objects.

Typical use::

    autoencoder, encoder = build_denoising_autoencoder((32, 32))
    autoencoder.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    autoencoder.fit(images, images, batch_size=128, epochs=20)
    vectors = latent_vectors(encoder, images)
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

LATENT_LAYER_NAME = "latent"
DEFAULT_WIDTHS = (32, 64, 128)
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


def _image_size(image_size):
    sides = tuple(image_size) if hasattr(image_size, "__len__") else (image_size, image_size)
    if len(sides) != 2 or any(isinstance(s, bool) or int(s) != s or s < 1 for s in sides):
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return int(sides[0]), int(sides[1])


def _bn_relu(x, prefix: str):
    x = layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"{prefix}_bn")(x)
    return layers.Activation("relu", name=f"{prefix}_relu")(x)


def _reduced(side: int, stages: int) -> int:
    for _ in range(stages):
        side = -(-side // 2)
    return side


def build_denoising_autoencoder(
    image_size,
    latent_dim: int = 128,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    noise_std: float = 0.1,
    name: str = "denoising_autoencoder",
):
    """Build a denoising convolutional autoencoder and its encoder (see the module docstring).

    Args:
      image_size: an int (square) or ``(height, width)``; the models accept only this size.
      latent_dim: size of the latent vector that is clustered.
      widths: channels of the stride-2 convolutions of the encoder, shallowest first; their number
        sets the downsampling (3 stages: 32x32 -> 4x4, 24x40 -> 3x5). For large images add a stage
        or two, since the Dense layers scale with the last feature map.
      noise_std: standard deviation of the training noise on images in [0, 1]; 0 disables it.
      name: name of the autoencoder model (the encoder is ``ae_encoder``, the decoder ``ae_decoder``).

    Returns:
      ``(autoencoder, encoder)``, functional `keras.Model` s sharing weights, not compiled:
      ``autoencoder`` maps float32 images [B, H, W, 3] in [0, 1] to reconstructions of the same
      shape in [0, 1] (sigmoid); ``encoder`` maps the images to latent vectors [B, latent_dim]
      (float32, layer ``latent``). The decoder is ``autoencoder.get_layer("ae_decoder")``.

    Raises:
      ValueError: for a bad image size, latent size, widths or noise level.
    """
    height, width = _image_size(image_size)
    widths = tuple(int(w) for w in widths)
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
    if isinstance(latent_dim, bool) or int(latent_dim) != latent_dim or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
    latent_dim = int(latent_dim)
    stages = len(widths)
    low_h, low_w = _reduced(height, stages), _reduced(width, stages)

    # Encoder.
    image = keras.Input(shape=(height, width, 3), name="image")
    x = image
    for i, w in enumerate(widths, start=1):
        x = layers.Conv2D(w, 3, strides=2, padding="same", use_bias=False, kernel_initializer="he_normal",
                          name=f"enc_conv{i}")(x)
        x = _bn_relu(x, f"enc{i}")
    x = layers.Flatten(name="enc_flatten")(x)
    latent = layers.Dense(latent_dim, name=LATENT_LAYER_NAME, dtype="float32")(x)
    encoder = keras.Model(image, latent, name="ae_encoder")

    # Decoder.
    code = keras.Input(shape=(latent_dim,), name="latent_input")
    y = layers.Dense(low_h * low_w * widths[-1], use_bias=False, kernel_initializer="he_normal",
                     name="dec_dense")(code)
    y = _bn_relu(y, "dec_dense")
    y = layers.Reshape((low_h, low_w, widths[-1]), name="dec_reshape")(y)
    up_widths = tuple(reversed(widths[:-1])) + (widths[0],)
    for i, w in enumerate(up_widths, start=1):
        y = layers.Conv2DTranspose(w, 3, strides=2, padding="same", use_bias=False,
                                   kernel_initializer="he_normal", name=f"dec_deconv{i}")(y)
        y = _bn_relu(y, f"dec{i}")
    y = layers.Conv2D(3, 3, padding="same", name="dec_out_conv")(y)
    y = layers.Activation("sigmoid", dtype="float32", name="reconstruction")(y)
    extra_h, extra_w = low_h * 2 ** stages - height, low_w * 2 ** stages - width
    if extra_h or extra_w:
        y = layers.Cropping2D(((0, extra_h), (0, extra_w)), name="dec_crop")(y)
    decoder = keras.Model(code, y, name="ae_decoder")

    # Autoencoder: noise (training only) -> encoder -> decoder.
    clean = keras.Input(shape=(height, width, 3), name="image")
    noisy = layers.GaussianNoise(float(noise_std), name="noise")(clean)
    autoencoder = keras.Model(clean, decoder(encoder(noisy)), name=name)
    return autoencoder, encoder


def latent_vectors(encoder: keras.Model, images, batch_size: int = 256) -> np.ndarray:
    """Latent vectors of images, in inference mode: float32 NumPy array [N, latent_dim].

    Args:
      encoder: the encoder from `build_denoising_autoencoder` (or any image -> vector model).
      images: a NumPy array [N, H, W, 3] (float in [0, 1], or uint8, which is divided by 255), or a
        `tf.data.Dataset` of image batches or of tuples whose first item is the image batch (e.g.
        ``(images, ok)`` batches of ``labelled.eval_dataset``; the other items are ignored, so keep
        the flags yourself if some files may not decode, or use `probes.run_in_order`).
      batch_size: batch size for arrays (a dataset keeps its own batching).
    """
    @tf.function(reduce_retracing=True)
    def compute(batch):
        return encoder(batch, training=False)

    chunks = []
    if isinstance(images, tf.data.Dataset):
        for element in images:
            batch = element[0] if isinstance(element, (tuple, list)) else element
            chunks.append(compute(tf.cast(batch, tf.float32)).numpy())
    else:
        array = np.asarray(images)
        scale = 1.0 / 255.0 if array.dtype == np.uint8 else 1.0
        for start in range(0, len(array), int(batch_size)):
            batch = array[start:start + int(batch_size)].astype(np.float32) * np.float32(scale)
            chunks.append(compute(tf.constant(batch)).numpy())
    if not chunks:
        return np.zeros((0, int(encoder.outputs[0].shape[-1])), np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)
