"""Compile a kernel that starts with ``pdl_start`` for sm_90 without a GPU and print its SASS opcodes
as JSON (run as a script, outside the Triton interpreter: tests/test_pdl.py).

    python -m tests.pdl_sass 1    # PDL on (0: off)
"""
from __future__ import annotations

import json
import sys

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from pagedawq.kernels.pdl import pdl_start
from tests.wgmma_sass import disassemble


@triton.jit
def copy_kernel(src, dst, PDL: tl.constexpr):
    pdl_start(PDL)
    tl.store(dst + tl.arange(0, 128), tl.load(src + tl.arange(0, 128)))


def sass_ops(pdl: bool) -> list[str]:
    src = ASTSource(copy_kernel, {"src": "*fp32", "dst": "*fp32", "PDL": "constexpr"}, constexprs={"PDL": pdl})
    return [ln.split()[0] for ln in disassemble(triton.compile(src, target=GPUTarget("cuda", 90, 32)))]


if __name__ == "__main__":
    print(json.dumps(sass_ops(sys.argv[1] == "1")))
