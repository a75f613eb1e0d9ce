"""`python -m sweep.grid` without Ray: dry runs, YAML configs, and input refused before Ray starts.

Everything here calls `sweep.grid.main(argv)` in-process with `ray.init` replaced by a function that
fails the test, so "no Ray started" is asserted, not assumed.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import ray

from sweep import grid
from sweep.settings import Settings
from sweep.space import AXES, DEFAULT_GRID, SEED_EXPERIMENTS


@pytest.fixture(autouse=True)
def no_ray(monkeypatch, tmp_path):
    """Any attempt to start or join Ray fails the test; $CIFAR10_DIR never leaks in."""
    def refuse(*args, **kwargs):
        raise AssertionError("ray.init called by a command that must not start Ray")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "data" / "train").mkdir(parents=True)  # a data dir in the image-folder layout:
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "data"))  # enough for a dry run's check


def run(capsys, *argv) -> tuple[int, list[str], str]:
    """main(argv) -> (exit code, stdout lines, stderr)."""
    try:
        code = grid.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        code = exc.code
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def trial_lines(lines: list[str]) -> list[str]:
    return [ln for ln in lines if re.match(r"^\s*\d+\. ", ln)]


def field(line: str, key: str) -> str:
    return re.search(rf"\b{key}=(\S+)", line).group(1)


def snapshot(folder: Path) -> dict:
    """Every file under folder with its bytes and mtime: proof that nothing changed."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


# --- dry runs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["--name", "../escape"], "--name='../escape' is not allowed"),
    (["--data-dir", "/no/such/dir"], "data dir /no/such/dir does not exist"),
    (["--cpus-per-trial", "4096"], "--cpus-per-trial=4096.0 is more than this machine's"),
    (["--gpus-per-trial", "1"], "no GPU"),
])
def test_dry_run_applies_every_check_the_real_run_makes(capsys, tmp_path, argv, words):
    import torch

    if "--gpus-per-trial" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, lines, err = run(capsys, "--dry-run", "--results-dir", tmp_path / "r", *argv)
    assert code == 2 and lines == [] and len(err.strip().splitlines()) == 1 and words in err
    assert not (tmp_path / "r").exists()


def test_dry_run_refuses_an_existing_run_name(capsys, tmp_path):
    (tmp_path / "r" / "taken").mkdir(parents=True)
    (tmp_path / "r" / "taken" / "run.json").write_text("{}")
    code, _, err = run(capsys, "--dry-run", "--results-dir", tmp_path / "r", "--name", "taken")
    assert code == 2 and "already exists" in err


def test_default_dry_run_lists_the_96_trial_study_and_writes_nothing(capsys, tmp_path):
    results = tmp_path / "results"
    code, lines, err = run(capsys, "--dry-run", "--results-dir", results)
    assert (code, err) == (0, "")
    trials = trial_lines(lines)
    assert lines[-1] == "96 trials"
    assert len(trials) == 96 == len(set(trials))
    assert [int(ln.split(".")[0]) for ln in trials] == list(range(1, 97))
    assert {field(ln, "epochs") for ln in trials} == {"10"}
    assert {field(ln, "data_fraction") for ln in trials} == {"1"}
    assert {field(ln, "transform") for ln in trials} == set(DEFAULT_GRID["transform"])
    assert not results.exists()


def test_comma_lists_narrow_and_widen_axes(capsys):
    code, lines, _ = run(capsys, "--dry-run", "--transform", "none,normalize", "--lr", "1e-3,3e-4",
                         "--seeds", "2")
    sizes = {a: len(DEFAULT_GRID[a]) for a in AXES} | {"transform": 2, "lr": 2}
    expected = math.prod(sizes.values()) * 2
    trials = trial_lines(lines)
    assert code == 0 and lines[-1] == f"{expected} trials" and len(trials) == expected
    assert {field(ln, "transform") for ln in trials} == {"none", "normalize"}
    assert {field(ln, "lr") for ln in trials} == {"0.001", "0.0003"}
    assert {field(ln, "seed") for ln in trials} == {"0", "1"}


