"""A driver-side Tune callback printing one compact progress line instead of Ray's tables.

done / running / pending / failed, the best test accuracy so far, elapsed time and an ETA from
the epochs finished so far; a line when something changes, plus a heartbeat.
"""
from __future__ import annotations

import math
import time

from ray import tune

from .schema import configurations



class Progress(tune.Callback):
    """One compact line per change (trial started/finished/failed) plus a heartbeat."""

    def __init__(self, total_trials: int, total_epochs: int, heartbeat_s: float = 30.0):
        self.total_trials, self.total_epochs, self.heartbeat_s = total_trials, total_epochs, heartbeat_s
        self._setup()

    def _setup(self):
        self.start = time.monotonic()
        self.epochs_seen = 0
        self.best = None
        self.last_line, self.last_time = "", 0.0

    def __getstate__(self):
        return {k: getattr(self, k) for k in ("total_trials", "total_epochs", "heartbeat_s")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._setup()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.epochs_seen += 1
        acc = result.get("test_acc")
        if _finite(acc) and (self.best is None or acc > self.best):
            self.best = acc

    def on_step_end(self, iteration, trials, **info):
        self.show(trials)

    # No line at experiment end: after Ctrl+C, Tune marks the trials it stops as terminated in
    # memory (the saved state keeps them pending), so a closing count would claim "done 96/96".

    def show(self, trials, force: bool = False):
        counts = {s: sum(_configs(t) for t in trials if t.status == s)
                  for s in ("TERMINATED", "RUNNING", "ERROR")}
        pending = max(self.total_trials - sum(counts.values()), 0)
        elapsed = time.monotonic() - self.start
        key = f"{counts} {pending}"
        if not force and key == self.last_line and elapsed - self.last_time < self.heartbeat_s:
            return
        self.last_line, self.last_time = key, elapsed
        done_epochs = sum(t.last_result.get("epoch", 0) if t.last_result else 0 for t in trials)
        eta = _eta(elapsed, self.epochs_seen, self.total_epochs - done_epochs)
        best = f"{100 * self.best:.1f}%" if self.best is not None else "-"
        print(f"[{_clock(elapsed)}] done {counts['TERMINATED']}/{self.total_trials} · running "
              f"{counts['RUNNING']} · pending {pending} · failed {counts['ERROR']} · best test acc "
              f"{best} · ETA {eta}", flush=True)


def _configs(trial) -> int:
    """How many configurations a Ray trial trains: its fused members, else 1."""
    return len(configurations(trial.config)) if isinstance(trial.config, dict) else 1


def _eta(elapsed: float, epochs_seen: int, epochs_left: int) -> str:
    if epochs_seen == 0 or epochs_left <= 0:
        return "-" if epochs_left > 0 else "0:00:00"
    return _clock(elapsed / epochs_seen * epochs_left)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
