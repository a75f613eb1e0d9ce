"""CIFAR-10 as uint8 tensors: found on disk, decoded once, cached, and subset by seed.

`load_cifar10(data_dir)` accepts two layouts under the data directory:

* image folders `train/<class>/*` and `test/<class>/*` (the 10 CIFAR-10 class names; label = index
  in sorted order), e.g. `tar xzf cifar10-jpeg.tar.gz -C DIR`. Decoding 60 000 images takes
  seconds, so the result is cached as one tensor file named after a fingerprint of the files
  (relative path, size, mtime_ns): adding, removing or touching an image rebuilds it. The cache
  lives in `cache_dir`, else $CIFAR_CORE_CACHE, else DATA/.cifar_core_cache/, else
  ~/.cache/cifar_core/; it is written atomically and built by one process at a time.
* torchvision's `cifar-10-batches-py/` pickles, read directly (already a fast binary format, so
  not cached; only arrays may be unpickled); `download=True` lets torchvision fetch them.

`CifarData.to_numpy()` / `from_numpy()` carry the tensors through Ray's object store without a
copy; `holdout()` carves the fixed, stratified validation split out of the training split, and
`subset()` draws the seeded, stratified training subset a trial asks for from what is left.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")  # label order = sorted order
SPLITS = ("train", "test")
CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused
BATCHES = "cifar-10-batches-py"
_FIELDS = ("train_x", "train_y", "test_x", "test_y")
_HOW_TO_GET = ("pass --download to let torchvision fetch it, or unpack the image-folder copy: "
               "tar xzf cifar10-jpeg.tar.gz -C {dir}")


class DataError(ValueError):
    """Unusable data; the one-line message names the problem, the path or value, and what works."""


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
        return {name: getattr(self, name).numpy() for name in _FIELDS}

    @classmethod
    def from_numpy(cls, arrays: dict) -> CifarData:
        """Wrap `to_numpy()`'s arrays without copying; read-only ones (`ray.get`) stay read-only.

        Never write to the result's tensors: they may be Ray's shared memory for the whole node.
        """
        missing = [name for name in _FIELDS if name not in arrays]
        if missing:
            raise DataError(f"from_numpy got keys {sorted(arrays)}; missing {missing}")
        with warnings.catch_warnings():  # torch warns once about read-only arrays; we never write
            warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
            return cls(**{name: torch.from_numpy(arrays[name]) for name in _FIELDS})


DEFAULT_DATA_DIR = "~/.cache/cifar10"  # the Makefile's CIFAR10_DIR default too (one rule)


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data directory as an absolute path: the argument, else $CIFAR10_DIR, else
    ~/.cache/cifar10 (where `make` unpacks the shared copy)."""
    chosen = data_dir if data_dir not in (None, "") else (os.environ.get("CIFAR10_DIR")
                                                          or DEFAULT_DATA_DIR)
    return Path(chosen).expanduser().absolute()


def check_data_dir(data_dir=None, *, download: bool = False) -> Path:
    """The data directory when it holds CIFAR-10 in a known layout (or --download may fetch
    it), else DataError: load_cifar10's check without decoding anything (for --dry-run)."""
    root = resolve_data_dir(data_dir)
    if (root / "train").is_dir() or (root / BATCHES).is_dir() or download:
        return root
    state = "does not exist" if not root.exists() else "holds no CIFAR-10"
    raise DataError(f"data dir {root} {state}: expected image folders train/<class>/* and "
                    f"test/<class>/* or torchvision's {BATCHES}/; {_HOW_TO_GET.format(dir=root)}")


def load_cifar10(data_dir=None, *, download: bool = False, cache_dir=None) -> CifarData:
    """Both CIFAR-10 splits from `data_dir` (image folders first, else torchvision's pickles)."""
    root = check_data_dir(data_dir, download=download)
    from .sources import download_batches, load_batches, load_image_folders

    if (root / "train").is_dir():
        return load_image_folders(root, cache_dir)
    if download and not (root / BATCHES).is_dir():
        download_batches(root)
    if (root / BATCHES).is_dir():
        return load_batches(root / BATCHES)
    raise DataError(f"data dir {root}: torchvision's download left no {BATCHES}/")


