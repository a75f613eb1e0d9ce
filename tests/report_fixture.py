"""Synthetic run folders with known numbers for the report's tests (no Ray, no torch).

`trial(...)` makes one trials.csv row from config overrides and final metrics; `write_run` writes
trials.csv, epochs.csv (curves that end at each trial's final numbers) and run.json; `seed_trials`
builds the seed report's experiments x seeds with chosen test accuracies.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

BASE = {"transform": "none", "model": "baseline", "regulariser": "none", "lam": 0.0,
        "optimiser": "adam", "lr": 1e-3, "epochs": 3, "batch_size": 256, "data_fraction": 1.0,
        "final_relu": True}
_AUG_NORM = {"transform": "augment+normalize"}
SEED_EXPERIMENTS = {  # label -> overrides of BASE (the seed report's runs, as sweep.space has them)
    "baseline": {"data_fraction": 0.5},
    "augment": {"transform": "augment"},
    "normalize": {"transform": "normalize"},
    "augment+normalize": dict(_AUG_NORM),
    "dropout": dict(_AUG_NORM, model="dropout"),
    "l1": dict(_AUG_NORM, regulariser="l1", lam=1e-3),
    "l2|adam-1e-3": dict(_AUG_NORM, regulariser="l2", lam=1e-3),
    "adam-1e-5": dict(_AUG_NORM, regulariser="l2", lam=1e-3, lr=1e-5),
    "sgd-1e-3": dict(_AUG_NORM, regulariser="l2", lam=1e-3, optimiser="sgd"),
    "sgd-1e-5": dict(_AUG_NORM, regulariser="l2", lam=1e-3, optimiser="sgd", lr=1e-5),
}
SEED_ACC = {"baseline": 0.43, "augment": 0.46, "normalize": 0.51, "augment+normalize": 0.53,
            "dropout": 0.50, "l1": 0.48, "l2|adam-1e-3": 0.55, "adam-1e-5": 0.45,
            "sgd-1e-3": 0.583, "sgd-1e-5": 0.581}
SEED_NOISE = (0.0, 0.01, -0.01)  # shared by every config of a seed, so paired effects are exact


def trial(*, acc: float, seed: int = 0, train_acc: float | None = None,
          loss: float | None = None, status: str = "completed", label: str = "",
          trial_id: str | None = None, **config) -> dict:
    """One trials.csv row; train acc defaults to acc + 0.05, test loss to 2.5 - 2 * acc."""
    unknown = set(config) - set(BASE)
    assert not unknown, f"unknown config keys {unknown}"
    cfg = {**BASE, **config}
    ok = status == "completed"
    train = acc + 0.05 if train_acc is None else train_acc
    test_loss = 2.5 - 2 * acc if loss is None else loss
    return {"trial_id": trial_id or "", "label": label, **cfg, "seed": seed, "status": status,
            "epochs_done": cfg["epochs"] if ok else 1, "final_train_loss": test_loss - 0.1,
            "final_train_acc": train if ok or status == "pruned" else math.nan,
            "final_test_loss": test_loss if status != "diverged" else math.nan,
            "final_test_acc": acc if status != "diverged" else math.nan, "best_test_acc": acc,
            "train_seconds": 12.5, "node": "node-1"}


def seed_trials(acc: dict | None = None, seeds: int = 3, noise=SEED_NOISE) -> list[dict]:
    """The seed report's experiments x seeds with test accuracy acc[label] + noise[seed]."""
    acc = {**SEED_ACC, **(acc or {})}
    return [trial(label=label, seed=s, acc=acc[label] + noise[s % len(noise)], **over)
            for s in range(seeds) for label, over in SEED_EXPERIMENTS.items()]


def _epoch_rows(row: dict) -> list[dict]:
    epochs = int(row["epochs_done"])
    out = []
    for e in range(1, epochs + 1):
        behind = (int(row["epochs"]) - e) * 0.03
        acc = (row["best_test_acc"] or 0.0) - behind
        out.append({"trial_id": row["trial_id"], "label": row["label"],
                    **{k: row[k] for k in (*BASE, "seed")}, "epoch": e,
                    "train_loss": 2.0 - acc, "train_penalty": 0.0, "train_acc": acc + 0.05,
                    "test_loss": 2.5 - 2 * acc, "test_acc": acc, "seconds": 5.0,
                    "train_seconds": 4.0, "images_per_second": 1000.0, "status": "ok"})
    if row["status"] == "diverged":
        out[-1].update(train_loss=math.nan, test_loss=math.nan, test_acc=math.nan,
                       status="diverged")
    return out


def run_meta(n_trials: int, kind: str = "grid", **extra) -> dict:
    """A run.json like the sweep runner writes."""
    return {"kind": kind, "name": f"test-{kind}", "command": f"python -m sweep.{kind} --preset seed"
            " --seeds 3", "argv": ["--preset", "seed"], "space": {"lr": [1e-3, 1e-5]},
            "versions": {"python": "3.11.7", "torch": "2.9.0", "ray": "2.50.0", "optuna": "5.0.0"},
            "git_sha": "0123456789abcdef", "hardware": {"cpus": 16, "gpus": 1,
                                                        "platform": "Linux", "nodes": 1},
            "started_at": "2026-01-01T10:00:00", "ended_at": "2026-01-01T10:42:00",
            "wall_seconds": 2520.0, "n_trials": n_trials, "status": "finished", **extra}


def write_run(path: Path, rows: list[dict], *, kind: str = "grid", meta: dict | None = None,
              epochs: bool = True) -> Path:
    """Write a run folder at `path` (created) and return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rows = [dict(r, trial_id=r["trial_id"] or f"t{i:03d}") for i, r in enumerate(rows)]
    pd.DataFrame(rows).to_csv(path / "trials.csv", index=False)
    if epochs:
        pd.DataFrame([e for r in rows for e in _epoch_rows(r)]).to_csv(path / "epochs.csv",
                                                                      index=False)
    (path / "run.json").write_text(json.dumps(meta or run_meta(len(rows), kind), indent=1))
    return path


def grid_trials(axes: dict, acc, seeds: int = 3, **fixed) -> list[dict]:
    """Every combination of `axes` x seeds; acc(config, seed) gives each trial's test accuracy."""
    import itertools

    names = list(axes)
    rows = []
    for values in itertools.product(*axes.values(), range(seeds)):
        cfg = dict(fixed, **dict(zip(names, values[:-1])))
        if cfg.get("regulariser", "none") != "none":
            cfg.setdefault("lam", 1e-3)
        rows.append(trial(seed=values[-1], acc=acc(cfg, values[-1]), **cfg))
    return rows


def search_trials(n: int = 20) -> list[dict]:
    """A search run: log-uniform lr and lam, a few categoricals, some pruned and one diverged."""
    import random

    rng = random.Random(0)
    rows = []
    for i in range(n):
        lr = 10 ** rng.uniform(-5, -1)
        cfg = {"transform": rng.choice(["none", "augment+normalize"]), "optimiser": "adam",
               "regulariser": "l2", "lam": 10 ** rng.uniform(-6, -1), "lr": lr}
        acc = 0.6 - 0.03 * abs(math.log10(lr) + 3) + (0.05 if cfg["transform"] != "none" else 0)
        status = "diverged" if lr > 0.05 else "pruned" if i % 4 == 3 else "completed"
        rows.append(trial(seed=0, acc=round(acc, 4), status=status, **cfg))
    return rows
