"""Where CIFAR-10 comes from on disk: image folders (decoded once, cached) and torchvision's pickles.

`cifar_core.data.load_cifar10` picks the layout; this module reads it. Decoding 60 000 JPEGs takes
seconds, so image folders are cached as one tensor file named after a fingerprint of the files
(relative path, size, mtime_ns): adding, removing or touching an image rebuilds it. The pickles
are read directly (already a fast binary format) with an unpickler that admits only arrays.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from .dataset import CifarData
from .errors import DataError
from .layout import BATCHES, CACHE_VERSION, CLASSES, SPLITS


# --- image folders ---------------------------------------------------------------------------

def load_image_folders(root: Path, cache_dir) -> CifarData:
    files = {split: _image_files(root / split) for split in SPLITS}
    cache = _cache_root(root, cache_dir) / f"cifar10-{_fingerprint(files)[:24]}.pt"
    data = _read_cache(cache)
    if data is not None:
        return data
    import filelock  # one loader decodes; concurrent ones wait, then read its cache

    cache.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(cache) + ".lock"):
        data = _read_cache(cache)
        if data is None:
            data = CifarData(*_decode_split(root, files["train"]),
                             *_decode_split(root, files["test"]))
            _save_atomic(data, cache)
    return data


def _read_cache(path: Path) -> CifarData | None:
    """The cached tensors, or None when absent or unreadable (then they are rebuilt)."""
    try:
        # mmap: pages come from the file on demand (copy-on-write), so a load costs ~1 ms
        return CifarData(**torch.load(path, weights_only=True, mmap=True))
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - a bad cache is only a cache miss
        warnings.warn(f"ignoring unreadable CIFAR-10 cache {path} ({type(error).__name__}); "
                      f"rebuilding it")
        return None


def _image_files(split_dir: Path) -> list[tuple[str, int, int, int]]:
    """(path relative to the data dir, label, size, mtime_ns) of every image, in label order."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} is missing; the image-folder layout needs both "
                        f"train/<class>/* and test/<class>/* with the 10 CIFAR-10 classes")
    found = {e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")}
    missing, extra = sorted(set(CLASSES) - found), sorted(found - set(CLASSES))
    if missing or extra:
        raise DataError(f"{split_dir} must hold exactly the class folders {', '.join(CLASSES)}; "
                        f"missing: {', '.join(missing) or 'none'}; "
                        f"extra: {', '.join(extra) or 'none'}")
    files = []
    for label, name in enumerate(CLASSES):
        with os.scandir(split_dir / name) as entries:
            images = sorted((e for e in entries if e.is_file() and not e.name.startswith(".")),
                            key=lambda e: e.name)
        if not images:
            raise DataError(f"{split_dir / name} holds no images; every class needs at least one")
        stats = [(f"{split_dir.name}/{name}/{e.name}", e.stat()) for e in images]
        files += [(rel, label, st.st_size, st.st_mtime_ns) for rel, st in stats]
    return files


def _fingerprint(files: dict[str, list]) -> str:
    digest = hashlib.sha256(f"cifar_core-{CACHE_VERSION}\n".encode())
    for split in SPLITS:
        for rel, _, size, mtime in files[split]:
            digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()


def _cache_root(root: Path, cache_dir) -> Path:
    """cache_dir, else $CIFAR_CORE_CACHE, else DATA/.cifar_core_cache if writable, else ~/.cache."""
    chosen = cache_dir if cache_dir is not None else os.environ.get("CIFAR_CORE_CACHE")
    if chosen:
        return Path(chosen).expanduser()
    beside = root / ".cifar_core_cache"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    return Path.home() / ".cache" / "cifar_core"


def _decode_split(root: Path, files: list) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.empty((len(files), 3, 32, 32), dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders (for TorchCodec, not a dependency here); they
        # are 2-3x faster than PIL on 32x32 JPEGs with the same pixels; PIL takes over if they go.
        warnings.filterwarnings("ignore", "The image decoding and encoding", DeprecationWarning)
        for i, (rel, *_) in enumerate(files):
            x[i] = _decode(root / rel)
    return x, torch.tensor([label for _, label, *_ in files], dtype=torch.int64)


def _decode(path: Path) -> torch.Tensor:
    """One image as uint8 (3, 32, 32) RGB (grey and alpha converted), or DataError naming it."""
    try:
        from torchvision.io import ImageReadMode, decode_image

        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        image = decode_image(data, mode=ImageReadMode.RGB)
    except Exception:  # noqa: BLE001 - other format, corrupt, or decoder gone: PIL decides
        image = _decode_pil(path)
    if image.dtype != torch.uint8 or image.shape != (3, 32, 32):
        raise DataError(f"image {path} is {image.dtype} {image.shape[2]}x{image.shape[1]}; "
                        f"every CIFAR-10 image must be 8-bit 32x32")
    return image


def _decode_pil(path: Path) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"image {path} is unreadable or corrupt ({_one_line(error)}); "
                        f"delete or replace it (JPEG, PNG or any format PIL reads)") from None


def _save_atomic(data: CifarData, path: Path) -> None:
    """Write via a temp file and os.replace, so readers never see half a cache."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as file:
            torch.save(dataclasses.asdict(data), file)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a shared cache must be readable
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # e.g. disk full: still return the data
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        warnings.warn(f"could not write the CIFAR-10 cache {path} ({error}); "
                      f"the next load decodes again")


# --- torchvision's pickled batches -----------------------------------------------------------

def download_batches(root: Path) -> None:
    import filelock
    import torchvision

    root.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(root / ".cifar10.lock")):  # concurrent trials never race
        try:
            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        except Exception as error:  # noqa: BLE001 - any failure means the same advice
            raise DataError(f"downloading CIFAR-10 into {root} failed ({_one_line(error)}); "
                            f"unpack the image-folder copy instead: "
                            f"tar xzf cifar10-jpeg.tar.gz -C {root}") from error


def load_batches(folder: Path) -> CifarData:
    """Read the pickles as torchvision's CIFAR10 does (it md5-checks them; we check shapes)."""
    names = _unpickle(folder / "batches.meta").get("label_names")
    if tuple(names or ()) != CLASSES:
        raise DataError(f"{folder / 'batches.meta'} names classes {names}; "
                        f"expected {list(CLASSES)}")
    train = [_unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
    return CifarData(*_stack(train, folder), *_stack([_unpickle(folder / "test_batch")], folder))


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data dir must not be able to run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               *((f"numpy.{core}.multiarray", name) for core in ("core", "_core")
                 for name in ("_reconstruct", "scalar"))}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as file:
            entry = _ArraysOnly(file, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"{path} is missing; {BATCHES}/ needs data_batch_1..5, test_batch "
                        f"and batches.meta") from None
    except Exception as error:  # noqa: BLE001 - unpickling raises many types
        raise DataError(f"{path} is unreadable or corrupt ({_one_line(error)}); "
                        f"delete {path.parent} and download again") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path} holds a {type(entry).__name__}; expected a CIFAR-10 batch dict")
    return entry


def _stack(batches: list[dict], folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        y = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
        x = x.reshape(-1, 3, 32, 32)
    except (KeyError, ValueError) as error:
        raise DataError(f"a batch in {folder} has no usable 'data' (N, 3072) uint8 and 'labels' "
                        f"({_one_line(error)})") from None
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
