"""One-shot all-reduce over peer-mapped buffers, in Triton, for any float dtype.

Decode steps all-reduce a few kilobytes twice per layer; NCCL's fixed cost (~12 us on NVLink) is
most of that time. With every rank's receive buffer mapped into every peer (PyTorch symmetric
memory), one kernel per rank does the whole collective, pushing rather than pulling:

1. each program writes its chunks of the input straight into every peer's receive buffer (posted
   stores over NVLink: the writer does not wait for them), in the slot of this rank and of the
   call's parity;
2. it raises its flag in every peer's signal pad with a release store of the call's epoch, and
   waits (acquire loads of its own pad) until every peer's flag for this program has left the
   previous epoch;
3. it sums, in a fixed rank order and in float32 (all ranks get bit-identical results), its own
   input and the peers' chunks, now local, and writes the output.

One one-way trip over the link a call, where the pull version (each rank staged its input locally,
met its peers at a compare-and-swap barrier, read their buffers over the link and met them again
before leaving) made four round trips. Measured on 2 x H100 (NVLink, in a CUDA graph, 2026-11-26):
5.0 us at 8 KiB and 13.0 at 1 MiB, against 8.9 / 41.3 us for the pull version and 11.4 / 20.3 for
NCCL; Llama-2-13B AWQ decode at TP=2 3.32 ms a token against 3.60 with the pull version.

No exit barrier is needed: the receive slots alternate between two parities by epoch, and a peer
can only write slot parity ``e % 2`` again in call ``e + 2``, which it can start only after every
program of this rank has signalled call ``e + 1``, i.e. after this rank's kernel of call ``e``
(and its reads) finished. This needs every call to run the same programs, so the epoch is the call
count for each: the grid is always ``PROGRAMS``. Each program keeps its epoch in this rank's
signal pad and advances it once a call; it is device state, so CUDA graph replays continue it. A
peer's flag is the previous epoch, this one or (once that peer has moved on) the next one: the
wait is for it to differ from the previous one, which stays right when the counters wrap.

PyTorch ships a one-shot kernel (``one_shot_all_reduce``) for bfloat16 and float32 only, and
AutoAWQ checkpoints run in float16: this one is dtype-generic.

A second kernel fuses what follows every row-parallel all-reduce in a transformer layer: the
residual add and the RMSNorm (``one_shot_all_reduce_add_rms_norm``), saving a launch and a pass
over the hidden state per all-reduce. It rounds at the same points as the two unfused kernels.

Layouts (elements of the symmetric buffer, int32 of the signal pad), ``capacity`` = the most
elements one call reduces: receive slot (parity p, source rank r) at ``(p * WORLD + r) *
capacity``; program i's flag from rank r at ``i * WORLD + r``, program i's epoch at ``PROGRAMS *
WORLD + i``. Both start zeroed (PyTorch zeroes the signal pads).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from pagedawq.kernels.fused_ops import row_warps
from pagedawq.kernels.pdl import pdl_launch, pdl_start

# Elements a program moves per iteration; every call runs PROGRAMS programs (the epoch argument
# above), each one participant of the flags: a few large programs beat many small ones at decode sizes.
BLOCK = 2048
PROGRAMS = 16
NUM_WARPS = 8


def buffer_elements(capacity: int, world_size: int) -> int:
    """Elements of each rank's symmetric buffer for calls of up to ``capacity`` elements."""
    return 2 * world_size * capacity


def signal_pad_ints(world_size: int) -> int:
    """int32 entries of the signal pad the kernels use: flags, then epochs."""
    return PROGRAMS * (world_size + 1)


# One thread per peer: release-store my epoch into my flag in its pad, then wait until its flag in
# my pad has left the previous epoch (acquire). Threads without a peer skip.
_SIGNAL_WAIT_PTX = tl.constexpr("""
{
    .reg .pred %p<2>;
    .reg .b32 %r<1>;
    setp.ne.s32 %p0, $3, 0;
    @!%p0 bra done;
    st.release.sys.global.b32 [$1], $4;
wait:
    ld.acquire.sys.global.b32 %r0, [$2];
    setp.eq.s32 %p1, %r0, $5;
    @%p1 bra wait;
done:
    mov.u32 $0, 0;
}
""")


