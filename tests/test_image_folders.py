"""Folders of images where a list is expected: unlabelled (every image, recursively) and labelled (one
subfolder per class), --write_list, content digests in fingerprints, and a classification run from a
class folder through main.py."""
import json
import os
import types

import numpy as np
import pytest
from PIL import Image

from conftest import assert_user_error, parsed, run_main
from simclr_tf.data import filelist, image_folders
from simclr_tf.errors import UserError
from tasks import list_inputs

slow = pytest.mark.slow


def _image(path, fmt="PNG", seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, fmt)
    return str(path)


@pytest.fixture
def tree(tmp_path):
    """data/ with two class folders: nested subfolders, png/jpg/bmp, upper-case extensions, spaces and
    commas in names, hidden files and folders, a non-image file, a symlinked file and a link loop."""
    root = tmp_path / "data"
    _image(root / "cat" / "a.png")
    _image(root / "cat" / "deep" / "er" / "b,1.JPG", "JPEG")
    _image(root / "cat" / "c.BMP", "BMP")
    _image(root / "dog, big" / "with space.jpeg", "JPEG")
    _image(root / "dog, big" / ".hidden.png")
    _image(root / "dog, big" / ".thumbs" / "x.png")
    _image(root / ".git" / "y.png")
    (root / "dog, big" / "notes.txt").write_text("not an image")
    _image(tmp_path / "elsewhere" / "linked.png")
    os.symlink(tmp_path / "elsewhere" / "linked.png", root / "dog, big" / "link.png")
    os.symlink(root, root / "cat" / "loop")  # back to the top: read once, never into another class
    return root


def _rel(paths, root):
    return [os.path.relpath(p, root) for p in paths]


def test_unlabelled_folder_lists_every_image_recursively_in_sorted_order(tree):
    result = image_folders.read_list_or_folder(str(tree), filelist.IMAGES)
    assert result.folder and result.class_names is None
    assert _rel(result.paths, tree) == ["cat/a.png", "cat/c.BMP", "cat/deep/er/b,1.JPG", "dog, big/link.png",
                                        "dog, big/with space.jpeg"]
    assert result.labels == [None] * 5


def test_class_folders_give_labels_in_sorted_order_and_names(tree):
    result = image_folders.read_list_or_folder(str(tree), filelist.CLASSIFICATION)
    assert result.class_names == ["cat", "dog, big"]
    assert list(zip(_rel(result.paths, tree), result.labels)) == [
        ("cat/a.png", 0), ("cat/c.BMP", 0), ("cat/deep/er/b,1.JPG", 0),
        ("dog, big/link.png", 1), ("dog, big/with space.jpeg", 1)]


@pytest.mark.parametrize("kind", [filelist.IMAGES, filelist.CLASSIFICATION])
def test_written_list_reads_back_to_the_same_paths_and_labels(tree, tmp_path, kind):
    folder = image_folders.read_list_or_folder(str(tree), kind)
    written = tmp_path / "lists" / "frozen.txt"
    written.parent.mkdir()
    written.write_text(image_folders.list_text(folder, ["a header"]), encoding="utf-8")
    back = filelist.read_file_list(str(written), kind)
    assert back.paths == folder.paths and back.labels == folder.labels
    assert image_folders.content_digest(back) != "" and written.read_text().startswith("# a header\n")


def test_folder_problems_exit_2_naming_them(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match=r"--train_file_path=.*empty: the folder holds no image files"):
        image_folders.read_list_or_folder(str(tmp_path / "empty"), filelist.IMAGES)
    _image(tmp_path / "classes" / "cat" / "a.png")
    (tmp_path / "classes" / "dog").mkdir()
    with pytest.raises(UserError, match=r"1 class folder\(s\) hold no image files .*: dog"):
        image_folders.read_list_or_folder(str(tmp_path / "classes"), filelist.CLASSIFICATION)
    _image(tmp_path / "flat" / "a.png")
    with pytest.raises(UserError, match="no class subfolders .*1 image files directly"):
        image_folders.read_list_or_folder(str(tmp_path / "flat"), filelist.CLASSIFICATION, flag_name="--val_file_path")
    with pytest.raises(UserError, match="segmentation pairs every image with its label map"):
        image_folders.read_list_or_folder(str(tmp_path / "flat"), filelist.SEGMENTATION)
    os.symlink(tmp_path / "nowhere.png", tmp_path / "flat" / "broken.png")
    with pytest.raises(UserError, match="broken symbolic link"):
        image_folders.read_list_or_folder(str(tmp_path / "flat"), filelist.IMAGES)


