"""The SimCLR training step (simclr_tf.training.simclr_model): one forward pass for both views, every
weight trained, and a falling loss on a fixed batch."""
import keras
import pytest
import numpy as np
import tensorflow as tf

from simclr_tf.training.loss import nt_xent_loss
from simclr_tf.training.simclr_model import SimCLRModel


def _tiny_model(seed=0):
    """Encoder conv -> BN -> pool and a one-layer head: BN makes the output depend on the batch."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    encoder = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="encoder")
    h = keras.Input((8,))
    head = keras.Model(h, keras.layers.Dense(4, use_bias=False)(h), name="head")
    model = SimCLRModel(encoder, head, temperature=0.5)
    return model


def _batch(n=6, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, (n, 8, 8, 3)).astype(np.float32)
    # View b differs from a in brightness: its own batch statistics would differ from the joint ones.
    b = np.clip(a * 0.4 + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
    return a, b


def test_both_views_go_through_one_forward_pass():
    model = _tiny_model()
    a, b = _batch()
    model(np.zeros((2, 8, 8, 3), np.float32))
    joint = model(tf.concat([a, b], 0), training=True)
    one_pass = float(nt_xent_loss(joint[:6], joint[6:], 0.5)[0])
    two_passes = float(nt_xent_loss(model(a, training=True), model(b, training=True), 0.5)[0])
    assert abs(one_pass - two_passes) > 1e-3  # the model can tell the passes apart through BN
    model.compile(optimizer=keras.optimizers.SGD(0.0))  # no update: the logged loss is this batch's
    logged = model.fit(tf.data.Dataset.from_tensors((a, b)), verbose=0, shuffle=False).history["loss"][0]
    np.testing.assert_allclose(logged, one_pass, rtol=1e-5)


def test_a_step_changes_encoder_and_head_weights_and_a_few_steps_lower_the_loss():
    model = _tiny_model(seed=1)
    a, b = _batch(seed=1)
    model(np.zeros((2, 8, 8, 3), np.float32))
    model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    losses = [model.fit(tf.data.Dataset.from_tensors((a, b)), verbose=0, shuffle=False).history["loss"][0] for _ in range(15)]
    assert len(before) == 4  # conv kernel, BN gamma and beta (encoder), dense kernel (head)
    for variable in model.trainable_variables:
        assert not np.allclose(variable.numpy(), before[variable.path]), variable.path
    assert losses[-1] < losses[0] - 0.1, losses


def _official_loss(z_a, z_b, temperature):
    """The official code's objective, written out here: the SUM of two softmax cross-entropies
    (view a's anchors against [b, a without itself], then the same from b), each averaged over N."""
    z_a, z_b = tf.math.l2_normalize(z_a, axis=1), tf.math.l2_normalize(z_b, axis=1)
    n = tf.shape(z_a)[0]
    self_mask = tf.eye(n) * 1e9
    total = 0.0
    for anchors, others in ((z_a, z_b), (z_b, z_a)):
        logits = tf.concat([tf.matmul(anchors, others, transpose_b=True),
                            tf.matmul(anchors, anchors, transpose_b=True) - self_mask], axis=1) / temperature
        labels = tf.one_hot(tf.range(n), 2 * n)
        total += tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits))
    return total


def test_the_step_follows_the_gradient_of_the_official_loss():
    """The logged loss is our mean over 2N anchors; the step is plain SGD on the official objective
    (twice that): README, "Parity with the official code"."""
    model = _tiny_model(seed=2)
    a, b = _batch(seed=2)
    model(np.zeros((2, 8, 8, 3), np.float32))
    with tf.GradientTape() as tape:
        z = model(tf.concat([a, b], 0), training=True)
        official = _official_loss(z[:6], z[6:], 0.5)
    gradients = tape.gradient(official, model.trainable_variables)
    before = [v.numpy().copy() for v in model.trainable_variables]
    learning_rate = 0.1
    model.compile(optimizer=keras.optimizers.SGD(learning_rate))
    logged = model.fit(tf.data.Dataset.from_tensors((a, b)), verbose=0, shuffle=False).history["loss"][0]
    np.testing.assert_allclose(2 * logged, float(official), rtol=1e-5)
    for variable, start, gradient in zip(model.trainable_variables, before, gradients):
        np.testing.assert_allclose(variable.numpy(), start - learning_rate * gradient.numpy(),
                                   rtol=1e-4, atol=1e-6, err_msg=variable.path)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_training_gives_a_finite_falling_loss_and_a_float32_encoder(policy):
    from simclr_tf.models.heads import build_projection_head
    from simclr_tf.models.rebuild import is_portable, portable
    from simclr_tf.models.resnet import build_resnet
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(2)
        encoder = build_resnet("resnet18", width_multiplier=0.125, small_stem=True)
        model = SimCLRModel(encoder, build_projection_head(64, output_dim=16), temperature=0.5)
        model(np.zeros((2, 16, 16, 3), np.float32))
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        a = np.random.default_rng(2).uniform(0, 1, (8, 16, 16, 3)).astype(np.float32)
        b = np.clip(a[:, ::-1] * 0.9, 0, 1).astype(np.float32)
        losses = model.fit(tf.data.Dataset.from_tensors((a, b)).repeat(), epochs=12, steps_per_epoch=1, verbose=0,
                           shuffle=False).history["loss"]
        saved = portable(encoder)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.05, losses
    assert is_portable(saved) and saved.get_layer("stem_conv").compute_dtype == "float32"
    # The float32 copy computes what the mixed-precision model computes, to bfloat16/float16 accuracy.
    reference, copy = np.asarray(encoder(a, training=False)), np.asarray(saved(a, training=False))
    assert np.abs(copy - reference).max() <= 0.05 * np.abs(reference).max() + 1e-3
