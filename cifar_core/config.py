"""The trial as data: one frozen, validated config per trial and one result per epoch.

Every hyperparameter a trial reads lives in `TrialConfig`, with what the rest of the project needs
to know about it (kind, help, check, levels) in its field's metadata; execution settings (device,
data dir, threads, results path) never do. Build it from a sweep's dict with `TrialConfig(**cfg)` (or
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


def _field(default, kind: str, help: str, check, levels: tuple = ()):
    """A TrialConfig field: its default, kind ("axis": a grid/search axis; "scalar": one value per
    sweep; "seed"), help text (every CLI's), check (key, value) -> canonical value, and levels
    (the reference's order of a categorical axis, for reports)."""
    return dataclasses.field(default=default, metadata={"kind": kind, "help": help,
                                                        "check": check, "levels": levels})


def _choice(key, value):
    return canonical(key, value)


def _number(kind, ok, allowed: str):
    def check(key, value):
        try:
            if isinstance(value, bool) or (kind is int and float(value) != int(float(value))):
                raise ValueError
            number = kind(float(value)) if kind is int else float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not allowed; use {allowed}") from None
        if math.isnan(number) or not ok(number):
            raise ConfigError(f"{key}={value!r} is not allowed; use {allowed}")
        return number
    return check


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """Every hyperparameter of one trial; defaults are the reference report's.

    A field's metadata says everything else needs to know about it (see _field): adding a
    hyperparameter is one field here plus the code that uses it; the sweep's axes and flags, the
    results columns and the report's axes follow from these fields.
    """

    transform: str = _field("none", "axis", "input transform level: " + ", ".join(TRANSFORMS)
                            + " (the reference's spellings accepted)", _choice, TRANSFORMS)
    model: str = _field("baseline", "axis", "network: baseline, dropout (Dropout(0.25) in the "
                        "linear block)", _choice, MODELS)
    regulariser: str = _field("none", "axis", "weight penalty: none, l1, l2 (L1 = λ·Σ|w|, "
                              "L2 = λ·Σw²)", _choice, REGULARISERS)
    optimiser: str = _field("adam", "axis", "optimiser: adam, sgd (SGD has no momentum, as in "
                            "the reference)", _choice, OPTIMISERS)
    lr: float = _field(1e-3, "axis", "learning rate (> 0)", _number(float, lambda v: v > 0,
                                                                   "a number > 0"))
    lam: float = _field(1e-3, "axis", "penalty strength λ (>= 0; used by l1/l2)",
                        _number(float, lambda v: v >= 0, "a number >= 0"))
    final_relu: bool = _field(True, "axis", "keep the reference's ReLU on the logits: true, false",
                              parse_bool, (True, False))
    data_fraction: float = _field(1.0, "axis", "stratified share of the training split, in (0, 1]"
                                  " (the test split is whole)",
                                  _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]"))
    epochs: int = _field(10, "scalar", "epochs to train (>= 1)",
                         _number(int, lambda v: v >= 1, "an integer >= 1"))
    batch_size: int = _field(256, "scalar", "training batch size (>= 1)",
                             _number(int, lambda v: v >= 1, "an integer >= 1"))
    seed: int = _field(0, "seed", "seed for weights, data order, subset, augmentation and dropout "
                       "(>= 0)", _number(int, lambda v: v >= 0, "an integer >= 0"))

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))

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


FIELDS = {f.name: f for f in dataclasses.fields(TrialConfig)}
AXES = tuple(name for name, f in FIELDS.items() if f.metadata["kind"] == "axis")
SCALARS = tuple(name for name, f in FIELDS.items() if f.metadata["kind"] == "scalar")
HELP = {name: f.metadata["help"] for name, f in FIELDS.items()}
LEVELS = {name: f.metadata["levels"] for name, f in FIELDS.items() if f.metadata["levels"]}


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
