"""TensorFlow's decoders in the graph give the checked path's pixels, and only on the files they read
exactly; everything else (and anything they fail on) goes through the checked path, which skips and
lists undecodable files."""
import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simclr_tf.data import native_decode, sources
from simclr_tf.data.native_decode import BMP, CHECKED, GIF, JPEG, PNG, native_format
from simclr_tf.data.sources import FileImageSource, SubsetSource, load_tensors


def _image(height=23, width=31, seed=0):
    """Smooth colours with hard edges (JPEG and the resize both have something to get wrong)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], axis=2)
    image[::4, ::5] = rng.integers(0, 256, image[::4, ::5].shape)
    return image.astype(np.uint8)


def _encoded(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _exif_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _png_with_chunk(png, chunk, body):
    """`png` with one more chunk before IEND."""
    crc = struct.pack(">I", zlib.crc32(chunk + body))
    return png[:-12] + struct.pack(">I", len(body)) + chunk + body + crc + png[-12:]


def _gif_first_frame_transparent():
    buffer = io.BytesIO()
    Image.fromarray(_image()).quantize(64).save(buffer, format="GIF", transparency=0)
    return buffer.getvalue()


RGB, GREY = _image(), _image()[..., 0]
# name -> (encoded bytes, the path native_format must choose)
FILES = {
    "rgb.png": (_encoded(Image.fromarray(RGB), "PNG"), PNG),
    "grey.png": (_encoded(Image.fromarray(GREY), "PNG"), PNG),
    "grey_alpha.png": (_encoded(Image.fromarray(np.dstack([GREY, 255 - GREY]), "LA"), "PNG"), PNG),
    "rgba.png": (_encoded(Image.fromarray(np.dstack([RGB, GREY])), "PNG"), PNG),
    "q90.jpg": (_encoded(Image.fromarray(RGB), "JPEG", quality=90), JPEG),
    "progressive.jpg": (_encoded(Image.fromarray(RGB), "JPEG", quality=90, progressive=True), JPEG),
    "grey.jpg": (_encoded(Image.fromarray(GREY), "JPEG"), JPEG),
    "upright_exif.jpg": (_encoded(Image.fromarray(RGB), "JPEG", exif=_exif_orientation(1)), JPEG),
    "rgb24.bmp": (_encoded(Image.fromarray(RGB), "BMP"), BMP),
    "rgbx32.bmp": (_encoded(Image.fromarray(np.dstack([RGB, GREY])), "BMP"), BMP),
    "first_frame.gif": (_encoded(Image.fromarray(RGB).quantize(200), "GIF", save_all=True,
                                 append_images=[Image.fromarray(255 - RGB).quantize(200)]), GIF),
    # The checked path's files:
    "rotated_exif.jpg": (_encoded(Image.fromarray(RGB), "JPEG", exif=_exif_orientation(6)), CHECKED),
    "cmyk.jpg": (_encoded(Image.fromarray(RGB).convert("CMYK"), "JPEG"), CHECKED),
    "palette.png": (_encoded(Image.fromarray(RGB).quantize(16), "PNG"), CHECKED),
    "rgb16.png": (cv2.imencode(".png", RGB[..., ::-1].astype(np.uint16) * 257)[1].tobytes(), CHECKED),
    "grey16.png": (cv2.imencode(".png", GREY.astype(np.uint16) * 257)[1].tobytes(), CHECKED),
    "transparent_colour.png": (_png_with_chunk(_encoded(Image.fromarray(RGB), "PNG"), b"tRNS",
                                               b"\x00\x01\x00\x02\x00\x03"), CHECKED),
    "exif_chunk.png": (_png_with_chunk(_encoded(Image.fromarray(RGB), "PNG"), b"eXIf",
                                       _exif_orientation(3).removeprefix(b"Exif\x00\x00")), CHECKED),
    "transparent.gif": (_gif_first_frame_transparent(), CHECKED),
    "rgb.tiff": (_encoded(Image.fromarray(RGB), "TIFF"), CHECKED),
    "lossless.webp": (_encoded(Image.fromarray(RGB), "WEBP", lossless=True), CHECKED),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("native")
    paths = {}
    for name, (data, _) in FILES.items():
        paths[name] = str(folder / name)
        (folder / name).write_bytes(data)
    return paths


def _graph_loads(source, indices=None):
    """Every example of `source` through `load_tensors` in a parallel tf.data map, in order."""
    indices = range(len(source)) if indices is None else indices
    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(list(indices), np.int64)).map(
        lambda i: load_tensors(source, i), num_parallel_calls=4, deterministic=True)
    return list(dataset.as_numpy_iterator())


@pytest.mark.parametrize("name", sorted(FILES))
def test_native_format_chooses_the_path(files, name):
    with open(files[name], "rb") as f:
        assert native_format(f.read()) == FILES[name][1]


@pytest.mark.parametrize("size", [(23, 31), (16, 16), (40, 44), (30, 20)])  # as decoded, shrunk, enlarged, mixed
def test_both_paths_give_the_same_pixels(files, size):
    names = sorted(FILES)
    source = FileImageSource([files[n] for n in names], size, keep_original_size=True)
    for name, graph in zip(names, _graph_loads(source)):
        checked = source.load(names.index(name))
        assert graph[-1] and checked[-1], name
        np.testing.assert_array_equal(graph[1], checked[1], err_msg=name)
        # JPEG: Pillow and TensorFlow both run libjpeg-turbo's accurate integer DCT with fancy
        # upsampling; identical here, and the 1-level allowance covers another libjpeg build.
        tolerance = 1 if name.endswith(".jpg") else 0
        assert np.abs(graph[0].astype(int) - checked[0]).max() <= tolerance, name
    assert not source.skip_log.skipped


def test_native_files_do_not_touch_the_checked_path(files, monkeypatch):
    def no_pillow(*args, **kwargs):
        raise RuntimeError("checked path used")

    monkeypatch.setattr(sources, "read_image", no_pillow)
    names = sorted(FILES)
    source = FileImageSource([files[n] for n in names], (16, 16))
    oks = [example[-1] for example in _graph_loads(source)]
    assert oks == [FILES[n][1] != CHECKED for n in names]
    assert sorted(source.skip_log.skipped) == sorted(files[n] for n in names if FILES[n][1] == CHECKED)
    # and without native decoding, every file is read by the checked path
    checked_only = FileImageSource([files[n] for n in names], (16, 16), native_decoding=False)
    assert not any(example[-1] for example in _graph_loads(checked_only))


def _corrupt_idat(png):
    """A PNG whose chunk structure is intact (IEND present) but whose image data is not zlib."""
    start = png.index(b"IDAT") - 4
    length = struct.unpack(">I", png[start:start + 4])[0]
    body = bytes(length)
    return png[:start + 8] + body + struct.pack(">I", zlib.crc32(b"IDAT" + body)) + png[start + 12 + length:]


def _cut(data, kept):
    return data[:int(len(data) * kept)]


@pytest.mark.parametrize("kept", [0.4, 0.8, 0.97])
def test_truncated_and_corrupt_files_are_skipped_and_listed(files, tmp_path, kept):
    good = files["rgb.png"]
    broken = {f"cut_{name}": _cut(FILES[name][0], kept)
              for name in ("rgb.png", "q90.jpg", "progressive.jpg", "rgb24.bmp", "first_frame.gif")}
    broken["bad_idat.png"] = _corrupt_idat(FILES["rgb.png"][0])
    broken["empty.jpg"] = b""
    paths = []
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
        paths += [good, str(tmp_path / name)]
    # The corrupt PNG passes the header check: TensorFlow's decoder fails on it in the graph.
    assert native_format(broken["bad_idat.png"]) == PNG
    # What the checked path decides (a cut inside an animated GIF's second frame or inside a PNG's
    # last CRC still leaves a readable image) is what the graph must decide.
    checked = [bool(e[-1]) for e in map(FileImageSource(paths, (16, 16)).load, range(len(paths)))]
    assert checked[0::2] == [True] * len(broken)
    assert not any(ok for ok, path in zip(checked, paths) if path.endswith((".jpg", ".bmp", "idat.png")))
    source = FileImageSource(paths, (16, 16))
    examples = _graph_loads(source)
    assert [bool(e[-1]) for e in examples] == checked
    np.testing.assert_array_equal(examples[0][0], source.load(0)[0])
    assert not examples[3][0].any()  # blank stand-in of the cut JPEG
    assert sorted(source.skip_log.skipped) == sorted(p for p, ok in zip(paths, checked) if not ok)


def test_a_file_tensorflow_fails_on_is_read_by_the_checked_path(files, monkeypatch):
    def failing_decoder(data):
        return tf.io.decode_png(tf.constant(b"not a png"), channels=3)

    monkeypatch.setattr(native_decode, "decode_image_bytes", failing_decoder)
    source = FileImageSource([files["rgb.png"], files["q90.jpg"]], (16, 16))
    examples = _graph_loads(source)
    assert all(e[-1] for e in examples) and not source.skip_log.skipped
    for i, example in enumerate(examples):
        np.testing.assert_array_equal(example[0], source.load(i)[0])


def test_the_pixel_limit_holds_before_native_decoding(files):
    limit = 23 * 31 - 1
    assert native_format(FILES["rgb.png"][0], max_pixels=limit) == CHECKED
    assert native_format(FILES["rgb.png"][0], max_pixels=limit + 1) == PNG
    source = FileImageSource([files["rgb.png"], files["q90.jpg"]], (16, 16), max_pixels=limit)
    assert [e[-1] for e in _graph_loads(source)] == [False, False]
    assert all("above the limit" in reason for reason in source.skip_log.skipped.values())


def test_subsets_decode_natively_in_the_graph(files, monkeypatch):
    source = FileImageSource([files["rgb.tiff"], files["rgb.png"], files["q90.jpg"]], (16, 16))
    subset = SubsetSource(source, [2, 1])
    expected = [source.load(2)[0], source.load(1)[0]]
    monkeypatch.setattr(sources, "read_image", lambda *a, **k: 1 / 0)
    examples = _graph_loads(subset)
    assert all(e[-1] for e in examples)
    for example, image in zip(examples, expected):
        np.testing.assert_array_equal(example[0], image)
