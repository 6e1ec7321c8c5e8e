"""One-shot all-reduce over peer-mapped buffers, in Triton, for any float dtype.

Decode steps all-reduce a few kilobytes twice per layer; NCCL's fixed cost (~12 us on NVLink) is
most of that time. With every rank's receive buffer mapped into every peer (PyTorch symmetric
memory), one kernel per rank does the whole collective, and the data is its own signal:

1. each program writes its chunks of the input straight into every peer's receive buffer (posted
   stores over NVLink: the writer does not wait for them), in the slot of this rank and of the
   call's parity, with negative zeros written as positive zeros;
2. it reads the same chunks of each peer's slot in its own buffer until none of them holds
   negative zero any more, the "empty" value every slot holds between calls (each element arrives
   whole, so it is either empty or the peer's value), and empties them again for the call after
   next. On a GPU each thread waits for its own elements alone (``_receive``'s ``SPIN``), sleeping
   between reads so as not to slow the GEMM sharing its SM;
3. it sums, in a fixed rank order and in float32 (all ranks get bit-identical results), its own
   input (zeros made positive too) and the peers' chunks, and writes the output.

One one-way trip over the link a call and nothing else. The version before (session 9) raised a
flag in every peer's signal pad after its pushes: a release store, which waits for the pushes to
be acknowledged, then the flag's own trip, i.e. two more link latencies a call. (The empty value is
TensorRT-LLM's "Lamport" all-reduce idea; the kernels are ours.) Measured on 2 x H100 (NVLink, in a
CUDA graph, benchmarks/RESULTS.md "Session 15"): 3.0 us at 8 KiB and 3.8 at 128 KiB, against 4.6 /
5.4 with flags and 11.1 / 11.6 for NCCL; the Llama-2-13B AWQ TP=2 decode step 2.32-2.38 ms against
2.51 with flags.

No barrier is needed: the slots alternate between two parities by call, and a peer can only write
slot parity ``e % 2`` again in call ``e + 2``, which it starts only after it has received this
rank's pushes of call ``e + 1``, i.e. after this rank's kernel of call ``e`` (which read and
emptied that parity) finished. Each program keeps its call count (the epoch) in a local int32
counter and advances it once a call; it is device state, so CUDA graph replays continue it. Every
call runs the same ``PROGRAMS`` programs, so every program's count stays the call count.

PyTorch ships a one-shot kernel (``one_shot_all_reduce``) for bfloat16 and float32 only, and
AutoAWQ checkpoints run in float16: this one is dtype-generic.

A second kernel fuses what follows every row-parallel all-reduce in a transformer layer: the
residual add and the RMSNorm (``one_shot_all_reduce_add_rms_norm``), saving a launch and a pass
over the hidden state per all-reduce. It rounds at the same points as the two unfused kernels.
It also serves the vocabulary-parallel embedding before the first layer
(``one_shot_all_reduce_embedding_rms_norm``): each rank's values are its lookup of the tokens its
shard holds, and there is no residual to add.

The row-parallel GEMM before that kernel may instead push its output tiles itself, into the slot of
its rank in every rank's buffer, its own included (``PushTarget``, ``awq_wgmma_t``'s push epilogue;
it returns a ``PushedOutput``). The fused kernel then receives every rank's values, its own too, as
they land, and does not wait for the GEMM to finish: the grid's completion, the kernel's wait for
it, and its read and push of x leave the critical path of the step (``PUSHED``).

Layout of each rank's symmetric buffer, ``capacity`` = the most elements one call reduces: receive
slot (parity p, source rank r) at ``(p * WORLD + r) * capacity``; it starts filled with negative
zero (``EMPTY``, ``SymmMemAllReduce``). The epochs are ``PROGRAMS`` int32, zeroed at the start.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from pagedawq.kernels.fused_ops import row_warps
from pagedawq.kernels.interpreter import interpreting
from pagedawq.kernels.pdl import pdl_launch, pdl_start, pdl_trigger

# Elements a program moves per iteration; every call runs PROGRAMS programs (the epoch argument
# above): a few large programs beat many small ones at decode sizes.
BLOCK = 2048
PROGRAMS = 16
NUM_WARPS = 8
# What an empty receive slot element holds: negative zero (its bits: the sign bit alone).
EMPTY = -0.0


def buffer_elements(capacity: int, world_size: int) -> int:
    """Elements of each rank's symmetric buffer for calls of up to ``capacity`` elements."""
    return 2 * world_size * capacity


