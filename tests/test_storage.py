"""Lists and images may live at any tf.io.gfile URI (gs://...): here TensorFlow's in-memory ram://
file system stands in for a bucket (no network)."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simclr_tf.data import filelist, storage
from simclr_tf.data.decode import read_image
from simclr_tf.data.sources import FileImageSource, load_tensors
from simclr_tf.errors import UserError


def _write(uri, data):
    with tf.io.gfile.GFile(uri, "wb") as f:
        f.write(data)


def _encoded(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture()
def bucket(request):
    root = f"ram://bucket-{request.node.name}"
    image = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    _write(f"{root}/images/a.png", _encoded(image, "PNG"))
    _write(f"{root}/images/b.tiff", _encoded(image, "TIFF"))
    yield root, image
    for name in ("images/a.png", "images/b.tiff", "train.txt"):  # ram:// has no folders to rmtree
        if tf.io.gfile.exists(f"{root}/{name}"):
            tf.io.gfile.remove(f"{root}/{name}")


def test_resolve_keeps_uris_and_joins_relative_paths_to_a_uri_folder():
    assert storage.resolve("gs://b/x/a.jpg", "/data") == "gs://b/x/a.jpg"
    assert storage.resolve("../images/./a.jpg", "gs://b/lists") == "gs://b/images/a.jpg"
    assert storage.resolve("/local/a.jpg", "gs://b/lists") == "/local/a.jpg"
    assert storage.folder_of("gs://b/lists/train.txt") == "gs://b/lists"
    assert storage.is_uri("s3://b/a") and not storage.is_uri("/tmp/gs://odd") and not storage.is_uri("a.jpg")


def test_a_list_in_a_bucket_names_images_relative_to_it_and_by_uri(bucket, tmp_path):
    root, _ = bucket
    _write(f"{root}/train.txt", f"images/a.png\n{root}/images/b.tiff,3\n".encode())
    entries = filelist.read_file_list(f"{root}/train.txt").entries
    assert [(e.path, e.label) for e in entries] == [(f"{root}/images/a.png", None), (f"{root}/images/b.tiff", 3)]
    # a local list naming URIs
    (tmp_path / "list.txt").write_text(f"{root}/images/a.png,1\n", encoding="utf-8")
    classified = filelist.read_file_list(str(tmp_path / "list.txt"), filelist.CLASSIFICATION, num_classes=2)
    assert classified.paths == [f"{root}/images/a.png"] and classified.labels == [1]


def test_missing_uris_are_reported_with_their_line(bucket):
    root, _ = bucket
    _write(f"{root}/train.txt", f"images/a.png\nimages/missing.png\n{root}/images\n".encode())
    with pytest.raises(UserError) as error:
        filelist.read_file_list(f"{root}/train.txt")
    message = str(error.value)
    assert "line 2: image not found: " + f"{root}/images/missing.png" in message
    assert "line 3" in message  # a folder is not an image
    with pytest.raises(UserError, match="list file not found"):
        filelist.read_file_list(f"{root}/nothing.txt")


def test_listed_folders_agree_with_isfile(tmp_path):
    import os
    for i in range(storage.LISTED_FOLDER_MIN + 5):
        (tmp_path / f"f{i}.png").write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    os.symlink(tmp_path / "f0.png", tmp_path / "link.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "broken.png")
    names = [f"f{i}.png" for i in range(storage.LISTED_FOLDER_MIN + 5)] + \
        ["sub.png", "link.png", "broken.png", "missing.png", "F1.PNG", "f1.png,3"]
    paths = [str(tmp_path / n) for n in names]
    assert storage.existing_files(paths) == {p for p in paths if os.path.isfile(p)}
    assert str(tmp_path / "link.png") in storage.existing_files(paths)
    assert storage.existing_files(paths[-4:]) == {p for p in paths[-4:] if os.path.isfile(p)}  # stat'ed


def test_uri_checks_run_in_parallel(monkeypatch):
    import threading
    import time

    threads = set()

    def slow_isfile(path):
        threads.add(threading.get_ident())
        time.sleep(0.05)
        return path.endswith("1")

    monkeypatch.setattr(storage, "isfile", slow_isfile)
    start = time.perf_counter()
    found = storage.existing_files([f"gs://b/{i}" for i in range(40)])
    assert found == {"gs://b/1", "gs://b/11", "gs://b/21", "gs://b/31"}
    assert len(threads) > 1 and time.perf_counter() - start < 40 * 0.05 / 4


def test_images_at_uris_decode_on_both_paths(bucket):
    root, image = bucket
    assert np.array_equal(read_image(f"{root}/images/b.tiff"), image)  # Pillow reads the URI's bytes
    source = FileImageSource([f"{root}/images/a.png", f"{root}/images/b.tiff", f"{root}/images/gone.png"], (12, 10))
    examples = [[t.numpy() for t in load_tensors(source, tf.constant(i, tf.int64))] for i in range(3)]
    assert [bool(e[-1]) for e in examples] == [True, True, False]
    assert np.array_equal(examples[0][0], image) and np.array_equal(examples[1][0], image)
    assert list(source.skip_log.skipped) == [f"{root}/images/gone.png"]
