"""cifar_core.data: layouts, decoding, the on-disk cache, errors, subsets and synthetic data."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_core import data as D
from cifar_core import sources as S
from cifar_core.data import CLASSES, CifarData, DataError, load_cifar10, subset, synthetic

REPO = Path(__file__).resolve().parents[1]
# the CLIs' rule ($CIFAR10_DIR, else ~/.cache/cifar10), read before _clean_env hides the variable
REAL_DIR = str(D.resolve_data_dir(None))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    monkeypatch.delenv("CIFAR_CORE_CACHE", raising=False)


def make_tree(root: Path, n: int = 3, fmt: str = "PNG", mode: str = "RGB", size: int = 32,
              classes=CLASSES) -> dict[str, np.ndarray]:
    """Image folders with n random images per class; the expected (N, 3, 32, 32) per split."""
    rng = np.random.default_rng(0)
    expected = {}
    for split in ("train", "test"):
        images = []
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                image = Image.fromarray(pixels).convert(mode)
                image.save(root / split / name / f"{i:04d}.{fmt.lower()}", format=fmt)
                images.append(np.array(image.convert("RGB")).transpose(2, 0, 1))
        expected[split] = np.stack(images)
    return expected


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- image-folder layout ---------------------------------------------------------------------

def test_image_folders_give_shapes_dtypes_and_sorted_labels(tmp_path):
    make_tree(tmp_path / "d", n=3)
    data = load_cifar10(tmp_path / "d", cache_dir=tmp_path / "c")
    assert data.train_x.shape == (30, 3, 32, 32) and data.test_x.shape == (30, 3, 32, 32)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert data.train_x.is_contiguous()
    assert data.train_y.tolist() == [label for label in range(10) for _ in range(3)]
    assert list(CLASSES) == sorted(CLASSES)


def test_png_pixels_roundtrip_exactly(tmp_path):
    expected = make_tree(tmp_path / "d", n=2)
    data = load_cifar10(tmp_path / "d", cache_dir=tmp_path / "c")
    assert torch.equal(data.train_x, torch.from_numpy(expected["train"]))
    assert torch.equal(data.test_x, torch.from_numpy(expected["test"]))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grey_alpha_and_palette_images_become_rgb(tmp_path, mode):
    expected = make_tree(tmp_path / "d", n=1, mode=mode)
    data = load_cifar10(tmp_path / "d", cache_dir=tmp_path / "c")
    assert torch.equal(data.train_x, torch.from_numpy(expected["train"]))


def test_jpeg_decodes_like_pil(tmp_path):
    make_tree(tmp_path / "d", n=1, fmt="JPEG")
    data = load_cifar10(tmp_path / "d", cache_dir=tmp_path / "c")
    path = tmp_path / "d" / "train" / "bird" / "0000.jpeg"
    reference = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    assert (data.train_x[CLASSES.index("bird")].int() - reference.int()).abs().max() <= 2


def test_image_folders_win_over_batches(tmp_path):
    make_tree(tmp_path, n=1)
    (tmp_path / D.BATCHES).mkdir()  # empty: would fail if it were read
    assert len(load_cifar10(tmp_path, cache_dir=tmp_path / "c").train_y) == 10


# --- cache -----------------------------------------------------------------------------------

def counting_decoder(monkeypatch) -> list:
    calls, real = [], S._decode
    monkeypatch.setattr(S, "_decode", lambda path: calls.append(path) or real(path))
    return calls


def test_second_load_hits_the_cache(tmp_path, monkeypatch):
    make_tree(tmp_path / "d", n=2)
    calls = counting_decoder(monkeypatch)
    first = load_cifar10(tmp_path / "d", cache_dir=tmp_path / "c")
    assert len(calls) == 40 and len(list((tmp_path / "c").glob("cifar10-*.pt"))) == 1
    calls.clear()
    second = load_cifar10(tmp_path / "d", cache_dir=tmp_path / "c")
    assert calls == []
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(second, name))


def test_adding_or_touching_a_file_invalidates_the_cache(tmp_path, monkeypatch):
    expected = make_tree(tmp_path / "d", n=2)
    load_cifar10(tmp_path / "d", cache_dir=tmp_path / "c")
    calls = counting_decoder(monkeypatch)
    Image.fromarray(expected["train"][0].transpose(1, 2, 0)).save(tmp_path / "d/train/cat/new.png")
    assert len(load_cifar10(tmp_path / "d", cache_dir=tmp_path / "c").train_y) == 21
    assert len(calls) == 41
    calls.clear()
    os.utime(tmp_path / "d/test/dog/0000.png", ns=(1, 1))
    load_cifar10(tmp_path / "d", cache_dir=tmp_path / "c")
    assert len(calls) == 41 and len(list((tmp_path / "c").glob("cifar10-*.pt"))) == 3


def test_unreadable_cache_is_rebuilt(tmp_path):
    make_tree(tmp_path / "d", n=1)
    first = load_cifar10(tmp_path / "d", cache_dir=tmp_path / "c")
    [cache] = (tmp_path / "c").glob("cifar10-*.pt")
    cache.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable CIFAR-10 cache"):
        again = load_cifar10(tmp_path / "d", cache_dir=tmp_path / "c")
    assert torch.equal(first.train_x, again.train_x)


def test_cache_location_precedence(tmp_path, monkeypatch):
    make_tree(tmp_path / "d", n=1)
    load_cifar10(tmp_path / "d")
    assert list((tmp_path / "d" / ".cifar_core_cache").glob("cifar10-*.pt"))
    monkeypatch.setenv("CIFAR_CORE_CACHE", str(tmp_path / "env"))
    load_cifar10(tmp_path / "d")
    assert list((tmp_path / "env").glob("cifar10-*.pt"))
    load_cifar10(tmp_path / "d", cache_dir=tmp_path / "arg")
    assert list((tmp_path / "arg").glob("cifar10-*.pt"))


def test_unwritable_data_dir_caches_under_home(tmp_path, monkeypatch):
    make_tree(tmp_path / "d", n=1)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(S.os, "access", lambda path, mode: False)
    load_cifar10(tmp_path / "d")
    assert list((tmp_path / "home" / ".cache" / "cifar_core").glob("cifar10-*.pt"))


# --- resolve_data_dir ------------------------------------------------------------------------

def test_resolve_data_dir_prefers_argument_then_env_then_the_make_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.resolve_data_dir(None) == tmp_path / "home" / ".cache" / "cifar10"
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "CIFAR10_DIR ?= $(HOME)/.cache/cifar10" in makefile  # make uses the same default
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "env"))
    assert D.resolve_data_dir(None) == tmp_path / "env"
    assert D.resolve_data_dir("rel") == tmp_path / "rel"
    assert D.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"


# --- errors ----------------------------------------------------------------------------------

def test_missing_dir_names_path_both_layouts_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path / "nowhere")
    message = one_line(error)
    for part in (str(tmp_path / "nowhere"), "does not exist", "train/<class>", "test/<class>",
                 D.BATCHES, "--download", "tar xzf cifar10-jpeg.tar.gz"):
        assert part in message


def test_empty_dir_is_an_error_too(tmp_path):
    with pytest.raises(DataError, match="holds no CIFAR-10"):
        load_cifar10(tmp_path)


def test_wrong_class_folders_are_named(tmp_path):
    make_tree(tmp_path, n=1, classes=[c for c in CLASSES if c != "cat"] + ["kitten"])
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, cache_dir=tmp_path / "c")
    assert "missing: cat" in one_line(error) and "extra: kitten" in str(error.value)


def test_missing_test_split_is_named(tmp_path):
    make_tree(tmp_path, n=1)
    for path in sorted((tmp_path / "test").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "test").rmdir()
    with pytest.raises(DataError, match="test is missing"):
        load_cifar10(tmp_path, cache_dir=tmp_path / "c")


def test_empty_class_folder_is_an_error(tmp_path):
    make_tree(tmp_path, n=1)
    (tmp_path / "test" / "frog" / "0000.png").unlink()
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, cache_dir=tmp_path / "c")
    assert str(tmp_path / "test" / "frog") in one_line(error) and "no images" in str(error.value)


@pytest.mark.parametrize("content", [b"not an image", b"", "truncated"])
def test_corrupt_image_names_the_file(tmp_path, content):
    make_tree(tmp_path, n=1, fmt="JPEG")
    bad = tmp_path / "train" / "ship" / "0000.jpeg"
    bad.write_bytes(bad.read_bytes()[:200] if content == "truncated" else content)
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, cache_dir=tmp_path / "c")
    assert str(bad) in one_line(error) and "corrupt" in str(error.value)


def test_wrong_image_size_names_the_file(tmp_path):
    make_tree(tmp_path, n=1)
    odd = tmp_path / "test" / "deer" / "0000.png"
    Image.new("RGB", (16, 24)).save(odd)
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, cache_dir=tmp_path / "c")
    assert str(odd) in one_line(error)
    assert "16x24" in str(error.value) and "32x32" in str(error.value)


# --- torchvision's pickled batches -----------------------------------------------------------

def old_pickle(obj) -> bytes:
    """Pickled like the official files: protocol 2, arrays from numpy.core.multiarray."""
    data = pickle.dumps(obj, protocol=2)
    return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def write_batches(root: Path, per_batch: int = 4, label_names=CLASSES) -> dict[str, np.ndarray]:
    """A fake cifar-10-batches-py in torchvision's format (its md5 check would refuse it)."""
    folder = root / D.BATCHES
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    arrays = {"train": [], "test": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"batch_label": name, "filenames": ["x.png"] * per_batch,
                 "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist()}
        (folder / name).write_bytes(old_pickle(batch))
        arrays["test" if name == "test_batch" else "train"].append(batch)
    (folder / "batches.meta").write_bytes(old_pickle({"label_names": list(label_names)}))
    return {split: (np.concatenate([b["data"] for b in bs]).reshape(-1, 3, 32, 32),
                    np.concatenate([b["labels"] for b in bs])) for split, bs in arrays.items()}


def test_torchvision_batches_layout(tmp_path):
    expected = write_batches(tmp_path)
    data = load_cifar10(tmp_path)
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    assert data.train_x.is_contiguous() and data.train_y.dtype == torch.int64
    assert torch.equal(data.train_x, torch.from_numpy(expected["train"][0]))
    assert data.test_y.tolist() == expected["test"][1].tolist()


def test_batches_with_other_classes_or_a_missing_file_are_named(tmp_path):
    write_batches(tmp_path / "a", label_names=CLASSES[::-1])
    with pytest.raises(DataError, match="batches.meta names classes"):
        load_cifar10(tmp_path / "a")
    write_batches(tmp_path / "b")
    (tmp_path / "b" / D.BATCHES / "data_batch_3").unlink()
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path / "b")
    assert "data_batch_3 is missing" in one_line(error)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def test_batches_cannot_run_code(tmp_path):
    write_batches(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / D.BATCHES / "test_batch").write_bytes(pickle.dumps({"data": _RunsCode(marker)}))
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path)
    assert "test_batch is unreadable" in one_line(error) and "os" in str(error.value)
    assert not marker.exists()


