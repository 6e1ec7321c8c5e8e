"""Compile a kernel that starts with ``pdl_start`` for sm_90 without a GPU and print its SASS opcodes
as JSON (run as a script, outside the Triton interpreter: tests/test_pdl.py).

    python -m tests.pdl_sass 1    # PDL on (0: off)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from pagedawq.kernels.pdl import pdl_start


@triton.jit
def copy_kernel(src, dst, PDL: tl.constexpr):
    pdl_start(PDL)
    tl.store(dst + tl.arange(0, 128), tl.load(src + tl.arange(0, 128)))


def sass_ops(pdl: bool) -> list[str]:
    src = ASTSource(copy_kernel, {"src": "*fp32", "dst": "*fp32", "PDL": "constexpr"}, constexprs={"PDL": pdl})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        sass = subprocess.run([nvdisasm, "-c", path], capture_output=True, text=True, check=True).stdout
    return [ln.split("*/", 1)[1].split()[0] for ln in sass.splitlines() if "*/" in ln and ";" in ln]


if __name__ == "__main__":
    print(json.dumps(sass_ops(sys.argv[1] == "1")))
