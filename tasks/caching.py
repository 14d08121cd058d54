"""--cache, decided in one place: a source decoded once into memory, with a progress bar."""
from simclr_tf.data.sources import ArrayImageSource, CachedSource

from .console import progress_printer, say


def cache_if_requested(flag_values, source, what):
    """`source` decoded into memory once when --cache is set (sources already in memory as they are)."""
    if not flag_values.cache or isinstance(source, (ArrayImageSource, CachedSource)):
        return source
    say(f"Decoding {len(source)} {what} images into memory (--cache) ...")
    return CachedSource(source, progress=progress_printer("decoded"))
