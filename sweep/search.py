"""`python -m sweep.search`: an Optuna study (seeded TPE) over lr and λ, run through Ray Tune.

The same trainable, flags, results layout and progress display as the grid. lr is searched
log-uniformly, λ too for l1/l2 trials; categorical axes are fixed by the grid's flags, or searched
when named in --search-axes. Trials are selected and pruned on val_acc, the accuracy on --val-size
training images held out from every trial (never on test: a best picked on test accuracy would
report an optimistic test accuracy); test_acc is recorded, never selected on. ASHA stops weak
trials per epoch (--no-prune turns it off). The study
lives in the run folder (Optuna journal file) or in --storage URL, so `optuna-dashboard` can open
it and `--resume --name X` keeps adding trials to it.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

from cifar_core.config import ConfigError, TrialConfig
from cifar_core.errors import DataError

from . import cli
from .runfolder import SweepError
from .settings import Settings, flag
from .space import AXES, SEARCH_RANGES, SEARCHABLE_CATEGORICALS, canonical_trial

PROG = "python -m sweep.search"
FIXED_DEFAULTS = {"transform": "augment+normalize", "model": "baseline", "regulariser": "l2",
                  "optimiser": "adam", "final_relu": True, "data_fraction": 1.0}
DEFAULTS = {"val_size": 5000}  # a search selects on held-out images; the rest: Settings
SEARCHED = tuple(SEARCH_RANGES)  # the axes Optuna samples from log-uniform ranges: lr, lam
JOURNAL = "study.journal"
METRIC = "val_acc"  # what the sampler, the scheduler and the reported best all maximise


def build_parser():
    p = cli.Parser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    cli.add_common(p, axes=tuple(a for a in AXES if a not in SEARCHED))
    for axis in SEARCHED:  # searched, not set: refused with a pointer to the range flag, unlisted
        p.add_argument(flag(axis), dest=axis, help=argparse.SUPPRESS)
    p.add_argument("--n-trials", type=int, help="trials to run (default 20; on --resume: more)")
    p.add_argument("--search-axes", metavar="A,B", help="categorical axes to search too: "
                   + ", ".join(SEARCHABLE_CATEGORICALS) + " (their flag lists give the choices)")
    p.add_argument("--lr-range", metavar="LO:HI", help="log-uniform lr range (default 1e-5:1e-1)")
    p.add_argument("--lam-range", metavar="LO:HI", help="log-uniform λ range (default 1e-6:1e-1)")
    p.add_argument("--no-prune", action="store_true", default=None, help="no ASHA early stopping")
    p.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://... or sqlite:///s.db "
                   f"(default: journal file {JOURNAL} in the run folder)")
    p.add_argument("--sampler-seed", type=int, help="TPE sampler seed (default 0)")
    p.add_argument("--dry-run", action="store_true", default=None,
                   help="make every check, print the search space and plan; run nothing")
    return p


def parse_range(key: str, text, default: tuple) -> tuple[float, float]:
    """'LO:HI' as a positive, increasing pair (log scale), or SweepError naming the flag."""
    if text is None:
        return default
    flag = f"--{key.replace('_', '-')}"
    try:
        lo, hi = (float(v) for v in str(text).split(":"))
    except ValueError:
        raise SweepError(f"{flag}={text!r} is not allowed; use LO:HI, e.g. 1e-5:1e-1") from None
    if not (0 < lo < hi) or hi == float("inf"):
        raise SweepError(f"{flag}={text!r} is not allowed; need 0 < LO < HI on a log scale")
    return lo, hi


def build_space(settings: Settings) -> dict:
    """The search space as data: categorical choices, fixed values, ranges."""
    searched = cli.as_list(settings.search_axes)
    bad = [a for a in searched if a not in SEARCHABLE_CATEGORICALS]
    if bad:
        raise SweepError(f"--search-axes={bad[0]!r} is not allowed; choose from "
                         + ", ".join(SEARCHABLE_CATEGORICALS))
    choices, fixed = {}, {}
    for axis in (*SEARCHABLE_CATEGORICALS, "data_fraction"):
        value = getattr(settings, axis)
        given = cli.as_list(value) if value is not None else None
        if axis in searched:
            probe = given or _all_values(axis)
            choices[axis] = sorted({str(canonical_trial({axis: v})[axis]) for v in probe})
        elif given and len(given) > 1:
            raise SweepError(f"--{axis.replace('_', '-')} has {len(given)} values; a search fixes "
                             f"it to one unless it is named in --search-axes")
        else:
            fixed[axis] = canonical_trial({axis: given[0] if given else FIXED_DEFAULTS[axis]})[axis]
    for axis in SEARCHED:
        if getattr(settings, axis) is not None:
            raise SweepError(f"--{axis} is searched; set its range with --{axis}-range LO:HI")
    check_val_size(settings.val_size)
    TrialConfig(epochs=settings.epochs, batch_size=settings.batch_size)
    return {"choices": choices, "fixed": fixed, "epochs": settings.epochs,
            "batch_size": settings.batch_size, "seed": 0,
            "lr_range": parse_range("lr_range", settings.lr_range, SEARCH_RANGES["lr"]),
            "lam_range": parse_range("lam_range", settings.lam_range, SEARCH_RANGES["lam"])}


def check_val_size(size) -> None:
    """A search needs a hold-out to select on: SweepError naming --val-size unless size >= 1."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SweepError(f"--val-size={size!r} is not allowed for a search: it selects and prunes "
                         f"on held-out training images, never on test; use an integer >= 1 "
                         f"(default {DEFAULTS['val_size']})")


