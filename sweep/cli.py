"""Command-line plumbing shared by `python -m sweep.grid` and `python -m sweep.search`.

Flags and a `--config FILE.yaml` take the same keys; the file is read with yaml.safe_load, an
unknown key is an error naming it, and flags override the file. Every bad value becomes one line
on stderr and exit code 2 before Ray starts.
"""
from __future__ import annotations

import argparse
import os
import sys

import yaml

from .runfolder import SweepError
from .space import AXES, DEFAULT_SCALARS

AXIS_HELP = {
    "transform": "input transforms: none, augment, normalize, augment+normalize",
    "model": "networks: baseline, dropout",
    "regulariser": "weight penalties: none, l1, l2",
    "optimiser": "optimisers: adam, sgd",
    "lr": "learning rates (> 0)",
    "lam": "penalty strengths λ for l1/l2 (>= 0)",
    "final_relu": "keep the seed's ReLU on the logits: true, false",
    "data_fraction": "shares of the training split, in (0, 1]",
}


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_common(p: argparse.ArgumentParser) -> None:
    """Flags both entry points share (defaults live in the entry point, so YAML can override)."""
    p.add_argument("--config", help="YAML file with the same keys as the flags (flags win)")
    for axis in AXES:
        p.add_argument("--" + axis.replace("_", "-"), dest=axis, metavar="A,B,...",
                       help=f"comma list of {AXIS_HELP[axis]}")
    p.add_argument("--seeds", type=int, metavar="N", help="seeds 0..N-1 become an axis (default 1)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default 10)")
    p.add_argument("--batch-size", type=int, help="training batch size (default 256)")
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: $CIFAR10_DIR, else ~/.cache/cifar10)")
    p.add_argument("--download", action="store_true", default=None,
                   help="let torchvision download CIFAR-10 into --data-dir if it is absent")
    p.add_argument("--results-dir", help="where run folders go (default: results)")
    p.add_argument("--name", help="run name = folder under --results-dir (default: a timestamp)")
    p.add_argument("--resume", action="store_true", default=None,
                   help="continue the unfinished trials of run --name")
    p.add_argument("--address", help="Ray cluster to join: auto or HOST:PORT (default: a local Ray)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial = torch threads (default 1)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial, fractional allowed (default 0.25 if GPUs exist, else 0)")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--max-failures", type=int, help="retries of a failed trial (default 2)")
    p.add_argument("--contiguous", dest="channels_last", action="store_false", default=None,
                   help="train in NCHW instead of channels_last (the faster default on CPU)")
    p.add_argument("--amp", choices=["none", "bf16"],
                   help="bf16 autocast for forward passes (opt-in, for GPUs; default none)")
    p.add_argument("--val-size", type=int, metavar="N",
                   help="training images held out (stratified, the same for every trial), "
                        "scored as val_acc every epoch and never trained on "
                        "(default: grid 0, search 5000)")
    p.add_argument("--smoke", action="store_true", default=None,
                   help="a tiny end-to-end run (2 trials, 1 epoch, 2%% of the data)")
    p.add_argument("--report", action="store_true", default=None,
                   help="write the Markdown report when the sweep ends")


COMMON_DEFAULTS = {
    "seeds": 1, **DEFAULT_SCALARS, "data_dir": None, "download": False,
    "results_dir": "results", "name": None, "resume": False, "address": None,
    "cpus_per_trial": 1.0, "gpus_per_trial": None, "max_concurrent": None, "max_failures": 2,
    "channels_last": True, "amp": "none", "smoke": False, "report": False, "val_size": 0,
}


def merge_settings(args: argparse.Namespace, defaults: dict) -> dict:
    """defaults <- YAML file <- flags; unknown YAML keys are an error naming them."""
    flags = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    from_file = load_yaml(args.config, allowed=set(defaults)) if args.config else {}
    return {**defaults, **from_file, **flags}


def load_yaml(path: str, *, allowed: set) -> dict:
    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except OSError as err:
        raise SweepError(f"--config={path!r} cannot be read: {err.strerror}") from None
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise SweepError(f"--config={path!r} is not plain YAML ({first}); only plain "
                         "mappings, lists, strings and numbers are read (yaml.safe_load)") from None
    if not isinstance(values, dict):
        raise SweepError(f"--config={path!r} must hold a mapping of keys to values")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise SweepError(f"--config={path!r}: unknown key(s) {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(allowed))}")
    return values


