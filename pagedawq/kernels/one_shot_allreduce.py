"""One-shot all-reduce over peer-mapped buffers, in Triton, for any float dtype.

Decode steps all-reduce a few kilobytes twice per layer; NCCL's fixed cost (~12 us on NVLink) is
most of that time. With every rank's staging buffer mapped into every peer (PyTorch symmetric
memory), one kernel per rank can do the whole collective:

1. each program copies its chunks of the input into this rank's staging buffer;
2. it meets the programs with the same index on every peer at a barrier made of signal flags;
3. it reads those chunks from every peer's staging buffer, sums them in float32 in a fixed rank
   order (so all ranks get bit-identical results) and writes the output;
4. it meets them at a second barrier, so that no rank leaves (and overwrites its staging buffer in
   the next call) while a peer may still be reading it. Without this exit barrier the staging
   buffers would have to alternate strictly between calls, which a CUDA graph replaying a fixed
   sequence of an odd number of all-reduces cannot guarantee.

PyTorch ships such a kernel (``one_shot_all_reduce``) for bfloat16 and float32 only, and AutoAWQ
checkpoints run in float16: this one is dtype-generic and copies the input itself (one launch
instead of a copy plus the collective).

A second kernel fuses what follows every row-parallel all-reduce in a transformer layer: the
residual add and the RMSNorm (``one_shot_all_reduce_add_rms_norm``), saving a launch and a pass
over the hidden state per all-reduce. It rounds at the same points as the two unfused kernels.

The barriers are graph-safe: a flag goes 0 -> 1 when a peer signals and back 1 -> 0 when it is
consumed, so the signal pads are all zero between calls and nothing has to be reset from the
host. Flags are compare-and-swapped at system scope with release (signal) and acquire (wait)
order; a ``debug_barrier`` (bar.sync) before signalling and after waiting extends that ordering
to every thread of the program. The two barriers of a call use separate flags.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from pagedawq.kernels.fused_ops import row_warps
from pagedawq.kernels.pdl import pdl_launch, pdl_start

# Elements a program moves per iteration, and the most programs one call uses: each program is one
# barrier participant, so a few large programs beat many small ones at decode sizes.
BLOCK = 2048
MAX_PROGRAMS = 16
NUM_WARPS = 8


# One thread per peer: signal it (wait until my previous flag there was consumed, then set it:
# release), then wait for its flag in my pad and consume it (acquire). Threads without a peer skip.
_BARRIER_PTX = tl.constexpr("""
{
    .reg .pred %p<2>;
    .reg .b32 %r<2>;
    setp.ne.s32 %p0, $3, 0;
    @!%p0 bra done;
send:
    atom.global.sys.release.cas.b32 %r0, [$1], 0, 1;
    setp.ne.s32 %p1, %r0, 0;
    @%p1 bra send;
wait:
    atom.global.sys.acquire.cas.b32 %r1, [$2], 1, 0;
    setp.ne.s32 %p1, %r1, 1;
    @%p1 bra wait;
done:
    mov.u32 $0, 0;
}
""")


@triton.jit
def _barrier(signal_pad_ptrs, slot, RANK: tl.constexpr, WORLD: tl.constexpr, THREADS: tl.constexpr,
             USE_ASM: tl.constexpr):
    """Barrier between program ``slot`` of every rank: set my flag in each peer's pad, then
    consume each peer's flag in mine.

    Compiled, each peer gets its own thread (a [THREADS] tensor, one element per thread, so no
    flag is touched twice). The interpreter, which cannot run PTX, loops over the peers with
    Triton atomics instead."""
    local_pad = tl.load(signal_pad_ptrs + RANK).to(tl.pointer_type(tl.int32))
    if USE_ASM:
        lane = tl.arange(0, THREADS)
        active = (lane < WORLD) & (lane != RANK)
        peer_pads = tl.load(signal_pad_ptrs + lane, mask=lane < WORLD, other=0).to(tl.pointer_type(tl.int32))
        tl.inline_asm_elementwise(_BARRIER_PTX, "=r,l,l,r",
                                  [peer_pads + slot * WORLD + RANK, local_pad + slot * WORLD + lane,
                                   active.to(tl.int32)],
                                  dtype=tl.int32, is_pure=False, pack=1)
    else:
        for peer in tl.static_range(WORLD):
            if peer != RANK:
                peer_pad = tl.load(signal_pad_ptrs + peer).to(tl.pointer_type(tl.int32))
                while tl.atomic_cas(peer_pad + slot * WORLD + RANK, 0, 1, sem="release", scope="sys") != 0:
                    pass
        for peer in tl.static_range(WORLD):
            if peer != RANK:
                while tl.atomic_cas(local_pad + slot * WORLD + peer, 1, 0, sem="acquire", scope="sys") != 1:
                    pass


@triton.jit
def _sum_peers(buffer_ptrs, offs, mask, DT: tl.constexpr, WORLD: tl.constexpr):
    """float32 sum of every rank's staged elements at ``offs``, in rank order (so that all ranks
    get bit-identical results). Volatile loads: the peers wrote them after this kernel started."""
    acc = tl.zeros(offs.shape, dtype=tl.float32)
    for peer in tl.static_range(WORLD):
        buf = tl.load(buffer_ptrs + peer).to(tl.pointer_type(DT))
        acc += tl.load(buf + offs, mask=mask, other=0.0, volatile=True).to(tl.float32)
    return acc


@triton.jit
def _one_shot_all_reduce_kernel(x_ptr, out_ptr, buffer_ptrs, signal_pad_ptrs, numel,
                                RANK: tl.constexpr, WORLD: tl.constexpr, BLOCK: tl.constexpr,
                                THREADS: tl.constexpr, USE_ASM: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    offs = tl.arange(0, BLOCK)
    own = tl.load(buffer_ptrs + RANK).to(tl.pointer_type(x_ptr.dtype.element_ty))
    for start in range(pid * BLOCK, numel, nprog * BLOCK):
        idx = start + offs
        mask = idx < numel
        tl.store(own + idx, tl.load(x_ptr + idx, mask=mask), mask=mask)
    tl.debug_barrier()
    _barrier(signal_pad_ptrs, 2 * pid, RANK, WORLD, THREADS, USE_ASM)
    tl.debug_barrier()
    for start in range(pid * BLOCK, numel, nprog * BLOCK):
        idx = start + offs
        mask = idx < numel
        acc = _sum_peers(buffer_ptrs, idx, mask, x_ptr.dtype.element_ty, WORLD)
        tl.store(out_ptr + idx, acc.to(out_ptr.dtype.element_ty), mask=mask)
    tl.debug_barrier()
    _barrier(signal_pad_ptrs, 2 * pid + 1, RANK, WORLD, THREADS, USE_ASM)


@triton.jit
def _one_shot_all_reduce_add_rms_norm_kernel(x_ptr, residual_ptr, weight_ptr, out_ptr, residual_out_ptr,
                                             buffer_ptrs, signal_pad_ptrs, rows, hidden, eps,
                                             RANK: tl.constexpr, WORLD: tl.constexpr, BLOCK_H: tl.constexpr,
                                             THREADS: tl.constexpr, USE_ASM: tl.constexpr, PDL: tl.constexpr):
    """Rows ``pid, pid + nprog, ...`` of ``residual_out = sum_ranks(x) + residual`` and
    ``out = rms_norm(residual_out) * weight``; x, residual, out, residual_out are contiguous
    [rows, hidden]. The same staging and barriers as the plain kernel, one row per step."""
    pdl_start(PDL)
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_H)
    mask = cols < hidden
    dt = x_ptr.dtype.element_ty
    own = tl.load(buffer_ptrs + RANK).to(tl.pointer_type(dt))
    for row in range(pid, rows, nprog):
        off = row * hidden + cols
        tl.store(own + off, tl.load(x_ptr + off, mask=mask), mask=mask)
    tl.debug_barrier()
    _barrier(signal_pad_ptrs, 2 * pid, RANK, WORLD, THREADS, USE_ASM)
    tl.debug_barrier()
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    for row in range(pid, rows, nprog):
        off = row * hidden + cols
        acc = _sum_peers(buffer_ptrs, off, mask, dt, WORLD)
        r = tl.load(residual_ptr + off, mask=mask, other=0.0)
        # Rounded where the unfused path rounds: the all-reduce's output, then the new residual.
        h = (acc.to(dt).to(tl.float32) + r.to(tl.float32)).to(dt)
        tl.store(residual_out_ptr + off, h, mask=mask)
        hf = h.to(tl.float32)
        inv_rms = tl.math.rsqrt(tl.sum(hf * hf, 0) / hidden + eps)
        tl.store(out_ptr + off, (hf * inv_rms * w).to(dt), mask=mask)
    tl.debug_barrier()
    _barrier(signal_pad_ptrs, 2 * pid + 1, RANK, WORLD, THREADS, USE_ASM)


def num_programs(numel: int) -> int:
    """Programs one call of ``numel`` elements uses (each uses two barrier slots)."""
    return max(1, min(MAX_PROGRAMS, triton.cdiv(numel, BLOCK)))


def one_shot_all_reduce(x: torch.Tensor, out: torch.Tensor, buffer_ptrs: torch.Tensor,
                        signal_pad_ptrs: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Sum ``x`` over the ranks into ``out`` (which may be ``x``).

    ``buffer_ptrs``/``signal_pad_ptrs`` are int64 tensors on ``x``'s device holding, per rank, the
    address of its staging buffer (at least ``x.numel()`` elements of ``x.dtype``) and of its
    zeroed int32 signal pad (at least ``2 * num_programs(numel) * world_size`` flags). Every rank
    must call this with the same ``numel`` and at most ``32 * NUM_WARPS`` ranks."""
    if world_size > 32 * NUM_WARPS:
        raise ValueError(f"one_shot_all_reduce supports at most {32 * NUM_WARPS} ranks")
    if not (x.is_contiguous() and out.is_contiguous() and x.dtype == out.dtype and x.numel() == out.numel()):
        raise ValueError("one_shot_all_reduce needs contiguous x and out of the same dtype and size")
    numel = x.numel()
    if numel:
        _one_shot_all_reduce_kernel[(num_programs(numel),)](
            x, out, buffer_ptrs, signal_pad_ptrs, numel, RANK=rank, WORLD=world_size, BLOCK=BLOCK,
            THREADS=32 * NUM_WARPS, USE_ASM=_use_asm(x), num_warps=NUM_WARPS)
    return out


