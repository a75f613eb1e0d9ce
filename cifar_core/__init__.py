"""The seed CIFAR-10 study as a library: data, transforms, the two networks, one training loop.

Imports torch, torchvision and numpy only (never Ray or Optuna), so a trial runs anywhere.
"""
from .config import ConfigError, EpochResult, TrialConfig
from .data import CifarData, DataError, load_cifar10, subset
from .fused import FusedState, fit_fused
from .train import TrainState, fit, resolve_device

__all__ = ["CifarData", "ConfigError", "DataError", "EpochResult", "FusedState", "TrialConfig",
           "TrainState", "fit", "fit_fused", "load_cifar10", "resolve_device", "subset"]
