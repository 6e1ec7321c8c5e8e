"""Per-step device time by kernel from a rank's Chrome trace (``decode_profile.py --trace-dir``).

The profiler's summary sums a kernel over the whole generation, prefill included (eager and slow
under the profiler). This reads the trace itself: decode steps are cut at each launch of the LM
head GEMM (one a step, named by ``--step-kernel``), and for the steps in the middle of the
generation it prints the step period (start to start), the time the device was busy (kernels
merged, so PDL overlaps count once), and each kernel's time and count per step.

With PDL a kernel starts while the one before still runs and waits for it inside, so kernel times
add up past the period. The "exposed" columns split the period instead: each kernel is charged
from the end of the latest kernel that ended before it (or its own start, after an idle gap) to
its own end. In a chain where every kernel waits for the one before, that is the time the step
got longer by it; idle time is reported apart. (Session 15: the 13B TP=2 step's GEMMs were
exposed 1459 us of 2505, the fused all-reduce + norm 502.)

    python benchmarks/trace_steps.py out/tp1/rank0.json out/tp2/rank0.json
    python benchmarks/trace_steps.py out/tp2/rank0.json --sequence 40   # one step, kernel by kernel
    python benchmarks/trace_steps.py out/tp2/rank0.json --segments _one_shot   # a layer's kernels, by place

``--segments PREFIX`` cuts every step of the window at each launch of a kernel named ``PREFIX...``
(a transformer block's norms) and prints, for each kind of segment (the same kernels in the same
order), the median exposed time of the kernel at each place: which of a layer's kernels grows
between two runs, over all layers of all steps rather than one step's first few.

``--gaps`` prints the median idle time between each pair of consecutive kernels (the next one's
start less the latest end before it) over the window. Without PDL a CUDA graph's kernels run back
to back and that gap is the device's own cost of starting the next kernel. (Session 32: 0.10 us a
kernel on the 13B TP=2 graph's rank 0 and 0.42 us on rank 1, on every pair; with PDL the same time
shows inside rank 1's kernels, and rank 0 waits it out in the all-reduce. Session 33: that gap is
the profiler's. It follows which CUDA contexts a process holds, and the untraced graph does not
change with it: judge a change by untraced times.)
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import statistics
from collections.abc import Iterator


def kernels(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                  key=lambda e: e["ts"])


def _step_marks(ks: list[dict], step_kernel: str, skip: int) -> list[int]:
    """Indices of the launches named ``step_kernel...`` (one a step), with enough of them to leave a
    step after skipping ``skip`` at each end."""
    marks = [i for i, e in enumerate(ks) if e["name"].startswith(step_kernel)]
    if len(marks) < 2 * skip + 2:
        raise SystemExit(f"only {len(marks)} '{step_kernel}' launches: too few steps to skip {skip} at each end")
    return marks


def _exposed(events: list[dict], end: float) -> Iterator[tuple[dict, float]]:
    """Each of ``events`` (in launch order) with its exposed us: how far it ends past the latest
    end before it (``end`` at first), none if it ended within an earlier kernel."""
    for e in events:
        stop = e["ts"] + e["dur"]
        yield e, max(0.0, stop - max(end, e["ts"]))
        end = max(end, stop)


def step_summary(ks: list[dict], step_kernel: str, skip: int
                 ) -> tuple[float, float, float, dict[str, tuple[float, float, float]]]:
    """(median step period us, busy us a step, idle us a step, {kernel: (us a step, launches a
    step, exposed us a step)}) over the steps between the ``skip``-th mark and the ``skip``-th
    from the end."""
    marks = [ks[i]["ts"] for i in _step_marks(ks, step_kernel, skip)]
    lo, hi = marks[skip], marks[-skip - 1]
    steps = len(marks) - 2 * skip - 1
    periods = sorted(b - a for a, b in zip(marks[skip:-skip - 1], marks[skip + 1:-skip]))
    inside = [e for e in ks if lo <= e["ts"] < hi]
    by_name: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    for e in inside:
        by_name[e["name"]][0] += e["dur"] / steps
        by_name[e["name"]][1] += 1 / steps
    busy = idle = 0.0
    end = lo
    for e in sorted(inside, key=lambda e: e["ts"] + e["dur"]):   # in the order they ended
        start, stop = e["ts"], e["ts"] + e["dur"]
        if stop <= end:
            continue
        idle += max(0.0, start - end)
        busy += stop - max(start, end)
        by_name[e["name"]][2] += (stop - max(start, end)) / steps
        end = stop
    idle += max(0.0, hi - end)   # after the window's last kernel, up to the next step's mark
    return periods[len(periods) // 2], busy / steps, idle / steps, {k: tuple(v) for k, v in by_name.items()}


def step_sequence(ks: list[dict], step_kernel: str, count: int) -> list[tuple[str, float, float, float]]:
    """The first ``count`` kernels from the middle step's mark on, in launch order: (name, start,
    end, exposed) in us, times from the mark; exposed as in ``step_summary``."""
    marks = [i for i, e in enumerate(ks) if e["name"].startswith(step_kernel)]
    if not marks:
        raise SystemExit(f"no '{step_kernel}' launch in the trace")
    first = marks[len(marks) // 2]
    t0 = ks[first]["ts"]
    return [(e["name"], e["ts"] - t0, e["ts"] + e["dur"] - t0, exposed)
            for e, exposed in _exposed(ks[first:first + count], t0)]


def segment_medians(ks: list[dict], step_kernel: str, segment_kernel: str, skip: int
                    ) -> list[tuple[tuple[str, ...], int, list[float]]]:
    """(kernel names, occurrences, median exposed us at each place) of each kind of segment, most
    frequent first: the steps between the ``skip``-th mark and the ``skip``-th from the end, each cut
    before every launch whose name starts with ``segment_kernel``; exposed as in ``step_sequence``."""
    marks = _step_marks(ks, step_kernel, skip)
    groups: dict[tuple[str, ...], list[list[float]]] = collections.defaultdict(list)
    for a, b in zip(marks[skip:-skip - 1], marks[skip + 1:-skip]):
        names, times = [], []
        for e, exposed in _exposed(ks[a:b], ks[a]["ts"]):
            if e["name"].startswith(segment_kernel) and names:
                groups[tuple(names)].append(times)
                names, times = [], []
            names.append(e["name"])
            times.append(exposed)
        groups[tuple(names)].append(times)
    return sorted(((names, len(rows), [statistics.median(col) for col in zip(*rows)])
                   for names, rows in groups.items()), key=lambda g: -g[1])


def launch_gaps(ks: list[dict], step_kernel: str, skip: int) -> list[tuple[str, str, int, float, float]]:
    """(kernel, next kernel, count, median gap us, mean gap us) for each pair of consecutive launches
    in the steps between the ``skip``-th mark and the ``skip``-th from the end, most frequent first;
    a gap is the next launch's start less the latest end before it (negative: they overlapped)."""
    marks = _step_marks(ks, step_kernel, skip)
    window = ks[marks[skip]:marks[-skip - 1]]
    pairs: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    end = window[0]["ts"] + window[0]["dur"]
    for a, b in zip(window, window[1:]):
        pairs[(a["name"], b["name"])].append(b["ts"] - end)
        end = max(end, b["ts"] + b["dur"])
    return sorted(((a, b, len(g), statistics.median(g), statistics.fmean(g)) for (a, b), g in pairs.items()),
                  key=lambda r: -r[2])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+", help="rank traces (.json or .json.gz), one column each")
    p.add_argument("--step-kernel", default="nvjet", help="name prefix of the kernel launched once a step")
    p.add_argument("--skip", type=int, default=10, help="steps left out at each end")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--sequence", type=int, default=0, metavar="N",
                   help="instead: the first N kernels of the middle step, one a line (start, end, exposed)")
    p.add_argument("--segments", metavar="PREFIX",
                   help="instead: each step cut at the launches of PREFIX..., median exposed us by place")
    p.add_argument("--gaps", action="store_true",
                   help="instead: the median idle gap between each pair of consecutive kernels")
    args = p.parse_args()
    if args.gaps:
        for t in args.traces:
            print(f"{t}: gaps between consecutive kernels (count, median us, mean us)")
            for a, b, count, median, mean in launch_gaps(kernels(t), args.step_kernel, args.skip)[:args.top]:
                print(f"  {count:>6} {median:>7.2f} {mean:>7.2f}  {a[:30]} -> {b[:30]}")
        return
    if args.segments:
        for t in args.traces:
            print(f"{t}: median exposed us by place, steps cut at each '{args.segments}' launch")
            for names, count, medians in segment_medians(kernels(t), args.step_kernel, args.segments, args.skip):
                print(f"  {count:>5} x " + " | ".join(f"{n[:32]} {m:.2f}" for n, m in zip(names, medians)))
        return
    if args.sequence:
        for t in args.traces:
            print(f"{t}: {'kernel':<50}{'start':>9}{'end':>9}{'exposed':>9} (us from the step's mark)")
            for name, start, stop, exposed in step_sequence(kernels(t), args.step_kernel, args.sequence):
                print(f"  {name[:48]:<50}{start:>9.1f}{stop:>9.1f}{exposed:>9.1f}")
        return
    columns = [step_summary(kernels(t), args.step_kernel, args.skip) for t in args.traces]
    for t, (period, busy, idle, _) in zip(args.traces, columns):
        print(f"{t}: step period {period:.0f} us, device busy {busy:.0f} us a step, idle {idle:.0f}")
    names = sorted({n for *_, c in columns for n in c}, key=lambda n: -sum(c.get(n, (0, 0, 0))[0] for *_, c in columns))
    print(f"{'kernel (us a step, launches a step, exposed us a step)':<58}" + "".join(f"{i:>24}" for i in range(len(columns))))
    for n in names[:args.top]:
        print(f"{n[:56]:<58}" + "".join(f"{c.get(n, (0, 0, 0))[0]:>10.0f} {c.get(n, (0, 0, 0))[1]:>5.0f} "
                                        f"{c.get(n, (0, 0, 0))[2]:>7.0f}" for *_, c in columns))


if __name__ == "__main__":
    main()