def _use_asm(x: torch.Tensor) -> bool:
    return x.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1"


def add_rms_norm_programs(rows: int) -> int:
    """Programs one fused call over ``rows`` rows uses (one row at a time; two barrier slots each)."""
    return max(1, min(MAX_PROGRAMS, rows))


def one_shot_all_reduce_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                                     buffer_ptrs: torch.Tensor, signal_pad_ptrs: torch.Tensor, rank: int,
                                     world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual' = sum_ranks(x) + residual``; returns ``(rms_norm(residual') * weight, residual')``,
    new tensors, equal to ``one_shot_all_reduce`` followed by ``fused_ops.fused_add_rms_norm``.

    x and residual are contiguous [rows, hidden] of one dtype; the staging buffers hold at least
    ``x.numel()`` elements, the signal pads ``2 * add_rms_norm_programs(rows) * world_size`` flags.
    Each program owns whole rows (the norm needs the row's sum of squares), with the warps of
    ``fused_ops``' row kernel so that its reduction tree, and hence its rounding, is the same."""
    if x.dim() != 2 or x.shape != residual.shape or not (x.is_contiguous() and residual.is_contiguous()) \
            or x.dtype != residual.dtype or weight.shape != (x.shape[1],):
        raise ValueError("one_shot_all_reduce_add_rms_norm needs contiguous [rows, hidden] x and residual of "
                         "one dtype and a [hidden] weight")
    rows, hidden = x.shape
    out, residual_out = torch.empty_like(x), torch.empty_like(x)
    if rows:
        block = triton.next_power_of_2(hidden)
        warps = max(row_warps(block), triton.cdiv(world_size, 32))
        _one_shot_all_reduce_add_rms_norm_kernel[(add_rms_norm_programs(rows),)](
            x, residual, weight, out, residual_out, buffer_ptrs, signal_pad_ptrs, rows, hidden, eps,
            RANK=rank, WORLD=world_size, BLOCK_H=block, THREADS=32 * warps, USE_ASM=_use_asm(x),
            num_warps=warps, **pdl_launch(x.device, rows))
    return out, residual_out
