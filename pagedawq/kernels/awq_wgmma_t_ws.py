"""The "wgmma_t" AWQ GEMM warp-specialised: one TMA warp and 2 or 4 MMA warpgroups a CTA.

``awq_wgmma_t`` computes ``out^T = W^T x^T`` with the unpacked weights as wgmma's register operand.
Each of its steps waits for its wgmmas before the next unpack (ptxas reuses a running wgmma's A
registers), so inside a program unpack and MMA alternate, and only programs sharing an SM overlap
them. Two warpgroups in one plain program ran in lockstep: Triton's membar pass puts a CTA barrier
before every TMA issue. Here a CTA is ``gl.warp_specialize``d into

* one producer warp that only issues the TMA boxes (x, and each channel group's packed words and
  zero/scale rows, ``STAGES`` steps ahead) into a ring of slots, each once its consumers have
  released it, and
* ``NC x KC`` consumer warpgroups: consumer c computes channel group ``c % NC`` (BLOCK_N channels;
  the NC groups of a CTA share each x tile, loaded once) over the steps i with ``i % KC == c // NC``
  of the CTA's K slice, with ``awq_wgmma_t._mma_step`` (unpack, wgmmas, wait), then releases the
  slot. They wait on their own barrier phases and never on a CTA-wide barrier, so they drift apart
  and one's unpack runs beside another's MMA.

Two regimes (``awq_configs.wgmma_t_config``):

* Large M (``ws_config``): NC = 2, KC = 1, the GPU filled by output tiles; CTAs are rastered in
  groups of ``GROUP_T`` token tiles so that those resident at once share their weight and x tiles
  in L2. 0.94-1.13x cuBLAS fp16 on the Llama-2-7B layers at M = 512-4096 (H100, session 8).
* 33-64 tokens on layers with few channel tiles (``ws_small_config``): KC = 2, the consumers of a
  channel group splitting its K steps between them (their partials meet in shared memory: phases
  1 .. KC-1 store theirs and signal, phase 0 adds them in phase order, deterministic), plus split-K
  across CTAs as in ``awq_wgmma_t`` (fp32 partials in a workspace, summed in slice order by the
  last CTA of a tile to arrive), and programmatic dependent launch: the producer requests the first
  ``STAGES`` steps' weights before ``griddepcontrol.wait`` and x after.

Registers: the launch cap is the register file over the CTA's warpgroups (the producer warp counts
as one); setmaxnreg then gives the producer 24 and the consumers the rest (240 each for two
consumers, 112 for four), one CTA an SM. A ring slot always serves the same K phase (STAGES is a
multiple of KC), so its "empty" barrier counts the NC consumers of that phase.
"""
from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier

from pagedawq.kernels.awq_configs import WgmmaTConfig, k_tiles_per_step
from pagedawq.kernels.awq_wgmma_t import (GROUP_SCALE_MAX_T, _cluster_sum_tile, _cta_barrier, _griddep, _mma_step,
                                          _tma_load, _write_tile, cluster_reduces, descriptors, k_slices,
                                          launch_split_k, mark_weight_stream, streams_weights, words_layout)
from pagedawq.kernels.clusters import arrive_cluster, init_push_barrier, smem_address
from pagedawq.kernels.pdl import pdl_launch
from pagedawq.kernels.split_k import SplitKPartials

GROUP_T = gl.constexpr(8)              # token tiles a raster group
# Four consumers have 112 registers a thread: at 64-token tiles a group accumulator more spills.
FOUR_CONSUMER_GROUP_SCALE_MAX_T = gl.constexpr(32)
PRODUCER_REGS = gl.constexpr(24)       # the least setmaxnreg allows; the producer holds only scalars
# Token tiles up to which the K slices of a CTA of two K-phase consumers sum as a cluster (the
# configs of 33-128 tokens; one CTA an SM whatever the partial buffer). H100, session 13: 7B down at
# 64 tokens 18.1-18.6 us against 19.8-20.0 with global partials, o 10.8 against 13.1; at 128 tokens
# see ``awq_configs.ws_small_config``; the batch-64 decode graph as before (3698-3710 us against
# 3704-3709: decode handed o/down partials to the norm).
WS_CLUSTER_MAX_T = 128


