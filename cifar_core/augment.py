"""The seed's transform levels as batched tensor -> tensor functions, on whatever device the batch is.

The seed notebook augmented one image at a time with torchvision (RandomGrayscale(0.2),
RandomHorizontalFlip(0.5), RandomVerticalFlip(0.2), RandomRotation(30),
RandomAdjustSharpness(0.4), then Normalize). Here each op takes explicit per-image parameters and
matches torchvision's tensor functional op on every image of the batch; `draw_params` draws those
parameters for a whole batch at once, so every image gets its own. Entry points: `train_batch`
(augments when the level says so) and `eval_batch` (never augments).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .config import TRANSFORMS  # the four level names, spelled canonically

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)

# Per-image probabilities of the seed's random ops; rotation is applied to every image.
P_GRAY, P_HFLIP, P_VFLIP, P_SHARPEN = 0.2, 0.5, 0.2, 0.5
MAX_DEGREES = 30.0
SHARPNESS_FACTOR = 0.4


class AugmentParams(NamedTuple):
    """One batch's random draws: (B,) bool masks and (B,) float32 angles in degrees."""

    gray: torch.Tensor
    hflip: torch.Tensor
    vflip: torch.Tensor
    angles: torch.Tensor
    sharpen: torch.Tensor


def _where_(x: torch.Tensor, mask: torch.Tensor, fn) -> torch.Tensor:
    """x with fn applied to the images where mask is true, in place on CPU (x must be ours).

    On CPU, gathering only the selected images beats torch.where over the whole batch (~2x):
    fn runs on the p-share of images that need it. Elsewhere (CUDA) the gather would need
    mask.nonzero(), a blocking host sync every op; torch.where over the batch needs none.
    """
    if x.device.type != "cpu":
        return _select(x, mask, fn)
    index = mask.nonzero().squeeze(1)
    if index.numel():
        x.index_copy_(0, index, fn(x.index_select(0, index)))
    return x


def _select(x: torch.Tensor, mask: torch.Tensor, fn) -> torch.Tensor:
    """_where_ without a host sync: fn over the whole batch, kept where mask is true."""
    return torch.where(mask.view(-1, 1, 1, 1), fn(x), x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1).expand_as(x)


