"""sweep.search: bad input before Ray, and a seeded Optuna study through the shared trainable."""
from __future__ import annotations

import csv
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.settings import Settings
from sweep import search

ROOT = Path(__file__).resolve().parents[1]


def run_search(*args, data_dir, timeout=600):
    env = {"PATH": "/usr/bin:/bin", "CIFAR10_DIR": str(data_dir), "HOME": str(Path.home())}
    return subprocess.run([sys.executable, "-m", "sweep.search", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=timeout)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("args, words", [
    (["--lr-range", "1e-1:1e-5"], ["--lr-range", "0 < LO < HI"]),
    (["--lr-range", "1e-3:1e-3"], ["--lr-range"]),
    (["--lam-range", "0:1e-1"], ["--lam-range", "log scale"]),
    (["--lam-range", "abc"], ["--lam-range", "LO:HI"]),
    (["--search-axes", "transform,colour"], ["--search-axes", "'colour'"]),
    (["--transform", "none,normalize"], ["--transform", "--search-axes"]),
    (["--lr", "1e-3"], ["--lr", "--lr-range"]),
    (["--n-trials", "0"], ["--n-trials", ">= 1"]),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], ["--storage", "cannot be reached"]),
])
def test_bad_input_is_one_line_exit_2_before_ray(tmp_path, tiny_cifar_dir, capsys, args, words):
    code = search.main(["--results-dir", str(tmp_path), "--name", "x", "--data-dir",
                        str(tiny_cifar_dir), *args])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words), err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_space_is_data_and_lam_only_for_penalised_trials():
    import optuna

    settings = Settings(**search.DEFAULTS, search_axes="regulariser")
    space = search.build_space(settings)
    assert space["choices"] == {"regulariser": ["l1", "l2", "none"]}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        constants = search.define_by_run(trial, space)
        reg = trial.params["regulariser"]
        seen.add(reg)
        assert ("lam" in trial.params) == (reg != "none")
        assert constants.get("lam") == (0.0 if reg == "none" else None)
        assert 1e-5 <= trial.params["lr"] <= 1e-1
        study.tell(trial, 0.5)
    assert seen == {"l1", "l2", "none"}


def test_search_and_grid_share_one_trainable():
    from sweep import grid, tuning
    from sweep.trainable import train_trial

    assert "train_trial" in inspect.getsource(tuning.trainable_for)
    for module in (search, grid):
        source = inspect.getsource(module)
        assert "def train_trial" not in source and "fit(" not in source and "fit_fused" not in source
    assert train_trial.__module__ == "sweep.trainable"


def test_every_trial_trains_through_the_one_loop(monkeypatch):
    """A search trial (flat config), a grid trial ({"trial": ...}) and a fused grid trial all
    train through cifar_core.train.fit_fused, as stacks of 1, 1 and 2."""
    from cifar_core import TrialConfig
    from cifar_core.data import synthetic
    from sweep import trainable

    stacks, reports = [], []
    real = trainable.fit_fused
    monkeypatch.setattr(trainable, "fit_fused", lambda cfgs, *a, **k: stacks.append(len(cfgs))
                        or real(cfgs, *a, **k))
    monkeypatch.setattr(trainable.tune, "report", lambda metrics, checkpoint: reports.append(metrics))
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(trainable.tune.Checkpoint, "from_directory", lambda folder: None)
    cfg = TrialConfig(epochs=1, batch_size=64).to_dict()
    data = synthetic(128, 64, seed=0).to_numpy()
    for config in (cfg, {"trial": cfg}, {"trial": {"members": [cfg, dict(cfg, lr=1e-2)]}}):
        trainable.train_trial(config, data)
    assert stacks == [1, 1, 2]
    assert [("members" in r, r["epoch"]) for r in reports] == [(False, 1), (False, 1), (True, 1)]


