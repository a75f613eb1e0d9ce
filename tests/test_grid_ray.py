"""`python -m sweep.grid` end to end on Ray, each sweep a subprocess on tiny synthetic data.

Few Ray runs, each inspected by several tests: a finished small grid with a diverging trial, a
sweep whose driver is killed (and a concurrent sweep refused) and then resumed, a 2-node cluster
on 127.0.0.1 that loses its worker node mid-sweep, and one --smoke run on the real CIFAR-10.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sweep.space import AXES

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "baseline", "--regulariser", "none", "--batch-size", "64"]


# --- helpers ----------------------------------------------------------------------------------

def sweep_env(data_dir: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return env | {"CIFAR10_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"} | extra


def spawn(argv: list, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweep.grid", *map(str, argv)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> subprocess.CompletedProcess:
    """Wait for a spawned sweep; past the timeout, kill it and its Ray processes, then fail."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_driver(proc)
        out, err = proc.communicate()
        pytest.fail(f"sweep timed out after {timeout}s:\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def grid(argv: list, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return finish(spawn(argv, env), timeout)


def start_grid(argv: list, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall the driver
        return subprocess.Popen([sys.executable, "-m", "sweep.grid", *map(str, argv)], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def rows(folder: Path, name: str) -> list[dict]:
    try:
        with open(folder / name, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def wait_for(check, proc: subprocess.Popen, log: Path, what: str, timeout: float = 150):
    """Poll check() until it returns something truthy; fail if the sweep ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"sweep exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def descendants(pid: int) -> list[int]:
    """Every process below pid (from /proc), captured before pid is killed and they are orphaned."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def kill_driver(proc: subprocess.Popen) -> None:
    """SIGKILL the driver, then the embedded Ray processes it started, each by pid."""
    children = descendants(proc.pid)
    proc.kill()
    proc.wait(timeout=30)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        kill_driver(proc)


def by_epoch(epoch_rows: list[dict]) -> dict:
    keys = [(r["trial_id"], int(r["epoch"])) for r in epoch_rows]
    assert len(keys) == len(set(keys)), "an epoch is recorded twice"
    return dict(zip(keys, epoch_rows))


def assert_every_epoch_once(folder: Path, epochs: int) -> None:
    recorded = by_epoch(rows(folder, "epochs.csv"))
    for trial in rows(folder, "trials.csv"):
        assert trial["status"] == "completed", trial
        assert int(trial["epochs_done"]) == epochs
        assert sorted(e for t, e in recorded if t == trial["trial_id"]) == list(range(1, epochs + 1))


# --- (a, b, d) a small grid with one diverging trial, run once ------------------------------------

MAIN_EPOCHS = 2


@pytest.fixture(scope="module")
def finished_run(tiny_cifar_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("grid-results")
    argv = ["--transform", "none,augment+normalize", *TINY, "--optimiser", "sgd", "--lr", "0.05,1e3",
            "--epochs", MAIN_EPOCHS, "--results-dir", results, "--name", "main"]
    env = sweep_env(tiny_cifar_dir)
    done = grid(argv, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"folder": results / "main", "results": results, "run": done, "env": env}


def test_small_grid_records_one_row_per_trial_and_per_epoch(finished_run):
    folder = finished_run["folder"]
    trials = rows(folder, "trials.csv")
    assert len(trials) == 4 and len({t["trial_id"] for t in trials}) == 4
    assert set(AXES) | {"seed", "epochs", "batch_size", "node"} <= set(trials[0])
    assert {(t["transform"], float(t["lr"])) for t in trials} == {
        (tf, lr) for tf in ("none", "augment+normalize") for lr in (0.05, 1e3)}
    completed = [t for t in trials if t["status"] == "completed"]
    assert {float(t["lr"]) for t in completed} == {0.05} and len(completed) == 2
    for t in completed:
        assert (t["model"], t["regulariser"], t["optimiser"]) == ("baseline", "none", "sgd")
        assert int(t["epochs_done"]) == int(t["epochs"]) == MAIN_EPOCHS
        for key in ("final_train_loss", "final_train_acc", "final_test_loss", "final_test_acc",
                    "best_test_acc", "train_seconds"):
            assert float(t[key]) >= 0, (key, t)
        assert 0 <= float(t["final_test_acc"]) <= float(t["best_test_acc"]) <= 1
        assert t["node"]
    epochs = by_epoch(rows(folder, "epochs.csv"))
    for t in completed:
        mine = [epochs[(t["trial_id"], e)] for e in range(1, MAIN_EPOCHS + 1)]
        assert [r["status"] for r in mine] == ["ok"] * MAIN_EPOCHS
        assert mine[-1]["test_acc"] == t["final_test_acc"]
        assert all(r["lr"] == t["lr"] and r["transform"] == t["transform"] for r in mine)
    assert len(epochs) == 2 * MAIN_EPOCHS + 2  # the diverged trials stop after one epoch


def test_diverging_trial_ends_diverged_and_is_not_retried(finished_run):
    folder, run = finished_run["folder"], finished_run["run"]
    diverged = [t for t in rows(folder, "trials.csv") if float(t["lr"]) == 1e3]
    assert len(diverged) == 2
    epochs = by_epoch(rows(folder, "epochs.csv"))
    for t in diverged:
        assert t["status"] == "diverged" and int(t["epochs_done"]) == 1
        assert [k for k in epochs if k[0] == t["trial_id"]] == [(t["trial_id"], 1)]
        assert epochs[(t["trial_id"], 1)]["status"] == "diverged"
    assert "failed after its retries" not in run.stdout
    assert json.loads((folder / "run.json").read_text())["status"] == "finished"


def test_run_json_describes_the_run(finished_run):
    info = json.loads((finished_run["folder"] / "run.json").read_text())
    assert info["status"] == "finished" and info["n_trials"] == 4
    assert info["started_at"] <= info["ended_at"] and info["wall_seconds"] > 0
    assert info["space"]["axes"]["transform"] == ["augment+normalize", "none"]
    assert info["space"]["axes"]["lr"] == ["0.05", "1000.0"]
    assert info["command"].startswith("python") and "-m sweep.grid" in info["command"]
    assert "--lr 0.05,1e3" in info["command"]
    assert {"python", "torch", "ray"} <= set(info["versions"]) and info["versions"]["ray"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", info["git_sha"] or "")
    assert info["hardware"]["cpus"] >= 1 and info["hardware"]["nodes"] == 1
    # --fuse auto (the default) recorded the plan it measured (or found cached) and applied it
    plan = info["fuse_plan"]
    assert plan["source"] in ("measured", "cached") and plan["fingerprint"]["torch"]
    assert info["settings"]["fuse"] == plan["fuse"]
    assert info["settings"]["cpus_per_trial"] == plan["threads"]
    # the idle tail, from trials.csv's start and end times
    trials = rows(finished_run["folder"], "trials.csv")
    assert all(t["started_at"] and t["started_at"] <= t["ended_at"] for t in trials)
    idle = info["idle_at_end"]
    assert idle["slots"] >= 1 and 0 <= idle["idle_slot_seconds"] <= idle["slots"] * idle["tail_seconds"]
    assert "slots idle at the end:" in finished_run["run"].stdout


def test_tensorboard_puts_train_and_test_on_one_chart(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sweep.tensorboard import run_names

    folder = finished_run["folder"]
    trials = rows(folder, "trials.csv")
    names = run_names(trials)  # runs are named by configuration, e.g. none·baseline·none·sgd·0.05·s0
    assert sorted(p.name for p in (folder / "tb").iterdir()) == sorted(names.values())
    for trial_id in [t["trial_id"] for t in trials if t["status"] == "completed"]:
        tb = folder / "tb" / names[trial_id]
        assert list(tb.glob("events.out.tfevents.*"))
        for metric in ("loss", "acc"):
            for split in ("train", "test"):
                events = EventAccumulator(str(tb / f"{metric}_{split}")).Reload()
                steps = [s.step for s in events.Scalars(metric)]
                assert steps == list(range(1, MAIN_EPOCHS + 1)), (trial_id, metric, split)


def test_progress_lines_replace_rays_tables(finished_run):
    out, err = finished_run["run"].stdout, finished_run["run"].stderr
    progress = [ln for ln in out.splitlines() if re.search(r"done \d+/4 · running \d+ · pending", ln)]
    assert progress and "done 4/4 · running 0 · pending 0" in progress[-1]
    assert f"results: {finished_run['folder']}" in out
    for table in ("Trial status", "Trial name", "== Status ==", "Current time:", "+----", "╭──"):
        assert table not in out and table not in err, table


def test_resume_of_a_finished_run_says_so_and_changes_nothing(finished_run):
    folder = finished_run["folder"]
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}
    again = grid(["--resume", "--name", "main", "--results-dir", finished_run["results"]],
                 finished_run["env"], timeout=120)
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()} == before


# --- (c, e) a concurrent sweep is refused; a killed driver's run resumes -------------------------

KILL_EPOCHS = 30  # trials must outlast the refusal checks and be caught mid-run


@pytest.fixture(scope="module")
def killed_run(tiny_cifar_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("kill-results")
    folder = results / "k"
    argv = ["--transform", "augment+normalize", *TINY, "--optimiser", "adam",
            "--lr", "1e-3,3e-4,1e-4,3e-5", "--epochs", KILL_EPOCHS, "--max-concurrent", 1,
            "--fuse", 1,  # one Ray trial per config: the kill must find one done, one mid-run
            "--results-dir", results, "--name", "k"]
    env = sweep_env(tiny_cifar_dir)
    log = results / "first.log"
    first = start_grid(argv, env, log)
    try:
        wait_for(lambda: (folder / "run.json").exists(), first, log, "run.json is written")
        seconds = [spawn(a, env) for a in (["--resume", "--name", "k", "--results-dir", results], argv)]
        refused = [finish(p, timeout=120) for p in seconds]
        first_alive = first.poll() is None

        def mid_run():
            trials = rows(folder, "trials.csv")
            started = [t for t in trials if t["status"] == "running"
                       and 1 <= int(t["epochs_done"]) < KILL_EPOCHS]
            return any(t["status"] == "completed" for t in trials) and started

        wait_for(mid_run, first, log, "a trial completed and another is mid-run")
        kill_driver(first)
        at_kill = {"trials": rows(folder, "trials.csv"), "epochs": rows(folder, "epochs.csv")}
    finally:
        stop(first)
    resumed = grid(["--resume", "--name", "k", "--results-dir", results], env)
    return {"folder": folder, "refused": refused, "first_alive": first_alive, "at_kill": at_kill,
            "resumed": resumed}


def test_second_sweep_on_a_running_folder_is_refused(killed_run):
    assert killed_run["first_alive"], "the first sweep ended before the second one was refused"
    resume, new = killed_run["refused"]
    assert resume.returncode == 2 and resume.stdout == "", (resume.stdout, resume.stderr)
    assert len(resume.stderr.strip().splitlines()) == 1
    assert "in use by another sweep" in resume.stderr and str(killed_run["folder"]) in resume.stderr
    assert new.returncode == 2 and new.stdout == "", (new.stdout, new.stderr)
    assert "already exists" in new.stderr and "--resume" in new.stderr


def test_resume_after_the_driver_is_killed_finishes_without_rerunning(killed_run):
    folder, resumed = killed_run["folder"], killed_run["resumed"]
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    at_kill = killed_run["at_kill"]
    finished = {t["trial_id"]: t for t in at_kill["trials"] if t["status"] == "completed"}
    assert finished and len(finished) < 4, "the kill did not land mid-sweep"
    trials = {t["trial_id"]: t for t in rows(folder, "trials.csv")}
    assert len(trials) == 4
    assert_every_epoch_once(folder, KILL_EPOCHS)
    for trial_id, row in finished.items():
        assert trials[trial_id] == row, f"finished trial {trial_id} changed"
    now, before = by_epoch(rows(folder, "epochs.csv")), by_epoch(at_kill["epochs"])
    last = {t: max(e for u, e in before if u == t) for t, _ in before}
    for (trial_id, epoch), row in before.items():
        if trial_id in finished or epoch < last[trial_id]:  # the newest in-flight epoch may redo
            assert now[(trial_id, epoch)] == row, f"epoch {epoch} of {trial_id} was rerun"
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "finished" and len(info["resumed_at"]) == 1
    assert "done 4/4" in resumed.stdout


# --- (f) a 2-node cluster on 127.0.0.1 that loses its worker node --------------------------------

CLUSTER_EPOCHS = 40  # long enough (~10 s a trial on a quiet machine) to catch one mid-run
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                      "health_check_failure_threshold": 4}


@pytest.fixture(scope="module")
def two_nodes():
    """Head + one worker node, 1 CPU each, on loopback; its files (and the address file that
    `ray.init()` would find) live in a private RAY_TMPDIR so no other Ray user joins it."""
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=1, node_ip_address="127.0.0.1", include_dashboard=False,
            _system_config=FAST_HEALTH_CHECKS))
        worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        yield cluster, worker, tmp
    finally:
        if cluster is not None:
            cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(tmp, ignore_errors=True)


def test_cluster_runs_on_both_nodes_and_survives_losing_one(two_nodes, tiny_cifar_dir, tmp_path):
    cluster, worker, ray_tmp = two_nodes
    folder = tmp_path / "c"
    argv = ["--transform", "augment+normalize", *TINY, "--optimiser", "adam",
            "--lr", "1e-3,3e-4,1e-4,3e-5", "--epochs", CLUSTER_EPOCHS, "--address", cluster.address,
            "--fuse", 1,  # one Ray trial per config, so both nodes get trials
            "--results-dir", tmp_path, "--name", "c"]
    log = tmp_path / "driver.log"
    # ray.init(address="127.0.0.1:P") rewrites loopback to the host's own IP, where this cluster
    # does not listen; Ray's no-cluster mode keeps loopback as is (and changes nothing else here).
    env = sweep_env(tiny_cifar_dir, RAY_TMPDIR=ray_tmp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    driver = start_grid(argv, env, log)
    on_worker = worker.node_id[:8]  # the trainable reports "host:<node id prefix>"

    def worker_busy():  # first round done on both nodes; a second-round trial mid-run on the worker
        trials = rows(folder, "trials.csv")
        if len({t["node"] for t in trials if t["status"] == "completed"}) < 2:
            return None
        return [t for t in trials if t["status"] == "running" and t["node"].endswith(on_worker)
                and 1 <= int(t["epochs_done"]) < CLUSTER_EPOCHS]

    try:
        busy = wait_for(worker_busy, driver, log, "first-round trials done on both nodes and a "
                        "second-round trial running on the worker node", timeout=200)
        cluster.remove_node(worker, allow_graceful=False)
        driver.wait(timeout=240)
    finally:
        stop(driver)
    output = log.read_text()
    assert driver.returncode == 0, output[-3000:]
    trials = rows(folder, "trials.csv")
    assert len(trials) == 4
    assert_every_epoch_once(folder, CLUSTER_EPOCHS)
    assert len({t["node"] for t in trials}) == 2  # the first round ran on both nodes
    survivor = {t["trial_id"]: t for t in trials}[busy[0]["trial_id"]]
    assert survivor["node"] != busy[0]["node"]  # it finished on the remaining node
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "finished" and info["hardware"]["nodes"] == 2


# --- (g) the real data ---------------------------------------------------------------------------

@pytest.mark.real_data
def test_smoke_run_on_real_cifar10(real_cifar_dir, tmp_path):
    done = grid(["--smoke", "--results-dir", tmp_path, "--name", "smoke"], sweep_env(real_cifar_dir))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    trials = rows(tmp_path / "smoke", "trials.csv")
    assert len(trials) == 2 and {t["status"] for t in trials} == {"completed"}
    assert {t["optimiser"] for t in trials} == {"adam", "sgd"}
    assert {t["data_fraction"] for t in trials} == {"0.02"}
    assert all(0 <= float(t["final_test_acc"]) <= 1 for t in trials)
    assert len(rows(tmp_path / "smoke", "epochs.csv")) == 2


def test_resume_applies_the_max_failures_it_is_given(finished_run):
    from sweep import tuning
    from sweep.settings import Settings
    from sweep.trainable import train_trial

    settings = Settings(max_failures=5)
    tuner = tuning.restore_tuner(str(finished_run["folder"] / "ray"), train_trial, settings)
    assert tuner._local_tuner._run_config.failure_config.max_failures == 5


def test_resume_refuses_flags_that_would_change_the_run(finished_run):
    done = grid(["--resume", "--name", "main", "--results-dir", finished_run["results"],
                 "--epochs", "5"], finished_run["env"])
    assert done.returncode == 2 and done.stdout == ""
    assert "--epochs would change it" in done.stderr and len(done.stderr.strip().splitlines()) == 1
