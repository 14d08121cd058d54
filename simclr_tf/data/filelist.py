"""Reading and checking the user's file lists (README, "Your own images").

A list is UTF-8 text, one entry per line: `path` for images, `path,label` for classification,
`path,labelmap_path` for segmentation. The whole list is checked before any training starts so
that every problem is reported at once, each with its line number.
"""
import dataclasses
import os
import re

from simclr_tf.data import storage
from simclr_tf.errors import UserError

MAX_REPORTED_PROBLEMS = 20
# A class label is plain ASCII decimal digits (int() would also take '+1', '1_0', '1e3' is refused
# but Arabic-Indic digits are not); a leading '-' parses only to say the label is out of range.
_LABEL = re.compile(r"-?[0-9]+", re.ASCII)
# Class indices above this are typos (or not labels): they would size arrays of that many classes and
# overflow int64 beyond 19 digits.
MAX_LABEL = 2**31 - 1

IMAGES = "images"              # `path`, or `path,label` whose label is kept when it parses
CLASSIFICATION = "classification"  # `path,label` with an integer label in [0, num_classes)
SEGMENTATION = "segmentation"  # `path,labelmap_path`


@dataclasses.dataclass(frozen=True)
class ListEntry:
    """One usable line of a list: absolute image path, optional label, and where it came from."""

    path: str
    label: object = None  # int class (classification), absolute label-map path (segmentation) or None
    line: int = 0


@dataclasses.dataclass
class FileList:
    """The parsed entries of one list file (or of a folder of images, `image_folders`)."""

    list_path: str
    entries: list
    folder: bool = False     # read from a folder of images, not a list file
    class_names: list = None  # a folder of class folders: the class of label i is class_names[i]

    @property
    def paths(self):
        return [e.path for e in self.entries]

    @property
    def labels(self):
        return [e.label for e in self.entries]

    def __len__(self):
        return len(self.entries)


def read_file_list(list_path, kind=IMAGES, num_classes=None, flag_name="--train_file_path"):
    """Parses and checks a list file; returns a `FileList` or raises `UserError`.

    Relative paths are resolved against the folder that holds the list. Labelled lines split at
    the LAST comma, so paths may contain commas. Every missing file and malformed line is
    collected; the error names the flag, the list and the first `MAX_REPORTED_PROBLEMS` lines.
    The list and the paths in it may be local paths or `tf.io.gfile` URIs (gs://...): every path
    any line could name is checked in one batch first (`storage.existing_files`, URIs in parallel).
    """
    lines = _read_lines(list_path, flag_name)
    base_dir = storage.folder_of(list_path)
    resolved = {}

    def resolve(raw):  # each path is resolved once, for the batch check and then for its line
        path = resolved.get(raw)
        if path is None:
            path = resolved[raw] = storage.resolve(raw, base_dir)
        return path

    isfile = storage.existing_files(_candidate_paths(lines, resolve, kind)).__contains__
    entries, problems = [], []
    for line_number, text in lines:
        entry, problem = _parse_line(text, line_number, resolve, kind, num_classes, isfile)
        if problem:
            problems.append((line_number, problem))
        else:
            entries.append(entry)
    if problems:
        raise UserError(_format_problems(list_path, flag_name, problems))
    if not entries:
        raise UserError(f"{flag_name}: {list_path} lists no images (only blank or comment lines).")
    list_path = list_path if storage.is_uri(list_path) else os.path.abspath(list_path)
    return FileList(list_path=list_path, entries=entries)


def _candidate_paths(lines, resolve, kind):
    """Every resolved path `_parse_line` may ask about: the whole line of an image list and the part
    before its last comma; the image and label-map paths of a segmentation line."""
    for _, text in lines:
        if kind == IMAGES:
            yield resolve(text)
        if "," in text:
            raw_path, raw_label = (part.strip() for part in text.rsplit(",", 1))
            yield resolve(raw_path)
            if kind == SEGMENTATION and raw_label:
                yield resolve(raw_label)


