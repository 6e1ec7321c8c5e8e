"""Greedy tokens of vocabulary-parallel logits, without gathering the logits.

With tensor parallelism each rank's LM head computes the logits of its slice of the vocabulary.
To sample, the engine used to all-gather them and then broadcast rank 0's token. Those are two NCCL
calls a decode step, ~10 µs each on NVLink, which a TP=1 step does not pay. For a greedy row
(argmax, no penalty, no logprobs) a rank only needs each peer's best (logit, token):

* each rank takes its slice's maximum and the first column holding it, and packs them into one
  int64 **key** that orders as (logit, then the lower token id): the float's bits made monotonic
  in the high word, ``0xFFFFFFFF - token`` in the low one (``row_keys``, ``_row_key``);
* the largest key over the ranks is the token ``torch.argmax`` gives on the gathered logits (ties
  go to the first index, and the ranks' slices are in vocabulary order);
* every rank computes the same token, so nothing needs broadcasting.

The keys meet either through a MAX all-reduce (NCCL or gloo: ``tokens_of_keys(all_reduce(row_keys))``),
or through one kernel over symmetric memory (``greedy_exchange``). That kernel uses the protocol of
``one_shot_allreduce``: each program pushes its rows' keys into every peer's receive slot of the
call's parity, then reads its own slots until no key is empty, and empties them once all its
threads have read them. The empty value here is -1, which no key takes, since negative zero is made
positive before it is encoded.

On one GPU the same per-row search is the whole job (``greedy_rows``): one kernel in place of the
sampler's float32 copy and torch reduction, for steps whose every row is greedy.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagedawq.kernels.one_shot_allreduce import program_epoch, store_epoch

# Every call runs PROGRAMS programs (the epochs' invariant, as in ``one_shot_allreduce``); a program
# takes rows pid, pid + PROGRAMS, ... and reads its row's logits in one block where the slice has at
# most MAX_BLOCK_V columns (``block_for``): each block is a load and two CTA reductions in sequence,
# ~1 µs, so the 13B's 16000 columns a rank in blocks of 2048 took 9.6 µs a decode step (H100 trace,
# session 21), most of the TP=2 step's sampling.
PROGRAMS = 8
MAX_BLOCK_V = 16384
NUM_WARPS = 16
EMPTY = -1   # an empty receive slot; no key is -1 (its high word would be negative zero)
_LOW = 0xFFFFFFFF


def buffer_elements(capacity: int, world_size: int) -> int:
    """int64 elements of each rank's symmetric key buffer for up to ``capacity`` rows a call."""
    return 2 * world_size * capacity


def block_for(valid: int) -> int:
    """Columns a program reads at once from a slice of ``valid`` columns."""
    return min(triton.next_power_of_2(max(valid, 1)), MAX_BLOCK_V)


def row_keys(logits: torch.Tensor, start: int) -> torch.Tensor:
    """int64 key [rows] of each row's maximum of ``logits`` [rows, V] (float32 of any float dtype)
    and its first column, as token ``start + column`` (see the module docstring)."""
    if logits.shape[-1] == 0:   # a rank whose slice is all padding: its key loses to every other
        return torch.full(logits.shape[:-1], torch.iinfo(torch.int64).min, dtype=torch.int64, device=logits.device)
    values, columns = logits.float().max(dim=-1)
    bits = (values + 0.0).view(torch.int32)            # + 0.0: negative zero made positive
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)        # negative floats: magnitude bits reversed
    return (ordered.to(torch.int64) << 32) | (_LOW - (columns + start))


def tokens_of_keys(keys: torch.Tensor) -> torch.Tensor:
    """The token ids (int64) that ``row_keys`` packed into ``keys``."""
    return _LOW - (keys & _LOW)


@triton.jit
def _row_key(logits_ptr, row, stride, valid, start, BLOCK: tl.constexpr):
    """``row_keys`` of one row: its first maximal column over ``valid`` columns, block by block."""
    cols = tl.arange(0, BLOCK)
    best = tl.full((), float("-inf"), tl.float32)
    best_col = tl.full((), 0, tl.int64)
    for c0 in range(0, valid, BLOCK):
        v = tl.load(logits_ptr + row * stride + c0 + cols, mask=c0 + cols < valid, other=float("-inf"))
        v = v.to(tl.float32)
        m = tl.max(v, 0)
        col = c0 + tl.argmax(v, 0, tie_break_left=True).to(tl.int64)
        best_col = tl.where(m > best, col, best_col)    # strictly greater: an earlier block keeps a tie
        best = tl.maximum(m, best)
    bits = (best + 0.0).to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (ordered.to(tl.int64) << 32) | (4294967295 - (best_col + start))


