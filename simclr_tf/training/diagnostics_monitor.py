"""Is pretraining learning? Representation diagnostics every few epochs, and warnings for the known
failures (README, "Is pretraining learning?").

On a fixed sample of training images, in inference mode: the standard deviation of the L2-normalised
z per dimension (collapse), alignment and uniformity of z (Wang and Isola, 2020) and the effective
rank of h (Roy and Vetterli, 2007), from `evaluation.diagnostics`. std, uniformity and rank use the
evaluation view; alignment uses two augmented views of each image, drawn from fixed seeds so every
epoch measures the same pairs.
"""
import numpy as np
import tensorflow as tf

from simclr_tf.evaluation import diagnostics
from simclr_tf.training.callbacks import EpochMetrics


class RepresentationDiagnostics(EpochMetrics):
    """Adds z_std, z_std_healthy, alignment, uniformity, uniformity_healthy and h_effective_rank to
    the epoch logs every `every` epochs, then prints one line per failure that newly shows
    (`diagnostics.warnings_for` over the run's history).

    `eval_images` yields image batches (evaluation view) and `view_pairs` (view_a, view_b) batches of
    the same sample; `history` is the history of the epochs before this run started (a resumed run);
    `batch_size` is the global batch (for the loss's "nothing learned" value), `warmup_epochs` the
    warmup in epochs, `loss` the contrastive loss's name.
    """

    def __init__(self, encoder, projection_head, eval_images, view_pairs, *, every=1, history=(), batch_size,
                 warmup_epochs, loss="nt_xent", printer=print):
        super().__init__(self._measure, every)
        self.encoder = encoder
        self.projection_head = projection_head
        self.eval_images = eval_images
        self.view_pairs = view_pairs
        self.rows = [dict(row) for row in history]
        self.batch_size = batch_size
        self.warmup_epochs = warmup_epochs
        self.loss = loss
        self.printer = printer
        self._said = set()
        self._embed = tf.function(self._h_and_z, reduce_retracing=True)

    def _h_and_z(self, images):
        h = self.encoder(images, training=False)
        return h, self.projection_head(h, training=False)

    def _measure(self):
        hs, zs = zip(*[(h.numpy(), z.numpy()) for h, z in map(self._embed, self.eval_images)])
        z_a, z_b = zip(*[(self._embed(a)[1].numpy(), self._embed(b)[1].numpy()) for a, b in self.view_pairs])
        h, z = np.concatenate(hs), np.concatenate(zs)
        return {
            "z_std": diagnostics.normalized_std(z),
            "z_std_healthy": diagnostics.healthy_std(z.shape[1]),
            "alignment": diagnostics.alignment(np.concatenate(z_a), np.concatenate(z_b)),
            "uniformity": diagnostics.uniformity(z),
            "uniformity_healthy": diagnostics.uniformity_of_uniform_sphere(z.shape[1]),
            "h_effective_rank": diagnostics.effective_rank(h),
        }

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
        checks = {
            "collapse": lambda: diagnostics.collapse_warning(self.rows),
            "stuck loss": lambda: diagnostics.stuck_loss_warning(self.rows, self.batch_size, self.warmup_epochs,
                                                                 loss=self.loss),
            "shortcut": lambda: diagnostics.shortcut_warning(self.rows),
        }
        for kind, check in checks.items():
            message = check() if kind not in self._said else None
            if message:  # each failure is said once, when it first shows
                self._said.add(kind)
                self.printer(f"warning: {message}")
