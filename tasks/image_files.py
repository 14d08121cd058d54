"""Image sources over the user's files, with the decoding limits from flags (--max_image_pixels)."""
from simclr_tf.data.sources import FileImageSource, LabelMapPairSource


def image_source(flag_values, paths, size, keep_original_size=False):
    """A `FileImageSource` of `paths` resized to `size`, refusing images above --max_image_pixels."""
    return FileImageSource(paths, size, keep_original_size=keep_original_size,
                           max_pixels=flag_values.max_image_pixels)


def label_map_pair_source(flag_values, image_paths, label_paths, size):
    """A `LabelMapPairSource` of (image, label map) files resized to `size`, with the same limit."""
    return LabelMapPairSource(image_paths, label_paths, size, max_pixels=flag_values.max_image_pixels)