@triton.jit
def _greedy_exchange_kernel(logits_ptr, stride, rows, valid, start, out_ptr, buffer_ptrs, epochs_ptr, capacity,
                            RANK: tl.constexpr, WORLD: tl.constexpr, PROGRAMS: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    epoch = program_epoch(epochs_ptr)
    parity = (epoch & 1).to(tl.int64)
    for row in range(pid, rows, PROGRAMS):
        key = _row_key(logits_ptr, row, stride, valid, start, BLOCK)
        tl.store(out_ptr + row, key)   # this rank's key, until phase 2 replaces it with the token
        for peer in tl.static_range(WORLD):
            if peer != RANK:
                buf = tl.load(buffer_ptrs + peer).to(tl.pointer_type(tl.int64))
                tl.store(buf + (parity * WORLD + RANK) * capacity + row, key)
    tl.debug_barrier()   # phase 2 reads the keys that phase 1 stored, whichever thread stored them
    own = tl.load(buffer_ptrs + RANK).to(tl.pointer_type(tl.int64))
    for row in range(pid, rows, PROGRAMS):
        best = tl.load(out_ptr + row)
        for src in tl.static_range(WORLD):
            if src != RANK:
                slot = own + (parity * WORLD + src) * capacity + row
                key = tl.load(slot, volatile=True)
                while key == -1:   # EMPTY
                    key = tl.load(slot, volatile=True)
                best = tl.maximum(best, key)
        # A scalar is every thread's: each thread polls the slots, and one thread stores. Empty
        # them (and overwrite this row's key) only once every thread has read them: a warp still
        # polling a slot emptied under it would wait for ever (it did, at 4 ranks, session 19).
        tl.debug_barrier()
        for src in tl.static_range(WORLD):
            if src != RANK:
                tl.store(own + (parity * WORLD + src) * capacity + row, tl.full((), -1, tl.int64))
        tl.store(out_ptr + row, 4294967295 - (best & 4294967295))
    store_epoch(epochs_ptr, epoch)


@triton.jit
def _greedy_rows_kernel(logits_ptr, stride, valid, start, out_ptr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    key = _row_key(logits_ptr, row, stride, valid, start, BLOCK)
    tl.store(out_ptr + row, 4294967295 - (key & 4294967295))


def greedy_rows(logits: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The greedy token (int64 [rows]) of each row of ``logits`` [rows, V] on one rank: ``start`` +
    the row's first maximal column, ``logits.float().argmax(-1) + start`` in one kernel (a program a
    row) instead of a float32 copy and a torch reduction (~14 µs at a 32000-token vocabulary on an
    H100, session 21 trace)."""
    _check_logits(logits)
    rows, valid = logits.shape
    out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    if rows:
        _greedy_rows_kernel[(rows,)](logits, logits.stride(0), valid, start, out, BLOCK=block_for(valid),
                                     num_warps=NUM_WARPS)
    return out


def _check_logits(logits: torch.Tensor) -> None:
    if logits.dim() != 2 or logits.stride(1) != 1:
        raise ValueError(f"greedy kernels take [rows, V] logits with unit column stride, got "
                         f"{tuple(logits.shape)} strides {logits.stride()}")


def greedy_exchange(logits: torch.Tensor, start: int, buffer_ptrs: torch.Tensor, epochs: torch.Tensor, rank: int,
                    world_size: int, capacity: int) -> torch.Tensor:
    """The greedy token (int64 [rows]) of each row of the vocabulary-parallel ``logits`` [rows, V_rank]
    (this rank's columns are tokens ``start ..``), the same on every rank: every rank makes the same
    calls, in the same order, with the same number of rows.

    ``buffer_ptrs``: int64 addresses of every rank's symmetric buffer (``buffer_elements(capacity,
    world_size)`` int64 filled with ``EMPTY``); ``epochs``: this rank's ``PROGRAMS`` int32 counters,
    zeroed once."""
    _check_logits(logits)
    rows, valid = logits.shape
    if rows > capacity:
        raise ValueError(f"{rows} rows exceed the key buffer's {capacity}")
    out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    if rows:
        _greedy_exchange_kernel[(PROGRAMS,)](logits, logits.stride(0), rows, valid, start, out, buffer_ptrs, epochs,
                                             capacity, RANK=rank, WORLD=world_size, PROGRAMS=PROGRAMS,
                                             BLOCK=block_for(valid), num_warps=NUM_WARPS)
    return out
