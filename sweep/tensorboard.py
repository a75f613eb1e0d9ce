"""TensorBoard logs a user can read: one run per trial named by its configuration, the config as
text, and the HParams dashboard filled with every trial's hyperparameters and final metrics.

Used by sweep.recorder (driver side, no Ray here). Run folders: tb/<name>, where the name reads
`augment+normalize·dropout·l2-0.001·adam·0.001·s0` (transform, model, regulariser[-λ],
optimiser, lr, seed; `·norelu` without the final ReLU, `·data0.5` on a data fraction); a name two
trials would share gets the trial id appended, so names stay unique and stable on resume.
"""
from __future__ import annotations

import math
import os
import re

HPARAMS = ("transform", "model", "regulariser", "lam", "optimiser", "lr", "final_relu",
           "data_fraction", "seed", "epochs", "batch_size", "label")
FINAL_METRICS = ("final_test_acc", "final_test_loss", "final_train_eval_acc", "best_test_acc",
                 "final_val_acc")
_UNSAFE = re.compile(r"[^A-Za-z0-9+·._=-]")  # file-system safe on every OS we run on


def _num(value) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def config_name(row: dict) -> str:
    """The trial's configuration as a short, file-system safe run name."""
    reg = str(row.get("regulariser", ""))
    parts = [row.get("transform", ""), row.get("model", ""),
             reg if reg in ("none", "") else f"{reg}-{_num(row.get('lam'))}",
             row.get("optimiser", ""), _num(row.get("lr")), f"s{row.get('seed', '')}"]
    if str(row.get("final_relu", "True")).lower() in ("false", "0"):
        parts.append("norelu")
    if row.get("data_fraction") not in (None, "") and float(row["data_fraction"]) < 1:
        parts.append(f"data{_num(row['data_fraction'])}")
    return _UNSAFE.sub("_", "·".join(str(p) for p in parts))


def run_names(rows: list[dict]) -> dict[str, str]:
    """trial_id -> unique run name, decided in trials.csv order (so a resume finds the same)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[config_name(row)] = counts.get(config_name(row), 0) + 1
    return {row["trial_id"]: config_name(row) + (f"·{row['trial_id']}"
                                                 if counts[config_name(row)] > 1 else "")
            for row in rows}


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class Board:
    """The TensorBoard writers of one run folder's trials."""

    def __init__(self, run_dir: str):
        self.root = os.path.join(run_dir, "tb")
        self.writers: dict = {}

    def log_epoch(self, name: str, row: dict, epoch: int, result: dict) -> None:
        """One epoch: train/val/test on one chart per metric (the config as text at first)."""
        writer = self._writer(name, row)
        for metric in ("loss", "acc"):
            pair = {s: float(result[f"{s}_{metric}"]) for s in ("train", "train_eval", "val", "test")
                    if _finite(result.get(f"{s}_{metric}"))}
            writer.add_scalars(metric, pair, epoch)
        writer.add_scalar("images_per_second", float(result.get("images_per_second") or 0.0), epoch)
        writer.flush()

    def finish(self, name: str, row: dict) -> None:
        """The trial's hyperparameters and final metrics for the HParams dashboard; closes it."""
        writer = self._writer(name, row)
        hparams = {k: _hparam(row.get(k, "")) for k in HPARAMS}
        hparams["status"] = str(row.get("status", ""))
        metrics = {f"hparam/{k}": float(row[k]) for k in FINAL_METRICS if _finite(row.get(k))}
        writer.add_hparams(hparams, metrics, run_name=".")
        writer.close()
        self.writers.pop(name, None)

    def close_all(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    def _writer(self, name: str, row: dict):
        from torch.utils.tensorboard import SummaryWriter  # imported late: driver-only cost

        if name not in self.writers:
            writer = SummaryWriter(os.path.join(self.root, name))
            table = "\n".join(f"| {k} | {row.get(k, '')} |" for k in HPARAMS if k in row)
            writer.add_text("config", f"trial `{row.get('trial_id', '')}`\n\n| key | value |\n"
                                      f"|---|---|\n{table}")
            self.writers[name] = writer
        return self.writers[name]


def _hparam(value):
    """HParams takes bool, str, int or float."""
    if isinstance(value, (bool, int, float)):
        return value
    text = str(value)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        number = float(text)
        return int(number) if number.is_integer() and "." not in text and "e" not in text else number
    except ValueError:
        return text