def test_class_count_must_match_num_classes(tree):
    with pytest.raises(UserError, match=r"has 2 class folders \(cat, dog, big\) but --num_classes=3"):
        image_folders.read_list_or_folder(str(tree), filelist.CLASSIFICATION, num_classes=3)


def test_validation_classes_must_match_by_name(tmp_path):
    for name in ("10", "2", "0", "1"):
        _image(tmp_path / "val" / name / "a.png")
    folder = image_folders.read_list_or_folder(str(tmp_path / "val"), filelist.CLASSIFICATION)
    assert folder.class_names == ["0", "1", "10", "2"]  # sorted as text, as Keras and torchvision do
    matched = image_folders.match_classes(folder, ["0", "1", "2", "10"], "--val_file_path", "the training classes")
    assert [os.path.basename(os.path.dirname(p)) for p in matched.paths] == ["0", "1", "10", "2"]
    assert matched.labels == [0, 1, 3, 2]
    with pytest.raises(UserError, match=r"not in --val_file_path: 3; not among the training classes: 10"):
        image_folders.match_classes(folder, ["0", "1", "2", "3"], "--val_file_path", "the training classes")


class _Flags(types.SimpleNamespace):
    """Flag values as attributes and as `flag_values[name].value`, like absl's FlagValues."""

    def __getitem__(self, name):
        return types.SimpleNamespace(value=getattr(self, name))


def _flags(**values):
    return _Flags(**{"train_file_path": None, "val_file_path": None, "test_file_path": None,
                     "knn_train_file_path": None, "write_list": None, "task": "classification", **values})


def test_adding_an_image_changes_the_content_fingerprint(tree):
    flags = _flags(train_file_path=str(tree))
    list_inputs.read_list(flags, "--train_file_path", filelist.CLASSIFICATION)
    before = list_inputs.content_fingerprint(flags, ("train_file_path", "seed"))
    list_inputs.read_list(flags, "--train_file_path", filelist.CLASSIFICATION)
    assert list_inputs.content_fingerprint(flags, ("train_file_path",)) == before  # same folder: resumes
    _image(tree / "cat" / "new.png")
    list_inputs.read_list(flags, "--train_file_path", filelist.CLASSIFICATION)
    after = list_inputs.content_fingerprint(flags, ("train_file_path",))
    assert list(before) == ["train_file_path_content_sha256"] and after != before
    other = _flags(train_file_path=str(tree / "cat"))  # a digest is only used for the path it was read from
    assert list_inputs.content_fingerprint(other, ("train_file_path",)) == {}


def test_write_list_names_and_class_names(tree, tmp_path):
    target = tmp_path / "out" / "frozen.txt"
    flags = _flags(train_file_path=str(tree), val_file_path=str(tree), write_list=str(target))
    list_inputs.read_list(flags, "--train_file_path", filelist.CLASSIFICATION)
    list_inputs.read_list(flags, "--val_file_path", filelist.CLASSIFICATION, class_names=["cat", "dog, big"],
                          reference="the classes of --train_file_path")
    assert (tmp_path / "out" / "classes.txt").read_text() == "cat\ndog, big\n"
    for name in ("frozen.txt", "frozen.val.txt"):
        back = filelist.read_file_list(str(tmp_path / "out" / name), filelist.CLASSIFICATION)
        assert back.labels == [0, 0, 0, 1, 1] and _rel(back.paths, tree)[3] == "dog, big/link.png"
    assert list_inputs.write_target("x/f.txt", "--val_file_path", "evaluate") == "x/f.txt"
    assert list_inputs.write_target("f.txt", "--knn_train_file_path", "pretrain") == "f.knn_train.txt"
    (tmp_path / "out" / "classes.txt").write_text("other\nnames\n")
    with pytest.raises(UserError, match="exists with other class names"):
        list_inputs.read_list(flags, "--train_file_path", filelist.CLASSIFICATION)


def test_a_list_is_written_normalised(tmp_path):
    _image(tmp_path / "imgs" / "a.png")
    (tmp_path / "list.txt").write_text("# comment\n\n  imgs/a.png  \n", encoding="utf-8")
    flags = _flags(task="pretrain", train_file_path=str(tmp_path / "list.txt"), write_list=str(tmp_path / "w.txt"))
    list_inputs.read_list(flags, "--train_file_path", filelist.IMAGES)
    lines = (tmp_path / "w.txt").read_text().splitlines()
    assert lines[-1] == str(tmp_path / "imgs" / "a.png") and all(line.startswith("#") for line in lines[:-1])


