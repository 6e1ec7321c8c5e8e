"""Compile the AWQ wgmma kernel for sm_90 without a GPU and summarise its SASS (run as a script).

Gluon has no CPU interpreter, so on machines without a GPU this is what can be checked: that the
kernel builds with the installed Triton, and that its K loop has the structure it exists for:
each tile's HGMMAs issued asynchronously and followed by a wait that leaves one group in flight
(``WARPGROUP.DEPBAR.LE gsb0, 0x1``), so the next tile's unpack overlaps them, and no spills.

    python -m tests.wgmma_sass 128 256 [split]    # BLOCK_M BLOCK_N [with split-K] -> one JSON line
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import torch
import triton
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from pagedawq.kernels.awq_configs import WgmmaConfig
from pagedawq.kernels.awq_wgmma import BLOCK_K, awq_wgmma_kernel, shared_layouts


def sass(cfg: WgmmaConfig, split: bool = False, group: int = 128) -> list[str]:
    """The kernel's SASS instructions for ``cfg`` (compiled for sm_90), with or without split-K."""
    a_l, q_l, b_l = shared_layouts(cfg)
    x = torch.zeros(256, 4096, dtype=torch.float16)
    qw = torch.zeros(4096, 512, dtype=torch.int32)

    def desc_sig(t, block, layout):
        return native_specialize_impl(BaseBackend, TensorDescriptor.from_tensor(t, block, layout), False, True, True)[0]
    sig = {"x_desc": desc_sig(x, [cfg.block_m, BLOCK_K], a_l), "qw_desc": desc_sig(qw, [BLOCK_K, cfg.block_n // 8], q_l),
           "qz_ptr": "*i32", "s_ptr": "*fp16", "out_ptr": "*fp16", "ws_ptr": "*fp32", "cnt_ptr": "*i32",
           "M": "i32", "N": "i32", "K": "i32", "stride_om": "i32", "split_k": "i32", "G": "constexpr",
           "B_LAYOUT": "constexpr", "STAGES": "constexpr", "SPLIT": "constexpr", "num_warps": "constexpr"}
    src = GluonASTSource(awq_wgmma_kernel, sig, constexprs={"G": group, "B_LAYOUT": b_l, "STAGES": cfg.stages,
                                                            "SPLIT": split, "num_warps": cfg.num_warps})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": cfg.num_warps})
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        out = subprocess.run([nvdisasm, "-c", path], capture_output=True, text=True, check=True).stdout
    return [ln.split("*/", 1)[1].strip() for ln in out.splitlines() if "*/" in ln and ";" in ln]


def summary(lines: list[str]) -> dict[str, int]:
    return {"instructions": len(lines),
            "spill_stores": sum("STL" in ln for ln in lines),
            "hgmma": sum("HGMMA" in ln for ln in lines),
            "wait_one_in_flight": sum("WARPGROUP.DEPBAR.LE gsb0, 0x1" in ln for ln in lines),
            "wait_all": sum("WARPGROUP.DEPBAR.LE gsb0, 0x0" in ln for ln in lines),
            "tma_loads": sum("UTMALDG" in ln for ln in lines),
            "atomics": sum(ln.split()[0].startswith(("ATOM", "RED")) or " ATOM" in ln or " RED" in ln for ln in lines)}


if __name__ == "__main__":
    block_m, block_n = int(sys.argv[1]), int(sys.argv[2])
    print(json.dumps(summary(sass(WgmmaConfig(block_m, block_n), split=sys.argv[3:] == ["split"]))))
