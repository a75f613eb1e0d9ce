"""The one loop against the plain per-model loop it replaced: one configuration's throughput.

`python -m benchmarks.one_loop [--images N] [--repeats R] [--transform T] [--model M]` trains one
epoch of the same configuration on the same real CIFAR-10 images with `cifar_core.fit` (a stack
of one, cifar_core.train) and with tests/reference_loop.py's `reference_fit` (the plain loop
`fit` was before), alternating, R times each, one thread, after cifar_core.process.setup_process;
prints the median images/s of each, their ratio, and the largest metric gap between the two.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import torch

from cifar_core import TrialConfig, fit, load_cifar10, setup_process, subset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference_loop import reference_fit  # noqa: E402  (the plain loop lives beside its tests)


def epoch(trainer, cfg: TrialConfig, data) -> tuple[float, dict]:
    (result,) = trainer(cfg, data, "cpu")
    return result.images_per_second, result.to_dict()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.one_loop")
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--transform", default="augment+normalize")
    p.add_argument("--model", default="dropout")
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    data = load_cifar10(args.data_dir)
    data = subset(data, args.images / len(data.train_y), seed=0)
    data = dataclasses.replace(data, test_x=data.test_x[:2000], test_y=data.test_y[:2000])
    setup_process(1)
    cfg = TrialConfig(transform=args.transform, model=args.model, epochs=1)
    speeds = {"fit (stack of one)": [], "reference (plain loop)": []}
    metrics = {}
    for _ in range(args.repeats):
        for name, trainer in (("fit (stack of one)", fit), ("reference (plain loop)", reference_fit)):
            speed, metrics[name] = epoch(trainer, cfg, data)
            speeds[name].append(speed)
    medians = {name: statistics.median(v) for name, v in speeds.items()}
    a, b = metrics.values()
    gap = max(abs(a[k] - b[k]) for k in ("train_loss", "test_loss", "train_acc", "test_acc"))
    out = {"cpu": torch.backends.cpu.get_cpu_capability(), "images": len(data.train_y),
           "config": dataclasses.asdict(cfg), "images_per_second": speeds,
           "median_images_per_second": medians,
           "ratio_fit_over_reference": medians["fit (stack of one)"] / medians["reference (plain loop)"],
           "largest_metric_gap": gap}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
