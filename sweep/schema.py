"""What a run folder holds, in one Ray-free place: statuses, columns, the Ray config layout, I/O.

A run folder RESULTS_DIR/NAME holds run.json (what made the run: space, settings, command,
provenance), trials.csv (one row per configuration), epochs.csv (one row per trained epoch), tb/
(TensorBoard) and Ray's own state (ray/, ray-*). The CSV columns are derived from
cifar_core's TrialConfig and EpochResult fields, so a new hyperparameter or metric gets its
column without being typed again here. Every file is written through `write_atomic` (temp file
+ rename), so a reader or a crash never sees half a file; epochs.csv grows by `append_rows`.

The Ray config layout: a grid trial's settings sit under "trial" (`{"trial": {...}}`), a search
trial's at the top level, and a fused Ray trial lists its configurations as "members"; member k
of Ray trial T is recorded as configuration T-m<k>.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re

from cifar_core.config import EpochResult, TrialConfig

# trial statuses: pending -> running -> completed | diverged | pruned | error
PENDING, RUNNING = "pending", "running"
COMPLETED, DIVERGED, PRUNED, ERROR = "completed", "diverged", "pruned", "error"
TERMINAL = (COMPLETED, DIVERGED, ERROR, PRUNED)


def final_status(*, diverged: bool, error: bool, epochs_done: int, epochs: int) -> str:
    """How a configuration ended: diverged (a NaN/inf loss), error (failed after its retries),
    completed (every epoch), else pruned (stopped early by a scheduler). trials.csv, the Optuna
    study and MLflow all use this."""
    if diverged:
        return DIVERGED
    if error:
        return ERROR
    return COMPLETED if epochs_done >= epochs else PRUNED


def status_after(last: dict | None, *, error: bool, epochs: int) -> str:
    """final_status of a configuration whose last reported result was `last` (None: none)."""
    last = last or {}
    return final_status(diverged=last.get("status") == DIVERGED, error=error,
                        epochs_done=int(last.get("epoch", 0)), epochs=epochs)

HYPERPARAMETERS = tuple(f.name for f in dataclasses.fields(TrialConfig))
# keys a trial's config may carry besides its hyperparameters: the reference experiment(s) it
# reproduces (grid --preset seed) and its Optuna study trial number (search)
STUDY_NUMBER = "study_number"  # a search trial's Optuna study trial number (sweep.study)
BOOKKEEPING = ("label", STUDY_NUMBER)
CONFIG_COLUMNS = ("label", *HYPERPARAMETERS)
METRICS = tuple(f.name for f in dataclasses.fields(EpochResult) if f.name not in ("epoch", "status"))
SCORES = tuple(m for m in METRICS if m.endswith(("_loss", "_acc")))  # final_<score> per trial
BEST = ("test_acc", "val_acc")  # best_<score> over a trial's epochs
TRIAL_COLUMNS = ("trial_id", STUDY_NUMBER, *CONFIG_COLUMNS, "status", "epochs_done",
                 *(f"final_{s}" for s in SCORES), *(f"best_{s}" for s in BEST),
                 "train_seconds", "started_at", "ended_at", "node")
EPOCH_COLUMNS = ("trial_id", *CONFIG_COLUMNS, "epoch", *METRICS, "status", "node")

# started_at / ended_at: when the configuration's Ray trial last started and ended (UTC, ISO 8601)
TRIALS_CSV, EPOCHS_CSV, RUN_JSON = "trials.csv", "epochs.csv", "run.json"
_MEMBER = re.compile(r"^(?P<ray>.+)-m(?P<k>\d+)$")
MEMBER_PATTERN = r"-m\d+$"  # the suffix of a fused member's trial id (for pandas str.contains)


# --- the Ray config layout --------------------------------------------------------------------

def trial_values(config: dict) -> dict:
    """A trial's flat settings: the grid nests them under "trial", the search does not."""
    return {**config.get("trial", {}), **{k: v for k, v in config.items() if k != "trial"}}


def configurations(config: dict) -> list[dict]:
    """The configurations a Ray trial trains: its fused members, or itself."""
    values = trial_values(config)
    return list(values["members"]) if "members" in values else [values]


def member_ids(ray_trial_id: str, config: dict) -> list[str]:
    """The trials.csv ids of a Ray trial's configurations: T, or T-m0, T-m1, ... when fused."""
    if "members" not in trial_values(config):
        return [ray_trial_id]
    return [f"{ray_trial_id}-m{k}" for k in range(len(configurations(config)))]


def now_stamp() -> str:
    """The time for started_at / ended_at (UTC, milliseconds)."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def idle_at_end(rows: list[dict], slots: int) -> dict | None:
    """Slot-seconds left idle at the end of a run, from trials.csv rows: from the moment the last
    Ray trial started (nothing was left to start) to the moment the last one ended, `slots` times
    that span minus the time trials ran in it. A fused Ray trial's members count once. None
    when no row has both times (a run recorded before they were)."""
    from datetime import datetime

    spans = {}
    for row in rows:
        if row.get("started_at") and row.get("ended_at"):
            spans[ray_trial_id(row["trial_id"])] = (
                datetime.fromisoformat(row["started_at"]).timestamp(),
                datetime.fromisoformat(row["ended_at"]).timestamp())
    return idle_after_last_start(list(spans.values()), slots) if spans else None


def idle_after_last_start(spans: list[tuple[float, float]], slots: int) -> dict:
    """idle_at_end of (start, end) spans: slot-seconds unused from the last start to the end."""
    tail_start = max(start for start, _ in spans)
    end = max(stop for _, stop in spans)
    busy = sum(max(0.0, stop - max(start, tail_start)) for start, stop in spans)
    return {"idle_slot_seconds": round(max(0.0, slots * (end - tail_start) - busy), 1),
            "tail_seconds": round(end - tail_start, 1), "slots": slots}


def ray_trial_id(trial_id: str) -> str:
    """The Ray trial a trials.csv row belongs to (a fused member's T-m<k> -> T)."""
    match = _MEMBER.match(trial_id)
    return match["ray"] if match else trial_id


# --- reading and writing ---------------------------------------------------------------------

def write_atomic(path: str, text: str) -> None:
    """Replace `path` with `text` at once (temp file + rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, value) -> None:
    write_atomic(path, json.dumps(value, indent=2, default=str))


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _csv_text(columns, rows, header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(path: str, columns, rows) -> None:
    """Write the whole file atomically."""
    write_atomic(path, _csv_text(columns, rows))


def append_rows(path: str, columns, rows) -> None:
    """Append rows (a new file gets the header). One write per call, flushed: a crash can cut
    only the rows in flight, and read_csv drops a cut last line."""
    text = _csv_text(columns, rows, header=not os.path.exists(path))
    with open(path, "a", newline="") as f:
        f.write(text)
        f.flush()


def read_csv(path: str) -> list[dict]:
    """The rows of a CSV file ([] when absent), without a last line cut short by a crash."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        text = f.read()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    return list(csv.DictReader(io.StringIO(text)))
