"""`python -m sweep.grid`: the seed study's full ablation grid on Ray Tune.

With no argument: transform x model x regulariser x optimiser x lr = 96 trials of 10 epochs on all
training data, seed 0, on an embedded local Ray. Comma-list flags (or --config FILE.yaml) narrow or
widen any axis; --preset seed runs the seed report's own experiments; --dry-run lists trials;
--smoke runs 2 tiny trials end to end; --address joins a Ray cluster; --resume --name X continues.
--fuse N trains up to N trials that share model, transform and scalars as one stacked
model per Ray trial (cifar_core.fused); each member is still recorded as its own trial,
<trial_id>-m<k>; --fuse 1 gives every configuration its own Ray trial. The default, --fuse auto,
takes the stack size and threads per trial (on a GPU: trials per GPU) that train fastest on this
machine, measured once and cached (sweep.plan). Ray trials start longest first (--order cost), so
the last ones to run are short and no slot idles long at the end.
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
FUSE = 4  # what a --dry-run lists before --fuse auto has measured this machine
TRAIN_IMAGES = 50_000  # CIFAR-10's training split, for expected_cost
EVAL_IMAGES = 20_000  # scored every epoch: 10 000 test + 10 000 train_eval images
DEFAULTS: dict = {}  # the grid's own defaults over Settings' (none: Settings holds them)


def build_parser():
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[1].replace("\n", " "))
    cli.add_common(p)
    p.add_argument("--preset", choices=["seed"], help="seed: the seed report's runs, labelled")
    p.add_argument("--dry-run", action="store_true", default=None,
                   help="print one line per trial and the count; run nothing")
    p.add_argument("--scheduler", choices=["none", "asha"],
                   help="asha: stop trials early by val_acc (needs --val-size; trains unfused); "
                        "default none, the reference's protocol: every trial runs every epoch")
    p.add_argument("--fuse", type=_fuse_value, metavar="N|auto",
                   help="train up to N trials that differ only in lr, lam, regulariser, optimiser "
                        "and seed as one stacked model per Ray trial (1: off); default auto: the "
                        "size, and threads per trial, measured fastest on this machine (cached)")
    p.add_argument("--order", choices=["cost", "grid"],
                   help="cost (default): start the Ray trials with the most training first, so "
                        "the end of the sweep is short ones; grid: in the grid's order")
    return p


def _fuse_value(text: str):
    return int(text) if text.strip().lstrip("-").isdigit() else text.strip()


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
    """Trials sharing cifar_core.config.SHARED, in as few chunks of at most `fuse` as possible,
    their sizes differing by at most one (12 at --fuse 5: 4+4+4, not 5+5+2, whose short stack
    would finish early and idle its slot); None when fuse is 1."""
    if fuse == 1:
        return None
    by_shared: dict[tuple, list[dict]] = {}
    for trial in trials:
        by_shared.setdefault(tuple(str(trial[k]) for k in SHARED), []).append(trial)
    groups = []
    for group in by_shared.values():
        chunks = -(-len(group) // fuse)
        size, extra = divmod(len(group), chunks)
        bounds = [0]
        for c in range(chunks):
            bounds.append(bounds[-1] + size + (c < extra))
        groups += [group[a:b] for a, b in zip(bounds, bounds[1:])]
    return groups


def expected_cost(configs: list[dict]) -> float:
    """A Ray trial's work from its configurations, in image passes: each epoch trains
    data_fraction of the training images and scores EVAL_IMAGES at about a third of a training
    image each (a forward pass without the backward). A model, not a measurement: transform and
    network cost about the same per image (results/full-grid: Ray trials of 171-213 s)."""
    return sum(c["epochs"] * (c["data_fraction"] * TRAIN_IMAGES + EVAL_IMAGES / 3) for c in configs)


def in_order(units: list[list[dict]], order: str) -> list[list[dict]]:
    """The Ray trials (each a list of its configurations) in the order Tune starts them:
    longest first for "cost" (a stable sort: equal costs keep the grid's order), as listed for
    "grid"."""
    if order == "grid":
        return units
    return sorted(units, key=lambda unit: -expected_cost(unit))


def resolve_fuse(settings: Settings, trials: list[dict]) -> tuple[Settings, dict | None]:
    """--fuse auto: the plan measured (or cached) for this machine, applied: its stack size, and
    for a local run its threads per trial unless --cpus-per-trial is given (on a GPU, 1/its
    trials per GPU unless --gpus-per-trial is given); a cluster's nodes were not measured, so
    --address takes the stack size only. A given --fuse N is kept (no plan). A --dry-run lists
    with the cached plan, else with FUSE, and measures nothing."""
    if settings.fuse != "auto":
        return settings, None
    from cifar_core.config import TrialConfig

    from . import plan as planning

    device = _plan_device(settings)
    cfgs = [TrialConfig.from_dict({k: v for k, v in t.items() if k != "label"}) for t in trials]
    if settings.dry_run:
        key = planning.cache_key(device, batch_size=cfgs[0].batch_size,
                                 channels_last=settings.channels_last, amp=settings.amp)
        chosen = planning.cached(key)
        if chosen is None:
            print(f"--fuse auto: not measured on this machine yet (the launch measures it once, "
                  f"about half a minute); listed with --fuse {FUSE}")
            return settings.replace(fuse=FUSE), None
    else:
        chosen = planning.plan_for(cfgs, cli.data_dir_for(settings), device,
                                   channels_last=settings.channels_last, amp=settings.amp)
    layout = planning.Layout(chosen["fuse"], chosen["threads"], chosen["slots"])
    changes = {"fuse": layout.fuse}
    if device == "cpu" and "cpus_per_trial" not in settings.given and not settings.address:
        changes["cpus_per_trial"] = float(layout.threads)
    if device == "cuda" and "gpus_per_trial" not in settings.given and not settings.address:
        changes["gpus_per_trial"] = 1.0 / layout.slots
    where = (" (measured where this driver runs: the stack size is applied, threads per trial "
             "stay --cpus-per-trial)") if settings.address else ""
    print(f"--fuse auto: {layout.describe(device)}, {chosen['member_images_per_second']:,.0f} "
          f"member-images/s ({chosen.get('source', 'cached')}, {planning.cache_path()}){where}",
          flush=True)
    return settings.replace(**changes), chosen


def _plan_device(settings: Settings) -> str:
    """Where trials will train, as the plan needs it: cuda when they book GPUs and this machine
    has one to measure, else cpu."""
    import torch

    return "cuda" if cli.local_trials_book_gpus(settings) and torch.cuda.is_available() else "cpu"


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
        cli.preflight(settings, settings.name)
        settings, plan = resolve_fuse(settings, trials)
        groups = fuse_groups(trials, settings.fuse)
        units = in_order(groups or [[t] for t in trials], settings.order)
        groups = units if groups else None
        trials = trials if groups else [unit[0] for unit in units]
        if settings.dry_run:
            dry_run(trials, groups)
            return 0
        space = {"preset": settings.preset, "smoke": settings.smoke, "seeds": settings.seeds,
                 "axes": {a: sorted({str(t[a]) for t in trials}) for a in AXES}}
        return _launch(settings, argv, trials, space, groups, plan)
    except (SweepError, ConfigError, DataError) as err:
        return cli.fail(PROG, err)


def _launch(settings, argv, trials, space, groups=None, plan=None) -> int:
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
    extra = {"ray_trials": len(points)} if groups else {}
    if plan:
        extra["fuse_plan"] = plan
    return tuning.launch(kind="grid", prog=PROG, module="sweep.grid", argv=argv,
                         settings=settings, space=space, trials=planned, make_tuner=make_tuner,
                         extra=extra)


def _resume(settings: Settings, argv) -> int:
    folder = cli.resume_folder(settings)  # a missing or finished run is answered without Ray
    info = folder.read_info()
    if cli.already_finished(folder, info):
        return 0
    from . import tuning

    return tuning.resume(prog=PROG, module="sweep.grid", argv=argv, settings=settings, info=info)


if __name__ == "__main__":
    sys.exit(main())
