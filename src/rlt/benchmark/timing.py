"""Timing for the benchmark: the median of many calls (CUDA events on a GPU), peak memory, and a
recorder of torch.compile's recompilations."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from ..common import synchronize

__all__ = ["RecompileRecorder", "measure", "peak_memory_gb", "reset_peak_memory", "synchronize"]


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


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


class RecompileRecorder:
    """Counts torch._dynamo recompilations and compiled graphs while attached."""

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
    def graphs(self) -> int:
        return int(self.counters["stats"]["unique_graphs"])

    @property
    def graph_breaks(self) -> dict:
        return dict(self.counters["graph_break"])

