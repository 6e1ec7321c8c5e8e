"""All-reduce latency on the local GPUs: NCCL against our one-shot kernel over symmetric memory
(and PyTorch's own one-shot kernel, for the dtypes it has: bfloat16 and float32).

Each size is timed inside a CUDA graph (as the decode steps run it): 50 all-reduces captured back
to back, replayed, median per call. Sizes cover decode (batch x hidden x 2 bytes: 10 KiB for one
token of a 5120-wide model) up to prefill chunks. Correctness is checked on every size against
NCCL with small integers (exact in any float dtype).

    python benchmarks/allreduce.py --world-size 2 --dtype float16
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pagedawq.distributed.symm_mem_allreduce import SymmMemAllReduce  # noqa: E402

SIZES_KIB = [8, 16, 32, 64, 128, 256, 512, 1024]
CALLS = 50


def time_graph(fn, x: torch.Tensor) -> float:
    """Median microseconds per call of ``fn(x)`` replayed from a graph of CALLS calls."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(CALLS):
            fn(x)
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        dist.barrier()
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / CALLS)
    return statistics.median(times)


def torch_one_shot_reducer(group: dist.ProcessGroup, dtype: torch.dtype, max_bytes: int):
    """PyTorch's one-shot all-reduce on a symmetric buffer of its own, or None for the dtypes it
    lacks (float16)."""
    import torch.distributed._symmetric_memory as symm_mem
    if dtype == torch.float16:
        return None
    buf = symm_mem.empty(max_bytes // dtype.itemsize, dtype=dtype, device="cuda")
    symm_mem.rendezvous(buf, group.group_name)

    def reduce(x: torch.Tensor) -> torch.Tensor:
        staged = buf[: x.numel()]
        staged.copy_(x.view(-1))
        return torch.ops.symm_mem.one_shot_all_reduce_out(staged, "sum", group.group_name, x.view(-1))
    return reduce


def worker(rank: int, world: int, port: int, dtype_name: str) -> None:
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            device_id=torch.device("cuda", rank))
    dtype = getattr(torch, dtype_name)
    group = dist.group.WORLD
    reducer = SymmMemAllReduce(group, torch.device("cuda", rank), dtype, max_bytes=max(SIZES_KIB) * 1024)
    torch_one_shot = torch_one_shot_reducer(group, dtype, max(SIZES_KIB) * 1024)
    rows = []
    for kib in SIZES_KIB:
        n = kib * 1024 // dtype.itemsize
        x = torch.randint(-8, 8, (n,), device="cuda").to(dtype)
        ref = x.clone()
        dist.all_reduce(ref)
        got = reducer(x.clone())
        exact = torch.equal(got, ref)
        nccl_us = time_graph(lambda t: dist.all_reduce(t), x.clone())
        symm_us = time_graph(reducer, x.clone())
        torch_us = time_graph(torch_one_shot, x.clone()) if torch_one_shot else float("nan")
        rows.append((kib, nccl_us, symm_us, torch_us, exact))
    if rank == 0:
        print(f"all-reduce, {world} x {torch.cuda.get_device_name()}, {dtype_name}, per call inside a CUDA graph")
        print(f"{'KiB':>6} {'NCCL us':>9} {'ours us':>8} {'speed-up':>9} {'torch one-shot us':>18} {'exact':>6}")
        for kib, a, b, c, exact in rows:
            print(f"{kib:>6} {a:>9.1f} {b:>8.1f} {a / b:>8.2f}x {c:>18.1f} {str(exact):>6}")
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    args = p.parse_args()
    if torch.cuda.device_count() < args.world_size:
        raise SystemExit(f"needs {args.world_size} GPUs, found {torch.cuda.device_count()}")
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(args.world_size, port, args.dtype), nprocs=args.world_size)


if __name__ == "__main__":
    main()
