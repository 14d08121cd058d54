"""SimCLR augmentations, one image (and optionally its label map) at a time, with stateless randomness.

Every function here works on ONE image of shape [H, W, 3], float32 in [0, 1], and is meant to run
inside a (parallel) `tf.data` map. All random draws are stateless and derived from an explicit
`seed` (an int32/int64 tensor of shape [2]), so:

* the same seed always gives a bit-identical view, whatever the map's parallelism;
* every image draws its own parameters (crop box, jitter factors, blur sigma, ...): the batch-global
  `tf.image.random_*` ops and Keras preprocessing layers are not used.

One augmentation path serves pretraining, fine-tuning and segmentation: `augment_view` takes an
optional label map, which the geometric ops (crop, flip, rotation) move with the image and the
photometric ops leave alone. Cutout is refused with a label map (the erased pixels would keep
their classes). With a label map the image is resized bilinearly (bicubic overshoot would smear
colours across the class edges the nearest-neighbour label map keeps sharp) and rotation fills
uncovered label pixels with `IGNORE_LABEL`.

Each optional op owns a fixed sub-seed, so turning one op on or off does not change what the others
draw for a given seed.

Choices that differ from, or are not fixed by, the official SimCLR code:

* Random resized crop: `min_object_covered=0.0`, so `crop_area_min` (default 0.08) is the real lower
  bound of the crop area. The official code passes 0.1, which silently raises the minimum area to 10%.
* The crop's aspect ratio (width / height) is drawn in [3/4, 4/3] times the aspect ratio of
  `crop_size` (the output), as in the official code, so the stretch applied by the final resize
  stays within [3/4, 4/3].
* Gaussian blur pads by reflection (the official code pads with zeros, which darkens borders).
* Rotation fills the uncovered corners by reflection rather than with black, so rotated views keep
  the image's colour statistics.
* Cutout erases a square of side `cutout_fraction * min(H, W)` to 0 (black); the square's centre is
  uniform over the image and the square is clipped at the borders.
* Evaluation centre crop keeps 87.5% of the largest centred region with the aspect ratio of
  `crop_size` (the whole image side for matching aspect ratios), as the official code does.
"""

import dataclasses
import math

import tensorflow as tf

# Aspect-ratio range of the random resized crop, relative to the output's aspect ratio.
CROP_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
CROP_MAX_ATTEMPTS = 100
# Fraction of each side kept by the evaluation centre crop.
EVAL_CROP_PROPORTION = 0.875
# At or below this output side (in pixels) evaluation resizes the whole image instead of cropping.
EVAL_NO_CROP_MAX_SIDE = 32
# Blur is on by default only above this image side (SimCLR does not blur CIFAR-size images).
BLUR_MIN_SIDE = 64
# Label-map value of pixels that carry no class (segmentation); rotation uncovers such pixels.
IGNORE_LABEL = 255

# The code below uses no Python control flow on tensors; skipping AutoGraph saves tracing time
# and avoids its warnings about lambdas it cannot parse.
_graph_style = tf.autograph.experimental.do_not_convert

# Fixed sub-seed slots of `augment_view`; keep the order stable so seeds stay reproducible.
_SEED_SLOTS = ("crop", "flip", "jitter", "colordrop", "blur", "rotate", "noise", "cutout")


