"""Reading pickles that may come from anyone (CIFAR-10 batches) without running their code.

`pickle.load` calls whatever global a file names, so a crafted "data_batch_1" runs code. The
restricted unpickler here admits only the globals a NumPy array needs, the ones the real CIFAR-10
"python version" batches name (pickled by Python 2 with NumPy 1: `numpy.core.multiarray._reconstruct`,
`numpy.ndarray`, `numpy.dtype`; NumPy 2 writes `numpy._core.multiarray._reconstruct` instead); the rest
of a batch is dicts, lists, bytes, str and int, which pickle builds without any global. Anything
else (os.system, builtins.eval, a persistent id...) is refused before it is called.
"""
import io
import pickle

import numpy as np

try:  # NumPy 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1
    from numpy.core.multiarray import _reconstruct

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something outside `ALLOWED_GLOBALS`."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"it asks for {module}.{name}, which a CIFAR-10 batch never holds "
                                    "(refused: unpickling it could run code)") from None

    def persistent_load(self, pid):
        raise UnsafePickleError("it holds a persistent id, which a CIFAR-10 batch never holds")


def load_restricted(file_or_bytes, encoding="bytes"):
    """pickle.load of a file object (or bytes) admitting only NumPy arrays and plain containers;
    raises UnsafePickleError for anything else (and pickle's own errors for a damaged file)."""
    if isinstance(file_or_bytes, (bytes, bytearray)):
        file_or_bytes = io.BytesIO(file_or_bytes)
    return _RestrictedUnpickler(file_or_bytes, encoding=encoding).load()
