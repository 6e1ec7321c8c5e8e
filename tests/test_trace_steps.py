"""benchmarks/trace_steps.py: a decode step's kernels, cut at the LM head's launches, with each
kernel's time, count and "exposed" time (the step period split along the kernels' end times, idle
gaps apart), on a synthetic Chrome trace whose answer is known."""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import trace_steps  # noqa: E402


def _kernel(name: str, ts: float, dur: float) -> dict:
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur}


def _steps(n: int) -> list[dict]:
    """n steps of 100 us: the head 0-10, a GEMM 12-40 whose PDL successor (a norm) starts at 35 and
    ends at 45, a GEMM 44-90 that ends last; idle 90-100 (and 10-12)."""
    events = []
    for i in range(n):
        t = 100.0 * i
        events += [_kernel("head", t, 10), _kernel("gemm_a", t + 12, 28), _kernel("norm", t + 35, 10),
                   _kernel("gemm_b", t + 44, 46)]
    events.append({"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 5.0, "dur": 1000.0})   # not a kernel
    return events


@pytest.mark.parametrize("gz", [False, True])
def test_step_summary_splits_the_period_by_end_times(tmp_path, gz):
    path = tmp_path / ("trace.json.gz" if gz else "trace.json")
    data = json.dumps({"traceEvents": _steps(30)})
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(data)
    else:
        path.write_text(data)
    period, busy, idle, by_name = trace_steps.step_summary(trace_steps.kernels(str(path)), "head", skip=5)
    assert period == 100.0
    assert by_name["gemm_a"][:2] == pytest.approx((28.0, 1.0)) and by_name["norm"][:2] == pytest.approx((10.0, 1.0))
    # exposed: head 10, gemm_a 12..40 = 28, norm 40..45 = 5, gemm_b 45..90 = 45; idle 2 + 10
    exposed = {name: round(v[2], 6) for name, v in by_name.items()}   # averaged over 19 steps
    assert exposed == {"head": 10.0, "gemm_a": 28.0, "norm": 5.0, "gemm_b": 45.0}
    assert busy == pytest.approx(88.0) and idle == pytest.approx(12.0)
    assert busy + idle == pytest.approx(period)


def test_sequence_lists_one_step_in_launch_order():
    rows = trace_steps.step_sequence([e for e in _steps(9) if e["cat"] == "kernel"], "head", 4)
    assert [r[0] for r in rows] == ["head", "gemm_a", "norm", "gemm_b"]
    assert rows[0][1] == 0.0   # times from the middle step's head launch
    assert [r[3] for r in rows] == [10.0, 28.0, 5.0, 45.0]


def test_segments_group_the_steps_pieces_by_their_kernels():
    """Cut before each "gemm" launch, every step is the head alone, then (gemm_a, norm), then gemm_b:
    three kinds of segment, one of each a step, with the exposed times of the sequence."""
    ks = [e for e in _steps(12) if e["cat"] == "kernel"]
    groups = trace_steps.segment_medians(ks, "head", "gemm", skip=2)
    assert {names: (count, medians) for names, count, medians in groups} == {
        ("head",): (7, [10.0]), ("gemm_a", "norm"): (7, [28.0, 5.0]), ("gemm_b",): (7, [45.0])}


def test_gaps_pair_each_kernel_with_the_next():
    """Each step: head 0-10, gemm_a 12-40, norm 35-45 (overlaps gemm_a by 5), gemm_b 44-90 (1 us
    before norm's end: -1), then the next head 10 us after gemm_b's end."""
    ks = [e for e in _steps(12) if e["cat"] == "kernel"]
    rows = {(a, b): (count, median) for a, b, count, median, _ in trace_steps.launch_gaps(ks, "head", skip=2)}
    assert rows == {("head", "gemm_a"): (7, 2.0), ("gemm_a", "norm"): (7, -5.0), ("norm", "gemm_b"): (7, -1.0),
                    ("gemm_b", "head"): (6, 10.0)}


def test_too_few_steps_is_a_clear_error():
    with pytest.raises(SystemExit, match="too few steps"):
        trace_steps.step_summary([e for e in _steps(3) if e["cat"] == "kernel"], "head", skip=5)