def max_regs(consumers: int) -> int:
    """A thread's registers at launch: the register file over the consumer warpgroups and the
    producer warp (which counts as a warpgroup), one CTA an SM (168 for 2 consumers, 96 for 4)."""
    return 65536 // (128 * (consumers + 1)) // 8 * 8


def consumer_regs(consumers: int) -> int:
    """A consumer thread's registers after setmaxnreg: the CTA's launch share less the producer's."""
    return min(256, ((consumers + 1) * max_regs(consumers) - PRODUCER_REGS.value) // consumers // 8 * 8)


@gluon.jit
def _load_words(bar, slot, kt, w_desc, zs_desc, w_bufs, z_bufs, pid_n, G: gl.constexpr, NC: gl.constexpr):
    """Each channel group's packed words and zero/scale rows of the K tiles from kt into ring slot
    ``slot`` (group g's in buffer ``slot * NC + g``)."""
    BANDS: gl.constexpr = w_desc.block_type.shape[1]
    for g in gl.static_range(NC):
        band = (pid_n * NC + g) * BANDS
        _tma_load(w_desc, [kt, band, 0], bar, w_bufs.index(slot * NC + g))
        _tma_load(zs_desc, [(kt * 64) // G, band * 16], bar, z_bufs.index(slot * NC + g))


@gluon.jit
def _producer(x_desc, w_desc, zs_desc, x_bufs, w_bufs, z_bufs, ready, empty, pid_n, off_t, kt_lo, n_steps,
              G: gl.constexpr, NC: gl.constexpr, PDL: gl.constexpr, CLUSTER: gl.constexpr):
    """Fill slot i % STAGES with step i once its consumers have released it (its "empty" barrier;
    the first pass finds every slot empty). The first STAGES steps' weights are requested before the
    PDL wait, their x after it."""
    if CLUSTER > 1:
        arrive_cluster()
    STAGES: gl.constexpr = x_bufs.shape[0]
    KT: gl.constexpr = x_desc.block_type.shape[0]
    nbytes: gl.constexpr = x_desc.block_type.nbytes + NC * (w_desc.block_type.nbytes + zs_desc.block_type.nbytes)
    for i in gl.static_range(STAGES):
        if i < n_steps:
            mbarrier.expect(ready.index(i), nbytes)
            _load_words(ready.index(i), i, kt_lo + i * KT, w_desc, zs_desc, w_bufs, z_bufs, pid_n, G, NC)
    if PDL:   # x (and the workspace, counters and output the consumers write) may belong to the previous kernel
        _griddep("wait")
    for i in gl.static_range(STAGES):
        if i < n_steps:
            _tma_load(x_desc, [kt_lo + i * KT, off_t, 0], ready.index(i), x_bufs.index(i))
    for i in range(STAGES, n_steps):
        s = i % STAGES
        mbarrier.wait(empty.index(s), ((i // STAGES) & 1) ^ 1)
        kt = kt_lo + i * KT
        bar = ready.index(s)
        mbarrier.expect(bar, nbytes)
        _load_words(bar, s, kt, w_desc, zs_desc, w_bufs, z_bufs, pid_n, G, NC)
        _tma_load(x_desc, [kt, off_t, 0], bar, x_bufs.index(s))
    if PDL:
        _griddep("launch_dependents")


@gluon.jit
def _consumer(c: gl.constexpr, x_bufs, w_bufs, z_bufs, ready, empty, red_bufs, red_bars, out_ptr, ws_ptr, cnt_ptr,
              M, N, stride_om, split_k, pid_n, pid_t, pid_s, off_t, n_steps, cluster_smem, G: gl.constexpr,
              NC: gl.constexpr, KC: gl.constexpr, SPLIT: gl.constexpr, PDL: gl.constexpr, SILU: gl.constexpr,
              DEFER: gl.constexpr, CLUSTER: gl.constexpr):
    """Consumer warpgroup c: channel group g = c % NC over the steps of K phase p = c // NC.

    After each ``_mma_step`` (which has waited for its wgmmas, so all four warps have finished their
    unpack loads) the fence orders this warpgroup's generic-proxy reads of the slot before the
    producer's next TMA into it, and one thread releases the slot. Then phases 1 .. KC-1 store their
    accumulators in shared memory and signal (after a barrier of their own warpgroup: every thread's
    store is issued), and phase 0 adds them in phase order and writes the tile (with ``CLUSTER``,
    summing the CTA's K slices as ``awq_wgmma_t._cluster_sum_tile``)."""
    if CLUSTER > 1:
        arrive_cluster()
    STAGES: gl.constexpr = x_bufs.shape[0]
    BT: gl.constexpr = x_bufs.shape[2]
    BN: gl.constexpr = 16 * w_bufs.shape[2]
    W_LAYOUT: gl.constexpr = words_layout(BN)
    g: gl.constexpr = c % NC
    p: gl.constexpr = c // NC
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, BT, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_layout, k_width=2)
    acc = gl.zeros([BN, BT], dtype=gl.float32, layout=mma_layout)
    for i in range(p, n_steps, KC):
        s = i % STAGES
        mbarrier.wait(ready.index(s), (i // STAGES) & 1)
        acc = _mma_step(x_bufs.index(s), w_bufs, z_bufs, s * NC + g, acc, i >= KC, G, a_layout, W_LAYOUT, 4,
                        GROUP_SCALE_MAX_T if NC * KC == 2 else FOUR_CONSUMER_GROUP_SCALE_MAX_T)
        fence_async_shared()
        mbarrier.arrive(empty.index(s), count=1)
    if PDL:
        _griddep("launch_dependents")
    if KC > 1:
        if p > 0:
            red_bufs.slice(((p - 1) * NC + g) * BN, BN).store(acc)
            _cta_barrier()
            mbarrier.arrive(red_bars.index(g), count=1)
        else:
            mbarrier.wait(red_bars.index(g), 0)
            for q in gl.static_range(1, KC):
                acc += red_bufs.slice(((q - 1) * NC + g) * BN, BN).load(mma_layout)
    if p == 0:
        if CLUSTER > 1:
            _cluster_sum_tile(acc, out_ptr, M, stride_om, pid_n, pid_s, off_t, cluster_smem, CLUSTER, SILU, mma_layout,
                              4)
        else:
            _write_tile(acc, out_ptr, ws_ptr, cnt_ptr, M, N, stride_om, split_k, pid_n * NC + g, pid_t, pid_s, off_t,
                        mma_layout, SPLIT, SILU, 4, DEFER)


@gluon.constexpr_function
def handover_rows(block_n: int, nc: int, kc: int) -> int:
    """Rows of the fp32 buffer [rows, BLOCK_T] through which K phases 1 .. KC-1 hand their
    accumulators to phase 0: theirs, rounded up to a power of two (a shared-memory shape must be
    one); one unused row without K phases."""
    return triton.next_power_of_2((kc - 1) * nc) * block_n if kc > 1 else 1


@gluon.jit(do_not_specialize=["M", "split_k", "cluster_smem"])
def awq_wgmma_t_ws_kernel(x_desc, w_desc, zs_desc, out_ptr, ws_ptr, cnt_ptr, M, N, K, stride_om, split_k,
                          G: gl.constexpr, STAGES: gl.constexpr, NC: gl.constexpr, KC: gl.constexpr,
                          SPLIT: gl.constexpr, PDL: gl.constexpr, SILU: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                          num_warps: gl.constexpr, DEFER: gl.constexpr = False, CLUSTER: gl.constexpr = 1,
                          cluster_smem=0, STREAM_W: gl.constexpr = False):
    """One tile of out^T, NC x BLOCK_N channels x BLOCK_T tokens, over K slice ``program_id(1)`` of
    ``split_k``: the partitions of the module docstring over shared memory allocated here. Axis 0 is
    rastered in groups of GROUP_T token tiles: the CTAs resident together cover ~GROUP_T token tiles
    x (SMs / GROUP_T) channel tiles, which then come from L2. With ``SILU`` the layer is a gate/up
    pair repacked in ``silu_channel_order`` and out [M, N / 2] receives ``silu(gate) * up``.
    ``CLUSTER`` (one channel group, = ``split_k``): the K slices of a tile are one cluster along axis
    0 and sum as in ``awq_wgmma_t``; the producer is then a full warpgroup (its first warp issues),
    so that every warp of the CTA runs a partition and arrives on the cluster barrier (a lone
    producer warp leaves three idle warps that never would). ``STREAM_W``: as in ``awq_wgmma_t``."""
    if STREAM_W:
        mark_weight_stream()
    KT: gl.constexpr = x_desc.block_type.shape[0]
    BT: gl.constexpr = x_desc.block_type.shape[1]
    BK: gl.constexpr = x_desc.block_type.shape[2]
    BANDS: gl.constexpr = w_desc.block_type.shape[1]
    BN: gl.constexpr = 16 * BANDS
    R: gl.constexpr = zs_desc.block_type.shape[0]
    gl.static_assert(num_warps == 4, "the default partition is consumer 0: one warpgroup")
    gl.static_assert(NC * KC == 2 or NC * KC == 4, "2 or 4 consumer warpgroups")
    gl.static_assert(STAGES % KC == 0, "a ring slot always serves the same K phase")

    gl.static_assert(CLUSTER == 1 or NC == 1, "a cluster sums one channel group's tile")
    PRODUCER_WARPS: gl.constexpr = 4 if CLUSTER > 1 else 1
    if CLUSTER > 1:
        pid = gl.program_id(0) // CLUSTER
        pid_s = gl.program_id(0) % CLUSTER
        init_push_barrier(smem_address(cluster_smem))
    else:
        pid = gl.program_id(0)
        pid_s = gl.program_id(1)
    n_tiles = N // (NC * BN)
    in_group = GROUP_T * n_tiles
    first_t = (pid // in_group) * GROUP_T
    size = gl.minimum(gl.cdiv(M, BT) - first_t, GROUP_T)
    pid_t = first_t + (pid % in_group) % size
    pid_n = (pid % in_group) // size
    off_t = pid_t * BT

    x_bufs = gl.allocate_shared_memory(gl.float16, [STAGES, KT, BT, BK], x_desc.layout)
    w_bufs = gl.allocate_shared_memory(gl.int32, [STAGES * NC] + w_desc.block_type.shape, w_desc.layout)
    z_bufs = gl.allocate_shared_memory(gl.int32, [STAGES * NC, R, BN], zs_desc.layout)
    # the accumulators of K phases 1 .. KC-1 (rows ((p - 1) NC + g) BN ..), in their register order
    red_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0])
    red_bufs = gl.allocate_shared_memory(gl.float32, [handover_rows(BN, NC, KC), BT], red_layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    red_bars = gl.allocate_shared_memory(gl.int64, [NC, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=NC)
    for g in gl.static_range(NC):
        mbarrier.init(red_bars.index(g), count=KC - 1 if KC > 1 else 1)

    k_steps = K // (BK * KT)
    per_split = gl.cdiv(k_steps, split_k)
    kt_lo = pid_s * per_split * KT
    n_steps = gl.minimum(per_split, k_steps - pid_s * per_split)    # >= 1: no empty slices
    # The partitions' argument tuples are written out: a tuple assigned to a variable first would
    # turn its constexprs into tensors (Triton 3.6).
    if NC * KC == 2:
        gl.warp_specialize([
            (_consumer, (0, x_bufs, w_bufs, z_bufs, ready, empty, red_bufs, red_bars, out_ptr, ws_ptr, cnt_ptr, M, N,
                         stride_om, split_k, pid_n, pid_t, pid_s, off_t, n_steps, cluster_smem, G, NC, KC, SPLIT,
                         PDL, SILU, DEFER, CLUSTER)),
            (_consumer, (1, x_bufs, w_bufs, z_bufs, ready, empty, red_bufs, red_bars, out_ptr, ws_ptr, cnt_ptr, M, N,
                         stride_om, split_k, pid_n, pid_t, pid_s, off_t, n_steps, cluster_smem, G, NC, KC, SPLIT,
                         PDL, SILU, DEFER, CLUSTER)),
            (_producer, (x_desc, w_desc, zs_desc, x_bufs, w_bufs, z_bufs, ready, empty, pid_n, off_t, kt_lo, n_steps,
                         G, NC, PDL, CLUSTER)),
        ], [4, PRODUCER_WARPS], [CONSUMER_REGS, PRODUCER_REGS])
    else:
        gl.warp_specialize([
            (_consumer, (0, x_bufs, w_bufs, z_bufs, ready, empty, red_bufs, red_bars, out_ptr, ws_ptr, cnt_ptr, M, N,
                         stride_om, split_k, pid_n, pid_t, pid_s, off_t, n_steps, cluster_smem, G, NC, KC, SPLIT,
                         PDL, SILU, DEFER, CLUSTER)),
            (_consumer, (1, x_bufs, w_bufs, z_bufs, ready, empty, red_bufs, red_bars, out_ptr, ws_ptr, cnt_ptr, M, N,
                         stride_om, split_k, pid_n, pid_t, pid_s, off_t, n_steps, cluster_smem, G, NC, KC, SPLIT,
                         PDL, SILU, DEFER, CLUSTER)),
            (_consumer, (2, x_bufs, w_bufs, z_bufs, ready, empty, red_bufs, red_bars, out_ptr, ws_ptr, cnt_ptr, M, N,
                         stride_om, split_k, pid_n, pid_t, pid_s, off_t, n_steps, cluster_smem, G, NC, KC, SPLIT,
                         PDL, SILU, DEFER, CLUSTER)),
            (_consumer, (3, x_bufs, w_bufs, z_bufs, ready, empty, red_bufs, red_bars, out_ptr, ws_ptr, cnt_ptr, M, N,
                         stride_om, split_k, pid_n, pid_t, pid_s, off_t, n_steps, cluster_smem, G, NC, KC, SPLIT,
                         PDL, SILU, DEFER, CLUSTER)),
            (_producer, (x_desc, w_desc, zs_desc, x_bufs, w_bufs, z_bufs, ready, empty, pid_n, off_t, kt_lo, n_steps,
                         G, NC, PDL, CLUSTER)),
        ], [4, 4, 4, PRODUCER_WARPS], [CONSUMER_REGS, CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])


def check_config(n: int, k: int, group: int, cfg: WgmmaTConfig) -> int:
    """K tiles a step for this shape (``k_tiles_per_step``), after refusing configs the kernel cannot run."""
    if cfg.consumers not in (2, 4) or cfg.consumers % cfg.k_phases or cfg.block_n not in (64, 128) \
            or cfg.block_n * cfg.block_t > 64 * 256:
        raise ValueError(f"{cfg}: the warp-specialised kernel runs 2 or 4 consumers (channel groups x K phases) of "
                         "BLOCK_N = 64 or 128 channels, BLOCK_N x BLOCK_T <= 64 x 256")
    if n % cfg.cta_channels:
        raise ValueError(f"{cfg}: the CTA's {cfg.cta_channels} channels must divide N = {n}")
    if cfg.stages % cfg.k_phases:
        raise ValueError(f"{cfg}: the stages must be a multiple of the K phases (a slot serves one phase)")
    return k_tiles_per_step(k, group, cfg)


def wgmma_t_ws_gemm(x: torch.Tensor, words: torch.Tensor, zs: torch.Tensor, cfg: WgmmaTConfig, out: torch.Tensor,
                    counters: torch.Tensor | None = None, silu_and_mul: bool = False, split_k_partials: bool = False
                    ) -> torch.Tensor | SplitKPartials:
    """``out = x @ W`` (or ``silu(x @ W_gate) * (x @ W_up)``, as ``awq_wgmma_t.wgmma_t_gemm``) from
    ``repack``'s tensors; the caller has checked ``awq_wgmma_t.supports`` and out's shape. Split-K
    needs a zeroed int32 counter per output tile (``awq_wgmma_t.output_tiles``)."""
    m, k = x.shape
    n = zs.shape[1]
    group = k // zs.shape[0]
    kt = check_config(n, k, group, cfg)
    x_desc, w_desc, zs_desc = descriptors(x, words, zs, cfg, kt)
    split = k_slices(k, kt, cfg)
    tiles = triton.cdiv(m, cfg.block_t) * (n // cfg.cta_channels)
    consts = dict(G=group, STAGES=cfg.stages, NC=cfg.channel_groups, KC=cfg.k_phases, SPLIT=split > 1,
                  SILU=silu_and_mul, CONSUMER_REGS=consumer_regs(cfg.consumers), num_warps=cfg.num_warps,
                  maxnreg=max_regs(cfg.consumers), STREAM_W=streams_weights(m, cfg), **pdl_launch(x.device, m))
    # one channel group (four consumers' epilogue would spill) whose slices sum as a cluster
    clustered = (cfg.consumers == 2 and cfg.k_phases == 2
                 and cluster_reduces(split, cfg.block_n, cfg.block_t, silu_and_mul, WS_CLUSTER_MAX_T))
    return launch_split_k(awq_wgmma_t_ws_kernel, (tiles,), split, clustered, cfg, x, (x_desc, w_desc, zs_desc), zs,
                          out, counters, split_k_partials, **consts)