@triton.jit
def _epoch(signal_pad_ptrs, RANK: tl.constexpr, WORLD: tl.constexpr, PROGRAMS: tl.constexpr):
    """This program's epoch for the call (its previous one + 1; the caller stores it back)."""
    local_pad = tl.load(signal_pad_ptrs + RANK).to(tl.pointer_type(tl.int32))
    return tl.load(local_pad + PROGRAMS * WORLD + tl.program_id(0), volatile=True) + 1


@triton.jit
def _push(vals, offs, mask, epoch, buffer_ptrs, capacity, RANK: tl.constexpr, WORLD: tl.constexpr):
    """Write ``vals`` (this rank's elements at ``offs``) into every peer's receive slot of this
    rank and the epoch's parity. The slots start 16-byte aligned (the host checks ``capacity``):
    said to the compiler, which then moves 16 bytes an access, not one element (an address loaded
    from memory has no known alignment)."""
    slot = ((epoch & 1) * WORLD + RANK).to(tl.int64) * capacity
    for peer in tl.static_range(WORLD):
        if peer != RANK:
            buf = tl.load(buffer_ptrs + peer).to(tl.pointer_type(vals.dtype))
            tl.store(tl.multiple_of(buf + slot, 16) + offs, vals, mask=mask)


@triton.jit
def _signal_and_wait(signal_pad_ptrs, epoch, RANK: tl.constexpr, WORLD: tl.constexpr, PROGRAMS: tl.constexpr,
                     THREADS: tl.constexpr, USE_ASM: tl.constexpr):
    """Raise this program's flag (the epoch) in every peer's pad, then wait for every peer's flag in
    mine to leave the previous epoch. A CTA barrier before it (every thread's pushes are issued
    before the release) and after it (no thread reads a slot before the acquire) is the caller's.

    Compiled, each peer gets its own thread (a [THREADS] tensor, one element per thread). The
    interpreter, which cannot run PTX, loops over the peers with Triton atomics instead."""
    pid = tl.program_id(0)
    local_pad = tl.load(signal_pad_ptrs + RANK).to(tl.pointer_type(tl.int32))
    if USE_ASM:
        lane = tl.arange(0, THREADS)
        active = (lane < WORLD) & (lane != RANK)
        peer_pads = tl.load(signal_pad_ptrs + lane, mask=lane < WORLD, other=0).to(tl.pointer_type(tl.int32))
        tl.inline_asm_elementwise(_SIGNAL_WAIT_PTX, "=r,l,l,r,r,r",
                                  [peer_pads + pid * WORLD + RANK, local_pad + pid * WORLD + lane,
                                   active.to(tl.int32), tl.full([THREADS], 0, tl.int32) + epoch,
                                   tl.full([THREADS], 0, tl.int32) + (epoch - 1)],
                                  dtype=tl.int32, is_pure=False, pack=1)
    else:
        for peer in tl.static_range(WORLD):
            if peer != RANK:
                peer_pad = tl.load(signal_pad_ptrs + peer).to(tl.pointer_type(tl.int32))
                tl.atomic_xchg(peer_pad + pid * WORLD + RANK, epoch, sem="release", scope="sys")
        for peer in tl.static_range(WORLD):
            if peer != RANK:
                while tl.atomic_add(local_pad + pid * WORLD + peer, 0, sem="acquire", scope="sys") == epoch - 1:
                    pass


@triton.jit
def _finish(signal_pad_ptrs, epoch, RANK: tl.constexpr, WORLD: tl.constexpr, PROGRAMS: tl.constexpr):
    """Store the program's epoch (after a CTA barrier: every thread has read the old one)."""
    local_pad = tl.load(signal_pad_ptrs + RANK).to(tl.pointer_type(tl.int32))
    tl.store(local_pad + PROGRAMS * WORLD + tl.program_id(0), epoch)


