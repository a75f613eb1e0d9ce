"""Scaling: does a second node finish the same grid sooner?

Runs the same `python -m sweep.grid` (the overhead benchmark's 16-configuration grid, fused as the
grid fuses them, `--max-concurrent 2`) twice, each time joining with `--address` a Ray cluster
this benchmark starts on 127.0.0.1 (ray.cluster_utils.Cluster, in a private RAY_TMPDIR, stopped
by Cluster.shutdown, which ends only the processes it started): (a) one node of 1 CPU, (b) a head
and a worker node of 1 CPU each. Prints both wall times (the sweep subprocess's, Python start-up
and data loading included), their ratio (`scaling_speedup`) and the Ray trials each node ran
(trials.csv's `node`) and how many bytes each node's object store created while the sweep ran
(the raylet's cumulative_created_bytes, read from each node after the sweep; the dataset
should arrive once per node, not once per trial). Run through
`python -m benchmarks --only scaling`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter

from sweep.schema import idle_after_last_start, ray_trial_id

from .sweep_overhead import FULL_GRID
from .sweeps import grid_argv, run_grid


def measure_scaling(*, grid: dict = FULL_GRID, epochs: int = 1, fraction: float = 1.0,
                    data_dir: str | None, log=print) -> dict:
    argv = grid_argv(**grid, epochs=epochs, fraction=fraction, max_concurrent=2, data_dir=data_dir)
    runs = {}
    for nodes in (1, 2):
        with loopback_cluster(nodes) as cluster:
            address = cluster.address
            log(f"  {nodes} node(s) of 1 CPU at {address}: python -m sweep.grid {' '.join(argv)}")
            before = object_store_created(cluster)
            run = run_grid([*argv, "--address", address], timeout_s=3600)
            after = object_store_created(cluster)
        ray_trials = {ray_trial_id(t["trial_id"]): t["node"] for t in run.trials}
        per_node = Counter(ray_trials.values())
        created = {node: after[node]["bytes"] - before.get(node, {}).get("bytes", 0) for node in after}
        runs[nodes] = {"wall_seconds": run.wall_seconds,
                       "tune_fit_seconds": float(run.info.get("wall_seconds") or 0.0),
                       "configurations": len(run.trials), "ray_trials": len(ray_trials),
                       "ray_trials_per_node": {_short(n): c for n, c in per_node.items()},
                       "object_store_bytes_per_node": created,
                       "dataset_bytes": dataset_bytes(data_dir)}
        log(f"    wall {run.wall_seconds:.1f} s; Ray trials per node "
            f"{runs[nodes]['ray_trials_per_node']}; object store bytes created per node "
            f"{ {n: f'{b / 2**20:.0f} MiB' for n, b in created.items()} } (dataset "
            f"{runs[nodes]['dataset_bytes'] / 2**20:.0f} MiB)")
    return {"argv": argv, "epochs": epochs, "data_fraction": fraction,
            "one_node": runs[1], "two_nodes": runs[2],
            "scaling_speedup": runs[1]["wall_seconds"] / runs[2]["wall_seconds"],
            "tune_fit_speedup": runs[1]["tune_fit_seconds"] / max(runs[2]["tune_fit_seconds"], 1e-9)}


def object_store_created(cluster) -> dict[str, dict]:
    """Node id prefix (trials.csv's node suffix) -> bytes and objects the object store of each
    node of `cluster` (ray.cluster_utils.Cluster) has created since it started (the raylet's
    cumulative counters: an object pulled from another node is created again there). Ray has
    no public call for these: ray._private.internal_api.node_stats asks each raylet, as
    `ray memory --stats-only` does (this process never joins the cluster: Ray fixed its
    loopback rule when it was imported)."""
    from ray._private.internal_api import node_stats

    out = {}
    for node in [cluster.head_node, *cluster.worker_nodes]:
        stats = node_stats(node.node_ip_address, node.node_manager_port,
                           include_memory_info=False).store_stats
        out[node.node_id[:8]] = {"bytes": int(stats.cumulative_created_bytes),
                                   "objects": int(stats.cumulative_created_objects)}
    return out


def dataset_bytes(data_dir: str | None) -> int:
    """The bytes the sweep puts into the object store: its training and test arrays."""
    from cifar_core.data import load_cifar10

    arrays = load_cifar10(data_dir).to_numpy()
    return int(sum(a.nbytes for a in arrays.values()))


def _short(node: str) -> str:
    """trials.csv's node (host:id8) as the id prefix object_store_created keys by."""
    return node.rsplit(":", 1)[-1]


def measure_growth(*, epochs: int = 1, fraction: float = 0.02, data_dir: str | None,
                   log=print) -> dict:
    """Wall time of 4, 16 and 96 configurations (the quick, the overhead and the default grid;
    `epochs`, `fraction`) on this machine's embedded Ray, 2 Ray trials at once, the grid's
    fusing; a least-squares line wall = fixed + marginal x configurations through the three."""
    import numpy as np

    from .sweep_overhead import QUICK_GRID

    flags = ["--epochs", str(epochs), "--data-fraction", str(fraction), "--max-concurrent", "2",
             "--max-failures", "0"] + (["--data-dir", str(data_dir)] if data_dir else [])
    grids = {4: grid_argv(**QUICK_GRID, epochs=epochs, fraction=fraction, max_concurrent=2,
                          data_dir=data_dir),
             16: grid_argv(**FULL_GRID, epochs=epochs, fraction=fraction, max_concurrent=2,
                           data_dir=data_dir),
             96: flags}
    runs = {}
    for n, argv in grids.items():
        log(f"  {n} configurations: python -m sweep.grid {' '.join(argv)}")
        run = run_grid(argv, timeout_s=3600)
        assert len(run.trials) == n, (n, len(run.trials))
        runs[n] = {"wall_seconds": run.wall_seconds,
                   "tune_fit_seconds": float(run.info.get("wall_seconds") or 0.0)}
        log(f"    wall {run.wall_seconds:.1f} s")
    n = np.array(list(runs), dtype=float)
    marginal, fixed = np.polyfit(n, np.array([r["wall_seconds"] for r in runs.values()]), 1)
    return {"epochs": epochs, "data_fraction": fraction, "runs": runs,
            "fixed_seconds": float(fixed), "marginal_seconds_per_configuration": float(marginal)}


ENV = ("RAY_TMPDIR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")


class loopback_cluster:
    """A Ray cluster of `nodes` nodes with 1 CPU each on 127.0.0.1 (yields the Cluster)."""

    def __init__(self, nodes: int):
        self.nodes = nodes

    def __enter__(self) -> str:
        from ray.cluster_utils import Cluster

        self.tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # Ray's socket paths must be short
        self.saved = {k: os.environ.get(k) for k in ENV}
        # the driver inherits these: the cluster's files, and Ray's no-cluster mode, which keeps
        # 127.0.0.1 as given (otherwise ray.init rewrites loopback to the host's own IP, where
        # this cluster does not listen)
        os.environ.update(RAY_TMPDIR=self.tmp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        for _ in range(self.nodes - 1):
            self.cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        self.cluster.wait_for_nodes()
        return self.cluster

    def __exit__(self, *exc):
        self.cluster.shutdown()
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(self.tmp, ignore_errors=True)


TAIL_FRACTIONS = ("0.125", "0.25", "0.5", "1.0")  # trials of 1, 2, 4 and 8 units of training


def measure_tail(*, epochs: int = 2, data_dir: str | None, log=print) -> dict:
    """Idle slots at the end of a grid whose trials differ in length: 8 unfused configurations
    (data fractions 0.125-1 x Adam/SGD, `epochs` epochs) on this machine's embedded Ray, 2 at
    once, started in the grid's order (shortest first, as the axis lists them) and longest
    first (--order cost, the default). Each run's idle slot-seconds come from its run.json
    (sweep.schema.idle_at_end: from the last trial's start to the end)."""
    argv = ["--transform", "none", "--model", "baseline", "--regulariser", "none",
            "--optimiser", "adam,sgd", "--lr", "1e-3", "--data-fraction", ",".join(TAIL_FRACTIONS),
            "--epochs", str(epochs), "--fuse", "1", "--max-concurrent", "2", "--max-failures", "0"]
    argv += ["--data-dir", str(data_dir)] if data_dir else []
    runs = {}
    for order in ("grid", "cost"):
        log(f"  --order {order}: python -m sweep.grid {' '.join(argv)} --order {order}")
        run = run_grid([*argv, "--order", order], timeout_s=3600)
        idle = run.info.get("idle_at_end") or {}
        runs[order] = {"wall_seconds": run.wall_seconds,
                       "tune_fit_seconds": float(run.info.get("wall_seconds") or 0.0),
                       "idle_slot_seconds_at_end": idle.get("idle_slot_seconds"),
                       "tail_seconds": idle.get("tail_seconds"), "slots": idle.get("slots")}
        log(f"    wall {run.wall_seconds:.1f} s; idle at the end "
            f"{idle.get('idle_slot_seconds')} slot-seconds over the last {idle.get('tail_seconds')} s")
    return {"argv": argv, "epochs": epochs, "grid_order": runs["grid"], "cost_order": runs["cost"]}


def simulated_tail(durations: list[float], slots: int) -> dict:
    """Idle slot-seconds at the end if trials of these durations start in this order on `slots`
    slots, each as soon as one frees (Tune's FIFO placement, start-up costs left out): for a
    run recorded without start and end times (results/full-grid), from its epochs' seconds."""
    free = [0.0] * slots
    spans = []
    for duration in durations:
        slot = min(range(slots), key=free.__getitem__)
        spans.append((free[slot], free[slot] + duration))
        free[slot] += duration
    return {**idle_after_last_start(spans, slots),
            "makespan_seconds": round(max(e for _, e in spans), 1)}