def grayscale(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TF.rgb_to_grayscale(img, num_output_channels=3) on the images where mask is true."""
    return _where_(x.clone(), mask, _gray)


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TF.hflip on the images where mask is true."""
    return _where_(x.clone(), mask, lambda s: s.flip(-1))


def vflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TF.vflip on the images where mask is true."""
    return _where_(x.clone(), mask, lambda s: s.flip(-2))


def _rotation_theta(angles_deg: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) float32 inverse matrices, as torchvision's `_get_inverse_affine_matrix` builds them.

    TF.rotate computes the matrix in float64 for radians(-angle) and only then casts to float32;
    doing the same keeps nearest-neighbour ties on the same pixels.
    """
    wide = torch.float32 if angles_deg.device.type == "mps" else torch.float64  # MPS has no float64
    rot = angles_deg.to(wide).neg() * (math.pi / 180.0)
    cos, sin = torch.cos(rot), torch.sin(rot)
    zero = torch.zeros_like(rot)
    theta = torch.stack([cos, sin, zero, -sin, cos, zero], dim=1)
    return theta.view(-1, 2, 3).to(torch.float32)


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """torchvision's `_gen_affine_grid` for a (B, 2, 3) theta: a (B, H, W, 2) sampling grid."""
    base, scale = _grid_constants(h, w, theta.dtype, theta.device)
    rescaled = theta.transpose(1, 2) / scale
    grid = base.view(1, h * w, 3).expand(theta.shape[0], h * w, 3).bmm(rescaled)
    return grid.view(-1, h, w, 2)


@functools.lru_cache(maxsize=16)
def _grid_constants(h: int, w: int, dtype: torch.dtype, dev: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The affine grid's base coordinates and scale, built once per size, dtype and device (a
    host-to-device copy each step would stall a GPU)."""
    base = torch.empty(1, h, w, 3, dtype=dtype, device=dev)
    base[..., 0].copy_(torch.linspace(-w * 0.5 + 0.5, w * 0.5 + 0.5 - 1, steps=w, device=dev))
    base[..., 1].copy_(torch.linspace(-h * 0.5 + 0.5, h * 0.5 + 0.5 - 1, steps=h, device=dev).unsqueeze_(-1))
    base[..., 2].fill_(1)
    return base, torch.tensor([0.5 * w, 0.5 * h], dtype=dtype, device=dev)


def rotate(x: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """TF.rotate(img, angle, NEAREST, fill=0) per image: about the centre, same size, zero fill."""
    theta = _rotation_theta(angles_deg.to(x.device))
    grid = _affine_grid(theta, x.shape[-2], x.shape[-1])
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def adjust_sharpness(x: torch.Tensor, factor: float, mask: torch.Tensor) -> torch.Tensor:
    """TF.adjust_sharpness(img, factor) on the images where mask is true (factor < 1 blurs)."""
    return _where_(x.clone(), mask, lambda s: _sharpen(s, factor))


def _sharpen(x: torch.Tensor, factor: float) -> torch.Tensor:
    """TF.adjust_sharpness(img, factor) on every image of x.

    torchvision blends x with a [[1,1,1],[1,5,1],[1,1,1]]/13 depthwise conv2d of its interior
    (border pixels kept). Shifted sums and the blend regrouped into one multiply-add give the same
    values up to float rounding (~2e-7), several times faster on CPU, where the grouped conv was
    the slowest op of the pipeline. Border pixels stay x, as blend(x, x) does for x in [0, 1].
    """
    centre = x[..., 1:-1, 1:-1]
    rows = x[..., :, :-2] + x[..., :, 1:-1]
    rows += x[..., :, 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :]
    box += rows[..., 2:, :]
    # factor*c + (1-factor)*(box + 4c)/13, regrouped
    blended = box.mul_((1.0 - factor) / 13).add_(centre, alpha=factor + 4 * (1.0 - factor) / 13)
    out = x.clone()
    out[..., 1:-1, 1:-1] = blended.clamp_(0, 1)
    return out


def normalize(x: torch.Tensor) -> torch.Tensor:
    """TF.normalize(x, MEAN, STD): per-channel (x - mean) / std."""
    return _normalize_(x.clone())


def _normalize_(x: torch.Tensor) -> torch.Tensor:
    mean, std = _mean_std(x.dtype, x.device)
    return x.sub_(mean).div_(std)


@functools.lru_cache(maxsize=8)
def _mean_std(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MEAN and STD as (1, 3, 1, 1) tensors, built once per dtype and device."""
    return (torch.tensor(MEAN, dtype=dtype, device=device).view(1, -1, 1, 1),
            torch.tensor(STD, dtype=dtype, device=device).view(1, -1, 1, 1))


def draw_params(batch: int, generator: torch.Generator | None, device: torch.device | str) -> AugmentParams:
    """Independent random parameters for each of `batch` images, drawn in one call."""
    u = torch.rand(5, batch, generator=generator, device=device)
    angles = u[3] * (2 * MAX_DEGREES) - MAX_DEGREES
    return AugmentParams(gray=u[0] < P_GRAY, hflip=u[1] < P_HFLIP, vflip=u[2] < P_VFLIP,
                         angles=angles, sharpen=u[4] < P_SHARPEN)


def apply_params(x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """The seed's five augmentations, in its order, with the given per-image parameters."""
    x = _where_(x.clone(), p.gray, _gray)
    x = _where_(x, p.hflip, lambda s: s.flip(-1))
    x = _where_(x, p.vflip, lambda s: s.flip(-2))
    x = rotate(x, p.angles)  # a new tensor: the in-place sharpening below cannot touch the input
    return _where_(x, p.sharpen, lambda s: _sharpen(s, SHARPNESS_FACTOR))


def augment(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Augment a float batch in [0, 1] with fresh per-image parameters from `generator`."""
    return apply_params(x, draw_params(x.shape[0], generator, x.device))


def _to_float(x_uint8: torch.Tensor, transform: str) -> torch.Tensor:
    """Check the level and the batch, and scale uint8 (B, 3, H, W) to float32 in [0, 1]."""
    if transform not in TRANSFORMS:
        raise ValueError(f"transform={transform!r} is not allowed; choose one of {', '.join(TRANSFORMS)}")
    if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4 or x_uint8.shape[1] != 3:
        raise ValueError(f"expected a uint8 (B, 3, H, W) batch, got {x_uint8.dtype} {tuple(x_uint8.shape)}")
    return x_uint8.to(torch.float32).div(255)


def train_batch(x_uint8: torch.Tensor, transform: str, generator: torch.Generator | None) -> torch.Tensor:
    """A training batch: /255, augmentation if the level has it, normalisation last if it has it."""
    x = _to_float(x_uint8, transform)  # a new tensor, ours to change in place
    if "augment" in transform:
        x = augment(x, generator)
    return _normalize_(x) if "normalize" in transform else x


def eval_batch(x_uint8: torch.Tensor, transform: str) -> torch.Tensor:
    """An evaluation batch: /255 and normalisation if the level has it; never augments."""
    x = _to_float(x_uint8, transform)
    return _normalize_(x) if "normalize" in transform else x


