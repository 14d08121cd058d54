"""Hostile and damaged input (issue 9): label typos, decompression bombs on every decoder path, decode
failures anywhere in the pipeline, crafted CIFAR-10 pickles. Each class of failure must end as a
UserError naming flag, file and line (exit 2 in main.py) or as a skipped, listed file; never a
traceback, never unbounded memory.

Bombs are real 20000x20000 files of ~50 KB written with zlib; the tests check what is refused (and
that the refusal names the size), never memory or time.
"""
import os
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from simclr_tf.data import decode, filelist, segmentation
from simclr_tf.data.cifar10 import load_cifar10
from simclr_tf.data.decode import ImageDecodeError, read_image, read_label_map
from simclr_tf.data.safe_pickle import UnsafePickleError, load_restricted
from simclr_tf.data.sources import CachedSource, FileImageSource, LabelMapPairSource, sample_images
from simclr_tf.errors import UserError
from tasks import embed, labelled_data

from conftest import parsed, write_fake_cifar10

BOMB_SIDE = 20000  # 400,000,000 pixels: above the default limit (89,478,485) and Pillow's own (2x that)


def write_png(path, width, height, palette=False):
    """A 1-bit PNG (grey, or palette: a valid label map) of any size, all zeros, compressed row by row."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    row = b"\x00" + bytes((width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 3 if palette else 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + (chunk(b"PLTE", bytes(6)) if palette else b"")
                + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return str(path)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    image = write_png(folder / "bomb.png", BOMB_SIDE, BOMB_SIDE)
    label_map = write_png(folder / "bomb_map.png", BOMB_SIDE, BOMB_SIDE, palette=True)
    # Radiance HDR: a format Pillow cannot identify, so only OpenCV could decode it.
    hdr = folder / "bomb.hdr"
    hdr.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n" % (BOMB_SIDE, BOMB_SIDE) + bytes(64))
    small = folder / "small.png"
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(small)
    small_map = folder / "small_map.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(small_map)
    return {"image": image, "label_map": label_map, "hdr": str(hdr), "small": str(small),
            "small_map": str(small_map), "folder": str(folder)}


TOO_LARGE = f"{BOMB_SIDE}x{BOMB_SIDE} = 400,000,000 pixels, above the limit of"


# --- 1 and 10: labels are plain decimal integers; a typo cannot make 10^12 classes -------------------------

def _image(path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize("label", ["1_0", "+1", "\u0663", "1e3", "0x1", "1.0", "\uff11"])
def test_labels_are_ascii_decimal_digits_only(tmp_path, label):
    _image(tmp_path / "a.png")
    (tmp_path / "l.txt").write_text(f"a.png,0\na.png,{label}\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"--train_file_path: .*l\.txt(.|\n)*line 2: label .* is not an integer"):
        filelist.read_file_list(str(tmp_path / "l.txt"), filelist.CLASSIFICATION)
    # In an image list the trailing field is not a label then: the line stays an unlabelled image.
    assert filelist.read_file_list(str(tmp_path / "l.txt"), filelist.IMAGES).labels == [0, None]


def test_labels_beyond_int64_or_thousands_of_digits_are_malformed_lines_not_tracebacks(tmp_path):
    _image(tmp_path / "a.png")
    for label in ("99999999999999999999", "9" * 5000):
        (tmp_path / "l.txt").write_text(f"a.png,1\na.png,{label}\n")
        for kind in (filelist.CLASSIFICATION, filelist.IMAGES):
            with pytest.raises(UserError, match="line 2: label 9+(\\.\\.\\.)? is too large for a class index"):
                filelist.read_file_list(str(tmp_path / "l.txt"), kind)
        with pytest.raises(UserError, match="line 2: label 9+(\\.\\.\\.)? is outside \\[0, 4\\]"):
            filelist.read_file_list(str(tmp_path / "l.txt"), filelist.CLASSIFICATION, num_classes=5)


def _labelled_list(tmp_path, labels, name="train.txt"):
    for i in range(len(labels)):
        _image(tmp_path / f"img{i}.png")
    path = tmp_path / name
    path.write_text("# header\n" + "".join(f"img{i}.png,{label}\n" for i, label in enumerate(labels)))
    return str(path)


def test_without_num_classes_a_label_typo_is_refused_naming_its_line(tmp_path):
    labels = [0, 1, 2, 3] * 4
    labels[14] = 1_000_000_000  # line 16 (a comment line first)
    train = _labelled_list(tmp_path, labels)
    with parsed(["--task=classification", f"--train_file_path={train}"]) as flag_values:
        with pytest.raises(UserError) as info:
            labelled_data.load_classification_data(flag_values, (32, 32))
    message = str(info.value)
    assert f"--train_file_path={train}, line 16: label 1000000000 would make 1,000,000,001 classes" in message
    assert "only 5 distinct values" in message and "--num_classes" in message
    # A sparse but plausible labelling (4 labels, largest 80) is accepted: 10 x 4 + 100 = 140 classes at most.
    labels[14] = 80
    train = _labelled_list(tmp_path, labels, "ok.txt")
    with parsed(["--task=classification", f"--train_file_path={train}"]) as flag_values:
        assert labelled_data.load_classification_data(flag_values, (32, 32)).num_classes == 81


def test_the_one_class_count_check_covers_knn_labels_and_embed(tmp_path):
    """The kNN monitor's count comes from labels of image-list lines (not range checked) and labelled lists;
    embed sizes t-SNE class names by its labels: both go through labelled_data.checked_class_count."""
    labels = [0, 1] * 4 + [5_000_000]
    listed = filelist.read_file_list(_labelled_list(tmp_path, labels), filelist.IMAGES, flag_name="--train_file_path")
    train = labelled_data.labels_in_image_list(listed, None, "--train_file_path")
    val = labelled_data.LabelledImages(None, np.array([0, 1, 1]), "--val_file_path=v.txt", np.array([1, 2, 3]))
    with pytest.raises(UserError, match=r"--train_file_path=.*train\.txt, line 10: label 5000000 would make"):
        labelled_data.checked_class_count([train, val])
    with pytest.raises(UserError, match=r"line 10: label 5000000 is outside \[0, 9\] \(--num_classes=10\)"):
        labelled_data.checked_class_count([train, val], num_classes=10)
    assert labelled_data.checked_class_count([val, None]) == 2
    with pytest.raises(UserError, match=r"--test_file_path=.*train\.txt, line 10: label 5000000 would make"):
        embed._labels(listed, None)
    # An image list with negative labels (pretraining's "unlabelled") gives no labels, not an error.
    listed.entries[0] = filelist.ListEntry(listed.entries[0].path, -1, 2)
    assert labelled_data.labels_in_image_list(listed, None, "--train_file_path") is None


# --- 2: decompression bombs are refused before decoding, on every path --------------------------------------

def test_every_decoder_path_refuses_a_bomb_by_its_header(bombs, monkeypatch):
    for read in (read_image, read_label_map):
        with pytest.raises(ImageDecodeError, match=TOO_LARGE):  # above Pillow's own limit too: same message
            read(bombs["image"] if read is read_image else bombs["label_map"])
    with pytest.raises(ImageDecodeError, match=TOO_LARGE):  # a format only OpenCV reads
        read_image(bombs["hdr"])
    # A lower limit applies below Pillow's: the 8x8 image passes 64, not 63.
    assert read_image(bombs["small"], max_pixels=64).shape == (8, 8, 3)
    with pytest.raises(ImageDecodeError, match="8x8 = 64 pixels, above the limit of 63"):
        read_image(bombs["small"], max_pixels=63)
    with pytest.raises(ImageDecodeError, match="label map .*8x8 = 64 pixels, above the limit of 63"):
        read_label_map(bombs["small_map"], max_pixels=63)
    # The OpenCV fallback for a PNG Pillow could not identify reads the size from the header itself
    # (OpenCV's own limit is fixed when Keras loads it and would let 400 megapixels through).
    real_open = Image.open

    def unidentified(path, *args, **kwargs):
        if str(path).endswith(".png"):
            raise Image.UnidentifiedImageError(path)
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(Image, "open", unidentified)
    with pytest.raises(ImageDecodeError, match=TOO_LARGE):
        read_image(bombs["image"])
    np.testing.assert_array_equal(read_image(bombs["small"]), np.full((8, 8, 3), 100, np.uint8))  # via OpenCV
    with pytest.raises(ImageDecodeError, match="8x8 = 64 pixels, above the limit of 63"):
        read_image(bombs["small"], max_pixels=63)


def test_the_process_default_limit_follows_the_flag(tmp_path):
    """Reads that take no limit (figures, metrics) use --max_image_pixels once a task built a source."""
    from tasks.image_files import image_source
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "ten.png")
    path = str(tmp_path / "ten.png")
    try:
        with parsed(["--task=predict", "--max_image_pixels=64"]) as flag_values:
            source = image_source(flag_values, [path], (8, 8))
        assert not source.load(0)[-1]
        with pytest.raises(ImageDecodeError, match="10x10 = 100 pixels, above the limit of 64"):
            read_label_map(path)
    finally:
        decode.set_default_max_pixels(None)
    assert read_label_map(path).shape == (10, 10)


def test_header_sizes_of_the_formats_opencv_would_decode(tmp_path):
    import cv2
    image = np.zeros((5, 7, 3), np.uint8)
    for name in ("a.png", "a.jpg", "a.bmp", "a.tiff", "a.webp", "a.ppm", "a.pgm", "a.pam", "a.ras", "a.gif"):
        path = str(tmp_path / name)
        if name.endswith(".gif"):
            Image.fromarray(image).save(path)
        else:
            assert cv2.imwrite(path, image[..., :1] if name.endswith(".pgm") else image), name
        with open(path, "rb") as f:
            assert decode.header_size(f.read()) == (5, 7), name
    for name in ("a.hdr", "a.pfm"):
        path = str(tmp_path / name)
        assert cv2.imwrite(path, image.astype(np.float32)), name
        with open(path, "rb") as f:
            assert decode.header_size(f.read()) == (5, 7), name
        assert read_image(path).shape == (5, 7, 3)  # Pillow cannot identify these: OpenCV decodes them
    assert decode.header_size(b"not an image") is None and decode.header_size(b"\x89PNG\r\n\x1a\n") is None


def test_bombs_are_skipped_and_listed_in_training_sources_and_label_map_checks(bombs, tmp_path):
    source = FileImageSource([bombs["small"], bombs["image"]], (8, 8))
    assert [bool(source.load(i)[-1]) for i in range(2)] == [True, False]
    assert TOO_LARGE in source.skip_log.skipped[bombs["image"]]
    pairs = LabelMapPairSource([bombs["small"]], [bombs["label_map"]], (8, 8))
    image, label, ok = pairs.load(0)
    assert not ok and (label == 255).all() and TOO_LARGE in pairs.skip_log.skipped[bombs["small"]]
    # Before segmentation training, every label map is checked: the bomb is a problem naming its line.
    (tmp_path / "seg.txt").write_text(f"{bombs['small']},{bombs['small_map']}\n{bombs['small']},{bombs['label_map']}\n")
    seg_list = filelist.read_file_list(str(tmp_path / "seg.txt"), filelist.SEGMENTATION)
    with pytest.raises(UserError, match=f"line 2: cannot decode label map .*bomb_map.png: it is {TOO_LARGE}"):
        segmentation.check_label_maps(seg_list, 2, "--train_file_path")
    # The header-only size of a bomb image decodes nothing (None: checked when decoded, then skipped).
    assert segmentation.image_size_from_header(bombs["image"]) is None


# --- 3: a decode that fails for any reason is a skipped file, wherever it is read ---------------------------

def test_any_exception_of_a_decoder_is_a_skipped_file_in_every_source(bombs, monkeypatch):
    from simclr_tf.data import sources

    def broken(path, max_pixels=None):
        if "small" in path:
            raise MemoryError("simulated")
        return np.zeros((4, 4, 3), np.uint8)
    monkeypatch.setattr(sources, "read_image", broken)
    source = FileImageSource([bombs["small"], "/elsewhere/other.png"], (4, 4), keep_original_size=True)
    cached = CachedSource(source)
    assert [bool(cached.load(i)[-1]) for i in range(2)] == [False, True]
    assert cached.skip_log.skipped == {bombs["small"]: "simulated"}
    assert sample_images(cached, 2).shape == (1, 4, 4, 3)  # figures take the decodable ones
    monkeypatch.setattr(sources, "read_label_map", lambda path, max_pixels=None: 1 / 0)
    pairs = LabelMapPairSource(["/x/other.png"], ["/x/map.png"], (4, 4))
    assert not pairs.load(0)[-1] and "division by zero" in pairs.skip_log.skipped["/x/other.png"]


def test_segmentation_figures_leave_out_an_example_that_no_longer_decodes(bombs, tmp_path, capsys):
    from simclr_tf.evaluation.segmentation_metrics import metrics_from_confusion
    from tasks import segmenter_results
    (tmp_path / "val.txt").write_text(f"{bombs['small']},{bombs['small_map']}\n{bombs['image']},{bombs['small_map']}\n")
    val_list = filelist.read_file_list(str(tmp_path / "val.txt"), filelist.SEGMENTATION)
    source = FileImageSource(val_list.paths, (8, 8), keep_original_size=True)
    examples = [(0, np.zeros((8, 8), np.uint8)), (1, np.zeros((8, 8), np.uint8))]
    segmenter_results.write_evaluation(metrics_from_confusion(np.eye(2, dtype=np.int64), 2), examples, val_list,
                                       source, 2, str(tmp_path))
    assert os.path.isfile(tmp_path / "metrics.json") and os.path.isfile(tmp_path / "predictions.png")
    assert f"predictions.png: example left out (cannot decode {bombs['image']}: it is {TOO_LARGE}" in \
        capsys.readouterr().out


# --- 9: CIFAR-10 batches are unpickled without running code -------------------------------------------------

class _CreatesMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def _py2_style_batch(num_images=2):
    """A batch pickled as the real CIFAR-10 files are (Python 2 cPickle, protocol 2, NumPy 1 names:
    numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype; py2 str keys), written by hand."""
    raw = bytes(range(256)) * (12 * num_images)
    labels = b"".join(b"K" + bytes([i % 10]) for i in range(num_images))
    return (b"\x80\x02}q\x00(U\x04data"
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
            b"(K\x01K" + bytes([num_images]) + b"M\x00\x0c\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
            b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T" + struct.pack("<I", len(raw)) + raw
            + b"tbU\x06labels](" + labels + b"eU\x0bbatch_labelU\x04testu.")


def test_a_crafted_cifar10_batch_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "marker"
    crafted = pickle.dumps({b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 6,
                            b"filenames": [_CreatesMarker(str(marker))]})
    pickle.loads(crafted)  # what pickle.load would do: the file's code runs
    assert marker.exists()
    marker.unlink()
    write_fake_cifar10(str(tmp_path))
    (tmp_path / "data_batch_3").write_bytes(crafted)
    with pytest.raises(UserError, match=r"--cifar10_dir: cannot read .*data_batch_3: it asks for (io|builtins)\.open"):
        load_cifar10(str(tmp_path))
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        load_restricted(pickle.dumps(os.system))


def test_real_cifar10_layouts_load_and_others_are_refused(tmp_path):
    batch = load_restricted(_py2_style_batch(3))
    assert batch[b"data"].shape == (3, 3072) and batch[b"labels"] == [0, 1, 2]
    write_fake_cifar10(str(tmp_path))  # pickled by this NumPy (numpy._core names), protocol 4
    (tmp_path / "test_batch").write_bytes(_py2_style_batch(4))
    x_train, y_train, x_test, y_test = load_cifar10(str(tmp_path))
    assert x_train.shape == (30, 32, 32, 3) and x_test.shape == (4, 32, 32, 3) and list(y_test) == [0, 1, 2, 3]
    # Shapes that could expand a small file into a huge array, and damaged files, name the file.
    shared = [0] * 3072
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": [shared] * 6, b"labels": [0] * 6}))
    with pytest.raises(UserError, match="test_batch: 'data' is not a uint8 array"):
        load_cifar10(str(tmp_path))
    (tmp_path / "test_batch").write_bytes(_py2_style_batch(4)[:100])
    with pytest.raises(UserError, match="cannot read .*test_batch"):
        load_cifar10(str(tmp_path))
