"""Does a CUDA graph start its kernels more slowly on one device ordinal than another?

Session 32: in the 13B TP=2 decode graph with PDL off, rank 1 leaves 0.42-0.45 us between every
pair of kernels and rank 0 0.10 us, whichever physical card rank 1 runs on (session 31 swapped
them), with the host busy or idle alike. Every rank sees every GPU and rank r computes on ordinal
r. This replays a graph of ``--kernels`` tiny launches on one device per child process and prints
the time a kernel (replay time / kernels, median of ``--replays``), so ordinals and visibility can
be told apart without the engine:

    python benchmarks/experiments/graph_gap_probe.py            # every case below, one child each

Cases: each ordinal of a process that sees both GPUs, the same card as ordinal 0 of a process that
sees it alone, ordinal 1 with peer access to ordinal 0 turned on (as NCCL and symmetric memory do),
ordinal 0 with a one-CTA kernel spinning on another stream all the while (a kernel left waiting
would do that), and ordinal 0 with another process holding an idle context on the same GPU
(``idle_contexts.py``; the benchmarks' driver holds one on its cuda:0, and in the TP=2 runs the rank
on that GPU was the fast one). Session 32 on 2xH200: 0.79-0.87 us a kernel in each of the first
seven cases; 0.80 with a kernel spinning beside against 0.82 without. Session 33: 0.785-0.866 with
or without another process's idle context on the GPU, on both ordinals.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository's pagedawq


def measure(device: int, kernels: int, replays: int, peer: bool, triton_kernel: bool, concurrent: bool) -> dict:
    import torch

    from pagedawq.kernels.graph_timing import capture_round_robin, replay_times_us
    torch.cuda.set_device(device)
    if peer:   # a copy between the devices makes PyTorch enable peer access both ways
        other = 1 - device
        torch.ones(4, device=f"cuda:{other}").to(f"cuda:{device}")
    x = torch.zeros(1024, device=f"cuda:{device}")
    if triton_kernel:
        import triton
        import triton.language as tl

        @triton.jit
        def bump(ptr, n: tl.constexpr):
            offs = tl.arange(0, n)
            tl.store(ptr + offs, tl.load(ptr + offs) + 1)

        def one() -> None:
            bump[(1,)](x, 1024)
    else:
        def one() -> None:
            x.add_(1)
    graph = capture_round_robin([one], kernels)
    if concurrent:   # ~1 s of one CTA spinning, from before the first replay to after the last
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            torch.cuda._sleep(2_000_000_000)
    times = replay_times_us(graph, kernels, replays)
    return {"device": device, "visible": os.environ.get("CUDA_VISIBLE_DEVICES", "all"), "peer": peer,
            "triton": triton_kernel, "concurrent": concurrent, "us_per_kernel": statistics.median(times[replays // 5:])}


CASES = [   # (CUDA_VISIBLE_DEVICES or None for all, device ordinal, peer access, a kernel spinning beside,
    #           another process's idle context on the device)
    (None, 0, False, False, False), (None, 1, False, False, False), ("1", 0, False, False, False),
    ("1,0", 1, False, False, False), ("1,0", 0, False, False, False), (None, 0, True, False, False),
    (None, 1, True, False, False), (None, 0, False, True, False), (None, 0, False, False, True),
    (None, 1, False, False, True),
]


def _sidecar(env: dict, device: int) -> subprocess.Popen:
    """A process holding an idle context on ``device`` (``idle_contexts.py``), once it has one."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("idle_contexts.py")), "--devices", str(device)],
                            env=env, stdout=subprocess.PIPE, text=True)
    if not proc.stdout.readline().startswith("ready"):
        proc.kill()
        raise RuntimeError("the idle-context sidecar did not start")
    return proc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernels", type=int, default=320)
    p.add_argument("--replays", type=int, default=200)
    p.add_argument("--cases", type=int, nargs="*", default=None, help="indices into CASES (default: all)")
    p.add_argument("--child", nargs=4, metavar=("DEVICE", "PEER", "TRITON", "CONCURRENT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        device, peer, triton_kernel, concurrent = int(args.child[0]), *(flag == "1" for flag in args.child[1:])
        print(json.dumps(measure(device, args.kernels, args.replays, peer, triton_kernel, concurrent)))
        return
    for triton_kernel in (False, True):
        for visible, device, peer, concurrent, beside in (CASES if args.cases is None else [CASES[i] for i in args.cases]):
            env = dict(os.environ)
            env.pop("CUDA_VISIBLE_DEVICES", None)
            if visible is not None:
                env["CUDA_VISIBLE_DEVICES"] = visible
            sidecar = _sidecar(env, device) if beside else None
            out = subprocess.run([sys.executable, __file__, "--kernels", str(args.kernels), "--replays", str(args.replays),
                                  "--child", str(device), str(int(peer)), str(int(triton_kernel)), str(int(concurrent))],
                                 env=env, capture_output=True, text=True)
            if sidecar is not None:
                sidecar.kill()
                sidecar.wait()
            if out.returncode:
                print(f"visible={visible} device={device} peer={peer}: failed\n{out.stderr[-800:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{'triton' if triton_kernel else 'torch add_':<11} visible={r['visible']:<4} cuda:{r['device']} "
                  f"peer={str(r['peer']):<5} spinning beside={str(r['concurrent']):<5} idle context beside={str(beside):<5} "
                  f"{r['us_per_kernel']:.3f} us a kernel")


if __name__ == "__main__":
    main()
