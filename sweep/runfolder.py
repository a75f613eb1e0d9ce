"""The run folder: one sweep's results, its lock, and its provenance (run.json).

A run lives at RESULTS_DIR/NAME. Only one sweep may use it at a time (an fcntl lock, released by
the OS if the process dies), an existing run is never overwritten without --resume, and run.json
records what made it: the space, the command line, versions, git SHA, hardware and times.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata

from .schema import RUN_JSON, TERMINAL, TRIALS_CSV, read_csv, read_json, write_json

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SweepError(ValueError):
    """Bad input or a refused run: one line naming the key, the value and what is allowed."""


def default_name() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def check_location(results_dir: str, name: str) -> str:
    """The run folder's absolute path, or SweepError if the name escapes or the dir is unwritable."""
    if not NAME_RE.match(name or "") or name in (".", ".."):
        raise SweepError(f"--name={name!r} is not allowed; use letters, digits, '.', '_' and '-' "
                         "(a plain folder name inside --results-dir)")
    root = os.path.abspath(results_dir)
    probe = root
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise SweepError(f"--results-dir={results_dir!r} is not writable (checked {probe})")
    return os.path.join(root, name)


class RunFolder:
    """Create (or reopen with resume=True) and lock a run folder."""

    def __init__(self, path: str, *, resume: bool):
        self.path, self.resume = path, resume
        self._lock = None

    def exists(self) -> bool:
        return os.path.exists(os.path.join(self.path, RUN_JSON))

    def finished_trials(self) -> tuple[int, int]:
        """(terminal trials, all trials) recorded in trials.csv."""
        rows = read_csv(os.path.join(self.path, TRIALS_CSV))
        return sum(r["status"] in TERMINAL for r in rows), len(rows)

    def refuse_existing(self) -> None:
        """A new run never reuses a folder that holds anything (nothing is overwritten)."""
        name = os.path.basename(self.path)
        if os.path.exists(self.path) and os.listdir(self.path):
            raise SweepError(f"--name={name!r}: a run of that name already exists at {self.path}; "
                             f"continue it with --resume --name {name}, or choose another --name")

    def require_existing(self) -> None:
        if not self.exists():
            name = os.path.basename(self.path)
            raise SweepError(f"--resume --name={name!r}: no run of that name in "
                             f"{os.path.dirname(self.path)}")

    def open(self) -> None:
        """Create the folder and take its lock, or SweepError if another sweep holds it."""
        if self._lock is not None:  # already ours (settle opens it once per round)
            return
        os.makedirs(self.path, exist_ok=True)
        self._lock = open(os.path.join(self.path, ".lock"), "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            owner = self._lock.read().strip() or "another process"
            raise SweepError(f"run folder {self.path} is in use by another sweep ({owner}); "
                             "wait for it to finish or choose another --name") from None
        self._lock.truncate(0)
        self._lock.write(f"pid {os.getpid()}")
        self._lock.flush()

    def read_info(self) -> dict:
        return read_json(os.path.join(self.path, RUN_JSON))

    def write_info(self, info: dict) -> None:
        write_json(os.path.join(self.path, RUN_JSON), info)


STATE_GLOB = "experiment_state-*.json"  # Ray Tune's experiment state files in a Ray dir
COMPLETE = ".complete-"  # prefix of our last complete copy of one (Recorder.get_state)


def keep_complete_state(staging_dir: str | None, ray_dir: str | None) -> None:
    """Copy Tune's newest experiment state from its driver staging dir (written whole just
    before Tune calls the callbacks' get_state) into ray_dir as .complete-<name>, atomically.

    Tune copies the staging file into the run folder in a background thread with a plain write;
    a driver killed during that copy leaves a cut file, and Tuner.restore then logs the error and
    silently starts the whole experiment again under new trial ids. Ray 2.60 has no option for
    an atomic copy, so we keep our own (repair_ray_state puts it back)."""
    import glob
    import shutil

    if not staging_dir or not ray_dir or not os.path.isdir(ray_dir):
        return
    states = sorted(glob.glob(os.path.join(staging_dir, STATE_GLOB)))
    if states:
        target = os.path.join(ray_dir, COMPLETE + os.path.basename(states[-1]))
        shutil.copyfile(states[-1], target + ".tmp")
        os.replace(target + ".tmp", target)


def repair_ray_state(ray_dir: str) -> str | None:
    """Before Tuner.restore: if the newest experiment state in ray_dir does not parse (the
    driver died while it was being copied), put back the last complete copy; returns a line
    saying so, or None when nothing needed repair. SweepError when no complete copy exists."""
    import glob
    import shutil

    states = sorted(glob.glob(os.path.join(ray_dir, STATE_GLOB)))
    if not states or _parses(states[-1]):
        return None
    backup = os.path.join(ray_dir, COMPLETE + os.path.basename(states[-1]))
    if not _parses(backup):
        raise SweepError(f"{states[-1]} was cut short (the sweep was killed while Ray wrote it) "
                         "and no complete copy exists; Ray cannot resume this run")
    shutil.copyfile(backup, states[-1] + ".tmp")
    os.replace(states[-1] + ".tmp", states[-1])
    return f"{os.path.basename(states[-1])} was cut short by the kill; restored its last complete copy"


def _parses(path: str) -> bool:
    try:
        with open(path) as f:
            json.load(f)
        return True
    except (OSError, ValueError):
        return False


def provenance() -> dict:
    """Versions, git SHA and hardware of the machine that drives the sweep."""
    import torch

    versions = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "ray", "optuna", "numpy", "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    hardware = {"platform": platform.platform(), "processor": platform.processor(),
                "cpus": os.cpu_count(), "gpus": len(gpus), "gpu_names": gpus}
    return {"versions": versions, "git_sha": git_sha(), "hardware": hardware}


def git_sha() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) or None


def command_line(module: str, argv: list[str]) -> str:
    import shlex

    return shlex.join([os.path.basename(sys.executable), "-m", module, *argv])


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
