"""Train throughput: the seed-style loop against `cifar_core.train.fit`, same config, same images.

Every set-up trains the baseline net (Adam lr 1e-3, batch 256, final ReLU) for one epoch over the
same training images and reports train images / train seconds (evaluation is not timed; the test
split is cut to EVAL_IMAGES so it costs little). Set-ups per transform level:

* seed: `benchmarks.seed_loop` (PIL + per-image torchvision transforms + DataLoader, torch's
  default thread count);
* project: `fit(..., channels_last=C)` after `setup_process(T)` for T in THREADS and C in (True, False);
* concurrent: CONCURRENT processes (spawn) each running `fit` at one thread at once, released
  together by a barrier; their img/s summed. This answers "threads per trial or trials at once".
  Also with glibc's default malloc settings (cifar_core.process.tune_allocator off), to show what
  keeping activation buffers in the heap is worth;
* fused: CONCURRENT processes each training FUSE configurations of one fused stack
  (`fit_fused`, the grid's `--fuse N`): the members differ in regulariser, optimiser and lr like a
  grid's group and share the seed, so they draw their batches once. img/s counts member-images
  (M configs x images), the work the grid needs done. The grid's fallback stack size
  (sweep.grid.FUSE, listed until --fuse auto has measured) also runs as one process with
  max(THREADS) threads: threads vs trials for the default set-up.

Two set-up figures ride along: the evaluation pass of a fused stack at EVAL_BATCHES images a batch
(what picked cifar_core.train.EVAL_BATCH), and a forward + backward pass whose weights are so small
that its products are subnormal floats, with the CPU's flush-to-zero off and on (what
cifar_core.process.flush_denormals is worth once an L2 penalty has decayed the weights).

Run through `python -m benchmarks --only throughput`; `measure_throughput` is the entry point.
"""
from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import statistics
import time
import traceback
from queue import Empty

import torch
import torch.nn.functional as F

from cifar_core.augment import train_batch
from cifar_core.config import TrialConfig
from cifar_core.data import CifarData
from cifar_core.models import build_model
from cifar_core import train
from cifar_core.process import ALLOCATOR_ENV, setup_process
from cifar_core.train import fit, fit_fused
from sweep.grid import FUSE as GRID_FUSE
from sweep.space import DEFAULT_GRID, expand_grid

from .seed_loop import seed_epoch

TRANSFORMS = ("none", "augment+normalize")
THREADS = (1, 2)
CONCURRENT = 2
FUSE = (2, 4, 6)
AUGMENT_CHUNKS = (128, 256, 1024, 4096)
EVAL_BATCHES = (1000, 250)
SUBNORMAL_SCALE = 1e-20  # weights x this: layer-2 products ~1e-40, below float32's normal range
EVAL_IMAGES = 1000
_CHILD_TIMEOUT_S = 3600


def bench_config(transform: str) -> TrialConfig:
    """The one trial both loops train: the seed's baseline set-up, one epoch."""
    return TrialConfig(transform=transform, model="baseline", regulariser="none", optimiser="adam",
                       lr=1e-3, batch_size=256, final_relu=True, epochs=1, data_fraction=1.0, seed=0)


def cut(data: CifarData, images: int | None, *, seed: int = 0) -> CifarData:
    """`images` training images drawn at random (seeded; all when None) and EVAL_IMAGES test ones."""
    n = len(data.train_y) if images is None else min(images, len(data.train_y))
    keep = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))[:n]
    keep = keep.sort().values
    return CifarData(data.train_x[keep], data.train_y[keep],
                     data.test_x[:EVAL_IMAGES], data.test_y[:EVAL_IMAGES])


def fused_configs(transform: str, members: int) -> list[TrialConfig]:
    """`members` configs of one fused stack: the default grid's group for this transform and the
    baseline net (regulariser x optimiser x lr, one seed), cycled when more are asked for."""
    group = expand_grid(dict(DEFAULT_GRID, transform=[transform], model=["baseline"]), seeds=1,
                        epochs=1, batch_size=bench_config(transform).batch_size)
    return [TrialConfig.from_dict(group[k % len(group)]) for k in range(members)]


def project_epoch(data: CifarData, transform: str, *, threads: int, channels_last: bool,
                  fuse: int = 1) -> dict:
    """One epoch of `fit` (or of `fit_fused` with `fuse` members) at this many threads and layout;
    images count member-images."""
    setup_process(threads)  # as the entry points do
    if fuse == 1:
        (result,) = fit(bench_config(transform), data, "cpu", channels_last=channels_last)
    else:
        (results,) = fit_fused(fused_configs(transform, fuse), data, "cpu",
                               channels_last=channels_last)
        result = results[0]
    images = len(data.train_y) * fuse
    return {"images": images, "train_seconds": result.train_seconds,
            "images_per_second": images / result.train_seconds}


