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

from .recorder import TERMINAL, read_csv

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
        return os.path.exists(os.path.join(self.path, "run.json"))

    def finished_trials(self) -> tuple[int, int]:
        """(terminal trials, all trials) recorded in trials.csv."""
        rows = read_csv(os.path.join(self.path, "trials.csv"))
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
        with open(os.path.join(self.path, "run.json")) as f:
            return json.load(f)

    def write_info(self, info: dict) -> None:
        tmp = os.path.join(self.path, "run.json.tmp")
        with open(tmp, "w") as f:
            json.dump(info, f, indent=2, default=str)
        os.replace(tmp, os.path.join(self.path, "run.json"))


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
