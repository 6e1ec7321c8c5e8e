"""Capturing kernel calls into a CUDA graph the way a decode step runs them, for timing.

A single eager call measures Python's launch path (tens of microseconds), not the kernel; a
graph of calls that rotate over several copies of the weight (more bytes than L2 holds) measures
what the device does when a decode step reads each weight from DRAM. Used by the GEMV tuner and
the kernel benchmarks.
"""
from __future__ import annotations

from typing import Callable

import torch


def capture_round_robin(fns: list[Callable[[], object]], calls: int) -> torch.cuda.CUDAGraph:
    """A graph of ``calls`` calls cycling through ``fns`` (each run once first, off the capture,
    so that compilation and allocation happen outside it)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fns[i % len(fns)]()
    return graph


def replay_times_us(graph: torch.cuda.CUDAGraph, calls: int, replays: int) -> list[float]:
    """Microseconds per call of each of ``replays`` replays of ``graph`` (``calls`` calls), timed by
    events around the replay on the current stream."""
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / calls)
    return times