def _read_lines(list_path, flag_name):
    """Yields (line_number, stripped_text) for non-blank, non-comment lines."""
    if not list_path:
        raise UserError(f"{flag_name} is required for this task.")
    if storage.isdir(list_path):
        raise UserError(f"{flag_name}: {list_path} is a folder; give a text file listing its images, "
                        "one path per line (README, 'Your own images').")
    if not storage.isfile(list_path):
        raise UserError(f"{flag_name}: list file not found: {list_path}")
    raw = storage.read_bytes(list_path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line_number = raw[: e.start].count(b"\n") + 1
        raise UserError(f"{flag_name}: {list_path}, line {line_number}: not valid UTF-8 text.") from None
    result = []
    # splitlines() would also split on form feeds and other exotic separators; lists use \n or \r\n.
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            result.append((number, stripped))
    return result


def _parse_line(text, line_number, resolve, kind, num_classes, isfile):
    """Returns (ListEntry, None) or (None, problem description). `resolve(raw)` is the absolute path
    or URI of a path as written; `isfile(path)` says whether a resolved path is an existing file."""
    if kind == IMAGES:
        return _parse_image_line(text, line_number, resolve, isfile)
    if "," not in text:
        expected = "path,label" if kind == CLASSIFICATION else "path,labelmap_path"
        return None, f"expected '{expected}' but found no comma: {text!r}"
    raw_path, raw_label = (part.strip() for part in text.rsplit(",", 1))
    if not raw_path:
        return None, f"empty image path: {text!r}"
    path = resolve(raw_path)
    if kind == CLASSIFICATION:
        label, problem = _parse_class_label(raw_label, num_classes)
    else:
        label, problem = _parse_labelmap_path(raw_label, resolve, isfile)
    if not isfile(path):
        problem = f"image not found: {path}" + (f"; {problem}" if problem else "")
    if problem:
        return None, problem
    return ListEntry(path=path, label=label, line=line_number), None


def _parse_image_line(text, line_number, resolve, isfile):
    """An image list line is a path; a trailing `,label` is accepted and kept when it is an integer."""
    path = resolve(text)
    if isfile(path):
        return ListEntry(path=path, line=line_number), None
    if "," in text:
        raw_path, raw_label = (part.strip() for part in text.rsplit(",", 1))
        labelled_path = resolve(raw_path)
        if isfile(labelled_path):
            label = _int(raw_label) if _is_int(raw_label) else None  # (negative: unlabelled, see pretrain)
            if label is not None and abs(label) > MAX_LABEL:
                return None, _too_large(raw_label)
            return ListEntry(path=labelled_path, label=label, line=line_number), None
    return None, f"image not found: {path}"


def _parse_class_label(raw_label, num_classes):
    if not _is_int(raw_label):
        return None, f"label {raw_label!r} is not an integer (labels are class indices 0, 1, 2, ...)"
    label = _int(raw_label)
    if label < 0 or (num_classes is not None and label >= num_classes):
        upper = f"{num_classes - 1}" if num_classes is not None else "..."
        shown = raw_label if len(raw_label) <= 40 else raw_label[:20] + "..."
        return None, f"label {shown} is outside [0, {upper}] (--num_classes={num_classes})"
    if label > MAX_LABEL:
        return None, _too_large(raw_label)
    return label, None


def _int(text):
    """int(text) of a `_LABEL`, without converting thousands of digits (Python refuses above 4300)."""
    return int(text) if len(text) <= 20 else (MAX_LABEL + 1) * (-1 if text.startswith("-") else 1)


def _too_large(raw_label):
    raw_label = raw_label if len(raw_label) <= 40 else raw_label[:20] + "..."
    return f"label {raw_label} is too large for a class index (at most {MAX_LABEL}; a typo?)"


def _parse_labelmap_path(raw_label, resolve, isfile):
    if not raw_label:
        return None, "empty label-map path"
    path = resolve(raw_label)
    if not isfile(path):
        return None, f"label map not found: {path}"
    return path, None




def _is_int(text):
    """Plain ASCII decimal digits, optionally after '-' (see `_LABEL`)."""
    return _LABEL.fullmatch(text) is not None


def _format_problems(list_path, flag_name, problems):
    shown = problems[:MAX_REPORTED_PROBLEMS]
    lines = [f"{flag_name}: {list_path} has {len(problems)} problem(s):"]
    lines += [f"  line {number}: {message}" for number, message in shown]
    if len(problems) > len(shown):
        lines.append(f"  ... and {len(problems) - len(shown)} more")
    return "\n".join(lines)