def _size_pair(size):
    """Returns `size` (an int or an (height, width) pair) as a tuple of two positive ints."""
    if isinstance(size, int):
        size = (size, size)
    height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"crop_size must be positive, got {size!r}")
    return height, width


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations `augment_view` applies, and their parameters.

    `crop_size` is the (height, width) the network sees. Probabilities are per image.
    """

    crop_size: tuple[int, int]
    crop: bool = True
    crop_prob: float = 1.0
    crop_area_min: float = 0.08
    flip: bool = True
    flip_prob: float = 0.5
    jitter: bool = True
    jitter_prob: float = 0.8
    strength: float = 1.0
    colordrop: bool = True
    colordrop_prob: float = 0.2
    blur: bool = True
    blur_prob: float = 0.5
    blur_sigma_min: float = 0.1
    blur_sigma_max: float = 2.0
    noise: bool = False
    noise_prob: float = 0.5
    noise_std: float = 0.05
    rotate: bool = False
    rotate_prob: float = 0.5
    rotate_degrees: float = 30.0
    cutout: bool = False
    cutout_prob: float = 0.5
    cutout_fraction: float = 0.25

    def __post_init__(self):
        # Normalised here so an int or a list also works and the config stays hashable.
        object.__setattr__(self, "crop_size", _size_pair(self.crop_size))
        for name in ("crop_prob", "flip_prob", "jitter_prob", "colordrop_prob", "blur_prob", "noise_prob",
                     "rotate_prob", "cutout_prob", "cutout_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 < self.crop_area_min <= 1.0:
            raise ValueError(f"crop_area_min must be in (0, 1], got {self.crop_area_min}")
        if self.strength < 0.0:
            raise ValueError(f"strength must be >= 0, got {self.strength}")
        if not 0.0 < self.blur_sigma_min <= self.blur_sigma_max:
            raise ValueError("need 0 < blur_sigma_min <= blur_sigma_max, got "
                             f"{self.blur_sigma_min} and {self.blur_sigma_max}")
        if self.noise_std < 0.0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if self.rotate_degrees < 0.0:
            raise ValueError(f"rotate_degrees must be >= 0, got {self.rotate_degrees}")


def default_blur(crop_size) -> bool:
    """Whether blur should be on by default: only for images larger than 64 px on each side."""
    return min(_size_pair(crop_size)) > BLUR_MIN_SIDE


def _as_image(image):
    """Converts `image` to float32 in [0, 1] (integer images are rescaled from their full range)."""
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.float32:
        image = tf.image.convert_image_dtype(image, tf.float32)
    return image


def _as_seed(seed):
    """Checks that `seed` is an integer tensor of shape [2] usable by the stateless ops."""
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    seed.shape.assert_is_compatible_with([2])
    return seed


def _split(seed, num):
    """Splits `seed` into `num` independent seeds (a list of [2] tensors)."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=num), num=num)


def _uniform(seed, minval=0.0, maxval=1.0):
    """One float32 scalar drawn uniformly in [minval, maxval)."""
    return tf.random.stateless_uniform([], seed=seed, minval=minval, maxval=maxval)


def _resize(image, size):
    """Bicubic resize to `size`, clipped because bicubic overshoots outside [0, 1]."""
    resized = tf.image.resize(image, size, method=tf.image.ResizeMethod.BICUBIC)
    return tf.clip_by_value(resized, 0.0, 1.0)


def _maybe(views, seed, prob, fn):
    """Applies `fn(views, seed)` with probability `prob`, drawn from `seed`.

    `views` is the tuple (image,) or (image, label_map); `fn` returns the same structure.
    """
    if prob <= 0.0:
        return views
    gate_seed, op_seed = _split(seed, 2)
    if prob >= 1.0:
        return fn(views, op_seed)
    # tf.cond (not tf.where) so the skipped op is not computed.
    return tuple(tf.cond(_uniform(gate_seed) < prob, lambda: fn(views, op_seed), lambda: views))


def _on_image(fn):
    """Lifts an image-only op `fn(image, seed)` to views: a label map passes through unchanged."""
    return lambda views, seed: (fn(views[0], seed),) + tuple(views[1:])


@_graph_style
def sample_crop_box(image_shape, seed, area_min=0.08, aspect=1.0):
    """Samples the box of a random resized crop.

    Args:
      image_shape: [height, width, ...] of the image (a tensor or a list; extra entries ignored).
      seed: int32/int64 tensor of shape [2].
      area_min: smallest crop area as a fraction of the image area (the largest is 1).
      aspect: aspect ratio (width / height) of the output; the crop's aspect ratio is drawn in
        [3/4, 4/3] times this value. After 100 failed attempts the whole image is returned.

    Returns:
      (offset, size): int32 tensors [y, x] and [height, width] of the box, in pixels.
    """
    image_shape = tf.cast(tf.convert_to_tensor(image_shape), tf.int32)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_size=tf.concat([image_shape[:2], [1]], axis=0),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=_as_seed(seed),
        # 0.0, not the official 0.1: with a whole-image bounding box 0.1 would override area_min.
        min_object_covered=0.0,
        aspect_ratio_range=(CROP_ASPECT_RANGE[0] * aspect, CROP_ASPECT_RANGE[1] * aspect),
        area_range=(area_min, 1.0),
        max_attempts=CROP_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    return begin[:2], size[:2]


def _resize_views(views, crop_size):
    """Resizes the image (bicubic alone, bilinear beside a label map) and the label map (nearest)."""
    if len(views) == 1:
        return (_resize(views[0], crop_size),)
    image, label_map = views
    image = tf.clip_by_value(tf.image.resize(image, crop_size, method="bilinear"), 0.0, 1.0)
    label_map = tf.image.resize(label_map[..., tf.newaxis], crop_size, method="nearest")[..., 0]
    return image, tf.cast(label_map, views[1].dtype)


