"""Process set-up for training, applied once by the entry points (never by the training loop).

`setup_process(threads)` sets torch's thread count, flush-to-zero for subnormal floats and
glibc's malloc settings for the calling thread and process: `python -m cifar_core`, the Ray
trainable (sweep.trainable, in the trial's own thread) and the benchmarks call it, so a library
user keeps full control of their process. Each setting is kept because benchmarks/ shows it pays
on CPU (python -m benchmarks: the denormal and allocator rows).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

import torch


def setup_process(threads: int | None = None, device: str = "cpu") -> dict:
    """Apply every training setting to this thread and process; returns what was applied. The
    malloc settings are for CPU training (activations in host memory): skipped for cuda."""
    applied = {"flush_denormals": flush_denormals()}  # first: threads started below inherit it
    if threads:
        torch.set_num_threads(threads)
    cpu = torch.device(device).type == "cpu"
    applied.update(threads=torch.get_num_threads(), allocator=cpu and tune_allocator())
    return applied


ALLOCATOR_ENV = "CIFAR_CORE_ALLOCATOR"  # "default" leaves glibc's malloc settings alone
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def allocator_opted_out() -> bool:
    """CIFAR_CORE_ALLOCATOR=default: leave glibc's malloc alone, in this process and its workers."""
    return os.environ.get(ALLOCATOR_ENV, "") == "default"


def allocator_process_env() -> dict[str, str]:
    """Environment for processes that train off their main thread (a Ray Tune trial runs in a
    thread): glibc reads it when the process starts, so every thread allocates from the main heap
    that tune_allocator keeps. sweep gives it to its Ray workers; empty when opted out."""
    return {} if allocator_opted_out() else {"MALLOC_ARENA_MAX": "1"}


@functools.cache
def tune_allocator() -> bool:
    """Keep freed activation buffers in the process instead of handing them back to the kernel.

    A training step on CPU allocates and frees the same few large activation tensors (up to
    ~22 MB) every batch. glibc serves those by mmap and returns them on free, so every step
    page-faults its activations in again (aten::fill_ of a fresh buffer ran at ~2.5 GB/s). With
    the mmap threshold at its 32 MB maximum and trimming off, they are reused from the heap;
    benchmarks/ measures the effect. Once per process, glibc only; True when applied. The
    process keeps its peak heap (tens of MB for these nets) until it exits.

    That holds for the main heap only. A thread other than the main one gets its own glibc arena
    made of 64 MB sub-heaps that are unmapped when they empty, so a step run off the main thread
    faulted its pages back in every step (benchmarks/ times it). glibc fixes a
    thread's arena at its first malloc, so a process that trains off its main thread (a Ray
    worker) needs allocator_process_env() in its environment from the start.
    """
    if allocator_opted_out() or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
                    and libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def flush_denormals() -> bool:
    """Treat subnormal floats as zero on this CPU thread (flush-to-zero + denormals-are-zero).

    Weights that an L1/L2 penalty or a tiny learning rate drive towards zero end up multiplied
    into subnormal products (< 1.2e-38), which x86 CPUs compute many times slower; benchmarks/
    times a forward + backward pass with 1e-20-scaled weights with and without it. Values
    that small are below float32's normal range and carry no signal for these nets. Returns
    False where the CPU has no such mode. The mode is per thread and new threads copy it from
    their creator, so call it before the calling thread's first multi-threaded op
    (setup_process does).
    """
    return torch.set_flush_denormal(True)
