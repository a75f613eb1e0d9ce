"""`python -m sweep.grid`: the seed study's full ablation grid on Ray Tune.

With no argument: transform x model x regulariser x optimiser x lr = 96 trials of 10 epochs on all
training data, seed 0, on an embedded local Ray. Comma-list flags (or --config FILE.yaml) narrow or
widen any axis; --preset seed runs the seed report's own experiments; --dry-run lists trials;
--smoke runs 2 tiny trials end to end; --address joins a Ray cluster; --resume --name X continues.
--fuse N (default 4) trains up to N trials that share model, transform and scalars as one stacked
model per Ray trial (cifar_core.fused); each member is still recorded as its own trial,
<trial_id>-m<k>. Four at a time is the fastest set-up measured on CPU (benchmarks/); --fuse 1
gives every configuration its own Ray trial.
"""
from __future__ import annotations

import sys

from cifar_core.config import ConfigError
from cifar_core.errors import DataError
from cifar_core.config import SHARED

from . import cli
from .runfolder import SweepError
from .settings import Settings
from .space import (AXES, DEFAULT_GRID, SEED_EXPERIMENTS, SMOKE_GRID,
                    SMOKE_SCALARS, describe, expand_grid, seed_preset)

PROG = "python -m sweep.grid"
FUSE = 4  # configs per Ray trial: 2 stacks of 4 at 1 thread each beat 2 solo trials ~1.5-1.9x
DEFAULTS = {"fuse": FUSE}  # the rest: sweep.settings.Settings


def build_parser():
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[1].replace("\n", " "))
    cli.add_common(p)
    p.add_argument("--preset", choices=["seed"], help="seed: the seed report's runs, labelled")
    p.add_argument("--dry-run", action="store_true", default=None,
                   help="print one line per trial and the count; run nothing")
    p.add_argument("--scheduler", choices=["none", "asha"],
                   help="asha: stop trials early by val_acc (needs --val-size; trains unfused); "
                        "default none, the reference's protocol: every trial runs every epoch")
    p.add_argument("--fuse", type=int, metavar="N",
                   help="train up to N trials that differ only in lr, lam, regulariser, optimiser "
                        f"and seed as one stacked model per Ray trial (default {FUSE}; 1: off)")
    return p


def build_trials(settings: Settings) -> list[dict]:
    """The trial dicts this invocation runs (validated; ConfigError names a bad value)."""
    if settings.smoke:
        return expand_grid(SMOKE_GRID, seeds=1, **SMOKE_SCALARS)
    scalars = {"epochs": settings.epochs, "batch_size": settings.batch_size}
    if settings.preset == "seed":
        given = [a for a in AXES if getattr(settings, a) is not None and a != "final_relu"]
        if given:
            raise SweepError(f"--preset seed fixes every axis but --final-relu; "
                             f"drop --{given[0].replace('_', '-')}")
        relu = [True] if settings.final_relu is None else cli.as_list(settings.final_relu)
        return seed_preset(seeds=settings.seeds, final_relu=relu, **scalars)
    values = {a: getattr(settings, a) for a in AXES}
    axes = {a: DEFAULT_GRID[a] if v is None else cli.as_list(v) for a, v in values.items()}
    empty = [a for a in AXES if not axes[a]]
    if empty:
        raise SweepError(f"--{empty[0].replace('_', '-')} is empty; give at least one value")
    return expand_grid(axes, seeds=settings.seeds, **scalars)


def fuse_groups(trials: list[dict], fuse: int) -> list[list[dict]] | None:
    """Trials sharing cifar_core.config.SHARED, in chunks of at most `fuse`; None when it is 1."""
    if fuse == 1:
        return None
    by_shared: dict[tuple, list[dict]] = {}
    for trial in trials:
        by_shared.setdefault(tuple(str(trial[k]) for k in SHARED), []).append(trial)
    n = fuse
    return [group[i:i + n] for group in by_shared.values() for i in range(0, len(group), n)]


