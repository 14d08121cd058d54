"""Decoding image files of every supported format to 8-bit RGB arrays.

Why Pillow first and not `tf.io.decode_image`: a corrupt file must be skipped and reported, not
crash the run or train silently. Inside a tf.data graph a decode error cannot be caught per file,
OpenCV decodes a truncated JPEG without an error (grey bottom half), while Pillow raises. Pillow
also reads TIFF (TensorFlow cannot), GIF first frames, WebP, CMYK JPEG and returns the indices of
palette PNG label maps (TensorFlow and OpenCV return their colours). OpenCV is the fallback for
what Pillow cannot open (e.g. some 16-bit or float TIFFs) and does the resizing. Both release the
GIL while decoding, so a parallel tf.data map around these functions scales across cores. This is
the checked path: in tf.data graphs, the files TensorFlow's own decoders read to the same pixels are
decoded by them instead, and fall back to this path when they fail (`native_decode`).

Decompression bombs (a small file that decodes to billions of pixels) are refused before any pixel
is decoded, on every path: Pillow reads the size from the header and `read_image` /
`read_label_map` compare it with `max_pixels` (None: the process default, `DEFAULT_MAX_PIXELS` =
Pillow's own warning threshold unless `set_default_max_pixels` changed it). Files Pillow cannot
identify go to OpenCV only when `header_size` can read their size from their header first (PNG,
JPEG, BMP, GIF, TIFF, WebP, PNM/PAM/PFM, Radiance HDR, Sun raster); any other file is refused, since
OpenCV's own limit (OPENCV_IO_MAX_IMAGE_PIXELS, 2^30 by default) is read once when OpenCV is loaded,
usually by Keras before this module, and cannot follow `max_pixels`.
"""
import os
import re
import struct
import threading
import warnings

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS: about 9459 x 9459
# Effective only when OpenCV is not loaded yet (Keras loads it); `_fallback` checks the size itself anyway.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(DEFAULT_MAX_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from simclr_tf.data import storage  # noqa: E402

SUPPORTED_FORMATS = "JPEG, PNG (8/16-bit; grey, RGB, RGBA, palette), BMP, GIF (first frame), TIFF, WebP"


class ImageDecodeError(Exception):
    """A file that exists but cannot be decoded as an image."""


_default_max_pixels = DEFAULT_MAX_PIXELS
_pillow_limit_lock = threading.Lock()


def set_default_max_pixels(max_pixels):
    """Sets the limit that calls without `max_pixels` use (the tasks set it from --max_image_pixels, so
    that every read of a user's file in the process, figures and metrics included, has the same one)."""
    global _default_max_pixels
    _default_max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)


def pixel_limit(max_pixels=None):
    """The pixel limit a read with `max_pixels` applies (None: the process default)."""
    return _default_max_pixels if max_pixels is None else int(max_pixels)


def _subject(path, what):
    return path if what == "image" else f"{what} {path}"


def _too_large(path, width, height, limit, what="image"):
    return ImageDecodeError(f"cannot decode {_subject(path, what)}: it is {width}x{height} = {width * height:,} "
                            f"pixels, above the limit of {limit:,} pixels (a decompression bomb? raise the limit to read it)")


def _open_checked(path, max_pixels, what="image"):
    """Pillow's lazy open (header only) with the pixel limit checked before anything is decoded.

    Returns the opened image, or None when Pillow cannot identify the file. Raises ImageDecodeError
    for an image above `max_pixels` (None: the process default, see `set_default_max_pixels`).
    """
    limit = pixel_limit(max_pixels)
    # Pillow's own bomb check (an error at twice its limit) must not refuse what the caller allows.
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        with _pillow_limit_lock:
            Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS, limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check ourselves below
            # A URI's bytes are read into memory first (storage.open_binary); a local file by name.
            img = Image.open(storage.open_binary(path) if storage.is_uri(path) else path)
    except Image.DecompressionBombError as e:
        size = _header_size_of_file(path)
        if size is not None:
            raise _too_large(path, size[1], size[0], limit, what) from None
        raise ImageDecodeError(f"cannot decode {_subject(path, what)}: {e}") from None
    except Exception:  # UnidentifiedImageError, OSError...: not an image Pillow knows
        return None
    _check_size(img, path, limit, what)
    return img


