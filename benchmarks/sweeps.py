"""Run `python -m sweep.grid` as a subprocess into a temporary results folder, and read it back.

Shared by the sweep-overhead and memory benchmarks: `run_grid` launches the sweep exactly as a user
would (its own embedded local Ray), stamps every stdout line with the seconds since launch, lets a
`watch(proc)` callback sample the process tree while it runs, and returns the run's epochs.csv,
trials.csv and run.json. `progress_times` reads Ray start-up and tear-down off the progress lines.
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_NAME = "bench"
_PROGRESS = re.compile(r"done (\d+)/(\d+) · running (\d+)")


@dataclass
class GridRun:
    """What one sweep subprocess left: timings, output lines and its result files."""

    argv: list[str]
    returncode: int
    wall_seconds: float
    lines: list[tuple[float, str]]  # (seconds since launch, line)
    launched_at: float  # time.time() at launch, to place run.json's timestamps
    epochs: list[dict]
    trials: list[dict]
    info: dict
    watched: object = None  # whatever `watch` returned


def grid_argv(*, transforms, models, optimisers, epochs: int, fraction: float,
              max_concurrent: int, data_dir: str | None) -> list[str]:
    """Flags for one `sweep.grid` run (regulariser none, lr 1e-3, batch 256)."""
    argv = ["--transform", ",".join(transforms), "--model", ",".join(models),
            "--optimiser", ",".join(optimisers), "--regulariser", "none", "--lr", "1e-3",
            "--epochs", str(epochs), "--data-fraction", str(fraction),
            "--max-concurrent", str(max_concurrent), "--max-failures", "0"]
    return argv + (["--data-dir", str(data_dir)] if data_dir else [])


def run_grid(argv: list[str], *, watch=None, timeout_s: float = 7200) -> GridRun:
    """Run the sweep to the end in a temp results dir; RuntimeError with its output if it fails."""
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        full = [*argv, "--results-dir", tmp, "--name", RUN_NAME]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONUNBUFFERED": "1"}
        start, launched_at = time.monotonic(), time.time()
        proc = subprocess.Popen([sys.executable, "-m", "sweep.grid", *full], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                encoding="utf-8", errors="replace")
        lines: list[tuple[float, str]] = []
        reader = threading.Thread(target=_read_lines, args=(proc, start, lines), daemon=True)
        reader.start()
        try:
            watched = watch(proc) if watch else None
            returncode = proc.wait(timeout=timeout_s)
        except BaseException:
            _stop(proc)
            raise
        wall = time.monotonic() - start
        reader.join(timeout=10)
        if returncode != 0:
            tail = "\n".join(line for _, line in lines[-20:])
            raise RuntimeError(f"python -m sweep.grid {' '.join(argv)} exited {returncode}:\n{tail}")
        folder = Path(tmp) / RUN_NAME
        return GridRun(argv=argv, returncode=returncode, wall_seconds=wall, lines=lines,
                       launched_at=launched_at,
                       epochs=_rows(folder / "epochs.csv"), trials=_rows(folder / "trials.csv"),
                       info=json.loads((folder / "run.json").read_text()), watched=watched)


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl+C first (the sweep then shuts its Ray down), a kill only if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _read_lines(proc: subprocess.Popen, start: float, lines: list) -> None:
    for line in proc.stdout:
        lines.append((time.monotonic() - start, line.rstrip("\n")))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def progress_times(lines: list[tuple[float, str]]) -> dict:
    """Seconds from launch to the first progress line with a trial running, and to all done."""
    first_running = all_done = None
    for seconds, line in lines:
        match = _PROGRESS.search(line)
        if not match:
            continue
        done, total, running = map(int, match.groups())
        if first_running is None and (running or done):
            first_running = seconds
        if all_done is None and done == total:
            all_done = seconds
    return {"first_trial_running_s": first_running, "all_trials_done_s": all_done}