def test_validation_folder_classes_must_be_the_training_folders(tmp_path):
    from tasks import labelled_data
    _class_tree(tmp_path / "train", ["cat", "dog"], 2)
    _class_tree(tmp_path / "val", ["cat", "cow"], 1)
    argv = ["--task=classification", f"--train_file_path={tmp_path / 'train'}", f"--val_file_path={tmp_path / 'val'}"]
    with parsed(argv) as flag_values:
        with pytest.raises(UserError, match=r"--val_file_path=.*val: its class folders differ from the classes of "
                                            r"--train_file_path \(not in --val_file_path: dog; not among .*: cow\)"):
            labelled_data.load_classification_data(flag_values, (32, 32))
    _class_tree(tmp_path / "val2", ["dog", "cat"], 1)
    with parsed(argv[:2] + [f"--val_file_path={tmp_path / 'val2'}"]) as flag_values:
        data = labelled_data.load_classification_data(flag_values, (32, 32))
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2 and list(data.val.labels) == [0, 1]
    assert list(data.train.labels) == [0, 0, 1, 1]


def test_knn_monitor_lists_may_be_class_folders(tmp_path):
    from tasks import pretrain
    _class_tree(tmp_path / "val", ["cat", "dog"], 1)
    _class_tree(tmp_path / "ref", ["cat", "dog"], 2)
    _class_tree(tmp_path / "bad", ["cat", "emu"], 1)
    argv = ["--task=pretrain", f"--val_file_path={tmp_path / 'val'}"]
    with parsed(argv + [f"--knn_train_file_path={tmp_path / 'ref'}"]) as flag_values:
        inputs = pretrain.knn_monitor_inputs(flag_values, (32, 32))
    assert inputs.num_classes == 2 and list(inputs.reference_labels) == [0, 0, 1, 1]
    with parsed(argv + [f"--knn_train_file_path={tmp_path / 'bad'}"]) as flag_values:
        with pytest.raises(UserError, match="differ from the class folders of --val_file_path"):
            pretrain.knn_monitor_inputs(flag_values, (32, 32))


# --- through main.py ---------------------------------------------------------------------------------

def _class_tree(root, classes, per_class, seed=0):
    for c, name in enumerate(classes):
        for i in range(per_class):
            _image(root / name / f"img {i}.png", seed=seed + 100 * c + i)


@slow
def test_classification_from_class_folders(tmp_path):
    _class_tree(tmp_path / "train", ["zebra", "ant"], 8)
    _class_tree(tmp_path / "val", ["zebra", "ant"], 4, seed=50)
    save = tmp_path / "run"
    args = ["--task=classification", "--input_size=32 32", "--batch_size=8", "--num_epochs=1",
            f"--train_file_path={tmp_path / 'train'}", f"--val_file_path={tmp_path / 'val'}",
            f"--pretrain_save_path={tmp_path / 'no_pretraining'}", f"--finetune_save_path={save}",
            f"--write_list={tmp_path / 'frozen' / 'train.txt'}"]
    result = run_main(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "is a folder: 16 images in 2 class folders (ant, zebra)" in result.stdout
    info = json.load(open(save / "finetune.json"))
    assert info["class_names"] == ["ant", "zebra"] and info["num_classes"] == 2
    assert list(json.load(open(save / "metrics.json"))["per_class"]) == ["ant", "zebra"]
    assert (tmp_path / "frozen" / "classes.txt").read_text() == "ant\nzebra\n"
    frozen = filelist.read_file_list(str(tmp_path / "frozen" / "train.val.txt"), filelist.CLASSIFICATION)
    assert len(frozen) == 8 and frozen.labels[0] == 0 and "/val/ant/" in frozen.paths[0]

    again = run_main(*args)  # the same folder: the finished run resumes at its end
    assert again.returncode == 0 and "Resuming from epoch 1" in again.stdout, again.stderr[-3000:]
    _image(tmp_path / "train" / "ant" / "one more.png", seed=99)  # the folder changed: like an edited list
    assert_user_error(run_main(*args), "already holds results of a different configuration",
                      "train_file_path_content_sha256")
    _class_tree(tmp_path / "val3", ["zebra", "ant", "bee"], 1)
    assert_user_error(run_main("--task=evaluate", f"--val_file_path={tmp_path / 'val3'}",
                               f"--finetune_save_path={save}"),
                      "its class folders differ from the classes of the model", "not among", "bee")
