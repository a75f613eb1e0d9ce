"""Command-line plumbing shared by `python -m sweep.grid` and `python -m sweep.search`.

Flags and a `--config FILE.yaml` take the same keys; the file is read with yaml.safe_load, an
unknown key is an error naming it, and flags override the file. Every bad value becomes one line
on stderr and exit code 2 before Ray starts.
"""
from __future__ import annotations

import argparse
import os
import sys

from cifar_core.config import HELP

from .runfolder import SweepError
from .settings import Settings, flag
from .space import AXES


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_common(p: argparse.ArgumentParser, axes: tuple = AXES) -> None:
    """Flags both entry points share (defaults live in Settings, so YAML can override), with a
    comma-list flag for each of `axes` (help from TrialConfig's fields)."""
    p.add_argument("--config", help="YAML file with the same keys as the flags (flags win)")
    for axis in axes:
        p.add_argument("--" + axis.replace("_", "-"), dest=axis, metavar="A,B,...",
                       help=f"comma list; {HELP[axis]}")
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
    p.add_argument("--mlflow", nargs="?", const="", metavar="URI",
                   help="log every trial to MLflow (params, per-epoch metrics, status, command) "
                        "at URI; default a file store in the run folder (RUN/mlruns); needs "
                        "pip install -e '.[mlflow]'")
    p.add_argument("--keep-weights", action="store_true", default=None,
                   help="save each trial's final weights as weights/<trial_id>.pt in the run folder "
                        "(torch.load(FILE, weights_only=True) -> {'config', 'model'}, as "
                        "python -m cifar_core --save)")
    p.add_argument("--grace-epochs", type=int,
                   help="ASHA: epochs before a trial may be stopped early (default 1)")
    p.add_argument("--reduction-factor", type=int,
                   help="ASHA: each rung keeps the best 1/N of the trials (default 2)")


def parse_settings(parser: argparse.ArgumentParser, argv: list[str],
                   defaults: dict | None = None) -> Settings:
    """The invocation's Settings: `defaults` (the entry point's own) <- --config YAML <- flags.
    The keys allowed in YAML are exactly the parser's flags."""
    args = parser.parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k != "config"}
    return Settings.build(flags, config=args.config, defaults=defaults, allowed=set(flags))


def as_list(value) -> list:
    """A comma list from a flag, or a YAML list/scalar, as a list of values."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [value]


def fail(prog: str, err: Exception) -> int:
    """One line on stderr, exit code 2. A TrialConfig error names its key as the library does
    (`lr=0 is not allowed`); on the command line it is spelled as the flag (`--lr=0 ...`)."""
    message = str(err)
    key = message.split("=", 1)[0]
    if "=" in message and key in Settings.keys():
        message = flag(key) + message[len(key):]
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def data_dir_for(settings: Settings) -> str | None:
    return settings.data_dir or os.environ.get("CIFAR10_DIR")


def local_trials_book_gpus(settings: Settings) -> bool:
    """Whether the trials of a run book GPUs where they can see this machine's: --gpus-per-trial
    > 0, or by default when this machine has CUDA (sweep.tuning books 0.25 then)."""
    if settings.gpus_per_trial is not None:
        return settings.gpus_per_trial > 0
    import torch

    return torch.cuda.is_available()


def check_resources(settings: Settings) -> None:
    """Refuse, before Ray waits, trials this machine can never start (a local run only: a
    cluster's resources are its own, and its autoscaler may add nodes)."""
    if settings.address:
        return
    cpus = os.cpu_count() or 1
    if settings.cpus_per_trial > cpus:
        raise SweepError(f"--cpus-per-trial={settings.cpus_per_trial!r} is more than this "
                         f"machine's {cpus} CPUs, so no trial could ever start; use at most {cpus} "
                         "or join a cluster with --address")
    if (settings.gpus_per_trial or 0) > 0:
        import torch

        if not torch.cuda.is_available():
            raise SweepError(f"--gpus-per-trial={settings.gpus_per_trial!r}: this machine has "
                             "no GPU, so no trial could ever start; drop the flag or use --address")


def preflight(settings: Settings, name: str | None) -> None:
    """Every check a real run makes before Ray starts, for --dry-run too: the run folder's name
    and place, an existing run of that name, the data dir and the resources."""
    from cifar_core.layout import check_data_dir

    from .runfolder import RunFolder, check_location

    if name:
        RunFolder(check_location(settings.results_dir, name), resume=False).refuse_existing()
    else:
        check_location(settings.results_dir, "probe")
    check_data_dir(data_dir_for(settings), download=settings.download)
    check_resources(settings)
    check_mlflow(settings)


def check_mlflow(settings: Settings) -> None:
    import importlib.util

    if settings.mlflow is not None and importlib.util.find_spec("mlflow") is None:
        raise SweepError("--mlflow needs MLflow, which is not installed: pip install -e '.[mlflow]'")


def resume_folder(settings: Settings):
    """The run folder --resume --name continues, or SweepError naming what is missing."""
    from .runfolder import RunFolder, check_location

    if not settings.name:
        raise SweepError("--resume needs --name NAME of the run to continue")
    folder = RunFolder(check_location(settings.results_dir, settings.name), resume=True)
    folder.require_existing()
    return folder


def already_finished(folder, info: dict) -> bool:
    """True (and says so) when every trial of a finished run is done: a resume has nothing to do."""
    done, total = folder.finished_trials()
    if info.get("status") == "finished" and done == total:
        print(f"run {os.path.basename(folder.path)!r} is already finished ({done} trials); "
              "nothing to do")
        return True
    return False


def saved_settings(settings: Settings) -> dict:
    """The settings run.json recorded for run --name ({} when it has none). Read here, without
    Ray, so a refusal never starts it."""
    folder = resume_folder(settings)  # SweepError when there is no such run
    try:
        return folder.read_info().get("settings", {})
    except (OSError, ValueError, AttributeError):
        return {}


def resumed_settings(settings: Settings, *, also: tuple = ()) -> Settings:
    """The settings a --resume of run --name runs with (Settings.resumed: the flags given among
    RESUMABLE + `also` applied, any other flag that would change the run refused)."""
    return settings.resumed(saved_settings(settings), also=also)
