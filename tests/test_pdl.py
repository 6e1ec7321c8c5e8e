"""Programmatic dependent launch (pagedawq/kernels/pdl.py) without a GPU: when it is used, and that a
kernel starting with ``pdl_start`` compiles for sm_90 to the two grid-dependency instructions.
(The GPU tests: tests/test_awq_wgmma_t.py's norm -> GEMM chain in a CUDA graph, and the engine.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pagedawq.kernels.pdl import MAX_TOKENS, launch_options, use_pdl

ROOT = Path(__file__).resolve().parents[1]


def test_used_only_for_small_launches_on_a_hopper_gpu():
    assert not use_pdl(torch.device("cpu"), 1)
    # the token count is checked first: a large launch never asks the device
    assert not use_pdl(torch.device("cuda"), MAX_TOKENS + 1)
    assert launch_options(False) == {}
    assert launch_options(True) == {"launch_pdl": True}


def test_this_triton_has_the_launch_option():
    from triton.backends.nvidia.compiler import CUDAOptions
    assert "launch_pdl" in CUDAOptions.__dataclass_fields__


@pytest.mark.parametrize("pdl", [False, True])
def test_pdl_start_compiles_to_the_grid_dependency_instructions(pdl):
    """Compiled for sm_90 in a process without the Triton interpreter (no GPU needed)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tests.pdl_sass", "1" if pdl else "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ops = json.loads(proc.stdout.strip().splitlines()[-1])
    # launch_dependents (PREEXIT), then wait (ACQBULK), before the first load
    assert (ops.count("PREEXIT"), ops.count("ACQBULK")) == ((1, 1) if pdl else (0, 0))
    if pdl:
        first_load = next(i for i, op in enumerate(ops) if op.startswith("LDG"))
        assert ops.index("PREEXIT") < ops.index("ACQBULK") < first_load


def test_the_norm_loads_its_weight_before_it_waits_for_the_kernel_before():
    """The RMSNorm weight is no kernel's output: its loads (from DRAM at batch 1, where the step's
    weight stream has evicted it) are issued before the grid-dependency wait, and x and the
    residual, the previous kernel's outputs, only after it (13B TP=1 step 25 µs faster, session 36)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tests.pdl_sass", "norm"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ops = json.loads(proc.stdout.strip().splitlines()[-1])
    wait = ops.index("ACQBULK")
    before, after = ops[:wait], ops[wait:]
    # the 8192-wide block over 512 threads: 16 elements a thread of each of weight, x and residual
    assert sum(op.startswith("LDG") for op in before) == 16
    assert sum(op.startswith("LDG") for op in after) == 32
    assert not any(op.startswith("STG") for op in before)
