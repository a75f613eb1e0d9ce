"""The stacked network: M SeedNets that share an architecture evaluated as one (HFTA-style).

The members' convolutions run as one grouped convolution (groups=M, activations laid out
(B, M*C, H, W) through the conv block) and their linear layers as one batched matmul. Each
member's leaf weights are stacked every step (61k numbers a member; a stack of one takes views,
no copy), so every member keeps an ordinary torch.optim optimiser and a summed loss gives each
exactly its own gradient. The training loop that drives it, for one configuration or many, is
cifar_core.train.

When the whole stack shares one batch (a lockstep group: same seed and data fraction) the first
convolution runs dense over all members' filters instead of grouped over M copies of the input;
benchmarks/ measures what fusing buys (python -m benchmarks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SHARED, TrialConfig
from .models import pool_before_relu


def check_fusable(cfgs: list[TrialConfig]) -> list[TrialConfig]:
    """cfgs, if they can train as one stack: ValueError naming the first key they differ in."""
    cfgs = list(cfgs)
    if not cfgs:
        raise ValueError("fused trials need at least one config")
    for key in SHARED:
        values = sorted({str(getattr(c, key)) for c in cfgs})
        if len(values) > 1:
            raise ValueError(f"fused trials must share {key}; got {', '.join(values)}")
    return cfgs


def stack_parameters(models: list[nn.Module]) -> list[torch.Tensor]:
    """Each parameter of the M members stacked along a new first dimension (autograd-connected);
    for a single model a view (unsqueeze), so a stack of one copies nothing."""
    if len(models) == 1:
        return [p.unsqueeze(0) for p in models[0].parameters()]
    return [torch.stack(ps) for ps in zip(*(model.parameters() for model in models))]


def stacked_input(xs: list[torch.Tensor], fmt) -> torch.Tensor:
    """The members' batches as one conv input: (B, C, H, W) when every member has the very same
    batch (a lockstep group; the first convolution then runs dense over all members' filters),
    else (B, M*C, H, W) for a grouped first convolution."""
    if all(x is xs[0] for x in xs):
        return xs[0].contiguous(memory_format=fmt)
    return torch.stack(xs, dim=1).flatten(1, 2).contiguous(memory_format=fmt)


def forward(template: nn.Module, stacked: list[torch.Tensor], x: torch.Tensor,
            drops: list | None = None) -> torch.Tensor:
    """(M, B, classes) logits of M SeedNets shaped like `template`, from their stacked
    parameters, on x = one shared batch (B, C, H, W) or M stacked ones (B, M*C, H, W); dropout
    masks come from `drops` (None: eval mode). Like SeedNet.forward, each max-pool runs before
    the ReLU ahead of it (same values, 4x less ReLU work)."""
    m, params = len(stacked[0]), iter(stacked)

    def conv_layer(layer, x):
        if isinstance(layer, nn.Conv2d):
            weight, bias = next(params).flatten(0, 1), next(params).flatten()
            # a shared input (B, C_in, H, W) feeds all M filter banks at once: a dense conv,
            # cheaper than the grouped one over M copies of the input (benchmarks/)
            groups = 1 if x.shape[1] == layer.in_channels else m
            return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation,
                            groups=groups)
        if isinstance(layer, nn.ReLU):
            return F.relu_(x)  # in place: conv and pool backward need their inputs, not this
        assert isinstance(layer, nn.MaxPool2d), f"cannot fuse {layer}"
        return layer(x)

    x = pool_before_relu(template.conv_block, x, conv_layer)
    h = x.reshape(x.shape[0], m, -1).transpose(0, 1)  # (M, B, C*H*W): each member's flatten(1)
    for layer in template.linear_block:
        if isinstance(layer, nn.Linear):
            weight, bias = next(params), next(params)
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
        elif isinstance(layer, nn.Dropout):
            h = h * dropout_masks(h, layer.p, drops) if drops is not None else h
        else:
            assert isinstance(layer, nn.ReLU), f"cannot fuse {layer}"
            h = layer(h)
    return h


def dropout_masks(h: torch.Tensor, p: float, drops: list[torch.Generator]) -> torch.Tensor:
    """Member k's scaled keep-mask drawn from drops[k] as F.dropout draws it on CPU; in float32
    even under bf16 autocast (1/0.75 in bf16 would be 1.3359)."""
    return torch.stack([torch.empty(h.shape[1:], dtype=torch.float32, device=h.device)
                        .bernoulli_(1 - p, generator=g).div_(1 - p) for g in drops])
