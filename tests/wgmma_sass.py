"""Compile the AWQ wgmma_t kernel for sm_90 without a GPU and summarise its SASS (run as a script).

Gluon has no CPU interpreter, so on machines without a GPU this is what can be checked: that the
kernel builds with the installed Triton, and that its K loop has the structure it depends on:
each step's HGMMAs waited for (``WARPGROUP.DEPBAR.LE gsb0, 0x0``) before anything writes their A
registers again, and no spills.

    python -m tests.wgmma_sass 64 64 [split] [silu] [kt=2]   # BLOCK_N BLOCK_T, K tiles a step -> one JSON line
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from pagedawq.kernels import awq_wgmma_t
from pagedawq.kernels.awq_configs import WgmmaTConfig

_SCALARS = {"out_ptr": "*fp16", "ws_ptr": "*fp32", "cnt_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32",
            "stride_om": "i32", "split_k": "i32"}


def _desc(t: torch.Tensor, block: list[int], layout) -> str:
    return native_specialize_impl(BaseBackend, TensorDescriptor.from_tensor(t, block, layout), False, True, True)[0]


def _compile(kernel, sig: dict, constexprs: dict, num_warps: int) -> list[str]:
    sig = {**sig, **{name: "constexpr" for name in constexprs}}
    src = GluonASTSource(kernel, sig, constexprs=constexprs)
    return disassemble(triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps}))


def disassemble(compiled) -> list[str]:
    """The SASS instructions of a kernel compiled by ``triton.compile`` (nvdisasm, shipped with Triton)."""
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        out = subprocess.run([nvdisasm, "-c", path], capture_output=True, text=True, check=True).stdout
    return [ln.split("*/", 1)[1].strip() for ln in out.splitlines() if "*/" in ln and ";" in ln]


def sass_t(cfg: WgmmaTConfig, split: bool = False, group: int = 128, pdl: bool = True, silu: bool = False
           ) -> list[str]:
    """SASS of ``awq_wgmma_t_kernel`` for ``cfg`` (K = N = 4096)."""
    k = n = 4096
    kt = awq_wgmma_t.k_tiles_per_step(k, group, cfg)
    x_l, w_l, z_l = awq_wgmma_t.shared_layouts(cfg, kt)
    x3 = torch.zeros(256, k, dtype=torch.float16).as_strided((k // 64, 256, 64), (64, k, 1))
    words = torch.zeros(k // 64, n // 16, awq_wgmma_t.BAND_WORDS, dtype=torch.int32)
    zs = torch.zeros(k // group, n, dtype=torch.int32)
    sig = {"x_desc": _desc(x3, [kt, cfg.block_t, awq_wgmma_t.BLOCK_K], x_l),
           "w_desc": _desc(words, [kt, cfg.block_n // awq_wgmma_t.BAND, awq_wgmma_t.BAND_WORDS], w_l),
           "zs_desc": _desc(zs, [max(1, 64 * kt // group), cfg.block_n], z_l), **_SCALARS}
    return _compile(awq_wgmma_t.awq_wgmma_t_kernel, sig,
                    {"G": group, "W_LAYOUT": awq_wgmma_t.words_layout(cfg.block_n), "STAGES": cfg.stages,
                     "SPLIT": split, "PDL": pdl, "SILU": silu, "num_warps": cfg.num_warps}, cfg.num_warps)


def a_register_hazards(lines: list[str]) -> list[str]:
    """Instructions that write a register of a register-sourced wgmma's A operand (HGMMA ..., Ra, ...:
    Ra..Ra+3) between that HGMMA and the next ``WARPGROUP.DEPBAR`` (the kernels using it wait for
    every group there). wgmma reads A asynchronously; ptxas does not keep such registers from being
    reused (found on the H100: wrong sums), so the kernel's structure has to, and this checks it."""
    found, live = [], []
    for ln in lines:
        ins = re.sub(r"^@!?U?P\w+\s+", "", ln)
        op = ins.split()[0]
        if op.startswith("HGMMA"):
            m = re.search(r"HGMMA\S*\s+R\d+,\s+R(\d+),", ins)
            if m:
                live.append(range(int(m.group(1)), int(m.group(1)) + 4))
        elif "DEPBAR" in op:
            live = []
        elif live and not op.startswith(("ST", "RED", "ATOM")):
            m = re.match(r"\S+\s+R(\d+)", ins)
            if m:
                width = 4 if ".128" in op else 2 if (".64" in op or ".WIDE" in op) else 1
                written = range(int(m.group(1)), int(m.group(1)) + width)
                if any(set(written) & set(a) for a in live):
                    found.append(ln)
    return found


def summary(lines: list[str]) -> dict[str, int]:
    return {"instructions": len(lines),
            "a_register_hazards": len(a_register_hazards(lines)),
            "spill_stores": sum("STL" in ln for ln in lines),
            "hgmma": sum("HGMMA" in ln for ln in lines),
            "wait_all": sum("WARPGROUP.DEPBAR.LE gsb0, 0x0" in ln for ln in lines),
            "tma_loads": sum("UTMALDG" in ln for ln in lines),
            "shared_stores": sum(ln.split()[0].startswith(("STS", "STSM")) or " STS" in ln for ln in lines),
            "atomics": sum(ln.split()[0].startswith(("ATOM", "RED")) or " ATOM" in ln or " RED" in ln for ln in lines),
            # griddepcontrol.launch_dependents / .wait (programmatic dependent launch)
            "pdl_triggers": sum(ln.split()[0] == "PREEXIT" for ln in lines),
            "pdl_waits": sum(ln.split()[0] == "ACQBULK" for ln in lines)}


if __name__ == "__main__":
    block_n, block_t = int(sys.argv[1]), int(sys.argv[2])
    split = "split" in sys.argv[3:]
    kt = int(next((v[3:] for v in sys.argv[3:] if v.startswith("kt=")), 1))
    lines = sass_t(WgmmaTConfig(block_n, block_t, k_tiles=kt), split, silu="silu" in sys.argv[3:])
    print(json.dumps(summary(lines)))
