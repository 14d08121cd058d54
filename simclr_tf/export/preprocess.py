"""Image preparation as TensorFlow ops, so that an exported graph does what the host path does.

The host path (`data.decode.read_image`, then `resize_image` to `--input_size`, then the evaluation
view) runs in Python with Pillow and OpenCV. A serving graph cannot call either, so this module
rebuilds each step from TensorFlow ops and says how close each one gets (measured with Pillow 13,
OpenCV 5 and TensorFlow 2.21 on JPEG, PNG 8/16-bit grey/RGB/RGBA/palette, BMP, GIF and WebP):

* Decoding. JPEG goes through `tf.io.decode_jpeg(dct_method="INTEGER_ACCURATE")`: Pillow also uses
  libjpeg-turbo's accurate integer DCT with fancy chroma upsampling, and the pixels are identical.
  TensorFlow's default DCT ("INTEGER_FAST") differs from Pillow by up to 11 grey levels. Every other
  format goes through `tf.io.decode_image(channels=3, expand_animations=False)`: grey and palette
  images become RGB, alpha is dropped, a GIF gives its first frame, as in `read_image`; identical
  pixels except 16-bit PNGs (reduced to 8 bits slightly differently: at most 1 level).
  CMYK and progressive JPEGs decode identically too. Not replicated: EXIF orientation (Pillow's
  `exif_transpose`: send upright images), TIFF (TensorFlow has no decoder), and the host path's
  limit on decoded pixels (decompression bombs): cap the request size in the server instead.
* Resize to the input size. `resize_image` shrinks with OpenCV INTER_AREA when neither side grows
  and otherwise uses INTER_CUBIC. `tf.image.resize(method="area")` computes the same exact-area
  averages, and `tf.image.resize(method="bicubic")` does NOT match INTER_CUBIC (Keys a = -0.5
  against OpenCV's a = -0.75: up to 10 grey levels apart at edges), so `resize_like_host`
  implements OpenCV's cubic kernel itself (half-pixel centres, a = -0.75, replicated borders).
  The result is rounded to uint8 like OpenCV's. Both agree with OpenCV to within 1 grey level
  (OpenCV rounds its fixed-point arithmetic differently).
* Evaluation view and scaling to [0, 1]: the project's own TensorFlow code (`augment.eval_view`;
  for segmentation the bilinear whole-image resize of `data.segmentation.inference_dataset`), so
  identical ops.

Tolerance against the host path: a prepared value differs by at most 2/255 (one uint8 level after
the input-size resize, which the bicubic evaluation view can amplify by its overshoot, about 25%).
Measured: identical prepared images for the test PNGs of tests/test_export.py (shrunk, enlarged
and mixed);
isolated 1-level differences after the resize on images with hard pixel-level edges.
"""

import tensorflow as tf

from simclr_tf.data import augment
# The training pipeline's native decoder (one definition for both), re-exported by simclr_tf.export.
from simclr_tf.data.native_decode import decode_image_bytes  # noqa: F401

KINDS = ("classification", "segmentation", "encoder")

# OpenCV's INTER_CUBIC kernel parameter (imgproc/src/resize.cpp, interpolateCubic).
_OPENCV_CUBIC_A = -0.75


def size_pair(size, what="size"):
    """(height, width) of an int or a pair of positive ints; ValueError naming `what` otherwise."""
    try:
        pair = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an int or (height, width), got {size!r}") from None
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} must be an int or (height, width) of positive ints, got {size!r}")
    return pair


