"""SimCLR views made on a whole batch inside the training step (``--augment_on=device``).

With device-side augmentation the input pipeline only decodes and resizes images to the input
size (uint8); the two views are made here, on the accelerator, inside the (possibly XLA-compiled)
train step. Everything is vectorised over the batch (no `tf.map_fn`, no Python loop over images),
has static shapes, keeps no state and computes in float32 whatever the model's compute dtype.

Same views as the host path
---------------------------
For the same element seeds, `augment_batch_pair` returns the views `augment.augment_pair` makes
image by image, and `augment_batch` those of `augment.augment_view`: same ops, order and
probabilities, and the same random parameters, drawn per image from that image's own seed:

* `tf.random.stateless_*` take ONE seed per call, so drawing from B per-image seeds with them needs
  B calls (a loop or a map). Instead this module evaluates Philox-4x32-10, the counter-based
  generator behind those ops, with integer tensor ops vectorised over the batch. It reproduces
  `tf.random.stateless_uniform`, `stateless_normal` and `tf.random.experimental.stateless_split`
  bit for bit (the tests check this), so it follows the seed tree of `augment.augment_view`
  (one slot per op, a gate / op split per op, ...) exactly.
* The random resized crop re-implements TensorFlow's `StatelessSampleDistortedBoundingBox` kernel
  (`GenerateRandomCrop` in sample_distorted_bounding_box_op.cc), vectorised over the batch: the
  same aspect-ratio and height draws, the same +-1 height fix-ups and rejections, the same offset
  draws, from the same random stream, so its boxes equal `augment.sample_crop_box`'s.
* The resize replicates `tf.image.resize(..., "bicubic")` (Keys cubic, a = -0.5, half-pixel
  centres, the kernel's 1024-entry coefficient table and border renormalisation) by gathering the
  4 taps of each output row and column, so a crop is resized as the host resizes it.
  (`tf.image.crop_and_resize` would be bilinear: equally distributed crops, but blurrier views.)
* Contrast, saturation and hue follow the CPU kernels of `tf.image.adjust_*` operation by
  operation, and rotation re-implements `ImageProjectiveTransformV3` (bilinear, reflected borders),
  which has no XLA kernel.

What is not bit-identical (measured against the host on CPU):

* eagerly and in a `tf.function`: every parameter is identical; views differ by a few 1e-7 in
  the blur (the convolution and the kernel normalisation sum in another order) and the noise
  (sin, cos and log are vectorised differently); every other op gives the host's bits;
* under XLA, which fuses multiply-adds and may keep float32 intermediates in higher precision:
  continuous values (jitter factors, sigma, angle, interpolation weights) can differ in the last
  bit and views by a few 1e-6. Gates, jitter orders and cutout centres are integer computations
  and stay identical; a crop size is decided by float32 roundings, which a last-bit change flips
  only at an exact tie (none in 15,000 boxes compared while writing this module);
* `SimplePhilox::Uniform` rejects a 32-bit draw below (2^32 mod n) and redraws; one rejection per
  draw is reproduced, two in a row (probability below (n / 2^32)^2) are not.

Divisions that feed a rounding go through `_quotient`, and rotation coordinates through
`_affine`: Grappler otherwise rewrites them (a division by a constant into a multiplication by
its reciprocal), which moves results by an ulp.

Cost: colour jitter evaluates its four ops at each of its four steps and keeps, per image, the one
that image's order asks for (4x the host's arithmetic), and the random streams are integer
arithmetic. XLA fuses all of it; without XLA every op is a pass over the batch, which on a CPU at
224 px is several times slower than the host pipeline. Make views on the device with XLA.
"""

import math

import numpy as np
import tensorflow as tf

from simclr_tf.data import augment
from simclr_tf.data.augment import AugmentConfig

# The code below uses no Python control flow on tensors (see augment.py).
_graph_style = tf.autograph.experimental.do_not_convert

# Which sub-seed of an image's seed each op draws from; shared with the host path on purpose.
_SLOT = {name: index for index, name in enumerate(augment._SEED_SLOTS)}

# --- Philox-4x32-10, as in tensorflow/core/lib/random/philox_random.h --------------------------

_M32 = 0xFFFFFFFF
_PHILOX_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_PHILOX_KEY_STEPS = (0x9E3779B9, 0xBB67AE85)
_PHILOX_ROUNDS = 10
# GenerateKey (stateless_random_ops.cc) scrambles the user's seed with this key.
_SEED_SCRAMBLE_KEY = (0x3EC8F720, 0x02461E29)


def _philox_round(c0, c1, c2, c3, k0, k1):
    """One Philox-4x32 round, and the key raised for the next one (uint64 tensors of 32-bit words)."""
    xor = tf.bitwise.bitwise_xor
    # Products of two 32-bit words fit in uint64: the high and low halves come out exactly.
    product0 = c0 * _PHILOX_MULTIPLIERS[0]
    product1 = c2 * _PHILOX_MULTIPLIERS[1]
    hi0, lo0 = tf.bitwise.right_shift(product0, 32), tf.bitwise.bitwise_and(product0, _M32)
    hi1, lo1 = tf.bitwise.right_shift(product1, 32), tf.bitwise.bitwise_and(product1, _M32)
    return (xor(xor(hi1, c1), k0), lo1, xor(xor(hi0, c3), k1), lo0,
            tf.bitwise.bitwise_and(k0 + _PHILOX_KEY_STEPS[0], _M32),
            tf.bitwise.bitwise_and(k1 + _PHILOX_KEY_STEPS[1], _M32))


def _low_high(value):
    """The low and high 32-bit words of int64 `value` (two's complement, as C++'s uint64 cast)."""
    return (tf.bitwise.bitwise_and(value, _M32),
            tf.bitwise.bitwise_and(tf.bitwise.right_shift(value, 32), _M32))


def _sign_word(word):
    """High word of an int32 value sign-extended to 64 bits (the kernels read int32 seeds so)."""
    return tf.where(word >= 2 ** 31, tf.constant(_M32, tf.uint64), tf.constant(0, tf.uint64))