def subset(data: CifarData, fraction: float, seed: int) -> CifarData:
    """The training split cut to `fraction` of every class (seeded, original order); test whole.

    Each class keeps round(fraction * count) samples, at least one.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"data_fraction={fraction!r} must be in (0, 1]")
    if fraction == 1:
        return data
    generator = torch.Generator().manual_seed(seed)
    kept = []
    for label in torch.unique(data.train_y).tolist():
        index = torch.nonzero(data.train_y == label).squeeze(1)
        count = max(1, round(fraction * len(index)))
        kept.append(index[torch.randperm(len(index), generator=generator)[:count]])
    keep = torch.cat(kept).sort().values
    return dataclasses.replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep])


HOLDOUT_SEED = 4_711  # one fixed draw: every trial of a run holds out the very same images


def holdout_index(labels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held) sorted row indices: `size` rows held out, stratified by class, seeded.

    Class c gives round(size * n_c / n) rows (largest remainders settle the rounding, so balanced
    classes give equal shares when size divides evenly) and keeps at least one training image.
    """
    n = len(labels)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < n:
        raise DataError(f"val_size={size!r} is not allowed; use an integer in [0, {n}) "
                        f"(the training split has {n} images)")
    classes, counts = torch.unique(labels, return_counts=True)
    shares = _shares(counts, size)
    if (shares >= counts).any():
        label = classes[shares >= counts][0].item()
        raise DataError(f"val_size={size} leaves class {label} no training image; "
                        f"use a smaller val_size")
    generator = torch.Generator().manual_seed(HOLDOUT_SEED)
    held = []
    for label, share in zip(classes.tolist(), shares.tolist()):
        index = torch.nonzero(labels == label).squeeze(1)
        held.append(index[torch.randperm(len(index), generator=generator)[:share]])
    held = torch.cat(held).sort().values
    kept = torch.ones(n, dtype=torch.bool)
    kept[held] = False
    return torch.nonzero(kept).squeeze(1), held


def _shares(counts: torch.Tensor, size: int) -> torch.Tensor:
    """size split over classes in proportion to counts, whole numbers summing to size."""
    exact = size * counts.double() / counts.sum()
    shares = exact.floor().long()
    extra = torch.argsort(exact - shares, descending=True, stable=True)[:size - int(shares.sum())]
    shares[extra] += 1
    return shares


def holdout(data: CifarData, size: int) -> tuple[CifarData, torch.Tensor, torch.Tensor]:
    """(data without the held-out training images, their images, their labels); test untouched.

    The validation split a search selects on: never trained on, the same for every trial.
    """
    kept, held = holdout_index(data.train_y, size)
    if size == 0:
        return data, data.train_x[held], data.train_y[held]
    train = dataclasses.replace(data, train_x=data.train_x[kept], train_y=data.train_y[kept])
    return train, data.train_x[held], data.train_y[held]


TRAIN_EVAL_SIZE = 10_000  # images of the training split re-scored in eval mode every epoch
TRAIN_EVAL_SEED = 20_231  # one fixed draw, so every trial on the same images scores the same ones


def train_eval_index(n_train: int, size: int = TRAIN_EVAL_SIZE) -> torch.Tensor:
    """A fixed, seeded choice of `size` rows (all when fewer) of a trial's training images.

    Accuracy and loss on them in eval mode (no dropout, no augmentation) measure what the model
    fits, free of the train-mode noise that dropout and augmentation add to `train_acc`.
    """
    if n_train <= size:
        return torch.arange(n_train)
    generator = torch.Generator().manual_seed(TRAIN_EVAL_SEED)
    return torch.randperm(n_train, generator=generator)[:size].sort().values


def synthetic(n_train: int = 512, n_test: int = 256, seed: int = 0, *, size: int = 32) -> CifarData:
    """Tiny learnable fake data for tests: a smooth colour pattern per class plus pixel noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(len(CLASSES), 3, 4, 4, generator=generator)
    patterns = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    patterns = 48 + 160 * patterns

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=generator)]
        noise = 40 * torch.randn(n, 3, size, size, generator=generator)
        return (patterns[y] + noise).clamp(0, 255).round().to(torch.uint8), y

    return CifarData(*split(n_train), *split(n_test))
