"""Scaling: does a second node finish the same grid sooner?

Runs the same `python -m sweep.grid` (the overhead benchmark's 16-configuration grid, fused as the
grid fuses them, `--max-concurrent 2`) twice, each time joining with `--address` a Ray cluster
this benchmark starts on 127.0.0.1 (ray.cluster_utils.Cluster, in a private RAY_TMPDIR, stopped
by Cluster.shutdown, which ends only the processes it started): (a) one node of 1 CPU, (b) a head
and a worker node of 1 CPU each. Prints both wall times (the sweep subprocess's, Python start-up
and data loading included), their ratio (`scaling_speedup`) and the Ray trials each node ran
(trials.csv's `node`). Run through `python -m benchmarks --only scaling`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter

from .sweep_overhead import FULL_GRID
from .sweeps import grid_argv, run_grid


def measure_scaling(*, grid: dict = FULL_GRID, epochs: int = 1, fraction: float = 1.0,
                    data_dir: str | None, log=print) -> dict:
    argv = grid_argv(**grid, epochs=epochs, fraction=fraction, max_concurrent=2, data_dir=data_dir)
    runs = {}
    for nodes in (1, 2):
        with loopback_cluster(nodes) as address:
            log(f"  {nodes} node(s) of 1 CPU at {address}: python -m sweep.grid {' '.join(argv)}")
            run = run_grid([*argv, "--address", address])
        ray_trials = {t["trial_id"].split("-m")[0]: t["node"] for t in run.trials}
        runs[nodes] = {"wall_seconds": run.wall_seconds,
                       "tune_fit_seconds": float(run.info.get("wall_seconds") or 0.0),
                       "configurations": len(run.trials), "ray_trials": len(ray_trials),
                       "ray_trials_per_node": dict(Counter(ray_trials.values()))}
        log(f"    wall {run.wall_seconds:.1f} s; Ray trials per node "
            f"{runs[nodes]['ray_trials_per_node']}")
    return {"argv": argv, "epochs": epochs, "data_fraction": fraction,
            "one_node": runs[1], "two_nodes": runs[2],
            "scaling_speedup": runs[1]["wall_seconds"] / runs[2]["wall_seconds"],
            "tune_fit_speedup": runs[1]["tune_fit_seconds"] / max(runs[2]["tune_fit_seconds"], 1e-9)}


class loopback_cluster:
    """A Ray cluster of `nodes` nodes with 1 CPU each on 127.0.0.1; yields its address."""

    def __init__(self, nodes: int):
        self.nodes = nodes

    def __enter__(self) -> str:
        from ray.cluster_utils import Cluster

        self.tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # Ray's socket paths must be short
        self.saved = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = self.tmp
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        for _ in range(self.nodes - 1):
            self.cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        self.cluster.wait_for_nodes()
        return self.cluster.address

    def __exit__(self, *exc):
        self.cluster.shutdown()
        if self.saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = self.saved
        shutil.rmtree(self.tmp, ignore_errors=True)
