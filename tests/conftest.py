"""Shared fixtures: a tiny synthetic CIFAR-10 on disk (image-folder layout) and the real one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar_core.data import CLASSES, synthetic

# --fuse auto caches what it measured per machine (sweep.plan); the tests keep their own cache, so
# they never read or write the user's ~/.cache/cifar-sweep
os.environ["CIFAR_SWEEP_CACHE"] = tempfile.mkdtemp(prefix="cifar-sweep-test-cache-")


def write_image_folders(root: Path, *, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write data.synthetic() as train/<class>/*.png and test/<class>/*.png under root."""
    data = synthetic(n_train, n_test, seed)
    for split, xs, ys in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        for i, (x, y) in enumerate(zip(xs, ys.tolist())):
            folder = root / split / CLASSES[y]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(x.permute(1, 2, 0).numpy())).save(folder / f"{i:05d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_cifar_dir(tmp_path_factory) -> Path:
    """600 train / 200 test learnable synthetic images in the shared copy's layout."""
    return write_image_folders(tmp_path_factory.mktemp("tiny-cifar"), n_train=600, n_test=200)


@pytest.fixture(scope="session")
def real_cifar_dir() -> Path:
    """The real CIFAR-10 from $CIFAR10_DIR: skipped locally when unset, a failure in CI."""
    from cifar_core.data import resolve_data_dir

    path = str(resolve_data_dir(None))  # the CLIs' rule: $CIFAR10_DIR, else ~/.cache/cifar10
    if not Path(path).is_dir():
        message = f"real CIFAR-10 not found (CIFAR10_DIR={path!r})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must unpack ../shared/data/cifar10-jpeg.tar.gz")
        pytest.skip(message)
    return Path(path)