def check_kind(kind):
    """Returns `kind` if it is one of `KINDS`; ValueError otherwise."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return kind


def _opencv_cubic_taps(in_size, out_size):
    """Source indices [out, 4] and weights [out, 4] of OpenCV's INTER_CUBIC along one axis."""
    a = _OPENCV_CUBIC_A
    # float64 so positions of large images are exact; the weights are then used in float32.
    scale = tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)
    source = (tf.range(tf.cast(out_size, tf.float64)) + 0.5) * scale - 0.5
    base = tf.floor(source)
    t = source - base
    w0 = ((a * (t + 1.0) - 5.0 * a) * (t + 1.0) + 8.0 * a) * (t + 1.0) - 4.0 * a
    w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    w2 = ((a + 2.0) * (1.0 - t) - (a + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0
    weights = tf.stack([w0, w1, w2, 1.0 - w0 - w1 - w2], axis=1)
    # Replicated borders: taps outside the image read its first / last row.
    indices = tf.cast(base, tf.int32)[:, tf.newaxis] + tf.range(-1, 3)[tf.newaxis, :]
    indices = tf.clip_by_value(indices, 0, tf.cast(in_size, tf.int32) - 1)
    return indices, tf.cast(weights, tf.float32)


def _opencv_cubic_resize(image, size):
    """float32 [H, W, C] -> float32 [height, width, C], OpenCV INTER_CUBIC without rounding."""
    shape = tf.shape(image)
    # Separable: 4 gathered rows per output row, then 4 gathered columns per output column; no
    # dense [out, in] matrix, so a very wide source costs memory linear in its size.
    rows, row_weights = _opencv_cubic_taps(shape[0], size[0])
    image = tf.einsum("ok,okwc->owc", row_weights, tf.gather(image, rows, axis=0))
    cols, col_weights = _opencv_cubic_taps(shape[1], size[1])
    return tf.einsum("pk,hpkc->hpc", col_weights, tf.gather(image, cols, axis=1))


def resize_like_host(image, size):
    """Resizes a uint8 [H, W, 3] image to `size` as `data.decode.resize_image` does; uint8 out.

    Unchanged at the same size; exact-area averaging (OpenCV INTER_AREA) when neither side grows;
    OpenCV's bicubic kernel otherwise (also for the side that shrinks, as OpenCV does). Within 1
    grey level of OpenCV.
    """
    height, width = size_pair(size)
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    same = (shape[0] == height) & (shape[1] == width)
    shrinking = (shape[0] >= height) & (shape[1] >= width)

    def area():
        return tf.image.resize(tf.cast(image, tf.float32), (height, width), method="area")

    def cubic():
        return _opencv_cubic_resize(tf.cast(image, tf.float32), (height, width))

    def to_uint8(values):
        # Rounded half to even and saturated, like OpenCV's saturate_cast of its float results.
        return tf.cast(tf.clip_by_value(tf.round(values), 0.0, 255.0), tf.uint8)

    resized = tf.cond(same, lambda: tf.cast(image, tf.uint8),
                      lambda: to_uint8(tf.cond(shrinking, area, cubic)))
    return tf.ensure_shape(resized, [height, width, 3])


def prepare_image(image, input_size, crop_size, kind):
    """uint8 RGB [H, W, 3] -> float32 [crop_h, crop_w, 3] in [0, 1], what the network sees.

    The host path's steps as TensorFlow ops: `resize_like_host` to `input_size` (what reading a file
    list does), then for classification and encoder models `augment.eval_view` (whole-image bicubic
    resize at crop sides <= 32, else centre crop keeping 87.5% then bicubic), for segmentation
    models the whole image resized bilinearly to `crop_size` (no crop, so every pixel gets a
    prediction), as `data.segmentation.inference_dataset` does.
    """
    check_kind(kind)
    input_size = size_pair(input_size, "input_size")
    crop_size = size_pair(crop_size, "crop_size")
    image = resize_like_host(image, input_size)
    if kind != "segmentation":
        return augment.eval_view(image, crop_size)
    image = tf.image.convert_image_dtype(image, tf.float32)
    if crop_size != input_size:
        image = tf.clip_by_value(tf.image.resize(image, crop_size, method="bilinear"), 0.0, 1.0)
    return tf.ensure_shape(image, [*crop_size, 3])


def decode_and_prepare(image_bytes, input_size, crop_size, kind):
    """One encoded image (scalar string) -> (float32 [crop_h, crop_w, 3] in [0, 1], int32 [2]).

    The second value is the decoded image's original (height, width), which segmentation needs to
    map its label map back. This is the `serving_default` preprocessing of `export_saved_model`:
    `decode_image_bytes` then `prepare_image`. Against the host path (`decode.read_image`,
    `decode.resize_image` to `input_size`, then the evaluation view) a pixel differs by at most
    2/255 (module docstring: decoding is identical except EXIF orientation and 16-bit PNG rounding;
    the resize to `input_size` is within one uint8 level of OpenCV's). Plain TensorFlow ops: runs
    eagerly, inside a tf.function or in a tf.data map.
    """
    image = decode_image_bytes(image_bytes)
    original_size = tf.shape(image, out_type=tf.int32)[:2]
    return prepare_image(image, input_size, crop_size, kind), original_size
