"""Launch each small-M AWQ kernel variant a few times on one layer, for ``ncu`` to profile.

    ncu --clock-control none -k regex:"awq_|_stream" --section SpeedOfLight --section WarpStateStats \
        python benchmarks/experiments/ncu_small_m.py --k 11008 --n 4096 --m 1
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernels import Layer  # noqa: E402
from mma_v2_small_m import mma_v2_direct_gemm, mma_v2_gemm  # noqa: E402
from stream_floor import _stream_kernel  # noqa: E402

from pagedawq.kernels.awq_configs import WgmmaTConfig  # noqa: E402
from pagedawq.kernels.awq_gemm import _counters, awq_gemm  # noqa: E402
from pagedawq.kernels.awq_wgmma_t import wgmma_t_gemm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=11008)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--m", type=int, default=1)
    a = ap.parse_args()
    layer = Layer(a.k, a.n, seed=1)
    x = layer.x(a.m)
    out = torch.empty(a.m, a.n, dtype=torch.float16, device="cuda")
    words, zs = layer.repacked[0]
    cnt = _counters(x.device, 4096)
    sink = torch.empty(528, dtype=torch.int32, device="cuda")
    for _ in range(2):
        awq_gemm(x, *layer.int4[0], out=out, repacked=layer.repacked[0])
        wgmma_t_gemm(x, words, zs, WgmmaTConfig(64, 8, stages=8, split_k=2, k_tiles=4, consumers=2, k_phases=2),
                     out, cnt)
        mma_v2_gemm(x, words, zs, WgmmaTConfig(64, 8, stages=4, split_k=4, k_tiles=4), out, cnt)
        mma_v2_direct_gemm(x, words, zs, WgmmaTConfig(64, 8, split_k=8), out, cnt)
        _stream_kernel[(528,)](words, sink, -(-words.numel() // 528), words.numel(), BLOCK=1024, UNROLL=4,
                               num_warps=8)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