def _random_resized_crop(views, seed, crop_size, area_min):
    """Crops a random box (see `sample_crop_box`) of every view and resizes it to `crop_size`."""
    height, width = crop_size
    offset, size = sample_crop_box(tf.shape(views[0]), seed, area_min, aspect=width / height)
    cropped = [tf.slice(views[0], tf.concat([offset, [0]], 0), tf.concat([size, [-1]], 0))]
    cropped += [tf.slice(label_map, offset, size) for label_map in views[1:]]
    return _resize_views(tuple(cropped), crop_size)


def _flip(views, seed):
    """Mirrors every view left-right."""
    del seed
    return tuple(tf.reverse(view, axis=[1]) for view in views)


def _jitter_step(image, op, brightness, contrast, saturation, hue):
    """Applies colour-jitter operation number `op` (0-3, a tensor) and clips to [0, 1]."""
    branches = [
        lambda: image * brightness,
        lambda: tf.image.adjust_contrast(image, contrast),
        lambda: tf.image.adjust_saturation(image, saturation),
        lambda: tf.image.adjust_hue(image, hue),
    ]
    return tf.clip_by_value(tf.switch_case(op, branches), 0.0, 1.0)


def jitter_parameters(seed, strength):
    """The random parameters of one colour jitter of strength s, drawn from `seed`.

    Returns {"order": int32 [4] permutation of (brightness, contrast, saturation, hue),
    "brightness", "contrast", "saturation": factors uniform in [max(0, 1 - 0.8 s), 1 + 0.8 s],
    "hue": a delta uniform in [-0.2 s, 0.2 s] (capped at half a turn, since hue is cyclic)}.
    """
    order_seed, b_seed, c_seed, s_seed, h_seed = _split(seed, 5)
    lower, upper = max(0.0, 1.0 - 0.8 * strength), 1.0 + 0.8 * strength
    hue_max = min(0.2 * strength, 0.5)
    return dict(
        # A random permutation drawn statelessly (tf.random.shuffle is stateful).
        order=tf.argsort(tf.random.stateless_uniform([4], seed=order_seed)),
        brightness=_uniform(b_seed, lower, upper),
        contrast=_uniform(c_seed, lower, upper),
        saturation=_uniform(s_seed, lower, upper),
        hue=_uniform(h_seed, -hue_max, hue_max),
    )


def color_jitter(image, seed, strength):
    """SimCLR colour jitter of strength s: brightness (multiplicative), contrast, saturation and hue
    in a random order, each followed by a clip to [0, 1]; parameters from `jitter_parameters`."""
    factors = jitter_parameters(seed, strength)
    order = factors.pop("order")
    for step in range(4):
        image = _jitter_step(image, order[step], **factors)
    return image


def _color_drop(image, seed):
    """Greyscale, kept as 3 identical channels."""
    del seed
    return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def blur_radius(crop_size) -> int:
    """Radius of the blur kernel: the kernel (2 r + 1 wide) is about 10% of the image side."""
    return max(1, (min(_size_pair(crop_size)) // 10) // 2)


def _gaussian_blur(image, sigma, radius):
    """Separable Gaussian blur of a [H, W, 3] image with reflection padding."""
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-tf.square(x) / (2.0 * tf.square(sigma)))
    kernel /= tf.reduce_sum(kernel)
    channels = 3
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    padded = tf.pad(image[tf.newaxis], [[0, 0], [radius, radius], [radius, radius], [0, 0]],
                    mode="REFLECT")
    blurred = tf.nn.depthwise_conv2d(padded, vertical, strides=[1, 1, 1, 1], padding="VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, horizontal, strides=[1, 1, 1, 1], padding="VALID")
    return tf.clip_by_value(blurred[0], 0.0, 1.0)


def _random_blur(image, seed, sigma_min, sigma_max, radius):
    """Gaussian blur with sigma drawn uniformly in [sigma_min, sigma_max]."""
    return _gaussian_blur(image, _uniform(seed, sigma_min, sigma_max), radius)


def rotation_transform(angle, height, width):
    """The ImageProjectiveTransformV3 row [1, 8] of a rotation by `angle` radians about the centre.

    A positive angle turns the picture counter-clockwise as displayed (row 0 at the top). The
    transform maps output (x, y) to input coordinates, a rotation about ((w-1)/2, (h-1)/2). It is
    computed in float64 so that graph rewrites (constant folding, reordering) cannot change the
    float32 transform: eager and tf.function then give the same pixels.
    """
    angle = tf.cast(angle, tf.float64)
    height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_offset = ((width - 1.0) - (cos * (width - 1.0) - sin * (height - 1.0))) / 2.0
    y_offset = ((height - 1.0) - (sin * (width - 1.0) + cos * (height - 1.0))) / 2.0
    zero = tf.zeros([], tf.float64)
    return tf.cast(tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zero, zero])[tf.newaxis], tf.float32)


