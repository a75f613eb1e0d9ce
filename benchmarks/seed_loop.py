"""The seed notebook's training loop, rebuilt faithfully as the baseline the project is timed against.

The seed trained from `torchvision.datasets.CIFAR10` through a `DataLoader(batch_size=256,
shuffle=True)` with the default `num_workers=0`: every image goes uint8 HWC array ->
`PIL.Image.fromarray` -> per-image torchvision transforms -> tensor, and the loop moves each batch
`.to(device, dtype=torch.float)`, runs the model, `nn.CrossEntropyLoss`, backward, Adam step, and
`loss.item()` plus an accuracy per batch. `SeedStyleCifar10` mirrors `CIFAR10.__getitem__` over the
already decoded arrays (torchvision keeps them in memory too), so JPEG decoding is timed on neither
side. `seed_epoch` times only the training loop, as `cifar_core.train.fit` does.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from cifar_core.augment import MEAN, STD
from cifar_core.config import TrialConfig
from cifar_core.data import CifarData
from cifar_core.models import build_model


def seed_transform(transform: str) -> transforms.Compose:
    """The seed notebook's per-image pipeline: `none` is ToTensor(); the others add its ops."""
    ops = []
    if "augment" in transform:
        ops += [transforms.RandomGrayscale(0.2), transforms.RandomHorizontalFlip(0.5),
                transforms.RandomVerticalFlip(0.2), transforms.RandomRotation(30),
                transforms.RandomAdjustSharpness(0.4)]
    ops.append(transforms.ToTensor())
    if "normalize" in transform:
        ops.append(transforms.Normalize(MEAN, STD))
    return transforms.Compose(ops)


class SeedStyleCifar10(Dataset):
    """`torchvision.datasets.CIFAR10` after loading: uint8 (N, 32, 32, 3) `data`, int `targets`."""

    def __init__(self, data: CifarData, transform=None):
        self.data = np.ascontiguousarray(data.train_x.permute(0, 2, 3, 1).numpy())
        self.targets = data.train_y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        img, target = self.data[index], self.targets[index]
        img = Image.fromarray(img)  # as torchvision does, "to return a PIL Image"
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def seed_epoch(data: CifarData, transform: str, *, seed: int = 0) -> dict:
    """One seed-style training epoch over `data`'s training split; its img/s and loop seconds."""
    torch.manual_seed(seed)
    cfg = TrialConfig(transform=transform, model="baseline", optimiser="adam", lr=1e-3,
                      batch_size=256, final_relu=True, seed=seed)
    loader = DataLoader(SeedStyleCifar10(data, seed_transform(transform)),
                        batch_size=cfg.batch_size, shuffle=True)
    model = build_model(cfg)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start = time.perf_counter()
    loss, acc, batches = _train_one_epoch(model, optim, nn.CrossEntropyLoss(), loader)
    seconds = time.perf_counter() - start
    images = len(loader.dataset)
    return {"images": images, "train_seconds": seconds, "images_per_second": images / seconds,
            "threads": torch.get_num_threads(), "train_loss": loss / batches, "train_acc": acc / batches}


def _train_one_epoch(model, optim, loss_fn, loader) -> tuple[float, float, int]:
    """The seed's `train_one_epoch` with regulariser "None" (sums of per-batch loss and accuracy)."""
    model.train()
    running_loss = running_acc = 0.0
    for x, y in loader:
        optim.zero_grad()
        x = x.to("cpu", dtype=torch.float)
        y = y.to("cpu", dtype=torch.long)
        output = model(x)
        loss = loss_fn(output, y)
        loss.backward()
        optim.step()
        running_loss += loss.item()
        running_acc += (output.argmax(1) == y).float().mean().item()
        del x, y, output
    return running_loss, running_acc, len(loader)
