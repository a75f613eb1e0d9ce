"""One sweep's settings as one frozen, validated value: defaults <- --config YAML <- flags.

`Settings` holds every flag of `sweep.grid` and `sweep.search` (an entry point uses its own and
leaves the others at their defaults), checks every value in one place (`__post_init__`, messages
spelled as the flag: `--epochs=0 is not allowed; use an integer >= 1`), and remembers which keys
this invocation set explicitly (`given`), so a `--resume` applies exactly those
(`resumed`) and refuses, in one line naming them, the ones that would change the experiment.
run.json stores `to_dict()`; `from_saved` reads it back. Ray-free: the checks run before Ray.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import yaml

from .runfolder import SweepError
from .space import AXES, DEFAULT_SCALARS

# flags a resume may change: where and how trials run, never what they train
RESUMABLE = ("cpus_per_trial", "gpus_per_trial", "max_concurrent", "max_failures", "address",
             "data_dir", "download", "report")
RUN_FLAGS = ("resume", "name", "results_dir")  # which run a resume continues


def flag(key: str) -> str:
    """The command-line spelling of a settings key (the one spelling every message uses)."""
    return "--" + key.replace("_", "-")


# what trains: one field per TrialConfig axis (a comma list or YAML list; None: the entry point's
# default), generated so that a new hyperparameter needs no edit here
_Axes = dataclasses.make_dataclass("_Axes", [(a, object, field(default=None)) for a in AXES],
                                   frozen=True, kw_only=True)


@dataclass(frozen=True, kw_only=True)
class Settings(_Axes):
    """Every setting of a sweep invocation: the axes (from _Axes), then these."""

    seeds: int = 1
    epochs: int = DEFAULT_SCALARS["epochs"]
    batch_size: int = DEFAULT_SCALARS["batch_size"]
    # where the data and results live, which run
    data_dir: str | None = None
    download: bool = False
    results_dir: str = "results"
    name: str | None = None
    resume: bool = False
    # how trials run
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 0.25 when the cluster has GPUs, else 0
    max_concurrent: int | None = None
    max_failures: int = 2
    channels_last: bool = True
    amp: str = "none"
    val_size: int = 0
    smoke: bool = False
    report: bool = False
    mlflow: str | None = None  # log to MLflow: a tracking URI, "" for <run>/mlruns
    keep_weights: bool = False  # export each trial's final weights to weights/<trial_id>.pt
    grace_epochs: int = 1  # ASHA: epochs before a trial may be stopped
    reduction_factor: int = 2  # ASHA: keep the best 1/reduction_factor at each rung
    # sweep.grid
    preset: str | None = None
    dry_run: bool = False
    fuse: int | str = "auto"  # configurations per Ray trial; auto: sweep.plan measures it
    order: str = "cost"  # Ray trials start longest first (sweep.grid.expected_cost); grid: as listed
    scheduler: str = "none"  # "asha": early stopping on val_acc (opt-in)
    # sweep.search
    n_trials: int = 20
    search_axes: str = ""
    lr_range: str | None = None
    lam_range: str | None = None
    no_prune: bool = False
    storage: str | None = None
    sampler_seed: int = 0
    # the keys this invocation set explicitly (a flag or --config), for --resume
    given: frozenset = field(default=frozenset(), compare=False)

    def __post_init__(self):
        problems = [p for key, check in _CHECKS.items() if (p := check(key, getattr(self, key)))]
        if problems:  # every bad value at once, on one line
            raise SweepError("; ".join(problems))

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "given")

    @classmethod
    def build(cls, flags: dict, *, config: str | None = None, defaults: dict | None = None,
              allowed: set | None = None) -> "Settings":
        """defaults <- the YAML file `config` <- flags (None = not given). `allowed`: the keys
        this entry point takes (an unknown YAML key is an error naming its line)."""
        allowed = set(allowed or cls.keys())
        from_file = load_yaml(config, allowed=allowed) if config else {}
        given = {k: v for k, v in flags.items() if v is not None}
        return cls(**{**(defaults or {}), **from_file, **given},
                   given=frozenset(from_file) | frozenset(given))

    @classmethod
    def from_saved(cls, saved: dict) -> "Settings":
        """The settings run.json recorded (keys this version no longer knows are dropped)."""
        return cls(**{k: v for k, v in saved.items() if k in cls.keys()})

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.keys()}

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def resumed(self, saved: dict, *, also: tuple = ()) -> "Settings":
        """The settings a --resume runs with: the saved ones plus exactly the flags given among
        RESUMABLE (+ `also`). A flag given with a value the run did not record would change the
        experiment and is refused, all of them in one line (restating a recorded value is fine)."""
        takes = (*RESUMABLE, *also)
        changed = sorted(k for k in self.given - set(takes) - set(RUN_FLAGS)
                         if saved.get(k, getattr(Settings(), k)) != getattr(self, k))
        if changed:
            raise SweepError(f"--resume continues run {self.name!r} as it was defined; "
                             f"{', '.join(map(flag, changed))} would change it (a resume takes "
                             f"only {', '.join(map(flag, takes))})")
        applied = {k: getattr(self, k) for k in self.given if k in takes}
        return Settings.from_saved(saved).replace(**applied, resume=True, name=self.name,
                                                  results_dir=self.results_dir, given=self.given)


def load_yaml(path: str, *, allowed: set) -> dict:
    """A --config file as {key: value}: plain YAML (yaml.safe_load), every unknown key named
    with its line and column, all at once."""
    try:
        with open(path) as f:
            text = f.read()
        values = yaml.safe_load(text) or {}
    except OSError as err:
        raise SweepError(f"--config={path!r} cannot be read: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SweepError(f"--config={path!r} is not plain YAML{where}: {problem}; only plain "
                         "mappings, lists, strings and numbers are read (yaml.safe_load)") from None
    if not isinstance(values, dict):
        raise SweepError(f"--config={path!r} must hold a mapping of keys to values")
    lines = _key_lines(text)
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = [k for k in values if k not in allowed]
    if unknown:
        named = ", ".join(f"{k}{lines.get(k, '')}" for k in unknown)
        raise SweepError(f"--config={path!r}: unknown key(s) {named}; allowed: "
                         f"{', '.join(sorted(allowed))}")
    return values


def _key_lines(text: str) -> dict[str, str]:
    """Top-level key -> ' (line L, column C)' of a YAML mapping, for messages."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value).replace("-", "_"): f" (line {k.start_mark.line + 1}, column "
            f"{k.start_mark.column + 1})" for k, _ in node.value}