def test_lam_list_does_not_duplicate_unregularised_trials(capsys):
    code, lines, _ = run(capsys, "--dry-run", "--lam", "1e-3,1e-4")
    trials = trial_lines(lines)
    plain = [ln for ln in trials if field(ln, "regulariser") == "none"]
    penalised = [ln for ln in trials if field(ln, "regulariser") != "none"]
    assert code == 0
    assert len(plain) == 32 and {field(ln, "lam") for ln in plain} == {"0"}
    assert len(penalised) == 64 * 2 and {field(ln, "lam") for ln in penalised} == {"0.001", "0.0001"}
    assert len({ln.split(". ", 1)[1] for ln in trials}) == len(trials) == 160
    assert lines[-1] == "160 trials"


def test_seed_preset_lists_the_seed_experiments_with_labels(capsys):
    code, lines, _ = run(capsys, "--preset", "seed", "--dry-run")
    trials = trial_lines(lines)
    assert code == 0 and lines[-1] == f"{len(trials)} trials"
    labels = [lab for ln in trials for lab in ln.split("<- ")[1].split(":")[0].split("|")]
    assert sorted(labels) == sorted(label for label, _, _ in SEED_EXPERIMENTS)
    assert len(trials) == len(SEED_EXPERIMENTS) - 1  # l2 and adam-1e-3 are one configuration
    baseline = next(ln for ln in trials if "<- baseline:" in ln)
    assert field(baseline, "data_fraction") == "0.5" and field(baseline, "transform") == "none"
    assert field(baseline, "model") == "baseline" and field(baseline, "regulariser") == "none"
    dropout = next(ln for ln in trials if "<- dropout:" in ln)
    assert field(dropout, "model") == "dropout" and field(dropout, "transform") == "augment+normalize"
    shared = next(ln for ln in trials if "<- l2|adam-1e-3:" in ln)
    assert field(shared, "regulariser") == "l2" and field(shared, "optimiser") == "adam"

    code, lines, _ = run(capsys, "--preset", "seed", "--seeds", "2", "--dry-run")
    assert code == 0 and lines[-1] == f"{2 * len(trials)} trials"


def test_yaml_config_takes_the_flag_keys_and_flags_override_it(capsys, tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text("transform: [none, normalize]\nmodel: baseline\nregulariser: none\n"
                      "optimiser: [adam, sgd]\nlr: [0.001, 0.01]\nepochs: 5\nbatch-size: 64\n"
                      "seeds: 2\ndry_run: true\n")
    code, lines, _ = run(capsys, "--config", config)
    trials = trial_lines(lines)
    assert code == 0 and lines[-1] == "16 trials" == f"{len(trials)} trials"
    assert {field(ln, "epochs") for ln in trials} == {"5"}
    assert {field(ln, "batch_size") for ln in trials} == {"64"}

    code, lines, _ = run(capsys, "--config", config, "--lr", "0.1", "--epochs", "2")
    trials = trial_lines(lines)
    assert code == 0 and lines[-1] == "8 trials"
    assert {field(ln, "lr") for ln in trials} == {"0.1"}
    assert {field(ln, "epochs") for ln in trials} == {"2"}


# --- bad input: one line on stderr, exit 2, nothing written -------------------------------------

def assert_refused(code: int, lines: list[str], err: str, *words: str) -> None:
    assert code == 2, (code, err)
    assert lines == [], lines
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)


@pytest.mark.parametrize("argv, words", [
    (["--transform", "none,sparkle"], ["transform", "sparkle"]),
    (["--model", "resnet"], ["model", "resnet"]),
    (["--optimiser", "rmsprop"], ["optimiser", "rmsprop"]),
    (["--lr", "0"], ["--lr='0'"]),  # one spelling in messages: the flag's
    (["--lr", "1e-3,-1e-3"], ["lr", "-1e-3"]),
    (["--lr", "fast"], ["lr", "fast"]),
    (["--lam", "-1"], ["lam", "-1"]),
    (["--final-relu", "maybe"], ["--final-relu", "maybe"]),
    (["--epochs", "0"], ["--epochs", "0"]),
    (["--epochs", "1.5"], ["--epochs", "1.5"]),
    (["--seeds", "0"], ["--seeds", "0"]),
    (["--data-fraction", "1.5"], ["--data-fraction", "1.5"]),
    (["--data-fraction", "0"], ["--data-fraction='0'"]),
    (["--optimiser", ","], ["--optimiser", "empty"]),
    (["--preset", "seed", "--lr", "1e-3"], ["--preset seed", "--lr"]),
    (["--cpus-per-trial", "0"], ["--cpus-per-trial", "0"]),
    (["--gpus-per-trial", "-0.5"], ["--gpus-per-trial", "-0.5"]),
    (["--max-concurrent", "0"], ["--max-concurrent", "0"]),
])
def test_bad_values_fail_with_one_line_naming_key_and_value(capsys, tmp_path, argv, words):
    results = tmp_path / "results"
    for mode in ([], ["--dry-run"]):
        code, lines, err = run(capsys, *argv, *mode, "--results-dir", results)
        assert_refused(code, lines, err, *words)
    assert not results.exists()


