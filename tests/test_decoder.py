"""U-Net decoder: output size for any input size and both stems, freezing, the loss and the trainer."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from simclr_tf.models.decoder import build_segmentation_model, uses_small_stem
from simclr_tf.models.resnet import build_resnet
from simclr_tf.training.optimizers import build_optimizer
from simclr_tf.training.finetune_trainer import FineTuneTrainer, SegmentationObjective

SIZES = [(32, 32), (33, 47), (50, 50), (17, 9)]


@pytest.mark.parametrize("small_stem", [True, False])
def test_logits_have_the_input_size_for_odd_and_even_sizes(small_stem):
    encoder = build_resnet("resnet18", width_multiplier=0.25, small_stem=small_stem)
    assert uses_small_stem(encoder) is small_stem
    model = build_segmentation_model(encoder, num_classes=5)
    for height, width in SIZES:
        logits = model(np.zeros((2, height, width, 3), np.float32), training=False)
        assert tuple(logits.shape) == (2, height, width, 5), (small_stem, height, width)
        assert logits.dtype == tf.float32


def test_bottleneck_encoder_works_too():
    encoder = build_resnet("resnet50", width_multiplier=0.125, small_stem=False)
    model = build_segmentation_model(encoder, num_classes=3)
    assert tuple(model(np.zeros((1, 33, 47, 3), np.float32)).shape) == (1, 33, 47, 3)


def test_every_skip_feature_feeds_the_decoder():
    model = build_segmentation_model(build_resnet("resnet18", width_multiplier=0.25, small_stem=False), 4)
    concatenated = {layer.name for layer in model.layers if layer.name.endswith("_concat")}
    assert concatenated == {f"decoder_{name}_concat" for name in ("stage3", "stage2", "stage1", "stem")}
    # the encoder part outputs stem_out and the four stages
    assert [t.name for t in model.get_layer("encoder").outputs] and len(model.get_layer("encoder").outputs) == 5


def _data(batch=4, size=16, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, (batch, size, size)).astype(np.int32)
    labels[:, 0, :] = 255
    return images, labels


def _trainer(freeze=False, encoder_lr=None):
    keras.utils.set_random_seed(0)
    encoder = build_resnet("resnet18", width_multiplier=0.25, small_stem=True)
    model = build_segmentation_model(encoder, 3, freeze=freeze)
    encoder_optimizer = None if encoder_lr is None else build_optimizer("sgd", encoder_lr, momentum=0.9)
    trainer = FineTuneTrainer(model, encoder, SegmentationObjective(), encoder_optimizer)
    trainer.compile(optimizer=build_optimizer("sgd", 0.1, momentum=0.9))
    trainer.build_optimizers()
    return model, trainer


def _values(variables):
    return [v.value.numpy() for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, v.value.numpy()) for b, v in zip(before, variables)]


def test_freeze_trains_only_the_decoder_and_keeps_encoder_batchnorm_statistics():
    model, trainer = _trainer(freeze=True)
    encoder = model.get_layer("encoder")
    encoder_ids = {id(v) for v in encoder.weights}
    assert not encoder.trainable_weights
    assert trainer.trainable_variables and not any(id(v) in encoder_ids for v in trainer.trainable_variables)
    encoder_before = _values(encoder.weights)  # kernels AND BN moving statistics
    decoder_before = _values(trainer.trainable_variables)
    trainer.fit(tf.data.Dataset.from_tensors(_data()).repeat(2), epochs=1, verbose=0, shuffle=False)
    assert not any(_changed(encoder_before, encoder.weights))
    assert all(_changed(decoder_before, trainer.trainable_variables))


def test_unfrozen_encoder_trains_and_a_zero_encoder_learning_rate_keeps_its_weights():
    model, trainer = _trainer(freeze=False)
    encoder = model.get_layer("encoder")
    before = _values(encoder.trainable_weights)
    trainer.fit(tf.data.Dataset.from_tensors(_data()), epochs=1, verbose=0, shuffle=False)
    assert any(_changed(before, encoder.trainable_weights))

    model, trainer = _trainer(freeze=False, encoder_lr=0.0)
    encoder = model.get_layer("encoder")
    before = _values(encoder.trainable_weights)
    encoder_ids = {id(v) for v in encoder.trainable_weights}
    decoder_variables = [v for v in trainer.trainable_variables if id(v) not in encoder_ids]
    decoder_before = _values(decoder_variables)
    history = trainer.fit(tf.data.Dataset.from_tensors(_data()), epochs=1, verbose=0, shuffle=False).history
    assert not any(_changed(before, encoder.trainable_weights))
    assert any(_changed(decoder_before, decoder_variables))
    assert set(history) >= {"loss", "pixel_accuracy"}


def _log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def segmentation_loss(labels, logits, sample_weight=None):
    """The trainer's loss on one device: the weighted mean of the objective's per-pixel losses."""
    losses, weights = SegmentationObjective().losses_and_weights(labels, logits, sample_weight)
    return float(tf.reduce_sum(losses * weights) / tf.reduce_sum(weights))


def test_loss_is_the_mean_over_labelled_pixels_and_the_weighted_mean_with_class_weights():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 4, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 3, 4)).astype(np.int32)
    labels[0, 0, :] = 255
    labels[1, 2, 1] = 255
    keep = labels != 255
    nll = -np.take_along_axis(_log_softmax(logits.astype(np.float64)), np.where(keep, labels, 0)[..., None], -1)[..., 0]
    loss = segmentation_loss(labels, logits)
    assert loss == pytest.approx(nll[keep].mean(), rel=1e-5)

    class_weights = np.array([0.5, 2.0, 3.0])
    pixel_weights = np.where(keep, class_weights[np.where(keep, labels, 0)], 0.0).astype(np.float32)
    weighted = segmentation_loss(labels, logits, sample_weight=pixel_weights)
    expected = (pixel_weights * nll)[keep].sum() / pixel_weights[keep].sum()
    assert weighted == pytest.approx(expected, rel=1e-5)
    # scaling every weight does not change the loss
    scaled = segmentation_loss(labels, logits, sample_weight=10 * pixel_weights)
    assert scaled == pytest.approx(weighted, rel=1e-5)
