"""Does a small-M AWQ GEMM get faster with fewer zero/scale bytes? (issue 4, 7B down at M <= 16)

The Hopper "wgmma_t" layout keeps each (group, channel)'s zero and scale as one int32 (fp16 1024 + z
in the low half, the fp16 scale in the high half): 4 bytes where AutoAWQ's checkpoint has 2.5. At
group 128 that is 6.25% on top of the packed words, so a compact layout (2.5 bytes) would stream
2.3% fewer bytes. Whether that shortens the kernel depends on whether the stream, and not the
kernel's own step chain, bounds it (sessions 15-17 found mostly the latter).

This probe times the engine's choice for a layer at group sizes 64, 128 and 256. The kernel makes
one zero/scale shared-memory read a K tile whatever the group, so only the TMA bytes of the
zero/scale stream differ between the rows: the slope, µs per MB of that stream, says what the
compact layout could take off (7B down at group 128: 0.53 MB less).

    PYTHONPATH=. python benchmarks/experiments/zs_bytes_probe.py [--ms 1 4 16] [--rounds 3] [--layers "7B down"]

Outcome (H100, session 38, results/session38_call2_zs_probe_h100.log): 7B down 12.49-12.55 /
11.88-11.95 / 11.49-11.60 us at M = 1 for groups 64 / 128 / 256, the same steps at M = 4 and 16,
while gate_up gains less. The bytes alone (gpu/zs_bytes_h100.sh, same instructions with half the
rows) are ~0.3 us a MB; a 3-byte layout in two boxes (gpu/patches/zero_scales_split.patch) gave
half of that and was not kept (RESULTS.md "Session 38").
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import kernels  # noqa: E402

LAYERS = [("7B down", 11008, 4096), ("7B gate_up", 4096, 22016)]


def zero_scale_bytes(zs) -> int:
    """Bytes of a repacked layer's zero/scale rows: one int32 tensor before session 38, a
    ``ZeroScales`` (fp16 scales, uint8 zeros) since."""
    parts = (zs.scales, zs.zeros) if hasattr(zs, "scales") else (zs,)
    return sum(t.numel() * t.element_size() for t in parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--groups", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--rounds", type=int, default=3, help="each group's timing, in turn, this many times")
    ap.add_argument("--layers", nargs="+", default=[name for name, _, _ in LAYERS])
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), flush=True)
    print(f"{'layer':<12}{'M':>4}{'G':>5}{'zs MB':>8}{'words MB':>10}{'cuBLAS':>9}  AWQ us per round", flush=True)
    for name, k, n in (layer for layer in LAYERS if layer[0] in args.layers):
        layers = {}
        for g in args.groups:
            kernels.GROUP = g   # read by Layer (quantize_weight's group) and path()
            layers[g] = kernels.Layer(k, n, seed=k + n)
        for m in args.ms:
            first = layers[args.groups[0]]
            x = first.x(m)
            out = torch.empty(m, n, dtype=torch.float16, device="cuda")
            t_ref = kernels.graph_time_us([lambda w=w: torch.matmul(x, w, out=out) for w in first.fp16], 10, 50)
            times = {g: [] for g in args.groups}
            for _ in range(args.rounds):
                for g in args.groups:
                    kernels.GROUP = g
                    times[g].append(kernels.graph_time_us(layers[g].awq_fns(x, out), 10, 50))
            for g in args.groups:
                words, zs = layers[g].repacked[0]
                print(f"{name:<12}{m:>4}{g:>5}{zero_scale_bytes(zs) / 1e6:>8.3f}{words.numel() * 4 / 1e6:>10.3f}"
                      f"{t_ref:>9.2f}  " + " ".join(f"{t:.2f}" for t in times[g])
                      + f"  (min {min(times[g]):.2f}, x cuBLAS {t_ref / min(times[g]):.3f})", flush=True)
        del layers
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