@dataclass(frozen=True)
class PushTarget:
    """Where a GEMM pushes a row-parallel layer's output for the fused all-reduce + residual add +
    RMSNorm after it. ``table`` (int64, on the device, ``push_table``) holds every rank's symmetric
    buffer address, then the address of this rank's epochs and the slots' capacity: the kernel
    reads the call's epoch as ``epochs[0] + 1`` (program 0 of the fused kernel owns row 0, which
    every tile of a one-token-tile GEMM writes, so that program cannot advance its epoch before
    every tile has read it)."""
    table: torch.Tensor
    rank: int
    world_size: int
    capacity: int


def push_table(buffer_ptrs: torch.Tensor, epochs: torch.Tensor, capacity: int) -> torch.Tensor:
    """``PushTarget.table`` from the all-reduce's buffer addresses, epochs and slot capacity."""
    extra = torch.tensor([epochs.data_ptr(), capacity], dtype=torch.int64, device=buffer_ptrs.device)
    return torch.cat([buffer_ptrs, extra])


@dataclass(frozen=True)
class PushedOutput:
    """A [rows, hidden] GEMM output that was never stored: its GEMM pushed it into this rank's slot
    of every rank's buffer (``PushTarget``) for the next all-reduce call. Only
    ``pushed_all_reduce_add_rms_norm`` consumes it, once: the slots hold it until then."""
    shape: torch.Size
    dtype: torch.dtype


@triton.jit
def _is_empty(v):
    """Where ``v`` holds negative zero, compared by bits (it equals positive zero as a float)."""
    if v.dtype.primitive_bitwidth == 16:
        return v.to(tl.int16, bitcast=True) == -32768
    else:
        return v.to(tl.int32, bitcast=True) == -2147483647 - 1


@triton.jit
def _empty_like(v):
    """Negative zero in ``v``'s shape and dtype (built from its bits: a -0.0 literal may lose its sign)."""
    if v.dtype.primitive_bitwidth == 16:
        return tl.full(v.shape, -32768, tl.int16).to(v.dtype, bitcast=True)
    else:
        return tl.full(v.shape, -2147483647 - 1, tl.int32).to(v.dtype, bitcast=True)


@triton.jit
def program_epoch(epochs_ptr):
    """This program's epoch for the call (its previous one + 1; ``store_epoch`` stores it back)."""
    return tl.load(epochs_ptr + tl.program_id(0), volatile=True) + 1


@triton.jit
def store_epoch(epochs_ptr, epoch):
    """Store the program's epoch once every thread has read the old one: a warp that ran ahead
    (a program without rows has no other barrier) must not let a later one read it advanced, or the
    count would gain two in a call and the program's parity would part from its peers'."""
    tl.debug_barrier()
    tl.store(epochs_ptr + tl.program_id(0), epoch)


@triton.jit
def _push(vals, offs, mask, epoch, buffer_ptrs, capacity, RANK: tl.constexpr, WORLD: tl.constexpr):
    """Write ``vals`` (this rank's elements at ``offs``, no negative zero) into every peer's receive
    slot of this rank and the epoch's parity. The slots start 16-byte aligned (the host checks
    ``capacity``): said to the compiler, which then moves 16 bytes an access, not one element (an
    address loaded from memory has no known alignment)."""
    slot = ((epoch & 1) * WORLD + RANK).to(tl.int64) * capacity
    for peer in tl.static_range(WORLD):
        if peer != RANK:
            buf = tl.load(buffer_ptrs + peer).to(tl.pointer_type(vals.dtype))
            tl.store(tl.multiple_of(buf + slot, 16) + offs, vals, mask=mask)


# Elements a thread waits on in one ``_receive`` spin (``SPIN``): 16 bytes, which the loads around
# it give each thread in a row (the fused kernel's rows give each thread 8 or more, ``row_warps``;
# the plain kernel's blocks 8).
SPIN_PACK = 8


