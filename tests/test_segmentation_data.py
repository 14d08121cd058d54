"""Segmentation data: joint augmentation keeps image and label map aligned, label-map checks,
class weights, subsets, pipelines and label-map files."""
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simclr_tf.data import augment as A
from simclr_tf.data import filelist
from simclr_tf.data import segmentation as seg
from simclr_tf.data.decode import read_image, read_label_map, resize_label_map
from simclr_tf.data.label_map_files import label_map_file_names, write_label_map_png
from simclr_tf.data.sources import CachedSource, FileImageSource, LabelMapPairSource
from simclr_tf.data.subsets import random_subset
from simclr_tf.errors import UserError

# Pure, well separated colours: the class of a pixel can be read back from its colour.
CLASS_COLOURS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32)


def _colour_coded_example(seed=0, size=(64, 80)):
    """A label map of rectangles (plus an ignore band) and an image whose colour IS the class."""
    rng = np.random.default_rng(seed)
    label = np.zeros(size, np.uint8)
    for k in range(1, 5):
        y, x = rng.integers(0, size[0] - 20), rng.integers(0, size[1] - 24)
        label[y:y + 20, x:x + 24] = k
    label[:3] = seg.IGNORE_LABEL
    image = CLASS_COLOURS[np.where(label == seg.IGNORE_LABEL, 0, label)]
    return image, label


def _classes_from_colours(image):
    return ((image[:, :, None, :] - CLASS_COLOURS[None, None]) ** 2).sum(-1).argmin(-1)


def _pure(image):
    """Pixels whose colour is exactly a class colour (not a bilinear blend of two regions)."""
    return ((image[:, :, None, :] - CLASS_COLOURS[None, None]) ** 2).sum(-1).min(-1) < 1e-4


