"""The grid's opt-in extras end to end on Ray: --scheduler asha, --keep-weights, --mlflow.

One small sweep (4 learning rates, one of them hopeless, 4 epochs, one trial at a time, 100
held-out images) is inspected by every test: ASHA stops some trials by val_acc and they are
recorded as pruned; every configuration's final weights reproduce its recorded test accuracy;
MLflow holds one run per configuration with its params, every epoch's metrics and its status.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifar_core import TrialConfig, load_cifar10
from cifar_core.augment import eval_batch
from cifar_core.models import build_model

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
EPOCHS = 4


@pytest.fixture(scope="module")
def extras_run(tiny_cifar_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("extras")
    argv = ["--transform", "normalize", "--model", "baseline", "--regulariser", "none",
            "--optimiser", "adam", "--lr", "3e-3,1e-3,1e-7,1e-8", "--epochs", EPOCHS,
            "--batch-size", 64, "--max-concurrent", 1, "--val-size", 100, "--scheduler", "asha",
            "--keep-weights", "--mlflow", "--results-dir", results, "--name", "x"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "sweep.grid", *map(str, argv)], cwd=REPO,
                          env=env | {"CIFAR10_DIR": str(tiny_cifar_dir)}, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = results / "x"
    with open(folder / "trials.csv", newline="") as f:
        trials = {t["trial_id"]: t for t in csv.DictReader(f)}
    return {"folder": folder, "trials": trials, "data": tiny_cifar_dir}


def test_asha_prunes_by_val_acc_and_records_pruned(extras_run):
    trials = extras_run["trials"]
    assert len(trials) == 4 and not any("-m" in t for t in trials)  # --scheduler asha: unfused
    pruned = [t for t in trials.values() if t["status"] == "pruned"]
    assert pruned, [(t["lr"], t["status"], t["epochs_done"]) for t in trials.values()]
    assert all(int(t["epochs_done"]) < EPOCHS for t in pruned)
    assert all(int(t["epochs_done"]) == EPOCHS for t in trials.values() if t["status"] == "completed")


def test_kept_weights_reproduce_each_trials_test_accuracy(extras_run):
    data = load_cifar10(str(extras_run["data"]))
    for trial_id, row in extras_run["trials"].items():
        saved = torch.load(extras_run["folder"] / "weights" / f"{trial_id}.pt", weights_only=True)
        cfg = TrialConfig(**saved["config"])
        assert cfg.lr == float(row["lr"])
        model = build_model(cfg)
        model.load_state_dict(saved["model"])
        model.eval()
        with torch.no_grad():
            acc = (model(eval_batch(data.test_x, cfg.transform)).argmax(1) == data.test_y).float().mean()
        # the sweep evaluated through the stacked forward: rounding may flip one borderline image
        assert acc.item() == pytest.approx(float(row["final_test_acc"]), abs=1 / len(data.test_y) + 1e-9)


def test_mlflow_holds_one_run_per_configuration(extras_run):
    mlflow = pytest.importorskip("mlflow")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient("file://" + str(extras_run["folder"] / "mlruns"))
    (experiment,) = [e for e in client.search_experiments() if e.name == "x"]
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([experiment.experiment_id])}
    trials = extras_run["trials"]
    assert set(runs) == set(trials)
    for trial_id, run in runs.items():
        row = trials[trial_id]
        assert float(run.data.params["lr"]) == float(row["lr"])
        assert run.data.tags["status"] == row["status"]
        assert "sweep.grid" in run.data.tags["command"]
        history = client.get_metric_history(run.info.run_id, "test_acc")
        assert [m.step for m in history] == list(range(1, int(row["epochs_done"]) + 1))
        assert history[-1].value == pytest.approx(float(row["final_test_acc"]))
