"""simclr-tf: SimCLR (Chen et al., 2020) in TensorFlow 2 / Keras 3.

Importing the package registers its custom Keras objects (the LARS optimizer, and any custom
layers), so `keras.models.load_model` reads every `.keras` file this project writes.
"""
import os as _os

# Only effective when TensorFlow is not imported yet: oneDNN makes convolution gradients on CPUs
# without AVX-512 up to ~100x faster, and TensorFlow leaves it off there. A user's own setting wins.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from simclr_tf.training import lars as _lars  # noqa: F401  (registers simclr_tf>LARS)
from simclr_tf.models import decoder as _decoder  # noqa: F401  (registers simclr_tf>CropToMatch)
from simclr_tf.models import applications as _applications  # noqa: F401  (registers simclr_tf>ImageNetInputScaling)

from simclr_tf.api import SimCLR  # noqa: E402,F401  (the Python API: README, "Your own model, from Python")

__version__ = "0.1.0"