@triton.jit
def _sum_ranks(own, buffer_ptrs, offs, mask, epoch, capacity, RANK: tl.constexpr, WORLD: tl.constexpr):
    """float32 sum, in rank order (so all ranks get bit-identical results), of this rank's ``own``
    values and the peers' pushed ones at ``offs``. Volatile loads: the peers wrote them after this
    kernel started."""
    buf = tl.load(buffer_ptrs + RANK).to(tl.pointer_type(own.dtype))
    acc = tl.zeros(offs.shape, dtype=tl.float32)
    for src in tl.static_range(WORLD):
        if src == RANK:
            acc += own.to(tl.float32)
        else:
            slot = ((epoch & 1) * WORLD + src).to(tl.int64) * capacity
            acc += tl.load(tl.multiple_of(buf + slot, 16) + offs, mask=mask, other=0.0, volatile=True).to(tl.float32)
    return acc


@triton.jit
def _one_shot_all_reduce_kernel(x_ptr, out_ptr, buffer_ptrs, signal_pad_ptrs, numel, capacity,
                                RANK: tl.constexpr, WORLD: tl.constexpr, PROGRAMS: tl.constexpr,
                                BLOCK: tl.constexpr, THREADS: tl.constexpr, USE_ASM: tl.constexpr):
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    epoch = _epoch(signal_pad_ptrs, RANK, WORLD, PROGRAMS)
    for start in range(pid * BLOCK, numel, PROGRAMS * BLOCK):
        idx = start + offs
        mask = idx < numel
        _push(tl.load(x_ptr + idx, mask=mask), idx, mask, epoch, buffer_ptrs, capacity, RANK, WORLD)
    tl.debug_barrier()
    _signal_and_wait(signal_pad_ptrs, epoch, RANK, WORLD, PROGRAMS, THREADS, USE_ASM)
    tl.debug_barrier()
    for start in range(pid * BLOCK, numel, PROGRAMS * BLOCK):
        idx = start + offs
        mask = idx < numel
        acc = _sum_ranks(tl.load(x_ptr + idx, mask=mask), buffer_ptrs, idx, mask, epoch, capacity, RANK, WORLD)
        tl.store(out_ptr + idx, acc.to(out_ptr.dtype.element_ty), mask=mask)
    _finish(signal_pad_ptrs, epoch, RANK, WORLD, PROGRAMS)


@triton.jit
def _one_shot_all_reduce_add_rms_norm_kernel(x_ptr, residual_ptr, weight_ptr, out_ptr, residual_out_ptr,
                                             buffer_ptrs, signal_pad_ptrs, rows, hidden, capacity, eps,
                                             RANK: tl.constexpr, WORLD: tl.constexpr, PROGRAMS: tl.constexpr,
                                             BLOCK_H: tl.constexpr, THREADS: tl.constexpr, USE_ASM: tl.constexpr,
                                             PDL: tl.constexpr):
    """Rows ``pid, pid + PROGRAMS, ...`` of ``residual_out = sum_ranks(x) + residual`` and
    ``out = rms_norm(residual_out) * weight``; x, residual, out, residual_out are contiguous
    [rows, hidden]. The same pushes and flags as the plain kernel, one row per step."""
    pdl_start(PDL)
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    mask = cols < hidden
    epoch = _epoch(signal_pad_ptrs, RANK, WORLD, PROGRAMS)
    for row in range(pid, rows, PROGRAMS):
        off = row * hidden + cols
        _push(tl.load(x_ptr + off, mask=mask), off, mask, epoch, buffer_ptrs, capacity, RANK, WORLD)
    tl.debug_barrier()
    _signal_and_wait(signal_pad_ptrs, epoch, RANK, WORLD, PROGRAMS, THREADS, USE_ASM)
    tl.debug_barrier()
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dt = x_ptr.dtype.element_ty
    for row in range(pid, rows, PROGRAMS):
        off = row * hidden + cols
        acc = _sum_ranks(tl.load(x_ptr + off, mask=mask), buffer_ptrs, off, mask, epoch, capacity, RANK, WORLD)
        r = tl.load(residual_ptr + off, mask=mask, other=0.0)
        # Rounded where the unfused path rounds: the all-reduce's output, then the new residual.
        h = (acc.to(dt).to(tl.float32) + r.to(tl.float32)).to(dt)
        tl.store(residual_out_ptr + off, h, mask=mask)
        hf = h.to(tl.float32)
        inv_rms = tl.math.rsqrt(tl.sum(hf * hf, 0) / hidden + eps)
        tl.store(out_ptr + off, (hf * inv_rms * w).to(dt), mask=mask)
    _finish(signal_pad_ptrs, epoch, RANK, WORLD, PROGRAMS)