def _near_a_label_edge(label):
    """Pixels with a different label among their 8 neighbours."""
    padded = np.pad(label, 1, mode="edge")
    height, width = label.shape
    edge = np.zeros(label.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            edge |= padded[1 + dy:1 + dy + height, 1 + dx:1 + dx + width] != label
    return edge


def _misaligned(image, label):
    """Labelled pixels whose colour says another class, where it cannot be an interpolation effect.

    Bilinear interpolation of the image (crop resize, rotation) blends the colours of two regions
    where they meet, while the nearest-neighbour label map picks one side; such a blended pixel may
    read as the other class. That is the only tolerance: a blended pixel must touch a label edge,
    and a pixel of a PURE class colour (all its bilinear sources in one region, hence also its
    nearest neighbour) must carry exactly that class. A one-pixel shift violates the second rule.
    """
    wrong = (label != seg.IGNORE_LABEL) & (_classes_from_colours(image) != label)
    return wrong & (_pure(image) | ~_near_a_label_edge(label))


def seg_config(crop_size, **ops):
    """An AugmentConfig with segmentation's ops only (crop, flip, rotation, jitter; jitter off unless asked)."""
    return A.AugmentConfig(crop_size=crop_size, **{"jitter": False, "colordrop": False, "blur": False, **ops})


def augment_example(image, label, seed, config):
    return A.augment_view(image, seed, config, label_map=label)


AUGMENT_ALL = seg_config((32, 40), crop_area_min=0.3, flip=True, flip_prob=0.5, rotate=True, rotate_prob=1.0,
                         rotate_degrees=40.0)


@pytest.fixture(scope="module")
def augment_fn():
    return tf.function(lambda image, label, seed: augment_example(image, label, seed, AUGMENT_ALL))


def test_joint_augmentation_keeps_image_and_label_map_aligned(augment_fn):
    image, label = _colour_coded_example()
    caught = 0
    for seed in range(24):
        out_image, out_label = (t.numpy() for t in augment_fn(image, label, tf.constant([seed, 7], tf.int64)))
        assert out_image.shape == (32, 40, 3) and out_label.shape == (32, 40) and out_label.dtype == np.uint8
        assert set(np.unique(out_label)) <= {0, 1, 2, 3, 4, 255}
        assert not _misaligned(out_image, out_label).any(), seed
        labelled = out_label != seg.IGNORE_LABEL
        assert _pure(out_image)[labelled].mean() > 0.7  # most pixels are checked exactly
        # Control: the same check catches a label map one pixel off its image.
        caught += all(_misaligned(out_image, np.roll(out_label, 1, axis=axis)).any() for axis in (0, 1))
    assert caught >= 22


def test_rotation_fills_uncovered_label_pixels_with_ignore_and_reflects_the_image():
    image = np.full((32, 32, 3), 0.5, np.float32)
    label = np.ones((32, 32), np.uint8)
    rotated_image, rotated_label = (t.numpy() for t in A.rotate(image, np.radians(30.0), label))
    assert rotated_label[0, 0] == seg.IGNORE_LABEL and rotated_label[-1, -1] == seg.IGNORE_LABEL
    assert rotated_label[16, 16] == 1
    assert set(np.unique(rotated_label)) == {1, 255}
    np.testing.assert_allclose(rotated_image, 0.5, atol=1e-6)  # corners reflected, not black


def test_colour_jitter_changes_the_image_only_and_augmentation_is_deterministic():
    image, label = _colour_coded_example(seed=1)
    image = 0.25 + 0.5 * image  # room for brightness changes both ways
    plain = seg_config((32, 32), rotate=True)
    jittered = seg_config((32, 32), rotate=True, jitter=True, jitter_prob=1.0)
    seed = tf.constant([3, 4], tf.int64)
    image_a, label_a = augment_example(image, label, seed, plain)
    image_b, label_b = augment_example(image, label, seed, jittered)
    np.testing.assert_array_equal(label_a.numpy(), label_b.numpy())  # same geometry
    assert np.abs(image_a.numpy() - image_b.numpy()).max() > 0.05  # different colours
    image_c, label_c = augment_example(image, label, seed, jittered)
    np.testing.assert_array_equal(image_b.numpy(), image_c.numpy())
    np.testing.assert_array_equal(label_b.numpy(), label_c.numpy())
    outputs = {augment_example(image, label, tf.constant([s, 0], tf.int64), plain)[1].numpy().tobytes()
               for s in range(6)}
    assert len(outputs) > 1  # the seed matters


def test_without_crop_flip_or_rotation_the_label_map_is_only_resized():
    image, label = _colour_coded_example(size=(32, 32))
    config = seg_config((32, 32), crop=False, flip=False)
    out_image, out_label = augment_example(image, label, tf.constant([0, 0], tf.int64), config)
    np.testing.assert_array_equal(out_label.numpy(), label)
    np.testing.assert_allclose(out_image.numpy(), image, atol=1e-6)


# --- label-map checks -------------------------------------------------------------------------------------

def _save(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def _rgb(height, width):
    return np.zeros((height, width, 3), np.uint8)


def _write_list(tmp_path, rows, name="list.txt"):
    path = tmp_path / name
    path.write_text("".join(f"{image},{label}\n" for image, label in rows))
    return filelist.read_file_list(str(path), filelist.SEGMENTATION)


def test_check_label_maps_reports_bad_values_and_sizes_with_lines_and_files(tmp_path):
    good = np.array([[0, 1], [4, 255]], np.uint8)
    bad_values = np.array([[0, 7], [9, 255]], np.uint8)
    rows = [
        (_save(str(tmp_path / "i0.png"), _rgb(2, 2)), _save(str(tmp_path / "m0.png"), good)),
        (_save(str(tmp_path / "i1.png"), _rgb(2, 2)), _save(str(tmp_path / "m1.png"), bad_values)),
        (_save(str(tmp_path / "i2.png"), _rgb(3, 2)), _save(str(tmp_path / "m2.png"), good)),
        (_save(str(tmp_path / "i3.png"), _rgb(2, 2)), _save(str(tmp_path / "m3.png"), _rgb(2, 2))),
    ]
    file_list = _write_list(tmp_path, rows)
    with pytest.raises(UserError) as error:
        seg.check_label_maps(file_list, num_classes=5, flag_name="--train_file_path")
    message = str(error.value)
    assert "--train_file_path" in message and str(tmp_path / "list.txt") in message and "3 label-map problem" in message
    assert "line 2:" in message and "m1.png" in message and "7, 9" in message and "--num_classes=5" in message
    assert "line 3:" in message and "m2.png" in message and "i2.png" in message and "2x2" in message
    assert "line 4:" in message and "m3.png" in message  # an RGB image is not a label map
    assert "line 1:" not in message


def test_check_label_maps_counts_pixels_and_reads_palette_indices(tmp_path):
    palette_map = Image.fromarray(np.array([[3, 3, 0], [255, 1, 1]], np.uint8), mode="P")
    palette_map.putpalette([200, 10, 10] * 256)  # every index has the same colour: only indices matter
    palette_map.save(tmp_path / "m.png")
    rows = [(_save(str(tmp_path / "i.png"), _rgb(2, 3)), str(tmp_path / "m.png"))]
    counts = seg.check_label_maps(_write_list(tmp_path, rows), num_classes=4, flag_name="--val_file_path")
    np.testing.assert_array_equal(counts, [[1, 2, 0, 2]])  # the ignore pixel counts nowhere


def test_check_label_maps_shows_the_first_20_problems_and_a_count(tmp_path):
    image = _save(str(tmp_path / "i.png"), _rgb(2, 2))
    label = _save(str(tmp_path / "m.png"), np.full((2, 2), 6, np.uint8))
    with pytest.raises(UserError) as error:
        seg.check_label_maps(_write_list(tmp_path, [(image, label)] * 25), 3, "--train_file_path")
    message = str(error.value)
    assert "25 label-map problem" in message and "line 20:" in message and "line 21:" not in message
    assert "... and 5 more" in message


def test_image_size_from_header_follows_exif_rotation_like_the_decoder(tmp_path):
    path = str(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(path, exif=exif.tobytes())
    assert seg.image_size_from_header(path) == (30, 10) == read_image(path).shape[:2]
    assert seg.image_size_from_header(str(tmp_path / "missing.png")) is None


# --- class weights, subsets ---------------------------------------------------------------------------------

def test_median_frequency_weights_by_hand():
    # Map A: 90 px class 0, 10 px class 1. Map B: 50 px class 0, 50 px class 2. Class 3 absent.
    counts = np.array([[90, 10, 0, 0], [50, 0, 50, 0]])
    # freq0 = 140/200 = 0.7; freq1 = 10/100 = 0.1; freq2 = 50/100 = 0.5; median = 0.5
    np.testing.assert_allclose(seg.median_frequency_weights(counts), [0.5 / 0.7, 5.0, 1.0, 0.0])
    assert not seg.median_frequency_weights(np.zeros((2, 3))).any()


def test_random_subset_is_seeded_sorted_and_never_empty():
    a = random_subset(100, 0.2, seed=3)
    assert len(a) == 20 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, random_subset(100, 0.2, seed=3))
    assert not np.array_equal(a, random_subset(100, 0.2, seed=4))
    assert len(random_subset(10, 0.01, seed=0)) == 1
    np.testing.assert_array_equal(random_subset(5, 1.0, seed=0), np.arange(5))


# --- pipelines ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seg_source(demo_data):
    entries = filelist.read_file_list(demo_data.train_seg, filelist.SEGMENTATION).entries[:16]
    return LabelMapPairSource([e.path for e in entries], [e.label for e in entries], (32, 32))


def _batches(dataset, count):
    return [tuple(np.asarray(t) for t in batch) for batch in dataset.take(count)]


def test_train_dataset_shapes_weights_and_resumed_epochs(seg_source):
    config = seg_config((24, 24), rotate=True)
    weights = np.array([0.5, 1.0, 2.0, 3.0, 4.0])
    batches = _batches(seg.train_dataset(seg_source, config, 4, seed=1, class_weights=weights), 8)
    image, label, weight = batches[0]
    assert image.shape == (4, 24, 24, 3) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
    assert label.shape == (4, 24, 24) and label.dtype == np.int32
    labelled = label != seg.IGNORE_LABEL
    np.testing.assert_allclose(weight[labelled], weights[label[labelled]])
    assert (weight[~labelled] == 0).all() and (~labelled).any()
    # 16 images / batch 4 = 4 batches per epoch: starting at epoch 1 gives the second epoch's batches.
    resumed = _batches(seg.train_dataset(seg_source, config, 4, seed=1, start_epoch=1, class_weights=weights), 4)
    for uninterrupted, again in zip(batches[4:], resumed):
        for a, b in zip(uninterrupted, again):
            np.testing.assert_array_equal(a, b)
    unweighted = _batches(seg.train_dataset(seg_source, config, 4, seed=1), 1)[0]
    assert len(unweighted) == 2


def test_cached_source_gives_the_same_pairs(seg_source):
    cached = CachedSource(LabelMapPairSource(seg_source.paths, seg_source.label_paths, seg_source.size))
    for i in (0, 5):
        for a, b in zip(seg_source.load(i), cached.load(i)):
            np.testing.assert_array_equal(a, b)


def test_inference_source_keeps_the_original_size_and_skips_broken_files(tmp_path):
    good = _save(str(tmp_path / "a.png"), np.full((40, 36, 3), 200, np.uint8))
    broken = tmp_path / "b.png"
    broken.write_bytes(open(good, "rb").read()[:40])
    source = FileImageSource([good, str(broken)], (32, 32), keep_original_size=True)
    batches = list(seg.inference_dataset(source, (24, 24), batch_size=8))
    images, indices, sizes, ok = (np.asarray(t) for t in batches[0])
    assert images.shape == (2, 24, 24, 3)
    assert list(indices) == [0, 1] and list(ok) == [True, False]
    assert tuple(sizes[0]) == (40, 36)
    assert list(source.skip_log.skipped) == [str(broken)]


def test_resize_label_map_never_invents_values():
    label = np.array([[0, 0, 3, 3], [0, 255, 3, 3]], np.uint8)
    resized = resize_label_map(label, (7, 9))
    assert resized.shape == (7, 9) and set(np.unique(resized)) == {0, 3, 255}


# --- label-map files ------------------------------------------------------------------------------------------

def test_label_map_png_holds_indices_with_the_voc_palette(tmp_path):
    label = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    path = str(tmp_path / "out.png")
    write_label_map_png(path, label)
    with Image.open(path) as img:
        assert img.mode == "P" and img.size == (3, 2)
        palette = np.array(img.getpalette()[:768]).reshape(256, 3)
    np.testing.assert_array_equal(read_label_map(path), label)
    assert tuple(palette[1]) == (128, 0, 0) and tuple(palette[2]) == (0, 128, 0)
    assert tuple(palette[255]) == (224, 224, 192)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_label_map_file_names_are_unique_and_deterministic():
    paths = ["/a/x.jpg", "/b/x.png", "/c/X_2.png", "/d/y.tif", "/e/x.gif", "/f/a,b.png"]
    assert label_map_file_names(paths) == ["x.png", "x_2.png", "X_2_2.png", "y.png", "x_3.png", "a_b.png"]
