"""The one-shot all-reduce kernel (``pagedawq.kernels.one_shot_allreduce``).

One process plays one rank of a group: the peers' staging buffers hold their (already copied)
inputs and the peers' flags for both barriers are already set in this rank's signal pad, as if the
peers had arrived first. The kernel must then return the rank-ordered float32 sum rounded once,
consume every flag it waited on (the pads are all zero again between calls) and raise its own flag
in each peer's pad, once per program and barrier. Without CUDA this runs in Triton's interpreter (whose
float32 -> bfloat16 conversion truncates, hence one bfloat16 ulp of tolerance there); with two
GPUs the real collective is checked against NCCL across processes.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch

from tests.triton_interpreter import interpret_without_cuda

CUDA = interpret_without_cuda("pagedawq.kernels.one_shot_allreduce")
DEVICE = "cuda" if CUDA else "cpu"

from pagedawq.kernels import one_shot_allreduce as one_shot  # noqa: E402


def _peers_arrived(rank: int, world: int, inputs: list[torch.Tensor], nprog: int):
    """Staging buffers holding the peers' inputs and this rank's pad holding every peer's flag for
    both barriers of each of the ``nprog`` programs, as if all peers had arrived first; with their
    address tables."""
    numel = inputs[0].numel()
    buffers = [torch.full((numel + 64,), float("nan"), dtype=inputs[0].dtype, device=DEVICE) for _ in range(world)]
    pads = [torch.zeros(2 * nprog * world, dtype=torch.int32, device=DEVICE) for _ in range(world)]
    for peer in range(world):
        if peer != rank:
            buffers[peer][:numel] = inputs[peer].reshape(-1)
            pads[rank].view(2 * nprog, world)[:, peer] = 1   # entry and exit barrier of every program
    buffer_ptrs = torch.tensor([b.data_ptr() for b in buffers], dtype=torch.int64, device=DEVICE)
    pad_ptrs = torch.tensor([p.data_ptr() for p in pads], dtype=torch.int64, device=DEVICE)
    return buffers, pads, buffer_ptrs, pad_ptrs


def _check_flags(rank: int, world: int, pads: list[torch.Tensor], nprog: int) -> None:
    assert not pads[rank].any()                                    # every flag waited on was consumed
    for peer in range(world):
        if peer != rank:                            # one signal per program and barrier to each peer
            assert pads[peer].view(2 * nprog, world)[:, rank].tolist() == [1] * (2 * nprog)
            assert pads[peer].sum().item() == 2 * nprog


def _rank_ordered_sum(inputs: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    total = torch.zeros_like(inputs[0], dtype=torch.float32)
    for x in inputs:                      # rank order, as every rank sums
        total += x.float()
    return total.to(dtype)


def _assert_rounded_equal(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal, except that the interpreter's float32 -> bfloat16 conversion truncates (one ulp)."""
    if expected.dtype == torch.bfloat16 and not CUDA:
        ulp = expected.float().abs().clamp_min(1e-30) * 2.0 ** -7
        assert ((got.float() - expected.float()).abs() <= ulp).all()
    else:
        assert torch.equal(got, expected)


def simulate_rank(rank: int, world: int, numel: int, dtype: torch.dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(numel, generator=gen).to(dtype=dtype, device=DEVICE) for _ in range(world)]
    nprog = one_shot.num_programs(numel)
    buffers, pads, buffer_ptrs, pad_ptrs = _peers_arrived(rank, world, inputs, nprog)
    x = inputs[rank].clone()
    out = torch.full_like(x, float("nan"))
    one_shot.one_shot_all_reduce(x, out, buffer_ptrs, pad_ptrs, rank, world)
    return inputs, buffers, pads, out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rank,world", [(0, 2), (1, 3), (3, 4)])
@pytest.mark.parametrize("numel", [7, 5120, one_shot.BLOCK * one_shot.MAX_PROGRAMS * 2 + 33])
def test_one_rank_of_the_collective(dtype, rank, world, numel):
    inputs, buffers, pads, out = simulate_rank(rank, world, numel, dtype, seed=numel + 10 * world + rank)
    _assert_rounded_equal(out, _rank_ordered_sum(inputs, dtype))
    assert torch.equal(buffers[rank][:numel], inputs[rank])        # this rank's input was staged
    _check_flags(rank, world, pads, one_shot.num_programs(numel))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rank,world,rows,hidden", [(0, 2, 1, 576), (2, 3, 5, 100), (1, 4, 20, 256)])
