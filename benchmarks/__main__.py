"""`python -m benchmarks [--quick] [--only SECTIONS] [--out FILE.json]`, or `--gpu [--dry-run]`.

Runs the selected benchmarks one after another on the real CIFAR-10 (--data-dir, else
$CIFAR10_DIR), prints their tables on stdout (progress goes to stderr) and writes every figure,
with the machine, versions and load averages, to --out (default benchmarks/results.json;
benchmarks/results-quick.json with --quick, so a smoke run never overwrites real figures).
Run it on an otherwise idle machine: the figures are wall-clock speeds. `--gpu` runs
benchmarks.gpu's plan instead (one line and exit 2 without CUDA; `--dry-run` prints the plan).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

DEFAULT_THREADS = torch.get_num_threads()  # before anything sets it: the seed loop's count

from cifar_core.data import DataError, load_cifar10, resolve_data_dir  # noqa: E402
from sweep.cli import Parser  # noqa: E402 (one-line errors, exit 2)
from sweep.space import DEFAULT_SCALARS  # noqa: E402

from . import gpu, memory, report, scaling, sweep_overhead, throughput  # noqa: E402

SECTIONS = ("throughput", "overhead", "memory", "scaling", "growth", "tail")
HERE = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Plan:
    """The sizes one invocation runs (execution settings, never trial hyperparameters)."""

    images: int | None  # throughput training images; None = all 50 000
    repeats: int
    overhead_grid: dict
    overhead_epochs: int
    overhead_fraction: float
    memory_grid: dict
    memory_epochs: int
    memory_fraction: float
    scaling_epochs: int = 2  # the scaling grid: the overhead grid and data fraction, this long


FULL = Plan(images=None, repeats=1, overhead_grid=sweep_overhead.FULL_GRID,
            overhead_epochs=DEFAULT_SCALARS["epochs"], overhead_fraction=1.0,
            memory_grid=memory.FULL_GRID, memory_epochs=2, memory_fraction=1.0)
QUICK = Plan(images=2048, repeats=1, overhead_grid=sweep_overhead.QUICK_GRID,
             overhead_epochs=1, overhead_fraction=0.02,
             memory_grid=memory.FULL_GRID, memory_epochs=1, memory_fraction=0.05)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check, not figures")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma list of " + ", ".join(SECTIONS))
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: $CIFAR10_DIR, else ~/.cache/cifar10)")
    p.add_argument("--out", help="JSON file for every figure")
    p.add_argument("--images", type=int, help="cap the throughput epoch at N training images")
    p.add_argument("--data-fraction", type=float, help="the overhead grid's data fraction (1: all)")
    p.add_argument("--overhead-epochs", type=int,
                   help=f"epochs of each overhead-grid trial (default {DEFAULT_SCALARS['epochs']}, "
                        "the grid's; 1 with --quick)")
    p.add_argument("--repeats", type=int, help="throughput measurements per set-up (median; 1)")
    p.add_argument("--gpu", action="store_true",
                   help="measure this machine's GPU: single and fused img/s with and without "
                        "bf16 and cudnn.benchmark, trials per GPU, the full grid's wall time "
                        "(default --out benchmarks/results-gpu.json)")
    p.add_argument("--dry-run", action="store_true", help="with --gpu: print its plan, run nothing")
    return p


def plan_for(args, parser: argparse.ArgumentParser) -> Plan:
    """The --quick or full plan with the flags' overrides; a bad value is a one-line error."""
    for flag, value in (("--images", args.images), ("--repeats", args.repeats),
                        ("--overhead-epochs", args.overhead_epochs)):
        if value is not None and value < 1:
            parser.error(f"{flag}={value} is not allowed; use an integer >= 1")
    if args.data_fraction is not None and not 0 < args.data_fraction <= 1:
        parser.error(f"--data-fraction={args.data_fraction} is not allowed; use a number in (0, 1]")
    plan = QUICK if args.quick else FULL
    given = {"images": args.images, "overhead_fraction": args.data_fraction, "repeats": args.repeats,
             "overhead_epochs": args.overhead_epochs}
    return dataclasses.replace(plan, **{k: v for k, v in given.items() if v is not None})


