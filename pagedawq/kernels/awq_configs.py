"""Launch configurations for the AWQ int4 GEMM: which path, which tiles, how much split-K.

Paths (``awq_gemm`` picks by M, or takes ``path=``):

* ``"splitk"`` (M <= 32): memory-bound. The weight is 3.6x smaller than fp16 but still the
  whole cost, so the goal is every SM streaming it at once: BLOCK_M 16/32 (the tensor cores idle
  anyway), BLOCK_N 128 (64-byte rows of packed words), and split-K until output tiles x splits
  fill the GPU several times over.
* ``"tc"`` (32 < M < LARGE_M_MIN): tensor-core tiles, dequantized in registers, split-K only
  when the tile grid alone cannot fill the GPU.
* ``"dequant"`` (M >= LARGE_M_MIN): the weight is dequantized once per call (a Triton kernel)
  and cuBLAS does the product, which wins once the GEMM is compute-bound.

A small table measured on the H100 (``benchmarks/kernels.py --tune``) gives the path and
configuration for the benchmark shapes per M bucket; heuristics cover every other shape. Choices
are cached per (M, N, K, G), so the table is consulted once per new shape.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

SMALL_M_MAX = 32     # at or below: the split-K streaming path
LARGE_M_MIN = 1024   # at or above: dequantize + cuBLAS
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


def select_path(m: int) -> str:
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
        bn = _pow2_at_most(n, 128)
        bk = fit_block_k(min(128, _pow2_at_most(k, 128)), group)
        tiles = -(-n // bn)
        split = _split_for(tiles, k // bk, sms, waves=4)
        return GemmConfig(bm, bn, bk, split_k=split, num_warps=4, num_stages=4)
    if path == "tc":
        if m <= 64:
            bm, bn, warps = 64, 128, 4
        elif m <= 256:
            bm, bn, warps = 128, 128, 8
        else:
            bm, bn, warps = 128, 256, 8
        bn = _pow2_at_most(n, bn)
        bk = fit_block_k(min(64, _pow2_at_most(k, 64)), group)
        tiles = -(-m // bm) * -(-n // bn)
        split = _split_for(tiles, k // bk, sms, waves=1)
        return GemmConfig(bm, bn, bk, split_k=split, scale_w=True, num_warps=warps, num_stages=3)
    raise ValueError(f"no GEMM kernel configuration for path {path!r}")


# Measured on one H100 SXM (benchmarks/kernels.py --tune, group 128, fp16):
# (M bucket, N, K) -> (path, config; None for "dequant").
TUNED: dict[tuple[int, int, int], tuple[str, GemmConfig | None]] = {}


@lru_cache(maxsize=4096)
def choose(m: int, n: int, k: int, group: int, sms: int) -> tuple[str, GemmConfig | None]:
    """The path and configuration for an M x N x K product (config None for "dequant")."""
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
