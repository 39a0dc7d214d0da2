"""Timing for the benchmark: the median of many calls (CUDA events on a GPU), peak memory, and a
recorder of torch.compile's recompilations."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from ..common import synchronize

__all__ = [
    "RecompileRecorder",
    "busy_fraction",
    "covered_time",
    "measure",
    "peak_memory_gb",
    "reset_peak_memory",
]


def measure(fn: Callable, inputs: Sequence, *, device: torch.device, warmup: int, iters: int) -> dict:
    """Median time of ``fn(inputs[i % len(inputs)])`` over ``iters`` calls after ``warmup`` calls.

    CUDA events around each call on a GPU (the GPU time between the two markers, launch gaps and
    host syncs inside the call included); ``perf_counter`` on the CPU.
    """
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    synchronize(device)
    times = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        start = time.perf_counter()
        for i, (begin, end) in enumerate(events):
            begin.record()
            fn(inputs[i % len(inputs)])
            end.record()
        synchronize(device)
        wall = time.perf_counter() - start
        times = [begin.elapsed_time(end) for begin, end in events]
    else:
        start = time.perf_counter()
        for i in range(iters):
            t0 = time.perf_counter()
            fn(inputs[i % len(inputs)])
            times.append((time.perf_counter() - t0) * 1e3)
        wall = time.perf_counter() - start
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "ms": statistics.median(times),
        "ms_p25": quartiles[0],
        "ms_p75": quartiles[2],
        "wall_ms": wall * 1e3 / iters,
        "calls": iters,
    }


# CUDA runtime calls that make the host wait for the device (a plain cudaMemcpy does; cudaMemcpyAsync does not).
HOST_SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def covered_time(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals: time during which at least one was running."""
    covered, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        covered += end - max(start, reach)
        reach = end
    return covered


def busy_fraction(fn: Callable, inputs: Sequence, *, device: torch.device, calls: int = 3) -> dict:
    """How much of the wall-clock time of ``calls`` calls of ``fn`` the device spent running kernels.

    torch.profiler records the calls (after one untimed call); the union of the device's kernel
    intervals is the busy time, divided by the host's wall-clock time of the calls (profiling included,
    so the fraction is a lower bound). On a GPU that is the issue's "GPU busy fraction" (a launch-bound
    step is well below 1). On the CPU the "kernels" are the top-level aten ops, so the figure only
    shows the code path runs.
    """
    from torch.profiler import ProfilerActivity, profile

    fn(inputs[0])
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for i in range(calls):
            fn(inputs[i % len(inputs)])
        synchronize(device)
        wall_us = (time.perf_counter() - start) * 1e6
    events = prof.events()
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    else:
        kernels = [e for e in events if e.name.startswith("aten::") and e.cpu_parent is None]
    intervals = [(e.time_range.start, e.time_range.end) for e in kernels]
    busy_us = covered_time(intervals)
    return {
        "busy_frac": min(1.0, busy_us / wall_us) if wall_us else None,
        "busy_ms_per_call": busy_us / 1e3 / calls,
        "kernels_per_call": len(kernels) / calls,
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


class RecompileRecorder:
    """Records torch._dynamo's recompilations (with their reasons) while attached, and its graph breaks."""

    def __init__(self):
        from torch._dynamo.utils import counters

        self.counters = counters
        self.reasons: list[str] = []
        recorder = self

        class _Handler(logging.Handler):
            def emit(self, record):
                recorder.reasons.append(record.getMessage())

        self.handler = _Handler()
        self.logger = torch._logging.getArtifactLogger("torch._dynamo.guards", "recompiles")

    def __enter__(self):
        torch._logging.set_logs(recompiles=True)
        self.logger.addHandler(self.handler)
        self.propagate, self.logger.propagate = self.logger.propagate, False
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self.propagate
        torch._logging.set_logs()

    @property
    def graph_breaks(self) -> dict:
        return dict(self.counters["graph_break"])

