"""The "wgmma_t" AWQ GEMM warp-specialised, for large M: one TMA warp and two MMA warpgroups a CTA.

``awq_wgmma_t`` computes ``out^T = W^T x^T`` with the unpacked weights as wgmma's register operand.
Each of its steps waits for its wgmmas before the next unpack (ptxas reuses a running wgmma's A
registers), so inside a program unpack and MMA alternate; at the 128 x 128 tiles of large M only two
programs share an SM, and the kernel reached 0.86-0.99x cuBLAS at M >= 1024. Two warpgroups in one
plain program ran in lockstep: Triton's membar pass puts a CTA barrier before every TMA issue.

Here a CTA is ``gl.warp_specialize``d into

* one producer warp that only issues the TMA boxes (x, and each consumer's packed words and
  zero/scale rows, ``STAGES`` steps ahead) once every consumer has released the stage, and
* two consumer warpgroups, each computing its own ``BLOCK_N`` channels of the same ``BLOCK_T``
  tokens with ``awq_wgmma_t._mma_step`` (unpack, wgmmas, wait), then releasing the stage. They wait
  on their own barrier phases and never on a CTA-wide barrier, so they drift apart and one's unpack
  runs beside the other's MMA; each x tile is loaded once per CTA and read by both.

The words come as one box per consumer: the extra TMA instructions cost only the producer warp.
CTAs are rastered in groups of ``GROUP_T`` token tiles, so those resident at once share their weight
and x tiles in L2. Registers: the launch cap is the register file over the CTA's three warpgroups
(the producer warp counts as one); setmaxnreg then gives the producer 24 and the consumers the rest
(240 each), one CTA an SM.

Measured on the H100 (benchmarks/notes/awq_gemm.md, session 8): on the Llama-2-7B layers at
M = 512-4096 0.94-1.13x cuBLAS fp16 where the one-warpgroup kernel gave 0.58-0.96x.
"""
from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier

from pagedawq.kernels.awq_configs import WgmmaTConfig
from pagedawq.kernels.awq_wgmma_t import (_mma_step, _store_out, _tma_load, descriptors, k_tiles_per_step,
                                          words_layout)

