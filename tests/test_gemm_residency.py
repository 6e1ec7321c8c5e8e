"""benchmarks/gemm_residency.py: its variant parser and the fixed + bytes / rate line."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

gemm_residency = pytest.importorskip("gemm_residency")


def test_variant_fields_parse_to_integers():
    assert gemm_residency.parse_variant("k_tiles=8") == {"k_tiles": 8}
    assert gemm_residency.parse_variant("stages=3,split_k=2") == {"stages": 3, "split_k": 2}


def test_line_recovers_fixed_cost_and_rate():
    # 3 us + MB / (2500 GB/s): 1 MB takes 0.4 us
    points = [(mb, 3.0 + 0.4 * mb) for mb in (2.0, 8.0, 20.0, 35.0)]
    assert gemm_residency.line(points) == "3.00 us + bytes / 2500 GB/s"
