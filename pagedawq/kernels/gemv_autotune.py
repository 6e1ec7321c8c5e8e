"""Run-time tuning of the AWQ GEMV launch configuration for a model's own layer shapes.

``awq_configs.GEMV_TUNED`` was measured on one H100 for a few Llama shapes; every other GPU (an
H200 streams ~40% more bytes per second), tensor-parallel shard and model gets the heuristic.
``tune_gemv`` times the candidate configurations of ``awq_configs.gemv_candidates`` for each
(rows per program, N, K, group) on this GPU, the way a decode step runs them (a CUDA graph over
enough weight copies that every call reads from DRAM, not L2), checks each against the default
configuration's output, keeps the fastest when it beats the default by more than ``MIN_GAIN``, and
registers the choices for this process. The choices are cached on disk per GPU name, Triton
version, dtype and version of the kernel code (``$PAGEDAWQ_CACHE_DIR``, default
``~/.cache/pagedawq``), so a later start-up only reads them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import tempfile
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import torch
import triton

from pagedawq.kernels.awq_configs import GemvConfig, gemv_candidates, gemv_config, register_gemv_configs
from pagedawq.kernels.awq_gemm import gemv
from pagedawq.kernels.graph_timing import capture_round_robin, replay_times_us

logger = logging.getLogger(__name__)

MIN_GAIN = 0.03          # a candidate must beat the default by this fraction to be kept
MAX_REL_DIFF = 1e-2      # candidate vs default output (only the split-K summation order differs)
ROW_BLOCKS = (1, 2)      # the GEMV path's rows per program at decode (M <= GEMV_M_MAX)

# (config, one callable per weight copy) -> microseconds per call.
Timer = Callable[[GemvConfig, list[Callable[[], object]]], float]


def cache_path() -> Path:
    root = os.environ.get("PAGEDAWQ_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "pagedawq")
    return Path(root) / "gemv_tuned.json"


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


@lru_cache(maxsize=1)
def kernel_code_tag() -> str:
    """A short hash of the GEMV kernel and of the code that builds its candidates: a choice made
    for other kernel code is not reused (it would still be correct, but perhaps not the fastest)."""
    from pagedawq.kernels import awq_configs, awq_kernels
    digest = hashlib.sha256()
    for module in (awq_kernels, awq_configs):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


def _key(device: torch.device, dtype: torch.dtype, bm: int, n: int, k: int, group: int) -> str:
    return (f"{_device_name(device)}|triton {triton.__version__}|kernels {kernel_code_tag()}|{dtype}|"
            f"bm={bm},n={n},k={k},g={group}")


def graph_time_us(cfg: GemvConfig, fns: list[Callable[[], object]], calls: int = 24, replays: int = 5) -> float:
    """Median microseconds per call of ``fns`` replayed round-robin from one CUDA graph."""
    del cfg  # the same timing for every configuration
    graph = capture_round_robin(fns, calls)
    times = replay_times_us(graph, calls, replays)
    del graph
    return statistics.median(times)


def _random_layer(n: int, k: int, group: int, dtype: torch.dtype, device: torch.device, copies: int):
    """``copies`` random AWQ weights of the shape (random codes and zero points, small scales)."""
    gen = torch.Generator(device="cpu").manual_seed(n * 31 + k)
    qweight = torch.randint(-2**31, 2**31 - 1, (k, n // 8), generator=gen, dtype=torch.int32)
    qzeros = torch.randint(-2**31, 2**31 - 1, (k // group, n // 8), generator=gen, dtype=torch.int32)
    scales = (torch.rand(k // group, n, generator=gen) * 0.01 + 0.001).to(dtype)
    first = tuple(t.to(device) for t in (qweight, qzeros, scales))
    return [first] + [tuple(t.clone() for t in first) for _ in range(copies - 1)]


def _tune_one(weights, bm: int, n: int, k: int, group: int, dtype: torch.dtype, sms: int,
              timer: Timer) -> tuple[GemvConfig, str]:
    device = weights[0][0].device
    x = torch.randn(bm, k, generator=torch.Generator(device="cpu").manual_seed(bm)).to(dtype=dtype, device=device)
    out = torch.empty(bm, n, dtype=dtype, device=device)
    default = gemv_config(bm, n, k, group, sms)
    ref = gemv(x, *weights[0], default, torch.empty_like(out)).float()
    timings: dict[str, tuple[float, GemvConfig]] = {}
    for name, cfg in gemv_candidates(bm, n, k, group, sms):
        try:
            got = gemv(x, *weights[0], cfg, torch.full_like(out, float("nan"))).float()
            diff = ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()
            if not diff <= MAX_REL_DIFF:
                raise RuntimeError(f"output differs from the default configuration's by {diff:.1e}")
            timings[name] = (timer(cfg, [lambda w=w, cfg=cfg: gemv(x, *w, cfg, out) for w in weights]), cfg)
        except Exception as e:  # noqa: BLE001 - a candidate that fails is skipped, the default stays
            logger.debug("GEMV candidate %s %s on %dx%d (M %d) skipped: %s", name, cfg, k, n, bm, e)
    if "default" not in timings:
        return default, "default (timing failed)"
    best = min(timings, key=lambda c: timings[c][0])
    if best != "default" and timings[best][0] < (1 - MIN_GAIN) * timings["default"][0]:
        return timings[best][1], f"{best}: {timings['default'][0]:.1f} -> {timings[best][0]:.1f} us"
    return default, f"default: {timings['default'][0]:.1f} us"


def tune_gemv(shapes: Iterable[tuple[int, int, int]], dtype: torch.dtype, device: torch.device, *,
              row_blocks: Iterable[int] = ROW_BLOCKS, timer: Timer | None = None,
              path: Path | None = None) -> dict[tuple[int, int, int, int], GemvConfig]:
    """Tune (or read from the cache) the GEMV configuration of every (N, K, group) in ``shapes``
    at each of ``row_blocks`` rows per program, register the results for this process and return
    them (keyed like ``awq_configs.RUNTIME_GEMV``). ``timer`` replaces the CUDA-graph timing
    (tests); ``path`` the cache file."""
    path = path or cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    props = torch.cuda.get_device_properties(device) if device.type == "cuda" else None
    sms, l2 = (props.multi_processor_count, props.L2_cache_size) if props else (132, 0)
    timer = timer or graph_time_us
    results: dict[tuple[int, int, int, int], GemvConfig] = {}
    misses = 0
    for n, k, group in sorted(set(shapes)):
        weights = None   # made only for a shape some row count still needs timing for
        for bm in row_blocks:
            key = _key(device, dtype, bm, n, k, group)
            if key not in cache:
                if weights is None:
                    copies = max(1, min(32, -(-2 * l2 // (k * n // 2)) + 1))   # > 2x L2: every call reads DRAM
                    weights = _random_layer(n, k, group, dtype, device, copies)
                cfg, how = _tune_one(weights, bm, n, k, group, dtype, sms, timer)
                logger.info("GEMV %dx%d (group %d, %d row%s): %s", k, n, group, bm, "s" if bm > 1 else "", how)
                cache[key] = asdict(cfg)
                misses += 1
            results[(bm, n, k, group)] = GemvConfig(**cache[key])
        del weights
    if misses:
        _write_atomically(path, json.dumps(cache, indent=1, sort_keys=True))
    register_gemv_configs(results)
    return results


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
