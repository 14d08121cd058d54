"""Reading and checking the user's file lists (README, "Your own images").

A list is UTF-8 text, one entry per line: `path` for images, `path,label` for classification,
`path,labelmap_path` for segmentation. The whole list is checked before any training starts so
that every problem is reported at once, each with its line number.
"""
import dataclasses
import os
import re

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
    """The parsed entries of one list file."""

    list_path: str
    entries: list

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
    """
    lines = _read_lines(list_path, flag_name)
    base_dir = os.path.dirname(os.path.abspath(list_path))
    entries, problems = [], []
    for line_number, text in lines:
        entry, problem = _parse_line(text, line_number, base_dir, kind, num_classes)
        if problem:
            problems.append((line_number, problem))
        else:
            entries.append(entry)
    if problems:
        raise UserError(_format_problems(list_path, flag_name, problems))
    if not entries:
        raise UserError(f"{flag_name}: {list_path} lists no images (only blank or comment lines).")
    return FileList(list_path=os.path.abspath(list_path), entries=entries)


def _read_lines(list_path, flag_name):
    """Yields (line_number, stripped_text) for non-blank, non-comment lines."""
    if not list_path:
        raise UserError(f"{flag_name} is required for this task.")
    if os.path.isdir(list_path):
        raise UserError(f"{flag_name}: {list_path} is a folder; give a text file listing its images, "
                        "one path per line (README, 'Your own images').")
    if not os.path.isfile(list_path):
        raise UserError(f"{flag_name}: list file not found: {list_path}")
    with open(list_path, "rb") as f:
        raw = f.read()
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


def _parse_line(text, line_number, base_dir, kind, num_classes):
    """Returns (ListEntry, None) or (None, problem description)."""
    if kind == IMAGES:
        return _parse_image_line(text, line_number, base_dir)
    if "," not in text:
        expected = "path,label" if kind == CLASSIFICATION else "path,labelmap_path"
        return None, f"expected '{expected}' but found no comma: {text!r}"
    raw_path, raw_label = (part.strip() for part in text.rsplit(",", 1))
    if not raw_path:
        return None, f"empty image path: {text!r}"
    path = _resolve(raw_path, base_dir)
    if kind == CLASSIFICATION:
        label, problem = _parse_class_label(raw_label, num_classes)
    else:
        label, problem = _parse_labelmap_path(raw_label, base_dir)
    if not os.path.isfile(path):
        problem = f"image not found: {path}" + (f"; {problem}" if problem else "")
    if problem:
        return None, problem
    return ListEntry(path=path, label=label, line=line_number), None


def _parse_image_line(text, line_number, base_dir):
    """An image list line is a path; a trailing `,label` is accepted and kept when it is an integer."""
    path = _resolve(text, base_dir)
    if os.path.isfile(path):
        return ListEntry(path=path, line=line_number), None
    if "," in text:
        raw_path, raw_label = (part.strip() for part in text.rsplit(",", 1))
        labelled_path = _resolve(raw_path, base_dir)
        if os.path.isfile(labelled_path):
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


def _parse_labelmap_path(raw_label, base_dir):
    if not raw_label:
        return None, "empty label-map path"
    path = _resolve(raw_label, base_dir)
    if not os.path.isfile(path):
        return None, f"label map not found: {path}"
    return path, None


def _resolve(path, base_dir):
    path = os.path.expanduser(path)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base_dir, path))


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
