"""Run by tests/test_multi_device.py in its own process: the logical devices must be configured
before TensorFlow initialises them. Prints one JSON line per check:
{"check": name, "loss_single": ..., "loss_mirrored": ..., "max_rel_weight_change_diff": ...}.

Each check builds one model, copies its weights into a twin built under MirroredStrategy over two
logical CPUs, trains both for ONE step of plain SGD on the same global batch, and compares the
logged losses and the weight changes (which are -lr x the gradients).
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from simclr_tf.models.heads import build_projection_head  # noqa: E402
from simclr_tf.models.resnet import build_resnet  # noqa: E402
from simclr_tf.training.finetune_trainer import (ClassificationObjective, FineTuneTrainer,  # noqa: E402
                                                 SegmentationObjective)
from simclr_tf.training.simclr_model import SimCLRModel  # noqa: E402

LR = 0.1
rng = np.random.default_rng(0)


def simclr():
    encoder = build_resnet("resnet18", width_multiplier=0.125, small_stem=True, synchronized_bn=True)
    head = build_projection_head(64, num_layers=2, output_dim=16, synchronized_bn=True)
    model = SimCLRModel(encoder, head, temperature=0.5)
    model(np.zeros((2, 16, 16, 3), np.float32))
    return model


def simclr_batch():
    a = rng.uniform(0, 1, (8, 16, 16, 3)).astype(np.float32)
    return (a, np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32))


def classifier():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization(synchronized=True)(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    encoder = keras.Model(inputs, x)
    model = keras.Model(inputs, keras.layers.Dense(3)(encoder(inputs)))
    trainer = FineTuneTrainer(model, encoder, ClassificationObjective())
    trainer(np.zeros((1, 16, 16, 3), np.float32))
    return trainer


def classifier_batch():
    return (rng.uniform(0, 1, (8, 16, 16, 3)).astype(np.float32), rng.integers(0, 3, 8))


def segmenter():
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    encoder = keras.Model(inputs, features)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(encoder(inputs)))
    trainer = FineTuneTrainer(model, encoder, SegmentationObjective())
    trainer(np.zeros((1, 8, 8, 3), np.float32))
    return trainer


def segmenter_batch():
    images = rng.uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 4, (4, 8, 8)).astype(np.int32)
    # The first replica's half is mostly unlabelled: a per-replica mean would weigh its few pixels
    # as much as all of the second half's, the global mean does not.
    labels[:2, 1:, :] = 255
    return (images, labels)


def one_step(build, weights, batch, strategy):
    with strategy.scope():
        model = build()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(LR))
    before = [v.numpy() for v in model.trainable_variables]
    history = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0, shuffle=False)
    change = [v.numpy() - b for v, b in zip(model.trainable_variables, before)]
    return history.history["loss"][0], change


def main():
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.OneDeviceStrategy("/cpu:0")
    for name, build, batch in (("simclr", simclr, simclr_batch()), ("classification", classifier, classifier_batch()),
                               ("segmentation", segmenter, segmenter_batch())):
        keras.utils.set_random_seed(1)
        weights = build().get_weights()
        loss_1, change_1 = one_step(build, weights, batch, single)
        loss_2, change_2 = one_step(build, weights, batch, mirrored)
        scale = max(np.abs(c).max() for c in change_1)
        diff = max(np.abs(a - b).max() for a, b in zip(change_1, change_2)) / scale
        print(json.dumps({"check": name, "loss_single": float(loss_1), "loss_mirrored": float(loss_2),
                          "max_rel_weight_change_diff": float(diff), "replicas": mirrored.num_replicas_in_sync}),
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
