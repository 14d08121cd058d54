"""SimCLR for your own Keras model, from Python (README, "Your own model, from Python").

    simclr = simclr_tf.SimCLR(encoder, crop_size=(32, 32))
    simclr.fit("my_list.txt", epochs=100, batch_size=256, save_dir="runs/mine")

`encoder` is any `keras.Model` from images (float32 in [0, 1]) to a feature map or a vector; a feature
map is globally average-pooled into h. Training uses what `--task=pretrain` uses: the same
augmentations (`augment.AugmentConfig`), the one-forward-pass SimCLR model and its loss, the LARS
recipe with square-root learning-rate scaling and warmup + cosine decay (`training.recipes`), and with
`save_dir` the same resumable checkpoints: run `fit` again with the same arguments after an
interruption and it resumes from the last completed epoch; a different configuration in the same
folder is refused.
"""
from __future__ import annotations

import os

import keras
import numpy as np

from simclr_tf.data import augment, filelist, image_folders, storage
from simclr_tf.data.pipeline import pretrain_dataset, steps_per_epoch
from simclr_tf.data.sources import ArrayImageSource, FileImageSource, check_an_image_decodes
from simclr_tf.errors import UserError
from simclr_tf.io_utils import save_keras_atomic
from simclr_tf.models.heads import build_projection_head
from simclr_tf.models.rebuild import portable
from simclr_tf.training import callbacks as cb
from simclr_tf.training.recipes import PRETRAIN_DEFAULTS, ScheduleSettings, scheduled_optimizer
from simclr_tf.training.simclr_model import SimCLRModel


def _as_vector_encoder(encoder):
    """`encoder` itself when it outputs vectors, else it followed by a global average pool named h."""
    if len(encoder.outputs[0].shape) == 2:
        return encoder
    images = keras.Input(shape=encoder.inputs[0].shape[1:], name="image")
    h = keras.layers.GlobalAveragePooling2D(name="h", dtype="float32")(encoder(images))
    return keras.Model(images, h, name=f"{encoder.name}_h")


def _image_source(images, size):
    """A source over a list file, a folder of images (all of them, recursively), a list of paths or a
    uint8 array [N, H, W, 3]."""
    if isinstance(images, np.ndarray):
        return ArrayImageSource(images, size)
    if isinstance(images, (str, os.PathLike)):
        images = image_folders.read_list_or_folder(os.fspath(images), filelist.IMAGES, flag_name="images").paths
    return FileImageSource([storage.resolve(os.fspath(p), os.getcwd()) for p in images], size)


class SimCLR:
    """SimCLR pretraining of any Keras encoder.

    Args:
      encoder: a keras.Model from images in [0, 1] to a feature map [B, h, w, C] or a vector [B, D].
      crop_size: (height, width) the encoder sees (the random crop's output).
      temperature, loss: of the contrastive loss ("nt_xent", "dcl", "dclw").
      augment: an `augment.AugmentConfig` (default: the paper's, for `crop_size`).
      proj_layers, proj_dim: the projection head (as wide as h, then `proj_dim`).

    Attributes: `encoder` (image -> h, trained in place), `projection_head` (h -> z).
    """

    def __init__(self, encoder, crop_size, *, temperature=0.2, loss="nt_xent", augment=None, proj_layers=2,
                 proj_dim=128):
        self.crop_size = tuple(crop_size)
        self.encoder = _as_vector_encoder(encoder)
        self.projection_head = build_projection_head(int(self.encoder.outputs[0].shape[-1]), num_layers=proj_layers,
                                                     output_dim=proj_dim)
        self.augment = augment or _default_augment(self.crop_size)
        self.temperature, self.loss = float(temperature), loss

    def fit(self, images, *, epochs, batch_size=256, save_dir=None, seed=0, input_size=None, learning_rate=None,
            optimizer=None, verbose=True):
        """Pretrains on `images` (a list file, a folder of images, a list of paths, or a uint8 array
        [N, H, W, 3], resized to `input_size`, default the crop size, when read); returns the history
        (one dict per epoch).

        With `save_dir`, every epoch is checkpointed there (and the encoder and projection head are
        saved at the end as encoder.keras and projection_head.keras); calling `fit` again resumes.
        """
        source = _image_source(images, tuple(input_size or self.crop_size))
        if len(source) < batch_size:
            raise UserError(f"batch_size={batch_size} is larger than the {len(source)} images to train on")
        check_an_image_decodes(source, "images")
        settings = ScheduleSettings(batch_size=batch_size, num_epochs=epochs, learning_rate=learning_rate,
                                    optimizer=optimizer)
        steps = steps_per_epoch(len(source), batch_size)
        keras.utils.set_random_seed(seed)
        model = SimCLRModel(self.encoder, self.projection_head, temperature=self.temperature, loss=self.loss)
        model.compile(optimizer=scheduled_optimizer(settings, steps, PRETRAIN_DEFAULTS)[0])
        model(np.zeros((2, *self.crop_size, 3), np.float32))
        model.optimizer.build(model.trainable_variables)
        fingerprint = {"images": len(source), "epochs": epochs, "batch_size": batch_size, "seed": seed,
                       "learning_rate": learning_rate, "optimizer": optimizer, "temperature": self.temperature,
                       "loss": self.loss, "augment": repr(self.augment), "encoder": self.encoder.name}
        state, callbacks = self._checkpointing(model, save_dir, fingerprint)
        printer = print if verbose else (lambda line: None)
        callbacks = [cb.EpochStats(steps * batch_size, source.skip_log, printer=printer), cb.NonFiniteLossGuard(),
                     *callbacks]
        start = state["epoch"] if state else 0
        fitted = model.fit(pretrain_dataset(source, self.augment, batch_size, seed, start), epochs=epochs,
                           initial_epoch=start, steps_per_epoch=steps, callbacks=callbacks, verbose=0, shuffle=False)
        if save_dir:
            self.save(save_dir)
            return callbacks[-1].history
        logs = fitted.history
        return [{"epoch": start + i + 1, **{k: float(v[i]) for k, v in logs.items()}}
                for i in range(len(next(iter(logs.values()), [])))]

    def _checkpointing(self, model, save_dir, fingerprint):
        """(state to resume from or None, [ResumableCheckpoint] or [])."""
        if not save_dir:
            return None, []
        directory = os.path.join(save_dir, "checkpoints")
        state = cb.read_checkpoint_state(directory)
        if state is not None and state["fingerprint"] != fingerprint:
            raise UserError(f"{save_dir} holds a checkpoint of another configuration; use another save_dir")
        if state is not None:
            cb.restore_checkpoint(model, directory, state)
        return state, [cb.ResumableCheckpoint(directory, fingerprint, history=state["history"] if state else None)]

    def save(self, folder):
        """encoder.keras and projection_head.keras in `folder` (float32, plain BatchNorm)."""
        save_keras_atomic(portable(self.encoder), os.path.join(folder, "encoder.keras"))
        save_keras_atomic(portable(self.projection_head), os.path.join(folder, "projection_head.keras"))


def _default_augment(crop_size):
    return augment.AugmentConfig(crop_size=crop_size, blur=augment.default_blur(crop_size))
