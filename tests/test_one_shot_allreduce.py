"""The one-shot all-reduce kernel (``pagedawq.kernels.one_shot_allreduce``).

One process plays one rank of a group: the peers have already pushed their inputs into this rank's
receive slots (of the call's parity), as if they had arrived first; every other slot is empty
(negative zero). The kernel must then return the rank-ordered float32 sum rounded once, push its
own input (negative zeros made positive) into each peer's slot for it, empty the slots it read,
advance its programs' epochs, and write nothing else. Without CUDA this runs in Triton's interpreter
(whose float32 -> bfloat16 conversion truncates, hence one bfloat16 ulp of tolerance there); with
two GPUs the real collective is checked against NCCL across processes.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.triton_interpreter import interpret_without_cuda

CUDA = interpret_without_cuda("pagedawq.kernels.one_shot_allreduce")
DEVICE = "cuda" if CUDA else "cpu"

from pagedawq.kernels import one_shot_allreduce as one_shot  # noqa: E402


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


def _empty(t: torch.Tensor) -> torch.Tensor:
    """Where ``t`` holds negative zero (by bits)."""
    return _bits(t) == _bits(torch.full((1,), one_shot.EMPTY, dtype=t.dtype, device=t.device))


def _positive_zeros(t: torch.Tensor) -> torch.Tensor:
    """``t`` with negative zeros made positive, as a rank pushes it."""
    return torch.where(_empty(t), torch.zeros_like(t), t)


def _peers_arrived(rank: int, world: int, inputs: list[torch.Tensor], epoch: int = 1, own_too: bool = False):
    """Every rank's symmetric buffer (empty), with the peers' inputs in this rank's receive slots of
    the epoch's parity (``own_too``: its own input in its own slot as well, as a pushing GEMM
    leaves it); this rank's epochs at ``epoch - 1``; the address table; and the capacity (a little
    more than the input)."""
    numel = inputs[0].numel()
    capacity = (numel + 64) // 8 * 8   # whole 16-byte vectors at any dtype
    buffers = [torch.full((one_shot.buffer_elements(capacity, world),), one_shot.EMPTY, dtype=inputs[0].dtype,
                          device=DEVICE) for _ in range(world)]
    for peer in range(world):
        if peer != rank or own_too:
            start = _slot(epoch, peer, world, capacity)
            buffers[rank][start:start + numel] = _positive_zeros(inputs[peer].reshape(-1))
    epochs = torch.full((one_shot.PROGRAMS,), _previous(epoch), dtype=torch.int32, device=DEVICE)
    buffer_ptrs = torch.tensor([b.data_ptr() for b in buffers], dtype=torch.int64, device=DEVICE)
    return buffers, epochs, buffer_ptrs, capacity


def _slot(epoch: int, src: int, world: int, capacity: int) -> int:
    return ((epoch & 1) * world + src) * capacity


def _previous(epoch: int) -> int:
    """epoch - 1 in int32 (the counters wrap)."""
    return (epoch - 1 + 2**31) % 2**32 - 2**31


def _check_pushed_and_emptied(rank: int, world: int, inputs: list[torch.Tensor], buffers, epochs, capacity: int,
                              epoch: int) -> None:
    numel = inputs[0].numel()
    assert epochs.eq(epoch).all()                                                   # every program's epoch advanced
    assert _empty(buffers[rank]).all()                                              # the slots read are empty again
    for peer in range(world):
        if peer != rank:
            start = _slot(epoch, rank, world, capacity)
            pushed = buffers[peer][start:start + numel]
            assert torch.equal(_bits(pushed), _bits(_positive_zeros(inputs[rank].reshape(-1))))   # pushed
            rest = torch.cat([buffers[peer][:start], buffers[peer][start + numel:]])
            assert _empty(rest).all()                                                # and nothing else written


def _rank_ordered_sum(inputs: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    total = torch.zeros_like(inputs[0], dtype=torch.float32)
    for x in inputs:                      # rank order, as every rank sums, negative zeros made positive
        total += _positive_zeros(x).float()
    return total.to(dtype)


def _assert_rounded_equal(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal, except that the interpreter's float32 -> bfloat16 conversion truncates (one ulp)."""
    if expected.dtype == torch.bfloat16 and not CUDA:
        ulp = expected.float().abs().clamp_min(1e-30) * 2.0 ** -7
        assert ((got.float() - expected.float()).abs() <= ulp).all()
    else:
        assert torch.equal(got, expected)