def test_download_runs_torchvision_under_a_file_lock(tmp_path, monkeypatch):
    import torchvision

    seen = []

    def fake_cifar10(root, train, download):
        seen.append((Path(root), train, download, (Path(root) / ".cifar10.lock").exists()))
        write_batches(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    data = load_cifar10(tmp_path / "new", download=True)
    assert seen == [(tmp_path / "new", True, True, True)] and len(data.train_y) == 20
    load_cifar10(tmp_path / "new", download=True)
    assert len(seen) == 1  # already there: no second download


def test_failed_download_is_one_line_with_the_alternative(tmp_path, monkeypatch):
    import torchvision

    def offline(root, train, download):
        raise OSError("<urlopen error [Errno -3]\nTemporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=True)
    assert "downloading CIFAR-10" in one_line(error) and "tar xzf" in str(error.value)


# --- CifarData -------------------------------------------------------------------------------

def test_from_numpy_wraps_read_only_arrays_without_copy_or_warning():
    data = synthetic(40, 20)
    arrays = data.to_numpy()
    for array in arrays.values():
        array.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = CifarData.from_numpy(arrays)
    for name, array in arrays.items():
        assert torch.equal(getattr(back, name), getattr(data, name))
        assert getattr(back, name).data_ptr() == array.ctypes.data


def test_from_numpy_warning_stays_silent_in_a_fresh_process():
    # torch warns only once per process, so only a fresh one proves nothing leaks.
    script = ("import warnings; warnings.simplefilter('error')\n"
              "from cifar_core.data import CifarData, synthetic\n"
              "arrays = synthetic(20, 10).to_numpy()\n"
              "[a.setflags(write=False) for a in arrays.values()]\n"
              "CifarData.from_numpy(arrays)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr


def test_from_numpy_names_missing_keys_and_bad_dtypes():
    arrays = synthetic(10, 10).to_numpy()
    with pytest.raises(DataError, match="missing"):
        CifarData.from_numpy({k: v for k, v in arrays.items() if k != "test_y"})
    with pytest.raises(DataError, match="train_x is torch.float32"):
        CifarData.from_numpy({**arrays, "train_x": arrays["train_x"].astype(np.float32)})


# --- subset ----------------------------------------------------------------------------------

def indexed_data(per_class: int = 50) -> CifarData:
    """Data whose first two pixels spell the sample's index, so a subset reveals what it kept."""
    n = per_class * 10
    x = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = torch.arange(n) // 256, torch.arange(n) % 256
    y = torch.arange(n) % 10
    return CifarData(x, y, x[:10].clone(), y[:10].clone())


def kept(part: CifarData) -> list[int]:
    return (part.train_x[:, 0, 0, 0].long() * 256 + part.train_x[:, 0, 0, 1].long()).tolist()


def test_subset_is_stratified_sorted_and_leaves_test_whole():
    data = indexed_data()
    part = subset(data, 0.3, seed=0)
    index = kept(part)
    assert index == sorted(index) and len(index) == 150
    assert torch.equal(part.train_y, data.train_y[index])
    assert torch.bincount(part.train_y).tolist() == [15] * 10
    assert part.test_x is data.test_x and part.test_y is data.test_y


def test_subset_is_seeded():
    data = indexed_data()
    assert kept(subset(data, 0.2, seed=1)) == kept(subset(data, 0.2, seed=1))
    assert kept(subset(data, 0.2, seed=1)) != kept(subset(data, 0.2, seed=2))


def test_subset_bounds():
    data = indexed_data()
    assert subset(data, 1.0, seed=0) is data
    assert torch.bincount(subset(data, 0.001, seed=0).train_y).tolist() == [1] * 10
    for bad in (0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="data_fraction"):
            subset(data, bad, seed=0)


# --- synthetic -------------------------------------------------------------------------------

def test_synthetic_shapes_labels_and_determinism():
    data = synthetic(100, 50, seed=3)
    assert data.train_x.shape == (100, 3, 32, 32) and data.test_x.shape == (50, 3, 32, 32)
    assert data.train_x.dtype == torch.uint8 and data.test_y.dtype == torch.int64
    assert torch.bincount(data.train_y).tolist() == [10] * 10 and data.test_y.max() <= 9
    assert torch.equal(data.train_x, synthetic(100, 50, seed=3).train_x)
    assert not torch.equal(data.train_x, synthetic(100, 50, seed=4).train_x)
    assert synthetic(20, 10, size=8).train_x.shape == (20, 3, 8, 8)


def test_synthetic_is_learnable():
    data = synthetic(500, 200)
    x, test_x = data.train_x.flatten(1).float(), data.test_x.flatten(1).float()
    centroids = torch.stack([x[data.train_y == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(test_x, centroids).argmin(1) == data.test_y).float().mean()
    assert accuracy > 0.5  # chance is 0.1


# --- the real data ---------------------------------------------------------------------------

@pytest.mark.real_data
def test_real_cifar10_has_every_image():
    if not REAL_DIR or not Path(REAL_DIR).is_dir():
        message = f"{REAL_DIR!r} ($CIFAR10_DIR, else ~/.cache/cifar10) holds no CIFAR-10"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    data = load_cifar10(REAL_DIR)
    assert data.train_x.shape == (50_000, 3, 32, 32) and data.test_x.shape == (10_000, 3, 32, 32)
    assert torch.bincount(data.train_y).tolist() == [5_000] * 10
    assert torch.bincount(data.test_y).tolist() == [1_000] * 10
