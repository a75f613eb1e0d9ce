"""The package's error types, importable without torch (CLIs check input before loading it).

ConfigError is defined with the config it guards (`cifar_core.config`) and re-exported here;
DataError lives here, and `cifar_core.data` re-exports it.
"""
from .config import ConfigError

__all__ = ["ConfigError", "DataError"]


class DataError(ValueError):
    """Unusable data; the one-line message names the problem, the path or value, and what works."""