def simulate_rank(rank: int, world: int, numel: int, dtype: torch.dtype, seed: int, epoch: int = 1):
    gen = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(numel, generator=gen).to(dtype=dtype, device=DEVICE) for _ in range(world)]
    inputs[rank][::5] = -0.0   # pushed and added as +0.0, so that an empty slot never looks filled
    buffers, epochs, buffer_ptrs, capacity = _peers_arrived(rank, world, inputs, epoch)
    x = inputs[rank].clone()
    out = torch.full_like(x, float("nan"))
    one_shot.one_shot_all_reduce(x, out, buffer_ptrs, epochs, rank, world, capacity)
    return inputs, buffers, epochs, out, capacity


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rank,world", [(0, 2), (1, 3), (3, 4)])
@pytest.mark.parametrize("numel", [7, 5120, one_shot.BLOCK * one_shot.PROGRAMS * 2 + 33])
def test_one_rank_of_the_collective(dtype, rank, world, numel):
    inputs, buffers, epochs, out, capacity = simulate_rank(rank, world, numel, dtype, seed=numel + 10 * world + rank)
    _assert_rounded_equal(out, _rank_ordered_sum(inputs, dtype))
    _check_pushed_and_emptied(rank, world, inputs, buffers, epochs, capacity, epoch=1)


@pytest.mark.parametrize("epoch", [2, 7, -2**31, -2**31 + 1])   # the other parity; later calls; wrapped
def test_later_calls_use_the_epochs_parity(epoch):
    inputs, buffers, epochs, out, capacity = simulate_rank(1, 3, 3000, torch.float32, seed=5, epoch=epoch)
    _assert_rounded_equal(out, _rank_ordered_sum(inputs, torch.float32))
    _check_pushed_and_emptied(1, 3, inputs, buffers, epochs, capacity, epoch)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rank,world,rows,hidden", [(0, 2, 1, 576), (2, 3, 5, 100), (1, 4, 20, 256)])
