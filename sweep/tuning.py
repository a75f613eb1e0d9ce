"""Build and run the Ray Tuner that both entry points share (one trainable, one results layout).

`launch` validates the run folder, loads the dataset once in the driver (bad input fails before
Ray starts), starts an embedded local Ray or joins a cluster (--address), puts the dataset into the
object store once (tune.with_parameters), and records results through the Recorder and Progress
callbacks. `resume` continues a run: Tuner.restore, or a fresh Tuner for a search study.
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # we write CSV/TB ourselves
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402

from cifar_core.data import holdout_index, load_cifar10  # noqa: E402
from cifar_core.process import allocator_process_env  # noqa: E402

from . import cli  # noqa: E402
from .progress import Progress  # noqa: E402
from .recorder import Recorder  # noqa: E402
from .schema import TRIALS_CSV, idle_at_end, read_csv  # noqa: E402
from .settings import Settings  # noqa: E402
from .runfolder import (RunFolder, check_location, command_line,  # noqa: E402
                        default_name, now_iso, provenance, repair_ray_state)
from .trainable import Execution, train_trial  # noqa: E402

RAY_DIR = "ray"


def tune_config(settings: Settings, **extra) -> tune.TuneConfig:
    return tune.TuneConfig(max_concurrent_trials=settings.max_concurrent, reuse_actors=True,
                           trial_dirname_creator=lambda trial: trial.trial_id, **extra)


def asha(settings: Settings, epochs: int):
    """Ray Tune's ASHA early stopping by epoch (the metric and mode come from TuneConfig)."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", max_t=epochs,
                         grace_period=min(settings.grace_epochs, epochs),
                         reduction_factor=settings.reduction_factor)


def launch(*, kind, prog, module, argv, settings, space, trials, make_tuner, extra=None,
           finish=None) -> int:
    """Start a new run; `trials` is the planned trial count and total epochs as (n, epochs)."""
    name = settings.name or default_name()
    settings = settings.replace(name=name)
    folder = RunFolder(check_location(settings.results_dir, name), resume=False)
    folder.refuse_existing()
    data = load_cifar10(cli.data_dir_for(settings), download=settings.download)
    holdout_index(data.train_y, settings.val_size)  # a bad size fails before Ray
    folder.open()
    info = {"kind": kind, "name": name, "command": command_line(module, argv), "argv": argv,
            "space": space, "settings": settings.to_dict(), "n_trials": trials[0],
            "total_epochs": trials[1], **(extra or {})}
    return _run(prog, module, folder, settings, info, data, make_tuner, finish)


def resume(*, prog, module, argv, settings: Settings, info: dict, make_tuner=None,
           finish=None) -> int:
    """Continue run --name with `settings` (Settings.resumed: the saved ones plus the flags
    given) and `info`, its run.json as the entry point read it (and found unfinished): finished
    trials are never rerun."""
    folder = cli.resume_folder(settings)
    data = load_cifar10(cli.data_dir_for(settings), download=settings.download)
    folder.open()
    info["argv_resume"] = argv
    return _run(prog, module, folder, settings, info, data, make_tuner, finish)


def _run(prog, module, folder, settings, info, data, make_tuner, finish=None) -> int:
    status = run_sweep(folder=folder, settings=settings, info=info, make_tuner=make_tuner,
                       data_arrays=data.to_numpy(), finish=finish)
    name = os.path.basename(folder.path)
    print(f"results: {folder.path}")
    if status != "finished":
        print(f"interrupted: continue with  python -m {module} --resume --name {name}"
              + (f" --results-dir {settings.results_dir}" if settings.results_dir != "results" else ""))
        return 130
    print(f"report:  python -m sweep.report {folder.path}")
    if settings.report:
        from .report.cli import main as report_main

        return report_main([folder.path])
    return 0


def start_ray(settings: Settings) -> None:
    """Join the cluster at --address, else start an embedded local Ray, quietly.

    CPU trial workers start with one glibc arena (cifar_core.process.allocator_process_env): Tune
    runs each trial in a thread, and a thread's own arena page-faulted the activation buffers back
    in every step. That is CPU-only tuning: a run whose trials book GPUs leaves malloc alone (on a
    cluster whose default is decided by its GPUs, Ray is joined once to look, then again).
    CIFAR_CORE_ALLOCATOR=default leaves the workers' malloc alone too.
    """
    kwargs = dict(log_to_driver=False, logging_level="ERROR", configure_logging=True)
    if settings.address:
        kwargs["address"] = settings.address
    else:  # "local": never join a cluster found via RAY_ADDRESS or /tmp/ray/ray_current_cluster
        kwargs.update(address="local", include_dashboard=False)
    env = allocator_process_env()
    if env and settings.address and settings.gpus_per_trial is None:
        ray.init(**kwargs)  # the cluster's GPUs decide the default: look first
        if ray.cluster_resources().get("GPU", 0) > 0:
            return
        ray.shutdown()
    elif env and cli.local_trials_book_gpus(settings):
        env = {}
    if env:
        kwargs["runtime_env"] = {"env_vars": env}
    ray.init(**kwargs)


