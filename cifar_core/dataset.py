"""CifarData: both CIFAR-10 splits as checked uint8 image and int64 label tensors.

The type every loader returns (`cifar_core.sources` builds it from disk, `cifar_core.data` subsets
it); `cifar_core.data` re-exports it. `to_numpy()` / `from_numpy()` carry the tensors through
Ray's object store without a copy.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataError
from .layout import SPLITS

FIELDS = ("train_x", "train_y", "test_x", "test_y")


@dataclass(frozen=True)
class CifarData:
    """Images as uint8 (N, 3, H, W) and labels as int64 (N,), for both splits.

    Tensors built by `from_numpy` on read-only arrays share that memory and must never be written
    to (augment into new tensors, e.g. `x.float()` or `x[idx]`).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def __post_init__(self):
        for split in SPLITS:
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
                raise DataError(f"{split}_x is {x.dtype} {tuple(x.shape)}; "
                                f"expected uint8 (N, 3, H, W)")
            if y.dtype != torch.int64 or y.shape != (len(x),):
                raise DataError(f"{split}_y is {y.dtype} {tuple(y.shape)}; "
                                f"expected int64 ({len(x)},)")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(f"train images are {tuple(self.train_x.shape[1:])} but test images are "
                            f"{tuple(self.test_x.shape[1:])}; both splits must match")

    def to_numpy(self) -> dict[str, np.ndarray]:
        """The four arrays by field name, sharing memory (for `ray.put`)."""
        return {name: getattr(self, name).numpy() for name in FIELDS}

    @classmethod
    def from_numpy(cls, arrays: dict) -> CifarData:
        """Wrap `to_numpy()`'s arrays without copying; read-only ones (`ray.get`) stay read-only.

        Never write to the result's tensors: they may be Ray's shared memory for the whole node.
        """
        missing = [name for name in FIELDS if name not in arrays]
        if missing:
            raise DataError(f"from_numpy got keys {sorted(arrays)}; missing {missing}")
        with warnings.catch_warnings():  # torch warns once about read-only arrays; we never write
            warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
            return cls(**{name: torch.from_numpy(arrays[name]) for name in FIELDS})