def _check_size(img, path, limit, what):
    width, height = img.size
    if width * height > limit:
        img.close()
        raise _too_large(path, width, height, limit, what)


def read_image(path, max_pixels=None):
    """Reads an image file as a uint8 RGB array of shape [H, W, 3]; raises ImageDecodeError.

    OpenCV is asked only when Pillow cannot identify the file or convert its pixel format; a file
    Pillow identifies but cannot fully read (truncated, corrupt) is an error, never a guess. An image
    of more than `max_pixels` pixels (None: the process default) is refused before it is decoded.
    """
    limit = pixel_limit(max_pixels)
    img = _open_checked(path, limit)
    if img is None:
        return _fallback(path, "Pillow cannot identify the file", limit, size_checked=False)
    with img:
        try:
            img.seek(0)  # first frame of a GIF / multi-page TIFF
            _check_size(img, path, limit, "image")  # a frame may enlarge a GIF's canvas
            img.load()
        except ImageDecodeError:
            raise
        except Exception as e:
            raise ImageDecodeError(f"cannot decode {path}: {e}") from None
        try:
            return _to_rgb8(ImageOps.exif_transpose(img))
        except Exception as convert_error:
            return _fallback(path, convert_error, limit, size_checked=True)


def _fallback(path, pillow_error, limit, size_checked):
    """OpenCV's decode of a file Pillow could not read, refused above `limit` before decoding.

    `size_checked`: Pillow read the size from the header already (it identified the file but cannot
    convert its pixels); otherwise the size must come from `header_size`, or the file is refused.
    """
    try:
        data = np.frombuffer(storage.read_bytes(path), dtype=np.uint8)
    except Exception as e:  # noqa: BLE001  (unreadable: permissions, I/O error...)
        raise ImageDecodeError(f"cannot decode {path}: {e}") from None
    size = header_size(data[:_FALLBACK_HEADER_BYTES])
    if size is not None and size[0] * size[1] > limit:
        raise _too_large(path, size[1], size[0], limit)
    if size is None and not size_checked:
        reason = "empty file" if data.size == 0 else pillow_error
        raise ImageDecodeError(f"cannot decode {path}: {reason} (and its size cannot be read from a header OpenCV "
                               "would decode)")
    try:
        image = _read_with_opencv(data)
    except Exception as e:  # noqa: BLE001  (cv2.error and any conversion failure)
        raise ImageDecodeError(f"cannot decode {path}: {pillow_error}; OpenCV: {str(e).strip()[:200]}") from None
    if image is None:
        raise ImageDecodeError(f"cannot decode {path}: {pillow_error}")
    if image.shape[0] * image.shape[1] > limit:  # a header that lied about the size
        raise _too_large(path, image.shape[1], image.shape[0], limit)
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
    limit = pixel_limit(max_pixels)
    img = _open_checked(path, limit, what="label map")
    if img is None:
        raise ImageDecodeError(f"cannot decode label map {path}: not an image file")
    try:
        with img:
            img.seek(0)
            _check_size(img, path, limit, "label map")
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


