"""File lists (README, "Your own images"): parsing, path resolution and line-numbered errors."""
import os

import numpy as np
import pytest
from PIL import Image

from simclr_tf.data import filelist
from simclr_tf.errors import UserError


def _image(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


def _write_list(path, text, encoding="utf-8", bom=False, newline="\n"):
    data = text.replace("\n", newline).encode(encoding)
    with open(path, "wb") as f:
        f.write((b"\xef\xbb\xbf" if bom else b"") + data)
    return str(path)


def test_comments_blank_lines_whitespace_and_relative_paths(tmp_path):
    _image(str(tmp_path / "imgs" / "a.png"))
    _image(str(tmp_path / "imgs" / "b.png"))
    lst = _write_list(tmp_path / "list.txt", "# header\n\n   imgs/a.png  \n\t# indented comment\nimgs/b.png\n")
    result = filelist.read_file_list(lst)
    assert result.paths == [str(tmp_path / "imgs" / "a.png"), str(tmp_path / "imgs" / "b.png")]
    assert [e.line for e in result.entries] == [3, 5]


def test_relative_paths_resolve_against_the_list_folder_not_the_cwd(tmp_path, monkeypatch):
    _image(str(tmp_path / "data" / "x.png"))
    lst = _write_list(tmp_path / "data" / "list.txt", "x.png\n")
    monkeypatch.chdir(tmp_path)
    assert filelist.read_file_list(lst).paths == [str(tmp_path / "data" / "x.png")]


def test_bom_and_crlf(tmp_path):
    _image(str(tmp_path / "a.png"))
    lst = _write_list(tmp_path / "l.txt", "a.png,1\n", bom=True, newline="\r\n")
    result = filelist.read_file_list(lst, filelist.CLASSIFICATION, num_classes=2)
    assert result.paths == [str(tmp_path / "a.png")] and result.labels == [1]


def test_label_split_at_last_comma_so_paths_may_hold_commas(tmp_path):
    _image(str(tmp_path / "a,b,c.png"))
    lst = _write_list(tmp_path / "l.txt", "a,b,c.png , 2\n")
    result = filelist.read_file_list(lst, filelist.CLASSIFICATION, num_classes=3)
    assert result.paths == [str(tmp_path / "a,b,c.png")] and result.labels == [2]


def test_image_list_accepts_commas_in_names_and_optional_labels(tmp_path):
    _image(str(tmp_path / "a,1.png"))
    _image(str(tmp_path / "b.png"))
    lst = _write_list(tmp_path / "l.txt", "a,1.png\nb.png,3\n")
    result = filelist.read_file_list(lst)
    assert result.paths == [str(tmp_path / "a,1.png"), str(tmp_path / "b.png")]
    assert result.labels == [None, 3]


def test_missing_files_reported_with_line_numbers(tmp_path):
    _image(str(tmp_path / "ok.png"))
    lst = _write_list(tmp_path / "l.txt", "ok.png\n# c\nmissing1.png\nok.png\nsub/missing2.png\n")
    with pytest.raises(UserError) as info:
        filelist.read_file_list(lst, flag_name="--train_file_path")
    message = str(info.value)
    assert "--train_file_path" in message and lst in message and "2 problem(s)" in message
    assert "line 3: image not found: " + str(tmp_path / "missing1.png") in message
    assert "line 5: image not found: " + str(tmp_path / "sub" / "missing2.png") in message


def test_at_most_twenty_problems_listed_then_a_count(tmp_path):
    lst = _write_list(tmp_path / "l.txt", "".join(f"m{i}.png\n" for i in range(25)))
    with pytest.raises(UserError) as info:
        filelist.read_file_list(lst)
    message = str(info.value)
    assert "25 problem(s)" in message and "line 20:" in message and "line 21:" not in message
    assert "... and 5 more" in message


@pytest.mark.parametrize("line, fragment", [
    ("a.png,7", "label 7 is outside [0, 2]"),
    ("a.png,-1", "label -1 is outside"),
    ("a.png,cat", "label 'cat' is not an integer"),
    ("a.png", "found no comma"),
    ("gone.png,1", "image not found"),
])
def test_classification_label_errors(tmp_path, line, fragment):
    _image(str(tmp_path / "a.png"))
    lst = _write_list(tmp_path / "l.txt", f"a.png,0\n{line}\n")
    with pytest.raises(UserError) as info:
        filelist.read_file_list(lst, filelist.CLASSIFICATION, num_classes=3, flag_name="--val_file_path")
    assert "line 2: " in str(info.value) and fragment in str(info.value)
    assert "--val_file_path" in str(info.value)


def test_segmentation_lines_resolve_both_paths(tmp_path):
    _image(str(tmp_path / "i.png"))
    _image(str(tmp_path / "m" / "i.png"))
    lst = _write_list(tmp_path / "l.txt", "i.png,m/i.png\ni.png,m/none.png\n")
    with pytest.raises(UserError) as info:
        filelist.read_file_list(lst, filelist.SEGMENTATION)
    assert "line 2: label map not found: " + str(tmp_path / "m" / "none.png") in str(info.value)


def test_missing_list_empty_list_and_bad_encoding(tmp_path):
    with pytest.raises(UserError, match="list file not found"):
        filelist.read_file_list(str(tmp_path / "nope.txt"))
    with pytest.raises(UserError, match="is a folder; give a text file listing its images"):
        filelist.read_file_list(str(tmp_path))
    with pytest.raises(UserError, match="lists no images"):
        filelist.read_file_list(_write_list(tmp_path / "e.txt", "# only a comment\n\n"))
    with open(tmp_path / "bad.txt", "wb") as f:
        f.write(b"a.png\n\xff\xfe.png\n")
    with pytest.raises(UserError, match="line 2: not valid UTF-8"):
        filelist.read_file_list(str(tmp_path / "bad.txt"))
    with pytest.raises(UserError, match="--train_file_path is required"):
        filelist.read_file_list(None)