def test_unknown_yaml_key_is_named(capsys, tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text("lr: [0.001]\nlearning_rate: 0.1\n")
    code, lines, err = run(capsys, "--config", config, "--dry-run")
    assert_refused(code, lines, err, "learning_rate", str(config))


@pytest.mark.parametrize("text, words", [
    ("seeds: 2.5\n", ["--seeds", "2.5", "integer"]),
    ("epochs: '3'\n", ["--epochs", "'3'"]),
    ("lr: [0.001, -1]\n", ["lr", "-1"]),
    ("- lr\n", ["mapping"]),
])
def test_bad_yaml_values_are_named(capsys, tmp_path, text, words):
    config = tmp_path / "sweep.yaml"
    config.write_text(text)
    code, lines, err = run(capsys, "--config", config, "--dry-run")
    assert_refused(code, lines, err, *words)


def test_yaml_with_a_python_tag_is_refused_unexecuted(capfd, tmp_path):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f'lr: !!python/object/apply:os.system ["echo hi; touch {marker}"]\n')
    code = grid.main(["--config", str(config), "--dry-run"])
    out, err = capfd.readouterr()
    assert code == 2 and out == "" and "hi" not in out
    assert len(err.strip().splitlines()) == 1 and "safe_load" in err and str(config) in err
    assert not marker.exists()


def test_missing_data_dir_names_both_layouts(capsys, tmp_path):
    results, data = tmp_path / "results", tmp_path / "nowhere"
    code, lines, err = run(capsys, "--smoke", "--data-dir", data, "--results-dir", results,
                           "--name", "x")
    assert_refused(code, lines, err, str(data), "train/<class>", "cifar-10-batches-py", "--download")
    assert not results.exists()


def test_results_dir_under_a_regular_file_is_not_writable(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    for results in (blocker, blocker / "results"):
        code, lines, err = run(capsys, "--smoke", "--results-dir", results, "--name", "x")
        assert_refused(code, lines, err, "--results-dir", str(results), "not writable")
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "/abs", ".hidden"])
def test_run_name_must_stay_inside_the_results_dir(capsys, tmp_path, name):
    results = tmp_path / "results"
    code, lines, err = run(capsys, "--smoke", "--results-dir", results, "--name", name)
    assert_refused(code, lines, err, "--name", repr(name))
    assert not results.exists() and not (tmp_path / "x").exists()


def existing_run(results: Path, name: str = "old") -> Path:
    folder = results / name
    (folder / "tb").mkdir(parents=True)
    (folder / "run.json").write_text('{"status": "finished", "settings": {}}')
    (folder / "trials.csv").write_text("trial_id,status\nt1,completed\n")
    (folder / "tb" / "events").write_bytes(b"\x00\x01")
    return folder


