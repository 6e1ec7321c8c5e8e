"""One AWQ GEMM shape run a few times as the engine calls it, for Nsight Compute to profile one launch.

A batch-1 decode GEMM is bound by its programs' step latency, not by DRAM (benchmarks/notes,
session 15); ncu's warp-state sampling says what the warps wait for. ``--config`` runs the "wgmma_t"
kernels with a given config instead of ``awq_gemm``'s choice (e.g. a deeper ring, or the
warp-specialised K-phase kernel), so that one call can compare where each one's warps stall.
For example (on the GPU machine; ``benchmarks/gpu/gemm_stalls_h100.sh`` runs this):

    ncu --clock-control none --kernel-name regex:awq_wgmma_t --launch-skip 4 --launch-count 1 \\
        --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy \\
        python benchmarks/ncu_gemm.py --k 5120 --n 7680 --m 1 [--config 64,8,4,2,4]
"""
from __future__ import annotations

import argparse

import torch
from kernels import Layer

from pagedawq.kernels import clusters
from pagedawq.kernels.awq_configs import WgmmaTConfig
from pagedawq.kernels.awq_gemm import _counters, awq_gemm
from pagedawq.kernels.awq_wgmma_t import output_tiles, wgmma_t_gemm

CONFIG_FIELDS = ("block_n", "block_t", "stages", "split_k", "k_tiles", "consumers", "k_phases")


def parse_config(text: str) -> WgmmaTConfig:
    """``block_n,block_t,stages,split_k,k_tiles[,consumers,k_phases]`` -> a ``WgmmaTConfig``."""
    values = [int(v) for v in text.split(",")]
    if not 5 <= len(values) <= len(CONFIG_FIELDS):
        raise argparse.ArgumentTypeError(f"--config takes 5 to 7 integers ({', '.join(CONFIG_FIELDS)}), got {text!r}")
    return WgmmaTConfig(**dict(zip(CONFIG_FIELDS, values)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--config", type=parse_config, default=None,
                   help="block_n,block_t,stages,split_k,k_tiles[,consumers,k_phases] (default: awq_gemm's choice)")
    p.add_argument("--calls", type=int, default=6, help="launches (ncu's --launch-skip picks one)")
    p.add_argument("--cluster-policy", choices=sorted(clusters.SCHEDULING_POLICIES), default=clusters.SCHEDULING_POLICY,
                   help="how the driver places the CTAs of a clustered split-K launch")
    args = p.parse_args()
    clusters.SCHEDULING_POLICY = args.cluster_policy
    layer = Layer(args.k, args.n, seed=args.k + args.n)
    x = layer.x(args.m)
    out = torch.empty(args.m, args.n, dtype=torch.float16, device="cuda")
    counters = _counters(x.device, output_tiles(args.m, args.n, args.config)) if args.config else None
    for i in range(args.calls):   # a different weight copy each call: from DRAM, as in decode
        w, r = layer.int4[i % len(layer.int4)], layer.repacked[i % len(layer.repacked)]
        if args.config is None:
            awq_gemm(x, *w, out=out, repacked=r)
        else:
            wgmma_t_gemm(x, *r, args.config, out, counters)
    torch.cuda.synchronize()
    print(f"K={args.k} N={args.n} M={args.m} config={args.config or 'awq_gemm'}: rel err {layer.rel_err(args.m, out):.1e}")


if __name__ == "__main__":
    main()
