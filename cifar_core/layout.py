"""Where CIFAR-10 lives on disk and in which layout: names and checks only, no torch.

`check_data_dir` is `load_cifar10`'s check of the data directory without decoding anything, so a
--dry-run can make it without importing torch; `cifar_core.data` re-exports everything here.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")  # label order = sorted order
SPLITS = ("train", "test")
CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused
BATCHES = "cifar-10-batches-py"
HOW_TO_GET = ("pass --download to let torchvision fetch it, or unpack the image-folder copy: "
              "tar xzf cifar10-jpeg.tar.gz -C {dir}")
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
                    f"test/<class>/* or torchvision's {BATCHES}/; {HOW_TO_GET.format(dir=root)}")
