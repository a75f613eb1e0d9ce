"""Resident memory of a sweep with 1 and with 2 trials at once, next to the dataset's size.

Runs the same small `python -m sweep.grid` (2 trials, all training data so they last) twice, with
`--max-concurrent 1` and `2`, and every SAMPLE_EVERY_S seconds sums over the driver and all its
descendants (embedded Ray: raylet, GCS, workers, trial actors) psutil's `memory_full_info()`:
PSS (shared pages split between the processes that map them) and RSS (counted in full by each).
On Linux, smaps_rollup also splits PSS into anonymous (private heap), shmem (Ray's object store in
/dev/shm) and file-backed pages. The dataset (60 000 x 3 x 32 x 32 uint8 = 184 MB) is put into the
object store once, so a second trial should add one more worker's private memory (measured apart:
a fresh process importing what a trial imports), not a dataset copy; `compare` says whether the
peak grew by one. Run via `python -m benchmarks --only memory`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

try:
    import psutil
except ImportError:  # Ray vendors psutil and puts its copy on sys.path when imported
    import ray  # noqa: F401
    import psutil

from .sweeps import REPO, grid_argv, run_grid

DATASET_BYTES = 60_000 * 3 * 32 * 32
SAMPLE_EVERY_S = 0.5
FULL_GRID = {"transforms": ("none",), "models": ("baseline", "dropout"), "optimisers": ("adam",)}
TRIAL_TITLE = "ray::ImplicitFunc"  # Ray's process title for a function trainable's actor
_ROLLUP = {"Pss_Anon:": "pss_anon", "Pss_Shmem:": "pss_shmem", "Pss_File:": "pss_file",
           "RssShmem:": "rss_shmem"}
_SUMMED = ("rss", "pss", "uss", "pss_anon", "pss_shmem", "pss_file")


def process_memory(proc: psutil.Process, root_pid: int) -> dict | None:
    """One process's memory in bytes with a readable label; None if it is gone or unreadable."""
    try:
        info = proc.memory_full_info()
        label = "driver (sweep.grid)" if proc.pid == root_pid else _label(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return {"pid": proc.pid, "label": label, "rss": info.rss, "pss": info.pss, "uss": info.uss,
            **_rollup(proc.pid)}


def _label(cmdline: list[str]) -> str:
    if not cmdline:
        return "?"
    if cmdline[0].startswith("ray::"):
        return cmdline[0].split()[0]
    scripts = [os.path.basename(a) for a in cmdline[1:3] if a.endswith(".py")]
    return scripts[0] if scripts else os.path.basename(cmdline[0])


def _rollup(pid: int) -> dict:
    """PSS split (anon / shmem / file) from smaps_rollup and RssShmem from status (Linux; else 0)."""
    found = dict.fromkeys(_ROLLUP.values(), 0)
    for name in ("smaps_rollup", "status"):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    key, *rest = line.split()
                    if key in _ROLLUP:
                        found[_ROLLUP[key]] = int(rest[0]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    return found


def sample_tree(root: psutil.Process) -> list[dict]:
    """process_memory of `root` and every descendant alive now."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    return [row for row in (process_memory(p, root.pid) for p in procs) if row]


def totals(rows: list[dict]) -> dict:
    """Sums over the processes of one sample, plus how many there were and how many trials."""
    summed = {key: sum(row[key] for row in rows) for key in _SUMMED}
    trials = sum(row["label"].startswith(TRIAL_TITLE) for row in rows)
    return {**summed, "processes": len(rows), "trial_workers": trials}


def watch_memory(proc) -> dict:
    """Sample the process tree of `proc` until it exits; the peaks and the rows at the PSS peak."""
    root = psutil.Process(proc.pid)
    start, series, peak_rows = time.monotonic(), [], []
    while proc.poll() is None:
        rows = sample_tree(root)
        if rows:
            series.append({"t": time.monotonic() - start, **totals(rows)})
            if series[-1]["pss"] >= max(s["pss"] for s in series):
                peak_rows = rows
        time.sleep(SAMPLE_EVERY_S)
    return summarise_series(series, peak_rows)


def summarise_series(series: list[dict], peak_rows: list[dict]) -> dict:
    """Peak totals (the sample with the most PSS, and the most RSS) of one run."""
    if not series:
        return {"samples": 0}
    at_pss = max(series, key=lambda s: s["pss"])
    return {"samples": len(series), "peak_pss": at_pss["pss"],
            "peak_rss": max(s["rss"] for s in series), "at_peak_pss": at_pss,
            "max_trial_workers": max(s["trial_workers"] for s in series),
            "peak_processes": sorted(peak_rows, key=lambda r: -r["pss"])}


def measure_memory(*, grid: dict, epochs: int, fraction: float, data_dir: str | None,
                   log=print) -> dict:
    """The same grid with 1 and 2 trials at once; peaks, growth and the verdict."""
    runs = {}
    for concurrent in (1, 2):
        argv = grid_argv(**grid, epochs=epochs, fraction=fraction, max_concurrent=concurrent,
                         data_dir=data_dir)
        log(f"  python -m sweep.grid {' '.join(argv)}")
        run = run_grid(argv, watch=watch_memory)
        runs[concurrent] = dict(run.watched, wall_s=run.wall_seconds, argv=argv,
                                statuses=sorted({r["status"] for r in run.trials}))
    return {"dataset_bytes": DATASET_BYTES, "sample_every_s": SAMPLE_EVERY_S,
            "runs": {str(c): r for c, r in runs.items()}, **compare(runs[1], runs[2], import_floor())}


def import_floor() -> dict:
    """Private memory of a fresh process that imports what a trial worker imports, and no data."""
    code = ("import json, os, torch, torchvision, cifar_core, sweep.trainable; from ray import tune; "
            "from benchmarks.memory import _rollup; print(json.dumps(_rollup(os.getpid())))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare(one: dict, two: dict, floor: dict) -> dict:
    """How much the 2-trial peak grew over the 1-trial peak, by kind, and whether by a dataset.

    One more trial must add one more worker's private memory (`floor`: its imports alone). The
    peak grew by a dataset copy when the object store (shmem) grew by half a dataset or more, or
    the private (anon) memory grew by half a dataset or more beyond that worker's import floor.
    """
    a, b = one["at_peak_pss"], two["at_peak_pss"]
    growth = {f"growth_{k}": b[k] - a[k] for k in ("pss", "pss_anon", "pss_shmem", "pss_file")}
    growth["growth_peak_rss"] = two["peak_rss"] - one["peak_rss"]
    beyond = growth["growth_pss_anon"] - floor["pss_anon"]
    copied = growth["growth_pss_shmem"] >= DATASET_BYTES / 2 or beyond >= DATASET_BYTES / 2
    return {**growth, "worker_import_floor": floor, "growth_anon_beyond_floor": beyond,
            "object_store_pss": b["pss_shmem"], "grew_by_dataset_copy": copied,
            "verdict": verdict(growth, beyond, copied, b["pss_shmem"])}


def verdict(growth: dict, beyond: int, copied: bool, store: int) -> str:
    mb = lambda n: f"{n / 1e6:+.0f} MB"  # noqa: E731
    head = ("GREW by a dataset copy" if copied else "did not grow by a dataset copy")
    return (f"2 trials at once {head} ({DATASET_BYTES / 1e6:.0f} MB): peak PSS {mb(growth['growth_pss'])} "
            f"over 1 trial = object store (shmem) {mb(growth['growth_pss_shmem'])} "
            f"[{store / 1e6:.0f} MB in all], private heap (anon) {mb(growth['growth_pss_anon'])} "
            f"[{mb(beyond)} beyond a trial worker's import floor], files {mb(growth['growth_pss_file'])}")