CONSUMERS = 2
GROUP_T = gl.constexpr(8)              # token tiles a raster group
PRODUCER_REGS = gl.constexpr(24)       # the least setmaxnreg allows; the producer holds only scalars
MAX_REGS = 65536 // (128 * (CONSUMERS + 1)) // 8 * 8           # a thread's registers at launch: 168
CONSUMER_REGS = gl.constexpr(min(256, ((CONSUMERS + 1) * MAX_REGS - 24) // CONSUMERS // 8 * 8))   # 240


@gluon.jit
def _producer(x_desc, w_desc, zs_desc, x_bufs, w_bufs, z_bufs, ready, empty, pid_n, off_t, n_steps,
              G: gl.constexpr):
    """Fill stage i % STAGES with step i's x and each consumer's words and zero/scale rows (consumer
    c's in buffer ``s * 2 + c``) once both consumers have released it (its "empty" barrier; the
    first pass waits on the parity before phase 0, which returns at once)."""
    STAGES: gl.constexpr = x_bufs.shape[0]
    KT: gl.constexpr = x_desc.block_type.shape[0]
    BANDS: gl.constexpr = w_desc.block_type.shape[1]
    nbytes: gl.constexpr = x_desc.block_type.nbytes + 2 * (w_desc.block_type.nbytes + zs_desc.block_type.nbytes)
    for i in range(n_steps):
        s = i % STAGES
        mbarrier.wait(empty.index(s), ((i // STAGES) & 1) ^ 1)
        kt = i * KT
        bar = ready.index(s)
        mbarrier.expect(bar, nbytes)
        for c in gl.static_range(2):
            band = (pid_n * 2 + c) * BANDS
            _tma_load(w_desc, [kt, band, 0], bar, w_bufs.index(s * 2 + c))
            _tma_load(zs_desc, [(kt * 64) // G, band * 16], bar, z_bufs.index(s * 2 + c))
        _tma_load(x_desc, [kt, off_t, 0], bar, x_bufs.index(s))


@gluon.jit
def _consumer(c: gl.constexpr, x_bufs, w_bufs, z_bufs, ready, empty, out_ptr, M, stride_om, pid_n, off_t, n_steps,
              G: gl.constexpr, SILU: gl.constexpr):
    """Consumer warpgroup c: channels (2 pid_n + c) BLOCK_N .. + BLOCK_N of the CTA's tokens.

    After each ``_mma_step`` (which has waited for its wgmmas) the fence orders this warpgroup's
    generic-proxy reads of the stage before the producer's next TMA (async proxy) into it, and one
    thread releases the stage: the wgmmas having completed, all four warps have issued them, hence
    finished their unpack loads."""
    STAGES: gl.constexpr = x_bufs.shape[0]
    BT: gl.constexpr = x_bufs.shape[2]
    BN: gl.constexpr = 16 * w_bufs.shape[2]
    W_LAYOUT: gl.constexpr = words_layout(BN)
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BT, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_layout, k_width=2)
    acc = gl.zeros([BN, BT], dtype=gl.float32, layout=mma_layout)
    for i in range(n_steps):
        s = i % STAGES
        mbarrier.wait(ready.index(s), (i // STAGES) & 1)
        acc = _mma_step(x_bufs.index(s), w_bufs, z_bufs, s * 2 + c, acc, i > 0, G, a_layout, W_LAYOUT, 4)
        fence_async_shared()
        mbarrier.arrive(empty.index(s), count=1)
    out_layout: gl.constexpr = gl.BlockedLayout([8, 1], [BN // 8, 32 * 8 // BN], [1, 4], [0, 1])
    _store_out(acc, out_ptr, pid_n * 2 + c, off_t, M, stride_om, mma_layout, out_layout, SILU, 4)


@gluon.jit(do_not_specialize=["M"])
def awq_wgmma_t_ws_kernel(x_desc, w_desc, zs_desc, out_ptr, M, N, K, stride_om, G: gl.constexpr,
                          STAGES: gl.constexpr, SILU: gl.constexpr, num_warps: gl.constexpr):
    """One [2 BLOCK_N channels, BLOCK_T tokens] tile of out^T over all of K (large M has tiles
    enough without split-K). A 1-D grid rastered in groups of GROUP_T token tiles: the CTAs resident
    together cover ~GROUP_T token tiles x (SMs / GROUP_T) channel tiles, which then come from L2."""
    KT: gl.constexpr = x_desc.block_type.shape[0]
    BT: gl.constexpr = x_desc.block_type.shape[1]
    BK: gl.constexpr = x_desc.block_type.shape[2]
    BANDS: gl.constexpr = w_desc.block_type.shape[1]
    R: gl.constexpr = zs_desc.block_type.shape[0]
    gl.static_assert(num_warps == 4, "the default partition is consumer 0: one warpgroup")

    pid = gl.program_id(0)
    n_tiles = N // (32 * BANDS)
    in_group = GROUP_T * n_tiles
    first_t = (pid // in_group) * GROUP_T
    size = gl.minimum(gl.cdiv(M, BT) - first_t, GROUP_T)
    pid_t = first_t + (pid % in_group) % size
    pid_n = (pid % in_group) // size
    off_t = pid_t * BT

    x_bufs = gl.allocate_shared_memory(gl.float16, [STAGES, KT, BT, BK], x_desc.layout)
    w_bufs = gl.allocate_shared_memory(gl.int32, [STAGES * 2] + w_desc.block_type.shape, w_desc.layout)
    z_bufs = gl.allocate_shared_memory(gl.int32, [STAGES * 2, R, 16 * BANDS], zs_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    n_steps = K // (BK * KT)
    # The argument tuples are written out here: a tuple assigned to a variable first would turn its
    # constexprs into tensors (Triton 3.6).
    gl.warp_specialize([
        (_consumer, (0, x_bufs, w_bufs, z_bufs, ready, empty, out_ptr, M, stride_om, pid_n, off_t, n_steps, G, SILU)),
        (_consumer, (1, x_bufs, w_bufs, z_bufs, ready, empty, out_ptr, M, stride_om, pid_n, off_t, n_steps, G, SILU)),
        (_producer, (x_desc, w_desc, zs_desc, x_bufs, w_bufs, z_bufs, ready, empty, pid_n, off_t, n_steps, G)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


def check_config(n: int, k: int, group: int, cfg: WgmmaTConfig) -> int:
    """K tiles a step for this shape (``k_tiles_per_step``), after refusing tiles the kernel cannot run."""
    if cfg.consumers != CONSUMERS or cfg.split_k != 1 or cfg.block_n not in (64, 128) \
            or cfg.block_n * cfg.block_t > 64 * 256:
        raise ValueError(f"{cfg}: the warp-specialised kernel runs {CONSUMERS} consumers of BLOCK_N = 64 or 128 "
                         "channels, BLOCK_N x BLOCK_T <= 64 x 256, without split-K")
    if n % cfg.cta_channels:
        raise ValueError(f"{cfg}: the CTA's {cfg.cta_channels} channels must divide N = {n}")
    return k_tiles_per_step(k, group, cfg)


def wgmma_t_ws_gemm(x: torch.Tensor, words: torch.Tensor, zs: torch.Tensor, cfg: WgmmaTConfig, out: torch.Tensor,
                    silu_and_mul: bool = False) -> torch.Tensor:
    """``out = x @ W`` (or ``silu(x @ W_gate) * (x @ W_up)``, as ``awq_wgmma_t.wgmma_t_gemm``) from
    ``repack``'s tensors; the caller has checked ``awq_wgmma_t.supports`` and out's shape."""
    m, k = x.shape
    n = zs.shape[1]
    group = k // zs.shape[0]
    kt = check_config(n, k, group, cfg)
    x_desc, w_desc, zs_desc = descriptors(x, words, zs, cfg, kt)
    grid = (triton.cdiv(m, cfg.block_t) * (n // cfg.cta_channels), )
    awq_wgmma_t_ws_kernel[grid](x_desc, w_desc, zs_desc, out, m, n, k, out.stride(0), G=group, STAGES=cfg.stages,
                                SILU=silu_and_mul, num_warps=cfg.num_warps, maxnreg=MAX_REGS)
    return out