def test_one_rank_of_the_all_reduce_add_rms_norm(dtype, rank, world, rows, hidden):
    """The fused kernel: the new residual is the rank-ordered sum rounded once plus the residual,
    rounded again (exactly the unfused path); the output is its RMSNorm; flags as above (rows >
    MAX_PROGRAMS makes programs own several rows)."""
    from pagedawq.kernels import reference
    gen = torch.Generator().manual_seed(rows * 100 + hidden + world)
    inputs = [torch.randn(rows, hidden, generator=gen).to(dtype=dtype, device=DEVICE) for _ in range(world)]
    residual = torch.randn(rows, hidden, generator=gen).to(dtype=dtype, device=DEVICE)
    weight = (1 + torch.rand(hidden, generator=gen)).to(dtype=dtype, device=DEVICE)
    nprog = one_shot.add_rms_norm_programs(rows)
    buffers, pads, buffer_ptrs, pad_ptrs = _peers_arrived(rank, world, inputs, nprog)
    x, res_in = inputs[rank].clone(), residual.clone()
    out, res_out = one_shot.one_shot_all_reduce_add_rms_norm(x, res_in, weight, 1e-5, buffer_ptrs, pad_ptrs,
                                                             rank, world)
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
    assert torch.equal(buffers[rank][:x.numel()], inputs[rank].reshape(-1))        # staged
    _check_flags(rank, world, pads, nprog)


def test_one_shot_size_limit_falls_with_the_rank_count():
    from pagedawq.distributed.symm_mem_allreduce import default_max_bytes
    # The crossovers against NCCL measured on H200s: 128-256 KiB at 2 ranks, 64-128 KiB at 4.
    assert default_max_bytes(2) == 128 << 10 and default_max_bytes(4) == 64 << 10
    assert default_max_bytes(8) == 32 << 10


def test_in_place_and_bad_arguments():
    inputs, buffers, pads, out = simulate_rank(0, 2, 300, torch.float32, seed=3)
    buffer_ptrs = torch.tensor([b.data_ptr() for b in buffers], dtype=torch.int64, device=DEVICE)
    for p in pads:
        p.zero_()
    pads[0].view(2, 2)[:, 1] = 1                                   # peer 1 at both barriers of program 0
    pad_ptrs = torch.tensor([p.data_ptr() for p in pads], dtype=torch.int64, device=DEVICE)
    x = inputs[0].clone()
    assert one_shot.one_shot_all_reduce(x, x, buffer_ptrs, pad_ptrs, 0, 2) is x
    assert torch.equal(x, inputs[0] + inputs[1])
    with pytest.raises(ValueError, match="contiguous"):
        one_shot.one_shot_all_reduce(x, x.half(), buffer_ptrs, pad_ptrs, 0, 2)


def test_start_up_probe_fails_instead_of_hanging():
    """A probe whose kernel never finishes (peers that cannot signal) ends start-up with the fix."""
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


def _two_gpu_worker(rank: int, port: int) -> None:
    import torch.distributed as dist

    from pagedawq.distributed.symm_mem_allreduce import SymmMemAllReduce
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            device_id=torch.device("cuda", rank))
    try:
        # Room for the largest call below (640 KiB); the engine's default buffer is 128 KiB at 2 ranks.
        reducer = SymmMemAllReduce(dist.group.WORLD, torch.device("cuda", rank), torch.float16, max_bytes=1 << 20)
        with pytest.raises(ValueError, match="exceed the symmetric buffer"):
            reducer(torch.zeros(reducer.max_numel + 1, device="cuda", dtype=torch.float16))
        for step, numel in enumerate([5120, 1, 40960, 5120 * 64, 3]):   # one staging buffer, odd sizes
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
        # Replays of a graph of three all-reduces (an odd count: the staging buffer is reused by
        # consecutive calls across replays), with new inputs each time.
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


@pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_match_nccl_and_each_other():
    import torch.multiprocessing as mp
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    mp.spawn(_two_gpu_worker, args=(_free_port(),), nprocs=2)
