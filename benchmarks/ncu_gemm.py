"""One AWQ GEMM shape run a few times as the engine calls it, for Nsight Compute to profile one launch.

A batch-1 decode GEMM is bound by its programs' step latency, not by DRAM (benchmarks/notes,
session 15); ncu's warp-state sampling says what the warps wait for. For example (on the GPU machine):

    ncu --clock-control none --kernel-name regex:awq_wgmma_t --launch-skip 4 --launch-count 1 \\
        --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy \\
        python benchmarks/ncu_gemm.py --k 5120 --n 7680 --m 1
"""
from __future__ import annotations

import argparse

import torch
from kernels import Layer

from pagedawq.kernels.awq_gemm import awq_gemm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--calls", type=int, default=6, help="launches (ncu's --launch-skip picks one)")
    args = p.parse_args()
    layer = Layer(args.k, args.n, seed=args.k + args.n)
    x = layer.x(args.m)
    out = torch.empty(args.m, args.n, dtype=torch.float16, device="cuda")
    for i in range(args.calls):   # a different weight copy each call: from DRAM, as in decode
        w, r = layer.int4[i % len(layer.int4)], layer.repacked[i % len(layer.repacked)]
        awq_gemm(x, *w, out=out, repacked=r)
    torch.cuda.synchronize()
    print(f"K={args.k} N={args.n} M={args.m}: rel err {layer.rel_err(args.m, out):.1e}")


if __name__ == "__main__":
    main()
