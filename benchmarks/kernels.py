"""AWQ int4 GEMM (pagedawq.kernels.awq_gemm) against fp16 cuBLAS on Llama layer shapes.

For every (model, layer, M): the time of ``torch.matmul`` on the dequantized fp16 weight and of
``awq_gemm``, their ratio, the achieved GB/s and TFLOP/s of ``awq_gemm``, its floor (max of bytes
over the copy bandwidth and flops over the fp16 matmul rate, both measured at the start of the same
run) and its relative error against the float64 product. Group size 128, fp16 activations.

Timing: each op is captured in a CUDA graph as a sequence of calls that rotate over enough copies
of the weight (>= 4x L2) for every call to read it from DRAM, as a decode step does; the time of a
call is the difference of the ``triton.testing.do_bench`` medians of two such graphs, of c and 4c
calls, over 3c (``graph_time_us``: until session 42 it was one graph's median over its c calls,
which also charged each call an eighth of the replay's own launch and drain). Timing single eager
calls instead measures the Python launch path (tens of microseconds), not the kernel.

    python benchmarks/kernels.py            # the full table
    python benchmarks/kernels.py --quick    # a subset
    python benchmarks/kernels.py --models llama2-7b llama3-8b llama2-70b-tp8   # issue 4's models only
    python benchmarks/kernels.py --tune     # sweep launch configs per (M bucket, N, K) first,
                                            # print them as awq_configs.TUNED entries, then the table
                                            # with them applied
    python benchmarks/kernels.py --gemv     # the GEMV path at M = 1, 2, 4, 8, 16 on the Llama-2-7B and
                                            # Llama-3-8B layers next to cuBLAS fp16 and the splitk
                                            # path, with a small GEMV config sweep at M <= 4 (printed
                                            # as awq_configs.GEMV_TUNED entries; gemv_sweep.csv)
    python benchmarks/kernels.py --wgmma-t  # the transposed Hopper kernel (awq_wgmma_t): every tile x
                                            # split-K config at M = 16-4096 against cuBLAS and the
                                            # current choice (wgmma_t_sweep.csv)
    python benchmarks/kernels.py --silu-epilogue   # gate_up GEMM + silu_and_mul vs one fused launch (Hopper)
    python benchmarks/kernels.py --gemv --warm-only   # compile the GEMV candidates on a tiny layer
    python benchmarks/kernels.py --gemv --gemv-models llama2-70b-tp4 llama2-70b-tp2 llama2-13b-tp2
                                            # the per-rank layers of the tensor-parallel runs
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace

import torch
import triton
from triton.runtime.errors import OutOfResources
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pagedawq.kernels import awq_configs  # noqa: E402
from pagedawq.kernels.awq_configs import (GemmConfig, gemv_block_m, gemv_candidates, gemv_config,  # noqa: E402
                                          heuristic_config)
from pagedawq.kernels.awq_gemm import (awq_dequantize, awq_gemm, default_path, gemm_fused, gemv,  # noqa: E402
                                       repack_for_wgmma_t)
from pagedawq.kernels.graph_timing import capture_round_robin  # noqa: E402
from pagedawq.quant.pack import pack_awq_gemm, quantize_weight  # noqa: E402

GROUP = 128
MODELS = {
    "llama2-7b": [("qkv", 4096, 12288), ("o", 4096, 4096), ("gate_up", 4096, 22016), ("down", 11008, 4096)],
    "llama3-8b": [("qkv", 4096, 6144), ("o", 4096, 4096), ("gate_up", 4096, 28672), ("down", 14336, 4096)],
    "llama2-70b-tp8": [("qkv", 8192, 1280), ("o", 1024, 8192), ("gate_up", 8192, 7168), ("down", 3584, 8192)],
    "llama2-13b": [("qkv", 5120, 15360), ("o", 5120, 5120), ("gate_up", 5120, 27648), ("down", 13824, 5120)],
    "llama2-13b-tp2": [("qkv", 5120, 7680), ("o", 2560, 5120), ("gate_up", 5120, 13824), ("down", 6912, 5120)],
}
MS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096]
QUICK_LAYERS = {("llama2-7b", "gate_up"), ("llama2-7b", "down"), ("llama2-70b-tp8", "qkv")}
QUICK_MS = [1, 4, 16, 32, 64, 128, 1024]
TUNE_BUCKETS = [16, 32, 64, 128, 256, 512, 1024, 4096]


def log(*a) -> None:
    print(*a, flush=True)


def time_us(fn, warmup: int = 25, rep: int = 100) -> float:
    return do_bench(fn, warmup=warmup, rep=rep, return_mode="median") * 1e3


def replay_time_us(fns, calls: int, warmup: int = 25, rep: int = 100) -> float:
    """Median time of one replay of a CUDA graph of ``calls`` calls cycling through ``fns``."""
    graph = capture_round_robin(fns, calls)
    t = time_us(graph.replay, warmup=warmup, rep=rep)
    del graph
    return t


def graph_time_us(fns, warmup: int = 25, rep: int = 100) -> float:
    """Per-call time of ``fns`` (one per weight copy) replayed round-robin from CUDA graphs: the
    marginal time of a call, (T(4c) - T(c)) / 3c between graphs of c = max(len(fns), 8) and 4c
    calls. A replay costs ~5-8 us beyond its calls (its launch, the first call's start without a
    predecessor to overlap, the last one's drain; H100, session 42). Divided over 8 calls that was
    ~1 us a call, 8% of a 12 us AWQ GEMM and 2% of cuBLAS's 35 us on the same layer; a decode
    step's GEMM is one of hundreds of kernels in its graph and pays none of it."""
    calls = max(len(fns), 8)
    short = replay_time_us(fns, calls, warmup, rep)
    return (replay_time_us(fns, 4 * calls, warmup, rep) - short) / (3 * calls)


def interleaved_medians(ref_fns, fns, rounds: int) -> tuple[float, float]:
    """Medians of ``rounds`` timings (``graph_time_us``) of ``ref_fns`` and ``fns`` taken in turn. At
    large M both run near the GPU's power limit, and one timing of each, one after the other, gave
    7B gate_up at 1024 tokens 0.92-0.99x cuBLAS on one H100 within minutes (session 42): the clock a
    kernel meets drifts, so the two sides sample it alternately."""
    ref, mine = [], []
    for _ in range(rounds):
        ref.append(graph_time_us(ref_fns))
        mine.append(graph_time_us(fns))
    return statistics.median(ref), statistics.median(mine)


def measure_ceilings() -> tuple[float, float]:
    """(copy bandwidth in GB/s counting read + write, fp16 matmul TFLOP/s) of this GPU, now."""
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    bw = 2 * src.numel() / (time_us(lambda: dst.copy_(src)) * 1e-6) / 1e9
    a = torch.randn(8192, 8192, dtype=torch.float16, device="cuda")
    b = torch.randn(8192, 8192, dtype=torch.float16, device="cuda")
    peak = 2 * 8192**3 / (time_us(lambda: a @ b) * 1e-6) / 1e12
    del src, dst, a, b
    return bw, peak


class Layer:
    def __init__(self, k: int, n: int, seed: int) -> None:
        gen = torch.Generator(device="cuda").manual_seed(seed)
        w = torch.randn(n, k, device="cuda", generator=gen)
        codes, scales, zeros = quantize_weight(w, group_size=GROUP)
        del w
        self.qweight, self.qzeros, self.scales = pack_awq_gemm(codes, scales, zeros)
        self.w16 = awq_dequantize(self.qweight, self.qzeros, self.scales, torch.float16)
        self.k, self.n = k, n
        rotate = 4 * torch.cuda.get_device_properties(0).L2_cache_size
        n4 = -(-rotate // self.bytes(0))
        self.int4 = [(self.qweight, self.qzeros, self.scales)] + [
            (self.qweight.clone(), self.qzeros.clone(), self.scales.clone()) for _ in range(min(n4, 32) - 1)]
        self.fp16 = [self.w16] + [self.w16.clone() for _ in range(-(-rotate // (k * n * 2)) - 1)]
        # what the AWQ linear method keeps on Hopper for the "wgmma_t" path (None elsewhere)
        self.repacked = [repack_for_wgmma_t(*w) for w in self.int4]
        self._x: dict[int, torch.Tensor] = {}
        self._ref: dict[int, torch.Tensor] = {}

    def awq_fns(self, x: torch.Tensor, out: torch.Tensor) -> list:
        """``awq_gemm`` over each weight copy as the engine calls it (with the repacked weights)."""
        return [lambda w=w, r=r: awq_gemm(x, *w, out=out, repacked=r) for w, r in zip(self.int4, self.repacked)]

    def path(self, x: torch.Tensor) -> str:
        """The path ``awq_gemm`` takes for x on this layer, as the engine calls it."""
        return default_path(x, self.qweight, self.scales, GROUP, self.repacked[0])[0]

    def x(self, m: int) -> torch.Tensor:
        if m not in self._x:
            self._x[m] = torch.randn(m, self.k, device="cuda", dtype=torch.float16)
        return self._x[m]

    def ref(self, m: int) -> torch.Tensor:
        if m not in self._ref:
            self._ref[m] = self.x(m).double() @ self.w16.double()
        return self._ref[m]

    def rel_err(self, m: int, out: torch.Tensor) -> float:
        ref = self.ref(m)
        return float((out.double() - ref).norm() / ref.norm())

    def bytes(self, m: int) -> int:
        groups = self.k // GROUP
        return self.k * self.n // 2 + groups * self.n * 2 + groups * self.n // 2 + m * self.k * 2 + m * self.n * 2


def _splits(n_tiles: int, k_tiles: int, sms: int) -> list[int]:
    return sorted({max(1, min(k_tiles // 2, round(w * sms / n_tiles))) for w in (1, 2, 4, 8)})


def candidates(bucket: int, n: int, k: int, sms: int) -> list[tuple[str, GemmConfig | None]]:
    """Launch configurations worth timing for one M bucket (the sweep behind awq_configs.TUNED)."""
    cands: list[tuple[str, GemmConfig | None]] = []
    if bucket <= awq_configs.SMALL_M_MAX:
        # BLOCK_N 256 lost everywhere in the first sweep (and spills with BLOCK_M 32).
        for bn in (64, 128):
            for split in _splits(triton.cdiv(n, bn), k // 128, sms):
                cands.append(("splitk", GemmConfig(bucket, bn, 128, split_k=split, num_stages=4)))
        base = heuristic_config("splitk", bucket, n, k, GROUP, sms)
        cands += [("splitk", replace(base, num_stages=3)), ("splitk", replace(base, scale_w=True))]
        return cands
    if bucket < awq_configs.LARGE_M_MIN:
        tiles = [(64, 128, 64, 4, 4), (64, 128, 128, 4, 3), (64, 128, 128, 4, 4), (64, 256, 64, 8, 3)]
        if bucket == 64:
            tiles.append((32, 128, 128, 4, 4))
        if bucket >= 128:
            tiles += [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3)]
        for bm, bn, bk, warps, stages in tiles:
            n_tiles = triton.cdiv(bucket, bm) * triton.cdiv(n, bn)
            splits = {1} | ({max(1, min(k // bk // 2, round(sms / n_tiles)))} if n_tiles < sms else set())
            for split in sorted(splits):
                cands.append(("tc", GemmConfig(bm, bn, bk, split_k=split, scale_w=True, num_warps=warps,
                                               num_stages=stages)))
        first = cands[0][1]
        cands.append(("tc", replace(first, scale_w=False)))
        if bucket >= 256:
            cands.append(("dequant", None))
        return cands
    for bm, bn, bk, warps, stages in [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (128, 256, 64, 8, 4),
                                      (256, 128, 64, 8, 3)]:
        cands.append(("tc", GemmConfig(bm, bn, bk, scale_w=True, num_warps=warps, num_stages=stages)))
    cands.append(("tc", GemmConfig(128, 128, 64, scale_w=False, num_warps=8, num_stages=3)))
    cands.append(("dequant", None))
    return cands


def choice_fns(layer: Layer, x: torch.Tensor, out: torch.Tensor, path: str, cfg: GemmConfig | None,
               use_asm: bool | None = None):
    """One callable per weight copy running ``path`` with ``cfg`` (the dequant path takes no cfg)."""
    if path == "dequant":
        return [lambda w=w: awq_gemm(x, *w, out=out, path="dequant") for w in layer.int4]
    return [lambda w=w: gemm_fused(x, *w, cfg, out, use_asm=use_asm) for w in layer.int4]


def tune(layers: dict[tuple[int, int], Layer], sms: int, csv, budget_s: float, buckets: list[int]) -> dict:
    """Time every candidate per (M bucket, N, K); stop starting new shapes after ``budget_s``."""
    table = {}
    t0 = time.time()
    targets = {(4096, 22016), (11008, 4096)}  # the headline shapes go first
    for (k, n), layer in sorted(layers.items(), key=lambda kv: kv[0] not in targets):
        if time.time() - t0 > budget_s:
            log(f"  tuning budget spent: K={k} N={n} keeps the heuristics")
            continue
        for bucket in buckets:
            x = layer.x(bucket)
            out = torch.empty(bucket, n, dtype=torch.float16, device="cuda")
            best = None
            for path, cfg in candidates(bucket, n, k, sms):
                fns = choice_fns(layer, x, out, path, cfg)
                try:
                    out.fill_(float("nan"))
                    fns[0]()
                    err = layer.rel_err(bucket, out)
                    if not err < 2e-3:
                        raise RuntimeError(f"rel err {err:.2e}")
                    t = graph_time_us(fns, warmup=10, rep=25)
                except Exception as e:  # a config that does not compile or is wrong is skipped
                    log(f"  skip {k}x{n} M={bucket} {path} {cfg}: {str(e).splitlines()[0][:200]}")
                    continue
                csv.write(f"{k},{n},{bucket},{path},{cfg},{t:.2f}\n")
                if best is None or t < best[0]:
                    best = (t, path, cfg)
            if best is None:
                continue
            table[(bucket, n, k)] = (best[1], best[2])
            note = ""
            if best[1] != "dequant" and bucket == 16:  # what the PTX dequantizer buys
                plain = graph_time_us(choice_fns(layer, x, out, best[1], best[2], use_asm=False), 10, 25)
                note = f" (plain-Triton dequant: {plain:.1f} us)"
            log(f"  tuned K={k} N={n} M={bucket}: {best[0]:.1f} us {best[1]} {best[2]}{note}")
    return table


GEMV_MODELS = ("llama2-7b", "llama3-8b", "llama2-13b", "llama2-13b-tp2")
# Per-rank layers of the Llama-2-70B tensor-parallel runs (issues 6 and 7), for ``--gemv-models``.
TP_MODELS = {
    "llama2-70b-tp2": [("qkv", 8192, 5120), ("o", 4096, 8192), ("gate_up", 8192, 28672), ("down", 14336, 8192)],
    "llama2-70b-tp4": [("qkv", 8192, 2560), ("o", 2048, 8192), ("gate_up", 8192, 14336), ("down", 7168, 8192)],
}
GEMV_MS = [1, 2, 4]


def warm_gemv(sms: int) -> None:
    """Compile every GEMV candidate kernel on a tiny layer with the same specialization as the
    benchmark layers (G 128, fp16, K and N multiples of 512, split-K > 1)."""
    t0 = time.time()
    k, n = 1024, 2048
    gen = torch.Generator(device="cuda").manual_seed(0)
    codes, scales, zeros = quantize_weight(torch.randn(n, k, device="cuda", generator=gen), group_size=GROUP)
    layer = pack_awq_gemm(codes, scales, zeros)
    seen = set()
    for m in (1, 2, 4):
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        out = torch.empty(m, n, device="cuda", dtype=torch.float16)
        for name, cfg in gemv_candidates(m, 22016, 4096, GROUP, sms):
            key = (gemv_block_m(m), replace(cfg, split_k=0))
            if key in seen:
                continue
            seen.add(key)
            try:
                gemv(x, *layer, replace(cfg, split_k=2), out)
            except Exception as e:
                log(f"  warm: {name} {cfg} failed: {str(e).splitlines()[0][:200]}")
    torch.cuda.synchronize()
    log(f"warm: compiled {len(seen)} GEMV kernels in {time.time() - t0:.0f} s")


DEQUANT_TILES = [(32, 256, 4), (16, 512, 4), (64, 256, 8), (64, 512, 8), (32, 1024, 8)]


def run_dequant(bw: float) -> None:
    """The dequantize kernel alone (plain Triton vs PTX unpack, a few tiles; bit-identical check)
    and the large-M "dequant" path of awq_gemm with each, against cuBLAS on the dense weight."""
    from pagedawq.kernels import awq_gemm as gemm_mod
    rows = [(model, name, k, n) for model in ("llama2-7b", "llama3-8b") for name, k, n in MODELS[model]]
    log(f"{'layer':<18}{'K':>6}{'N':>7}{'plain us':>9}{'ptx best':>9} {'tile':<15}{'GB/s':>6}"
        f"{'M':>6}{'cuBLAS':>8}{'plain':>8}{'ptx':>8}{'x cuBLAS plain/ptx':>20}")
    seen = set()
    for model, name, k, n in rows:
        if (k, n) in seen:
            continue
        seen.add((k, n))
        layer = Layer(k, n, seed=k + n)
        os.environ["PAGEDAWQ_AWQ_PLAIN_DEQUANT"] = "1"
        plain = awq_dequantize(layer.qweight, layer.qzeros, layer.scales, torch.float16)
        t_plain = graph_time_us([lambda w=w: awq_dequantize(*w, torch.float16) for w in layer.int4], 5, 20)
        os.environ["PAGEDAWQ_AWQ_PLAIN_DEQUANT"] = "0"
        best = (float("inf"), None)
        for tile in DEQUANT_TILES:
            gemm_mod.DEQUANT_TILE = tile
            if not torch.equal(awq_dequantize(layer.qweight, layer.qzeros, layer.scales, torch.float16), plain):
                log(f"  MISMATCH {k}x{n} tile {tile}")
                continue
            t = graph_time_us([lambda w=w: awq_dequantize(*w, torch.float16) for w in layer.int4], 5, 20)
            if t < best[0]:
                best = (t, tile)
        gemm_mod.DEQUANT_TILE = best[1]
        gbs = (k * n // 2 + k * n * 2) / best[0] / 1e3
        for m in (512, 1024, 4096):
            x = layer.x(m)
            out = torch.empty(m, n, dtype=torch.float16, device="cuda")
            t_ref = graph_time_us([lambda w=w: torch.matmul(x, w, out=out) for w in layer.fp16], 3, 10)
            os.environ["PAGEDAWQ_AWQ_PLAIN_DEQUANT"] = "1"
            t_p = graph_time_us([lambda w=w: awq_gemm(x, *w, out=out, path="dequant") for w in layer.int4], 3, 10)
            os.environ["PAGEDAWQ_AWQ_PLAIN_DEQUANT"] = "0"
            t_a = graph_time_us([lambda w=w: awq_gemm(x, *w, out=out, path="dequant") for w in layer.int4], 3, 10)
            log(f"{model + ' ' + name:<18}{k:>6}{n:>7}{t_plain:>9.1f}{best[0]:>9.1f} {str(best[1]):<15}{gbs:>6.0f}"
                f"{m:>6}{t_ref:>8.1f}{t_p:>8.1f}{t_a:>8.1f}{t_ref / t_p:>10.2f}/{t_ref / t_a:.2f}")
        del layer
        torch.cuda.empty_cache()


WGMMA_T_LAYERS = [("llama2-7b", name, k, n) for name, k, n in MODELS["llama2-7b"]] + [
    ("llama2-13b-tp2", name, k, n) for name, k, n in MODELS["llama2-13b-tp2"]] + [
    ("llama2-70b-tp8", name, k, n) for name, k, n in MODELS["llama2-70b-tp8"]]
WGMMA_T_MS = [1, 2, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


WGMMA_T_DEPTHS = {8: ((8, 1), (4, 2), (2, 4), (3, 4), (4, 4)), 16: ((8, 1), (4, 2), (2, 4), (3, 4), (4, 4)),
                  32: ((8, 1), (4, 2), (2, 4), (3, 4), (4, 4)), 64: ((4, 1), (2, 2), (3, 2), (2, 4)),
                  128: ((3, 1), (2, 2), (3, 2)), 256: ((3, 1), (2, 2))}


def ws_small_variants(m: int, n: int, k: int, sms: int) -> list:
    """Warp-specialised configs at up to 128 tokens around ``ws_small_config``'s: channel groups x K
    phases of 1 x 2, 1 x 4, 2 x 1 and 2 x 2 (``awq_configs.k_phase_config``: split-K to one CTA an
    SM, and twice that), steps of 4 K tiles also at 32 tokens."""
    block_t = next(t for t in awq_configs.WGMMA_T_BLOCK_TS if m <= t)
    out = []
    for nc, kc in ((1, 2), (1, 4), (2, 1), (2, 2)):
        if n % (64 * nc):
            continue
        for k_tiles in sorted({4 if block_t <= 16 else 2, 4 if block_t <= 32 else 2}):
            cfg = awq_configs.k_phase_config(block_t, n, k, sms, nc, kc, k_tiles)
            if cfg is not None:
                kt = awq_configs.k_tiles_per_step(k, 64, cfg)
                out += [cfg, replace(cfg, split_k=awq_configs.nonempty_split(k // (64 * kt), 2 * cfg.split_k))]
    return list(dict.fromkeys(out))


def wgmma_t_candidates(m: int, n: int, k: int, sms: int) -> list:
    """Configs of the transposed kernels worth timing at M. Where the rule takes one warpgroup: its
    tiles and split-K, half that split, and pipelines of 1, 2 or 4 K tiles a step at about the same
    depth in K tiles (deeper for the memory-bound small token tiles), and 128 channels (two wgmmas
    sharing each x tile) with the same and twice the split; above 128 tokens, where N allows, the
    warp-specialised kernel's tiles too. Where the rule takes the warp-specialised kernel above 256
    tokens: both its token tiles, 128-channel consumers (each with split-K where the CTAs fill less
    than a wave), and the one-warpgroup 64 x 256 and 128 x 128 it replaced. Up to 64 tokens: the
    warp-specialised variants with K phases (``ws_small_variants``) and the one-warpgroup rule's
    config with its split-K, half and twice that (and 2 and 4 where its split is none of the cluster
    sizes), and 128 channels in twice its slices; at 65-128 tokens those K-phase variants and the
    one-warpgroup candidates above."""
    base = awq_configs.wgmma_t_config(m, n, k, sms)
    ws = [awq_configs.WgmmaTConfig(bn, bt, stages=3, k_tiles=kt, consumers=2)
          for bn, bt, kt in ((64, 256, 1), (64, 128, 2), (128, 128, 2), (64, 64, 4))]
    if base.consumers > 1 and m > awq_configs.WS_SMALL_M_MAX:
        split = [replace(c, split_k=sp) for c in ws for sp in (2, 3, 4, 6, 8) if n % c.cta_channels == 0
                 and n // c.cta_channels * -(-m // c.block_t) * sp <= sms]   # narrow layers: split-K to one wave
        return ws + split + [awq_configs.WgmmaTConfig(64, 256, stages=st, k_tiles=kt) for st, kt in WGMMA_T_DEPTHS[256]] \
            + [awq_configs.WgmmaTConfig(128, 128, stages=2, k_tiles=2)]
    base = awq_configs.one_warpgroup_config(m, n, k, sms)
    small = ws_small_variants(m, n, k, sms) if m <= awq_configs.WS_SMALL_M_MAX else []
    if m <= 64:
        # a split that does not sum as a cluster (3 on 13B/TP2 qkv, 120 tiles) also gets the
        # neighbouring cluster sizes
        near = [replace(base, split_k=s) for s in (2, 4) if base.split_k not in (1, *awq_configs.WS_SMALL_CLUSTER_SIZES)]
        # 128 channels a program (two wgmmas sharing each x tile) in twice the slices: as many programs
        wide = [replace(base, block_n=128, split_k=2 * base.split_k)] if n % 128 == 0 and base.split_k <= 4 else []
        return small + list(dict.fromkeys(
            [base, replace(base, split_k=max(1, base.split_k // 2)), replace(base, split_k=2 * base.split_k), *near,
             *wide]))
    splits = {base.split_k, max(1, base.split_k // 2)}
    if base.split_k >= awq_configs.WGMMA_MAX_SPLIT:   # capped: try more slices of at least 8 K tiles
        splits |= {s for s in (8, 16) if k // 64 >= 8 * s}
    out = small + [replace(base, stages=st, k_tiles=kt, split_k=sp) for sp in sorted(splits)
           for st, kt in WGMMA_T_DEPTHS[base.block_t]]
    if n % 128 == 0 and base.block_t <= 128:
        out += [replace(base, block_n=128, stages=st, k_tiles=kt, split_k=sp)
                for sp in sorted({base.split_k, min(2 * base.split_k, k // 64 // 8) or 1})
                for st, kt in WGMMA_T_DEPTHS[base.block_t]]
    return out + (ws if m > 128 and n % 128 == 0 else [])


def run_wgmma_t(sms: int, out_dir: str, layers: list, ms: list[int], after_norm: bool = False) -> None:
    """The transposed kernel (weights repacked at load) with each candidate config against cuBLAS
    and awq_gemm's current choice (with that kernel: its default config); every timing to
    wgmma_t_sweep.csv, the best per row printed.

    With ``after_norm`` each timed GEMM reads the output of an RMSNorm launched just before it, as
    qkv and gate_up do in decode, and the norm's own time (timed alone the same way) is subtracted.
    Back to back, a GEMM launched with PDL prefetches its weights while the previous GEMM still
    streams; in decode a norm or attention kernel comes before it instead. (Session 9: the K-phase
    kernel, 1.13x the one-warpgroup kernel on down at M = 1 back to back and 17% slower than it in
    7B decode, stayed 1.12x ahead after a norm too: that loss has another cause.)"""
    from pagedawq.kernels import fused_ops
    from pagedawq.kernels.awq_gemm import _counters
    from pagedawq.kernels.awq_wgmma_t import output_tiles, wgmma_t_gemm
    log(f"{'layer':<22}{'K':>6}{'N':>7}{'M':>6}{'cuBLAS':>8}{'current':>9} {'path':<8}{'best T':>8} {'config':<14}"
        f"{'x cuBLAS':>9}{'x current':>10}{'rel err':>9}")
    with open(os.path.join(out_dir, "wgmma_t_sweep.csv"), "w") as csv:
        csv.write("layer,K,N,M,block_n,block_t,split_k,stages,k_tiles,consumers,k_phases,us,rel_err\n")
        for model, name, k, n in layers:
            layer = Layer(k, n, seed=k + n)
            packed = layer.repacked
            for m in ms:
                x = layer.x(m)
                out = torch.empty(m, n, dtype=torch.float16, device="cuda")
                norm_weight = torch.ones(k, dtype=torch.float16, device="cuda")

                def src(x: torch.Tensor = x) -> torch.Tensor:
                    """The GEMM's input: x, or with ``after_norm`` an RMSNorm's output computed from it."""
                    return fused_ops.rms_norm(x, norm_weight, 1e-5) if after_norm else x
                t_norm = graph_time_us([src] * len(packed), 5, 20) if after_norm else 0.0

                def timed(fns: list) -> float:
                    return graph_time_us(fns, 5, 20) - t_norm
                t_ref = timed([lambda w=w: torch.matmul(src(), w, out=out) for w in layer.fp16])
                path = layer.path(x)
                t_cur = timed([lambda w=w, r=r: awq_gemm(src(), *w, out=out, repacked=r)
                               for w, r in zip(layer.int4, layer.repacked)])
                best = (float("inf"), None, 0.0)
                for cfg in wgmma_t_candidates(m, n, k, sms):
                    if n % cfg.cta_channels:
                        continue
                    cnt = _counters(x.device, output_tiles(m, n, cfg))
                    err = 0.0
                    try:
                        for _ in range(3):   # a race shows as a wrong result on some of the runs
                            poisoned = torch.full_like(out, float("nan"))
                            wgmma_t_gemm(x, *packed[0], cfg, poisoned, cnt)
                            err = max(err, layer.rel_err(m, poisoned.nan_to_num(1e4)))
                    except OutOfResources as e:   # e.g. a ring too deep for the tile
                        log(f"  {model} {name} M={m} {cfg}: skipped ({e})")
                        continue
                    t = timed([lambda p=p, c=cfg: wgmma_t_gemm(src(), *p, c, out, cnt) for p in packed])
                    csv.write(f"{model} {name},{k},{n},{m},{cfg.block_n},{cfg.block_t},{cfg.split_k},{cfg.stages},"
                              f"{cfg.k_tiles},{cfg.consumers},{cfg.k_phases},{t:.2f},{err:.2e}\n")
                    if t < best[0]:
                        best = (t, cfg, err)
                t, cfg, err = best
                label = (f"{cfg.channel_groups}n{cfg.k_phases}k " if cfg.consumers > 1 else "") + \
                    f"{cfg.block_n}x{cfg.block_t}/{cfg.split_k}/s{cfg.stages}/k{cfg.k_tiles}"
                log(f"{model + ' ' + name:<22}{k:>6}{n:>7}{m:>6}{t_ref:>8.1f}{t_cur:>9.1f} {path:<8}{t:>8.1f} "
                    f"{label:<14}{t_ref / t:>9.2f}{t_cur / t:>10.2f}{err:>9.1e}")
                layer._ref.clear()
            del layer, packed
            torch.cuda.empty_cache()


SILU_MS = [1, 4, 16, 64, 256, 1024]


def run_silu_epilogue(models: list[str], ms: list[int]) -> None:
    """The gate/up GEMM followed by ``silu_and_mul`` (two kernels, as the MLP ran them until session 7)
    against one "wgmma_t" launch whose epilogue applies the activation (``awq_gemm_silu_and_mul``),
    on each model's gate_up layer; both round-robin over weight copies in one CUDA graph."""
    from pagedawq.kernels import ops
    from pagedawq.kernels.awq_gemm import awq_gemm_silu_and_mul
    log(f"{'layer':<24}{'K':>6}{'N':>7}{'M':>6}{'gemm+silu':>11}{'fused':>8}{'speed-up':>10}{'rel err':>9}")
    for model in models:
        (k, n), = [(k, n) for name, k, n in {**MODELS, **TP_MODELS}[model] if name == "gate_up"]
        layer = Layer(k, n, seed=k + n)
        fused = [repack_for_wgmma_t(*w, silu_and_mul=True) for w in layer.int4]
        for m in ms:
            x = layer.x(m)
            t_two = graph_time_us([lambda w=w, r=r: ops.silu_and_mul(awq_gemm(x, *w, repacked=r))
                                   for w, r in zip(layer.int4, layer.repacked)], 5, 20)
            t_one = graph_time_us([lambda w=w, f=f: awq_gemm_silu_and_mul(x, *w, f)
                                   for w, f in zip(layer.int4, fused)], 5, 20)
            small = x / 8   # the error check: silu(gate) * up of the unscaled x overflows fp16 on wide layers
            ref = ops.silu_and_mul(awq_gemm(small, *layer.int4[0], repacked=layer.repacked[0])).double()
            err = float((awq_gemm_silu_and_mul(small, *layer.int4[0], fused[0]).double() - ref).norm() / ref.norm())
            log(f"{model + ' gate_up':<24}{k:>6}{n:>7}{m:>6}{t_two:>11.1f}{t_one:>8.1f}{t_two / t_one:>10.2f}"
                f"{err:>9.1e}")
        del layer, fused
        torch.cuda.empty_cache()


def run_gemv(sms: int, bw: float, out_dir: str, models: list[str]) -> None:
    """cuBLAS fp16 vs the splitk path vs the GEMV path (default config, and the best of a sweep at
    M <= 4) on the layers of ``models``, all in this run."""
    rows = [(model, name, k, n) for model in models for name, k, n in {**MODELS, **TP_MODELS}[model]]
    layers = {}
    for _, _, k, n in rows:
        if (k, n) not in layers:
            layers[(k, n)] = Layer(k, n, seed=k * 7 + n)
    header = (f"{'model':<11}{'layer':<8}{'K':>6}{'N':>7}{'M':>4}{'cuBLAS':>8}{'splitk':>8}{'gemv':>8}"
              f"{'best':>8} {'best cfg':<12}{'x cuBLAS':>9}{'x splitk':>9}{'GB/s':>6}{'%floor':>7}{'rel err':>9}")
    lines = [header]
    log(header)
    tuned = {}
    done: dict[tuple[int, int, int], str] = {}
    csv = open(os.path.join(out_dir, "gemv_sweep.csv"), "w")
    csv.write("K,N,M,name,config,us,rel_err\n")
    for model, name, k, n in rows:
        layer = layers[(k, n)]
        for m in GEMV_MS:
            if (k, n, m) in done:
                lines.append(f"{model:<11}{name:<8}" + done[(k, n, m)])
                log(lines[-1])
                continue
            x = layer.x(m)
            out16 = torch.empty(m, n, dtype=torch.float16, device="cuda")
            t_ref = graph_time_us([lambda w=w: torch.matmul(x, w, out=out16) for w in layer.fp16], 10, 50)
            out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
            t_sk = graph_time_us([lambda w=w: awq_gemm(x, *w, out=out, path="splitk") for w in layer.int4], 10, 50)
            cands = gemv_candidates(m, n, k, GROUP, sms) if m <= awq_configs.GEMV_BLOCK_M_MAX else \
                [("default", gemv_config(m, n, k, GROUP, sms))]
            res = {}
            err_default = float("nan")
            for cname, cfg in cands:
                try:
                    out.fill_(float("nan"))
                    gemv(x, layer.qweight, layer.qzeros, layer.scales, cfg, out)
                    err = layer.rel_err(m, out)
                    if not err < 2e-3:
                        raise RuntimeError(f"rel err {err:.2e}")
                    fns = [lambda w=w, cfg=cfg: gemv(x, *w, cfg, out) for w in layer.int4]
                    t = graph_time_us(fns, 10, 50) if cname == "default" else graph_time_us(fns, 5, 20)
                except Exception as e:
                    log(f"  skip {k}x{n} M={m} {cname} {cfg}: {str(e).splitlines()[0][:200]}")
                    continue
                res[cname] = (t, cfg, err)
                if cname == "default":
                    err_default = err
                csv.write(f"{k},{n},{m},{cname},\"{cfg}\",{t:.2f},{err:.2e}\n")
            if not res:
                continue
            best_name = min(res, key=lambda c: res[c][0])
            t_best, cfg_best, _ = res[best_name]
            t_def = res.get("default", (float("nan"),))[0]
            if m <= awq_configs.GEMV_BLOCK_M_MAX and best_name != "default" and t_best < 0.97 * t_def:
                tuned[(gemv_block_m(m), n, k)] = cfg_best
            t_gemv = min(t_best, t_def)
            floor = layer.bytes(m) / (bw * 1e9) * 1e6
            cell = (f"{k:>6}{n:>7}{m:>4}{t_ref:>8.1f}{t_sk:>8.1f}{t_def:>8.1f}{t_best:>8.1f} {best_name:<12}"
                    f"{t_ref / t_gemv:>9.2f}{t_sk / t_gemv:>9.2f}{layer.bytes(m) / t_gemv / 1e3:>6.0f}"
                    f"{100 * floor / t_gemv:>6.0f}%{err_default:>9.1e}")
            done[(k, n, m)] = cell
            lines.append(f"{model:<11}{name:<8}" + cell)
            log(lines[-1])
        layer._ref.clear()
    csv.close()
    log("\n" + "\n".join(lines))
    log("\n# GEMV_TUNED entries (sweep winners >3% faster than the default):")
    for key in sorted(tuned):
        log(f"    {key}: {tuned[key]!r},")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a subset of layers and M")
    ap.add_argument("--rounds", type=int, default=3,
                    help="the table's cuBLAS and AWQ timings, in turn, this many times a cell (medians)")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS),
                    help="the table's models (default: all; issue 4 names llama2-7b llama3-8b llama2-70b-tp8)")
    ap.add_argument("--tune", action="store_true", help="sweep configurations first and apply them")
    ap.add_argument("--tune-buckets", type=lambda v: [int(b) for b in v.split(",")], default=TUNE_BUCKETS,
                    help="M buckets to tune (comma-separated)")
    ap.add_argument("--tune-budget", type=float, default=1e9, help="seconds after which no new shape is tuned")
    ap.add_argument("--gemv", action="store_true", help="the GEMV path vs cuBLAS and splitk at M = 1-16")
    ap.add_argument("--warm-only", action="store_true", help="with --gemv: only compile the GEMV kernels")
    ap.add_argument("--gemv-models", nargs="+", default=list(GEMV_MODELS), choices=[*MODELS, *TP_MODELS],
                    help="with --gemv: whose layers (default: %(default)s)")
    ap.add_argument("--dequant", action="store_true", help="the dequantize kernel and the large-M path")
    ap.add_argument("--wgmma-t", action="store_true", help="the transposed Hopper kernels at M = 1-4096")
    ap.add_argument("--wgmma-t-models", nargs="+", default=None, choices=sorted({r[0] for r in WGMMA_T_LAYERS}),
                    help="with --wgmma-t: only these models' layers")
    ap.add_argument("--wgmma-t-layers", nargs="+", default=None, choices=["qkv", "o", "gate_up", "down"],
                    help="with --wgmma-t: only these layers of each model")
    ap.add_argument("--ms", type=int, nargs="+", default=None, help="with --wgmma-t: these M (default: %s)" % WGMMA_T_MS)
    ap.add_argument("--after-norm", action="store_true",
                    help="with --wgmma-t: each GEMM reads an RMSNorm's output launched just before it (its time "
                         "subtracted), as in decode, instead of following the previous GEMM")
    ap.add_argument("--silu-epilogue", nargs="*", default=None, choices=[*MODELS, *TP_MODELS], metavar="MODEL",
                    help="gate_up GEMM + silu_and_mul vs the fused epilogue (default models: llama2-7b "
                         "llama2-13b-tp2 llama2-70b-tp8), at --ms (default: %s)" % SILU_MS)
    ap.add_argument("--out-dir", default=os.environ.get("OUT", "."), help="where tuned.txt / tune.csv go")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/kernels.py needs a CUDA GPU")

    props = torch.cuda.get_device_properties(0)
    sms = props.multi_processor_count
    if args.gemv and args.warm_only:
        warm_gemv(sms)
        return
    log(f"device: {props.name}, {sms} SMs; torch {torch.__version__}, triton {triton.__version__}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}")
    bw, peak = measure_ceilings()
    log(f"measured: copy bandwidth {bw:.0f} GB/s, fp16 matmul {peak:.0f} TFLOP/s")
    if args.gemv:
        run_gemv(sms, bw, args.out_dir, args.gemv_models)
        return
    if args.dequant:
        run_dequant(bw)
        return
    if args.silu_epilogue is not None:
        run_silu_epilogue(args.silu_epilogue or ["llama2-7b", "llama2-13b-tp2", "llama2-70b-tp8"], args.ms or SILU_MS)
        return
    if args.wgmma_t:
        run_wgmma_t(sms, args.out_dir, [r for r in WGMMA_T_LAYERS if (args.wgmma_t_models is None
                                        or r[0] in args.wgmma_t_models) and (args.wgmma_t_layers is None
                                        or r[1] in args.wgmma_t_layers)], args.ms or WGMMA_T_MS, args.after_norm)
        return

    rows = [(model, name, k, n) for model, layers in MODELS.items() if model in args.models for name, k, n in layers
            if not args.quick or (model, name) in QUICK_LAYERS]
    layers = {}
    for _, _, k, n in rows:
        if (k, n) not in layers:
            layers[(k, n)] = Layer(k, n, seed=k * 7 + n)

    if args.tune:
        t0 = time.time()
        with open(os.path.join(args.out_dir, "tune.csv"), "w") as csv:
            table = tune(layers, sms, csv, args.tune_budget, args.tune_buckets)
        awq_configs.TUNED.update(table)
        awq_configs.choose.cache_clear()
        awq_configs.get_config.cache_clear()
        with open(os.path.join(args.out_dir, "tuned.txt"), "w") as f:
            for key in sorted(table):
                path, cfg = table[key]
                f.write(f"    {key}: ({path!r}, {cfg!r}),\n")
        log(f"tuned {len(table)} entries in {time.time() - t0:.0f} s -> {args.out_dir}/tuned.txt")

    ms = QUICK_MS if args.quick else MS
    log(f"each cell: the medians of {args.rounds} rounds of cuBLAS then AWQ, each the marginal call of back-to-back "
        "graphs (graph_time_us)")
    header = (f"{'model':<15}{'layer':<8}{'K':>6}{'N':>7}{'M':>6} {'path':<8}{'cuBLAS us':>10}{'awq us':>9}"
              f"{'speedup':>8}{'GB/s':>7}{'TFLOP/s':>8}{'floor us':>9}{'%floor':>7}{'rel err':>9}")
    lines = [header]
    done: dict[tuple[int, int, int], str] = {}
    for model, name, k, n in rows:
        layer = layers[(k, n)]
        for m in ms:
            if (k, n, m) in done:  # the same layer shape in another model
                lines.append(f"{model:<15}{name:<8}" + done[(k, n, m)])
                log(lines[-1])
                continue
            x = layer.x(m)
            out16 = torch.empty(m, n, dtype=torch.float16, device="cuda")
            out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
            awq_gemm(x, layer.qweight, layer.qzeros, layer.scales, out=out, repacked=layer.repacked[0])
            err = layer.rel_err(m, out)
            t_ref, t = interleaved_medians([lambda w=w: torch.matmul(x, w, out=out16) for w in layer.fp16],
                                           layer.awq_fns(x, out), args.rounds)
            path = layer.path(x)
            nbytes, flops = layer.bytes(m), 2 * m * n * k
            floor = max(nbytes / (bw * 1e9), flops / (peak * 1e12)) * 1e6
            cell = (f"{k:>6}{n:>7}{m:>6} {path:<8}{t_ref:>10.1f}{t:>9.1f}{t_ref / t:>8.2f}"
                    f"{nbytes / t / 1e3:>7.0f}{flops / t / 1e6:>8.1f}{floor:>9.1f}{100 * floor / t:>6.0f}%{err:>9.1e}")
            done[(k, n, m)] = cell
            lines.append(f"{model:<15}{name:<8}" + cell)
            log(lines[-1])
        layer._ref.clear()
    log("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