def test_new_sweep_under_an_existing_name_leaves_it_untouched(capsys, tmp_path):
    folder = existing_run(tmp_path / "results")
    before = snapshot(folder)
    for extra in ([], ["--smoke"]):
        code, lines, err = run(capsys, *extra, "--results-dir", tmp_path / "results", "--name", "old")
        assert_refused(code, lines, err, "--name='old'", "already exists", "--resume")
    assert snapshot(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == ["run.json", "tb", "trials.csv"]


def test_resume_of_a_missing_run_is_refused(capsys, tmp_path):
    results = tmp_path / "results"
    code, lines, err = run(capsys, "--resume", "--name", "missing", "--results-dir", results)
    assert_refused(code, lines, err, "--resume", "'missing'", "no run")
    assert not results.exists()
    code, lines, err = run(capsys, "--resume", "--results-dir", results)
    assert_refused(code, lines, err, "--resume", "--name")


def test_resume_refuses_dry_run_and_bad_execution_flags(capsys, tmp_path):
    folder = existing_run(tmp_path / "results")
    before = snapshot(folder)
    for argv, words in ((["--dry-run"], ["--dry-run", "--resume"]),
                        (["--cpus-per-trial", "-1"], ["--cpus-per-trial", "-1"])):
        code, lines, err = run(capsys, "--resume", "--name", "old", "--results-dir",
                               tmp_path / "results", *argv)
        assert_refused(code, lines, err, *words)
    assert snapshot(folder) == before


def test_resume_of_a_finished_run_exits_zero_without_ray(capsys, tmp_path):
    folder = existing_run(tmp_path / "results")
    before = snapshot(folder)
    code, lines, err = run(capsys, "--resume", "--name", "old", "--results-dir", tmp_path / "results")
    assert code == 0 and err == ""
    assert "already finished" in "\n".join(lines)
    assert snapshot(folder) == before


def test_embedded_ray_is_local_even_when_a_cluster_is_advertised(monkeypatch):
    """Without --address the sweep starts its own Ray, never one named by RAY_ADDRESS or
    /tmp/ray/ray_current_cluster (another user's `ray start` on the same machine)."""
    from sweep import tuning

    calls = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    tuning.start_ray(Settings(gpus_per_trial=0))
    tuning.start_ray(Settings(address="127.0.0.1:6379", gpus_per_trial=0))
    assert [c["address"] for c in calls] == ["local", "127.0.0.1:6379"]


def test_cpu_ray_workers_start_with_one_malloc_arena_unless_opted_out(monkeypatch):
    """Tune trains in a thread; a thread's own glibc arena page-faulted ~6 500 pages a step back
    in (cifar_core.process.tune_allocator), so CPU workers start with MALLOC_ARENA_MAX=1; trials
    that book GPUs keep glibc's defaults (CPU-only tuning), also when a cluster's GPUs decide it."""
    import torch

    from sweep import tuning

    calls, cluster_gpus = [], {"GPU": 0}
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(cluster_gpus))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CIFAR_CORE_ALLOCATOR", raising=False)
    arena = {"env_vars": {"MALLOC_ARENA_MAX": "1"}}

    def env_of(settings):
        calls.clear()
        tuning.start_ray(settings)
        return [c if c == "shutdown" else c.get("runtime_env") for c in calls]

    assert env_of(Settings()) == [arena]  # local, no GPU
    assert env_of(Settings(address="127.0.0.1:6379", gpus_per_trial=0)) == [arena]
    assert env_of(Settings(gpus_per_trial=0.5)) == [None]  # GPU trials: glibc's defaults
    assert env_of(Settings(address="127.0.0.1:6379")) == [None, "shutdown", arena]  # no GPUs
    cluster_gpus["GPU"] = 4
    assert env_of(Settings(address="127.0.0.1:6379")) == [None]  # GPUs: the default books them
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert env_of(Settings()) == [None]  # local with a GPU: trials book it by default
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CIFAR_CORE_ALLOCATOR", "default")
    assert env_of(Settings()) == [None]


@pytest.mark.parametrize("argv, refused", [(["--epochs", "5"], "--epochs"),
                                           (["--transform", "none", "--seeds", "2"], "--seeds, --transform"),
                                           (["--epochs", "10", "--seeds", "1"], None)])
def test_resume_refuses_flags_that_would_change_the_run(capsys, tmp_path, argv, refused):
    import json

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "run.json").write_text(json.dumps(
        {"settings": dict(grid.DEFAULTS, name="x", results_dir=str(tmp_path))}))
    code, lines, err = run(capsys, "--resume", "--name", "x", "--results-dir", tmp_path, *argv)
    if refused is None:  # restating what the run recorded changes nothing: not refused here
        assert "would change it" not in err
        return
    assert code == 2 and lines == [] and len(err.strip().splitlines()) == 1
    assert f"{refused} would change it" in err


