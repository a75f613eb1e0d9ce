"""The seed report's two networks, built from a TrialConfig.

`baseline` is the seed's Custom_Network (61 706 parameters); `dropout` is its Net_dropout (Dropout
0.25 after the first two ReLUs of the linear block). The seed ends both with a ReLU on the logits,
which clamps negative logits to 0 before CrossEntropyLoss; `final_relu` keeps it (the faithful
default) or drops it so a sweep can measure what it costs.
"""
from __future__ import annotations

from torch import nn

from .config import TrialConfig


class SeedNet(nn.Module):
    """Conv(3,6,3)-ReLU-Pool-Conv(6,12,3)-ReLU-Conv(12,16,3)-ReLU-Pool, then 400-120-84-10."""

    def __init__(self, *, dropout: float = 0.0, final_relu: bool = True, num_classes: int = 10):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(3, 6, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 12, kernel_size=3), nn.ReLU(),
            nn.Conv2d(12, 16, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2, 2),
        )
        def drop():
            return [nn.Dropout(dropout)] if dropout > 0 else []

        self.linear_block = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), *drop(),
            nn.Linear(120, 84), nn.ReLU(), *drop(),
            nn.Linear(84, num_classes), *([nn.ReLU()] if final_relu else []),
        )

    def forward(self, x):
        return self.linear_block(pool_before_relu(self.conv_block, x).flatten(1))


def pool_before_relu(block: nn.Sequential, x, call=lambda layer, x: layer(x)):
    """Run `block` (each layer as call(layer, x)), taking each MaxPool2d before the ReLU ahead of it.

    ReLU is monotone, so max-pooling and ReLU commute: the values are bit-identical and the
    gradients equal up to ties between positive maxima, while the ReLU and its backward touch 4x
    fewer elements (measured ~8% faster training on CPU). The modules stay in the seed's order.
    """
    layers, i = list(block), 0
    while i < len(layers):
        if (isinstance(layers[i], nn.ReLU) and i + 1 < len(layers)
                and isinstance(layers[i + 1], nn.MaxPool2d)):
            x, i = call(layers[i], call(layers[i + 1], x)), i + 2
        else:
            x, i = call(layers[i], x), i + 1
    return x


def build_model(cfg: TrialConfig) -> SeedNet:
    """The network a trial trains (weights drawn from torch's global RNG; seed it first)."""
    return SeedNet(dropout=0.25 if cfg.model == "dropout" else 0.0, final_relu=cfg.final_relu)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
