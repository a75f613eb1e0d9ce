"""One trial without Ray: `python -m cifar_core --transform augment+normalize --model dropout ...`.

Prints one JSON object per epoch and a last JSON line with the trial's status. Bad input gets one
line on stderr naming the key, the value and what is allowed, and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from .config import HELP, ConfigError, TrialConfig
from .data import DataError, load_cifar10
from .process import setup_process
from .train import TrainState, fit, resolve_device

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, never a usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m cifar_core", description="Train one CIFAR-10 trial of the seed "
                "study and print one JSON line per epoch, then a status line.")
    defaults = TrialConfig()
    for f in dataclasses.fields(TrialConfig):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, dest=f.name, default=getattr(defaults, f.name), metavar="VALUE",
                       help=f"{HELP[f.name]} (default: {getattr(defaults, f.name)})")
    p.add_argument("--data-dir", help="CIFAR-10 folder: torchvision's cifar-10-batches-py/ or "
                   "train/<class>/ + test/<class>/ images (default: $CIFAR10_DIR, else ~/.cache/cifar10)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR-10 if absent")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--amp", choices=["none", "bf16"], default="none",
                   help="bf16 autocast for forward passes (opt-in, for GPUs)")
    p.add_argument("--save", metavar="FILE.pt", help="write the trained weights and the config "
                   "(torch.load(FILE, weights_only=True) -> {'config', 'model'})")
    return p


def main(argv=None) -> int:
    args = vars(build_parser().parse_args(argv))
    run = {k: args.pop(k) for k in ("data_dir", "download", "device", "threads", "amp", "save")}
    try:
        cfg = TrialConfig(**args)
        _check_save(run["save"])
        data = load_cifar10(run["data_dir"], download=run["download"])
    except (ConfigError, DataError) as err:
        print(f"python -m cifar_core: error: {err}", file=sys.stderr)
        return 2
    device = resolve_device(run["device"])
    setup_process(run["threads"], device)
    state = TrainState.create(cfg, device)
    status = "completed"
    for result in fit(cfg, data, device, state=state, amp=run["amp"]):
        print(json.dumps(result.to_dict()), flush=True)
        status = "completed" if result.status == "ok" else result.status
    if run["save"]:
        _save(run["save"], cfg, state)
    print(json.dumps({"status": status, "config": cfg.to_dict(),
                      **({"saved": run["save"]} if run["save"] else {})}), flush=True)
    return 0


def _check_save(path: str | None) -> None:
    """Refuse before training a --save path whose folder does not exist or cannot be written."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ConfigError(f"--save={path!r}: folder {folder} does not exist or is not writable")


def _save(path: str, cfg: TrialConfig, state: TrainState) -> None:
    """The trained weights (on CPU) and the config, loadable with weights_only=True."""
    import torch

    weights = {k: v.detach().cpu() for k, v in state.model.state_dict().items()}
    tmp = f"{path}.tmp"
    torch.save({"config": cfg.to_dict(), "model": weights}, tmp)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