def as_list(value) -> list:
    """A comma list from a flag, or a YAML list/scalar, as a list of values."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value]


_LIMITS = {  # key: (types, test, what to use); every other key is a count
    "gpus_per_trial": ((int, float), lambda v: v >= 0, "a number >= 0"),
    "cpus_per_trial": ((int, float), lambda v: v > 0, "a number > 0"),
}
_COUNT = (int, lambda v: v >= 1, "an integer >= 1")


def check_positive(settings: dict, *keys: str) -> None:
    for key in keys:
        value = settings.get(key)
        kinds, ok, allowed = _LIMITS.get(key, _COUNT)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)
                                  or not ok(value)):
            raise SweepError(f"--{key.replace('_', '-')}={value!r} is not allowed; use {allowed}")


def fail(prog: str, err: Exception) -> int:
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 2


def data_dir_for(settings: dict) -> str | None:
    return settings["data_dir"] or os.environ.get("CIFAR10_DIR")


def check_resources(settings: dict) -> None:
    """Refuse, before Ray waits, trials this machine can never start (a local run only: a
    cluster's resources are its own, and its autoscaler may add nodes)."""
    if settings.get("address"):
        return
    cpus = os.cpu_count() or 1
    if (settings.get("cpus_per_trial") or 0) > cpus:
        raise SweepError(f"--cpus-per-trial={settings['cpus_per_trial']!r} is more than this "
                         f"machine's {cpus} CPUs, so no trial could ever start; use at most {cpus} "
                         "or join a cluster with --address")
    if (settings.get("gpus_per_trial") or 0) > 0:
        import torch

        if not torch.cuda.is_available():
            raise SweepError(f"--gpus-per-trial={settings['gpus_per_trial']!r}: this machine has "
                             "no GPU, so no trial could ever start; drop the flag or use --address")


def preflight(settings: dict, name: str | None) -> None:
    """Every check a real run makes before Ray starts, for --dry-run too: the run folder's name
    and place, an existing run of that name, the data dir and the resources."""
    from cifar_core.data import check_data_dir

    from .runfolder import RunFolder, check_location

    if name:
        RunFolder(check_location(settings["results_dir"], name), resume=False).refuse_existing()
    else:
        check_location(settings["results_dir"], "probe")
    check_data_dir(data_dir_for(settings), download=bool(settings.get("download")))
    check_resources(settings)


RESUMABLE = ("cpus_per_trial", "gpus_per_trial", "max_concurrent", "max_failures", "address",
             "data_dir", "download", "report")  # flags a resume may change
RUN_FLAGS = ("resume", "name", "results_dir")  # which run a resume continues


def given_keys(args: argparse.Namespace) -> set[str]:
    """The keys this invocation set explicitly, on the command line or in --config."""
    keys = {k for k, v in vars(args).items() if v is not None and k != "config"}
    if getattr(args, "config", None):
        keys |= set(load_yaml(args.config, allowed=set(vars(args)) | {"dry_run"}))
    return keys


def saved_settings(settings: dict) -> dict | None:
    """The settings run.json recorded for run --name, or None when there is no such run (the
    resume itself says so). Read here, without Ray, so a refusal never starts it."""
    import json

    path = os.path.join(settings["results_dir"], settings["name"] or "", "run.json")
    try:
        with open(path) as f:
            return json.load(f).get("settings", {})
    except (OSError, ValueError, AttributeError):
        return None


def resumed_settings(settings: dict, given: set[str], *, also: tuple = ()) -> dict:
    """The flags a resume applies: exactly those given among RESUMABLE (+ `also`). Any other
    flag given with a value the run did not record would change the experiment and is refused
    with one line naming it (restating a recorded value is fine)."""
    saved = saved_settings(settings)
    fixed = given - set(RESUMABLE) - set(RUN_FLAGS) - set(also)
    refused = sorted(k for k in fixed if saved is not None and saved.get(k) != settings[k])
    if refused:
        names = ", ".join("--" + k.replace("_", "-") for k in refused)
        raise SweepError(f"--resume continues run {settings['name']!r} as it was defined; {names} "
                         f"would change it (a resume takes only "
                         f"{', '.join('--' + k.replace('_', '-') for k in (*RESUMABLE, *also))})")
    return {k: settings[k] for k in given if k in RESUMABLE or k in also}