def test_one_rank_of_the_all_reduce_add_rms_norm(dtype, rank, world, rows, hidden):
    """The fused kernel: the new residual is the rank-ordered sum rounded once plus the residual,
    rounded again (exactly the unfused path); the output is its RMSNorm; pushes and receives as above
    (rows > PROGRAMS makes programs own several rows)."""
    from pagedawq.kernels import reference
    gen = torch.Generator().manual_seed(rows * 100 + hidden + world)
    inputs = [torch.randn(rows, hidden, generator=gen).to(dtype=dtype, device=DEVICE) for _ in range(world)]
    residual = torch.randn(rows, hidden, generator=gen).to(dtype=dtype, device=DEVICE)
    weight = (1 + torch.rand(hidden, generator=gen)).to(dtype=dtype, device=DEVICE)
    buffers, epochs, buffer_ptrs, capacity = _peers_arrived(rank, world, inputs)
    x, res_in = inputs[rank].clone(), residual.clone()
    out, res_out = one_shot.one_shot_all_reduce_add_rms_norm(x, res_in, weight, 1e-5, buffer_ptrs, epochs,
                                                             rank, world, capacity)
    reduced = _rank_ordered_sum(inputs, dtype)
    expected_res = (reduced.float() + residual.float()).to(dtype)
    if dtype == torch.bfloat16 and not CUDA:   # two truncations instead of two roundings
        bound = (reduced.float().abs() + residual.float().abs()) * 2.0 ** -6
        assert ((res_out.float() - expected_res.float()).abs() <= bound).all()
    else:
        assert torch.equal(res_out, expected_res)
    expected_out = reference.rms_norm(res_out, weight, 1e-5)
    assert torch.allclose(out.float(), expected_out.float(), rtol=1e-2, atol=1e-2)
    assert torch.equal(x, inputs[rank]) and torch.equal(res_in, residual)          # inputs untouched
    _check_pushed_and_emptied(rank, world, inputs, buffers, epochs, capacity, epoch=1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("rank,world,rows,hidden", [(0, 2, 1, 576), (1, 2, 3, 256), (2, 3, 20, 100)])
def test_one_rank_of_the_embedding_rms_norm(dtype, rank, world, rows, hidden):
    """The fused kernel's vocabulary-parallel lookup: each rank's own values are its shard's rows of
    the tokens it holds (zeros for the others', negative zeros made positive), the new residual is
    their rank-ordered sum (the full embedding, exactly), the output its RMSNorm; pushes and receives
    as above."""
    from pagedawq.kernels import reference
    gen = torch.Generator().manual_seed(rows * 10 + world + rank)
    vocab = 50
    per_rank = -(-vocab // world)
    table = torch.zeros(per_rank * world, hidden)
    table[:vocab] = torch.randn(vocab, hidden, generator=gen)
    table[:vocab:7, ::3] = -0.0
    table = table.to(dtype=dtype, device=DEVICE)
    ids = torch.randint(0, vocab, (rows,), generator=gen)
    ids[0] = rank * per_rank            # at least one token of this rank's shard
    ids = ids.to(DEVICE)
    inputs = []
    for r in range(world):
        held = (ids >= r * per_rank) & (ids < (r + 1) * per_rank)
        inputs.append(torch.where(held[:, None], table[ids], torch.zeros((), dtype=dtype, device=DEVICE)))
    weight = (1 + torch.rand(hidden, generator=gen)).to(dtype=dtype, device=DEVICE)
    buffers, epochs, buffer_ptrs, capacity = _peers_arrived(rank, world, inputs)
    shard = table[rank * per_rank:(rank + 1) * per_rank].clone()
    out, res_out = one_shot.one_shot_all_reduce_embedding_rms_norm(ids, shard, rank * per_rank, weight, 1e-5,
                                                                   buffer_ptrs, epochs, rank, world, capacity)
    assert torch.equal(_bits(res_out), _bits(_positive_zeros(table[ids])))
    expected_out = reference.rms_norm(res_out, weight, 1e-5)
    assert torch.allclose(out.float(), expected_out.float(), rtol=1e-2, atol=1e-2)
    _check_pushed_and_emptied(rank, world, inputs, buffers, epochs, capacity, epoch=1)


@pytest.mark.parametrize("rank,world,rows,hidden,epoch", [(0, 2, 1, 5120, 1), (1, 2, 3, 576, 2), (2, 4, 20, 256, 7)])
def test_pushed_all_reduce_add_rms_norm_receives_every_rank_and_pushes_nothing(rank, world, rows, hidden, epoch):
    """The fused kernel after a GEMM that pushed its output itself (``PushedOutput``): every rank's
    values, this rank's too, come from this rank's slots, with the same bits as the fused kernel
    that reads and pushes x; the slots are emptied, the epochs advanced, no peer's buffer written."""
    gen = torch.Generator().manual_seed(rows * 10 + world + epoch)
    inputs = [torch.randn(rows, hidden, generator=gen).to(dtype=torch.float16, device=DEVICE) for _ in range(world)]
    inputs[rank][:, ::7] = -0.0
    residual = torch.randn(rows, hidden, generator=gen).to(dtype=torch.float16, device=DEVICE)
    weight = (1 + torch.rand(hidden, generator=gen)).to(dtype=torch.float16, device=DEVICE)
    buffers, epochs, ptrs, capacity = _peers_arrived(rank, world, inputs, epoch)
    expected = one_shot.one_shot_all_reduce_add_rms_norm(inputs[rank], residual, weight, 1e-5, ptrs, epochs, rank,
                                                         world, capacity)
    buffers, epochs, ptrs, capacity = _peers_arrived(rank, world, inputs, epoch, own_too=True)
    pushed = one_shot.PushedOutput(inputs[rank].shape, torch.float16)
    got = one_shot.pushed_all_reduce_add_rms_norm(pushed, residual, weight, 1e-5, ptrs, epochs, rank, world, capacity)
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
    assert epochs.eq(epoch).all() and all(_empty(b).all() for b in buffers)
    with pytest.raises(ValueError, match="the residual"):
        one_shot.pushed_all_reduce_add_rms_norm(pushed, residual[:, 1:].contiguous(), weight, 1e-5, ptrs, epochs,
                                                rank, world, capacity)


def test_push_table_lists_the_buffers_then_the_epochs_and_capacity():
    ptrs = torch.tensor([1 << 40, 2 << 40], dtype=torch.int64)
    epochs = torch.zeros(one_shot.PROGRAMS, dtype=torch.int32)
    assert one_shot.push_table(ptrs, epochs, 4096).tolist() == [1 << 40, 2 << 40, epochs.data_ptr(), 4096]


@pytest.mark.parametrize("kernel", ["plain", "fused", "lookup", "fused32"])
def test_compiled_kernel_pushes_and_polls_whole_vectors_without_fences(kernel):
    """The sm_90 SASS (compiled in a process without the Triton interpreter; no GPU needed): the
    pushes are 16-byte stores, each receive's first poll 16-byte loads that bypass L1 (volatile),
    and nothing waits for the link: no memory barrier, no system-scope flag, no CTA barrier
    between the pushes and the first poll (the peers' values are their own signal); the epoch is
    stored behind a CTA barrier."""
    ops = _sass(kernel)
    polls = [i for i, op in enumerate(ops) if "LDG.E.128.STRONG.SYS" in op]
    pushes = [i for i, op in enumerate(ops[:min(polls)]) if "STG" in op]
    assert pushes and all("STG.E.128" in ops[i] for i in pushes)
    assert not any("MEMBAR" in op or ".STRONG.SYS" in op and "STG" in op for op in ops)
    assert not any("BAR.SYNC" in op for op in ops[max(pushes):min(polls)])
    # the epoch store, last, right after a CTA barrier (no branch back, no load between): no warp
    # may store the advanced epoch while another has yet to read the old one
    last_store = max(i for i, op in enumerate(ops) if "STG" in op)
    barrier = max(i for i, op in enumerate(ops[:last_store]) if "BAR.SYNC" in op)
    assert not any("BRA" in op or "LDG" in op for op in ops[barrier:last_store])


@pytest.mark.parametrize("kernel, receives", [("plain", 1), ("fused", 1), ("pushed", 2)])
def test_compiled_receive_waits_thread_by_thread(kernel, receives):
    """A thread that finds one of its elements empty re-reads its own elements (volatile: one
    16-byte load where they are its 16 aligned bytes, as here, else eight narrow ones) until all
    have arrived, and then empties them itself: no CTA barrier falls between a receive's first poll
    and the last re-read of the last receive (no thread waits for another while receiving;
    ``spin_receive_ptx``), and each re-read that still finds an element empty is followed by a
    sleep (``SPIN_SLEEP_NS``). The pushed kernel receives its own slot and the peer's."""
    ops = _sass(kernel)
    polls = [i for i, op in enumerate(ops) if "LDG.E.128.STRONG.SYS" in op]   # first polls and re-reads
    narrow = [i for i, op in enumerate(ops) if "LDG.E.U16.STRONG.SYS" in op]
    assert len(polls) == 2 * receives and len(narrow) == 8 * receives
    assert not any("BAR.SYNC" in op for op in ops[polls[0]:max(polls + narrow)])
    assert sum("STG.E.U16" in op for op in ops) == 8 * receives
    assert sum("NANOSLEEP" in op for op in ops[polls[0]:]) == 2 * receives
    assert sum("STG.E.128" in op for op in ops[polls[0]:]) >= receives


def test_only_compiled_16_bit_receives_spin(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert one_shot.can_spin(cuda, torch.float16, 8192, 16) and one_shot.can_spin(cuda, torch.bfloat16, 2048, 8)
    assert not one_shot.can_spin(cuda, torch.float32, 8192, 16)       # 16 bytes are four elements
    assert not one_shot.can_spin(cuda, torch.float16, 128, 1)         # four elements a thread
    assert not one_shot.can_spin(torch.device("cpu"), torch.float16, 8192, 16)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not one_shot.can_spin(cuda, torch.float16, 8192, 16)


def _sass(kernel: str) -> list[str]:
    """SASS instructions of ``tests.allreduce_sass``'s kernel, compiled outside the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tests.allreduce_sass", kernel], cwd=Path(__file__).parents[1],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [ln.split(" ;")[0] for ln in json.loads(proc.stdout.strip().splitlines()[-1])]


def test_compiled_pushed_kernel_neither_waits_for_the_gemm_nor_pushes():
    """After a GEMM that pushed its output, the fused kernel lets the next kernel be scheduled and
    never waits for the GEMM (no griddepcontrol.wait: ACQBULK), stores nothing before its first poll
    (no pushes of its own), and reads the residual past L1."""
    ops = _sass("pushed")
    assert "PREEXIT" in ops and not any("ACQBULK" in op for op in ops)
    polls = [i for i, op in enumerate(ops) if "LDG.E.128.STRONG.SYS" in op]
    assert polls and not any("STG" in op for op in ops[:min(polls)])
    assert any("LDG.E.128.STRONG.GPU" in op for op in ops)


def test_one_shot_size_limit_falls_with_the_rank_count():
    from pagedawq.distributed.symm_mem_allreduce import default_max_bytes
    # 1 MiB / ranks: 512 KiB at 2 (the kernel still 1.2x NCCL at 1 MiB on H100s), 256 KiB at 4 (1.5x
    # NCCL there, even at 512 KiB; 4 x H100, session 19).
    assert default_max_bytes(2) == 512 << 10 and default_max_bytes(4) == 256 << 10
    assert default_max_bytes(8) == 128 << 10


def test_in_place_and_bad_arguments():
    inputs = [torch.randn(300, generator=torch.Generator().manual_seed(r)).to(DEVICE) for r in range(2)]
    buffers, epochs, buffer_ptrs, capacity = _peers_arrived(0, 2, inputs, epoch=2)   # the second call: parity 0
    x = inputs[0].clone()
    assert one_shot.one_shot_all_reduce(x, x, buffer_ptrs, epochs, 0, 2, capacity) is x
    assert torch.equal(x, inputs[0] + inputs[1])
    with pytest.raises(ValueError, match="contiguous"):
        one_shot.one_shot_all_reduce(x, x.half(), buffer_ptrs, epochs, 0, 2, capacity)
    with pytest.raises(ValueError, match="exceed the receive slots"):
        one_shot.one_shot_all_reduce(x, x, buffer_ptrs, epochs, 0, 2, 296)
    with pytest.raises(ValueError, match="16-byte"):
        one_shot.one_shot_all_reduce(x, x, buffer_ptrs, epochs, 0, 2, 301)
    shard, ids = torch.zeros(10, 30, device=DEVICE), torch.zeros(10, dtype=torch.long, device=DEVICE)
    for bad_ids, bad_weight in ((ids[None], torch.ones(30)), (ids, torch.ones(29))):
        with pytest.raises(ValueError, match="needs ids \\[rows\\], a contiguous"):
            one_shot.one_shot_all_reduce_embedding_rms_norm(bad_ids, shard, 0, bad_weight.to(DEVICE), 1e-5,
                                                            buffer_ptrs, epochs, 0, 2, capacity)
    with pytest.raises(ValueError, match="exceed the receive slots"):   # 10 rows x 30 > 296
        one_shot.one_shot_all_reduce_embedding_rms_norm(ids, shard, 0, torch.ones(30, device=DEVICE), 1e-5,
                                                        buffer_ptrs, epochs, 0, 2, 296)


def test_start_up_probe_fails_instead_of_hanging():
    """A probe whose kernel never finishes (peers whose pushes never arrive) ends start-up with the fix."""
    from pagedawq.distributed.symm_mem_allreduce import AllReduceProbeTimeout, wait_for_device

    class Event:
        def __init__(self, ready_after: int) -> None:
            self.polls, self.ready_after = 0, ready_after

        def query(self) -> bool:
            self.polls += 1
            return self.polls > self.ready_after

    wait_for_device(Event(ready_after=3), timeout_s=5)
    with pytest.raises(AllReduceProbeTimeout, match="PAGEDAWQ_DISABLE_SYMM_MEM_ALLREDUCE=1"):
        wait_for_device(Event(ready_after=10**9), timeout_s=0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gpu_worker(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    from pagedawq.distributed.symm_mem_allreduce import SymmMemAllReduce, wait_for_device
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            device_id=torch.device("cuda", rank))
    try:
        # Room for the largest call below (640 KiB); the engine's default buffer is smaller.
        reducer = SymmMemAllReduce(dist.group.WORLD, torch.device("cuda", rank), torch.float16, max_bytes=1 << 20)
        with pytest.raises(ValueError, match="exceed the symmetric buffer"):
            reducer(torch.zeros(reducer.max_numel + 1, device="cuda", dtype=torch.float16))
        for step, numel in enumerate([5120, 1, 40960, 5120 * 64, 3]):   # one buffer, odd sizes
            gen = torch.Generator().manual_seed(100 * step + rank)
            x = torch.randn(numel, generator=gen).to(device="cuda", dtype=torch.float16)
            ref = x.float()
            dist.all_reduce(ref)
            got = reducer(x.clone())
            assert (got.float() - ref).abs().max().item() <= 2e-3 * ref.abs().max().item() + 1e-3, step
            rank0 = got.clone()
            dist.broadcast(rank0, src=0)
            assert torch.equal(got, rank0), "ranks disagree"
        # The fused all-reduce + residual add + RMSNorm equals the two unfused kernels bit for bit,
        # and the ranks agree (residual and weight are replicated, as in a model).
        from pagedawq.kernels import ops
        for rows in (1, 5, 20):
            gen = torch.Generator().manual_seed(7 * rows + rank)
            x = torch.randn(rows, 5120, generator=gen).to(device="cuda", dtype=torch.float16)
            shared = torch.Generator().manual_seed(rows)
            residual = torch.randn(rows, 5120, generator=shared).to(device="cuda", dtype=torch.float16)
            weight = torch.rand(5120, generator=shared).to(device="cuda", dtype=torch.float16)
            fused = reducer.add_rms_norm(x, residual, weight, 1e-5)
            unfused = ops.fused_add_rms_norm(reducer(x.clone()), residual, weight, 1e-5)
            assert all(torch.equal(a, b) for a, b in zip(fused, unfused)), rows
            rank0 = fused[0].clone()
            dist.broadcast(rank0, src=0)
            assert torch.equal(fused[0], rank0), "ranks disagree"
        # The fused vocabulary-parallel embedding + RMSNorm equals the masked lookup, the all-reduce
        # and the plain RMSNorm bit for bit (13B shapes: 16000 tokens a rank), every rank alike.
        shared = torch.Generator().manual_seed(3)
        table = torch.randn(16000 * world, 5120, generator=shared).to(device="cuda", dtype=torch.float16)
        weight = torch.rand(5120, generator=shared).to(device="cuda", dtype=torch.float16)
        shard = table[16000 * rank:16000 * (rank + 1)].contiguous()
        for rows in (1, 5, 20):
            ids = torch.randint(0, 16000 * world, (rows,), generator=shared).cuda()
            normed, summed = reducer.embedding_rms_norm(ids, shard, 16000 * rank, weight, 1e-5)
            assert torch.equal(summed, table[ids]), rows
            assert torch.equal(normed, ops.rms_norm(table[ids], weight, 1e-5)), rows
        _check_pushed_gemms(reducer, rank)
        # The greedy-token exchange (its own key buffer) gives every rank the argmax of the
        # gathered logits, 16000 tokens a rank (and 128, the slice whose quick keys made a warp
        # poll a slot another had emptied: a hang at 4 ranks), for decode and prefill-sized batches,
        # many calls in a row; a call that does not finish fails the test instead of hanging it.
        from pagedawq.kernels import greedy_exchange
        for per_rank, dtype, calls in ((16000, torch.float16, 1), (128, torch.float32, 20)):
            for rows in (1, 7, 256):
                shared = torch.Generator().manual_seed(rows)
                full = torch.randn(rows, per_rank * world, generator=shared).to(device="cuda", dtype=dtype)
                full[:, per_rank - 10:per_rank + 10] = full.max()   # ties across slices: the first token wins
                mine = full[:, per_rank * rank:per_rank * (rank + 1)]
                for _ in range(calls):
                    tokens = reducer.greedy_tokens(mine, per_rank * rank)
                    done = torch.cuda.Event()
                    done.record()
                    wait_for_device(done, 30)
                    assert torch.equal(tokens, full.float().argmax(dim=-1)), (per_rank, rows)
                keys = greedy_exchange.row_keys(mine, per_rank * rank)
                dist.all_reduce(keys, op=dist.ReduceOp.MAX)
                assert torch.equal(greedy_exchange.tokens_of_keys(keys), tokens), (per_rank, rows)
        # Replays of a graph of three all-reduces (an odd count: a replay's first call has the parity
        # of the previous replay's last), with new inputs each time.
        xs = [torch.zeros(5120, device="cuda", dtype=torch.float16) for _ in range(3)]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for x in xs:
                reducer(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for x in xs:
                reducer(x)
        for replay in range(5):
            gen = torch.Generator().manual_seed(1000 + 10 * replay + rank)
            inputs = [torch.randint(-8, 8, (5120,), generator=gen).to(device="cuda", dtype=torch.float16)
                      for _ in xs]
            for x, value in zip(xs, inputs):
                x.copy_(value)
            graph.replay()
            for x, value in zip(xs, inputs):
                dist.all_reduce(value)
                assert torch.equal(x, value), replay
    finally:
        dist.destroy_process_group()


def _check_pushed_gemms(reducer, rank: int) -> None:
    """On Hopper: a row-parallel AWQ GEMM that pushes its output into the all-reduce's slots
    (``awq_gemm_pushed``), then the fused kernel that receives it, give the bits of the GEMM's
    stored output through the fused kernel, and the ranks agree; eagerly and in the replays of a
    graph of three such pairs (the slots' parity alternating). Shapes of 13B/TP=2 o and down (K
    slices summed by clusters of 4) and 70B/TP=8 o (K unsplit), each rank its own weights."""
    import torch.distributed as dist

    from pagedawq.kernels.awq_gemm import awq_gemm, awq_gemm_pushed, repack_for_wgmma_t
    from pagedawq.quant.pack import pack_awq_gemm, quantize_weight
    if torch.cuda.get_device_capability()[0] != 9:
        return
    for k, n in ((2560, 5120), (6912, 5120), (1024, 8192)):
        gen = torch.Generator().manual_seed(k + rank)
        layer = [t.cuda() for t in pack_awq_gemm(*quantize_weight(torch.randn(n, k, generator=gen), group_size=128))]
        repacked = repack_for_wgmma_t(*layer)
        shared = torch.Generator().manual_seed(n)
        weight = torch.rand(n, generator=shared).to("cuda", torch.float16)

        def unpushed(x, residual):
            return reducer.add_rms_norm(awq_gemm(x, *layer, repacked=repacked), residual, weight, 1e-5)

        def pushed(x, residual):
            out = awq_gemm_pushed(x, *layer, repacked, reducer.push)
            assert out is not None, (k, n, x.shape)
            return reducer.pushed_add_rms_norm(out, residual, weight, 1e-5)

        for rows in (1, 5):
            x = torch.randn(rows, k, generator=gen).to("cuda", torch.float16)
            residual = torch.randn(rows, n, generator=shared).to("cuda", torch.float16)
            got, expected = pushed(x, residual), unpushed(x, residual)
            assert all(torch.equal(a, b) for a, b in zip(got, expected)), (k, rows)
            rank0 = got[0].clone()
            dist.broadcast(rank0, src=0)
            assert torch.equal(got[0], rank0), "ranks disagree"
        xs = [torch.zeros(1, k, device="cuda", dtype=torch.float16) for _ in range(3)]
        res = torch.zeros(1, n, device="cuda", dtype=torch.float16)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = [pushed(x, res) for x in xs]
        for replay in range(3):
            for x in xs:
                x.copy_(torch.randn(1, k, generator=gen))
            res.copy_(torch.randn(1, n, generator=shared))
            graph.replay()
            for x, got in zip(xs, outs):
                assert all(torch.equal(a, b) for a, b in zip(got, unpushed(x, res))), (k, replay)


@pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_all_gpus_match_nccl_and_each_other():
    """One rank per GPU present (2 on the 2-GPU hosts, 4 on the 4-GPU ones)."""
    import torch.multiprocessing as mp
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    world = torch.cuda.device_count()
    mp.spawn(_gpu_worker, args=(world, _free_port()), nprocs=world)
