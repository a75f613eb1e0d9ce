"""Sweep overhead: how much of a Ray Tune grid's wall time is not spent inside trials.

Runs `python -m sweep.grid` on a 16-trial grid (4 transforms x 2 models x 2 optimisers, the
grid's default 10 epochs unless --overhead-epochs, `--data-fraction D`, 2 Ray trials at once, the
grid's default fusing) in a temp folder, then

    overhead = 1 - (in-trial seconds) / (wall seconds x concurrent Ray trials)

where in-trial seconds sum epochs.csv's `seconds` (training plus evaluation) once per Ray trial
and epoch (fused members share their stack's time), and the wall is the subprocess's, Python
start-up and data loading included. The same ratio inside `tuner.fit` (run.json's
`wall_seconds`) and between the first trial starting and the last one ending (the per-trial
machinery alone: scheduling, checkpoints, reporting, recording), the time before `tuner.fit`
(imports, data, `ray.init`; run.json's `started_at`, to the second), until the first trial runs
(progress lines) and after the last one ends split it up: those fixed seconds (Ray's start and
stop) are what a short grid pays on top, so the ratio depends on how long the trials run. Run
through `python -m benchmarks --only overhead`.
"""
from __future__ import annotations

import datetime
from collections import Counter

import pandas as pd

from cifar_core.config import TRANSFORMS
from sweep.report.load import ray_trial_ids

from .sweeps import GridRun, grid_argv, progress_times, run_grid

FULL_GRID = {"transforms": TRANSFORMS, "models": ("baseline", "dropout"),
             "optimisers": ("adam", "sgd")}  # 16 trials
QUICK_GRID = {"transforms": ("none", "augment+normalize"), "models": ("baseline",),
              "optimisers": ("adam", "sgd")}  # 4 trials
CONCURRENT = 2


def measure_overhead(*, grid: dict, epochs: int, fraction: float, data_dir: str | None,
                     concurrent: int = CONCURRENT, log=print) -> dict:
    """Run the grid once and return its overhead figures."""
    argv = grid_argv(**grid, epochs=epochs, fraction=fraction, max_concurrent=concurrent,
                     data_dir=data_dir)
    log(f"  python -m sweep.grid {' '.join(argv)}")
    return summarise(run_grid(argv), concurrent)


def summarise(run: GridRun, concurrent: int) -> dict:
    """The overhead figures of a finished grid run (pure: reads only `run`)."""
    cpus = run.info.get("hardware", {}).get("cluster_resources", {}).get("CPU", concurrent)
    slots = min(concurrent, int(cpus))
    in_trial = stack_seconds(run.epochs, "seconds")
    training = stack_seconds(run.epochs, "train_seconds")
    tune_fit = float(run.info.get("wall_seconds") or 0.0)
    times = progress_times(run.lines)
    done, first = times["all_trials_done_s"], times["first_trial_running_s"]
    running = None if done is None or first is None else done - first
    return {
        "argv": run.argv, "trials": len(run.trials), "epochs": len(run.epochs),
        "epochs_per_trial": max((int(r["epoch"]) for r in run.epochs), default=0),
        "ray_trials": int(ray_trial_ids(pd.Series([r["trial_id"] for r in run.trials])).nunique()),
        "statuses": dict(Counter(r["status"] for r in run.trials)), "concurrent": slots,
        "wall_s": run.wall_seconds, "in_trial_s": in_trial, "in_trial_training_s": training,
        "overhead": _overhead(in_trial, run.wall_seconds, slots),
        "tune_fit_s": tune_fit, "overhead_inside_tune_fit": _overhead(in_trial, tune_fit, slots),
        "running_s": running,
        "overhead_while_running": None if running is None else _overhead(in_trial, running, slots),
        "before_tune_fit_s": _seconds_after(run.info.get("started_at"), run.launched_at),
        "startup_s": times["first_trial_running_s"],
        "teardown_s": None if done is None else run.wall_seconds - done,
        "mean_trial_s": in_trial / max(len(run.trials), 1),
    }


def stack_seconds(epochs: list[dict], column: str) -> float:
    """`column` summed once per Ray trial and epoch: a fused stack's members all carry its time."""
    if not epochs:
        return 0.0
    rows = pd.DataFrame(epochs)
    per_step = rows[column].astype(float).groupby([ray_trial_ids(rows["trial_id"]), rows["epoch"]])
    return float(per_step.max().sum())


def _seconds_after(iso: str | None, launched_at: float) -> float | None:
    """Seconds from launch to an ISO timestamp of run.json (whole seconds: +-1 s)."""
    if not iso:
        return None
    return datetime.datetime.fromisoformat(iso).timestamp() - launched_at


def _overhead(in_trial: float, wall: float, slots: int) -> float | None:
    return 1 - in_trial / (wall * slots) if wall > 0 else None
