"""``/metrics`` in the Prometheus text exposition format (version 0.0.4), written by hand.

A handful of counters and histograms does not justify a dependency. Observations arrive on the
engine thread (``AsyncLLMEngine``'s ``on_output``) while scrapes render on the event loop, so
every update and the render take one lock. Gauges are read from the engine's last stats snapshot
at scrape time.
"""
from __future__ import annotations

import bisect
import math
import threading
from typing import Callable

from pagedawq.entrypoints.async_engine import OutputTiming

PREFIX = "pagedawq_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Bucket bounds (seconds) chosen to cover CPU and GPU serving alike (vLLM uses similar ones).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                10.0, 20.0, 40.0, 80.0)
ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
E2E_BUCKETS = (0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0)


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Histogram:
    """Cumulative-bucket histogram (``_bucket{le=...}``, ``_sum``, ``_count``)."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.bounds = name, help_text, tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)   # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        total = 0
        for bound, count in zip(self.bounds + (math.inf,), self.counts):
            total += count
            lines.append(f'{self.name}_bucket{{le="{_fmt(bound)}"}} {total}')
        lines += [f"{self.name}_sum {_fmt(self.sum)}", f"{self.name}_count {total}"]
        return lines


class ServerMetrics:
    """The server's metrics; :meth:`observe` is ``AsyncLLMEngine``'s ``on_output`` callback."""

    def __init__(self, engine_stats: Callable[[], dict[str, float]]) -> None:
        self._engine_stats = engine_stats
        self._lock = threading.Lock()
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished: dict[str, int] = {}   # finish reason -> requests
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds",
                              "Time from arrival to the first generated token.", TTFT_BUCKETS)
        self.itl = Histogram(PREFIX + "inter_token_latency_seconds",
                             "Time between two token-producing steps of one request.", ITL_BUCKETS)
        self.e2e = Histogram(PREFIX + "e2e_request_latency_seconds",
                             "Time from arrival to the last token of finished requests.", E2E_BUCKETS)

    def observe(self, timings: list[OutputTiming]) -> None:
        with self._lock:
            for t in timings:
                self.generation_tokens += t.num_new_tokens
                if t.time_to_first_token is not None:
                    self.prompt_tokens += t.num_prompt_tokens
                    self.ttft.observe(t.time_to_first_token)
                if t.inter_token_latency is not None:
                    self.itl.observe(t.inter_token_latency)
                if t.finished:
                    reason = t.finish_reasons[0] if len(set(t.finish_reasons)) == 1 else "mixed"
                    self.finished[reason] = self.finished.get(reason, 0) + 1
                    if t.e2e_latency is not None:
                        self.e2e.observe(t.e2e_latency)

    def render(self) -> str:
        stats = self._engine_stats()
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, value: float) -> None:
            lines.extend([f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}",
                          f"{PREFIX}{name} {_fmt(value)}"])

        metric("num_requests_running", "gauge", "Requests in the running batch.", stats["num_running"])
        metric("num_requests_waiting", "gauge", "Requests waiting for the scheduler.", stats["num_waiting"])
        metric("num_requests_queued", "gauge", "Accepted requests with no token yet (bounded by --max-queue).",
               stats["num_queued"])
        metric("kv_cache_usage", "gauge", "Fraction of KV-cache blocks in use (0 to 1).", stats["kv_cache_usage"])
        metric("prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.",
               stats["prefix_cache_queries"])
        metric("prefix_cache_hits_total", "counter", "Prompt tokens served from the prefix cache.",
               stats["prefix_cache_hits"])
        metric("num_preemptions_total", "counter", "Requests preempted for lack of KV blocks.",
               stats["num_preemptions"])
        with self._lock:
            metric("prompt_tokens_total", "counter", "Prompt tokens of requests that produced a token.",
                   self.prompt_tokens)
            metric("generation_tokens_total", "counter", "Generated tokens.", self.generation_tokens)
            name = PREFIX + "request_success_total"
            lines += [f"# HELP {name} Finished requests by finish reason.", f"# TYPE {name} counter"]
            lines += [f'{name}{{finished_reason="{reason}"}} {count}' for reason, count in sorted(self.finished.items())]
            for hist in (self.ttft, self.itl, self.e2e):
                lines += hist.render()
        return "\n".join(lines) + "\n"
