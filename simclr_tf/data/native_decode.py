"""TensorFlow's own image decoders, for the files they read exactly as `decode.read_image` does.

`decode.read_image` (Pillow, OpenCV) is the checked path: it reads every format of the contract,
refuses decompression bombs from the header and raises on a damaged file, so that the file is
skipped and listed. It runs in Python, one image at a time. TensorFlow's decoders run in the graph
without the GIL, but inside a tf.data graph a decode error cannot be caught like an exception, and
they differ from the checked path on some files (EXIF orientation, TIFF, palette indices, 16-bit
depth reduction). So each file is classified from its bytes first (`native_format`, a pure function
of the bytes that are then decoded, so there is no window between check and decode):

* native: 8-bit baseline/extended/progressive JPEG with 1 or 3 components and no EXIF or XMP
  orientation other than 1; 8-bit non-interlaced grey, grey+alpha, RGB or RGBA PNG without tRNS,
  EXIF, XMP or animation chunks; uncompressed 24/32-bit BMP; GIF whose first frame fills the canvas
  without transparency. On these `decode_image_bytes` gives Pillow's pixels exactly (JPEG through
  libjpeg-turbo's accurate integer DCT and fancy upsampling, as Pillow; tests/test_native_decode.py);
* checked: everything else, every image above the pixel limit (so the limit is still enforced from
  the header, before any pixel is decoded), and every file whose header cannot be walked.

`sources.FileImageSource` decodes native files in the graph and falls back to the checked path,
element by element, when TensorFlow's decoder fails on a file that passed this check (truncated or
corrupt data): the checked path then reports it like any undecodable file.
"""
import re
import struct

import tensorflow as tf

from simclr_tf.data.decode import header_size, jpeg_header_segments, pixel_limit

CHECKED, JPEG, PNG, BMP, GIF = -1, 0, 1, 2, 3

_JPEG_SOF_NATIVE = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman; 0xC3+ are rarer codings
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
# Text chunks Pillow's getexif() reads an orientation from (XMP, ImageMagick's raw EXIF profile).
_PNG_ORIENTATION_TEXT = (b"XML:com.adobe.xmp", b"Raw profile type exif")
_PNG_CHECKED_CHUNKS = (b"tRNS", b"eXIf", b"acTL")  # transparency colour, orientation, animation


def decode_image_bytes(image_bytes):
    """Decodes one encoded image (a scalar string tensor) to uint8 RGB [H, W, 3].

    JPEG with the accurate integer DCT (identical to Pillow); PNG, BMP, GIF (first frame) and WebP
    with `tf.io.decode_image`. An undecodable string raises InvalidArgumentError when the graph
    runs: in a serving batch, that fails the whole request.
    """
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    # tf.cond, not Python `if`: the format is only known when the graph runs.
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8))
    return tf.ensure_shape(image, [None, None, 3])


def native_format(data, max_pixels=None):
    """JPEG, PNG, BMP or GIF when TensorFlow's decoder reads the encoded image `data` (bytes) to the
    same pixels as `decode.read_image` and it is within the pixel limit (`max_pixels`, None: the
    process default); CHECKED otherwise. Reads headers only, never a pixel."""
    data = bytes(data)
    size = header_size(data[:1 << 16])
    if size is None or size[0] * size[1] > pixel_limit(max_pixels):
        return CHECKED
    try:
        for kind, reader in ((JPEG, _jpeg_native), (PNG, _png_native), (BMP, _bmp_native), (GIF, _gif_native)):
            verdict = reader(data)
            if verdict is not None:
                return kind if verdict else CHECKED
    except (struct.error, ValueError, IndexError):  # a damaged header: the checked path says why
        return CHECKED
    return CHECKED


def _jpeg_native(data):
    """None: not a JPEG; else whether it is native (see module doc)."""
    if data[:2] != b"\xff\xd8":
        return None
    frame = None
    for marker, segment in jpeg_header_segments(data):
        if marker in _JPEG_SOF_NATIVE:
            frame = (segment[0], segment[5])  # sample precision, components
        elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return False
        elif marker == 0xE1 and segment.startswith(b"Exif\x00\x00"):
            if _exif_orientation(segment[6:]) not in (None, 1):
                return False
        elif marker == 0xE1 and segment.startswith(_XMP) and b"tiff:Orientation" in segment:
            return False  # Pillow's exif_transpose also follows an XMP orientation
    return frame is not None and frame[0] == 8 and frame[1] in (1, 3)  # CMYK / 12-bit: the checked path


def _exif_orientation(tiff):
    """The Orientation tag of IFD0 of an EXIF (TIFF) block, or None without one."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        raise ValueError("not a TIFF header")
    ifd = struct.unpack(order + "I", tiff[4:8])[0]
    count = struct.unpack(order + "H", tiff[ifd:ifd + 2])[0]
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i:ifd + 14 + 12 * i]
        if struct.unpack(order + "H", entry[:2])[0] == 0x0112:
            return struct.unpack(order + "H", entry[8:10])[0]
    return None


def _png_native(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    bit_depth, colour_type, interlace = data[24], data[25], data[28]
    # Palette: the checked path's RGB of the palette is the same, but palette label maps and tRNS
    # palettes are the checked path's business; 16-bit: TensorFlow rounds to 8 bits differently.
    if bit_depth != 8 or colour_type not in (0, 2, 4, 6) or interlace != 0:
        return False
    # Walk every chunk: Pillow also reads orientation chunks that follow the image data.
    pos = 8
    while pos + 8 <= len(data):
        length, chunk = struct.unpack(">I", data[pos:pos + 4])[0], data[pos + 4:pos + 8]
        if chunk in _PNG_CHECKED_CHUNKS:
            return False
        if chunk in (b"tEXt", b"zTXt", b"iTXt") and data[pos + 8:pos + 8 + length].split(b"\x00", 1)[0] in \
                _PNG_ORIENTATION_TEXT:
            return False
        if chunk == b"IEND":
            return True
        pos += 12 + length
    return False  # truncated before IEND: the checked path reports it


def _bmp_native(data):
    if data[:2] != b"BM":
        return None
    offset, header = struct.unpack("<II", data[10:18])
    if header < 40:  # OS/2 headers
        return False
    width, height, planes, bits, compression = struct.unpack("<iiHHI", data[18:34])
    rows = (bits * width + 31) // 32 * 4
    return (planes == 1 and bits in (24, 32) and compression == 0 and width > 0
            and offset + rows * abs(height) <= len(data))


def _gif_native(data):
    if data[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    width, height, flags = struct.unpack("<HHB", data[6:11])
    has_table = bool(flags & 0x80)
    pos = 13 + ((3 << ((flags & 7) + 1)) if has_table else 0)
    while pos < len(data):
        block = data[pos]
        if block == 0x21:  # extension: label, then sub-blocks
            if data[pos + 1] == 0xF9 and data[pos + 3] & 1:  # graphic control with a transparent colour
                return False
            pos += 2
            while data[pos]:
                pos += 1 + data[pos]
            pos += 1
        elif block == 0x2C:  # the first frame
            left, top, frame_width, frame_height, frame_flags = struct.unpack("<HHHHB", data[pos + 1:pos + 10])
            return ((left, top, frame_width, frame_height) == (0, 0, width, height)
                    and (has_table or bool(frame_flags & 0x80)))
        else:
            return False
    return False