def _all_values(axis: str) -> list:
    from cifar_core import config

    return {"transform": config.TRANSFORMS, "model": config.MODELS, "final_relu": [True, False],
            "regulariser": config.REGULARISERS, "optimiser": config.OPTIMISERS}[axis]


def define_by_run(trial, space: dict) -> dict:
    """Optuna define-by-run: sample the searched axes; return the constants of this trial."""
    values = {a: trial.suggest_categorical(a, c) for a, c in space["choices"].items()}
    trial.suggest_float("lr", *space["lr_range"], log=True)
    regulariser = values.get("regulariser", space["fixed"].get("regulariser"))
    constants = {k: space[k] for k in ("epochs", "batch_size", "seed")} | space["fixed"]
    if regulariser in ("l1", "l2"):
        trial.suggest_float("lam", *space["lam_range"], log=True)
    else:
        constants["lam"] = 0.0
    return constants


def open_storage(settings: Settings, run_path: str):
    """(storage factory, URL or None). An unreachable URL is a SweepError before Ray starts; the
    default journal file is created on first use, once the run folder exists."""
    import optuna
    from optuna.storages import JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from optuna.storages.journal import JournalFileBackend

    url = settings.storage
    if not url:
        journal = functools.cache(lambda: JournalStorage(JournalFileBackend(
            os.path.join(run_path, JOURNAL))))
        return journal, None
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        storage.get_all_studies()
    except Exception as err:  # noqa: BLE001 - any driver error means the same to the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SweepError(f"--storage={url!r} cannot be reached: {first}") from None
    return (lambda: storage), url


def make_tuner_factory(settings: Settings, space: dict, storage, study_name: str, n_trials: int,
                       seed_offset: int = 0):
    """A function (trainable, run_config) -> Tuner for this study.

    The sampler sees the whole study's history (OptunaSearch loads it from the storage), but its
    own RNG restarts with each session: a resumed session seeded like the first would draw the
    first session's random start-up points again. Seeding it with sampler_seed + the number of
    trials already in the study keeps a run reproducible and never repeats those draws.
    """
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from . import tuning
    from .study import FaithfulOptunaSearch

    def make_tuner(trainable, run_config):
        searcher = FaithfulOptunaSearch(space=functools.partial(define_by_run, space=space),
                                        metric=METRIC, mode="max", study_name=study_name,
                                        sampler=TPESampler(seed=settings.sampler_seed + seed_offset),
                                        storage=storage(), epochs=space["epochs"])
        limited = ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent or 2)
        scheduler = None if settings.no_prune else tuning.asha(settings, space["epochs"])
        config = tuning.tune_config(settings.replace(max_concurrent=None), search_alg=limited,
                                    scheduler=scheduler, num_samples=n_trials,
                                    metric=METRIC, mode="max")
        return tune.Tuner(trainable, tune_config=config, run_config=run_config)

    return make_tuner


