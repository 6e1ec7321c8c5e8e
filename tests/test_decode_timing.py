"""benchmarks/common.decode_timing: the steady decode step from the host times after each step, as a
mean over the middle half and as its median interval (which one stall does not move)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402


def test_steady_pace_mean_and_median_of_the_middle_half():
    steps, first, last = 16, 4, 12
    marks = [0.010 + 0.002 * i for i in range(steps)]          # after step i + 1: 2 ms a step
    for i in range(7, steps):                                   # one 3 ms stall before step 8 ends
        marks[i] += 0.003
    t = common.steady_pace(marks, first, last, total=marks[-1] + 0.001, n_out=steps)
    assert t.step == pytest.approx(0.002 + 0.003 / (last - first))
    assert t.median_step == pytest.approx(0.002)
    assert t.fixed == pytest.approx(marks[-1] + 0.001 - steps * t.step)
    calm = common.steady_pace([0.010 + 0.002 * i for i in range(steps)], first, last, 0.045, steps)
    assert calm.step == pytest.approx(calm.median_step) == pytest.approx(0.002)


def test_decode_timing_on_the_engine(tiny_llama_dir):
    from pagedawq import LLM
    with LLM(str(tiny_llama_dir), device="cpu", dtype="float32", skip_tokenizer_init=True,
             kv_cache_memory_bytes=8 * 2**20) as llm:
        t = common.decode_timing(llm, 2, 8, 16)
        assert 0 < t.median_step and 0 < t.step
        assert t.step / 3 < t.median_step < 3 * t.step   # the same steps, measured two ways
        step, fixed, median = t   # a tuple, as callers index it
        assert (step, fixed, median) == (t.step, t.fixed, t.median_step)
        with pytest.raises(ValueError, match="n_out >= 4"):
            common.decode_timing(llm, 1, 8, 3)