def test_resume_takes_exactly_the_resumable_flags_given():
    from sweep import cli
    from sweep.runfolder import SweepError

    saved = {"max_failures": 5, "epochs": 7, "max_concurrent": 3}  # what run.json recorded
    settings = cli.parse_settings(grid.build_parser(), ["--resume", "--name", "x",
                                                        "--max-failures", "2"], grid.DEFAULTS)
    assert settings.given == {"resume", "name", "max_failures"}
    resumed = settings.resumed(saved)
    # given explicitly, though 2 is also the default; the rest is the run's own
    assert (resumed.max_failures, resumed.epochs, resumed.max_concurrent) == (2, 7, 3)
    again = cli.parse_settings(grid.build_parser(), ["--resume", "--name", "x", "--epochs", "5",
                                                     "--seeds", "3"], grid.DEFAULTS)
    with pytest.raises(SweepError, match="--epochs, --seeds would change it"):
        again.resumed(saved)
    assert cli.parse_settings(grid.build_parser(), ["--resume", "--name", "x", "--epochs", "7"],
                              grid.DEFAULTS).resumed(saved).epochs == 7  # restating is fine


_IMPORTS = """
import runpy, sys
sys.argv = [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_module(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("RAY" if "ray" in sys.modules else "NO-RAY", file=sys.stderr)
"""


@pytest.mark.parametrize("module, argv", [
    ("sweep.grid", ["--help"]), ("sweep.grid", ["--dry-run", "--lr", "1e-3"]),
    ("sweep.grid", ["--epochs", "0"]), ("sweep.grid", ["--transform", "bogus"]),
    ("sweep.grid", ["--resume", "--name", "nothing-here"]),
    ("sweep.search", ["--help"]), ("sweep.search", ["--n-trials", "0"]),
    ("sweep.search", ["--dry-run", "--search-axes", "regulariser"]),
])
def test_help_dry_run_and_bad_input_never_import_ray(tmp_path, module, argv):
    import os
    import subprocess
    import sys

    env = {**os.environ, "CIFAR10_DIR": str(tmp_path / "data")}  # made by the no_ray fixture
    done = subprocess.run([sys.executable, "-c", _IMPORTS, module, *argv, "--results-dir",
                           str(tmp_path)] if argv != ["--help"] else
                          [sys.executable, "-c", _IMPORTS, module, *argv],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "NO-RAY", done.stderr


def test_asha_needs_a_hold_out_and_trains_unfused(capsys):
    code, lines, err = run(capsys, "--dry-run", "--scheduler", "asha")
    assert code == 2 and "--val-size" in err and len(err.strip().splitlines()) == 1
    code, lines, err = run(capsys, "--dry-run", "--scheduler", "asha", "--val-size", "100",
                           "--fuse", "4")
    assert code == 2 and "--fuse 1" in err
    code, lines, err = run(capsys, "--dry-run", "--scheduler", "asha", "--val-size", "100")
    assert code == 0 and lines[-1] == "96 trials" and not any("Ray trial" in ln for ln in lines)


def test_every_bad_value_is_named_at_once_and_yaml_keys_by_line(capsys, tmp_path):
    code, lines, err = run(capsys, "--dry-run", "--epochs", "0", "--max-failures", "-1",
                           "--reduction-factor", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--epochs=0" in err and "--max-failures=-1" in err and "--reduction-factor=1" in err
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 2\nlearning_rate: 1e-3\nsedes: 3\n")
    code, lines, err = run(capsys, "--dry-run", "--config", config)
    assert code == 2 and "learning_rate (line 2, column 1)" in err and "sedes (line 3, column 1)" in err
    config.write_text("epochs: 2\nlr: [1e-3\n")
    code, lines, err = run(capsys, "--dry-run", "--config", config)
    assert code == 2 and "line 3" in err and len(err.strip().splitlines()) == 1


def test_a_cluster_that_cannot_place_a_trial_gets_a_warning(monkeypatch, capsys):
    from sweep import tuning
    from sweep.settings import Settings

    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"CPU": 64.0}}]
    monkeypatch.setattr(tuning.ray, "nodes", lambda: nodes)
    line = tuning.warn_unplaceable(Settings(address="10.0.0.1:6379", cpus_per_trial=4.0))
    assert line and "2 CPU/0 GPU" in line and "4 CPU" in line and line in capsys.readouterr().out
    assert tuning.warn_unplaceable(Settings(address="10.0.0.1:6379", cpus_per_trial=2.0)) is None
    assert tuning.warn_unplaceable(Settings(cpus_per_trial=64.0)) is None  # local: refused earlier
