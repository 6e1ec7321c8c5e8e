"""What bounds a split-K AWQ GEMM at small M: its bytes, its busiest SM's share, or its ring depth?
(issue 4: 7B down, K 11008 x N 4096, measured 2.94-2.99x cuBLAS at M <= 16 against 3.0x until the
timing fix that ``--calls`` motivated)

7B down at M <= 16 runs 64 channel tiles x 4 K slices in clusters of 4 (256 CTAs on 132 SMs) in
pipeline steps of 4 K tiles: its 43 steps split 11 / 11 / 11 / 10, so the SMs that hold two CTAs
stream 22 steps while the mean is 20.85 (and 8 SMs hold one).

Without a flag: the engine's choice and fp16 cuBLAS on K of 40, 42, 43 and 44 steps and on
62, 64 and 66 channel tiles. If the busiest SM bounds the GEMM, 42 and 44 steps (longest slice 11
either way) cost what 43 do, and 66 tiles (264 CTAs, two on every SM) what 64 do; if the bytes
bound it, time follows bytes along both sweeps. Session 42 (H100, results/session42_call1_*, whose
TB/s column was 1000x too small, fixed since): the bytes. At M = 1, 40 / 42 / 43 / 44 steps took
11.18 / 11.78 / 11.88 / 12.05 us, and 62 / 64 / 66 tiles 11.69 / 11.88 / 12.22 us.

``--depths``: the rule's tile and split with other rings (``STAGES`` steps of ``k_tiles`` K tiles)
on K of 40, 43 and 44 steps, each with its time at 7B down and its slope (us a MB, least squares
over the three K): the ring's depth is what sets the bytes a program has in flight, and so the
slope of a latency-bound stream. Session 42 (results/session42_call2_*): no deeper ring gains. At
M = 1 the rule (2 steps of 4 tiles) took 11.93 us, 3 steps 11.90, 4 steps 12.05, 6 steps 13.11, and
4 / 6 / 8 steps of 2 tiles 11.88 / 12.26 / 13.16; at M = 16 every other ring was slower.

``--calls``: 7B down and gate_up, AWQ and cuBLAS, timed from graphs of 8 to 128 back-to-back calls,
and the marginal time of a call (the slope between the smallest and the largest graph). Until
session 42 ``kernels.py`` divided a replay's time by its calls (8-9 on these layers), so whatever a
replay costs beyond its calls (its launch, the first kernel's start, the last one's drain) landed on
each call, and weighed 3-4x more against the AWQ kernel than against cuBLAS's longer calls. Session 42
(H100): 7B down at M = 1 12.04 us a call from 8 calls, 11.06 marginal; cuBLAS 34.95 and 34.27. Since
then ``kernels.graph_time_us`` is the marginal time.

The session-42 times quoted for the shape sweep and ``--depths`` are a 9-call graph's replay over its
calls, as ``kernels.graph_time_us`` timed until it became the marginal call (after those runs).

    PYTHONPATH=. python benchmarks/experiments/small_m_stream_probe.py [--depths | --calls] [--ms 1 16] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import kernels  # noqa: E402
from pagedawq.kernels import awq_configs  # noqa: E402
from pagedawq.kernels.awq_gemm import _counters, wgmma_t_plan  # noqa: E402
from pagedawq.kernels.awq_wgmma_t import output_tiles, wgmma_t_gemm  # noqa: E402

# (K, N): 7B down, then K at 40 / 42 / 44 steps of 256, then N at 62 / 66 channel tiles of 64
SHAPES = [(11008, 4096), (10240, 4096), (10752, 4096), (11264, 4096), (11008, 3968), (11008, 4224)]
DEPTH_KS = (10240, 11008, 11264)
DEPTHS = ((2, 4), (3, 4), (4, 4), (6, 4), (4, 2), (6, 2), (8, 2))   # (stages, K tiles a step)


def engine_config(m: int, n: int, k: int) -> awq_configs.WgmmaTConfig:
    """The "wgmma_t" config ``awq_gemm`` launches for M tokens on this GPU."""
    return wgmma_t_plan(m, n, k, torch.device("cuda"))[0]


def describe(cfg: awq_configs.WgmmaTConfig, m: int, k: int, n: int) -> str:
    """A launch: tiles x slices, and the steps of the longest slice."""
    steps = k // (64 * cfg.k_tiles)
    ctas = (n // cfg.block_n) * cfg.split_k * -(-m // cfg.block_t)
    return (f"{cfg.block_n}x{cfg.block_t} split {cfg.split_k} s{cfg.stages} kt {cfg.k_tiles}: {ctas} CTAs, "
            f"{steps} steps, longest slice {-(-steps // cfg.split_k)}")


def layer_mb(layer: kernels.Layer) -> float:
    words, zs = layer.repacked[0]
    return (words.numel() + zs.numel()) * 4 / 1e6


def shapes(ms: list[int], rounds: int) -> None:
    print(f"{'K':>6}{'N':>6}{'M':>4}{'MB':>8}{'cuBLAS':>9}  AWQ us per round  (launch)", flush=True)
    for k, n in SHAPES:
        layer = kernels.Layer(k, n, seed=k + n)
        mb = layer_mb(layer)
        for m in ms:
            x = layer.x(m)
            out = torch.empty(m, n, dtype=torch.float16, device="cuda")
            t_ref = kernels.graph_time_us([lambda w=w: torch.matmul(x, w, out=out) for w in layer.fp16], 10, 50)
            times = [kernels.graph_time_us(layer.awq_fns(x, out), 10, 50) for _ in range(rounds)]
            best = min(times)
            print(f"{k:>6}{n:>6}{m:>4}{mb:>8.2f}{t_ref:>9.2f}  " + " ".join(f"{t:.2f}" for t in times)
                  + f"  (min {best:.2f}, {mb / best:.3f} TB/s, x cuBLAS {t_ref / best:.3f})"
                  + f"  ({describe(engine_config(m, n, k), m, k, n)})", flush=True)
        del layer
        torch.cuda.empty_cache()


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)


def depths(ms: list[int], rounds: int, n: int = 4096) -> None:
    layers = {k: kernels.Layer(k, n, seed=k + n) for k in DEPTH_KS}
    print(f"{'M':>4} {'config':<40}" + "".join(f"{'K ' + str(k):>10}" for k in DEPTH_KS)
          + f"{'us/MB':>8}{'x cuBLAS':>10}", flush=True)
    for m in ms:
        rule = engine_config(m, n, 11008)
        refs = {}
        for k, layer in layers.items():
            x = layer.x(m)
            out = torch.empty(m, n, dtype=torch.float16, device="cuda")
            refs[k] = kernels.graph_time_us([lambda w=w: torch.matmul(x, w, out=out) for w in layer.fp16], 10, 50)
        print(f"{m:>4} {'cuBLAS':<40}" + "".join(f"{refs[k]:>10.2f}" for k in DEPTH_KS)
              + f"{slope([layers[k].w16.numel() * 2e-6 for k in DEPTH_KS], [refs[k] for k in DEPTH_KS]):>8.3f}",
              flush=True)
        for stages, kt in DEPTHS:
            cfg = replace(rule, stages=stages, k_tiles=kt)
            best = {}
            for k, layer in layers.items():
                x = layer.x(m)
                out = torch.empty(m, n, dtype=torch.float16, device="cuda")
                cnt = _counters(x.device, output_tiles(m, n, cfg))
                poisoned = torch.full_like(out, float("nan"))
                wgmma_t_gemm(x, *layer.repacked[0], cfg, poisoned, cnt)
                err = layer.rel_err(m, poisoned.nan_to_num(1e4))
                if err > 1e-2:
                    raise AssertionError(f"{cfg} at K {k}, M {m}: relative error {err:.2e}")
                best[k] = min(kernels.graph_time_us([lambda p=p: wgmma_t_gemm(x, *p, cfg, out, cnt)
                                                     for p in layer.repacked], 10, 50) for _ in range(rounds))
            mark = " (rule)" if (stages, kt) == (rule.stages, rule.k_tiles) else ""
            label = f"s{stages} kt {kt}{mark}"
            print(f"{m:>4} {label:<40}" + "".join(f"{best[k]:>10.2f}" for k in DEPTH_KS)
                  + f"{slope([layer_mb(layers[k]) for k in DEPTH_KS], [best[k] for k in DEPTH_KS]):>8.3f}"
                  + f"{refs[11008] / best[11008]:>10.3f}", flush=True)
        for layer in layers.values():
            layer._ref.clear()


CALLS = (8, 16, 32, 64, 128)


def replay_us(fns: list, calls: int, rounds: int) -> float:
    """The best of ``rounds`` medians of one replay of a graph of ``calls`` calls cycling through ``fns``."""
    return min(kernels.replay_time_us(fns, calls, 10, 50) for _ in range(rounds))


def calls(ms: list[int], rounds: int) -> None:
    print(f"{'layer':<12}{'M':>4} {'kernel':<7}" + "".join(f"{'/call @' + str(c):>11}" for c in CALLS)
          + f"{'marginal':>10}", flush=True)
    for name, k, n in (("7B down", 11008, 4096), ("7B gate_up", 4096, 22016)):
        layer = kernels.Layer(k, n, seed=k + n)
        for m in ms:
            x = layer.x(m)
            out = torch.empty(m, n, dtype=torch.float16, device="cuda")
            marginal = {}
            for kind, fns in (("cuBLAS", [lambda w=w: torch.matmul(x, w, out=out) for w in layer.fp16]),
                              ("AWQ", layer.awq_fns(x, out))):
                per = {c: replay_us(fns, c, rounds) for c in CALLS}
                marginal[kind] = (per[CALLS[-1]] - per[CALLS[0]]) / (CALLS[-1] - CALLS[0])
                print(f"{name:<12}{m:>4} {kind:<7}" + "".join(f"{per[c] / c:>11.2f}" for c in CALLS)
                      + f"{marginal[kind]:>10.2f}", flush=True)
            print(f"{name:<12}{m:>4} x cuBLAS, marginal: {marginal['cuBLAS'] / marginal['AWQ']:.3f}", flush=True)
        del layer
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", action="store_true", help="the ring depth sweep instead of the shape sweep")
    ap.add_argument("--calls", action="store_true", help="time per call against the calls in a graph")
    ap.add_argument("--ms", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(torch.cuda.get_device_name(), f"{sms} SMs", flush=True)
    (depths if args.depths else calls if args.calls else shapes)(args.ms, args.rounds)


if __name__ == "__main__":
    main()
