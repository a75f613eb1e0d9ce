"""Driver-side Tune callback: results that describe themselves (progress lines: sweep.progress).

`Recorder` rewrites trials.csv / epochs.csv atomically as each epoch arrives (a crash loses at most
the epoch in flight), de-duplicates epochs by (trial_id, epoch) so retries and resumes record each
epoch once, and logs each trial to TensorBoard under tb/<configuration name>/ (sweep.tensorboard:
train, eval-mode train, val and test on one chart per metric, the config as text, HParams).
Without a hold-out the val columns stay empty.
The callback pickles as plain settings (Tune stores it in tuner.pkl) and rebuilds on restore.
A fused Ray trial (sweep.grid --fuse) is recorded as its members: rows <trial_id>-m<k>, each with
its own config, epochs and status, split from the `members` list of each result.
"""
from __future__ import annotations

import csv
import os

from ray import tune

from .progress import Progress, _finite  # noqa: F401 (tuner.pkl of older runs names Progress here)
from .space import AXES, SCALARS, trial_values
from .tensorboard import Board, run_names

CONFIG_COLUMNS = ["label", *AXES, "seed", *SCALARS]
METRICS = ["train_loss", "train_penalty", "train_acc", "test_loss", "test_acc",
           "train_eval_loss", "train_eval_acc", "val_loss", "val_acc", "seconds", "train_seconds",
           "images_per_second"]
TRIAL_COLUMNS = ["trial_id", *CONFIG_COLUMNS, "status", "epochs_done", "final_train_loss",
                 "final_train_acc", "final_test_loss", "final_test_acc", "best_test_acc",
                 "final_train_eval_loss", "final_train_eval_acc", "final_val_loss", "final_val_acc",
                 "best_val_acc", "train_seconds", "node"]
EPOCH_COLUMNS = ["trial_id", *CONFIG_COLUMNS, "epoch", *METRICS, "status", "node"]
TERMINAL = ("completed", "diverged", "error", "pruned")


class Recorder(tune.Callback):
    def __init__(self, run_dir: str):
        self.run_dir = os.path.abspath(run_dir)
        self._setup()

    def _setup(self):
        self.trials = {r["trial_id"]: r for r in read_csv(self._path("trials.csv"))}
        self.epochs = {(r["trial_id"], int(r["epoch"])): r for r in read_csv(self._path("epochs.csv"))}
        self.board, self.names = Board(self.run_dir), {}

    def __getstate__(self):
        return {"run_dir": self.run_dir}

    def __setstate__(self, state):
        self.run_dir = state["run_dir"]
        self._setup()

    def _path(self, name):
        return os.path.join(self.run_dir, name)

    def on_trial_start(self, iteration, trials, trial, **info):
        starting = [row for row in self._rows(trial) if row["status"] in ("", "pending")]
        for row in starting:
            row["status"] = "running"
        if starting:
            self._flush(epochs=False)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "members" in result:  # a fused trial: member k's result, None once it stopped
            for row, member in zip(self._rows(trial), result["members"]):
                if member is not None:
                    self._record(row, dict(member, node=result.get("node", "")))
        elif "epoch" in result:
            self._record(self._rows(trial)[0], result)
        else:
            return
        self._flush()

    def _record(self, row: dict, result: dict):
        trial_id, epoch = row["trial_id"], int(result["epoch"])
        self.epochs[(trial_id, epoch)] = {
            "trial_id": trial_id, **{c: row[c] for c in CONFIG_COLUMNS}, "epoch": epoch,
            **{m: result.get(m) for m in METRICS}, "status": result.get("status", "ok"),
            "node": result.get("node", "")}
        self._update_trial(row, result)
        self.board.log_epoch(self._name(row), row, epoch, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        for row in self._rows(trial):
            if row["status"] == "diverged":
                pass
            elif int(row["epochs_done"] or 0) >= int(row["epochs"]):
                row["status"] = "completed"
            else:
                row["status"] = "pruned"  # stopped early by the scheduler
            self._close(row)
        self._flush(epochs=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        for row in self._rows(trial):
            if row["trial_id"] == trial.trial_id or row["status"] != "diverged":  # members keep it
                row["status"] = "error"
            self._close(row)
        print(f"trial {trial.trial_id} failed after its retries: {_first_error_line(trial)}",
              flush=True)
        self._flush(epochs=False)

    def on_experiment_end(self, trials, **info):
        self.board.close_all()

    def _rows(self, trial) -> list[dict]:
        """The trials.csv rows of a Ray trial: its own, or one per fused member (<trial_id>-m<k>)."""
        values = trial_values(trial.config)
        if "members" not in values:
            return [self._row(trial.trial_id, values)]
        # the id format is parsed back by sweep.report.load.ray_trial_ids
        return [self._row(f"{trial.trial_id}-m{k}", v) for k, v in enumerate(values["members"])]

    def _row(self, trial_id: str, values: dict) -> dict:
        if trial_id not in self.trials:
            self.trials[trial_id] = {c: "" for c in TRIAL_COLUMNS} | {
                "trial_id": trial_id, **{c: values.get(c, "") for c in CONFIG_COLUMNS},
                "status": "pending", "epochs_done": 0}
        return self.trials[trial_id]

    def _update_trial(self, row: dict, result: dict):
        mine = [r for (t, _), r in self.epochs.items() if t == row["trial_id"]]
        last = max(mine, key=lambda r: int(r["epoch"]))
        accs = [float(r["test_acc"]) for r in mine if _finite(r["test_acc"])]
        vals = [float(r["val_acc"]) for r in mine if _finite(r.get("val_acc"))]
        row.update(epochs_done=len(mine), final_train_loss=last["train_loss"],
                   final_train_acc=last["train_acc"], final_test_loss=last["test_loss"],
                   final_test_acc=last["test_acc"], best_test_acc=max(accs) if accs else "",
                   final_train_eval_loss=last.get("train_eval_loss", ""),
                   final_train_eval_acc=last.get("train_eval_acc", ""),
                   final_val_loss=last.get("val_loss", ""), final_val_acc=last.get("val_acc", ""),
                   best_val_acc=max(vals) if vals else "",
                   train_seconds=sum(float(r["train_seconds"] or 0) for r in mine),
                   node=result.get("node", row["node"]))
        row["status"] = "diverged" if result.get("status") == "diverged" else "running"

    def _name(self, row: dict) -> str:
        """The trial's TensorBoard run name, fixed at its first use (sweep.tensorboard)."""
        if row["trial_id"] not in self.names:
            self.names[row["trial_id"]] = run_names(list(self.trials.values()))[row["trial_id"]]
        return self.names[row["trial_id"]]

    def _close(self, row: dict):
        self.board.finish(self._name(row), row)

    def _flush(self, epochs: bool = True):
        write_csv(self._path("trials.csv"), TRIAL_COLUMNS, self.trials.values())
        if epochs:
            rows = sorted(self.epochs.values(), key=lambda r: (r["trial_id"], int(r["epoch"])))
            write_csv(self._path("epochs.csv"), EPOCH_COLUMNS, rows)


def _first_error_line(trial) -> str:
    """The exception line of a failed trial's error file, and where the full traceback is."""
    path = os.path.join(trial.local_path or "", "error.txt")
    try:
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        return f"{lines[-1]} (traceback: {path})"
    except (OSError, IndexError):
        return f"see {path}"


def read_csv(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: str, columns: list, rows) -> None:
    """Write atomically (temp file + rename) so a reader or a crash never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)

