"""Launch configurations for the AWQ int4 GEMM: which path, which tiles, how much split-K.

Paths (``awq_gemm`` picks by M, or takes ``path=``):

* ``"gemv"`` (M <= GEMV_M_MAX, CUDA only): no tensor cores and no shared memory; each thread
  unpacks its own words in registers and multiplies by the few activation rows with fp32 FMAs
  (``awq_gemv_kernel``), split-K so that the whole GPU streams the weight once. Chosen
  automatically only on CUDA (under the interpreter the default stays "splitk", which the older
  tests expect; ``path="gemv"`` works everywhere).

* ``"splitk"`` (M <= 32): memory-bound. The weight is 3.6x smaller than fp16 but still the
  whole cost, so the goal is every SM streaming it at once: BLOCK_M 16/32 (the tensor cores idle
  anyway), BLOCK_N 64, and split-K until output tiles x splits fill the GPU a few times over.
  BLOCK_N 64 won on every benchmark shape: the kernel is bound by shared-memory traffic (the
  dequantized tile's trip into the mma layout), so more small programs per SM beat wider rows.
* ``"tc"`` (32 < M <= 256): tensor-core tiles (wgmma from BLOCK_M 64), dequantized in
  registers, split-K only when the tile grid alone cannot fill the GPU.
* ``"wgmma_t"`` (M >= WGMMA_T_M_MIN, Hopper, fp16, weights repacked at load;
  ``awq_wgmma_t``): the transposed product with the weights as wgmma's register operand. Where
  it can run (``awq_gemm(..., repacked=...)``) it is taken before every other path: it beat all of
  them at every M measured (1-4096; warp-specialised above 256 tokens and at 33-64 tokens on
  layers with few channel tiles, ``awq_wgmma_t_ws``).
  ``wgmma_t_config`` picks its tiles.
* ``"dequant"`` (M > 256): the weight is dequantized once per call (a Triton kernel) and cuBLAS
  does the product; on the H100 this beat the fused kernel from M = 512 (sometimes 256) on.

A table measured on the H100 (``benchmarks/kernels.py --tune``; numbers in
benchmarks/notes/awq_gemm.md) gives the path and configuration for the benchmark shapes per M
bucket; heuristics cover every other shape. Choices are cached per (M, N, K, G, SMs).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

GEMV_M_MAX = 2       # at or below (on CUDA): the register-only GEMV path (crossover, H100 2026-11-25)
GEMV_BLOCK_M_MAX = 4  # rows per GEMV program; a larger M runs several row blocks
SMALL_M_MAX = 32     # at or below: the split-K streaming path
LARGE_M_MIN = 257    # at or above: dequantize + cuBLAS (won at M >= 512 on every benchmark shape)
WGMMA_MAX_SPLIT = 4   # split-K slices of the "wgmma_t" path (16 for the narrowest layers, see wgmma_t_config)
WGMMA_T_M_MIN = 1    # the "wgmma_t" path serves every M from here: it beat the GEMV at M = 1 (1.02-1.27x),
                     # every other path up to 2048 on the Llama-2-7B and 13B/TP=2 layers, and (warp-
                     # specialised) dequantize + cuBLAS at 4096 (H100, 2026-11-26)
WS_M_MIN = 257       # from here on: the warp-specialised kernel (awq_wgmma_t_ws) where N % 128 == 0
WS_MAX_SPLIT = 8     # split-K slices of the warp-specialised kernel above 256 tokens (narrow layers)
WS_SMALL_M_MAX = 128  # up to here: the warp-specialised kernel with K phases where channel tiles are few ...
WS_SMALL_BLOCK_TS = (64, 128)   # ... at these token tiles, ...
WS_DECODE_BLOCK_TS = (8, 16)     # ... and at these for a gate/up pair with the SiLU epilogue, unsplit,
WS_DECODE_MIN_FILL = 0.8         # where its CTAs fill this share of the SMs
# GPUs whose memory streams faster than the H100's 3.35 TB/s (a substring of the device name, so
# GH200 too): at the 8-token tile they want more one-warpgroup programs an SM in flight, and no
# K-phase gate/up (``has_fast_memory``)
FAST_MEMORY_GPUS = ("H200",)
FAST_MEMORY_PROGRAMS_PER_SM = 3
WS_SMALL_CLUSTER_SIZES = (2, 4, 8)   # the cluster sizes the kernels launch (clusters.CLUSTER_SIZES)
# Token tiles up to which the one-warpgroup kernel's split-K slices sum as a cluster
# (``awq_wgmma_t.cluster_reduces``). H100, 2026-11-26 (benchmarks/notes/awq_gemm.md, session 12): at
# 1-16 tokens 7B o 7.8 -> 6.7-6.8 us, qkv 14.6 -> 13.1, down 13.8 -> 13.0-13.2, the batch-1 decode graph
# 0.98x; at 128 tokens 7B down 31.9 -> 41 us (33 KB of partials beside a 74 KB program, clusters of 4
# to place), though 70B/TP=8 qkv gained there (18.0 -> 14.2).
CLUSTER_MAX_T = 32
WS_SMALL_STAGES_MAX = 8
SMEM_BYTES = 227 * 1024   # the most shared memory of an H100 CTA
WGMMA_T_BLOCK_TS = (8, 16, 32, 64, 128, 256)          # token tiles: wgmma's N, a multiple of 8 up to 256
DEFAULT_SMS = 132    # H100 SXM; used when the tensors are not on a CUDA device (interpreter)


@dataclass(frozen=True)
class GemmConfig:
    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    group_m: int = 8
    scale_w: bool = False  # scale each weight before the dot (else the fp32 product per K tile)
    num_warps: int = 4
    num_stages: int = 3


@dataclass(frozen=True)
class GemvConfig:
    """Launch configuration of ``awq_gemv_kernel`` (the "gemv" path).

    ``vec``: packed words per thread and weight row (one vector load of 4 vec bytes; 8 vec output
    columns per thread, hence 8 vec BLOCK_M fp32 accumulators a thread).
    ``prefetch_scales``: load the next tile's scales with its weights (more registers, no stall
    on the scales' first read); the next K tile's words are always prefetched into registers.
    ``maxnreg``: cap on registers per thread (None: the compiler's choice), so more programs fit
    on an SM and more loads are in flight; spills if set too low.
    ``awq_configs.gemv_params`` adapts a config to a shape."""
    block_n: int = 256
    block_k: int = 64
    split_k: int = 1
    vec: int = 2
    num_warps: int = 4
    prefetch_scales: bool = True
    maxnreg: int | None = None


@dataclass(frozen=True)
class WgmmaTConfig:
    """Launch configuration of the "wgmma_t" path (out^T = W^T x^T): BLOCK_N output channels per
    warpgroup (64 or 128: one or two m64 wgmmas a K step sharing the x tile), BLOCK_T tokens (wgmma's
    N), STAGES pipeline steps in flight of K_TILES K tiles each, SPLIT_K slices of K per output tile.

    ``consumers`` = 1: ``awq_wgmma_t_kernel``, a program of one warpgroup. 2 or 4: the
    warp-specialised ``awq_wgmma_t_ws`` kernel, a CTA of one TMA warp and ``consumers`` warpgroups:
    ``consumers / k_phases`` channel groups of BLOCK_N channels (sharing each x tile) times
    ``k_phases`` consumers of each group taking turns over the CTA's K steps (split-K inside the CTA,
    summed in shared memory)."""
    block_n: int
    block_t: int
    stages: int = 4
    split_k: int = 1
    k_tiles: int = 1      # K tiles of 64 a pipeline step (1, 2 or 4; lowered to one that divides K / 64)
    consumers: int = 1
    k_phases: int = 1

    @property
    def num_warps(self) -> int:
        return 4

    @property
    def channel_groups(self) -> int:
        return self.consumers // self.k_phases

    @property
    def cta_channels(self) -> int:
        """Output channels one program (CTA) covers."""
        return self.channel_groups * self.block_n


def nonempty_split(k_tiles: int, split: int) -> int:
    """``split`` (clamped to 1..k_tiles) lowered until every K slice of ceil(k_tiles / split) tiles
    has work: the split-K kernels' grids never hold an empty slice."""
    split = max(1, min(split, k_tiles))
    return -(-k_tiles // -(-k_tiles // split))


def k_tiles_per_step(k: int, group: int, cfg: WgmmaTConfig) -> int:
    """``cfg.k_tiles`` lowered to the largest of 4, 2, 1 that divides K's tiles of 64 and whose step
    holds whole groups or lies inside one (a step loads its groups' zero/scale rows at once)."""
    kt = cfg.k_tiles
    while (k // 64) % kt or (group % (64 * kt) and (64 * kt) % group):
        kt //= 2
    return kt


def reduction_chunk(cfg: GemmConfig) -> int:
    """Split-K slices the last program of an ``awq_gemm_kernel`` tile loads at once when it sums
    the partials: as many as keep about 64 values a thread (a power of two; 1 for tiles of 64+
    values a thread, which then loop over the slices)."""
    return max(1, 64 * 32 * cfg.num_warps // (cfg.block_m * cfg.block_n))


def gemv_block_m(m: int) -> int:
    """Rows per GEMV program: M rounded up to a power of two, at most GEMV_BLOCK_M_MAX."""
    b = 1
    while b < min(m, GEMV_BLOCK_M_MAX):
        b *= 2
    return b


def gemv_params(cfg: GemvConfig, n8: int, k: int, group: int) -> tuple[int, int, int, int]:
    """(VEC, BLOCK_N, BLOCK_K, R) that ``awq_gemv_kernel`` runs ``cfg`` with on a K x 8 n8 layer.

    * VEC halves until it divides N/8 (the kernel's vector loads need VEC-aligned rows).
    * BLOCK_N <= 128 VEC: the words of a row take at most 16 lanes. With all 32 lanes on one row
      Triton's layouts for the activations and the epilogue no longer match the tile's and it
      inserts dozens of layout conversions (seen in the sm_90 SASS, 2026-11-25).
    * R = the rows of the word tile that lanes and warps cover once the word dimension has its
      lanes (Triton's default blocked layout fills the contiguous dimension first); the
      remaining U = BLOCK_K / R rows stay inside each thread.
    * BLOCK_K divides the group size, and BLOCK_K < 32 num_warps: an activation tile with fewer
      elements than threads is loaded straight in the layout the product needs; a larger one
      becomes a layout anchor and the whole weight tile is converted instead (measured: spills
      and shared-memory traffic). Also U <= 8 (the FMA chain is written for U = 2, 4, 8).
    """
    vec = cfg.vec
    while vec > 1 and n8 % vec:
        vec //= 2
    bn = max(8 * vec, min(cfg.block_n, 128 * vec))
    bn8 = bn // 8
    lanes_n = min(16, bn8 // vec)
    rows = (32 // lanes_n) * cfg.num_warps
    bk = fit_block_k(min(cfg.block_k, 16 * cfg.num_warps, 8 * rows), group)
    while k % bk:
        bk //= 2
    return vec, bn, bk, max(1, min(rows, bk))


def m_bucket(m: int) -> int:
    """Round M up to a power of two (min 16): configs are chosen per bucket, not per M."""
    b = 16
    while b < m:
        b *= 2
    return b


def fit_block_k(want: int, group: int) -> int:
    """Largest BLOCK_K <= want that divides the group size (K tiles never straddle groups)."""
    bk = want
    while bk >= 16:
        if group % bk == 0:
            return bk
        bk //= 2
    raise ValueError(f"AWQ group size {group} is not a multiple of 16; the Triton kernels cannot tile it")


def select_path(m: int, gemv: bool = False) -> str:
    if gemv and m <= GEMV_M_MAX:
        return "gemv"
    if m <= SMALL_M_MAX:
        return "splitk"
    if m < LARGE_M_MIN:
        return "tc"
    return "dequant"


def _pow2_at_most(n: int, cap: int) -> int:
    b = 16
    while b * 2 <= min(n, cap):
        b *= 2
    return b


def _split_for(tiles: int, k_tiles: int, sms: int, waves: int) -> int:
    """Split-K so that tiles * split reaches ``waves`` programs per SM, keeping >= 2 K tiles each."""
    if tiles >= waves * sms:
        return 1
    split = -(-waves * sms // tiles)
    return max(1, min(split, k_tiles // 2, 32))


def heuristic_config(path: str, m: int, n: int, k: int, group: int, sms: int) -> GemmConfig:
    if path == "splitk":
        bm = 16 if m <= 16 else 32
        bn = _pow2_at_most(n, 64)
        bk = fit_block_k(min(128, _pow2_at_most(k, 128)), group)
        tiles = -(-n // bn)
        split = _split_for(tiles, k // bk, sms, waves=4)
        return GemmConfig(bm, bn, bk, split_k=split, num_warps=4, num_stages=4)
    if path == "tc":
        bm = 64 if m <= 64 else 128
        bn = _pow2_at_most(n, 128)
        bk = fit_block_k(min(128 if bm == 64 else 64, _pow2_at_most(k, 128)), group)
        tiles = -(-m // bm) * -(-n // bn)
        split = _split_for(tiles, k // bk, sms, waves=1)
        return GemmConfig(bm, bn, bk, split_k=split, scale_w=True, num_warps=4 if bm == 64 else 8,
                          num_stages=3)
    raise ValueError(f"no GEMM kernel configuration for path {path!r}")


# Measured on one H100 SXM 80GB, 2026-11-25 (benchmarks/kernels.py --tune, group 128, fp16, CUDA-graph
# timing over rotating weights):
# (M bucket, N, K) -> (path, config; None for "dequant").
TUNED: dict[tuple[int, int, int], tuple[str, GemmConfig | None]] = {
    (16, 1280, 8192): ('splitk', GemmConfig(16, 64, 128, split_k=13, num_stages=4)),
    (16, 4096, 4096): ('splitk', GemmConfig(16, 64, 128, split_k=4, num_stages=4)),
    (16, 4096, 11008): ('splitk', GemmConfig(16, 64, 128, split_k=8, num_stages=4)),
    (16, 4096, 14336): ('splitk', GemmConfig(16, 64, 128, split_k=8, num_stages=4)),
    (16, 6144, 4096): ('splitk', GemmConfig(16, 64, 128, split_k=6, num_stages=4)),
    (16, 7168, 8192): ('splitk', GemmConfig(16, 64, 128, split_k=9, num_stages=4)),
    (16, 8192, 1024): ('splitk', GemmConfig(16, 64, 128, num_stages=4)),
    (16, 8192, 3584): ('splitk', GemmConfig(16, 64, 128, split_k=4, num_stages=4)),
    (16, 12288, 4096): ('splitk', GemmConfig(16, 64, 128, split_k=6, num_stages=4)),
    (16, 22016, 4096): ('splitk', GemmConfig(16, 64, 128, num_stages=4)),
    (16, 28672, 4096): ('splitk', GemmConfig(16, 64, 128, split_k=2, num_stages=4)),
    (32, 1280, 8192): ('splitk', GemmConfig(32, 64, 128, split_k=13, num_stages=4)),
    (32, 4096, 4096): ('splitk', GemmConfig(32, 64, 128, split_k=4, num_stages=4)),
    (32, 4096, 11008): ('splitk', GemmConfig(32, 64, 128, split_k=4, num_stages=4)),
    (32, 4096, 14336): ('splitk', GemmConfig(32, 64, 128, split_k=4, num_stages=4)),
    (32, 6144, 4096): ('splitk', GemmConfig(32, 128, 128, split_k=6, num_stages=4)),
    (32, 7168, 8192): ('splitk', GemmConfig(32, 64, 128, split_k=2, num_stages=4)),
    (32, 8192, 1024): ('splitk', GemmConfig(32, 64, 128, split_k=2, num_stages=4)),
    (32, 8192, 3584): ('splitk', GemmConfig(32, 64, 128, split_k=2, num_stages=4)),
    (32, 12288, 4096): ('splitk', GemmConfig(32, 128, 128, split_k=6)),
    (32, 22016, 4096): ('splitk', GemmConfig(32, 64, 128, num_stages=4)),
    (32, 28672, 4096): ('splitk', GemmConfig(32, 128, 128, num_stages=4)),
    (64, 1280, 8192): ('tc', GemmConfig(64, 128, 128, split_k=13, scale_w=True, num_stages=4)),
    (64, 4096, 4096): ('tc', GemmConfig(64, 128, 64, split_k=4, scale_w=True, num_stages=4)),
    (64, 4096, 11008): ('tc', GemmConfig(64, 128, 64, split_k=4, scale_w=True, num_stages=4)),
    (64, 4096, 14336): ('tc', GemmConfig(64, 128, 128, split_k=4, scale_w=True, num_stages=4)),
    (64, 6144, 4096): ('tc', GemmConfig(64, 128, 128, split_k=3, scale_w=True)),
    (64, 7168, 8192): ('tc', GemmConfig(64, 128, 128, split_k=2, scale_w=True, num_stages=4)),
    (64, 8192, 1024): ('tc', GemmConfig(64, 128, 128, split_k=2, scale_w=True, num_stages=4)),
    (64, 8192, 3584): ('tc', GemmConfig(64, 128, 128, split_k=2, scale_w=True, num_stages=4)),
    (64, 12288, 4096): ('tc', GemmConfig(64, 128, 128, scale_w=True, num_stages=4)),
    (64, 22016, 4096): ('tc', GemmConfig(64, 128, 128, scale_w=True)),
    (64, 28672, 4096): ('tc', GemmConfig(64, 128, 128, scale_w=True)),
    (128, 1280, 8192): ('tc', GemmConfig(64, 128, 128, split_k=7, scale_w=True)),
    (128, 4096, 4096): ('tc', GemmConfig(128, 128, 64, split_k=4, scale_w=True, num_warps=8)),
    (128, 4096, 11008): ('tc', GemmConfig(128, 128, 64, split_k=4, scale_w=True, num_warps=8)),
    (128, 4096, 14336): ('tc', GemmConfig(128, 128, 64, split_k=4, scale_w=True, num_warps=8)),
    (128, 6144, 4096): ('tc', GemmConfig(64, 128, 128, scale_w=True)),
    (128, 7168, 8192): ('tc', GemmConfig(128, 128, 64, split_k=2, scale_w=True, num_warps=8)),
    (128, 8192, 1024): ('tc', GemmConfig(64, 128, 128, scale_w=True)),
    (128, 8192, 3584): ('tc', GemmConfig(128, 128, 64, split_k=2, scale_w=True, num_warps=8)),
    (128, 12288, 4096): ('tc', GemmConfig(64, 128, 128, scale_w=True)),
    (128, 22016, 4096): ('tc', GemmConfig(64, 128, 64, scale_w=True, num_stages=4)),
    (128, 28672, 4096): ('tc', GemmConfig(64, 128, 128, scale_w=True)),
    (256, 1280, 8192): ('dequant', None),
    (256, 4096, 4096): ('dequant', None),
    (256, 4096, 11008): ('dequant', None),
    (256, 4096, 14336): ('tc', GemmConfig(128, 128, 64, split_k=2, scale_w=True, num_warps=8)),
    (256, 6144, 4096): ('dequant', None),
    (256, 7168, 8192): ('tc', GemmConfig(64, 128, 128, scale_w=True)),
    (256, 8192, 1024): ('tc', GemmConfig(64, 128, 128, scale_w=True)),
    (256, 8192, 3584): ('tc', GemmConfig(64, 128, 128, scale_w=True)),
    (256, 12288, 4096): ('tc', GemmConfig(64, 128, 64, scale_w=True, num_stages=4)),
    (256, 22016, 4096): ('tc', GemmConfig(64, 128, 128, scale_w=True)),
    (256, 28672, 4096): ('tc', GemmConfig(64, 128, 64, scale_w=True, num_stages=4)),
    (512, 1280, 8192): ('dequant', None),
    (512, 4096, 4096): ('dequant', None),
    (512, 4096, 11008): ('dequant', None),
    (512, 4096, 14336): ('dequant', None),
    (512, 6144, 4096): ('dequant', None),
    (512, 7168, 8192): ('dequant', None),
    (512, 8192, 1024): ('dequant', None),
    (512, 8192, 3584): ('dequant', None),
    (512, 12288, 4096): ('dequant', None),
    (512, 22016, 4096): ('dequant', None),
    (512, 28672, 4096): ('dequant', None),
    (1024, 1280, 8192): ('dequant', None),
    (1024, 4096, 4096): ('dequant', None),
    (1024, 4096, 11008): ('dequant', None),
    (1024, 4096, 14336): ('dequant', None),
    (1024, 6144, 4096): ('dequant', None),
    (1024, 7168, 8192): ('dequant', None),
    (1024, 8192, 1024): ('dequant', None),
    (1024, 8192, 3584): ('dequant', None),
    (1024, 12288, 4096): ('dequant', None),
    (1024, 22016, 4096): ('dequant', None),
    (1024, 28672, 4096): ('dequant', None),
    (4096, 1280, 8192): ('dequant', None),
    (4096, 4096, 4096): ('dequant', None),
    (4096, 4096, 11008): ('dequant', None),
    (4096, 4096, 14336): ('dequant', None),
    (4096, 6144, 4096): ('dequant', None),
    (4096, 7168, 8192): ('dequant', None),
    (4096, 8192, 1024): ('dequant', None),
    (4096, 8192, 3584): ('dequant', None),
    (4096, 12288, 4096): ('dequant', None),
    (4096, 22016, 4096): ('dequant', None),
    (4096, 28672, 4096): ('dequant', None),
}


# GEMV configurations measured on one H100 SXM, 2026-11-25 (benchmarks/kernels.py --gemv: sweep
# winners more than 3% faster than the heuristic of that run, each checked against the float64
# product in the run): (rows per program, N, K) -> GemvConfig. Other shapes: ``gemv_heuristic``.
GEMV_TUNED: dict[tuple[int, int, int], GemvConfig] = {
    (1, 22016, 4096): GemvConfig(256, 64, split_k=7, vec=2, num_warps=4, prefetch_scales=False),
    (1, 28672, 4096): GemvConfig(256, 64, split_k=5, vec=2, num_warps=4, prefetch_scales=False),
    (2, 4096, 11008): GemvConfig(128, 64, split_k=13, vec=2, num_warps=4),
    (2, 4096, 14336): GemvConfig(128, 64, split_k=13, vec=2, num_warps=4),
    (2, 22016, 4096): GemvConfig(128, 64, split_k=3, vec=2, num_warps=4),
    (2, 28672, 4096): GemvConfig(128, 64, split_k=2, vec=2, num_warps=4),
    (4, 4096, 4096): GemvConfig(128, 64, split_k=8, vec=2, num_warps=4),
    (4, 12288, 4096): GemvConfig(256, 64, split_k=12, vec=2, num_warps=4),
    (4, 22016, 4096): GemvConfig(256, 64, split_k=8, vec=2, num_warps=4),
    (4, 28672, 4096): GemvConfig(256, 64, split_k=6, vec=2, num_warps=4),
    # Second sweep (H100, 2026-11-26): Llama-2-13B and its TP=2 shards, with register caps
    # (M <= 2 only: M = 3-4 run the splitk path).
    (1, 13824, 5120): GemvConfig(256, 64, split_k=12, vec=2, num_warps=4, prefetch_scales=False, maxnreg=96),
    (1, 27648, 5120): GemvConfig(256, 64, split_k=6, vec=2, num_warps=4, prefetch_scales=False, maxnreg=96),
    (2, 5120, 2560): GemvConfig(128, 64, split_k=8, vec=2, num_warps=4),
    (2, 5120, 13824): GemvConfig(256, 64, split_k=18, vec=2, num_warps=4, prefetch_scales=False),
    (2, 27648, 5120): GemvConfig(256, 64, split_k=7, vec=2, num_warps=4, prefetch_scales=False),
}


def gemv_split(cfg: GemvConfig, m: int, n: int, k: int, group: int, sms: int, resident: int | None = None) -> int:
    """Split-K for ``cfg``: the split (as the launcher normalizes it, no empty K slices) whose
    programs fill their waves best, the fewest splits among near-ties, at most two waves.

    ``resident``: programs per SM at once (default 4, 3, 2 at BLOCK_M 1, 2, 4: 128 / 168 / 255
    registers a thread at the default tile). The fp32 workspace (8 bytes per output per split,
    written once and read once) stays under ~12% of the weight bytes (K N / 2). Why waves: in the
    first H100 sweep (notes, 2026-11-25) a grid of 1.14 waves (gate_up, M = 1, 602 programs for 528
    slots) ran 10% slower than the same kernel with 5 slots per SM, and at M = 2 a 1.09-wave grid
    lost 20% to one of 0.98 waves."""
    bm = gemv_block_m(m)
    _, bn, bk, _ = gemv_params(cfg, n // 8, k, group)
    tiles = -(-n // bn) * -(-m // bm)
    k_tiles = k // bk
    slots = (resident or {1: 4, 2: 3, 4: 2}[bm]) * sms
    cap = max(1, min(k_tiles, k // (128 * bm), 2 * slots // tiles))
    best, best_fill = 1, -1.0
    for want in range(1, cap + 1):
        split = -(-k_tiles // -(-k_tiles // want))
        programs = tiles * split
        fill = programs / (-(-programs // slots) * slots)
        if fill > best_fill + 0.02:
            best, best_fill = split, fill
    return best


def gemv_heuristic(m: int, n: int, k: int, group: int, sms: int) -> GemvConfig:
    """BLOCK_N 256, 2 words per thread, BLOCK_K 64 (8 rows per thread), 4 warps, split-K by
    ``gemv_split``."""
    cfg = GemvConfig()
    return replace(cfg, split_k=gemv_split(cfg, m, n, k, group, sms))


# Configurations measured on this machine at run time (``gemv_autotune``, ``tune_kernels=True``):
# (rows per program, N, K, group) -> GemvConfig. Consulted before GEMV_TUNED.
RUNTIME_GEMV: dict[tuple[int, int, int, int], GemvConfig] = {}


def register_gemv_configs(entries: dict[tuple[int, int, int, int], GemvConfig]) -> None:
    """Use ``entries`` (keyed like RUNTIME_GEMV) from now on in this process."""
    RUNTIME_GEMV.update(entries)
    gemv_config.cache_clear()
    choose.cache_clear()


@lru_cache(maxsize=4096)
def gemv_config(m: int, n: int, k: int, group: int, sms: int) -> GemvConfig:
    bm = gemv_block_m(m)
    cfg = RUNTIME_GEMV.get((bm, n, k, group)) or GEMV_TUNED.get((bm, n, k))
    return cfg if cfg is not None else gemv_heuristic(m, n, k, group, sms)


def gemv_candidates(m: int, n: int, k: int, group: int, sms: int) -> list[tuple[str, GemvConfig]]:
    """The default GEMV config of the shape and a few alternatives around it (the sweep of
    ``benchmarks/kernels.py --gemv`` and of ``gemv_autotune``): split-K halved/doubled, narrower
    column tiles, no scale prefetch, and at one row per program register caps (more resident
    programs per SM: 65536 registers / (cap x 128 threads)), each with the split-K that fills the
    waves of its own occupancy."""
    base = gemv_config(m, n, k, group, sms)
    narrow = GemvConfig(128, 64)                                   # more column tiles, 4 rows a thread
    cands = [("default", base),
             ("split*2", replace(base, split_k=min(2 * base.split_k, 64))),
             ("split/2", replace(base, split_k=max(1, base.split_k // 2))),
             ("bn128", replace(narrow, split_k=gemv_split(narrow, m, n, k, group, sms))),
             ("noSprefetch", replace(base, prefetch_scales=False))]
    if gemv_block_m(m) == 1:
        for name, regs in (("reg96", 96), ("reg80", 80), ("reg64", 64)):
            capped = replace(base, prefetch_scales=False, maxnreg=regs)
            resident = 65536 // (regs * 32 * capped.num_warps)
            cands.append((name, replace(capped, split_k=gemv_split(capped, m, n, k, group, sms, resident))))
    return cands


@lru_cache(maxsize=4096)
def choose(m: int, n: int, k: int, group: int, sms: int, gemv: bool = False
           ) -> tuple[str, GemmConfig | GemvConfig | None]:
    """The path and configuration for an M x N x K product on the checkpoint-layout tensors
    (config None for "dequant"; ``awq_gemm`` takes "wgmma_t" before asking, where it can).
    ``gemv``: whether the GEMV path may be chosen (CUDA, compiled)."""
    if gemv and m <= GEMV_M_MAX:
        return "gemv", gemv_config(m, n, k, group, sms)
    tuned = TUNED.get((m_bucket(m), n, k))
    if tuned is not None:
        path, cfg = tuned
        return path, None if cfg is None else replace(cfg, block_k=fit_block_k(cfg.block_k, group))
    path = select_path(m)
    return path, None if path == "dequant" else heuristic_config(path, m_bucket(m), n, k, group, sms)


@lru_cache(maxsize=4096)
def get_config(path: str, m: int, n: int, k: int, group: int, sms: int) -> GemmConfig:
    """The configuration for a given fused path ("splitk" or "tc"): tuned if the table's entry is
    of that path, else the heuristic."""
    tuned = TUNED.get((m_bucket(m), n, k))
    if tuned is not None and tuned[0] == path and tuned[1] is not None:
        return replace(tuned[1], block_k=fit_block_k(tuned[1].block_k, group))
    return heuristic_config(path, m_bucket(m), n, k, group, sms)


def has_fast_memory(device_name: str) -> bool:
    """Whether a GPU of this name takes the decode tiles measured on memory faster than the H100's
    (``FAST_MEMORY_GPUS``; see ``one_warpgroup_config``)."""
    return any(gpu in device_name for gpu in FAST_MEMORY_GPUS)


@lru_cache(maxsize=4096)
def wgmma_t_config(m: int, n: int, k: int, sms: int, silu_and_mul: bool = False,
                   fast_memory: bool = False) -> WgmmaTConfig:
    """Tiles of the "wgmma_t" path: above 256 tokens, where N % 128 == 0, the warp-specialised
    kernel's large tiles (``ws_config``); up to 64 tokens, where the layer has too few 64-channel
    tiles to give each SM two one-warpgroup programs, the warp-specialised kernel with split-K inside
    the CTA (``ws_small_config``); else one warpgroup a program (``one_warpgroup_config``).
    ``fast_memory``: the GPU's memory is faster than the H100's (``has_fast_memory``)."""
    if m >= WS_M_MIN and n % 128 == 0:
        return ws_config(m, n, k, sms)
    return (ws_small_config(m, n, k, sms, silu_and_mul, fast_memory)
            or one_warpgroup_config(m, n, k, sms, fast_memory))


def one_warpgroup_config(m: int, n: int, k: int, sms: int, fast_memory: bool = False) -> WgmmaTConfig:
    """Tiles of the "wgmma_t" path, fitted to the H100 sweeps of 2026-11-26 (``kernels.py --wgmma-t``:
    the Llama-2-7B, 13B/TP=2 and 70B/TP=8 layers at M = 1-2048; within 2.4% of each cell's best
    measured config on geometric mean, 24% at worst):

    * one warpgroup a program, so programs sharing an SM overlap one's unpack with another's wgmma
      (two warpgroups a program run in lockstep and lost everywhere);
    * up to 256 tokens, 64 channels and the smallest token tile that holds M (up to 128); above,
      128 channels x 128 tokens (two m64 wgmmas sharing each x tile: 25% less shared-memory traffic
      a MAC than 64 x 256, and half the x re-read from L2; on the 7B layers 1.02-1.10x 64 x 256
      at M = 1024 and 1.04-1.18x at 2048 on the H100, about even at 512; sweeps of session 7);
    * split-K until there are two programs per SM at M <= 128 and one above, in slices of at least
      10 K tiles (shorter ones lost on the 1024 x 8192 layer), at most 4 (16 for the narrowest
      layers at M <= 16, where 4 left most SMs idle); halved at the 128-token tile where a program
      per SM remains or the slices would be under 32 K tiles; up to ``CLUSTER_MAX_T`` tokens, 3 and
      5-7 slices rounded down to 2 or 4, which sum as a cluster (13B/TP=2 qkv, 120 tiles, at M = 1 /
      16: 3 slices 12.5 / 13.3 us, 2 slices 11.3 / 11.6; H100, session 14);
    * pipeline steps of 4 K tiles for the memory-bound small tiles, 2 at 64-128 tokens, 1 at 256
      (each step waits for its wgmmas, so a longer step spreads that latency), 2-3 steps deep;
    * with ``fast_memory``, at the 8-token tile, split-K until there are three programs per SM
      (``FAST_MEMORY_PROGRAMS_PER_SM``): more bytes in flight for memory 1.43x faster. On 2 x H200
      (session 28, benchmarks/RESULTS.md) that took the 13B/TP=2 qkv from 2 to 4 slices (a cluster)
      and the TP=2 batch-1 step from 1.906-1.910 to 1.836-1.843 ms (graph 1.865-1.872 -> 1.784-1.790);
      on the H100 four slices lost there in session 15, before clusters were placed by load balancing.
    """
    block_n = 128 if m > 256 and n % 128 == 0 else 64
    block_t = 128 if block_n == 128 else 256 if m > 256 else next((t for t in WGMMA_T_BLOCK_TS if m <= t <= 128), 128)
    tiles = (n // block_n) * -(-m // block_t)
    want = (FAST_MEMORY_PROGRAMS_PER_SM if fast_memory and block_t == 8 else 2 if m <= 128 else 1) * sms
    cap = 16 if m <= 16 and 4 * tiles < sms else WGMMA_MAX_SPLIT
    split = min(cap, -(-want // tiles), max(1, k // 64 // 10))
    if block_t == 128 and block_n == 64 and (tiles * (split // 2) >= sms or k // 64 < 32 * split):
        split //= 2
    if block_t <= CLUSTER_MAX_T and min(WS_SMALL_CLUSTER_SIZES) < split < max(WS_SMALL_CLUSTER_SIZES):
        split = max(c for c in WS_SMALL_CLUSTER_SIZES if c <= split)   # slices that sum as a cluster
    stages, k_tiles = (2, 4) if block_t <= 32 else (2, 2) if block_t <= 128 else (3, 1)
    return WgmmaTConfig(block_n, block_t, stages=stages, split_k=nonempty_split(k // 64, split), k_tiles=k_tiles)


# Warp-specialised tiles (channels a consumer, tokens) -> (K tiles a step, relative speed a MAC where
# each fills the GPU; H100 sweep of 2026-11-26, results/wgmma_t_ws_sweep_h100_session8_2026-11-26.log)
WS_TILES = {(128, 128): (2, 1.0), (64, 256): (1, 0.98), (64, 128): (2, 0.90)}


def ws_config(m: int, n: int, k: int, sms: int) -> WgmmaTConfig:
    """Tiles of the warp-specialised "wgmma_t" kernel: two consumer warpgroups, 3 steps deep, and of
    the tiles in ``WS_TILES`` that N allows the one keeping most of the GPU busy: the share of the
    last wave's SMs that have a CTA, times the share of the token tile that holds tokens, times the
    tile's speed a MAC (a 128-token tile of 64-channel consumers unpacks each weight twice as often
    for half the wgmma width: 0.89-0.94x the larger tiles). One CTA an SM (consumers of 240
    registers). On the 7B layers at M = 512-4096 this picks the best of the swept tiles or one
    within the sweep's noise. Where that leaves more than half the SMs idle (narrow layers such as
    70B/TP=8 qkv, 8192 x 1280: 40 CTAs at 512 tokens), split-K across CTAs up to one CTA an SM, in
    slices of at least 10 K tiles and at most ``WS_MAX_SPLIT``: on that layer 45.8 -> 24.8 us at
    300 tokens and 45.1 -> 29.6 us at 512 (H100, session 9; the best swept config at 512, 10% behind
    the best, 64 x 64 tokens in 2 slices, at 300)."""
    def score(tile: tuple[int, int]) -> float:
        bn, bt = tile
        t_tiles = -(-m // bt)
        ctas = n // (2 * bn) * t_tiles
        return ctas / (-(-ctas // sms) * sms) * m / (t_tiles * bt) * WS_TILES[tile][1]
    block_n, block_t = max((t for t in WS_TILES if n % (2 * t[0]) == 0), key=score)
    ctas = n // (2 * block_n) * -(-m // block_t)
    split = max(1, min(sms // ctas, k // 64 // 10, WS_MAX_SPLIT)) if 2 * ctas < sms else 1
    return WgmmaTConfig(block_n, block_t, stages=3, k_tiles=WS_TILES[(block_n, block_t)][0], consumers=2,
                        split_k=nonempty_split(k // 64, split))


@lru_cache(maxsize=4096)
def ws_wave_tail(m: int, n: int, k: int, sms: int, cfg: WgmmaTConfig) -> tuple[int, WgmmaTConfig] | None:
    """Where a large-M warp-specialised launch (``ws_config``: one CTA an SM, no split) would end
    in a part-filled wave: the output channels its whole waves cover (``n_main``, the first ones)
    and ``ws_config``'s config for the rest, whose smaller tiles or K slices spread that last
    wave's work over the SMs it would have left idle (the data-parallel + split-K tail of stream-K
    schedules). Taken where, by ``_ws_wave_time``, the rest takes at most 3/4 of a main CTA's time
    (the second launch and its split-K sum cost the rest); else None.

    7B gate_up at M = 1024 has 688 CTAs of 128 x 128 tiles: 5.2 waves run as 6. Its first 656 CTAs
    then run as 5 waves and its last 1024 channels as 64 x 128 tiles in 2 K slices (128 CTAs, ~0.28
    of a main CTA's time)."""
    if cfg.consumers < 2 or cfg.k_phases != 1 or cfg.split_k != 1 or m < WS_M_MIN:
        return None
    t_tiles = -(-m // cfg.block_t)
    waves, last = divmod(t_tiles * (n // cfg.cta_channels), sms)
    n_main = waves * sms // t_tiles * cfg.cta_channels
    if last == 0 or n_main == 0:
        return None
    tail = ws_config(m, n - n_main, k, sms)
    if _ws_wave_time(m, n - n_main, k, sms, tail) > 0.75 * _ws_wave_time(m, cfg.cta_channels, k, sms, cfg):
        return None
    return n_main, tail


def _ws_wave_time(m: int, n: int, k: int, sms: int, cfg: WgmmaTConfig) -> float:
    """A warp-specialised launch's time by the wave model: its waves (one CTA an SM) times a CTA's
    MACs over its tile's relative speed (``WS_TILES``)."""
    split = max(1, cfg.split_k)
    ctas = -(-m // cfg.block_t) * (n // cfg.cta_channels) * split
    return -(-ctas // sms) * cfg.cta_channels * cfg.block_t * k / split / WS_TILES[(cfg.block_n, cfg.block_t)][1]


def ws_smem_bytes(cfg: WgmmaTConfig, kt: int, group: int) -> int:
    """Shared memory of a warp-specialised CTA: the ring (a slot: a step's x and each channel
    group's words and zero/scale rows), the buffer through which K phases 1 .. k_phases - 1 hand
    their accumulators to phase 0, the barriers, and the scratch of each writing consumer's
    epilogue (its accumulator's layout conversion), plus 1 KB of alignment slack. Counted for the
    small token tiles of ``ws_small_config``, where it bounds the compiled kernels' size (Triton 3.6,
    sm_90)."""
    nc, kc = cfg.channel_groups, cfg.k_phases
    zs_rows = max(1, 64 * kt // group)
    slot = kt * cfg.block_t * 64 * 2 + nc * (kt * cfg.block_n * 32 + zs_rows * cfg.block_n * 4)
    handover = (1 << ((kc - 1) * nc - 1).bit_length()) * cfg.block_n * cfg.block_t * 4 if kc > 1 else cfg.block_t * 4
    scratch = nc * cfg.block_n * cfg.block_t * 4
    return cfg.stages * slot + handover + scratch + 8 * (2 * cfg.stages + nc) + 1024


def ws_small_config(m: int, n: int, k: int, sms: int, silu_and_mul: bool = False,
                    fast_memory: bool = False) -> WgmmaTConfig | None:
    """The warp-specialised kernel with K phases at 33-128 tokens (``WS_SMALL_BLOCK_TS``) where the
    layer's 64-channel tiles are at most two an SM (``down``, ``o`` and ``qkv``-like layers; None for
    wider ones such as a gate/up pair, where the one-warpgroup programs, two an SM, fill the GPU):

    * two consumers a channel group taking turns over the K steps (``k_phases`` = 2): one's unpack
      runs beside the other's wgmmas, which a one-warpgroup program alternates, and their partials
      meet in shared memory instead of a global workspace;
    * one channel group of 64 a CTA, or two (sharing each x tile) where one would need more CTAs
      than SMs; split-K across CTAs up to one CTA an SM, with at least two steps a consumer;
    * steps of 4 K tiles at up to 16 tokens and 2 above, as many ring slots as fit (up to 8;
      ``k_phase_config``).

    Measured on the H100 (2026-11-26, ``benchmarks/notes/awq_gemm.md`` session 9): alone, at 64
    tokens it took 0.69-0.98x the one-warpgroup rule's time on 10 of the 11 Llama-2-7B, 13B/TP=2
    and 70B/TP=8 layers it takes (the best candidate swept on each) and 1.13x on 70B/TP=8 ``o``
    (K = 1024); 7B decode at batch 64 +2.1-2.6%, batch 1 and 16 unchanged. At 1-16 tokens it was
    also 1.00-1.15x faster alone (back to back, or after an RMSNorm), but 7B decode at batch 1 fell
    4-8% (3.5% with 4 slots instead of 8; also without PDL), so those token counts keep one
    warpgroup. Session 13 measured it again with the K slices summed by clusters (7B down alone 12.3
    us against 13.0-13.1): the batch-1 decode graph took 1930-1934 us against 1869-1872; 1938 with
    the CTA's registers capped at 96 a thread (so it could share an SM with the kernels around it),
    1911-1915 without the producer's early ``launch_dependents`` (then 13.3 us alone: the alone gain
    is mostly the next launch's PDL prologue overlapping this one) and 1893-1907 with 4 slots.
    At 17-32 tokens the one-warpgroup kernel was faster alone on 7 of the 12 layers.

    At 1-16 tokens (``WS_DECODE_BLOCK_TS``) only for a gate/up pair with the SiLU epilogue
    (``silu_and_mul``), unsplit, where its CTAs fill ``WS_DECODE_MIN_FILL`` of the SMs. Session 20
    (2 x and 4 x H100, benchmarks/RESULTS.md): taking K phases unsplit at 1-16 tokens on 13B/TP=2
    qkv and gate_up cut the TP=2 batch-1 graph 0.03-0.08 ms on three machines, with qkv alone -0.05 /
    +0.02 ms by machine; on the 13B qkv at TP=1 (the same kind of grid without the epilogue) it
    added 0.10 ms; the 70B at TP=4 (o, gate_up, down) was unchanged. This rule (gate_up only),
    measured in session 21 (2 x H100): 13B TP=2 graph 2.14-2.15 -> 2.12 ms, TP=1 unchanged (3.15).
    Not at the 8-token tile with ``fast_memory``: on 2 x H200 (session 28) the one-warpgroup
    programs, twice as many, took the 13B TP=2 batch-1 step from 1.952-1.954 to 1.911-1.912 ms.

    At 65-128 tokens only with one channel group and a split whose slices sum as a cluster
    (``WS_SMALL_CLUSTER_SIZES``, ``awq_wgmma_t_ws.WS_CLUSTER_MAX_T``; session 13, H100): 7B down at 128
    tokens 24.6-25.0 us against 31.5-32.2 for the one-warpgroup kernel with its global reduction
    (1.54x cuBLAS against 1.18x), o 14.0 against 17.8; the batch-96 and batch-128 decode graphs as
    before (5966 against 5969 us; 5685-5690 against 5664-5696), where the one-warpgroup o/down handed
    their partials to the norm. With two channel groups (qkv-like layers, no cluster) it was not
    measured at these token counts."""
    if m > WS_SMALL_M_MAX or n % 64:
        return None
    block_t = next(t for t in WGMMA_T_BLOCK_TS if m <= t)
    tiles = n // 64
    nc = next((c for c in (1, 2) if n % (64 * c) == 0 and tiles // c <= sms), None)
    decode = silu_and_mul and block_t in WS_DECODE_BLOCK_TS and not (fast_memory and block_t == 8)
    if nc is None or not (decode or block_t in WS_SMALL_BLOCK_TS):
        return None
    cfg = k_phase_config(block_t, n, k, sms, nc, 2, 4 if block_t <= 16 else 2)
    if decode and (cfg is None or cfg.split_k > 1 or tiles // nc < WS_DECODE_MIN_FILL * sms):
        return None
    if block_t > 64 and (cfg is None or nc > 1 or cfg.split_k not in WS_SMALL_CLUSTER_SIZES):
        return None
    return cfg


def k_phase_config(block_t: int, n: int, k: int, sms: int, nc: int, kc: int, k_tiles: int) -> WgmmaTConfig | None:
    """A warp-specialised config of ``nc`` channel groups of 64 x ``kc`` K phases over ``block_t``
    tokens with steps of ``k_tiles`` K tiles: as many ring slots as fit (up to
    ``WS_SMALL_STAGES_MAX``, a multiple of kc; zero/scale rows counted for groups of 64), and split-K
    across CTAs up to one CTA an SM with at least two steps a consumer. None where K has fewer than
    two steps a consumer."""
    cfg = WgmmaTConfig(64, block_t, stages=kc, k_tiles=k_tiles, consumers=nc * kc, k_phases=kc)
    kt = k_tiles_per_step(k, 64, cfg)
    k_steps = k // (64 * kt)
    if k_steps < 2 * kc:
        return None
    stages = max(s for s in range(kc, WS_SMALL_STAGES_MAX + 1, kc)
                 if s == kc or ws_smem_bytes(replace(cfg, stages=s), kt, 64) <= SMEM_BYTES)
    split = max(1, min(sms // (n // 64 // nc), k_steps // (2 * kc), 16))
    return replace(cfg, stages=stages, split_k=nonempty_split(k_steps, split))
