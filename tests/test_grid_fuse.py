"""`python -m sweep.grid --fuse N`: grouping, dry run, per-member rows, resume, and one Ray run.

Grouping, dry run, the Recorder's split and the trainable's report/resume (tune.report faked) run
in-process without Ray; the end-to-end test (marked ray) runs a fused sweep as a subprocess on the
tiny synthetic image folders.
"""
from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cifar_core.data import synthetic
from cifar_core.fused import SHARED
from sweep import grid, trainable
from sweep.recorder import Recorder
from sweep.space import expand_grid

REPO = Path(__file__).resolve().parents[1]
AXES4 = {"transform": ["none"], "model": ["baseline", "dropout"], "regulariser": ["none", "l2"],
         "optimiser": ["adam", "sgd"], "lr": [1e-3], "lam": [1e-3], "final_relu": [True],
         "data_fraction": [1.0]}


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fuse_groups_share_the_fused_keys_and_keep_every_trial_once():
    trials = expand_grid(AXES4, seeds=2, epochs=2, batch_size=64)
    groups = grid.fuse_groups(trials, 3)
    assert sorted(map(len, groups)) == [2, 2, 3, 3, 3, 3]
    assert sorted(id(t) for g in groups for t in g) == sorted(id(t) for t in trials)
    for group in groups:
        assert len({tuple(t[k] for k in SHARED) for t in group}) == 1
    assert grid.fuse_groups(trials, 1) is None


