"""`python -m benchmarks --gpu`: what one GPU machine does with this sweep, measured in one run.

PLAN below is what it runs, in order (`--gpu --dry-run` prints it; the README's GPU section
quotes it). Every figure is member-images/s of training on the real CIFAR-10 (all 50 000
training images, batch 256, the baseline net on augment+normalize), the second of two epochs
(the first warms up cuDNN and the allocator); `trials per GPU` runs that many trials at once
as threads of one process, as sweep.plan measures --fuse auto. The figures, the best layout and
the full grid's wall time go to --out (default benchmarks/results-gpu.json). Without CUDA it
refuses in one line, exit 2. Nothing here has run on a GPU yet (none was lent to this project);
the tests run its plumbing on the CPU.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from cifar_core.config import TrialConfig
from cifar_core.data import CifarData

from .throughput import fused_configs

SIZES = (2, 4, 8, 16)  # fused stack sizes
AMPS = ("none", "bf16")
PLAN = (
    "1. one configuration (fit): fp32 and bf16, each with cudnn.benchmark off and on",
    "2. fused stacks of 2, 4, 8 and 16 configurations: fp32 and bf16, cudnn.benchmark on",
    "3. at the faster precision: stacks of 1, 2, 4, 8 and 16 x 1, 2 or 4 trials per GPU "
    "(sweep.plan, as --fuse auto measures it): the layout with the most member-images/s",
    "4. the full default grid (python -m sweep.grid: 96 configurations x 10 epochs) with that "
    "layout and precision: its wall time",
)
REFUSAL = ("python -m benchmarks --gpu: error: CUDA is not available here "
           "(torch.cuda.is_available() is False); run it on a machine with an NVIDIA GPU")


def configs(members: int, *, batch_size: int = 256) -> list[TrialConfig]:
    """`members` configurations of one stack: the default grid's augment+normalize group of the
    baseline net (benchmarks.throughput.fused_configs), at `batch_size`."""
    return [dataclasses.replace(c, batch_size=batch_size)
            for c in fused_configs("augment+normalize", members)]


def epoch_rate(cfgs: list[TrialConfig], data: CifarData, device: str, *, amp: str,
               cudnn_benchmark: bool) -> float:
    """Member-images/s of the second epoch of fit_fused(cfgs) (the first warms up)."""
    from cifar_core.train import fit_fused

    torch.backends.cudnn.benchmark = cudnn_benchmark
    epochs = fit_fused([dataclasses.replace(c, epochs=2) for c in cfgs], data, device, amp=amp)
    next(epochs)
    return sum(r.images_per_second for r in next(epochs) if r is not None)


def grid_argv(best: dict) -> list[str]:
    """Step 4's sweep: the default grid at the best layout and precision."""
    return ["--fuse", str(best["fuse"]), "--gpus-per-trial", f"{1 / best['trials_per_gpu']:g}",
            "--amp", best["amp"], "--max-failures", "0"]


def measure(data: CifarData, *, device: str = "cuda", sizes=SIZES, batch_size: int = 256,
            layouts=None, grid: bool = True, data_dir: str | None = None, log=print) -> dict:
    """Run PLAN on `device` (the tests run it on the CPU with tiny data and no grid)."""
    from sweep import plan as planning

    started = time.monotonic()
    out = {"device": torch.cuda.get_device_name() if device == "cuda" else device, "plan": PLAN}
    log(PLAN[0])
    one = configs(1, batch_size=batch_size)
    out["single"] = {f"{amp}, cudnn.benchmark {'on' if bench else 'off'}":
                     epoch_rate(one, data, device, amp=amp, cudnn_benchmark=bench)
                     for amp in AMPS for bench in (False, True)}
    log(_lines(out["single"]))
    log(PLAN[1])
    out["stacks"] = {f"x{m}, {amp}": epoch_rate(configs(m, batch_size=batch_size), data, device,
                                                amp=amp, cudnn_benchmark=True)
                     for m in sizes for amp in AMPS}
    log(_lines(out["stacks"]))
    by_amp = {amp: max(v for k, v in out["stacks"].items() if k.endswith(amp)) for amp in AMPS}
    amp = max(by_amp, key=by_amp.get)
    log(PLAN[2] + f" [{amp}]")
    chosen = planning.choose(configs(max(sizes), batch_size=batch_size), data, device, amp=amp,
                             layouts=layouts or planning.candidates(device, planning.usable_cpus()),
                             log=log)
    out["sharing"] = chosen
    out["best"] = {"fuse": chosen["fuse"], "trials_per_gpu": chosen["slots"], "amp": amp,
                   "member_images_per_second": chosen["member_images_per_second"]}
    if grid:
        from .sweeps import run_grid

        argv = grid_argv(out["best"]) + (["--data-dir", data_dir] if data_dir else [])
        log(PLAN[3] + f": python -m sweep.grid {' '.join(argv)}")
        run = run_grid(argv, timeout_s=3 * 3600)
        out["grid"] = {"argv": argv, "wall_seconds": run.wall_seconds,
                       "tune_fit_seconds": float(run.info.get("wall_seconds") or 0.0),
                       "configurations": len(run.trials)}
        log(f"  wall {run.wall_seconds:.1f} s")
    out["seconds"] = time.monotonic() - started
    return out


def render(out: dict) -> str:
    best = out["best"]
    lines = [f"GPU: {out['device']}", "one configuration, img/s:", _lines(out["single"]),
             "fused stacks, member-img/s:", _lines(out["stacks"]),
             f"best layout: --fuse {best['fuse']}, {best['trials_per_gpu']} trial(s) per GPU "
             f"(--gpus-per-trial {1 / best['trials_per_gpu']:g}), --amp {best['amp']}: "
             f"{best['member_images_per_second']:,.0f} member-img/s"]
    if "grid" in out:
        g = out["grid"]
        lines.append(f"full default grid ({g['configurations']} configurations) at that layout: "
                     f"{g['wall_seconds']:.1f} s wall (python -m sweep.grid {' '.join(g['argv'])})")
    return "\n".join(lines) + "\n"


def _lines(rates: dict) -> str:
    return "\n".join(f"  {name}: {rate:,.0f}" for name, rate in rates.items())
