"""Compile a kernel that starts with ``pdl_start`` for sm_90 without a GPU and print its SASS opcodes
as JSON (run as a script, outside the Triton interpreter: tests/test_pdl.py).

    python -m tests.pdl_sass 1       # PDL on (0: off)
    python -m tests.pdl_sass norm    # the fused add + RMSNorm of a 5120-wide row, PDL on
"""
from __future__ import annotations

import json
import sys

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from pagedawq.kernels.fused_ops import _rms_norm_kernel, row_warps
from pagedawq.kernels.pdl import pdl_start
from tests.wgmma_sass import disassemble


@triton.jit
def copy_kernel(src, dst, PDL: tl.constexpr):
    pdl_start(PDL)
    tl.store(dst + tl.arange(0, 128), tl.load(src + tl.arange(0, 128)))


def sass_ops(pdl: bool) -> list[str]:
    src = ASTSource(copy_kernel, {"src": "*fp32", "dst": "*fp32", "PDL": "constexpr"}, constexprs={"PDL": pdl})
    return [ln.split()[0] for ln in disassemble(triton.compile(src, target=GPUTarget("cuda", 90, 32)))]


def norm_sass_ops() -> list[str]:
    """The fused add + RMSNorm (``fused_ops.fused_add_rms_norm``'s kernel) for a 5120-wide fp16 row."""
    block = 8192
    sig = {name: "*fp16" for name in ("x_ptr", "residual_ptr", "residual_out_ptr", "weight_ptr", "out_ptr")}
    sig.update({name: "i32" for name in ("stride_x", "stride_r", "stride_ro", "stride_o", "hidden", "stride_split")})
    sig.update(eps="fp32", BLOCK="constexpr", ADD_RESIDUAL="constexpr", PDL="constexpr", SPLITS="constexpr")
    src = ASTSource(_rms_norm_kernel, sig,
                    constexprs={"BLOCK": block, "ADD_RESIDUAL": True, "PDL": True, "SPLITS": 0})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": row_warps(block)})
    return [ln.split()[1] if ln.startswith("@") else ln.split()[0] for ln in disassemble(compiled)]   # no predicate


if __name__ == "__main__":
    print(json.dumps(norm_sass_ops() if sys.argv[1] == "norm" else sass_ops(sys.argv[1] == "1")))