def test_dry_run_with_fuse_shows_the_grouping(capsys):
    code = grid.main(["--dry-run", "--fuse", "2", "--transform", "none", "--model", "baseline",
                      "--regulariser", "none", "--optimiser", "adam,sgd", "--lr", "1e-3,1e-2"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and lines[-2:] == ["2 Ray trials of up to 2 fused configurations", "4 trials"]
    assert sum(ln.startswith("Ray trial ") and "2 fused, sharing" in ln for ln in lines) == 2
    assert [int(ln.split(".")[0]) for ln in lines if re.match(r"^\s*\d+\. ", ln)] == [1, 2, 3, 4]


def test_default_grid_fuses_four_configurations_per_ray_trial(capsys):
    assert grid.main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == ["24 Ray trials of up to 4 fused configurations", "96 trials"]
    assert grid.main(["--dry-run", "--fuse", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "96 trials" and not any(ln.startswith("Ray trial") for ln in lines)


@pytest.mark.parametrize("value", ["0", "-2"])
def test_fuse_below_one_is_refused(capsys, value):
    assert grid.main(["--dry-run", "--fuse", value]) == 2
    assert "--fuse" in capsys.readouterr().err


def test_recorder_splits_a_fused_result_into_member_rows(tmp_path):
    members = expand_grid(dict(AXES4, model=["baseline"], regulariser=["none"]), seeds=1,
                          epochs=2, batch_size=64)
    trial = SimpleNamespace(trial_id="abc_00000", config={"trial": {"members": members}})
    recorder = Recorder(str(tmp_path))
    recorder.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        result = [dict(epoch=epoch, train_loss=2.0, train_penalty=0.0, train_acc=0.1, test_loss=2.0,
                       test_acc=0.1 * epoch, seconds=1.0, train_seconds=1.0, images_per_second=1.0,
                       status="ok"), None if epoch == 2 else dict(
                           epoch=1, train_loss=float("nan"), train_penalty=0.0, train_acc=0.1,
                           test_loss=float("nan"), test_acc=float("nan"), seconds=1.0,
                           train_seconds=1.0, images_per_second=1.0, status="diverged")]
        recorder.on_trial_result(0, [], trial, {"members": result, "epoch": epoch, "node": "n"})
    recorder.on_trial_complete(0, [], trial)
    recorder.on_experiment_end([])
    trials = {t["trial_id"]: t for t in rows(tmp_path / "trials.csv")}
    assert set(trials) == {"abc_00000-m0", "abc_00000-m1"}
    assert [trials[f"abc_00000-m{k}"]["optimiser"] for k in (0, 1)] == ["adam", "sgd"]
    assert trials["abc_00000-m0"]["status"] == "completed"
    assert trials["abc_00000-m0"]["epochs_done"] == "2"
    assert trials["abc_00000-m1"]["status"] == "diverged"
    epochs = [(e["trial_id"], e["epoch"]) for e in rows(tmp_path / "epochs.csv")]
    # appended in arrival order; each epoch once
    assert sorted(epochs) == [("abc_00000-m0", "1"), ("abc_00000-m0", "2"), ("abc_00000-m1", "1")]


def run_fused_trainable(monkeypatch, folder: Path, members: list, data: dict, resume_from=None):
    """train_trial on a fused config with tune's report/get_checkpoint faked: [(metrics, ckpt dir)]."""
    reports = []

    def report(metrics, checkpoint):
        saved = folder / f"checkpoint{len(reports)}"
        shutil.copytree(checkpoint.path, saved)  # the trainable deletes its folder after reporting
        reports.append((metrics, saved))

    def get_checkpoint():
        if resume_from is None:
            return None
        return SimpleNamespace(as_directory=lambda: contextlib.nullcontext(str(resume_from)))

    monkeypatch.setattr(trainable.tune, "report", report)
    monkeypatch.setattr(trainable.tune, "get_checkpoint", get_checkpoint)
    threads = torch.get_num_threads()
    try:
        trainable.train_trial({"trial": {"members": members}}, data)
    finally:
        torch.set_num_threads(threads)
    return reports


def test_a_fused_trial_reports_each_epoch_once_and_resumes_from_its_checkpoint(monkeypatch, tmp_path):
    members = expand_grid(dict(AXES4, model=["dropout"]), seeds=1, epochs=2, batch_size=64)
    data = synthetic(200, 50).to_numpy()
    whole = run_fused_trainable(monkeypatch, tmp_path, members, data)
    assert [m["epoch"] for m, _ in whole] == [1, 2] and len(whole[0][0]["members"]) == 4
    assert whole[1][0]["test_acc"] == max(r["test_acc"] for r in whole[1][0]["members"])
    (tmp_path / "again").mkdir()
    resumed = run_fused_trainable(monkeypatch, tmp_path / "again", members, data, whole[0][1])
    timing = {"seconds", "train_seconds", "images_per_second"}
    assert [m["epoch"] for m, _ in resumed] == [2]
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed[0][0]["members"]] == [
        {k: v for k, v in r.items() if k not in timing} for r in whole[1][0]["members"]]


@pytest.mark.ray
def test_a_fused_sweep_records_every_member_as_its_own_trial(tiny_cifar_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"CIFAR10_DIR": str(tiny_cifar_dir), "PYTHONUNBUFFERED": "1"}
    argv = ["--results-dir", tmp_path, "--name", "fused", "--epochs", 2, "--batch-size", 64,
            "--optimiser", "adam,sgd", "--transform", "none", "--model", "baseline",
            "--regulariser", "none", "--fuse", 2]
    done = subprocess.run([sys.executable, "-m", "sweep.grid", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = tmp_path / "fused"
    trials = rows(folder / "trials.csv")  # optimiser x the default lr axis: 4 trials in 2 Ray trials
    assert sorted(t["trial_id"][-3:] for t in trials) == ["-m0", "-m0", "-m1", "-m1"]
    ray_trials = {t["trial_id"][:-3] for t in trials}
    assert len(ray_trials) == 2 and all(t["trial_id"].startswith(tuple(ray_trials)) for t in trials)
    assert sorted((t["optimiser"], float(t["lr"])) for t in trials) == [
        (opt, lr) for opt in ("adam", "sgd") for lr in (1e-5, 1e-3)]
    for t in trials:
        assert (t["transform"], t["model"], t["regulariser"]) == ("none", "baseline", "none")
        assert (t["status"], t["epochs_done"], t["epochs"]) == ("completed", "2", "2")
        assert t["batch_size"] == "64"
        assert 0 <= float(t["final_test_acc"]) <= float(t["best_test_acc"]) <= 1 and t["node"]
    epochs = rows(folder / "epochs.csv")
    assert sorted((e["trial_id"], e["epoch"]) for e in epochs) == sorted(
        (t["trial_id"], str(e)) for t in trials for e in (1, 2))
    by_id = {t["trial_id"]: t for t in trials}
    assert all(e["optimiser"] == by_id[e["trial_id"]]["optimiser"] and e["status"] == "ok"
               for e in epochs)
