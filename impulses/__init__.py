"""impulses: an embedding cache and imbalanced positive-unlabeled learning with self-supervision."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("impulses")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