def rotate(image, angle, label_map=None):
    """Rotates a [H, W, C] image by `angle` radians about its centre (see `rotation_transform`).

    The image is interpolated bilinearly and its uncovered corners are filled by reflection; a
    [H, W] `label_map`, when given, is rotated with it by nearest neighbour and its uncovered pixels
    become `IGNORE_LABEL`. Returns the image, or (image, label_map).
    """
    shape = tf.shape(image)
    transform = rotation_transform(angle, shape[0], shape[1])
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[tf.newaxis], transforms=transform, output_shape=shape[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    rotated = tf.clip_by_value(tf.ensure_shape(rotated[0], image.shape), 0.0, 1.0)
    if label_map is None:
        return rotated
    rotated_label = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(label_map, tf.float32)[tf.newaxis, :, :, tf.newaxis], transforms=transform,
        output_shape=shape[:2], fill_value=float(IGNORE_LABEL), interpolation="NEAREST", fill_mode="CONSTANT")
    return rotated, tf.cast(rotated_label[0, :, :, 0], label_map.dtype)


def _random_rotate(views, seed, degrees):
    """Rotation of every view by one angle drawn uniformly in [-degrees, +degrees]."""
    max_angle = math.radians(degrees)
    angle = _uniform(seed, -max_angle, max_angle)
    if len(views) == 1:
        return (rotate(views[0], angle),)
    return rotate(views[0], angle, views[1])


def _gaussian_noise(image, seed, std):
    """Adds N(0, std^2) noise to every pixel and channel."""
    noise = tf.random.stateless_normal(tf.shape(image), seed=seed, stddev=std)
    return tf.clip_by_value(image + noise, 0.0, 1.0)


def _cutout(image, seed, side):
    """Sets a `side` x `side` square, centred uniformly at random and clipped at the borders, to 0."""
    shape = tf.shape(image)
    y_seed, x_seed = _split(seed, 2)
    centre_y = tf.random.stateless_uniform([], seed=y_seed, minval=0, maxval=shape[0], dtype=tf.int32)
    centre_x = tf.random.stateless_uniform([], seed=x_seed, minval=0, maxval=shape[1], dtype=tf.int32)
    top, left = centre_y - side // 2, centre_x - side // 2
    rows = tf.range(shape[0])
    cols = tf.range(shape[1])
    in_rows = (rows >= top) & (rows < top + side)
    in_cols = (cols >= left) & (cols < left + side)
    erased = in_rows[:, tf.newaxis] & in_cols[tf.newaxis, :]
    return image * tf.cast(~erased, image.dtype)[:, :, tf.newaxis]