def _check(x: torch.Tensor, world_size: int, capacity: int) -> None:
    if world_size > 32 * NUM_WARPS:
        raise ValueError(f"the one-shot all-reduce supports at most {32 * NUM_WARPS} ranks")
    if (capacity * x.element_size()) % 16:
        raise ValueError(f"receive slots of {capacity} elements are not 16-byte multiples (the kernels' vector "
                         "accesses assume they are)")
    if x.numel() > capacity:
        raise ValueError(f"{x.numel()} elements exceed the receive slots' {capacity}")


def one_shot_all_reduce(x: torch.Tensor, out: torch.Tensor, buffer_ptrs: torch.Tensor,
                        signal_pad_ptrs: torch.Tensor, rank: int, world_size: int, capacity: int) -> torch.Tensor:
    """Sum ``x`` over the ranks into ``out`` (which may be ``x``).

    ``buffer_ptrs``/``signal_pad_ptrs`` are int64 tensors on ``x``'s device holding, per rank, the
    address of its symmetric buffer (``buffer_elements(capacity, world_size)`` elements of
    ``x.dtype``; ``capacity`` a multiple of 16 bytes) and of its zeroed int32 signal pad
    (``signal_pad_ints(world_size)`` entries).
    Every rank must make the same calls, in the same order, with the same ``numel`` each."""
    if not (x.is_contiguous() and out.is_contiguous() and x.dtype == out.dtype and x.numel() == out.numel()):
        raise ValueError("one_shot_all_reduce needs contiguous x and out of the same dtype and size")
    _check(x, world_size, capacity)
    if x.numel():
        _one_shot_all_reduce_kernel[(PROGRAMS,)](
            x, out, buffer_ptrs, signal_pad_ptrs, x.numel(), capacity, RANK=rank, WORLD=world_size,
            PROGRAMS=PROGRAMS, BLOCK=BLOCK, THREADS=32 * NUM_WARPS, USE_ASM=_use_asm(x), num_warps=NUM_WARPS)
    return out


def _use_asm(x: torch.Tensor) -> bool:
    return x.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1"


def one_shot_all_reduce_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                                     buffer_ptrs: torch.Tensor, signal_pad_ptrs: torch.Tensor, rank: int,
                                     world_size: int, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual' = sum_ranks(x) + residual``; returns ``(rms_norm(residual') * weight, residual')``,
    new tensors, equal to ``one_shot_all_reduce`` followed by ``fused_ops.fused_add_rms_norm``.

    x and residual are contiguous [rows, hidden] of one dtype, at most ``capacity`` elements; the
    buffers as for ``one_shot_all_reduce``. Each program owns whole rows (the norm needs the row's
    sum of squares), with the warps of ``fused_ops``' row kernel so that its reduction tree, and
    hence its rounding, is the same."""
    if x.dim() != 2 or x.shape != residual.shape or not (x.is_contiguous() and residual.is_contiguous()) \
            or x.dtype != residual.dtype or weight.shape != (x.shape[1],):
        raise ValueError("one_shot_all_reduce_add_rms_norm needs contiguous [rows, hidden] x and residual of "
                         "one dtype and a [hidden] weight")
    _check(x, world_size, capacity)
    rows, hidden = x.shape
    out, residual_out = torch.empty_like(x), torch.empty_like(x)
    if rows:
        block = triton.next_power_of_2(hidden)
        warps = max(row_warps(block), triton.cdiv(world_size, 32))
        _one_shot_all_reduce_add_rms_norm_kernel[(PROGRAMS,)](
            x, residual, weight, out, residual_out, buffer_ptrs, signal_pad_ptrs, rows, hidden, capacity, eps,
            RANK=rank, WORLD=world_size, PROGRAMS=PROGRAMS, BLOCK_H=block, THREADS=32 * warps,
            USE_ASM=_use_asm(x), num_warps=warps, **pdl_launch(x.device, rows))
    return out, residual_out
