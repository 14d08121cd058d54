"""Tests for the synthetic demo dataset (simclr_tf.data.demo)."""

import collections
import os

import numpy as np
import pytest
from PIL import Image

from simclr_tf.data import demo
from simclr_tf.errors import UserError

NUM_TRAIN, NUM_VAL, SIZE = 40, 16, 32
K = len(demo.CLASS_NAMES)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lists = demo.generate_demo_dataset(out, num_train=NUM_TRAIN, num_val=NUM_VAL, image_size=SIZE, seed=0)
    return out, lists


def read_pairs(list_path):
    """Parses "a,b" lines (split at the last comma), resolving paths against the list's folder."""
    with open(list_path, encoding="utf-8") as f:
        text = f.read()
    assert text.endswith("\n")
    rows = []
    for line in text.splitlines():
        a, b = line.rsplit(",", 1)
        assert not os.path.isabs(a)
        rows.append((os.path.join(os.path.dirname(list_path), a), b))
    return rows


def labelled(lists, split):
    """[(image_path, label, labelmap_path)] for a split, cross-checking the two lists."""
    cls = read_pairs(getattr(lists, split))
    seg = read_pairs(getattr(lists, split + "_seg"))
    assert [p for p, _ in cls] == [p for p, _ in seg]
    base = os.path.dirname(getattr(lists, split))
    return [(p, int(c), os.path.join(base, m)) for (p, c), (_, m) in zip(cls, seg)]


def all_files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = p
    return out


def test_layout_and_lists(dataset):
    out, lists = dataset
    assert lists.num_classes == K and lists.num_seg_classes == K + 1
    for field in ("unlabeled", "train", "val", "train_seg", "val_seg"):
        path = getattr(lists, field)
        assert os.path.isabs(path) and os.path.isfile(path)
        assert os.path.dirname(path) == str(out)
    with open(out / "classes.txt", encoding="utf-8") as f:
        assert f.read() == "".join(c + "\n" for c in demo.CLASS_NAMES)
    assert (out / "README.txt").stat().st_size > 0
    assert (out / "params.json").is_file()

    with open(lists.unlabeled, encoding="utf-8") as f:
        text = f.read()
    assert text.endswith("\n")
    unlabeled = [os.path.join(out, ln) for ln in text.splitlines()]
    train = labelled(lists, "train")
    val = labelled(lists, "val")
    assert len(train) == NUM_TRAIN and len(val) == NUM_VAL
    assert unlabeled == [p for p, _, _ in train]
    for p, c, m in train + val:
        assert os.path.isfile(p) and os.path.isfile(m)
        assert 0 <= c < K
    assert not set(p for p, _, _ in train) & set(p for p, _, _ in val)


def test_images_and_label_maps(dataset):
    _, lists = dataset
    for split in ("train", "val"):
        for p, c, m in labelled(lists, split):
            with Image.open(p) as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (SIZE, SIZE)
                arr = np.asarray(im)
            assert arr.dtype == np.uint8 and arr.shape == (SIZE, SIZE, 3)
            with Image.open(m) as lm:
                assert lm.format == "PNG" and lm.mode == "L" and lm.size == (SIZE, SIZE)
                lab = np.asarray(lm)
            values = set(np.unique(lab).tolist())
            # Only background, this image's class and ignore: one main shape per image.
            assert values <= {0, c + 1, 255}
            fg = int((lab == c + 1).sum())
            assert fg >= 0.03 * SIZE * SIZE, (p, fg)
            assert (lab == 0).sum() > 0
            # The ignore band is a thin boundary, not a large region.
            assert (lab == 255).sum() < 1.5 * fg + 4 * SIZE


def test_label_map_aligned_with_image(dataset):
    """Pixels labelled as the shape look alike (one flat-ish colour), unlike the boundary."""
    _, lists = dataset
    for p, c, m in labelled(lists, "train")[:10]:
        img = np.asarray(Image.open(p)).astype(np.float32)
        lab = np.asarray(Image.open(m))
        inside = img[lab == c + 1]
        # Shape colour = one colour + mild shading + mild noise.
        assert inside.std(axis=0).max() < 20, p


