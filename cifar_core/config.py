"""The trial as data: one frozen, validated config per trial and one result per epoch.

Every hyperparameter a trial reads lives in `TrialConfig`; execution settings (device, data dir,
threads, results path) never do. Build it from a sweep's dict with `TrialConfig(**cfg)` (or
`TrialConfig.from_dict`, which names unknown keys) and derive variants with `dataclasses.replace`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

TRANSFORMS = ("none", "augment", "normalize", "augment+normalize")
MODELS = ("baseline", "dropout")
REGULARISERS = ("none", "l1", "l2")
OPTIMISERS = ("adam", "sgd")

# The seed notebook spells values its own way ("L2", "Adam", "with_aug_norm"); accept those.
_ALIASES = {
    "transform": {"aug": "augment", "norm": "normalize", "normalise": "normalize",
                  "augment+normalise": "augment+normalize", "aug+norm": "augment+normalize",
                  "aug_norm": "augment+normalize", "with_aug_norm": "augment+normalize",
                  "both": "augment+normalize"},
    "regulariser": {"l1-reg": "l1", "l2-reg": "l2"},
    "model": {"custom_network": "baseline", "net_dropout": "dropout"},
}
_CHOICES = {"transform": TRANSFORMS, "model": MODELS, "regulariser": REGULARISERS,
            "optimiser": OPTIMISERS}


# What configurations must share to train as one stack (cifar_core.fused): the architecture,
# the input pipeline and the schedule; they may differ in regulariser, lam, optimiser, lr, seed.
SHARED = ("model", "transform", "epochs", "batch_size", "data_fraction", "final_relu")


class ConfigError(ValueError):
    """A bad hyperparameter: the message names the key, the value and what is allowed."""


def canonical(key: str, value) -> str:
    """The canonical spelling of a categorical value, or ConfigError naming what is allowed."""
    text = str(value).strip().lower()
    text = _ALIASES.get(key, {}).get(text, text)
    if text not in _CHOICES[key]:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(_CHOICES[key])}")
    return text


def parse_bool(key: str, value) -> bool:
    """true/false/1/0/yes/no (any case) as a bool, or ConfigError naming the key."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key}={value!r} is not allowed; choose true or false")


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """Every hyperparameter of one trial; defaults are the seed report's."""

    transform: str = "none"
    model: str = "baseline"
    regulariser: str = "none"
    lam: float = 1e-3
    optimiser: str = "adam"
    lr: float = 1e-3
    epochs: int = 10
    batch_size: int = 256
    data_fraction: float = 1.0
    final_relu: bool = True
    seed: int = 0

    def __post_init__(self):
        for key in _CHOICES:
            object.__setattr__(self, key, canonical(key, getattr(self, key)))
        object.__setattr__(self, "final_relu", parse_bool("final_relu", self.final_relu))
        _check_number(self, "lr", float, lambda v: v > 0, "a number > 0")
        _check_number(self, "lam", float, lambda v: v >= 0, "a number >= 0")
        _check_number(self, "data_fraction", float, lambda v: 0 < v <= 1, "a number in (0, 1]")
        _check_number(self, "epochs", int, lambda v: v >= 1, "an integer >= 1")
        _check_number(self, "batch_size", int, lambda v: v >= 1, "an integer >= 1")
        _check_number(self, "seed", int, lambda v: v >= 0, "an integer >= 0")

    @classmethod
    def from_dict(cls, values: dict) -> "TrialConfig":
        """Build from a dict, naming any unknown key (a typo must never be silently ignored)."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            allowed = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}; allowed keys: {allowed}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_number(cfg, key, kind, ok, allowed):
    value = getattr(cfg, key)
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(float(value))):
            raise ValueError
        number = kind(float(value)) if kind is int else float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not allowed; use {allowed}") from None
    if math.isnan(number) or not ok(number):
        raise ConfigError(f"{key}={value!r} is not allowed; use {allowed}")
    object.__setattr__(cfg, key, number)


@dataclass(frozen=True, kw_only=True)
class EpochResult:
    """One epoch's metrics. `status` is "ok", or "diverged" when a loss became NaN/inf."""

    epoch: int
    train_loss: float
    train_penalty: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float
    train_seconds: float
    images_per_second: float
    train_eval_loss: float = math.nan  # eval mode on a fixed 10 000 of the trial's training images
    train_eval_acc: float = math.nan
    val_loss: float = math.nan  # the run's held-out training images (fit's val_size); nan: none
    val_acc: float = math.nan
    status: str = "ok"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