def _read_with_opencv(data):
    """Fallback decoder of a file's bytes (uint8 array); returns uint8 RGB [H, W, 3] or None."""
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if image is None or image.size == 0:
        return None
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        values = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        image = np.clip(values * (255.0 if values.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[2]
    if channels in (1, 2):  # grey, grey + alpha
        image = np.repeat(image[..., :1], 3, axis=2)
    elif channels == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


# --- image size from the header, without decoding ------------------------------------------------

_HEADER_BYTES = 1 << 16  # enough for every header below (JPEG markers before SOF included, usually)
_FALLBACK_HEADER_BYTES = 1 << 22  # what the OpenCV fallback searches (large EXIF / ICC segments before a JPEG SOF)


def _header_size_of_file(path):
    try:
        with storage.open_binary(path) as f:
            return header_size(f.read(_HEADER_BYTES))
    except Exception:  # noqa: BLE001  (OSError, or a URI's file system error)
        return None


def header_size(data):
    """(height, width) read from the header of an encoded image (bytes or a uint8 array), or None when
    the format is not one of PNG, JPEG, BMP, GIF, TIFF, WebP, PNM/PAM/PFM, Radiance HDR, Sun raster or
    the header is damaged. Never decodes a pixel."""
    data = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    try:
        for reader in _HEADER_READERS:
            size = reader(data)
            if size is not None:
                height, width = (int(v) for v in size)
                return (height, width) if height > 0 and width > 0 else None
    except (struct.error, ValueError, IndexError):
        return None
    return None


def _png(data):
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    return None


def jpeg_header_segments(data):
    """(marker, segment payload) of every header segment of the JPEG `data`, up to its start of scan;
    ValueError where the stream stops being a marker sequence."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("not a JPEG marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: the header is over
            return
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        yield marker, data[pos + 4:pos + 2 + length]
        pos += 2 + length


def _jpeg(data):
    if data[:2] != b"\xff\xd8":
        return None
    try:
        for marker, segment in jpeg_header_segments(data):
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                height, width = struct.unpack(">HH", segment[1:5])
                return height, width
    except (ValueError, struct.error):
        return None
    return None


def _bmp(data):
    if data[:2] != b"BM":
        return None
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(height), abs(width)


def _gif(data):
    if data[:6] in (b"GIF87a", b"GIF89a"):
        width, height = struct.unpack("<HH", data[6:10])
        return height, width
    return None


def _tiff(data):
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None:
        return None
    ifd = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
    found = {}
    for i in range(count):
        entry = data[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            short = kind == 3  # SHORT, else LONG; left-justified in the value field either way
            found[tag] = struct.unpack(order + ("H" if short else "I"), entry[8:10] if short else entry[8:12])[0]
    return (found[257], found[256]) if len(found) == 2 else None


def _webp(data):
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk, body = data[12:16], data[20:]
    if chunk == b"VP8X":
        width = int.from_bytes(body[4:7], "little") + 1
        height = int.from_bytes(body[7:10], "little") + 1
        return height, width
    if chunk == b"VP8L" and body[:1] == b"\x2f":
        bits = int.from_bytes(body[1:5], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8 " and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", body[6:10])
        return height & 0x3FFF, width & 0x3FFF
    return None


_NUMBER = re.compile(rb"\s*(?:#[^\n]*\n\s*)*(\d+)")


def _pnm(data):
    if data[:1] != b"P" or data[1:2] not in (b"1", b"2", b"3", b"4", b"5", b"6", b"F", b"f", b"7"):
        return None
    if data[1:2] == b"7":  # PAM: WIDTH / HEIGHT lines before ENDHDR
        header = data[:data.find(b"ENDHDR")]
        width, height = (re.search(rb"\n\s*" + key + rb"\s+(\d+)", header) for key in (b"WIDTH", b"HEIGHT"))
        return (int(height.group(1)), int(width.group(1))) if width and height else None
    width = _NUMBER.match(data, 2)
    height = _NUMBER.match(data, width.end()) if width else None
    return (int(height.group(1)), int(width.group(1))) if height else None


def _hdr(data):
    if not (data.startswith(b"#?RADIANCE") or data.startswith(b"#?RGBE")):
        return None
    end = data.find(b"\n\n")
    if end < 0:
        return None
    line = data[end + 2:data.find(b"\n", end + 2)]
    match = re.match(rb"\s*([-+])([XY])\s+(\d+)\s+([-+])([XY])\s+(\d+)", line)
    if not match:
        return None
    first, second = int(match.group(3)), int(match.group(6))
    return (first, second) if match.group(2) == b"Y" else (second, first)


def _sun_raster(data):
    if data[:4] == b"\x59\xa6\x6a\x95":
        width, height = struct.unpack(">II", data[4:12])
        return height, width
    return None


_HEADER_READERS = (_png, _jpeg, _bmp, _gif, _tiff, _webp, _pnm, _hdr, _sun_raster)