def test_classes_balanced(dataset):
    _, lists = dataset
    for split, n in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        counts = collections.Counter(c for _, c, _ in labelled(lists, split))
        assert counts == {c: n // K for c in range(K)}


def test_deterministic_for_a_seed(dataset, tmp_path):
    out, _ = dataset
    same = tmp_path / "same"
    demo.generate_demo_dataset(same, num_train=NUM_TRAIN, num_val=NUM_VAL, image_size=SIZE, seed=0)
    a, b = all_files(out), all_files(same)
    assert sorted(a) == sorted(b)
    for rel in a:
        with open(a[rel], "rb") as fa, open(b[rel], "rb") as fb:
            assert fa.read() == fb.read(), rel

    other = tmp_path / "other"
    demo.generate_demo_dataset(other, num_train=NUM_TRAIN, num_val=NUM_VAL, image_size=SIZE, seed=1)
    c = all_files(other)
    images = [r for r in a if r.startswith("images")]
    differing = 0
    for rel in images:
        with open(a[rel], "rb") as fa, open(c[rel], "rb") as fc:
            differing += fa.read() != fc.read()
    assert differing == len(images)


def test_second_call_does_not_rewrite(tmp_path):
    kw = dict(num_train=8, num_val=4, image_size=SIZE, seed=3)
    first = demo.generate_demo_dataset(tmp_path, **kw)
    before = {rel: os.stat(p).st_mtime_ns for rel, p in all_files(tmp_path).items()}
    calls = []
    second = demo.generate_demo_dataset(tmp_path, progress=lambda i, n: calls.append(i), **kw)
    after = {rel: os.stat(p).st_mtime_ns for rel, p in all_files(tmp_path).items()}
    assert second == first
    assert after == before
    assert calls == []

    # Different parameters: regenerated.
    third = demo.generate_demo_dataset(tmp_path, **dict(kw, num_val=8))
    assert len(labelled(third, "val")) == 8
    assert os.stat(third.train).st_mtime_ns >= before["train.txt"]


def test_regenerates_when_files_missing(tmp_path):
    kw = dict(num_train=4, num_val=4, image_size=SIZE, seed=0)
    lists = demo.generate_demo_dataset(tmp_path, **kw)
    victim = labelled(lists, "val")[2][0]
    os.remove(victim)
    demo.generate_demo_dataset(tmp_path, **kw)
    assert os.path.isfile(victim)


def test_interrupted_generation_leaves_no_lists(tmp_path):
    kw = dict(num_train=8, num_val=4, image_size=SIZE, seed=0)
    demo.generate_demo_dataset(tmp_path, **kw)   # a previous complete dataset

    class Stop(Exception):
        pass

    def interrupt(i, total):
        if i == 5:
            raise Stop

    with pytest.raises(Stop):
        demo.generate_demo_dataset(tmp_path, **dict(kw, num_train=12), progress=interrupt)
    for name in ("train_unlabeled.txt", "train.txt", "val.txt", "train_seg.txt", "val_seg.txt",
                 "params.json"):
        assert not (tmp_path / name).exists(), name

    calls = []
    lists = demo.generate_demo_dataset(tmp_path, **dict(kw, num_train=12),
                                       progress=lambda i, n: calls.append((i, n)))
    assert calls == [(i, 16) for i in range(1, 17)]
    assert len(labelled(lists, "train")) == 12


def test_colour_and_background_independent_of_class():
    """Mean shape colour and mean background colour do not identify the class."""
    feats, labels = [], []
    for i in range(800):   # 200 per class: sampling noise of a class mean ~0.02
        c = i % K
        img, lab = demo.render_demo_sample(seed=5, split="train", index=i, label=c, image_size=SIZE)
        img = img.astype(np.float32) / 255.0
        feats.append(np.concatenate([img[lab == c + 1].mean(axis=0), img[lab == 0].mean(axis=0)]))
        labels.append(c)
    feats, labels = np.array(feats), np.array(labels)
    means = np.array([feats[labels == c].mean(axis=0) for c in range(K)])
    # A class -> colour mapping would separate these by ~0.3-1.0; uniform random colours
    # give per-class means that agree to within sampling noise (~0.05).
    assert np.abs(means[:, None] - means[None]).max() < 0.15
    for cols in (slice(0, 3), slice(3, 6)):   # shape colour, background colour
        d = ((feats[:, None, cols] - means[None, :, cols]) ** 2).sum(-1)
        accuracy = (d.argmin(axis=1) == labels).mean()
        assert accuracy < 0.45   # chance is 0.25; fitted on the same data, so slightly above


def test_shapes_differ_by_class():
    """Sanity check that class is visible in the mask: e.g. the cross is the least convex."""
    import cv2

    solidity = collections.defaultdict(list)
    for i in range(40):
        c = i % K
        _, lab = demo.render_demo_sample(seed=2, split="val", index=i, label=c, image_size=64)
        mask = (lab == c + 1).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cnt = max(contours, key=cv2.contourArea)
        solidity[demo.CLASS_NAMES[c]].append(cv2.contourArea(cnt) / cv2.contourArea(cv2.convexHull(cnt)))
    if "cross" in solidity:
        others = [np.mean(v) for k, v in solidity.items() if k != "cross"]
        assert np.mean(solidity["cross"]) < min(others) - 0.1


def test_invalid_arguments(tmp_path):
    with pytest.raises(UserError, match="num_train"):
        demo.generate_demo_dataset(tmp_path, num_train=0)
    with pytest.raises(UserError, match="image_size"):
        demo.generate_demo_dataset(tmp_path, image_size=4)


def test_cli(tmp_path, capsys):
    rc = demo.main([str(tmp_path / "cli"), "--num_train", "8", "--num_val", "4", "--image_size", "24"])
    assert rc == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cli" / "train.txt") in out
    img = np.asarray(Image.open(tmp_path / "cli" / "images" / "val" / "00003.png"))
    assert img.shape == (24, 24, 3)