# --- the checks, one per key: a message spelled as the flag, or None ------------------------------

def _number(kinds, ok, allowed: str, optional: bool = True):
    def check(key, value):
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, kinds) or \
                (isinstance(value, float) and math.isnan(value)) or not ok(value):
            return f"{flag(key)}={value!r} is not allowed; use {allowed}"
        return None
    return check


def _choice(*choices):
    def check(key, value):
        if value is not None and value not in choices:
            return f"{flag(key)}={value!r} is not allowed; choose {' or '.join(map(str, choices))}"
        return None
    return check


def _boolean(key, value):
    if not isinstance(value, bool):
        return f"{flag(key)}={value!r} is not allowed; use true or false"
    return None


def _text(key, value):
    if value is not None and not isinstance(value, str):
        return f"{flag(key)}={value!r} is not allowed; use a string"
    return None


_COUNT = _number(int, lambda v: v >= 1, "an integer >= 1")
_FUSE = _number(int, lambda v: v >= 1, "an integer >= 1 or auto", optional=False)
_CHECKS = {
    **{key: _COUNT for key in ("seeds", "epochs", "batch_size", "max_concurrent", "n_trials",
                                "grace_epochs")},
    "fuse": lambda key, value: None if value == "auto" else _FUSE(key, value),
    "order": _choice("cost", "grid"),
    "max_failures": _number(int, lambda v: v >= 0, "an integer >= 0"),
    "reduction_factor": _number(int, lambda v: v >= 2, "an integer >= 2", optional=False),
    "scheduler": _choice("none", "asha"),
    "val_size": _number(int, lambda v: v >= 0, "an integer >= 0", optional=False),
    "sampler_seed": _number(int, lambda v: v >= 0, "an integer >= 0", optional=False),
    "cpus_per_trial": _number((int, float), lambda v: v > 0, "a number > 0", optional=False),
    "gpus_per_trial": _number((int, float), lambda v: v >= 0, "a number >= 0"),
    "amp": _choice("none", "bf16"),
    "preset": _choice("seed"),
    **{key: _boolean for key in ("download", "resume", "channels_last", "smoke", "report",
                                 "dry_run", "no_prune", "keep_weights")},
    **{key: _text for key in ("data_dir", "results_dir", "name", "address", "storage", "mlflow")},
}
assert set(_CHECKS) | set(AXES) | {"search_axes", "lr_range", "lam_range"} == set(Settings.keys())