def _tree_words(seeds, wide, paths):
    """Philox blocks drawn at the leaves of `stateless_split` trees, all in one loop.

    Args:
      seeds: int64 [B, 2] seed values (int32 seeds sign-extended, as the kernels read them).
      wide: whether the seeds are int64, which decides how `stateless_split` builds new seeds.
      paths: one (splits, block) per output column: starting from the image's seed, each
        (num, index) of `splits` replaces the seed by `stateless_split(seed, num)[index]`; then
        block `block` of the final seed's stream is drawn (its words 4 x block .. 4 x block + 3).

    Returns:
      int64 [B, len(paths), 4]: the four uint32 words of each leaf block.

    The loop computes in uint64 (each 32-bit product then needs one multiplication; uint64 has
    CPU and GPU kernels for every op used) and returns int64, which the rest of the module uses
    (gathers have no uint64 GPU kernel).

    Every stateless draw is two Philox-4x32-10 evaluations: one scrambles the seed into a key
    (GenerateKey in stateless_random_ops.cc), one encrypts the block counter with it. A column
    whose path has d splits therefore needs 2 (d + 1) evaluations. All columns run in lockstep in
    one loop of 10-round evaluations (shorter paths start later), so the graph holds one small loop
    however deep and wide the tree is: unrolled rounds make XLA compile exponentially slowly (it
    duplicates the cheap ops of a round into each of their consumers), and every extra loop adds
    to its compile time.
    """
    depth = max(len(splits) for splits, _ in paths)
    evaluations = 2 * (depth + 1)
    columns = len(paths)
    first_evaluation = np.zeros(columns, np.int64)
    block_of_level = np.zeros((depth + 1, columns), np.int64)
    lane_of_level = np.zeros((depth + 1, columns), np.int64)
    for column, (splits, block) in enumerate(paths):
        offset = depth - len(splits)
        first_evaluation[column] = 2 * offset
        for level, (num, index) in enumerate(splits, start=offset):
            if not 0 <= index < num:
                raise ValueError(f"split index {index} out of range for {num} seeds")
            # stateless_split(seed, num)[index] is words 4 i .. 4 i + 3 (int64) or 2 i, 2 i + 1 (int32).
            block_of_level[level, column] = index if wide else index // 2
            lane_of_level[level, column] = 0 if wide else 2 * (index % 2)
        block_of_level[depth, column] = block
    block_of_level = tf.constant(block_of_level)
    takes_high_lanes = tf.constant(lane_of_level == 2)
    first_evaluation = tf.constant(first_evaluation, tf.int32)

    # [B, columns] zeros: broadcasting against it keeps the loop state's static shape.
    zeros = tf.zeros_like(tf.cast(seeds[:, :1], tf.uint64)) + tf.zeros([columns], tf.uint64)
    words = (*_low_high(seeds[:, 0:1]), *_low_high(seeds[:, 1:2]))
    seed_words = [tf.cast(word, tf.uint64) for word in words]
    scramble = [zeros + k for k in _SEED_SCRAMBLE_KEY]
    from_seed = tuple(zeros + word for word in seed_words) + tuple(scramble)

    def ten_rounds(*state):
        return tf.while_loop(lambda i, *_: i < _PHILOX_ROUNDS, lambda i, *s: (i + 1, *_philox_round(*s)),
                             (tf.constant(0), *state))[1:]

    def evaluate(evaluation, *state):
        c0, c1, c2, c3, k0, k1 = ten_rounds(*state)
        level = tf.minimum(evaluation // 2, depth)
        # After a key evaluation: encrypt the wanted block counter with the key just made.
        block = zeros + tf.cast(tf.gather(block_of_level, level), tf.uint64)
        to_block = (block, zeros, c2, c3, c0, c1)
        # After a block evaluation: its words are the next seed, to be scrambled into a key.
        if wide:
            to_key = (c0, c1, c2, c3, *scramble)
        else:
            high = tf.gather(takes_high_lanes, level)
            first, second = tf.where(high, c2, c0), tf.where(high, c3, c1)
            to_key = (first, _sign_word(first), second, _sign_word(second), *scramble)
        # Columns with shorter paths start late, from the image's seed.
        starts = tf.equal(first_evaluation, evaluation + 1)
        to_key = tuple(tf.where(starts, a, b) for a, b in zip(from_seed, to_key))
        is_key = tf.equal(evaluation % 2, 0)
        new = tuple(tf.where(is_key, a, b) for a, b in zip(to_block, to_key))
        # The final evaluation's output is the result, not the input of another one.
        last = tf.equal(evaluation, evaluations - 1)
        new = tuple(tf.where(last, r, n) for r, n in zip((c0, c1, c2, c3, k0, k1), new))
        return (evaluation + 1, *new)

    # Two nested loops (evaluations, and the 10 rounds of each) so a round is nothing but a round.
    state = tf.while_loop(lambda evaluation, *_: evaluation < evaluations, evaluate,
                          (tf.constant(0), *from_seed))
    return tf.cast(tf.stack(state[1:5], axis=-1), tf.int64)


def _random_bits(seeds, count):
    """The first `count` uint32 words (as int64) of each seed's stream: [B, count] from [B, 2] seeds.

    Word i comes from Philox block i // 4, lane i % 4, as in every stateless op.
    """
    blocks = -(-count // 4)
    words = _tree_words(seeds, True, [((), block) for block in range(blocks)])
    return tf.reshape(words, tf.stack([tf.shape(seeds)[0], 4 * blocks]))[:, :count]


def _seed_from_block(words, index, wide):
    """`stateless_split(seed, num)[index]` from the block (words [..., 4]) that holds it, as values."""
    if wide:
        high = words[..., 1::2]
        high = tf.where(high >= 2 ** 31, high - 2 ** 32, high)
        return high * 2 ** 32 + words[..., 0::2]
    pair = words[..., 2 * (index % 2):2 * (index % 2) + 2]
    return tf.where(pair >= 2 ** 31, pair - 2 ** 32, pair)


def _split(seeds, num, wide):
    """`tf.random.experimental.stateless_split` of every seed in `seeds` [B, 2]: [B, num, 2].

    `wide` says whether the seeds are int64 (each new seed value is made of two uint32 draws) or
    int32 (one draw, reinterpreted as signed). Values are returned in an int64 tensor either way.
    """
    blocks = num if wide else -(-num // 2)
    words = _tree_words(seeds, wide, [((), block) for block in range(blocks)])
    return tf.stack([_seed_from_block(words[:, i if wide else i // 2], i, wide) for i in range(num)], axis=1)


def _unit_float(words):
    """Uint32ToFloat: uniform float32 in [0, 1) from the low 23 bits of each word."""
    mantissa = tf.bitwise.bitwise_or(tf.bitwise.bitwise_and(words, 0x7FFFFF), 0x3F800000)
    return tf.bitcast(tf.cast(mantissa, tf.int32), tf.float32) - 1.0


def _quotient(numerator, denominator):
    """numerator / denominator rounded to float32 exactly as a float32 division rounds it.

    Grappler rewrites a division by a constant into a multiplication by its reciprocal, and 1 / x
    into a Reciprocal op, XLA does the former too, and either can be an ulp off; where the quotient
    is then rounded to an integer (crop sizes, coordinates), that changes the outcome. Dividing in
    float64 and rounding once to float32 gives the correctly rounded float32 quotient (float64 has
    more than 2 x 24 + 2 bits), and an ulp of float64 error from those rewrites practically never
    survives that rounding.
    """
    return tf.cast(tf.cast(numerator, tf.float64) / tf.cast(denominator, tf.float64), tf.float32)


def _affine(a, x, b, y, c):
    """(a * x + b * y) + c, each operation rounded to float32 as the C++ kernels round it.

    Through float64 (each product and sum of float32 values is exact there, then rounded once), so
    that Grappler cannot rewrite the float32 operations: the source coordinates of a graph then
    match the kernel's to the bit.
    """
    def rounded(v):
        return tf.cast(tf.cast(v, tf.float32), tf.float64)

    a, x, b, y, c = (tf.cast(v, tf.float64) for v in (a, x, b, y, c))
    return tf.cast(rounded(rounded(a * x) + rounded(b * y)) + c, tf.float32)


def _uniform(words, minval, maxval):
    """`tf.random.stateless_uniform(minval=, maxval=)` (float32) from the words it would draw."""
    low = np.float32(minval)
    width = np.float32(np.float32(maxval) - low)
    return _unit_float(words) * width + low


def _normal(words):
    """`tf.random.stateless_normal` (float32, Box-Muller on consecutive word pairs) of [..., 2n] words."""
    shape = tf.shape(words)
    pairs = tf.reshape(words, tf.concat([shape[:-1], [-1, 2]], axis=0))
    radius_u = tf.maximum(_unit_float(pairs[..., 0]), np.float32(1.0e-7))
    # 2 * M_PI is a double in the kernel: the product is rounded to double, then to float.
    angle = tf.cast(2.0 * math.pi * tf.cast(_unit_float(pairs[..., 1]), tf.float64), tf.float32)
    radius = tf.sqrt(-2.0 * tf.math.log(radius_u))
    normal = tf.stack([tf.sin(angle) * radius, tf.cos(angle) * radius], axis=-1)
    return tf.reshape(normal, shape)


# --- Random resized crop: StatelessSampleDistortedBoundingBox, vectorised -----------------------


def _word_at(words, position):
    """words[i, position[i]] for a short window of words [B, n] (the last word past the end)."""
    # A masked sum rather than a gather: XLA copies a gather's index arithmetic into every
    # consumer, but not a reduction's.
    position = tf.minimum(position, words.shape[-1] - 1)[:, tf.newaxis]
    return tf.reduce_sum(tf.where(tf.equal(tf.range(words.shape[-1], dtype=tf.int64), position), words, 0), axis=1)


def _uniform_below(words, position, bound):
    """SimplePhilox::Uniform(bound) read from stream position `position`: (value, words consumed).

    ExactUniformInt masks powers of two and otherwise rejects draws below 2^32 mod bound; one
    rejection is followed (a second in a row has probability below (bound / 2^32)^2).
    """
    bound = tf.maximum(bound, 1)
    power_of_two = tf.equal(tf.bitwise.bitwise_and(bound, bound - 1), 0)
    reject_below = tf.math.floormod(tf.constant(_M32, tf.int64), bound) + 1
    first = _word_at(words, position)
    rejected = tf.logical_and(tf.logical_not(power_of_two), first < reject_below)
    value = tf.where(rejected, _word_at(words, position + 1), first)
    return tf.math.floormod(value, bound), 1 + tf.cast(rejected, tf.int64)


@_graph_style
def sample_crop_boxes(seeds, image_shape, area_min=0.08, aspect=1.0, min_object_covered=0.0,
                      max_attempts=augment.CROP_MAX_ATTEMPTS):
    """Random-resized-crop boxes of a batch: `augment.sample_crop_box` for every seed at once.

    Re-implements the kernel of `tf.image.stateless_sample_distorted_bounding_box` (whole-image
    bounding box, `use_image_if_no_bounding_boxes`) vectorised over the batch: per attempt an
    aspect ratio uniform in [3/4, 4/3] x `aspect`, a height uniform among the integers from
    lrint(sqrt(min_area / ratio)) to the largest that fits, width = lrint(height x ratio), the
    kernel's +-1 height fix-ups, rejection of boxes outside the area range or the image or covering
    less than `min_object_covered` of the image, then an offset uniform over the positions the kernel
    allows; each attempt reads the stream where the previous one stopped. Attempts run in a loop
    vectorised over the batch that ends once every image has a box; after `max_attempts` failures
    the box is the whole image. For the same seed the boxes equal the kernel's.

    Args:
      seeds: [B, 2] int32/int64, one stateless seed per image.
      image_shape: static (height, width[, channels]) of the images.
      area_min: smallest crop area as a fraction of the image area (the largest is 1).
      aspect: width / height of the output.
      min_object_covered: smallest fraction of the whole image the crop must cover (0.0 is what
        `augment.sample_crop_box` passes).
      max_attempts: attempts before falling back to the whole image.

    Returns:
      (offset, size): int32 [B, 2] tensors, [y, x] and [height, width] in pixels.
    """
    seeds, _ = _as_seeds(seeds)
    words = _random_bits(seeds, _crop_words(max_attempts))
    return _crop_boxes_from_words(words, image_shape, area_min, aspect, min_object_covered, max_attempts)


def _crop_words(max_attempts):
    """Words of each image's random stream the crop sampler may read.

    An attempt reads 1 to 4 words (one more per rejected draw): `max_attempts` attempts stay
    within 4 x max_attempts words, plus the look-ahead of the last one.
    """
    return 4 * max_attempts + 16


# The most words one attempt can read: the ratio, then height, row and column, each redrawn once.
_ATTEMPT_WORDS = 7


def _lrint(x):
    """lrintf: round half to even, to int64."""
    return tf.cast(tf.math.rint(x), tf.int64)


def _attempt_shapes(words, height, width, area_range, ratio_range):
    """The parts of an attempt that depend only on its first word.

    Returns (ratio, smallest height, largest height, whether a height is drawn).

    Elementwise, so they are computed for every stream position before the attempt loop (inside
    it, XLA would copy them into each of their many consumers).
    """
    min_area, max_area = area_range
    ratio_low, ratio_high = ratio_range
    ratio = _unit_float(words) * np.float32(ratio_high - ratio_low) + ratio_low
    crop_height = _lrint(tf.sqrt(_quotient(min_area, ratio)))
    max_height = _lrint(tf.sqrt(_quotient(max_area, ratio)))
    # The kernel's "largest max_height with lrint(max_height * ratio) <= width", in double.
    fitted = tf.cast(tf.floor((width + 0.5 - float(np.float32(1e-7))) / tf.cast(ratio, tf.float64)),
                     tf.int64)
    fitted = tf.where(_lrint(tf.cast(fitted, tf.float32) * ratio) > width, fitted - 1, fitted)
    max_height = tf.where(_lrint(tf.cast(max_height, tf.float32) * ratio) > width, fitted, max_height)
    max_height = tf.minimum(max_height, height)
    return ratio, tf.minimum(crop_height, max_height), max_height, crop_height < max_height


def _crop_attempt(words, shapes, height, width, area_range, min_object_covered):
    """One GenerateRandomCrop attempt per image from its next words [B, _ATTEMPT_WORDS].

    `shapes` is `_attempt_shapes` of the first word. Returns (valid, words consumed, offset_y,
    offset_x, crop_height, crop_width), int64 [B] (bool for valid), following the kernel's
    arithmetic in its order and float32 precision.
    """
    min_area, max_area = area_range
    lrint = _lrint

    def as_float(x):
        return tf.cast(x, tf.float32)

    ratio, crop_height, max_height, draws_height = shapes
    first_draw = tf.ones_like(crop_height)
    extra, height_words = _uniform_below(words, first_draw, max_height - crop_height + 1)
    crop_height = tf.where(draws_height, crop_height + extra, crop_height)
    height_words = tf.where(draws_height, height_words, 0)
    crop_width = lrint(as_float(crop_height) * ratio)
    area = as_float(crop_width * crop_height)
    too_small = area < min_area
    crop_height = tf.where(too_small, crop_height + 1, crop_height)
    crop_width = tf.where(too_small, lrint(as_float(crop_height) * ratio), crop_width)
    area = tf.where(too_small, as_float(crop_width * crop_height), area)
    too_large = area > max_area
    crop_height = tf.where(too_large, crop_height - 1, crop_height)
    crop_width = tf.where(too_large, lrint(as_float(crop_height) * ratio), crop_width)
    area = tf.where(too_large, as_float(crop_width * crop_height), area)
    fits = ((area >= min_area) & (area <= max_area) & (crop_width <= width) & (crop_height <= height)
            & (crop_width > 0) & (crop_height > 0))

    # Offsets are drawn only for boxes that fit, and only along sides shorter than the image;
    # Uniform(n) is in [0, n), so a box never touches the image's last row or column.
    y_draw = first_draw + height_words
    draws_y = fits & (crop_height < height)
    offset_y, y_words = _uniform_below(words, y_draw, height - crop_height)
    offset_y, y_words = tf.where(draws_y, offset_y, 0), tf.where(draws_y, y_words, 0)
    draws_x = fits & (crop_width < width)
    offset_x, x_words = _uniform_below(words, y_draw + y_words, width - crop_width)
    offset_x, x_words = tf.where(draws_x, offset_x, 0), tf.where(draws_x, x_words, 0)

    covered = _quotient(area, np.float32(np.float32(width) * np.float32(height)))
    valid = fits & (area >= 1.0) & (covered >= np.float32(min_object_covered))
    consumed = first_draw + height_words + y_words + x_words
    return valid, consumed, offset_y, offset_x, crop_height, crop_width


def _crop_boxes_from_words(words, image_shape, area_min, aspect, min_object_covered, max_attempts):
    """`sample_crop_boxes` from the words [B, _crop_words(max_attempts)] of each image's stream."""
    height, width = (int(s) for s in tuple(image_shape)[:2])
    # The op's attributes are float32; min_area is computed in the kernel's order.
    ratio_range = (np.float32(augment.CROP_ASPECT_RANGE[0] * aspect),
                   np.float32(augment.CROP_ASPECT_RANGE[1] * aspect))
    area_range = (np.float32(np.float32(np.float32(area_min) * np.float32(width)) * np.float32(height)),
                  np.float32(np.float32(np.float32(1.0) * np.float32(width)) * np.float32(height)))
    stream_length = words.shape[-1]
    batch = tf.shape(words)[:1]
    look_ahead = tf.range(_ATTEMPT_WORDS, dtype=tf.int64)

    ratio, *integer_shapes = _attempt_shapes(words, height, width, area_range, ratio_range)
    # One table, one gather per attempt: the ratio travels as its float32 bits.
    shape_table = tf.stack([tf.cast(tf.bitcast(ratio, tf.int32), tf.int64)]
                           + [tf.cast(x, tf.int64) for x in integer_shapes], axis=-1)

    def attempt(index, position, found, box):
        window = tf.gather(words, tf.minimum(position[:, tf.newaxis] + look_ahead, stream_length - 1),
                           batch_dims=1)
        at = tf.minimum(position, stream_length - 1)[:, tf.newaxis]
        shapes = tf.unstack(tf.gather(shape_table, at, batch_dims=1)[:, 0], axis=-1)
        shapes = [tf.bitcast(tf.cast(shapes[0], tf.int32), tf.float32), shapes[1], shapes[2], shapes[3] > 0]
        valid, consumed, *new_box = _crop_attempt(window, shapes, height, width, area_range, min_object_covered)
        # Attempts never start this late unless draws were rejected many times over.
        valid &= position + _ATTEMPT_WORDS <= stream_length
        box = tf.where((valid & ~found)[:, tf.newaxis], tf.stack(new_box, axis=1), box)
        position = tf.where(found, position, position + consumed)
        return index + 1, position, found | valid, box

    def searching(index, position, found, box):
        return (index < max_attempts) & ~tf.reduce_all(found)

    # Attempt k starts where attempt k - 1 stopped reading, so attempts are a loop (over attempts,
    # vectorised over the batch) that stops once every image has its box, usually after a few
    # attempts. Images that exhaust max_attempts keep the whole image, as the kernel does.
    whole_image = tf.tile(tf.constant([[0, 0, height, width]], tf.int64), tf.concat([batch, [1]], 0))
    start = (tf.constant(0), tf.zeros(batch, tf.int64), tf.zeros(batch, tf.bool), whole_image)
    _, _, _, box = tf.while_loop(searching, attempt, start)
    box = tf.cast(box, tf.int32)
    return box[:, :2], box[:, 2:]


# --- Parameters ---------------------------------------------------------------------------------


def _as_seeds(seeds):
    """[B, 2] seeds as int64 values, and whether they are int64 (their splits are then int64 too)."""
    seeds = tf.convert_to_tensor(seeds)
    if seeds.dtype not in (tf.int32, tf.int64):
        seeds = tf.cast(seeds, tf.int64)
    seeds.shape.assert_is_compatible_with([None, 2])
    return tf.cast(seeds, tf.int64), seeds.dtype == tf.int64


def _cutout_side(config):
    """Side of the cutout square in pixels, as augment.augment_view rounds it (0: no cutout)."""
    return int(round(config.cutout_fraction * min(config.crop_size)))


def _gate(gate_u, prob):
    """The per-image coin of `augment._maybe`: never below p = 0, always from p = 1."""
    if prob <= 0.0:
        return tf.zeros_like(gate_u, tf.bool)
    if prob >= 1.0:
        return tf.ones_like(gate_u, tf.bool)
    return gate_u < np.float32(prob)


@_graph_style
def sample_view_parameters(seeds, config: AugmentConfig, image_shape, min_object_covered=0.0):
    """Every random parameter of one view per image, as `augment.augment_view` draws it.

    Args:
      seeds: [B, 2] int32/int64, one stateless seed per image (the seed `augment_view` would get).
      config: which augmentations are applied.
      image_shape: static (height, width[, channels]) of the input images.
      min_object_covered: passed to `sample_crop_boxes` (0.0 as on the host).

    Returns:
      A dict of [B, ...] tensors. Gates (bool [B], True where the op is applied): `crop`, `flip`,
      `jitter`, `colordrop`, `blur`, `rotate`, `noise`, `cutout`. Parameters: `crop_offset` and
      `crop_size` (int32 [B, 2], [y, x] / [height, width]; the whole image where `crop` is False),
      `brightness`, `contrast`, `saturation` (factors), `hue` (delta, in turns), `jitter_order`
      (int32 [B, 4], 0-3 = brightness, contrast, saturation, hue, in the order applied),
      `blur_sigma`, `rotate_angle` (radians, positive = counter-clockwise), `noise_seed` ([B, 2],
      the seed the per-pixel noise is drawn from) and `cutout_centre` (int32 [B, 2], [y, x] in
      the output). Parameters of an op that `config` turns off (or whose probability is 0) are
      neutral constants (factor 1, delta, sigma, angle and centre 0), not draws.
    """
    seeds, wide = _as_seeds(seeds)
    height, width = (int(s) for s in tuple(image_shape)[:2])
    crop_height, crop_width = config.crop_size
    batch = tf.shape(seeds)[:1]

    def enabled(name):
        return getattr(config, name) and getattr(config, f"{name}_prob") > 0.0 and (
            name != "cutout" or _cutout_side(config) > 0)

    # The seed tree of augment.augment_view: the image seed is split into one slot per op; every
    # op splits its slot into (gate seed, op seed), as `augment._maybe` does; ops then draw from
    # their op seed (jitter and cutout after one more split). Every draw is a leaf of the tree.
    def slot(name):
        return (len(_SLOT), _SLOT[name])

    gate, op = (2, 0), (2, 1)
    paths, columns = [], {}

    def add(name, leaves):
        columns[name] = slice(len(paths), len(paths) + len(leaves))
        paths.extend(leaves)

    def seed_leaf(parent, split):
        """The leaf holding seed `stateless_split(parent seed, num)[index]` itself."""
        num, index = split
        return [(parent, index if wide else index // 2)]

    add("gate", [((slot(name), gate), 0) for name in _SLOT])
    add("op", [((slot(name), op), 0) for name in _SLOT])
    if enabled("crop"):
        # With crop_prob = 1 the slot seed itself is the crop seed (no gate is drawn). Its long
        # stream is drawn separately: in the tree it would run through every level.
        crop_split = slot("crop") if config.crop_prob >= 1.0 else op
        add("crop", seed_leaf(() if config.crop_prob >= 1.0 else (slot("crop"),), crop_split))
    if enabled("jitter"):
        # augment.color_jitter: sub-seeds (order, brightness, contrast, saturation, hue).
        add("jitter", [((slot("jitter"), op, (5, index)), 0) for index in range(5)])
    if enabled("cutout"):
        # augment._cutout: sub-seeds (row, column).
        add("cutout", [((slot("cutout"), op, (2, index)), 0) for index in range(2)])
    if enabled("noise"):
        # The noise field is drawn later, from the op seed itself.
        add("noise", seed_leaf((slot("noise"),), op))
    with tf.name_scope("seed_tree"):
        words = _tree_words(seeds, wide, paths)
    gate_u = _unit_float(words[:, columns["gate"], 0])
    op_words = words[:, columns["op"], 0]
    params = {}
    if enabled("crop"):
        params["crop"] = _gate(gate_u[:, _SLOT["crop"]], config.crop_prob)
        with tf.name_scope("crop_boxes"):
            crop_seeds = _seed_from_block(words[:, columns["crop"].start], crop_split[1], wide)
            crop_words = _random_bits(crop_seeds, _crop_words(augment.CROP_MAX_ATTEMPTS))
            offset, size = _crop_boxes_from_words(crop_words, (height, width), config.crop_area_min,
                                                  crop_width / crop_height, min_object_covered,
                                                  augment.CROP_MAX_ATTEMPTS)
        params["crop_offset"] = tf.where(params["crop"][:, tf.newaxis], offset, 0)
        params["crop_size"] = tf.where(params["crop"][:, tf.newaxis], size,
                                       tf.constant([height, width], tf.int32))
    else:
        params["crop"] = tf.zeros(batch, tf.bool)
        params["crop_offset"] = tf.zeros(tf.concat([batch, [2]], 0), tf.int32)
        params["crop_size"] = tf.tile(tf.constant([[height, width]], tf.int32), tf.concat([batch, [1]], 0))

    for name in ("flip", "jitter", "colordrop", "blur", "rotate", "noise", "cutout"):
        params[name] = (_gate(gate_u[:, _SLOT[name]], getattr(config, f"{name}_prob")) if enabled(name)
                        else tf.zeros(batch, tf.bool))

    ones, zeros = tf.ones(batch, tf.float32), tf.zeros(batch, tf.float32)
    if enabled("jitter"):
        jitter_words = words[:, columns["jitter"]]
        lower, upper = max(0.0, 1.0 - 0.8 * config.strength), 1.0 + 0.8 * config.strength
        hue_max = min(0.2 * config.strength, 0.5)
        for index, name in enumerate(("brightness", "contrast", "saturation"), start=1):
            params[name] = _uniform(jitter_words[:, index, 0], lower, upper)
        params["hue"] = _uniform(jitter_words[:, 4, 0], -hue_max, hue_max)
        params["jitter_order"] = tf.argsort(_unit_float(jitter_words[:, 0, :4]), axis=-1)
    else:
        params.update(brightness=ones, contrast=ones, saturation=ones, hue=zeros,
                      jitter_order=tf.tile(tf.range(4)[tf.newaxis], tf.concat([batch, [1]], 0)))

    params["blur_sigma"] = (_uniform(op_words[:, _SLOT["blur"]], config.blur_sigma_min, config.blur_sigma_max)
                            if enabled("blur") else zeros)
    max_angle = math.radians(config.rotate_degrees)
    params["rotate_angle"] = (_uniform(op_words[:, _SLOT["rotate"]], -max_angle, max_angle)
                              if enabled("rotate") else zeros)
    if enabled("noise"):
        noise_seeds = _seed_from_block(words[:, columns["noise"].start], op[1], wide)
        params["noise_seed"] = noise_seeds if wide else tf.cast(noise_seeds, tf.int32)
    else:
        params["noise_seed"] = tf.zeros(tf.concat([batch, [2]], 0), tf.int64 if wide else tf.int32)
    if enabled("cutout"):
        # Row and column are int32 uniforms in [0, crop height) and [0, crop width): word mod range.
        params["cutout_centre"] = tf.cast(tf.math.floormod(
            words[:, columns["cutout"], 0], tf.constant([crop_height, crop_width], tf.int64)), tf.int32)
    else:
        params["cutout_centre"] = tf.zeros(tf.concat([batch, [2]], 0), tf.int32)
    return params


# --- Ops on a batch -----------------------------------------------------------------------------


def _as_images(images):
    """A float32 [B, H, W, 3] batch in [0, 1] with static H and W (integers rescaled like the host)."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[1] is None or images.shape[2] is None or images.shape[3] != 3:
        raise ValueError("images must be [batch, height, width, 3] with static height and width, "
                         f"got {images.shape}")
    if images.dtype.is_integer:
        return tf.image.convert_image_dtype(images, tf.float32)
    return tf.cast(images, tf.float32)


def _where(gate, new, old):
    """Per-image select: `new` where the [B] bool `gate` is set, else `old`."""
    return tf.where(tf.reshape(gate, [-1, 1, 1, 1]), new, old)


def _keys_cubic_table():
    """The ResizeBicubic kernel's coefficient table (Keys, a = -0.5), computed in double like it."""
    size, a = 1024, -0.5
    x = np.arange(size + 1, dtype=np.float64) / size
    table = np.empty((size + 1, 2), np.float64)
    table[:, 0] = ((a + 2) * x - (a + 3)) * x * x + 1
    x = x + 1.0
    table[:, 1] = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return table.astype(np.float32).reshape(-1)


_CUBIC_TABLE = _keys_cubic_table()
_CUBIC_TABLE_SIZE = 1024


def _cubic_taps(start, length, out_size):
    """Source rows (or columns) and weights of a bicubic resize of [start, start + length) to out_size.

    Returns int64 [B, out_size, 4] absolute indices and float32 [B, out_size, 4] weights, as
    ResizeBicubic (half-pixel centres, Keys cubic) computes them for the cropped image: taps
    outside the crop get weight 0 and the weights are renormalised.
    """
    length = tf.cast(length, tf.int64)[:, tf.newaxis]
    scale = _quotient(tf.cast(length, tf.float32), np.float32(out_size))
    centre = tf.range(out_size, dtype=tf.float32)[tf.newaxis] + 0.5
    location = centre * scale - 0.5
    floor = tf.floor(location)
    table_offset = tf.cast(tf.math.rint((location - floor) * _CUBIC_TABLE_SIZE), tf.int64)
    taps = tf.cast(floor, tf.int64)[..., tf.newaxis] + tf.constant([-1, 0, 1, 2], tf.int64)
    bounded = tf.clip_by_value(taps, 0, length[..., tf.newaxis] - 1)
    table_offset = table_offset[..., tf.newaxis]
    entries = tf.concat([table_offset * 2 + 1, table_offset * 2,
                         (_CUBIC_TABLE_SIZE - table_offset) * 2,
                         (_CUBIC_TABLE_SIZE - table_offset) * 2 + 1], axis=-1)
    weights = tf.where(tf.equal(bounded, taps), tf.gather(_CUBIC_TABLE, entries), 0.0)
    total = ((weights[..., 0] + weights[..., 1]) + weights[..., 2]) + weights[..., 3]
    renormalise = tf.abs(total) >= np.float32(1000.0 * np.finfo(np.float32).tiny)
    weights = tf.where(renormalise[..., tf.newaxis], weights * _quotient(1.0, total)[..., tf.newaxis], weights)
    return tf.cast(start, tf.int64)[:, tf.newaxis, tf.newaxis] + bounded, weights


def _weighted_taps(images, indices, weights, axis):
    """sum_k weights[..., k] * images gathered at indices[..., k] along `axis`, summed in tap order."""
    # One gather of all 4 taps: with 4 gathers XLA would copy the index arithmetic into each.
    taps = indices.shape[-1]
    flat = tf.reshape(indices, tf.stack([tf.shape(indices)[0], -1]))
    gathered = tf.gather(images, flat, axis=axis, batch_dims=1)
    shape = tf.unstack(tf.shape(gathered))
    shape[axis:axis + 1] = [shape[axis] // taps, taps]
    gathered = tf.unstack(tf.reshape(gathered, tf.stack(shape)), axis=axis + 1)
    total = None
    for k in range(taps):
        weight = weights[..., k]
        weight = weight[:, :, tf.newaxis, tf.newaxis] if axis == 1 else weight[:, tf.newaxis, :, tf.newaxis]
        term = gathered[k] * weight
        total = term if total is None else total + term
    return total


def _crop_and_resize(images, offset, size, crop_size):
    """Crops box (offset, size) of every image and resizes it bicubically to `crop_size`, clipped."""
    rows, row_weights = _cubic_taps(offset[:, 0], size[:, 0], crop_size[0])
    cols, col_weights = _cubic_taps(offset[:, 1], size[:, 1], crop_size[1])
    resized = _weighted_taps(images, rows, row_weights, axis=1)
    resized = _weighted_taps(resized, cols, col_weights, axis=2)
    return tf.clip_by_value(resized, 0.0, 1.0)


def _per_image(values):
    """[B] values broadcastable against a [B, H, W, C] batch."""
    return tf.reshape(values, [-1, 1, 1, 1])


def _image_sum(images):
    """Per-image, per-channel sum over H x W, folding halves like the AdjustContrastv2 CPU kernel."""
    batch_shape = tf.shape(images)[:1]
    flat = tf.reshape(images, tf.concat([batch_shape, [-1, images.shape[-1]]], 0))
    remaining = images.shape[1] * images.shape[2]
    while True:
        right = remaining // 2
        left = remaining - right
        folded = flat[:, left:left + right] + flat[:, :right]
        flat = tf.concat([folded, flat[:, right:left]], axis=1) if left > right else folded
        remaining = left
        if remaining <= 1:
            return flat[:, 0]


def _adjust_contrast(images, factor):
    """tf.image.adjust_contrast with a per-image factor: mean + factor * (x - mean), per channel."""
    scaling = np.float32(np.float32(1.0) / np.float32(images.shape[1] * images.shape[2]))
    mean = (_image_sum(images) * scaling)[:, tf.newaxis, tf.newaxis, :]
    return mean + _per_image(factor) * (images - mean)


def _adjust_saturation(images, factor):
    """tf.image.adjust_saturation with a per-image factor (the CPU kernel's HSV round trip)."""
    r, g, b = tf.unstack(images, axis=-1)
    value = tf.maximum(r, tf.maximum(g, b))
    chroma = value - tf.minimum(r, tf.minimum(g, b))
    saturation = tf.where(value > 0, chroma / value, 0.0)
    norm = _quotient(1.0, 6.0 * chroma)

    def plus_double(x, constant):
        # The kernel adds a double constant to a float: the sum is rounded once, to float.
        return tf.cast(tf.cast(x, tf.float64) + constant, tf.float32)

    hue = tf.where(tf.equal(r, value), norm * (g - b),
                   tf.where(tf.equal(g, value), plus_double(norm * (b - r), 2.0 / 6.0),
                            plus_double(norm * (r - g), 4.0 / 6.0)))
    hue = tf.where(chroma <= 0.0, 0.0, hue)
    hue = tf.where(hue < 0.0, hue + 1.0, hue)
    saturation = tf.minimum(1.0, tf.maximum(0.0, saturation * tf.reshape(factor, [-1, 1, 1])))

    chroma = saturation * value
    base = value - chroma
    sector = hue * 6.0
    category = tf.cast(sector, tf.int32)
    # The kernel's "subtract 2 until below 2" is exact; so is sector - 2 * floor(sector / 2).
    mod2 = sector - 2.0 * tf.floor(sector / 2.0)
    x = chroma * (1.0 - tf.abs(mod2 - 1.0))
    zero = tf.zeros_like(x)
    rgb_by_category = [(chroma, x, zero), (x, chroma, zero), (zero, chroma, x),
                       (zero, x, chroma), (x, zero, chroma), (chroma, zero, x)]
    channels = []
    for channel in range(3):
        out = zero
        for index, rgb in enumerate(rgb_by_category):
            out = tf.where(tf.equal(category, index), rgb[channel], out)
        channels.append(out + base)
    return tf.stack(channels, axis=-1)


def _adjust_hue(images, delta):
    """tf.image.adjust_hue with a per-image delta (the CPU kernel's hue / value-range round trip)."""
    r, g, b = tf.unstack(images, axis=-1)
    # (v_max, v_mid, v_min, category) of the kernel's six orderings of r, g, b.
    r_lt_g = r < g
    orderings = [
        (r_lt_g & (b < r), (g, r, b, 1)),
        (r_lt_g & ~(b < r) & (b > g), (b, g, r, 3)),
        (r_lt_g & ~(b < r) & ~(b > g), (g, b, r, 2)),
        (~r_lt_g & (b < g), (r, g, b, 0)),
        (~r_lt_g & ~(b < g) & (b > r), (b, r, g, 4)),
        (~r_lt_g & ~(b < g) & ~(b > r), (r, b, g, 5)),
    ]
    v_max, v_mid, v_min = r, r, r
    category = tf.zeros_like(r, tf.int32)
    for condition, (high, mid, low, index) in orderings:
        v_max = tf.where(condition, high, v_max)
        v_mid = tf.where(condition, mid, v_mid)
        v_min = tf.where(condition, low, v_min)
        category = tf.where(condition, index, category)
    ratio = (v_mid - v_min) / (v_max - v_min)
    increasing = tf.equal(category % 2, 0)
    hue = tf.cast(category, tf.float32) + tf.where(increasing, ratio, 1.0 - ratio)
    hue = tf.where(tf.equal(v_max, v_min), 0.0, hue)
    hue = hue + tf.reshape(delta, [-1, 1, 1]) * 6.0
    # |delta| <= 0.5, so one wrap each way is enough (the kernel loops).
    hue = tf.where(hue < 0.0, hue + 6.0, hue)
    hue = tf.where(hue >= 6.0, hue - 6.0, hue)

    category = tf.cast(hue, tf.int32)
    ratio = hue - tf.cast(category, tf.float32)
    ratio = tf.where(tf.equal(category % 2, 0), ratio, 1.0 - ratio)
    v_mid = v_min + ratio * (v_max - v_min)
    rgb_by_category = [(v_max, v_mid, v_min), (v_mid, v_max, v_min), (v_min, v_max, v_mid),
                       (v_min, v_mid, v_max), (v_mid, v_min, v_max)]
    channels = []
    for channel in range(3):
        out = (v_max, v_min, v_mid)[channel]  # category 5 is the kernel's default
        for index, rgb in enumerate(rgb_by_category):
            out = tf.where(tf.equal(category, index), rgb[channel], out)
        channels.append(out)
    return tf.stack(channels, axis=-1)


def _color_jitter(images, params):
    """Brightness, contrast, saturation and hue in each image's own order, clipped after each."""
    order = params["jitter_order"]

    def one_step(step, images):
        candidates = [images * _per_image(params["brightness"]),
                      _adjust_contrast(images, params["contrast"]),
                      _adjust_saturation(images, params["saturation"]),
                      _adjust_hue(images, params["hue"])]
        op = tf.gather(order, step, axis=1)
        stepped = candidates[3]
        for index in (2, 1, 0):
            stepped = _where(tf.equal(op, index), candidates[index], stepped)
        return step + 1, tf.clip_by_value(stepped, 0.0, 1.0)

    # A loop rather than 4 unrolled steps, for the reason given in `_tree_words`: XLA would
    # duplicate each step's ops into the 4 candidates of the next.
    _, images = tf.while_loop(lambda step, _: step < 4, one_step, (tf.constant(0), images))
    return images


def _color_drop(images):
    """Greyscale (tf.image.rgb_to_grayscale) kept as 3 identical channels."""
    grey = tf.tensordot(images, [0.2989, 0.5870, 0.1140], [[-1], [-1]])
    return tf.tile(grey[..., tf.newaxis], [1, 1, 1, 3])


def _gaussian_blur(images, sigma, radius):
    """Separable Gaussian blur with one sigma per image and reflection padding.

    The batch is moved into the channel axis so that one depthwise convolution applies every
    image's own kernel.
    """
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernels = tf.exp(-tf.square(taps)[tf.newaxis] / (2.0 * tf.square(sigma))[:, tf.newaxis])
    kernels /= tf.reduce_sum(kernels, axis=1, keepdims=True)
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    stacked = tf.reshape(tf.transpose(padded, [1, 2, 0, 3]), [1, height + 2 * radius, width + 2 * radius, -1])
    per_channel = tf.transpose(tf.repeat(kernels, channels, axis=0))
    vertical = tf.reshape(per_channel, [2 * radius + 1, 1, -1, 1])
    horizontal = tf.reshape(per_channel, [1, 2 * radius + 1, -1, 1])
    blurred = tf.nn.depthwise_conv2d(stacked, vertical, strides=[1, 1, 1, 1], padding="VALID")
    blurred = tf.nn.depthwise_conv2d(blurred, horizontal, strides=[1, 1, 1, 1], padding="VALID")
    blurred = tf.transpose(tf.reshape(blurred, [height, width, -1, channels]), [2, 0, 1, 3])
    return tf.clip_by_value(blurred, 0.0, 1.0)


def _rotation_transforms(angles, height, width):
    """ImageProjectiveTransformV3 rows [B, 8] rotating by `angles` [B] radians about the centre.

    Same transform as `augment.rotate` (computed in float64, then float32): output (x, y) maps to
    the input coordinates of a rotation about ((width - 1) / 2, (height - 1) / 2); a positive
    angle turns the picture counter-clockwise as displayed.
    """
    angles = tf.cast(angles, tf.float64)
    h, w = float(height) - 1.0, float(width) - 1.0
    cos, sin = tf.cos(angles), tf.sin(angles)
    x_offset = (w - (cos * w - sin * h)) / 2.0
    y_offset = (h - (sin * w + cos * h)) / 2.0
    zero = tf.zeros_like(angles)
    return tf.cast(tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zero, zero], axis=1), tf.float32)


def _reflect_coordinate(coordinate, length):
    """ImageProjectiveTransform's FILL_REFLECT mapping of an input coordinate into [0, length - 1]."""
    if length <= 1:
        return tf.zeros_like(coordinate)
    period = 2 * length

    def times_period(x):
        return tf.cast(period * tf.cast(x, tf.int64), tf.float32)

    below = times_period(_quotient(-coordinate, float(period))) + coordinate
    below = tf.where(below < -length, below + period, -below - 1.0)
    above = coordinate - times_period(_quotient(coordinate, float(period)))
    above = tf.where(above >= length, (period - above) - 1.0, above)
    mapped = tf.where(coordinate < 0.0, below, tf.where(coordinate > length - 1, above, coordinate))
    return tf.minimum(tf.maximum(mapped, 0.0), float(length - 1))


def _projective_transform(images, transforms):
    """ImageProjectiveTransformV3 (bilinear, reflected borders) with one transform per image.

    Written with gathers because the op has no XLA kernel.
    """
    height, width = images.shape[1], images.shape[2]
    t = [transforms[:, i, tf.newaxis, tf.newaxis] for i in range(8)]
    x = tf.range(width, dtype=tf.float32)[tf.newaxis, tf.newaxis, :]
    y = tf.range(height, dtype=tf.float32)[tf.newaxis, :, tf.newaxis]
    projection = _affine(t[6], x, t[7], y, 1.0)
    zero_projection = tf.equal(projection, 0.0)
    projection = tf.where(zero_projection, 1.0, projection)
    source_x = _reflect_coordinate(_affine(t[0], x, t[1], y, t[2]) / projection, width)
    source_y = _reflect_coordinate(_affine(t[3], x, t[4], y, t[5]) / projection, height)
    x_floor, y_floor = tf.floor(source_x), tf.floor(source_y)
    x_ceil, y_ceil = x_floor + 1.0, y_floor + 1.0
    flat = tf.reshape(images, [-1, height * width, images.shape[3]])

    # The 4 neighbours in one gather (4 gathers would each get a copy of the coordinate arithmetic).
    rows = tf.cast(tf.stack([y_floor, y_floor, y_ceil, y_ceil], axis=-1), tf.int32)
    cols = tf.cast(tf.stack([x_floor, x_ceil, x_floor, x_ceil], axis=-1), tf.int32)
    # Outside the image (only ever the row or column just past the last) reads the fill value 0.
    inside = (rows < height) & (cols < width)
    index = tf.minimum(rows, height - 1) * width + tf.minimum(cols, width - 1)
    values = tf.gather(flat, tf.reshape(index, [-1, height * width * 4]), batch_dims=1)
    values = tf.reshape(values, tf.concat([tf.shape(images)[:3], [4, images.shape[3]]], 0))
    values = tf.unstack(tf.where(inside[..., tf.newaxis], values, 0.0), axis=3)

    wx0, wx1 = (x_ceil - source_x)[..., tf.newaxis], (source_x - x_floor)[..., tf.newaxis]
    wy0, wy1 = (y_ceil - source_y)[..., tf.newaxis], (source_y - y_floor)[..., tf.newaxis]
    top = wx0 * values[0] + wx1 * values[1]
    bottom = wx0 * values[2] + wx1 * values[3]
    return tf.where(zero_projection[..., tf.newaxis], 0.0, wy0 * top + wy1 * bottom)


def _gaussian_noise(images, noise_seeds, std):
    """Adds N(0, std^2) noise drawn like tf.random.stateless_normal(image shape, noise seed)."""
    seeds, _ = _as_seeds(noise_seeds)
    count = images.shape[1] * images.shape[2] * images.shape[3]
    noise = _normal(_random_bits(seeds, count + count % 2))[:, :count]
    noise = tf.reshape(noise, tf.shape(images)) * np.float32(std) + 0.0
    return tf.clip_by_value(images + noise, 0.0, 1.0)


def _cutout_mask(centres, side, height, width):
    """[B, H, W, 1] float mask, 0 on each image's side x side square (clipped at the borders)."""
    top = centres[:, 0] - side // 2
    left = centres[:, 1] - side // 2
    rows = tf.range(height)[tf.newaxis]
    cols = tf.range(width)[tf.newaxis]
    in_rows = (rows >= top[:, tf.newaxis]) & (rows < top[:, tf.newaxis] + side)
    in_cols = (cols >= left[:, tf.newaxis]) & (cols < left[:, tf.newaxis] + side)
    erased = in_rows[:, :, tf.newaxis] & in_cols[:, tf.newaxis, :]
    return tf.cast(~erased, tf.float32)[..., tf.newaxis]


@_graph_style
def apply_view_parameters(images, params, config: AugmentConfig) -> tf.Tensor:
    """Makes one view per image from parameters drawn by `sample_view_parameters`.

    Args:
      images: [B, H, W, 3] uint8, or float in [0, 1] (any float dtype; computed in float32).
      params: the dict of `sample_view_parameters` (or one with the same keys, e.g. edited).
      config: which augmentations are applied (ops it turns off are skipped whatever `params` say).

    Returns:
      [B, crop_height, crop_width, 3] float32 in [0, 1].
    """
    images = _as_images(images)
    crop_height, crop_width = config.crop_size
    with tf.name_scope("crop"):
        views = _crop_and_resize(images, params["crop_offset"], params["crop_size"], config.crop_size)
    if config.flip:
        with tf.name_scope("flip"):
            views = _where(params["flip"], tf.reverse(views, axis=[2]), views)
    if config.jitter:
        with tf.name_scope("jitter"):
            views = _where(params["jitter"], _color_jitter(views, params), views)
    if config.colordrop:
        with tf.name_scope("colordrop"):
            views = _where(params["colordrop"], _color_drop(views), views)
    if config.blur:
        with tf.name_scope("blur"):
            radius = augment.blur_radius(config.crop_size)
            # A sigma of 0 (blur drawn nowhere) would divide by 0 in images that are not used anyway.
            sigma = tf.where(params["blur"], params["blur_sigma"], 1.0)
            views = _where(params["blur"], _gaussian_blur(views, sigma, radius), views)
    if config.rotate:
        with tf.name_scope("rotate"):
            transforms = _rotation_transforms(params["rotate_angle"], crop_height, crop_width)
            rotated = tf.clip_by_value(_projective_transform(views, transforms), 0.0, 1.0)
            views = _where(params["rotate"], rotated, views)
    if config.noise:
        with tf.name_scope("noise"):
            noisy = _gaussian_noise(views, params["noise_seed"], config.noise_std)
            views = _where(params["noise"], noisy, views)
    if config.cutout:
        side = _cutout_side(config)
        if side > 0:
            with tf.name_scope("cutout"):
                mask = _cutout_mask(params["cutout_centre"], side, crop_height, crop_width)
                views = _where(params["cutout"], views * mask, views)
    return tf.ensure_shape(views, [None, crop_height, crop_width, 3])


@_graph_style
def augment_batch(images, seeds, config: AugmentConfig) -> tf.Tensor:
    """One SimCLR view of every image of a batch: `augment.augment_view` vectorised.

    Args:
      images: [B, H, W, 3] uint8, or float in [0, 1] (float16/bfloat16 too); H and W must be
        static and may differ from `config.crop_size`.
      seeds: [B, 2] int32/int64, one stateless seed per image. Image i gets the view
        `augment.augment_view(images[i], seeds[i], config)` would make: same ops, order,
        probabilities and parameters (see the module docstring for the last-bit differences).
      config: which augmentations to apply (`augment.AugmentConfig`).

    Returns:
      [B, crop_height, crop_width, 3] float32 in [0, 1]. Order: random resized crop (or plain
      resize, bicubic), flip, colour jitter, colour drop, blur, rotation, noise, cutout.
    """
    images = _as_images(images)
    params = sample_view_parameters(seeds, config, images.shape[1:3])
    return apply_view_parameters(images, params, config)


@_graph_style
def augment_batch_pair(images, seeds, config: AugmentConfig):
    """Two independent views of every image: `augment.augment_pair` vectorised.

    Each seed is split in two (as augment_pair does per image); both views are made in one batch
    of 2B images. Returns (view_a, view_b), each [B, crop_height, crop_width, 3] float32.
    """
    images = _as_images(images)
    seeds = tf.convert_to_tensor(seeds)
    int_seeds, wide = _as_seeds(seeds)
    view_seeds = _split(int_seeds, 2, wide)
    view_seeds = tf.concat([view_seeds[:, 0], view_seeds[:, 1]], axis=0)
    if not wide:
        view_seeds = tf.cast(view_seeds, tf.int32)
    views = augment_batch(tf.concat([images, images], axis=0), view_seeds, config)
    view_a, view_b = tf.split(views, 2, axis=0)
    return view_a, view_b
