"""`--fuse auto`: how many configurations one Ray trial trains as a stack, and how many torch
threads each trial gets (on a GPU: how many trials share it), measured on this machine.

The fastest layout differs between machines (x4 stacks won on one AMD EPYC, x6 on an Intel Xeon,
benchmarks/), so `choose` times the real training step (cifar_core.fit_fused, one warm-up epoch
then one timed epoch of STEPS batches) for every candidate layout, with as many trials training
at once as the layout puts on the machine, and keeps the one that trains the most
member-images/s in all. A layout within TIE of the best with a smaller stack wins the tie:
smaller stacks split a grid into more, shorter Ray trials, which balance better at its end.

The choice is cached per machine fingerprint (CPU model, usable cores, torch and its CPU
capability, GPU model) and per step shape (batch size, memory format, amp) in
$CIFAR_SWEEP_CACHE/plans.json (default ~/.cache/cifar-sweep); delete the file to measure again.
Written by hand: Ray Tune places trials but does not size them. Ray-free.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cifar_core.config import TrialConfig
from cifar_core.data import CifarData

from .runfolder import SweepError

SIZES_CPU = (1, 2, 4, 6, 8)  # stack sizes tried on CPU
SIZES_GPU = (1, 2, 4, 8, 16)  # ... and on a GPU, where a stack fills the device better
SHARING_GPU = (1, 2, 4)  # trials sharing one GPU
STEPS = 3  # training batches per timed epoch
REPEATS = 3  # timed epochs per candidate (median), after one untimed epoch
TIE = 0.03  # layouts within 3% of the best count as equal (the smaller stack is taken)
CACHE_ENV = "CIFAR_SWEEP_CACHE"


@dataclass(frozen=True)
class Layout:
    """How trials run: `fuse` configurations per Ray trial, `threads` torch threads each,
    `slots` trials at once on the machine (CPU: cores // threads; GPU: trials per GPU)."""

    fuse: int
    threads: int
    slots: int

    def describe(self, device: str = "cpu") -> str:
        at_once = (f"{self.slots} trials per GPU" if device == "cuda"
                   else f"{self.threads} thread{'s' * (self.threads > 1)} each, {self.slots} at once")
        return f"{self.fuse} configuration{'s' * (self.fuse > 1)} per Ray trial, {at_once}"


def candidates(device: str, cpus: int) -> list[Layout]:
    """The layouts `choose` measures: every stack size at 1 thread per trial (cores trials at
    once) and at all cores per trial (one at a time); on a GPU, stack sizes x trials per GPU."""
    if device == "cuda":
        return [Layout(s, 1, k) for s in SIZES_GPU for k in SHARING_GPU]
    threads = sorted({1, max(1, cpus)})
    return [Layout(s, t, max(1, cpus // t)) for s in SIZES_CPU for t in threads]


def fingerprint(device: str) -> dict:
    """What makes a measured layout valid elsewhere: the same CPU, cores, torch build and GPU."""
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    return {"cpu": cpu_model(), "cpus": usable_cpus(), "machine": platform.machine(),
            "torch": torch.__version__, "capability": torch.backends.cpu.get_cpu_capability(),
            "gpu": gpu}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cache_path() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "cifar-sweep")
    return Path(root) / "plans.json"


def cache_key(device: str, *, batch_size: int, channels_last: bool, amp: str | None) -> str:
    shape = {"batch_size": batch_size, "channels_last": channels_last, "amp": amp or "none"}
    text = json.dumps({**fingerprint(device), **shape}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(key: str) -> dict | None:
    try:
        return json.loads(cache_path().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def store(key: str, plan: dict) -> None:
    """Add `plan` to the cache (a damaged or unwritable cache is replaced or skipped: it only
    saves a few seconds)."""
    path = cache_path()
    try:
        plans = json.loads(path.read_text()) if path.exists() else {}
        plans = plans if isinstance(plans, dict) else {}
    except (OSError, ValueError):
        plans = {}
    plans[key] = plan
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(plans, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass


def representative(cfgs: list[TrialConfig], fuse: int) -> list[TrialConfig]:
    """`fuse` members of the sweep's largest fusable group (cycled when it is smaller), trained
    on all data for two epochs (warm-up + timed), as the timing needs."""
    from cifar_core.config import SHARED

    groups: dict[tuple, list[TrialConfig]] = {}
    for cfg in cfgs:
        groups.setdefault(tuple(getattr(cfg, k) for k in SHARED), []).append(cfg)
    group = max(groups.values(), key=len)
    return [dataclasses.replace(group[i % len(group)], epochs=2, data_fraction=1.0)
            for i in range(fuse)]


def measure(layout: Layout, cfgs: list[TrialConfig], data: CifarData, device: str, *,
            steps: int = STEPS, repeats: int = REPEATS, channels_last: bool = True,
            amp: str | None = None) -> float:
    """Member-images/s of `layout` on this machine: layout.slots trials at once (threads of
    this process, as a Ray worker runs its trial in a thread), each training a stack of
    layout.fuse members of `cfgs` with layout.threads torch threads; one untimed epoch of
    `steps` batches, then `repeats` timed ones that every trial starts together. The median over
    the repeats of the trials' summed rates."""
    from cifar_core.process import setup_process
    from cifar_core.train import fit_fused

    members = [dataclasses.replace(c, epochs=1 + repeats) for c in representative(cfgs, layout.fuse)]
    n = min(len(data.train_y), steps * members[0].batch_size)
    cut = CifarData(data.train_x[:n], data.train_y[:n], data.test_x[:100], data.test_y[:100])
    together = threading.Barrier(layout.slots)
    rates, errors = [[0.0] * layout.slots for _ in range(repeats)], []

    def trial(i: int) -> None:
        try:
            setup_process(layout.threads, device)  # per thread, as the trainable does it
            epochs = fit_fused(members, cut, device, channels_last=channels_last, amp=amp)
            next(epochs)  # warm-up: allocations, kernel choice, caches
            for r in range(repeats):
                together.wait()
                rates[r][i] = sum(m.images_per_second for m in next(epochs) if m is not None)
        except Exception as err:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(err)
            together.abort()

    workers = [threading.Thread(target=trial, args=(i,)) for i in range(layout.slots)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    failed = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if failed:
        raise failed[0]
    return statistics.median(sum(r) for r in rates)


def choose(cfgs: list[TrialConfig], data: CifarData, device: str = "cpu", *,
           channels_last: bool = True, amp: str | None = None, steps: int = STEPS,
           repeats: int = REPEATS, layouts: list[Layout] | None = None, log=None) -> dict:
    """Measure every candidate layout in this process and return the plan: the chosen
    {"fuse", "threads", "slots"}, its "member_images_per_second", every layout's "rates", the
    "seconds" it took, the "device" and the machine's "fingerprint"."""
    started = time.perf_counter()
    layouts = layouts or candidates(device, usable_cpus())
    rates = {}
    for layout in layouts:
        rates[layout] = measure(layout, cfgs, data, device, steps=steps, repeats=repeats,
                                channels_last=channels_last, amp=amp)
        if log:
            log(f"  {layout.describe(device)}: {rates[layout]:,.0f} member-images/s")
    best = max(rates.values())
    near = [lay for lay in layouts if rates[lay] >= (1 - TIE) * best]
    pick = min(near, key=lambda lay: (lay.fuse, lay.threads))
    return {**dataclasses.asdict(pick), "device": device,
            "member_images_per_second": round(rates[pick], 1),
            "rates": {f"fuse {lay.fuse}, {lay.threads} thread(s), {lay.slots} at once": round(r, 1)
                      for lay, r in rates.items()},
            "seconds": round(time.perf_counter() - started, 2), "fingerprint": fingerprint(device),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def plan_for(cfgs: list[TrialConfig], data_dir: str | None, device: str, *, channels_last: bool,
             amp: str | None, log=print) -> dict:
    """The cached plan for this machine and step shape, else one measured by `choose` in a
    fresh process set up like a Ray worker (its malloc environment, no other threads), then
    cached. The plan carries "source" ("cached" or "measured") and "cache" (the file)."""
    key = cache_key(device, batch_size=cfgs[0].batch_size, channels_last=channels_last, amp=amp)
    plan = cached(key)
    if plan is not None:
        return {**plan, "source": "cached", "cache": str(cache_path())}
    log(f"--fuse auto: timing stack sizes and threads on this machine ({device}), once; "
        f"cached in {cache_path()}")
    from cifar_core.process import allocator_process_env

    request = {"configs": [c.to_dict() for c in cfgs], "data_dir": data_dir, "device": device,
               "channels_last": channels_last, "amp": amp}
    done = subprocess.run([sys.executable, "-m", "sweep.plan"], input=json.dumps(request),
                          capture_output=True, text=True,
                          env={**os.environ, **allocator_process_env()})
    for line in done.stderr.splitlines():
        log(line)
    if done.returncode != 0:
        raise SweepError(f"--fuse auto: the timing process failed (exit {done.returncode}); "
                         "give --fuse N to skip it")
    plan = json.loads(done.stdout)
    store(key, plan)
    return {**plan, "source": "measured", "cache": str(cache_path())}


def main() -> int:
    """The timing process of plan_for: a JSON request on stdin, the plan as JSON on stdout."""
    from cifar_core.data import load_cifar10

    request = json.load(sys.stdin)
    cfgs = [TrialConfig.from_dict(c) for c in request["configs"]]
    data = load_cifar10(request["data_dir"])
    plan = choose(cfgs, data, request["device"], channels_last=request["channels_last"],
                  amp=request["amp"], log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