def concurrent_epochs(data: CifarData, transform: str, *, trials: int = CONCURRENT,
                      channels_last: bool = True, fuse: int = 1, allocator: bool = True) -> dict:
    """`trials` 1-thread fits (fused stacks of `fuse`) in separate processes started together;
    img/s summed over them. allocator=False keeps glibc's default malloc settings."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(trials), ctx.Queue()
    arrays = data.to_numpy()
    procs = [ctx.Process(target=_child, args=(arrays, transform, channels_last, fuse, allocator,
                                              barrier, queue))
             for _ in range(trials)]
    for proc in procs:
        proc.start()
    try:
        replies = _replies(queue, procs)
    finally:
        for proc in procs:
            proc.join(timeout=60)
    errors = [text for status, text in replies if status != "ok"]
    if errors:
        raise RuntimeError(f"a concurrent trial failed:\n{errors[0]}")
    per_trial = [value for _, value in replies]
    return {"images": len(data.train_y) * trials * fuse, "per_trial": per_trial,
            "images_per_second": sum(per_trial)}


def _replies(queue, procs) -> list[tuple[str, object]]:
    """One reply per child; a child that died without replying is an error, not a hang."""
    replies = []
    while len(replies) < len(procs):
        try:
            replies.append(queue.get(timeout=1.0))
        except Empty:  # nothing yet: check that the children still live
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a concurrent trial died with exit code {dead[0]}") from None
    return replies


def _child(arrays: dict, transform: str, channels_last: bool, fuse: int, allocator: bool,
           barrier, queue) -> None:
    try:
        if not allocator:
            os.environ[ALLOCATOR_ENV] = "default"
        data = CifarData.from_numpy(arrays)
        torch.set_num_threads(1)
        barrier.wait(timeout=_CHILD_TIMEOUT_S)
        result = project_epoch(data, transform, threads=1, channels_last=channels_last, fuse=fuse)
        queue.put(("ok", result["images_per_second"]))
    except BaseException:  # noqa: BLE001 - the parent reports it
        queue.put(("error", traceback.format_exc()))


@dataclasses.dataclass(frozen=True)
class SetUp:
    """One row of the comparison: who trains, with how many threads, layout and processes."""

    name: str
    kind: str  # seed | project | concurrent
    threads: int
    channels_last: bool | None = None
    trials: int = 1
    fuse: int = 1  # configs per fused stack (member-images counted)
    allocator: bool = True  # cifar_core.process.tune_allocator applied


def setups(seed_threads: int, fuse=FUSE) -> list[SetUp]:
    rows = [SetUp(f"seed loop (DataLoader, {seed_threads} thr)", "seed", seed_threads)]
    for threads in THREADS:
        for cl in (True, False):
            layout = "channels_last" if cl else "NCHW"
            rows.append(SetUp(f"fit, {threads} thr, {layout}", "project", threads, cl))
    rows.append(SetUp(f"fit, {CONCURRENT} trials x 1 thr (sum)", "concurrent", 1, True, CONCURRENT))
    rows.append(SetUp(f"fit, {CONCURRENT} trials x 1 thr, glibc malloc", "concurrent", 1, True,
                      CONCURRENT, allocator=False))
    for m in fuse:
        rows.append(SetUp(f"fused x{m}, {CONCURRENT} trials x 1 thr", "concurrent", 1, True,
                          CONCURRENT, fuse=m))
    m, threads = GRID_FUSE, max(THREADS)
    rows.append(SetUp(f"fused x{m}, 1 trial x {threads} thr", "project", threads, True, fuse=m))
    return rows


def run_setup(setup: SetUp, data: CifarData, transform: str) -> dict:
    """One measurement of one set-up (the seed loop runs at its thread count, restored after)."""
    if setup.kind == "seed":
        before = torch.get_num_threads()
        torch.set_num_threads(setup.threads)
        try:
            return seed_epoch(data, transform)
        finally:
            torch.set_num_threads(before)
    if setup.kind == "project":
        return project_epoch(data, transform, threads=setup.threads,
                             channels_last=setup.channels_last, fuse=setup.fuse)
    return concurrent_epochs(data, transform, trials=setup.trials, channels_last=setup.channels_last,
                             fuse=setup.fuse, allocator=setup.allocator)


def measure_throughput(data: CifarData, *, images: int | None, seed_threads: int,
                       transforms=TRANSFORMS, repeats: int = 1, fuse=FUSE, log=print) -> dict:
    """Every set-up x transform, `repeats` times (interleaved); medians, ratios and the winner."""
    test_split, data = data, cut(data, images)  # the evaluation figure uses the whole test split
    plan = [(t, s) for t in transforms for s in setups(seed_threads, fuse)]
    runs: dict[tuple, list[float]] = {key: [] for key in plan}
    for r in range(repeats):
        for transform, setup in plan:
            value = run_setup(setup, data, transform)["images_per_second"]
            runs[(transform, setup)].append(value)
            log(f"  [{r + 1}/{repeats}] {transform:<18} {setup.name:<34} {value:9.0f} img/s")
    rows = [_row(transform, setup, runs) for transform, setup in plan]
    return {"images": len(data.train_y), "repeats": repeats, "seed_threads": seed_threads,
            "rows": rows, "winners": {t: winner(rows, t) for t in transforms},
            "augment_chunks": augment_chunks(data), "eval_batches": eval_batches(test_split),
            "subnormal_steps": subnormal_steps()}


def augment_chunks(data: CifarData, chunks=AUGMENT_CHUNKS, images: int = 8192) -> dict[int, float]:
    """augment+normalize img/s (1 thread) when the augmentation pass takes `chunk` images at a
    time: is it worth augmenting ahead in bigger chunks than the training batch?"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    x, generator, out = data.train_x[:images], torch.Generator().manual_seed(0), {}
    try:
        for chunk in chunks:
            train_batch(x[:chunk], "augment+normalize", generator)  # warm-up
            start = time.perf_counter()
            for i in range(0, len(x), chunk):
                train_batch(x[i:i + chunk], "augment+normalize", generator)
            out[chunk] = len(x) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return out


