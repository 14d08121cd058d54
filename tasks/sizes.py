"""--input_size and --crop_size as (height, width) pairs."""
from simclr_tf.errors import UserError

from . import config


def image_sizes(flag_values):
    """(input_size, crop_size) as (H, W) tuples; the crop defaults to the input size."""
    try:
        input_size = config.parse_size(flag_values.input_size, "input_size")
        crop_size = (config.parse_size(flag_values.crop_size, "crop_size")
                     if flag_values.crop_size else input_size)
    except ValueError as e:
        raise UserError(str(e)) from None
    return input_size, crop_size
