"""Where a small-M AWQ GEMM's time goes beyond streaming its bytes (issue 4: 7B down at M <= 16).

``small_m_stream_probe.py`` fits 7B down's time as ~3.2 us + bytes at ~2.7 TB/s; cuBLAS has about
the same fixed cost over 3.8x the bytes. This probe looks inside the fixed part. It needs
``gpu/patches/gemm_timeline.patch``: each CTA of a clustered ``awq_wgmma_t_kernel`` launch writes
its SM and the global timer (ns) at entry, after the PDL wait, once step 0's data has landed, at
the end of its K loop and after the cluster sum, into ``awq_wgmma_t.TRACE_BUFFER``.

The calls run back to back from one CUDA graph over rotating weight copies, as ``kernels.py``
times them, each call with its own trace buffer. Per call (medians over the calls after the
first; "end" is the call's last CTA exit):
- period: end to end of consecutive calls (the per-call time);
- early: how long before the previous call's end this call's first CTA entered (PDL overlap);
- release: previous end to this call's first wait release;
- first data: wait release to step 0's data (x comes after the wait), per CTA;
- loop: step 0's data to the end of the K loop, per CTA (median and max), and how far the CTAs'
  loop ends spread;
- sum: the cluster sum (loop end to exit), per CTA;
- tail: the last loop end to the call's end.

    PYTHONPATH=. python benchmarks/experiments/gemm_timeline_probe.py [--ms 1 16] [--k 11008 --n 4096]

Session 42 (H100, results/session42_call{3,4,5}_*), 7B down at M = 1 as launched: the CTAs enter
0.16 us after the previous call's end. That call's trigger comes after its slowest CTA's K loop, and
the loop ends spread over 2.4 us, so the PDL launch does not start early. The wait releases 0.70 us
after the end, the first data lands 1.41 us later (every CTA's two stages, 4.4 MB, at once), the
loops take 7.33 us (median) to 8.10 (max), and the cluster sum 0.58. In 5 of 16 calls (10 at M = 16)
PDL places the next launch's clusters around the previous one's last CTAs, with 3 (at M = 16 up to
4) CTAs on some SMs, and those run ~0.6 us longer. Without PDL every call places two a SM, but the wait
costs 1.50 us (untraced, a 9-call graph over its calls: 12.44 us against 11.91). With the trigger
right after the wait, placement is even and the first data is ready (0.35 us), but each loop runs
1.6 us longer under the next call's early loads (12.03 us).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import kernels  # noqa: E402
from pagedawq.kernels import awq_wgmma_t  # noqa: E402
from pagedawq.kernels.awq_configs import k_tiles_per_step  # noqa: E402
from pagedawq.kernels.awq_gemm import awq_gemm, wgmma_t_plan  # noqa: E402
from pagedawq.kernels.awq_wgmma_t import cluster_reduces, k_slices, output_tiles  # noqa: E402

SM, ENTRY, WAIT, DATA, LOOP, EXIT = range(6)


def traced_calls(layer: kernels.Layer, x: torch.Tensor, out: torch.Tensor, calls: int, ctas: int) -> list[torch.Tensor]:
    """Replay ``calls`` back-to-back calls from a graph, each writing its own trace; return the traces."""
    if not hasattr(awq_wgmma_t, "TRACE_BUFFER"):
        raise SystemExit("this tree's awq_wgmma_t has no TRACE_BUFFER: apply gpu/patches/gemm_timeline.patch")
    traces = [torch.zeros(ctas, 8, dtype=torch.int64, device="cuda") for _ in range(calls)]

    def call(i: int) -> None:
        awq_wgmma_t.TRACE_BUFFER = traces[i]
        w, r = layer.int4[i % len(layer.int4)], layer.repacked[i % len(layer.repacked)]
        awq_gemm(x, *w, out=out, repacked=r)
    graph = kernels.capture_round_robin([lambda i=i: call(i) for i in range(calls)], calls)
    awq_wgmma_t.TRACE_BUFFER = None
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    return [t.cpu() for t in traces]


def summarize(traces: list[torch.Tensor]) -> dict[str, float]:
    """The module docstring's quantities, in us, each the median over the calls after the first."""
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value / 1000)
    for prev, t in zip(traces, traces[1:]):
        if (t[:, ENTRY] == 0).any() or (t[:, EXIT] == 0).any():
            raise AssertionError("a CTA left no trace: the launch was not the clustered kernel")
        end_prev, end = prev[:, EXIT].max().item(), t[:, EXIT].max().item()
        add("period", end - end_prev)
        add("early", end_prev - t[:, ENTRY].min().item())
        add("release", t[:, WAIT].min().item() - end_prev)
        add("first data", (t[:, DATA] - t[:, WAIT]).median().item())
        loop = t[:, LOOP] - t[:, DATA]
        add("loop median", loop.median().item())
        add("loop max", loop.max().item())
        add("loop end spread", (t[:, LOOP].max() - t[:, LOOP].min()).item())
        add("sum", (t[:, EXIT] - t[:, LOOP]).median().item())
        add("tail", end - t[:, LOOP].max().item())
    return {name: statistics.median(v) for name, v in rows.items()}


def placement(traces: list[torch.Tensor]) -> str:
    """SMs used and the most CTAs on one SM, per call (how often each pair occurred)."""
    seen: dict[tuple[int, int], int] = {}
    for t in traces:
        per_sm = torch.bincount(t[:, SM])
        key = ((per_sm > 0).sum().item(), per_sm.max().item())
        seen[key] = seen.get(key, 0) + 1
    return ", ".join(f"{sms} SMs max {most} x{n}" for (sms, most), n in sorted(seen.items()))


def clustered_ctas(m: int, k: int, n: int) -> int:
    """CTAs of the launch ``awq_gemm`` makes for this layer, which must be a clustered one (only
    those write a trace, one row a CTA: a buffer sized from the config is never overrun)."""
    cfg, tail = wgmma_t_plan(m, n, k, torch.device("cuda"))
    split = k_slices(k, k_tiles_per_step(k, kernels.GROUP, cfg), cfg)
    if tail is not None or cfg.consumers > 1 or not cluster_reduces(split, cfg.block_n, cfg.block_t, False):
        raise SystemExit(f"M = {m} on {k} x {n} does not launch clustered one-warpgroup CTAs ({cfg}): nothing to trace")
    return output_tiles(m, n, cfg) * split


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--k", type=int, default=11008)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--calls", type=int, default=16)
    ap.add_argument("--save", help="also save each M's traces (a list of [CTAs, 8] int64 tensors) to SAVE_K<k>_M<m>.pt")
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), flush=True)
    layer = kernels.Layer(args.k, args.n, seed=args.k + args.n)
    for m in args.ms:
        x = layer.x(m)
        out = torch.empty(m, args.n, dtype=torch.float16, device="cuda")
        t_graph = kernels.graph_time_us(layer.awq_fns(x, out), 10, 50)
        traces = traced_calls(layer, x, out, args.calls, clustered_ctas(m, args.k, args.n))
        s = summarize(traces)
        if args.save:
            torch.save(traces, f"{args.save}_K{args.k}_M{m}.pt")
        print(f"M={m}: untraced {t_graph:.2f} us a call; placement per call: {placement(traces)}", flush=True)
        print("  " + ", ".join(f"{name} {v:.2f}" for name, v in s.items()), flush=True)


if __name__ == "__main__":
    main()
