"""Per-step device time by kernel from a rank's Chrome trace (``decode_profile.py --trace-dir``).

The profiler's summary sums a kernel over the whole generation, prefill included (eager and slow
under the profiler). This reads the trace itself: decode steps are cut at each launch of the LM
head GEMM (one a step, named by ``--step-kernel``), and for the steps in the middle of the
generation it prints the step period (start to start), the time the device was busy (kernels
merged, so PDL overlaps count once), and each kernel's time and count per step.

    python benchmarks/trace_steps.py out/tp1/rank0.json out/tp2/rank0.json
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json


def kernels(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                  key=lambda e: e["ts"])


def step_summary(ks: list[dict], step_kernel: str, skip: int) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """(median step period us, busy us a step, {kernel: (us a step, launches a step)}) over the
    steps between the ``skip``-th mark and the ``skip``-th from the end."""
    marks = [e["ts"] for e in ks if e["name"].startswith(step_kernel)]
    if len(marks) < 2 * skip + 2:
        raise SystemExit(f"only {len(marks)} '{step_kernel}' launches: too few steps to skip {skip} at each end")
    lo, hi = marks[skip], marks[-skip - 1]
    steps = len(marks) - 2 * skip - 1
    periods = sorted(b - a for a, b in zip(marks[skip:-skip - 1], marks[skip + 1:-skip]))
    by_name: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    busy, end = 0.0, lo
    for e in ks:
        start, stop = e["ts"], e["ts"] + e["dur"]
        if not lo <= start < hi:
            continue
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
        by_name[e["name"]][0] += e["dur"] / steps
        by_name[e["name"]][1] += 1 / steps
    return periods[len(periods) // 2], busy / steps, {k: tuple(v) for k, v in by_name.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", help="rank traces (.json or .json.gz), one column each")
    p.add_argument("--step-kernel", default="nvjet", help="name prefix of the kernel launched once a step")
    p.add_argument("--skip", type=int, default=10, help="steps left out at each end")
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    columns = [step_summary(kernels(t), args.step_kernel, args.skip) for t in args.traces]
    for t, (period, busy, _) in zip(args.traces, columns):
        print(f"{t}: step period {period:.0f} us, device busy {busy:.0f} us a step")
    names = sorted({n for _, _, c in columns for n in c}, key=lambda n: -sum(c.get(n, (0, 0))[0] for _, _, c in columns))
    print(f"{'kernel (us a step, launches a step)':<64}" + "".join(f"{i:>16}" for i in range(len(columns))))
    for n in names[:args.top]:
        print(f"{n[:62]:<64}" + "".join(f"{c.get(n, (0, 0))[0]:>10.0f} {c.get(n, (0, 0))[1]:>5.0f}" for _, _, c in columns))


if __name__ == "__main__":
    main()
