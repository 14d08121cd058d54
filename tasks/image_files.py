"""Image sources over the user's files, with the decoding limits from flags (--max_image_pixels).

Building a source also makes --max_image_pixels the process default of `decode` (reads that take no
limit: figures, metrics), so no read of a user's file in a task decodes more pixels than the flag allows.
"""
from simclr_tf.data import decode
from simclr_tf.data.sources import FileImageSource, LabelMapPairSource


def max_image_pixels(flag_values):
    """--max_image_pixels (the process default of `decode` from now on)."""
    limit = flag_values.max_image_pixels
    decode.set_default_max_pixels(limit)
    return limit


def image_source(flag_values, paths, size, keep_original_size=False):
    """A `FileImageSource` of `paths` resized to `size`, refusing images above --max_image_pixels."""
    return FileImageSource(paths, size, keep_original_size=keep_original_size,
                           max_pixels=max_image_pixels(flag_values))


def label_map_pair_source(flag_values, image_paths, label_paths, size):
    """A `LabelMapPairSource` of (image, label map) files resized to `size`, with the same limit."""
    return LabelMapPairSource(image_paths, label_paths, size, max_pixels=max_image_pixels(flag_values))


def skipped_line(source, path):
    """'  skipped undecodable file: PATH (why)': the one line per undecodable file of predict, evaluate,
    embed and linear_eval."""
    reason = (source.skip_log.skipped.get(path) or "").replace(f"cannot decode {path}: ", "")
    reason = " ".join(reason.split())[:300]
    return f"  skipped undecodable file: {path}" + (f" ({reason})" if reason else "")