def eval_batches(data: CifarData, batches=EVAL_BATCHES, members: int = 4, repeats: int = 3
                 ) -> dict[int, float]:
    """Seconds (best of `repeats`, 1 thread) to evaluate a fused stack of `members` on the test
    split, `batch` images at a time: a smaller batch keeps its activations in cache."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfgs = fused_configs("augment+normalize", members)
    state = train.FusedState.create(cfgs, torch.device("cpu"))
    out = {}
    try:
        for batch in batches:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                train._evaluate(state, cfgs[0].transform, data.test_x, data.test_y, list(range(members)),
                                torch.channels_last, contextlib.nullcontext, batch=batch)
                times.append(time.perf_counter() - start)
            out[batch] = min(times)
    finally:
        torch.set_num_threads(before)
    return out


def subnormal_steps(scale: float = SUBNORMAL_SCALE, steps: int = 5, batch: int = 256
                    ) -> dict[str, float]:
    """Median ms of a forward + backward pass (seed net, 1 thread) with every weight multiplied by
    `scale`, with flush-to-zero off ("kept") and on ("flushed"), and at normal scale ("normal").
    No optimiser step, so the weights stay where they were put."""
    before_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x, y = x.contiguous(memory_format=torch.channels_last), torch.arange(batch) % 10
    out = {}
    try:
        for name, flush, factor in (("kept", False, scale), ("flushed", True, scale),
                                    ("normal", True, 1.0)):
            torch.set_flush_denormal(flush)
            torch.manual_seed(0)
            model = build_model(bench_config("none")).to(memory_format=torch.channels_last)
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(factor)
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                times.append(time.perf_counter() - start)
            out[name] = 1000 * statistics.median(times)
    finally:
        torch.set_flush_denormal(True)  # as setup_process leaves it
        torch.set_num_threads(before_threads)
    return out


def _row(transform: str, setup: SetUp, runs: dict) -> dict:
    median = statistics.median(runs[(transform, setup)])
    seed = next(v for (t, s), v in runs.items() if t == transform and s.kind == "seed")
    return {"transform": transform, **dataclasses.asdict(setup), "images_per_second": median,
            "runs": runs[(transform, setup)], "vs_seed": median / statistics.median(seed)}


def winner(rows: list[dict], transform: str) -> dict:
    """One trial with the most threads (best layout) against concurrent 1-thread trials, for
    single configurations and for the grid's fused stacks (when both of those rows ran)."""
    mine = [r for r in rows if r["transform"] == transform]
    solo = [r for r in mine if r["fuse"] == 1]
    threaded = max((r for r in solo if r["kind"] == "project" and r["threads"] == max(THREADS)),
                   key=lambda r: r["images_per_second"])
    together = next(r for r in solo if r["kind"] == "concurrent")
    best = max(threaded, together, key=lambda r: r["images_per_second"])
    overall = max((r for r in mine if r["kind"] != "seed"), key=lambda r: r["images_per_second"])
    fastest = max((r for r in solo if r["trials"] == 1), key=lambda r: r["images_per_second"])
    fused = {}
    stacked = {r["kind"]: r for r in mine if r["fuse"] == GRID_FUSE}
    if {"project", "concurrent"} <= set(stacked):
        one, two = stacked["project"], stacked["concurrent"]
        fused = {"fused_threaded": one["name"], "fused_concurrent": two["name"],
                 "fused_winner": max(one, two, key=lambda r: r["images_per_second"])["name"],
                 "fused_concurrent_over_threaded":
                     two["images_per_second"] / one["images_per_second"]}
    return {"threads": max(THREADS), "threads_per_trial": threaded["name"],
            "concurrent_trials": together["name"], "winner": best["name"],
            "fastest_single_trial": fastest["name"],
            "concurrent_over_threaded": together["images_per_second"] / threaded["images_per_second"],
            "best_set_up": overall["name"], "best_vs_seed": overall["vs_seed"], **fused}
