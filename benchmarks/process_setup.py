"""Does each process setting of cifar_core.process.setup_process pay on this machine?

`python -m benchmarks.process_setup [--images N] [--repeats R]` measures, on the real CIFAR-10:
- flush-to-zero: a forward + backward pass of the reference net (1 thread) whose weights were
  scaled to 1e-20 (what an L2 penalty does to them), with subnormals kept vs flushed, and at normal
  scale (throughput.subnormal_steps; median of 5 steps);
- the malloc settings: one epoch of a 4-member stack trained off the main thread (as a Ray trial
  runs), in a fresh process each time, with glibc's defaults (CIFAR_CORE_ALLOCATOR=default) vs
  setup_process's settings (one arena, mmap threshold 32 MB, no trimming), alternating, R times
  each; median images/s and their ratio.
Prints one JSON object. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading

import torch

from cifar_core import TrialConfig, fit_fused, load_cifar10, setup_process, subset
from cifar_core.process import ALLOCATOR_ENV

from . import throughput


def _epoch_in_a_thread(arrays: dict, queue) -> None:
    from cifar_core import CifarData

    data = CifarData.from_numpy(arrays)
    cfgs = [TrialConfig(transform="augment+normalize", regulariser=r, optimiser=o, epochs=1)
            for r, o in (("none", "adam"), ("l2", "adam"), ("none", "sgd"), ("l2", "sgd"))]
    out = {}

    def run():
        setup_process(1)
        (results,) = fit_fused(cfgs, data, "cpu")
        out["ips"] = len(cfgs) * len(data.train_y) / results[0].train_seconds

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    queue.put(out["ips"])


def allocator_epoch(arrays: dict, tuned: bool) -> float:
    env = {ALLOCATOR_ENV: "" if tuned else "default", "MALLOC_ARENA_MAX": "1" if tuned else ""}
    saved = {k: os.environ.get(k) for k in env}
    for key, value in env.items():  # glibc reads MALLOC_ARENA_MAX when the process starts
        if value:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    try:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_epoch_in_a_thread, args=(arrays, queue))
        proc.start()
        ips = queue.get(timeout=1800)
        proc.join()
        return ips
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.process_setup")
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    data = load_cifar10(args.data_dir)
    data = subset(data, args.images / len(data.train_y), seed=0)
    data = dataclasses.replace(data, test_x=data.test_x[:1000], test_y=data.test_y[:1000])
    subnormal = throughput.subnormal_steps()
    arrays = data.to_numpy()
    runs = {"default": [], "tuned": []}
    for _ in range(args.repeats):
        for name in ("default", "tuned"):
            runs[name].append(allocator_epoch(arrays, tuned=name == "tuned"))
    medians = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({
        "cpu": torch.backends.cpu.get_cpu_capability(), "images": len(data.train_y),
        "flush_to_zero_ms": subnormal,
        "flush_to_zero_speedup": subnormal["kept"] / subnormal["flushed"],
        "allocator_images_per_second": runs, "allocator_median": medians,
        "allocator_speedup": medians["tuned"] / medians["default"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
