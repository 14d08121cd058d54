"""The SimCLR training step (simclr_tf.training.simclr_model): one forward pass for both views, every
weight trained, and a falling loss on a fixed batch."""
import keras
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