def machine_info() -> dict:
    versions = {pkg: _version(pkg) for pkg in ("torchvision", "ray", "numpy", "pillow")}
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "torch": torch.__version__, "torch_default_threads": DEFAULT_THREADS, **versions,
            "load_average_start": os.getloadavg()}


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def run_section(name: str, plan: Plan, data, data_dir: str) -> dict:
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    log(f"== {name}")
    if name == "throughput":
        return throughput.measure_throughput(data, images=plan.images, seed_threads=DEFAULT_THREADS,
                                             repeats=plan.repeats, log=log)
    if name == "overhead":
        return sweep_overhead.measure_overhead(grid=plan.overhead_grid, data_dir=data_dir,
                                               epochs=plan.overhead_epochs,
                                               fraction=plan.overhead_fraction, log=log)
    if name == "tail":
        return scaling.measure_tail(epochs=1 if plan.images else 2, data_dir=data_dir, log=log)
    if name == "growth":
        return scaling.measure_growth(epochs=1, fraction=0.02, data_dir=data_dir, log=log)
    if name == "scaling":
        return scaling.measure_scaling(grid=plan.overhead_grid, epochs=plan.scaling_epochs,
                                       fraction=plan.overhead_fraction, data_dir=data_dir, log=log)
    return memory.measure_memory(grid=plan.memory_grid, epochs=plan.memory_epochs,
                                 fraction=plan.memory_fraction, data_dir=data_dir, log=log)


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if not only or set(only) - set(SECTIONS):
        parser.error(f"--only={args.only!r}: choose from {', '.join(SECTIONS)}")
    if args.gpu:
        return main_gpu(args)
    if args.dry_run:
        parser.error("--dry-run goes with --gpu (it prints the GPU plan)")
    plan, start = plan_for(args, parser), time.monotonic()
    out = Path(args.out) if args.out else HERE / ("results-quick.json" if args.quick else "results.json")
    data_dir, data = load_data(args.data_dir)
    if data is None:
        return 2
    results = {"command": shlex.join(["python", "-m", "benchmarks", *argv]), "quick": args.quick,
               "plan": dataclasses.asdict(plan), "data_dir": data_dir, "machine": machine_info()}
    for name in (s for s in SECTIONS if s in only):  # fixed order, whatever --only's order
        results[name] = run_section(name, plan, data, data_dir)
        if name == "scaling":
            results["scaling_speedup"] = results[name]["scaling_speedup"]
        write_json(results, out)  # after each section: a later failure keeps what was measured
    results["machine"]["load_average_end"] = os.getloadavg()
    results["seconds"] = time.monotonic() - start
    write_json(results, out)
    print(report.render(results), end="")
    print(f"results: {out}")
    return 0


def load_data(data_dir: str | None):
    """(the data dir, CIFAR-10 loaded from it), or (dir, None) after one error line."""
    data_dir = str(resolve_data_dir(data_dir))
    try:
        return data_dir, load_cifar10(data_dir)
    except DataError as err:
        print(f"python -m benchmarks: error: {err}", file=sys.stderr)
        return data_dir, None


def main_gpu(args) -> int:
    """--gpu: the plan (--dry-run), the refusal without CUDA, or the measurements."""
    if args.dry_run:
        print("python -m benchmarks --gpu runs, in one process, on the real CIFAR-10:")
        print("\n".join(gpu.PLAN))
        return 0
    if not torch.cuda.is_available():
        print(gpu.REFUSAL, file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else HERE / "results-gpu.json"
    data_dir, data = load_data(args.data_dir)
    if data is None:
        return 2
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    results = {"command": shlex.join(["python", "-m", "benchmarks", "--gpu"]),
               "data_dir": data_dir, "machine": machine_info(),
               "gpu": gpu.measure(data, data_dir=data_dir, log=log)}
    write_json(results, out)
    print(gpu.render(results["gpu"]), end="")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