def check_scheduler(settings: Settings) -> Settings:
    """--scheduler asha stops configurations one by one on held-out images: it needs --val-size
    and trains unfused (--fuse 1, the default with it). SweepError otherwise."""
    if settings.scheduler != "asha":
        return settings
    if not settings.val_size:
        raise SweepError("--scheduler asha stops trials by val_acc, never by test accuracy; "
                         "give --val-size N (training images held out, e.g. 5000)")
    if "fuse" in settings.given and settings.fuse != 1:
        raise SweepError(f"--scheduler asha stops configurations one by one; --fuse="
                         f"{settings.fuse} would stop a whole stack at once: use --fuse 1")
    return settings.replace(fuse=1)


def dry_run(trials: list[dict], groups: list[list[dict]] | None = None) -> None:
    """One numbered line per trial (under a header per Ray trial when fused), then the counts."""
    purpose = {label: text for label, text, _ in SEED_EXPERIMENTS}
    number = {id(trial): i for i, trial in enumerate(trials, 1)}
    for r, group in enumerate(groups or [trials], 1):
        if groups:
            shared = describe({k: group[0][k] for k in SHARED})
            print(f"Ray trial {r}/{len(groups)}: {len(group)} fused, sharing {shared}")
        for trial in group:
            i = number[id(trial)]
            labels = trial.get("label", "")
            why = "; ".join(purpose[lab] for lab in labels.split("|")) if labels else ""
            print(f"{i:3d}. {describe(trial)}" + (f"  <- {labels}: {why}" if why else ""))
    if groups:
        print(f"{len(groups)} Ray trials of up to {max(map(len, groups))} fused configurations")
    print(f"{len(trials)} trials")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = cli.parse_settings(build_parser(), argv, DEFAULTS)
        if settings.resume:
            if settings.dry_run:
                raise SweepError("--dry-run lists a new sweep's trials; drop it with --resume")
            return _resume(cli.resumed_settings(settings), argv)
        settings = check_scheduler(settings)
        trials = build_trials(settings)
        groups = fuse_groups(trials, settings.fuse)
        cli.preflight(settings, settings.name)
        if settings.dry_run:
            dry_run(trials, groups)
            return 0
        space = {"preset": settings.preset, "smoke": settings.smoke, "seeds": settings.seeds,
                 "axes": {a: sorted({str(t[a]) for t in trials}) for a in AXES}}
        return _launch(settings, argv, trials, space, groups)
    except (SweepError, ConfigError, DataError) as err:
        return cli.fail(PROG, err)


def _launch(settings, argv, trials, space, groups=None) -> int:
    from ray import tune

    from . import tuning  # imports Ray: only once the input is known to be good

    points = trials if groups is None else [{"members": group} for group in groups]

    def make_tuner(trainable, run_config):
        extra = {} if settings.scheduler == "none" else dict(
            scheduler=tuning.asha(settings, trials[0]["epochs"]), metric="val_acc", mode="max")
        return tune.Tuner(trainable, param_space={"trial": tune.grid_search(points)},
                          tune_config=tuning.tune_config(settings, **extra), run_config=run_config)

    # n_trials counts configurations (fused members each count, in Progress too); epochs count
    # Ray trials' epochs, as Progress sees them
    planned = (len(trials), sum((p["members"][0] if groups else p)["epochs"] for p in points))
    extra = {"ray_trials": len(points)} if groups else None
    return tuning.launch(kind="grid", prog=PROG, module="sweep.grid", argv=argv,
                         settings=settings, space=space, trials=planned, make_tuner=make_tuner,
                         extra=extra)


def _resume(settings: Settings, argv) -> int:
    folder = cli.resume_folder(settings)  # a missing or finished run is answered without Ray
    if cli.already_finished(folder, folder.read_info()):
        return 0
    from . import tuning

    return tuning.resume(prog=PROG, module="sweep.grid", argv=argv, settings=settings)


if __name__ == "__main__":
    sys.exit(main())