def best_of(storage, study_name: str, run_path: str | None = None) -> dict | None:
    """The study's best trial (by val_acc) as {"params", "value", "metric", "number", ...} plus
    its trials.csv row's "trial_id" and "test_acc" when found, or None."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage())
    try:
        best = study.best_trial
    except ValueError:
        return None
    return {"params": best.params, "value": best.value, "metric": METRIC, "number": best.number,
            "n_study_trials": len(study.trials), **_test_of(best.params, run_path)}


def _test_of(params: dict, run_path: str | None) -> dict:
    """{"trial_id", "test_acc"} of the trials.csv row with these params (shown, not selected on)."""
    from .schema import read_csv

    rows = read_csv(os.path.join(run_path, "trials.csv")) if run_path else []
    for row in rows:
        if all(_same(row.get(key, ""), value) for key, value in params.items()):
            return {"trial_id": row["trial_id"], "test_acc": float(row["final_test_acc"] or "nan")}
    return {}


def _same(text: str, value) -> bool:
    """A CSV cell holds `value` (floats compared as numbers: the CSV keeps their repr)."""
    if isinstance(value, float):
        try:
            return float(text) == value
        except ValueError:
            return False
    return text == str(value)


def finish_hook(storage, study_name: str, run_path: str):
    def finish(info: dict) -> None:
        info["best"] = best = best_of(storage, study_name, run_path)
        if best:
            params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in best["params"].items())
            test = f" (test acc {100 * best['test_acc']:.2f}%)" if "test_acc" in best else ""
            print(f"best: val acc {100 * best['value']:.2f}%{test} with {params}")
    return finish


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = cli.parse_settings(build_parser(), argv, DEFAULTS)
        if "seeds" in settings.given:
            raise SweepError("--seeds is not taken by a search: each proposal trains one seed and "
                             "is judged by its val_acc; replicate chosen configurations with "
                             "python -m sweep.grid --seeds N, then python -m sweep.settle")
        if settings.resume:
            if settings.dry_run:
                raise SweepError("--dry-run shows a new search's space; drop it with --resume")
            return _resume(cli.resumed_settings(settings, also=("n_trials",)), argv)
        if settings.smoke:
            settings = settings.replace(n_trials=2, epochs=1, data_fraction=0.02)
        space = build_space(settings)
        cli.preflight(settings, settings.name)
        if settings.dry_run:
            dry_run(settings, space)
            return 0
        return _launch(settings, argv, space)
    except (SweepError, ConfigError, DataError) as err:
        return cli.fail(PROG, err)


def dry_run(settings: Settings, space: dict) -> None:
    """What the search would do, after every check the real run makes (storage included)."""
    if settings.storage:
        open_storage(settings, "")  # an unreachable URL is refused here too
    print(f"{settings.n_trials} trials of {space['epochs']} epochs (batch {space['batch_size']}, "
          f"seed {space['seed']}), selected on val_acc of {settings.val_size} held-out images")
    print(f"lr: log-uniform {space['lr_range'][0]:g}..{space['lr_range'][1]:g}; "
          f"lam: log-uniform {space['lam_range'][0]:g}..{space['lam_range'][1]:g} (l1/l2 only)")
    for axis, choices in space["choices"].items():
        print(f"{axis}: one of {', '.join(choices)}")
    for axis, value in space["fixed"].items():
        print(f"{axis}: {value}")
    pruner = "none" if settings.no_prune else \
        f"ASHA (grace {settings.grace_epochs}, reduction {settings.reduction_factor})"
    print(f"sampler: TPE (seed {settings.sampler_seed}); early stopping: {pruner}; "
          f"at most {settings.max_concurrent or 2} trials at once")


def _launch(settings, argv, space) -> int:
    from . import tuning
    from .runfolder import check_location, default_name

    settings = settings.replace(name=settings.name or default_name())
    path = check_location(settings.results_dir, settings.name)
    storage, url = open_storage(settings, path)  # an unreachable URL fails before Ray starts
    n = settings.n_trials
    extra = {"search": {"n_trials": n, "sampler": f"TPESampler(seed={settings.sampler_seed})",
                        "pruner": "none" if settings.no_prune else
                        f"ASHA(grace={settings.grace_epochs}, reduction={settings.reduction_factor})",
                        "storage": url or JOURNAL, "study_name": settings.name,
                        "metric": METRIC, "val_size": settings.val_size}}
    return tuning.launch(kind="search", prog=PROG, module="sweep.search", argv=argv,
                         settings=settings, space=space, trials=(n, n * space["epochs"]),
                         make_tuner=make_tuner_factory(settings, space, storage, settings.name, n),
                         extra=extra, finish=finish_hook(storage, settings.name, path))


def _resume(settings: Settings, argv: list[str]) -> int:
    """Add trials to the same study in a fresh Ray experiment; finished trials stay as they are.
    `settings`: the saved ones plus the flags given (Settings.resumed)."""
    from . import tuning
    from .schema import TERMINAL, TRIAL_COLUMNS, read_csv, write_csv

    folder = cli.resume_folder(settings)
    info = folder.read_info()
    if not info["settings"].get("val_size"):
        raise SweepError(f"run {settings.name!r} selected on test accuracy (it predates "
                         "--val-size); start a new search instead of resuming it")
    rows = read_csv(os.path.join(folder.path, "trials.csv"))
    done = sum(r["status"] in TERMINAL for r in rows)
    asked = settings.n_trials if "n_trials" in settings.given else None
    more = asked if asked is not None else max(info["search"]["n_trials"] - done, 0)
    if more == 0:
        print(f"run {settings.name!r} is already finished ({done} trials); add more with "
              "--n-trials N")
        return 0
    storage, _ = open_storage(settings, folder.path)
    for row in rows:  # trials cut off with the last session are not rerun: record them as errors
        row["status"] = row["status"] if row["status"] in TERMINAL else "error"
    write_csv(os.path.join(folder.path, "trials.csv"), TRIAL_COLUMNS, rows)
    space = info["space"]
    session = len(info.get("resumed_at", [])) + 2
    info.update(n_trials=done + more, session_trials=more, total_epochs=more * space["epochs"],
                ray_dir=f"ray-{session}")
    info["search"]["n_trials"] = done + more
    return tuning.resume(prog=PROG, module="sweep.search", argv=argv, settings=settings,
                         make_tuner=make_tuner_factory(settings, space, storage, info["name"], more,
                                                       seed_offset=len(rows)),
                         info=info, finish=finish_hook(storage, info["name"], folder.path))


if __name__ == "__main__":
    sys.exit(main())
