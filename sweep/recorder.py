"""Driver-side Tune callback: results that describe themselves (progress lines: sweep.progress).

`Recorder` appends each epoch to epochs.csv and rewrites trials.csv atomically as each result
arrives (sweep.schema: a crash loses at most the epoch in flight), records each (trial_id, epoch)
once however often a retry or resume reports it (epochs.csv is rewritten once when one repeats),
and logs each trial to TensorBoard under tb/<configuration name>/ (sweep.tensorboard: train,
eval-mode train, val and test on one chart per metric, the config as text, HParams).
Without a hold-out the val columns stay empty.
The callback pickles as plain settings (Tune stores it in tuner.pkl) and rebuilds on restore.
A fused Ray trial (sweep.grid --fuse) is recorded as its members: rows <trial_id>-m<k>, each with
its own config, epochs and status, split from the `members` list of each result.
"""
from __future__ import annotations

import os

from ray import tune

from .progress import Progress, _finite  # noqa: F401 (tuner.pkl of older runs names Progress here)
from .runfolder import keep_complete_state
from .schema import (BOOKKEEPING, CONFIG_COLUMNS, DIVERGED, EPOCH_COLUMNS, EPOCHS_CSV, ERROR,
                     METRICS, PENDING, RUNNING, TRIAL_COLUMNS, TRIALS_CSV, append_rows,
                     configurations, final_status, member_ids, now_stamp, read_csv,
                     write_csv)
from .tensorboard import Board, run_names


class Recorder(tune.Callback):
    def __init__(self, run_dir: str, keep_weights: bool = False):
        self.run_dir = os.path.abspath(run_dir)
        self.keep_weights = keep_weights
        self._setup()

    def _setup(self):
        self.trials = {r["trial_id"]: r for r in read_csv(self._path(TRIALS_CSV))}
        self.epochs: dict[str, dict[int, dict]] = {}  # trial id -> epoch number -> row
        for row in read_csv(self._path(EPOCHS_CSV)):
            self.epochs.setdefault(row["trial_id"], {})[int(row["epoch"])] = row
        self._new: list[dict] = []  # epoch rows not yet appended to epochs.csv
        self._rewrite = False  # an epoch was recorded again (a retry): rewrite epochs.csv once
        self.board, self.names = Board(self.run_dir), {}
        self._ray_dirs = (None, None)

    def __getstate__(self):
        return {"run_dir": self.run_dir, "keep_weights": self.keep_weights}

    def __setstate__(self, state):
        self.run_dir = state["run_dir"]
        self.keep_weights = state.get("keep_weights", False)
        self._setup()

    def _path(self, name):
        return os.path.join(self.run_dir, name)

    def get_state(self):
        """Called by Tune right after it wrote its experiment state: keep a complete copy of it
        (runfolder.keep_complete_state); the Recorder itself has no state to save."""
        keep_complete_state(*self._ray_dirs)
        return None

    def on_trial_start(self, iteration, trials, trial, **info):
        storage = getattr(trial, "storage", None)  # where Tune stages its state and copies it to
        if storage is not None:
            self._ray_dirs = (storage.experiment_driver_staging_path, storage.experiment_fs_path)
        started = now_stamp()
        for row in self._rows(trial):
            row.update(started_at=started, ended_at="")
            if row["status"] in ("", PENDING):
                row["status"] = RUNNING
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
        mine = self.epochs.setdefault(trial_id, {})
        self._rewrite |= epoch in mine
        mine[epoch] = {
            "trial_id": trial_id, **{c: row[c] for c in CONFIG_COLUMNS}, "epoch": epoch,
            **{m: result.get(m) for m in METRICS}, "status": result.get("status", "ok"),
            "node": result.get("node", "")}
        self._new.append(mine[epoch])
        self._update_trial(row, result)
        self.board.log_epoch(self._name(row), row, epoch, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        ended = now_stamp()
        for row in self._rows(trial):
            row["ended_at"] = ended
            row["status"] = final_status(diverged=row["status"] == DIVERGED, error=False,
                                         epochs_done=int(row["epochs_done"] or 0),
                                         epochs=int(row["epochs"]))
            self._close(row)
        if self.keep_weights:
            self._export_weights(trial)
        self._flush(epochs=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        ended = now_stamp()
        for row in self._rows(trial):
            row["ended_at"] = ended
            if row["trial_id"] == trial.trial_id or row["status"] != DIVERGED:  # members keep it
                row["status"] = ERROR
            self._close(row)
        print(f"trial {trial.trial_id} failed after its retries: {_first_error_line(trial)}",
              flush=True)
        self._flush(epochs=False)

    def on_experiment_end(self, trials, **info):
        self.board.close_all()

    def _rows(self, trial) -> list[dict]:
        """The trials.csv rows of a Ray trial: its own, or one per fused member (<trial_id>-m<k>)."""
        return [self._row(trial_id, values) for trial_id, values
                in zip(member_ids(trial.trial_id, trial.config), configurations(trial.config))]

    def _row(self, trial_id: str, values: dict) -> dict:
        if trial_id not in self.trials:
            self.trials[trial_id] = {c: "" for c in TRIAL_COLUMNS} | {
                "trial_id": trial_id, **{c: values.get(c, "") for c in (*BOOKKEEPING, *CONFIG_COLUMNS)},
                "status": PENDING, "epochs_done": 0}
        return self.trials[trial_id]

    def _update_trial(self, row: dict, result: dict):
        mine = list(self.epochs[row["trial_id"]].values())
        last = self.epochs[row["trial_id"]][max(self.epochs[row["trial_id"]])]
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
        row["status"] = DIVERGED if result.get("status") == DIVERGED else RUNNING

    def _export_weights(self, trial) -> None:
        """--keep-weights: each configuration's final weights from the trial's last checkpoint
        (synced to the run folder, so this works for trials on other nodes too) as
        weights/<trial_id>.pt; a diverged configuration's weights are not kept."""
        from .trainable import export_weights

        checkpoint = getattr(trial, "checkpoint", None)
        if checkpoint is None:
            return
        rows = self._rows(trial)
        keep = [row["trial_id"] if row["status"] != DIVERGED else None for row in rows]
        with checkpoint.as_directory() as folder:
            export_weights(folder, configurations(trial.config), keep,
                           os.path.join(self.run_dir, "weights"))

    def _name(self, row: dict) -> str:
        """The trial's TensorBoard run name, fixed at its first use (sweep.tensorboard)."""
        if row["trial_id"] not in self.names:
            self.names[row["trial_id"]] = run_names(list(self.trials.values()))[row["trial_id"]]
        return self.names[row["trial_id"]]

    def _close(self, row: dict):
        self.board.finish(self._name(row), row)

    def _flush(self, epochs: bool = True):
        """Epochs first (appended; rewritten once after a retry recorded one again), then
        trials.csv, which summarises them."""
        if epochs and self._rewrite:
            rows = [r for t in sorted(self.epochs) for _, r in sorted(self.epochs[t].items())]
            write_csv(self._path(EPOCHS_CSV), EPOCH_COLUMNS, rows)
        elif epochs and self._new:
            append_rows(self._path(EPOCHS_CSV), EPOCH_COLUMNS, self._new)
        if epochs:
            self._new, self._rewrite = [], False
        write_csv(self._path(TRIALS_CSV), TRIAL_COLUMNS, self.trials.values())


def _first_error_line(trial) -> str:
    """The exception line of a failed trial's error file, and where the full traceback is."""
    path = os.path.join(trial.local_path or "", "error.txt")
    try:
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        return f"{lines[-1]} (traceback: {path})"
    except (OSError, IndexError):
        return f"see {path}"
