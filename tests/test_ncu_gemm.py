"""benchmarks/ncu_gemm.py's --config: the "wgmma_t" config a profiled launch runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import ncu_gemm  # noqa: E402

from pagedawq.kernels.awq_configs import WgmmaTConfig  # noqa: E402


def test_config_strings_name_one_warpgroup_and_warp_specialised_configs():
    assert ncu_gemm.parse_config("64,8,4,2,4") == WgmmaTConfig(64, 8, stages=4, split_k=2, k_tiles=4)
    assert ncu_gemm.parse_config("64,8,8,1,4,2,2") == WgmmaTConfig(64, 8, stages=8, split_k=1, k_tiles=4, consumers=2,
                                                                   k_phases=2)


@pytest.mark.parametrize("text", ["64,8,4,2", "64,8,4,2,4,2,2,1"])
def test_a_config_string_of_the_wrong_length_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="5 to 7 integers"):
        ncu_gemm.parse_config(text)
