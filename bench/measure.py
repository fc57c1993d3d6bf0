"""How a figure is timed, in one place.

CPU: pytest-benchmark, a fixed number of rounds after two warm-up calls (the first compiles, the
second sizes the rounds); the figure is its median.
CUDA: ``triton.testing.do_bench``: CUDA events, warmed up, L2 flushed before each call, median of
at least ``GPU_MIN_REPS`` calls.
pytest-benchmark then only runs the function once more (the GPU check passes
``--benchmark-disable``); its host-clock figure is never used on a GPU.
Many implementations of one case at once (the libraries suite): on a CPU, one call of each in
turn, round after round, so that the load of a shared machine falls on all of them alike; the
median of each. On a GPU, do_bench of each, and the peak memory a call allocates.
"""

from __future__ import annotations

import os
import time
from typing import Callable

import torch

ON_CUDA = torch.cuda.is_available()
# CPU seconds to spend timing one benchmark after its warm-up: enough rounds for a stable median.
CPU_SECONDS = float(os.environ.get("SNN_BENCH_CPU_SECONDS", "0.3"))
CPU_ROUNDS = (3, 50)
GPU_REP_MS, GPU_MIN_REPS = 25, 10  # short kernels: ~25 ms of calls; long ones (eager peers): 10 calls


def median_seconds(benchmark, fn, cpu_seconds: float = CPU_SECONDS) -> float | None:
    """Median seconds of one call of fn; None where pytest-benchmark is disabled on a CPU."""
    if ON_CUDA:
        from triton.testing import do_bench

        benchmark.extra_info["timer"] = "cuda-events: triton.testing.do_bench median"
        benchmark.pedantic(fn, rounds=1, iterations=1)
        one_call_ms = elapsed_seconds(fn) * 1e3  # do_bench repeats for `rep` ms: size it for GPU_MIN_REPS
        return do_bench(fn, warmup=5, rep=max(GPU_REP_MS, GPU_MIN_REPS * one_call_ms), return_mode="median") / 1e3
    fn()
    start = time.perf_counter()
    fn()
    one_call = time.perf_counter() - start
    rounds = int(min(max(cpu_seconds / max(one_call, 1e-6), CPU_ROUNDS[0]), CPU_ROUNDS[1]))
    benchmark.extra_info["timer"] = f"pytest-benchmark median of {rounds} rounds"
    benchmark.pedantic(fn, rounds=rounds, iterations=1)
    return benchmark.stats.stats.median if benchmark.enabled else None


def elapsed_seconds(fn) -> float:
    """Seconds of one long call (a training epoch): CUDA events on a GPU, else the host clock."""
    if ON_CUDA:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_medians(timers: dict[str, Callable[[], float]], cpu_seconds: float) -> dict[str, float]:
    """CPU: name -> median seconds, each timer (one call, returning its seconds) run once per round
    in turn, the order rotated each round, for CPU_ROUNDS rounds within about `cpu_seconds`."""
    names, seen = list(timers), {name: [] for name in timers}
    start = time.perf_counter()
    for round_ in range(CPU_ROUNDS[1]):
        if round_ >= CPU_ROUNDS[0] and time.perf_counter() - start > cpu_seconds:
            break
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            seen[name].append(timers[name]())
    return {name: sorted(times)[len(times) // 2] for name, times in seen.items()}


def gpu_figures(fn) -> dict:
    """CUDA: the median seconds by do_bench, and the peak bytes one call allocates beyond what was
    allocated before it."""
    from triton.testing import do_bench

    one_call_ms = elapsed_seconds(fn) * 1e3
    seconds = do_bench(fn, warmup=5, rep=max(GPU_REP_MS, GPU_MIN_REPS * one_call_ms), return_mode="median") / 1e3
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return {"seconds": seconds, "peak_bytes": torch.cuda.max_memory_allocated() - before}
