"""Hold an idle CUDA context on GPUs until killed (a sidecar for launch-gap experiments).

Session 32: in every 13B TP=2 run, the rank whose GPU was not the benchmark driver's cuda:0 left
~0.42 us between its graph's kernels (PDL off) and the other 0.10 us, whatever the rank, executor,
card or the rank's own device ordinal; the driver (``benchmarks/common.py``'s ``now()``) holds a
context on its cuda:0 and none elsewhere. Does a second, idle context on a GPU change how fast that
GPU starts a graph's kernels? This prints "ready" once it holds a context on each GPU of ``--devices``
(default: all it sees), then sleeps. Session 33: no. With these contexts on both GPUs both ranks'
traced gaps stayed at 0.42 us (benchmarks/gpu/driver_context_x2.sh).

    python benchmarks/experiments/idle_contexts.py --devices 1 &
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, nargs="*", default=None, help="device ordinals (default: all)")
    p.add_argument("--seconds", type=float, default=3600.0)
    args = p.parse_args()
    devices = range(torch.cuda.device_count()) if args.devices is None else args.devices
    held = [torch.zeros(1, device=f"cuda:{d}") for d in devices]
    torch.cuda.synchronize()
    print(f"ready: idle contexts on {[str(t.device) for t in held]}", flush=True)
    time.sleep(args.seconds)


if __name__ == "__main__":
    main()