def warn_unplaceable(settings: Settings) -> str | None:
    """On a cluster (--address), a warning line when no node has the CPUs or GPUs one trial asks
    for right now (its autoscaler may still add one), naming what the nodes have."""
    if not settings.address:
        return None
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    cpus, gpus = settings.cpus_per_trial, settings.gpus_per_trial or 0
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return None
    have = ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in nodes) or "no node"
    line = (f"warning: no node of the cluster at {settings.address} has {cpus:g} CPU and {gpus:g} "
            f"GPU for one trial now (nodes: {have}); trials wait until the autoscaler adds one")
    print(line, flush=True)
    return line


def trial_resources(settings: Settings) -> dict:
    """What one Ray trial books: --cpus-per-trial CPUs and --gpus-per-trial GPUs (default 0.25
    when the cluster has GPUs now, else 0)."""
    gpus = settings.gpus_per_trial
    if gpus is None:
        gpus = 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return {"CPU": settings.cpus_per_trial, "GPU": gpus}


def slots(settings: Settings, resources: dict) -> int:
    """How many trials the cluster's `resources` run at once (--max-concurrent caps it)."""
    per = trial_resources(settings)
    fits = min(int(resources.get(k, 0) // v) for k, v in per.items() if v > 0)
    return max(1, min(fits, settings.max_concurrent or fits))


def trainable_for(settings: Settings, data_arrays: dict):
    """The shared trainable with its resources and the dataset riding in the object store."""
    resources = trial_resources(settings)
    cpus, gpus = resources["CPU"], resources["GPU"]
    execution = Execution(threads=max(1, int(cpus)), channels_last=settings.channels_last,
                          amp=settings.amp, val_size=settings.val_size)
    fn = tune.with_parameters(train_trial, data=data_arrays, execution=execution)
    return tune.with_resources(fn, {"cpu": cpus, "gpu": gpus})


def restore_tuner(path: str, trainable, settings: Settings):
    """Tuner.restore, with the resume's --max-failures applied: Ray restores the original
    RunConfig (tuner.pkl) and has no public way to change it, so the failure config is replaced
    on the restored tuner (Ray 2.60's TunerInternal._run_config, a dataclass)."""
    import dataclasses

    repaired = repair_ray_state(path)
    if repaired:
        print(repaired, flush=True)
    tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True,
                               resume_errored=True)
    local = getattr(tuner, "_local_tuner", None)
    if local is not None and dataclasses.is_dataclass(getattr(local, "_run_config", None)):
        failure = tune.FailureConfig(max_failures=settings.max_failures)
        local._run_config = dataclasses.replace(local._run_config, failure_config=failure)
    return tuner


def run_config(folder: RunFolder, settings: Settings, info: dict, ray_dir: str = RAY_DIR):
    callbacks = [Recorder(folder.path, keep_weights=settings.keep_weights),
                 Progress(info.get("session_trials", info["n_trials"]), info["total_epochs"])]
    if settings.mlflow is not None:
        from .tracking import mlflow_callback

        callbacks.append(mlflow_callback(settings.mlflow, folder.path, info["name"], info["command"]))
    return tune.RunConfig(
        name=ray_dir, storage_path=folder.path, verbose=0, callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1))


def run_sweep(*, folder: RunFolder, settings: Settings, info: dict, make_tuner, data_arrays: dict,
              finish=None) -> str:
    """Run (or restore) the sweep in `folder`; returns "finished" or "interrupted"."""
    start_ray(settings)
    try:
        warn_unplaceable(settings)
        trainable = trainable_for(settings, data_arrays)
        if settings.resume and make_tuner is None:
            tuner = restore_tuner(os.path.join(folder.path, info.get("ray_dir", RAY_DIR)),
                                  trainable, settings)
        else:
            tuner = make_tuner(trainable, run_config(folder, settings, info,
                                                     info.get("ray_dir", RAY_DIR)))
        info = _starting(folder, info)
        started = time.monotonic()
        tuner.fit()
        done, total = folder.finished_trials()
        status = "finished" if done == total >= info["n_trials"] else "interrupted"
        if finish:
            finish(info)
        info["idle_at_end"] = idle_at_end(read_csv(os.path.join(folder.path, TRIALS_CSV)),
                                          slots(settings, ray.cluster_resources()))
        _ending(folder, info, status, time.monotonic() - started)
        if info["idle_at_end"] and status == "finished":
            idle = info["idle_at_end"]
            print(f"slots idle at the end: {idle['idle_slot_seconds']:.0f} slot-seconds in the last "
                  f"{idle['tail_seconds']:.0f} s ({idle['slots']} slots)", flush=True)
        return status
    finally:
        ray.shutdown()


def _starting(folder: RunFolder, info: dict) -> dict:
    if folder.resume:
        info.setdefault("resumed_at", []).append(now_iso())
    else:
        info.update(started_at=now_iso(), wall_seconds=0.0)
    info.update(provenance(), status="running")
    info["hardware"].update(nodes=len(ray.nodes()), cluster_resources=ray.cluster_resources())
    folder.write_info(info)
    return info


def _ending(folder: RunFolder, info: dict, status: str, seconds: float) -> None:
    info.update(status=status, ended_at=now_iso(), wall_seconds=info.get("wall_seconds", 0.0) + seconds)
    folder.write_info(info)
