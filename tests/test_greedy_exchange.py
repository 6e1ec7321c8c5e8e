"""Greedy tokens of vocabulary-parallel logits without gathering them (``pagedawq.kernels.greedy_exchange``),
and of one rank's logits in one kernel (``greedy_rows``).

The keys: the largest of the ranks' keys is the token ``argmax`` gives on the whole row (first
index on ties, negative zero, infinities, padding-only slices). The kernel: one process plays one
rank of a group whose peers have already pushed their keys into this rank's receive slots (as in
test_one_shot_allreduce.py); it must return the tokens, push its own keys into each peer's slot
for it, empty the slots it read, advance its programs' epochs and write nothing else. Without CUDA
the kernel runs in Triton's interpreter; its sm_90 SASS is checked without a GPU.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.triton_interpreter import interpret_without_cuda

CUDA = interpret_without_cuda("pagedawq.kernels.one_shot_allreduce", "pagedawq.kernels.greedy_exchange")
DEVICE = "cuda" if CUDA else "cpu"

from pagedawq.kernels import greedy_exchange as greedy  # noqa: E402


def _slices(vocab: int, world: int) -> list[tuple[int, int]]:
    """(start, real columns) of each rank's slice, as ``VocabParallelEmbedding`` splits the vocabulary."""
    per_rank = -(-vocab // world)
    return [(r * per_rank, max(0, min(per_rank, vocab - r * per_rank))) for r in range(world)]


def _logits(rows: int, vocab: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random logits with ties (small integers), negative zeros and infinities."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randint(-6, 3, (rows, vocab), generator=gen).to(dtype)
    logits[logits == 0] = -0.0
    logits[:, ::11] = float("-inf")
    logits[0] = -0.0                       # a row of (negative) zeros: token 0
    if rows > 2:
        logits[2] = float("-inf")          # nothing finite: token 0
        logits[1, vocab - 1] = float("inf")
    return logits


@pytest.mark.parametrize("vocab,world", [(50, 2), (51, 2), (101, 3), (9, 8)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_the_largest_key_is_the_argmax_of_the_whole_row(vocab, world, dtype):
    logits = _logits(7, vocab, dtype, seed=vocab + world)
    keys = torch.stack([greedy.row_keys(logits[:, s:s + n], s) for s, n in _slices(vocab, world)])
    got = greedy.tokens_of_keys(keys.max(dim=0).values)
    assert torch.equal(got, logits.float().argmax(dim=-1))
    assert got[0] == 0 and got[2] == 0 and got[1] == vocab - 1


def _peers_arrived(rank: int, world: int, keys: list[torch.Tensor], capacity: int, epoch: int):
    """Every rank's key buffer (empty) with the peers' keys in this rank's slots of the epoch's
    parity; this rank's epochs at ``epoch - 1``; the address table."""
    buffers = [torch.full((greedy.buffer_elements(capacity, world),), greedy.EMPTY, dtype=torch.int64, device=DEVICE)
               for _ in range(world)]
    for peer in range(world):
        if peer != rank:
            start = _slot(epoch, peer, world, capacity)
            buffers[rank][start:start + len(keys[peer])] = keys[peer]
    epochs = torch.full((greedy.PROGRAMS,), epoch - 1, dtype=torch.int32, device=DEVICE)
    return buffers, epochs, torch.tensor([b.data_ptr() for b in buffers], dtype=torch.int64, device=DEVICE)


def _slot(epoch: int, src: int, world: int, capacity: int) -> int:
    return ((epoch & 1) * world + src) * capacity


@pytest.mark.parametrize("rank,world,rows,vocab", [(0, 2, 1, 5000), (1, 2, 12, 51), (2, 3, 20, 6001),
                                                   (3, 4, 3, 40)])
@pytest.mark.parametrize("epoch", [1, 2])
@pytest.mark.parametrize("max_block", [greedy.MAX_BLOCK_V, 512])   # a row in one block, or in several
def test_one_rank_of_the_exchange(rank, world, rows, vocab, epoch, max_block, monkeypatch):
    monkeypatch.setattr(greedy, "MAX_BLOCK_V", max_block)
    logits = _logits(rows, vocab, torch.float16, seed=rows + vocab).to(DEVICE)
    slices = _slices(vocab, world)
    keys = [greedy.row_keys(logits[:, s:s + n], s) for s, n in slices]
    capacity = rows + 5
    buffers, epochs, ptrs = _peers_arrived(rank, world, keys, capacity, epoch)
    start, real = slices[rank]
    # this rank's slice as the LM head leaves it: a view of a wider buffer (row stride > columns)
    wide = torch.full((rows, real + 3), float("nan"), dtype=torch.float16, device=DEVICE)
    wide[:, :real] = logits[:, start:start + real]
    got = greedy.greedy_exchange(wide[:, :real], start, ptrs, epochs, rank, world, capacity)
    assert torch.equal(got.cpu(), logits.float().argmax(dim=-1).cpu())
    assert epochs.eq(epoch).all()                                         # every program's epoch advanced
    assert buffers[rank].eq(greedy.EMPTY).all()                           # the slots it read are empty again
    for peer in range(world):
        if peer != rank:
            at = _slot(epoch, rank, world, capacity)
            assert torch.equal(buffers[peer][at:at + rows], keys[rank])   # its keys pushed, as row_keys packs them
            rest = torch.cat([buffers[peer][:at], buffers[peer][at + rows:]])
            assert rest.eq(greedy.EMPTY).all()                            # and nothing else written


@pytest.mark.parametrize("rows,vocab,start", [(1, 5000, 0), (5, 51, 0), (3, 6001, 700)])
@pytest.mark.parametrize("max_block", [greedy.MAX_BLOCK_V, 512])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_one_rank_takes_the_argmax_in_one_kernel(rows, vocab, start, max_block, dtype, monkeypatch):
    monkeypatch.setattr(greedy, "MAX_BLOCK_V", max_block)
    logits = _logits(rows, vocab, dtype, seed=rows * vocab).to(DEVICE)
    wide = torch.full((rows, vocab + 5), float("nan"), dtype=dtype, device=DEVICE)   # the row stride > columns
    wide[:, :vocab] = logits
    got = greedy.greedy_rows(wide[:, :vocab], start)
    assert torch.equal(got.cpu(), logits.float().argmax(dim=-1).cpu() + start)


def test_bad_arguments():
    ptrs = torch.zeros(2, dtype=torch.int64)
    epochs = torch.zeros(greedy.PROGRAMS, dtype=torch.int32)
    with pytest.raises(ValueError, match="rows exceed"):
        greedy.greedy_exchange(torch.zeros(9, 4), 0, ptrs, epochs, 0, 2, capacity=8)
    with pytest.raises(ValueError, match="unit column stride"):
        greedy.greedy_exchange(torch.zeros(4, 6)[:, ::2], 0, ptrs, epochs, 0, 2, capacity=8)
    with pytest.raises(ValueError, match="unit column stride"):
        greedy.greedy_rows(torch.zeros(4, 6)[:, ::2])
    assert greedy.greedy_rows(torch.zeros(0, 4)).shape == (0,)
    assert greedy.greedy_exchange(torch.zeros(0, 4), 0, ptrs, epochs, 0, 2, capacity=8).shape == (0,)


def test_compiled_kernel_reads_whole_vectors_and_polls_without_fences():
    """The sm_90 SASS (compiled in a process without the Triton interpreter; no GPU needed), as
    launched with a slice width and row stride that are multiples of 16 (16000 or 64128 tokens a
    rank): 16-byte loads of the logits; 8-byte pushes of the keys before the first poll; polls that
    bypass L1 (volatile); no memory barrier (the keys are their own signal); slots emptied only
    after a CTA barrier; the epoch stored last, right after a CTA barrier."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tests.allreduce_sass", "greedy"], cwd=Path(__file__).parents[1],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ops = [ln.split(" ;")[0] for ln in json.loads(proc.stdout.strip().splitlines()[-1])]
    assert any("LDG.E.128 " in op for op in ops) and not any("LDG.E.U16" in op for op in ops)
    polls = [i for i, op in enumerate(ops) if "LDG.E.64.STRONG.SYS" in op]
    pushes = [i for i, op in enumerate(ops) if "STG.E.64" in op and i < min(polls)]
    assert polls and pushes
    assert not any("MEMBAR" in op for op in ops)
    # Every thread polls a slot (the key is a scalar) and one thread empties it: only after a CTA
    # barrier, or a warp still polling would wait for ever for a key already taken (session 19's
    # hang at 4 ranks). The same for the row's output, which every thread read as its own key.
    empties = [i for i, op in enumerate(ops) if "STG.E.64" in op and i > min(polls)]
    assert empties
    for i in empties:
        last_poll = max(p for p in polls if p < i)
        assert any("BAR.SYNC" in op for op in ops[last_poll:i]), ops[last_poll:i + 1]
    last_store = max(i for i, op in enumerate(ops) if "STG" in op)
    assert "STG.E " in ops[last_store]   # the 4-byte epoch
    barrier = max(i for i, op in enumerate(ops[:last_store]) if "BAR.SYNC" in op)
    assert not any("BRA" in op or "LDG" in op for op in ops[barrier:last_store])
