"""What reading N bytes from DRAM costs one kernel in a CUDA graph: the practical floor of a small-M GEMM.

Issue 4 measures the AWQ kernels against bytes / bandwidth, which has no fixed term. A decode GEMM of
6-35 MB also pays a launch, a ramp until enough loads are in flight, and a tail. This kernel only
streams the bytes (16-byte loads, XOR-reduced, one word stored a program), so its time at a
layer's size is what any kernel with that grid pays before doing arithmetic. Buffers rotate over
more bytes than L2 holds, as in ``kernels.py``.

    PYTHONPATH=. python benchmarks/experiments/stream_floor.py

Outcome (H100, session 10, results/stream_floor_h100_session10_2026-11-26.log): the best grid (4
programs an SM, 64 KB in flight an SM) reads 6.8 MB in 4.3 us, 23.4 MB (7B down) in 10.1 us and
46.9 MB in 18.3 us: about 2.2 us + bytes / 2.9 TB/s. 7B down at 3.0x cuBLAS (11.9 us) is thus
within reach of a kernel that streams like this one; one program an SM with 16 KB in flight took
18.9 us.
"""
from __future__ import annotations

import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kernels import graph_time_us  # noqa: E402


# int4 bytes (weights + fp16 scales + packed zeros, group 128) of the layers in kernels.py's table.
LAYERS = {
    "13b/tp2 o 2560x5120": (2560, 5120),
    "13b/tp2 down 6912x5120": (6912, 5120),
    "13b/tp2 qkv 5120x7680": (5120, 7680),
    "7b down 11008x4096": (11008, 4096),
    "13b/tp2 gate_up 5120x13824": (5120, 13824),
    "7b gate_up 4096x22016": (4096, 22016),
}


def awq_bytes(k: int, n: int) -> int:
    return k * n // 2 + (k // 128) * n * 2 + (k // 128) * n // 2


@triton.jit
def _stream_kernel(src, out, words_per_prog, total, BLOCK: tl.constexpr, UNROLL: tl.constexpr):
    pid = tl.program_id(0)
    first = pid.to(tl.int64) * words_per_prog
    base = src + first
    words_per_prog = tl.minimum(words_per_prog, total - first)
    acc = tl.zeros([BLOCK], dtype=tl.int32)
    for off in range(0, words_per_prog, BLOCK * UNROLL):
        for u in tl.static_range(UNROLL):
            idx = off + u * BLOCK + tl.arange(0, BLOCK)
            acc ^= tl.load(base + idx, mask=idx < words_per_prog, other=0, cache_modifier=".cg")
    tl.store(out + pid, tl.reduce(acc, 0, _xor))


@triton.jit
def _xor(a, b):
    return a ^ b


@triton.jit
def _empty_kernel(out):
    tl.store(out + tl.program_id(0), 0)


def main() -> None:
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    sms = props.multi_processor_count
    print(f"device: {props.name}, {sms} SMs, torch {torch.__version__}, triton {triton.__version__}")
    out = torch.empty(8 * sms, dtype=torch.int32, device=dev)
    for progs in (1, sms):
        us = graph_time_us([lambda p=progs: _empty_kernel[(p,)](out)] * 60, 5, 20)
        print(f"empty kernel, {progs} programs: {us:.2f} us a launch")
    print(f"{'layer':30s} {'MB':>6s} {'floor@3.0':>9s} " + " ".join(f"{f'{p}x{b}x{u}':>12s}" for p, b, u in CONFIGS(sms))
          + "  best  eff")
    for name, (k, n) in LAYERS.items():
        nbytes = awq_bytes(k, n)
        copies = max(2, -(-160_000_000 // nbytes))
        bufs = [torch.randint(0, 2**31 - 1, (nbytes // 4,), dtype=torch.int32, device=dev) for _ in range(copies)]
        row = []
        for progs, block, unroll in CONFIGS(sms):
            wpp = -(-(nbytes // 4) // progs)
            fns = [lambda b=b, p=progs, w=wpp, bl=block, u=unroll: _stream_kernel[(p,)](b, out, w, b.numel(), BLOCK=bl, UNROLL=u,
                                                                                         num_warps=8)
                   for b in bufs]
            row.append(graph_time_us(fns, 5, 20))
        floor = nbytes / 3.0e6
        print(f"{name:30s} {nbytes / 1e6:6.1f} {floor:9.2f} " + " ".join(f"{t:12.2f}" for t in row)
              + f"  {min(row):5.2f} {floor / min(row):4.0%}", flush=True)
        del bufs


def CONFIGS(sms: int) -> list[tuple[int, int, int]]:
    """(programs, words a load, loads in flight a thread) of the sweep."""
    return [(sms, 2048, 2), (sms, 2048, 4), (2 * sms, 2048, 2), (2 * sms, 2048, 4), (4 * sms, 1024, 4)]


if __name__ == "__main__":
    main()