def spin_receive_ptx(sleep_ns: int) -> str:
    """PTX for ``_receive``'s per-thread wait over ``pack`` (``SPIN_PACK``) 16-bit elements. Operands:
    ``$0 ..`` the values (zero-extended to 32 bits), then the first poll's values (``$pack ..``,
    zero-extended, masked lanes 0), their addresses (``$2pack ..``) and masks (``$3pack ..``).

    Where the first poll found an element empty, the thread reads its elements again (volatile)
    until none is, and then empties them itself. Which elements a pack holds depends on the layout
    the compiler picks, so the PTX checks: where they are the 16 aligned bytes after the first
    address, in order and all unmasked (the layout of the 16-byte loads around it), it re-reads and
    empties them with one 16-byte access; otherwise element by element. A thread still
    waiting sleeps ``sleep_ns`` between its reads (0: not at all)."""
    pack = SPIN_PACK
    regs = range(pack)
    first, addr, mask = (lambda i: f"${pack + i}"), (lambda i: f"${2 * pack + i}"), (lambda i: f"${3 * pack + i}")
    words = ", ".join(f"w{i}" for i in range(pack // 2))
    any_empty = ["setp.eq.b16 e, v0, z;"] + [f"setp.eq.or.b16 e, v{i}, z, e;" for i in regs if i]
    lines = ["{", f".reg .pred m<{pack}>, s<{pack}>, e, c, n;", f".reg .b16 v<{pack}>, z;",
             f".reg .b32 w<{pack // 2}>, zz;", ".reg .b64 d;", "mov.b16 z, 0x8000;", "mov.b32 zz, 0x80008000;"]
    lines += [f"setp.ne.b32 m{i}, {mask(i)}, 0;" for i in regs]
    lines += [f"mov.b32 ${i}, {first(i)};" for i in regs]
    lines.append(f"setp.eq.b32 e, {first(0)}, 0x8000;")
    lines += [f"setp.eq.or.b32 e, {first(i)}, 0x8000, e;" for i in regs if i]
    # c: one 16-byte access covers the pack (aligned, in order, every lane unmasked)
    lines += [f"and.b64 d, {addr(0)}, 15;", "setp.eq.s64 c, d, 0;"]
    lines += [f"sub.s64 d, {addr(i)}, {addr(0)};\nsetp.eq.and.s64 c, d, {2 * i}, c;" for i in regs if i]
    lines += [f"and.pred c, c, m{i};" for i in regs]
    lines += ["not.pred n, c;"] + [f"and.pred s{i}, m{i}, n;" for i in regs]
    sleep = [f"@e nanosleep.u32 {sleep_ns};"] if sleep_ns else []
    lines.append("@!e bra received_${:uid};")
    lines += [f"mov.b16 v{i}, 0;" for i in regs]
    lines.append("@n bra scalar_${:uid};")
    lines.append("vector_${:uid}:")
    lines.append(f"ld.volatile.global.v{pack // 2}.b32 {{{words}}}, [{addr(0)}];")
    lines += [f"mov.b32 {{v{2 * i}, v{2 * i + 1}}}, w{i};" for i in range(pack // 2)]
    lines += any_empty + sleep + ["@e bra vector_${:uid};", "bra arrived_${:uid};", "scalar_${:uid}:"]
    lines += [f"@m{i} ld.volatile.global.b16 v{i}, [{addr(i)}];" for i in regs]
    lines += any_empty + sleep + ["@e bra scalar_${:uid};", "arrived_${:uid}:"]
    lines += [f"cvt.u32.u16 ${i}, v{i};" for i in regs]
    lines.append("received_${:uid}:")
    lines.append(f"@c st.global.v{pack // 2}.b32 [{addr(0)}], {{{', '.join(['zz'] * (pack // 2))}}};")
    lines += [f"@s{i} st.global.b16 [{addr(i)}], z;" for i in regs]
    lines.append("}")
    return "\n".join(lines)


# A thread that found its elements still empty sleeps this long before it reads them again: the
# spinning threads share an SM with the GEMM whose output they wait for, and every read takes
# issue slots and L2 requests from it (13B AWQ at TP=2, 2 x H100, benchmarks/RESULTS.md "Session
# 27": decode graph 2.037 ms with the block-wide poll, 2.005 spinning without sleeping, 1.993-2.002
# with 64 ns).
SPIN_SLEEP_NS = 64
_SPIN_PTX = tl.constexpr(spin_receive_ptx(SPIN_SLEEP_NS))
_SPIN_CONSTRAINTS = tl.constexpr(",".join(["=r"] * SPIN_PACK + ["r"] * SPIN_PACK + ["l"] * SPIN_PACK
                                          + ["r"] * SPIN_PACK))
_SPIN_PACK = tl.constexpr(SPIN_PACK)


def can_spin(device: torch.device, dtype: torch.dtype, block: int, num_warps: int) -> bool:
    """Whether a kernel of ``num_warps`` over blocks of ``block`` elements of ``dtype`` receives with
    ``SPIN``: compiled (the Triton interpreter runs no inline PTX), 16-bit elements, and every
    thread holding whole packs of elements of its own (a replicated element would be emptied by one
    thread under another's wait)."""
    return (device.type == "cuda" and dtype.itemsize == 2 and block % (SPIN_PACK * 32 * num_warps) == 0
            and not interpreting())


@triton.jit
def _receive(ptr, mask, SPIN: tl.constexpr = False):
    """The values a peer pushed to ``ptr`` (masked lanes: 0): read until none is empty, then emptied
    again. Volatile loads: the peer writes them while this kernel runs.

    Without ``SPIN`` (the interpreter) the block polls as a whole: each poll ends with a block-wide
    test (a reduction across the warps and two CTA barriers). With it, after one such load (16-byte
    accesses; most calls find their values there), each thread waits for its own elements alone
    and empties them (``spin_receive_ptx``). That load also gives the inline PTX the layout of the
    loads around it: Triton 3.6 copies an inline-asm op, side effects and all, into each layout it
    is wanted in, and the copy left behind would wait on values the other one emptied."""
    v = tl.load(ptr, mask=mask, other=0.0, volatile=True)
    if SPIN:
        first = v.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        bits = tl.inline_asm_elementwise(_SPIN_PTX, _SPIN_CONSTRAINTS, [first, ptr, mask.to(tl.int32)],
                                         dtype=tl.int32, is_pure=False, pack=_SPIN_PACK)
        v = bits.to(tl.int16).to(v.dtype, bitcast=True)
    else:
        while tl.max((_is_empty(v) & mask).to(tl.int32), 0) > 0:
            v = tl.load(ptr, mask=mask, other=0.0, volatile=True)
        tl.store(ptr, _empty_like(v), mask=mask)
    return v


@triton.jit
def _sum_ranks(own, buffer_ptrs, offs, mask, epoch, capacity, RANK: tl.constexpr, WORLD: tl.constexpr,
               OWN_PUSHED: tl.constexpr = False, SPIN: tl.constexpr = False):
    """float32 sum, in rank order (so all ranks get bit-identical results), of this rank's ``own``
    values (with ``OWN_PUSHED`` received from its own slot instead, where its GEMM pushed them;
    ``own`` then only gives the dtype) and the peers' pushed ones at ``offs``, each received as it
    arrives (``_receive``, with ``SPIN`` thread by thread)."""
    buf = tl.load(buffer_ptrs + RANK).to(tl.pointer_type(own.dtype))
    if OWN_PUSHED:
        # Received first, whatever the rank: this rank's own values land by local stores, before the
        # peers' (a link trip later), so the last slot polled is the last to arrive and no extra poll
        # follows the last arrival. The sum below stays in rank order (the same bits).
        own_slot = ((epoch & 1) * WORLD + RANK).to(tl.int64) * capacity
        own = _receive(tl.multiple_of(buf + own_slot, 16) + offs, mask, SPIN)
    acc = tl.zeros(offs.shape, dtype=tl.float32)
    for src in tl.static_range(WORLD):
        if src == RANK:
            acc += own.to(tl.float32)
        else:
            slot = ((epoch & 1) * WORLD + src).to(tl.int64) * capacity
            acc += _receive(tl.multiple_of(buf + slot, 16) + offs, mask, SPIN).to(tl.float32)
    return acc


@triton.jit
def _load_own(x_ptr, offs, mask):
    """This rank's input, negative zeros made positive (what it pushes and adds: the same bits
    on every rank)."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    return tl.where(_is_empty(x), tl.zeros_like(x), x)


@triton.jit
def _lookup_own(shard_ptr, ids_ptr, row, cols, mask, vocab_start, vocab_rows, hidden):
    """Row ``row``'s embedding from this rank's vocabulary shard (``vocab_rows`` rows of token ids
    ``vocab_start ..``), zeros where its token is another rank's; negative zeros made positive as in
    ``_load_own``."""
    local = tl.load(ids_ptr + row).to(tl.int64) - vocab_start + tl.zeros_like(cols).to(tl.int64)
    inside = mask & (local >= 0) & (local < vocab_rows)
    x = tl.load(shard_ptr + local * hidden + cols, mask=inside, other=0.0)
    return tl.where(_is_empty(x), tl.zeros_like(x), x)


@triton.jit
def _one_shot_all_reduce_kernel(x_ptr, out_ptr, buffer_ptrs, epochs_ptr, numel, capacity,
                                RANK: tl.constexpr, WORLD: tl.constexpr, PROGRAMS: tl.constexpr,
                                BLOCK: tl.constexpr, SPIN: tl.constexpr = False):
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    epoch = program_epoch(epochs_ptr)
    for start in range(pid * BLOCK, numel, PROGRAMS * BLOCK):
        idx = start + offs
        mask = idx < numel
        _push(_load_own(x_ptr, idx, mask), idx, mask, epoch, buffer_ptrs, capacity, RANK, WORLD)
    for start in range(pid * BLOCK, numel, PROGRAMS * BLOCK):
        idx = start + offs
        mask = idx < numel
        acc = _sum_ranks(_load_own(x_ptr, idx, mask), buffer_ptrs, idx, mask, epoch, capacity, RANK, WORLD,
                         SPIN=SPIN)
        tl.store(out_ptr + idx, acc.to(out_ptr.dtype.element_ty), mask=mask)
    store_epoch(epochs_ptr, epoch)


@triton.jit
def _one_shot_all_reduce_add_rms_norm_kernel(x_ptr, residual_ptr, weight_ptr, out_ptr, residual_out_ptr,
                                             buffer_ptrs, epochs_ptr, rows, hidden, capacity, eps,
                                             ids_ptr, vocab_start, vocab_rows,
                                             RANK: tl.constexpr, WORLD: tl.constexpr, PROGRAMS: tl.constexpr,
                                             BLOCK_H: tl.constexpr, PDL: tl.constexpr,
                                             PUSHED: tl.constexpr = False, LOOKUP: tl.constexpr = False,
                                             SPIN: tl.constexpr = False):
    """Rows ``pid, pid + PROGRAMS, ...`` of ``residual_out = sum_ranks(x) + residual`` and
    ``out = rms_norm(residual_out) * weight``; x, residual, out, residual_out are contiguous
    [rows, hidden]. The same pushes and receives as the plain kernel, one row per step.

    With ``PUSHED`` the GEMM before pushed x itself (``PushedOutput``; ``x_ptr`` only gives the
    dtype): every rank's values are received, this rank's too, and the kernel never waits for that
    GEMM. It needs no other of its writes: the values are their own signal, and every kernel before
    the GEMM finished before the GEMM computed them (it waited for its predecessor, which waited
    for its own). The residual is read past L1 all the same.

    With ``LOOKUP`` (a vocabulary-parallel embedding) x is this rank's embedding shard, row ``i``'s
    own values its lookup of token ``ids[i]`` (``_lookup_own``), and there is no residual:
    ``residual_out`` is the summed embedding itself."""
    if PUSHED:
        pdl_trigger(PDL)
    else:
        pdl_start(PDL)
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_H)
    mask = cols < hidden
    epoch = program_epoch(epochs_ptr)
    if not PUSHED:
        for row in range(pid, rows, PROGRAMS):
            off = row * hidden + cols
            if LOOKUP:
                own = _lookup_own(x_ptr, ids_ptr, row, cols, mask, vocab_start, vocab_rows, hidden)
            else:
                own = _load_own(x_ptr, off, mask)
            _push(own, off, mask, epoch, buffer_ptrs, capacity, RANK, WORLD)
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dt = x_ptr.dtype.element_ty
    for row in range(pid, rows, PROGRAMS):
        off = row * hidden + cols
        if LOOKUP:
            own = _lookup_own(x_ptr, ids_ptr, row, cols, mask, vocab_start, vocab_rows, hidden)
        else:
            r = tl.load(residual_ptr + off, mask=mask, other=0.0, cache_modifier=".cg")
            if PUSHED:
                own = r   # (its dtype only: this rank's values are in its own slot)
            else:
                own = _load_own(x_ptr, off, mask)
        acc = _sum_ranks(own, buffer_ptrs, off, mask, epoch, capacity, RANK, WORLD, PUSHED, SPIN)
        # Rounded where the unfused path rounds: the all-reduce's output, then the new residual.
        if LOOKUP:
            h = acc.to(dt)
        else:
            h = (acc.to(dt).to(tl.float32) + r.to(tl.float32)).to(dt)
        tl.store(residual_out_ptr + off, h, mask=mask)
        hf = h.to(tl.float32)
        inv_rms = tl.math.rsqrt(tl.sum(hf * hf, 0) / hidden + eps)
        tl.store(out_ptr + off, (hf * inv_rms * w).to(dt), mask=mask)
    store_epoch(epochs_ptr, epoch)


def _check(x: torch.Tensor, capacity: int) -> None:
    if (capacity * x.element_size()) % 16:
        raise ValueError(f"receive slots of {capacity} elements are not 16-byte multiples (the kernels' vector "
                         "accesses assume they are)")
    if x.numel() > capacity:
        raise ValueError(f"{x.numel()} elements exceed the receive slots' {capacity}")


def one_shot_all_reduce(x: torch.Tensor, out: torch.Tensor, buffer_ptrs: torch.Tensor, epochs: torch.Tensor,
                        rank: int, world_size: int, capacity: int) -> torch.Tensor:
    """Sum ``x`` over the ranks into ``out`` (which may be ``x``).

    ``buffer_ptrs`` is an int64 tensor on ``x``'s device holding, per rank, the address of its
    symmetric buffer (``buffer_elements(capacity, world_size)`` elements of ``x.dtype`` filled with
    ``EMPTY``; ``capacity`` a multiple of 16 bytes); ``epochs`` this rank's ``PROGRAMS`` int32
    counters (zeroed once, then only the kernels touch them).
    Every rank must make the same calls, in the same order, with the same ``numel`` each."""
    if not (x.is_contiguous() and out.is_contiguous() and x.dtype == out.dtype and x.numel() == out.numel()):
        raise ValueError("one_shot_all_reduce needs contiguous x and out of the same dtype and size")
    _check(x, capacity)
    if x.numel():
        _one_shot_all_reduce_kernel[(PROGRAMS,)](x, out, buffer_ptrs, epochs, x.numel(), capacity, RANK=rank,
                                                 WORLD=world_size, PROGRAMS=PROGRAMS, BLOCK=BLOCK, num_warps=NUM_WARPS,
                                                 SPIN=can_spin(x.device, x.dtype, BLOCK, NUM_WARPS))
    return out


def one_shot_all_reduce_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                                     buffer_ptrs: torch.Tensor, epochs: torch.Tensor, rank: int,
                                     world_size: int, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual' = sum_ranks(x) + residual``; returns ``(rms_norm(residual') * weight, residual')``,
    new tensors, equal to ``one_shot_all_reduce`` followed by ``fused_ops.fused_add_rms_norm``.

    x and residual are contiguous [rows, hidden] of one dtype, at most ``capacity`` elements; the
    buffers as for ``one_shot_all_reduce``. Each program owns whole rows (the norm needs the row's
    sum of squares), with the warps of ``fused_ops``' row kernel so that its reduction tree, and
    hence its rounding, is the same."""
    if x.dim() != 2 or x.shape != residual.shape or not x.is_contiguous() or x.dtype != residual.dtype:
        raise ValueError("one_shot_all_reduce_add_rms_norm needs contiguous [rows, hidden] x and residual of "
                         "one dtype")
    _check(x, capacity)
    return _add_rms_norm(x, residual, weight, eps, buffer_ptrs, epochs, rank, world_size, capacity, pushed=False)


def pushed_all_reduce_add_rms_norm(x: PushedOutput, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                                   buffer_ptrs: torch.Tensor, epochs: torch.Tensor, rank: int, world_size: int,
                                   capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``one_shot_all_reduce_add_rms_norm`` of an output its GEMM pushed (the same bits)."""
    if tuple(x.shape) != tuple(residual.shape) or x.dtype != residual.dtype:
        raise ValueError(f"the pushed output is {x.dtype} {tuple(x.shape)}, the residual {residual.dtype} "
                         f"{tuple(residual.shape)}")
    _check(residual, capacity)
    return _add_rms_norm(residual, residual, weight, eps, buffer_ptrs, epochs, rank, world_size, capacity,
                         pushed=True)


def one_shot_all_reduce_embedding_rms_norm(ids: torch.Tensor, shard: torch.Tensor, vocab_start: int,
                                          weight: torch.Tensor, eps: float, buffer_ptrs: torch.Tensor,
                                          epochs: torch.Tensor, rank: int, world_size: int, capacity: int
                                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """A vocabulary-parallel embedding and the RMSNorm after it in one kernel: ``h = sum_ranks(lookup)``,
    each rank's lookup of ``ids`` [rows] in its ``shard`` [vocab_rows, hidden] of the token ids from
    ``vocab_start`` (zeros for the others'); returns ``(rms_norm(h) * weight, h)``, the bits of the
    masked lookup, ``one_shot_all_reduce`` and ``fused_ops.rms_norm``. The buffers as for
    ``one_shot_all_reduce``; rows x hidden at most ``capacity``."""
    if ids.dim() != 1 or shard.dim() != 2 or not shard.is_contiguous() or weight.shape != (shard.shape[1],):
        raise ValueError("the fused embedding + RMSNorm needs ids [rows], a contiguous [vocab_rows, hidden] shard "
                         "and a [hidden] weight")
    out, h = shard.new_empty(ids.shape[0], shard.shape[1]), shard.new_empty(ids.shape[0], shard.shape[1])
    _check(out, capacity)
    # No residual to read: ``h`` stands in for its pointer.
    _launch_add_rms_norm(shard, h, weight, out, h, eps, buffer_ptrs, epochs, rank, world_size, capacity,
                         pushed=False, lookup=(ids, vocab_start, shard.shape[0]))
    return out, h


def _add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                  buffer_ptrs: torch.Tensor, epochs: torch.Tensor, rank: int, world_size: int, capacity: int,
                  pushed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if residual.dim() != 2 or not residual.is_contiguous() or weight.shape != (residual.shape[1],):
        raise ValueError("the fused all-reduce + RMSNorm needs a contiguous [rows, hidden] residual and a "
                         "[hidden] weight")
    out, residual_out = torch.empty_like(residual), torch.empty_like(residual)
    _launch_add_rms_norm(x, residual, weight, out, residual_out, eps, buffer_ptrs, epochs, rank, world_size,
                         capacity, pushed)
    return out, residual_out


def _launch_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, out: torch.Tensor,
                         residual_out: torch.Tensor, eps: float, buffer_ptrs: torch.Tensor, epochs: torch.Tensor,
                         rank: int, world_size: int, capacity: int, pushed: bool,
                         lookup: tuple[torch.Tensor, int, int] | None = None) -> None:
    """The fused kernel over ``out``'s [rows, hidden]; ``lookup``: (ids, vocab start, shard rows)."""
    rows, hidden = out.shape
    ids, vocab_start, vocab_rows = lookup if lookup is not None else (epochs, 0, 0)
    if rows:
        block = triton.next_power_of_2(hidden)
        warps = row_warps(block)
        _one_shot_all_reduce_add_rms_norm_kernel[(PROGRAMS,)](
            x, residual, weight, out, residual_out, buffer_ptrs, epochs, rows, hidden, capacity, eps,
            ids, vocab_start, vocab_rows,
            RANK=rank, WORLD=world_size, PROGRAMS=PROGRAMS, BLOCK_H=block, num_warps=warps,
            PUSHED=pushed, LOOKUP=lookup is not None, SPIN=can_spin(out.device, out.dtype, block, warps),
            **pdl_launch(out.device, rows))