@pytest.mark.ray
def test_seeded_search_prunes_records_and_resumes(tmp_path, tiny_cifar_dir):
    """8 tiny trials: distinct lr/λ, ASHA prunes some, run.json has the best; resume adds 2."""
    common = ["--results-dir", tmp_path, "--name", "study", "--batch-size", "64",
              "--max-concurrent", "2", "--sampler-seed", "7", "--val-size", "100"]
    first = run_search(*common, "--n-trials", "8", "--epochs", "4", "--lr-range", "1e-6:1",
                       data_dir=tiny_cifar_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "study"
    trials = rows(run / "trials.csv")
    assert len(trials) == 8
    assert len({t["lr"] for t in trials}) == 8 and len({t["lam"] for t in trials}) == 8
    statuses = [t["status"] for t in trials]
    assert "pruned" in statuses, statuses  # a 1e-6..1 lr range makes weak trials for ASHA
    assert set(statuses) <= {"completed", "pruned", "diverged"}
    for t in trials:
        done = [e for e in rows(run / "epochs.csv") if e["trial_id"] == t["trial_id"]]
        assert len(done) == int(t["epochs_done"]) and (t["status"] != "pruned" or len(done) < 4)
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "search" and info["status"] == "finished"
    assert set(info["best"]["params"]) == {"lr", "lam"} and 0 <= info["best"]["value"] <= 1
    assert "best: val acc" in first.stdout and (run / "study.journal").exists()
    assert_study_matches_trials_csv(run, trials, epochs=4)

    again = run_search(*common, "--resume", "--n-trials", "2", data_dir=tiny_cifar_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    after = rows(run / "trials.csv")
    assert len(after) == 10
    assert after[:8] == trials  # no finished trial was rerun or rewritten
    pairs = [(t["lr"], t["lam"]) for t in after]
    assert len(set(pairs)) == 10, pairs  # the resumed sampler proposed new (lr, λ), not repeats
    info = json.loads((run / "run.json").read_text())
    assert info["best"]["n_study_trials"] == 10  # the same Optuna study kept growing
    assert_study_matches_trials_csv(run, after, epochs=4)


def assert_study_matches_trials_csv(run: Path, trials: list[dict], epochs: int) -> None:
    """The Optuna study (what optuna-dashboard shows) says what trials.csv says: states, one
    intermediate value per epoch, the sweep's trial_id and one numbering."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name=run.name,
                              storage=JournalStorage(JournalFileBackend(str(run / "study.journal"))))
    state = {"completed": "COMPLETE", "pruned": "PRUNED", "diverged": "FAIL", "error": "FAIL"}
    by_id = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert set(by_id) == {t["trial_id"] for t in trials}
    for row in trials:
        study_trial = by_id[row["trial_id"]]
        assert study_trial.state.name == state[row["status"]], row
        assert study_trial.user_attrs["status"] == row["status"]
        assert int(row["study_number"]) == study_trial.number
        if row["status"] != "diverged":
            assert sorted(study_trial.intermediate_values) == list(range(1, int(row["epochs_done"]) + 1))
        if row["status"] == "completed":
            assert study_trial.value == pytest.approx(float(row["final_val_acc"]))


def test_help_lists_only_flags_a_search_takes(capsys):
    with pytest.raises(SystemExit):
        search.build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "--lr-range" in text and "--lam-range" in text and "--transform" in text
    assert "--lr " not in text and "--lam " not in text and "--lr A,B" not in text


def test_dry_run_prints_the_space_after_the_real_checks(capsys, tmp_path, monkeypatch):
    (tmp_path / "data" / "train").mkdir(parents=True)
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "data"))
    assert search.main(["--dry-run", "--search-axes", "regulariser", "--n-trials", "7",
                        "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("7 trials of 10 epochs") and "regulariser: one of l1, l2, none" in out
    assert not (tmp_path / "study").exists() and "val_acc of 5000" in out
    assert search.main(["--dry-run", "--name", "../escape", "--results-dir", str(tmp_path)]) == 2
    assert "--name='../escape'" in capsys.readouterr().err
