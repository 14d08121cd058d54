"""Decoding image files of every supported format to 8-bit RGB arrays.

Why Pillow first and not `tf.io.decode_image`: a corrupt file must be skipped and reported, not
crash the run or train silently. Inside a tf.data graph a decode error cannot be caught per file,
OpenCV decodes a truncated JPEG without an error (grey bottom half), while Pillow raises. Pillow
also reads TIFF (TensorFlow cannot), GIF first frames, WebP, CMYK JPEG and returns the indices of
palette PNG label maps (TensorFlow and OpenCV return their colours). OpenCV is the fallback for
what Pillow cannot open (e.g. some 16-bit or float TIFFs) and does the resizing. Both release the
GIL while decoding, so a parallel tf.data map around these functions scales across cores.

Decompression bombs (a small file that decodes to billions of pixels) are refused before any pixel
is decoded: Pillow reads the size from the header and `read_image` compares it with `max_pixels`
(default `DEFAULT_MAX_PIXELS`, Pillow's own warning threshold). Files only OpenCV can read have no
header check here; OpenCV's own limit, OPENCV_IO_MAX_IMAGE_PIXELS, is set to the same default
before OpenCV first decodes (it reads the variable once).
"""
import os
import warnings

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS: about 9459 x 9459
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

SUPPORTED_FORMATS = "JPEG, PNG (8/16-bit; grey, RGB, RGBA, palette), BMP, GIF (first frame), TIFF, WebP"


class ImageDecodeError(Exception):
    """A file that exists but cannot be decoded as an image."""


def _open_checked(path, max_pixels):
    """Pillow's lazy open (header only) with the pixel limit checked before anything is decoded.

    Returns the opened image, or None when Pillow cannot identify the file. Raises ImageDecodeError
    for an image above `max_pixels` (None: `DEFAULT_MAX_PIXELS`).
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    # Pillow's own bomb check (an error at twice its limit) must not refuse what the caller allows.
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check ourselves below
            img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"cannot decode {path}: {e}") from None
    except Exception:  # UnidentifiedImageError, OSError...: not an image Pillow knows
        return None
    width, height = img.size
    if width * height > limit:
        img.close()
        raise ImageDecodeError(f"cannot decode {path}: it is {width}x{height} = {width * height:,} pixels, above "
                               f"the limit of {limit:,} pixels (a decompression bomb, or raise the limit)")
    return img


def read_image(path, max_pixels=None):
    """Reads an image file as a uint8 RGB array of shape [H, W, 3]; raises ImageDecodeError.

    OpenCV is asked only when Pillow cannot identify the file or convert its pixel format; a file
    Pillow identifies but cannot fully read (truncated, corrupt) is an error, never a guess. An image
    of more than `max_pixels` pixels (None: `DEFAULT_MAX_PIXELS`) is refused before it is decoded.
    """
    img = _open_checked(path, max_pixels)
    if img is None:
        return _fallback(path, "Pillow cannot identify the file")
    with img:
        try:
            img.seek(0)  # first frame of a GIF / multi-page TIFF
            img.load()
        except Exception as e:
            raise ImageDecodeError(f"cannot decode {path}: {e}") from None
        try:
            return _to_rgb8(ImageOps.exif_transpose(img))
        except Exception as convert_error:
            return _fallback(path, convert_error)


def _fallback(path, pillow_error):
    image = _read_with_opencv(path)
    if image is None:
        raise ImageDecodeError(f"cannot decode {path}: {pillow_error}")
    return image


def read_image_resized(path, size, max_pixels=None):
    """Reads an image and resizes it to `size` = (height, width); uint8 RGB [height, width, 3]."""
    return resize_image(read_image(path, max_pixels), size)


def resize_image(image, size, interpolation=None):
    """Resizes an [H, W, C] array to (height, width): area averaging to shrink, bicubic to enlarge."""
    height, width = size
    if image.shape[0] == height and image.shape[1] == width:
        return image
    if interpolation is None:
        shrinking = image.shape[0] >= height and image.shape[1] >= width
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    return resized.reshape(height, width, *image.shape[2:])


def resize_label_map(label, size):
    """Nearest-neighbour resize of a [H, W] label map to (height, width), pixel-centre aligned."""
    height, width = size
    if label.shape == (height, width):
        return label
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def read_label_map(path, max_pixels=None):
    """Reads a label map as a uint8 [H, W] array of class indices.

    Single-channel PNGs give their values; palette PNGs give their palette INDICES (the classes),
    not their colours. Anything else (RGB) is rejected: colours are not class indices. A map of
    more than `max_pixels` pixels is refused before it is decoded (see `read_image`).
    """
    img = _open_checked(path, max_pixels)
    if img is None:
        raise ImageDecodeError(f"cannot decode label map {path}: not an image file")
    try:
        with img:
            img.load()
            if img.mode in ("L", "P"):
                return np.asarray(img, dtype=np.uint8).copy()
            if img.mode in ("I", "I;16", "I;16B", "I;16L"):
                values = np.asarray(img)
                if values.max(initial=0) > 255:
                    raise ImageDecodeError(f"label map {path} holds values above 255")
                return values.astype(np.uint8)
            raise ImageDecodeError(
                f"label map {path} is a {img.mode} image; expected a single-channel or palette PNG "
                "of class indices")
    except ImageDecodeError:
        raise
    except Exception as e:
        raise ImageDecodeError(f"cannot decode label map {path}: {e}") from None


def _to_rgb8(img):
    """Converts any Pillow mode to uint8 RGB, scaling high bit depths instead of clipping them."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(img).astype(np.float64)
        scale = 65535.0 if img.mode.startswith("I") else 1.0
        if img.mode == "I" and values.max(initial=0) <= 255:
            scale = 255.0
        grey = np.clip(values / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Alpha is dropped, as TensorFlow's decoders do with channels=3.
        img = img.convert("RGBA")
        rgba = np.asarray(img)
        return np.ascontiguousarray(rgba[..., :3])
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _read_with_opencv(path):
    """Fallback decoder; returns uint8 RGB or None."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image.astype(np.float32) * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)