@_graph_style
def augment_view(image, seed, config: AugmentConfig, label_map=None):
    """One augmented view of one image, and of its label map when one is given.

    Args:
      image: [H, W, 3] float32 in [0, 1] (integer images are rescaled); H, W may differ from
        `config.crop_size`.
      seed: int32/int64 tensor of shape [2]; the same seed gives a bit-identical view.
      config: which augmentations to apply.
      label_map: optional [H, W] integer label map of `image` (segmentation). Crop, flip and
        rotation move it with the image; colour and blur ops leave it alone; cutout is refused.

    Returns:
      [crop_height, crop_width, 3] float32 in [0, 1], or (that, [crop_height, crop_width] label map
      of the input's dtype). Order: random resized crop (or plain resize), flip, colour jitter,
      colour drop, blur, rotation, noise, cutout.
    """
    crop_size = config.crop_size
    views = (_as_image(image),) if label_map is None else (_as_image(image), tf.convert_to_tensor(label_map))
    if label_map is not None and config.cutout:
        raise ValueError("cutout cannot be applied with a label map: the erased pixels would keep their classes")
    seeds = dict(zip(_SEED_SLOTS, _split(_as_seed(seed), len(_SEED_SLOTS))))

    if config.crop and config.crop_prob >= 1.0:
        views = _random_resized_crop(views, seeds["crop"], crop_size, config.crop_area_min)
    elif config.crop and config.crop_prob > 0.0:
        gate_seed, crop_seed = _split(seeds["crop"], 2)
        views = tuple(tf.cond(_uniform(gate_seed) < config.crop_prob,
                              lambda: _random_resized_crop(views, crop_seed, crop_size, config.crop_area_min),
                              lambda: _resize_views(views, crop_size)))
    else:
        views = _resize_views(views, crop_size)
    views = (tf.ensure_shape(views[0], [*crop_size, 3]),) + tuple(views[1:])

    if config.flip:
        views = _maybe(views, seeds["flip"], config.flip_prob, _flip)
    if config.jitter:
        views = _maybe(views, seeds["jitter"], config.jitter_prob,
                       _on_image(lambda x, s: color_jitter(x, s, config.strength)))
    if config.colordrop:
        views = _maybe(views, seeds["colordrop"], config.colordrop_prob, _on_image(_color_drop))
    if config.blur:
        radius = blur_radius(crop_size)
        views = _maybe(views, seeds["blur"], config.blur_prob,
                       _on_image(lambda x, s: _random_blur(x, s, config.blur_sigma_min, config.blur_sigma_max,
                                                           radius)))
    if config.rotate:
        views = _maybe(views, seeds["rotate"], config.rotate_prob,
                       lambda v, s: _random_rotate(v, s, config.rotate_degrees))
    if config.noise:
        views = _maybe(views, seeds["noise"], config.noise_prob,
                       _on_image(lambda x, s: _gaussian_noise(x, s, config.noise_std)))
    if config.cutout:
        side = int(round(config.cutout_fraction * min(crop_size)))
        if side > 0:
            views = _maybe(views, seeds["cutout"], config.cutout_prob, _on_image(lambda x, s: _cutout(x, s, side)))
    image = tf.ensure_shape(views[0], [*crop_size, 3])
    if label_map is None:
        return image
    return image, tf.ensure_shape(views[1], crop_size)


@_graph_style
def augment_pair(image, seed, config: AugmentConfig):
    """Two independent views of `image` (the seed is split in two)."""
    seed1, seed2 = _split(_as_seed(seed), 2)
    return augment_view(image, seed1, config), augment_view(image, seed2, config)


def finetune_config(crop_size, crop=True, crop_prob=1.0, crop_area_min=0.08, flip=True, flip_prob=0.5):
    """Settings of the fine-tuning training view (`augment_view` with them): random resized crop and
    flip only, no colour, blur or noise."""
    return AugmentConfig(crop_size=crop_size, crop=crop, crop_prob=crop_prob, crop_area_min=crop_area_min,
                         flip=flip, flip_prob=flip_prob, jitter=False, colordrop=False, blur=False)


def _center_crop_box(image_height, image_width, crop_size):
    """Offset and size of the evaluation centre crop (int32 tensors, [y, x] and [height, width])."""
    target_height, target_width = crop_size
    target_aspect = target_width / target_height
    image_height = tf.cast(image_height, tf.float32)
    image_width = tf.cast(image_width, tf.float32)
    # The largest centred box with the output's aspect ratio, then scaled down.
    wider_than_image = target_aspect > image_width / image_height
    box_height = tf.where(wider_than_image, image_width / target_aspect, image_height)
    box_width = tf.where(wider_than_image, image_width, image_height * target_aspect)
    size = tf.cast(tf.math.rint(EVAL_CROP_PROPORTION * tf.stack([box_height, box_width])), tf.int32)
    size = tf.maximum(size, 1)
    full = tf.cast(tf.stack([image_height, image_width]), tf.int32)
    offset = (full - size + 1) // 2
    return offset, size


@_graph_style
def eval_view(image, crop_size) -> tf.Tensor:
    """Evaluation view: centre crop keeping 87.5% of each side, bicubic resize to `crop_size`.

    When both sides of `crop_size` are 32 px or less (CIFAR-size) the whole image is only resized.
    """
    crop_size = _size_pair(crop_size)
    image = _as_image(image)
    if max(crop_size) > EVAL_NO_CROP_MAX_SIDE:
        shape = tf.shape(image)
        offset, size = _center_crop_box(shape[0], shape[1], crop_size)
        image = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([size, [-1]], 0))
    return tf.ensure_shape(_resize(image, crop_size), [*crop_size, 3])
