"""The "wgmma" path of ``awq_gemm``: an AWQ int4 GEMM for Hopper whose unpack overlaps the tensor cores.

Why a second tensor-core kernel: the "tc" path (``awq_gemm_kernel``, plain Triton) is issue-bound at
M = 64-512. Per K tile it unpacks W into shared memory and then waits for the wgmma that reads it
before it unpacks the next tile (Triton emits ``WARPGROUP.DEPBAR.LE gsb0, 0`` right after every dot
whose B operand came from registers), so the unpack and the tensor cores never run together. This
kernel is written in Gluon, Triton's lower-level dialect, which exposes that asynchrony:

* each K tile of x and of the packed words comes in by TMA, ``STAGES`` tiles ahead;
* tile k is unpacked (the PTX unpack of ``awq_kernels``: zero point and scale in packed fp16) into
  one of two shared-memory W buffers while the wgmma of tile k-1, on the other buffer, still runs;
* wgmma k is issued asynchronously and the kernel waits until only it is outstanding
  (``num_outstanding=1``): the MMA of one tile overlaps the unpack of the next.

Measured on the H100 (benchmarks/notes/awq_gemm.md, session 5): 1.14-1.53x the "tc"/"dequant"
choice on the wide layers (N >= 12288) at M = 128-512, and slower on N = 4096 (too few output tiles
without split-K), so ``awq_configs.choose`` takes it for wide layers at mid M only.

Restrictions, checked by ``supports``: Hopper (sm_90), fp16 x and scales, N a multiple of 128,
K and the group size multiples of BLOCK_K (64), x row-major with 16-byte aligned rows (TMA).
Gluon has no CPU interpreter: the CPU tests compile this kernel for sm_90 and check its loop
(asynchronous wgmma, no spills); its numerics are tested on the GPU.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                               warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from pagedawq.kernels.awq_configs import WgmmaConfig, nonempty_split
from pagedawq.kernels.awq_kernels import _CONSTRAINTS_SCALED, _F16X8, _UNPACK_F16_SCALED, _ZERO_PAIRS_F16
from pagedawq.quant.pack import PACK_FACTOR

ZERO_PAIRS = gl.constexpr(_ZERO_PAIRS_F16.value)
UNPACK = gl.constexpr(_UNPACK_F16_SCALED.value)
CONSTRAINTS = gl.constexpr(_CONSTRAINTS_SCALED.value)
F16X8 = gl.constexpr(_F16X8.value)
# The TMA load was renamed between Triton 3.6 (the GPU image) and 3.9 (the CPU wheel); same operation.
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
_cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier   # likewise renamed in 3.9

BLOCK_K = 64
# What a Triton whose Gluon API differs from the one this kernel is written for raises when it
# builds the kernel (a renamed builtin, a changed signature, a compilation error); awq_gemm then
# stops choosing this path.
BUILD_ERRORS = (triton.CompilationError, AttributeError, TypeError, ImportError)


@lru_cache(maxsize=None)
def _is_hopper(device: torch.device) -> bool:
    return torch.version.hip is None and torch.cuda.get_device_capability(device)[0] == 9


def supports(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group: int) -> bool:
    """Whether this kernel takes these tensors (see the module docstring)."""
    k, n8 = qweight.shape
    n = n8 * PACK_FACTOR
    return (x.is_cuda and _is_hopper(x.device)
            and x.dtype == torch.float16 and scales.dtype == torch.float16
            and n % 128 == 0 and k % BLOCK_K == 0 and group % BLOCK_K == 0
            and x.stride(1) == 1 and (x.stride(0) * 2) % 16 == 0 and x.data_ptr() % 16 == 0)


@gluon.jit
def _interleave8(o0, o1, o2, o3, o4, o5, o6, o7):
    """Eight [R, C] planes (column c of each group of eight) -> [R, 8C] in natural column order
    (each join adds a minor, in-thread dimension: a register renaming, as in awq_kernels)."""
    t = gl.join(gl.join(gl.join(o0, o4), gl.join(o2, o6)), gl.join(gl.join(o1, o5), gl.join(o3, o7)))
    return gl.reshape(t, [o0.shape[0], 8 * o0.shape[1]])


@gluon.jit
def _step(i, kt_lo, acc, use_acc, x_desc, qw_desc, qz_ptr, s_ptr, a_bufs, q_bufs, b_bufs, bars, jj, off_m, off_j,
          N, N8, n_tiles, G: gl.constexpr, STAGES: gl.constexpr, q_layout: gl.constexpr):
    """The program's i-th K tile (tile kt_lo + i of the layer): unpack its W into a shared buffer
    while wgmma i-1 runs, issue wgmma i, wait for i-1, and refill the stage i-1 used with tile
    i + STAGES - 1."""
    BK: gl.constexpr = x_desc.block_type.shape[1]
    tile_bytes: gl.constexpr = x_desc.block_type.nbytes + qw_desc.block_type.nbytes
    s = i % STAGES
    mbarrier.wait(bars.index(s), (i // STAGES) & 1)
    qw = q_bufs.index(s).load(q_layout)
    g = ((kt_lo + i) * BK) // G
    zw = gl.load(qz_ptr + g * N8 + jj)
    z0, z1, z2, z3 = gl.inline_asm_elementwise(ZERO_PAIRS, "=r,=r,=r,=r,r", [zw],
                                               dtype=(gl.int32, gl.int32, gl.int32, gl.int32),
                                               is_pure=True, pack=1)
    sp = s_ptr.to(gl.pointer_type(gl.int32), bitcast=True) + (g * N + 8 * jj) // 2
    s0 = gl.load(sp)
    s1 = gl.load(sp + 1)
    s2 = gl.load(sp + 2)
    s3 = gl.load(sp + 3)
    o = gl.inline_asm_elementwise(UNPACK, CONSTRAINTS,
                                  [qw, z0[None, :], z1[None, :], z2[None, :], z3[None, :],
                                   s0[None, :], s1[None, :], s2[None, :], s3[None, :]],
                                  dtype=F16X8, is_pure=True, pack=1)
    w = _interleave8(o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7])
    b = b_bufs.index(i % 2)
    b.store(w)          # its previous reader, wgmma i-2, finished at the previous step's wait
    fence_async_shared()
    acc = warpgroup_mma(a_bufs.index(s), b, acc, use_acc=use_acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc, ))
    ni = i + STAGES - 1
    if ni < n_tiles:
        ns = ni % STAGES
        mbarrier.expect(bars.index(ns), tile_bytes)
        _tma_load(x_desc, [off_m, (kt_lo + ni) * BK], bars.index(ns), a_bufs.index(ns))
        _tma_load(qw_desc, [(kt_lo + ni) * BK, off_j], bars.index(ns), q_bufs.index(ns))
    return acc


@gluon.jit
def awq_wgmma_kernel(x_desc, qw_desc, qz_ptr, s_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, stride_om, split_k,
                     G: gl.constexpr, B_LAYOUT: gl.constexpr, STAGES: gl.constexpr, SPLIT: gl.constexpr,
                     num_warps: gl.constexpr):
    """One [BLOCK_M, BLOCK_N] output tile (program ids 0, 1) over one K slice (program id 2).

    With SPLIT, as ``awq_gemm_kernel``'s split-K: each slice stores its fp32 partial tile in the
    workspace ``ws`` [split_k, M, N]; the last slice of a tile to arrive (an atomic counter per
    tile in ``cnt``, zero on entry, reset on exit) sums them in slice order, so the result does
    not depend on arrival order. The host avoids empty slices."""
    BLOCK_M: gl.constexpr = x_desc.block_type.shape[0]
    BK: gl.constexpr = x_desc.block_type.shape[1]
    BN8: gl.constexpr = qw_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = 8 * BN8
    pid_m = gl.program_id(0)
    pid_n = gl.program_id(1)
    pid_s = gl.program_id(2)
    off_m = pid_m * BLOCK_M
    off_j = pid_n * BN8
    N8 = N // 8

    a_bufs = gl.allocate_shared_memory(gl.float16, [STAGES, BLOCK_M, BK], x_desc.layout)
    q_bufs = gl.allocate_shared_memory(gl.int32, [STAGES, BK, BN8], qw_desc.layout)
    b_bufs = gl.allocate_shared_memory(gl.float16, [2, BK, BLOCK_N], B_LAYOUT)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(bars.index(i), count=1)

    k_tiles = K // BK    # >= 1 (K >= BLOCK_K)
    per_split = gl.cdiv(k_tiles, split_k)
    kt_lo = pid_s * per_split
    n_tiles = gl.minimum(per_split, k_tiles - kt_lo)    # >= 1: no empty slices
    tile_bytes: gl.constexpr = x_desc.block_type.nbytes + qw_desc.block_type.nbytes
    for i in gl.static_range(STAGES - 1):
        if i < n_tiles:
            mbarrier.expect(bars.index(i), tile_bytes)
            _tma_load(x_desc, [off_m, (kt_lo + i) * BK], bars.index(i), a_bufs.index(i))
            _tma_load(qw_desc, [(kt_lo + i) * BK, off_j], bars.index(i), q_bufs.index(i))

    # One thread per packed word and row chunk: the 8 fp16 it unpacks are 8 adjacent columns.
    q_layout: gl.constexpr = gl.BlockedLayout([1, 1], [32 // BN8, BN8], [num_warps, 1], [1, 0])
    cols: gl.constexpr = gl.SliceLayout(0, q_layout)
    jj = off_j + gl.arange(0, BN8, layout=cols)
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, BLOCK_N, 16])
    acc = gl.zeros([BLOCK_M, BLOCK_N], dtype=gl.float32, layout=mma_layout)

    # Tile 0 outside the loop (use_acc=False): with the accumulator defined only by wgmmas between
    # the first wgmma and the last wait, ptxas keeps them asynchronous (a zero-initialised
    # accumulator reaching the final wait on the zero-trip path made it serialize every wgmma).
    acc = _step(0, kt_lo, acc, False, x_desc, qw_desc, qz_ptr, s_ptr, a_bufs, q_bufs, b_bufs, bars, jj, off_m,
                off_j, N, N8, n_tiles, G, STAGES, q_layout)
    for i in range(1, n_tiles):
        acc = _step(i, kt_lo, acc, True, x_desc, qw_desc, qz_ptr, s_ptr, a_bufs, q_bufs, b_bufs, bars, jj, off_m,
                    off_j, N, N8, n_tiles, G, STAGES, q_layout)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(i))

    out_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    rm = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, out_layout))
    rn = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, out_layout))
    row_mask = (rm < M)[:, None]
    out_ptrs = out_ptr + rm[:, None] * stride_om + rn[None, :]
    if not SPLIT:
        gl.store(out_ptrs, gl.convert_layout(acc.to(gl.float16), out_layout), mask=row_mask)
    else:
        ws_ptrs = ws_ptr + rm[:, None] * N + rn[None, :]
        gl.store(ws_ptrs + pid_s * M * N, gl.convert_layout(acc, out_layout), mask=row_mask)
        _cta_barrier()    # every thread's partial is issued before the counter's release
        tile = pid_m * gl.num_programs(1) + pid_n
        arrived = gl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if arrived == split_k - 1:
            total = gl.zeros([BLOCK_M, BLOCK_N], dtype=gl.float32, layout=out_layout)
            for s in range(split_k):
                total += gl.load(ws_ptrs + s * M * N, mask=row_mask, other=0.0, cache_modifier=".cg")
            gl.store(out_ptrs, total.to(gl.float16), mask=row_mask)
            gl.atomic_xchg(cnt_ptr + tile, 0)


@lru_cache(maxsize=None)
def shared_layouts(cfg: WgmmaConfig):
    """Shared-memory layouts of the x tile, the packed-word tile and the unpacked W tile."""
    return (gl.NVMMASharedLayout.get_default_for([cfg.block_m, BLOCK_K], gl.float16),
            gl.NVMMASharedLayout.get_default_for([BLOCK_K, cfg.block_n // 8], gl.int32),
            gl.NVMMASharedLayout.get_default_for([BLOCK_K, cfg.block_n], gl.float16))


def output_tiles(m: int, n: int, cfg: WgmmaConfig) -> int:
    return triton.cdiv(m, cfg.block_m) * (n // cfg.block_n)


def wgmma_gemm(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
               cfg: WgmmaConfig, out: torch.Tensor, counters: torch.Tensor | None = None) -> torch.Tensor:
    """``out = x @ W`` with this kernel (the caller has checked ``supports``; ``out`` row-major).
    With ``cfg.split_k`` > 1, ``counters``: int32, zero, at least ``output_tiles`` of them (see
    ``awq_gemm._counters``); the fp32 workspace is allocated per call (graph-capture safe)."""
    m, k = x.shape
    n = qweight.shape[1] * PACK_FACTOR
    if n % cfg.block_n:
        raise ValueError(f"N = {n} is not a multiple of BLOCK_N = {cfg.block_n}")
    split = nonempty_split(k // BLOCK_K, cfg.split_k)
    if split > 1:
        if counters is None or counters.numel() < output_tiles(m, n, cfg):
            raise ValueError("split-K needs a zeroed int32 counter per output tile")
        ws = torch.empty((split, m, n), dtype=torch.float32, device=x.device)
    else:
        ws, counters = out, qzeros   # never touched without split-K
    a_l, q_l, b_l = shared_layouts(cfg)
    x_desc = TensorDescriptor.from_tensor(x, [cfg.block_m, BLOCK_K], a_l)
    qw_desc = TensorDescriptor.from_tensor(qweight, [BLOCK_K, cfg.block_n // 8], q_l)
    grid = (triton.cdiv(m, cfg.block_m), n // cfg.block_n, split)
    awq_wgmma_kernel[grid](x_desc, qw_desc, qzeros, scales, out, ws, counters, m, n, k, out.stride(0), split,
                           G=k // scales.shape[0], B_LAYOUT=b_l, STAGES=cfg.stages, SPLIT=split > 1,
                           num_warps=cfg.num_warps)
    return out
