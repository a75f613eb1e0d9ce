"""The seed CIFAR-10 study as a library: data, transforms, the two networks, one training loop.

Imports torch, torchvision and numpy only (never Ray or Optuna), so a trial runs anywhere.
Importing the package (or `cifar_core.config` / `cifar_core.errors`) does not import torch: the
config and error types load eagerly, everything else on first access (PEP 562 `__getattr__`).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .config import EpochResult, TrialConfig
from .errors import ConfigError, DataError

if TYPE_CHECKING:  # what __getattr__ loads, for type checkers and IDEs
    from .data import CifarData, load_cifar10, subset
    from .process import setup_process
    from .train import FusedState, TrainState, fit, fit_fused, resolve_device

__all__ = ["CifarData", "ConfigError", "DataError", "EpochResult", "FusedState", "TrialConfig",
           "TrainState", "fit", "fit_fused", "load_cifar10", "resolve_device", "setup_process",
           "subset"]

_LAZY = {"CifarData": "data", "load_cifar10": "data", "subset": "data",
         "FusedState": "train", "fit_fused": "train", "setup_process": "process",
         "TrainState": "train", "fit": "train", "resolve_device": "train"}


def __getattr__(name: str):
    """Import the submodule that defines `name` on first access (it imports torch)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
