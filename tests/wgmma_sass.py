"""Compile the AWQ wgmma_t kernels for sm_90 without a GPU and summarise their SASS (run as a script).

Gluon has no CPU interpreter, so on machines without a GPU this is what can be checked: that the
kernel builds with the installed Triton, and that its K loop has the structure it depends on:
each step's HGMMAs waited for (``WARPGROUP.DEPBAR.LE gsb0, 0x0``) before anything writes their A
registers again, and no spills.

    python -m tests.wgmma_sass 64 64 [split [defer]] [silu] [kt=2] [cluster=4] [stream]   # BLOCK_N BLOCK_T, K tiles a step -> one JSON line
    python -m tests.wgmma_sass ws 64 8 nc=1 kc=2 stages=8 kt=4 split [defer] pdl [stream]   # the warp-specialised kernel

``defer``: split-K partials left to the consumer (``DEFER``); ``cluster=S``: the S K slices summed as a
cluster (``CLUSTER``); ``stream``: the weights marked for the L2 evict-first hint (``STREAM_W``).
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

from pagedawq.kernels import awq_wgmma_t
from pagedawq.kernels.awq_configs import WgmmaTConfig, k_tiles_per_step

_SCALARS = {"out_ptr": "*fp16", "ws_ptr": "*fp32", "cnt_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32",
            "stride_om": "i32", "split_k": "i32"}


def _descs(cfg: WgmmaTConfig, group: int, k: int = 4096, n: int = 4096, m: int = 256) -> dict[str, str]:
    """The signature types of the kernels' three TMA descriptors for ``cfg`` on a K x N layer."""
    x = torch.zeros(m, k, dtype=torch.float16)
    words = torch.zeros(k // 64 * (n // 16), awq_wgmma_t.BAND_WORDS, dtype=torch.int32)
    zs = torch.zeros(k // group, n, dtype=torch.int32)
    descs = awq_wgmma_t.descriptors(x, words, zs, cfg, k_tiles_per_step(k, group, cfg))
    return {name: native_specialize_impl(BaseBackend, d, False, True, True)[0]
            for name, d in zip(("x_desc", "w_desc", "zs_desc"), descs)}


def _compile(kernel, sig: dict, constexprs: dict, num_warps: int, **options):
    sig = {**sig, **{name: "constexpr" for name in constexprs}}
    src = GluonASTSource(kernel, sig, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, **options})


def _nvdisasm(compiled) -> str:
    nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        return subprocess.run([nvdisasm, "-c", path], capture_output=True, text=True, check=True).stdout


def disassemble(compiled) -> list[str]:
    """The SASS instructions of a kernel compiled by ``triton.compile`` (nvdisasm, shipped with Triton)."""
    return disassemble_labelled(compiled)[0]


def disassemble_labelled(compiled) -> tuple[list[str], dict[str, int]]:
    """The SASS instructions, and the index of the instruction each branch label stands before."""
    lines, labels = [], {}
    for ln in _nvdisasm(compiled).splitlines():
        if m := re.match(r"^(\.L_x_\d+):", ln):
            labels[m.group(1)] = len(lines)
        elif "*/" in ln and ";" in ln:
            lines.append(ln.split("*/", 1)[1].strip())
    return lines, labels


def sass_t(cfg: WgmmaTConfig, split: bool = False, group: int = 128, pdl: bool = True, silu: bool = False,
           defer: bool = False, cluster: int = 1, push: bool = False, stream_w: bool = False) -> list[str]:
    """SASS of ``awq_wgmma_t_kernel`` for ``cfg`` (K = N = 4096); ``cluster``: its K slices summed as
    a cluster of that many CTAs; ``push``: the output pushed to 2 ranks' slots (rank 0), the push
    table standing in for the output pointers as ``wgmma_t_gemm_pushed`` passes it."""
    scalars = {**_SCALARS, "cluster_smem": "i32", "push_ptr": "i32"}
    constexprs = {"G": group, "W_LAYOUT": awq_wgmma_t.words_layout(cfg.block_n), "STAGES": cfg.stages,
                  "SPLIT": split or cluster > 1, "PDL": pdl, "SILU": silu, "num_warps": cfg.num_warps,
                  "DEFER": defer, "CLUSTER": cluster, "PUSH_RANK": 0, "PUSH_WORLD": 0, "STREAM_W": stream_w}
    if push:
        scalars.update(out_ptr="*i64", ws_ptr="*i64", cnt_ptr="*i64", push_ptr="*i64")
        constexprs.update(PUSH_RANK=0, PUSH_WORLD=2)
    return disassemble(_compile(awq_wgmma_t.awq_wgmma_t_kernel, {**_descs(cfg, group), **scalars}, constexprs,
                                cfg.num_warps))


def sass_ws(cfg: WgmmaTConfig, group: int = 128, silu: bool = False, split: bool = False, pdl: bool = False,
            k: int = 4096, n: int = 4096, m: int = 256, defer: bool = False, cluster: int = 1,
            stream_w: bool = False) -> tuple[list[str], dict[str, int]]:
    """Labelled SASS of ``awq_wgmma_t_ws_kernel`` for ``cfg`` on a K x N layer, with its launch register cap."""
    from pagedawq.kernels import awq_wgmma_t_ws as ws
    constexprs = {"G": group, "STAGES": cfg.stages, "NC": cfg.channel_groups, "KC": cfg.k_phases,
                  "SPLIT": split or cluster > 1, "PDL": pdl, "SILU": silu,
                  "CONSUMER_REGS": ws.consumer_regs(cfg.consumers), "num_warps": cfg.num_warps, "DEFER": defer,
                  "CLUSTER": cluster, "STREAM_W": stream_w}
    compiled = _compile(ws.awq_wgmma_t_ws_kernel, {**_descs(cfg, group, k, n, m), **_SCALARS, "cluster_smem": "i32"},
                        constexprs, cfg.num_warps, maxnreg=ws.max_regs(cfg.consumers))
    return disassemble_labelled(compiled)


def _unpredicated(ln: str) -> str:
    return re.sub(r"^@!?U?P\w+\s+", "", ln)


def mma_loops(lines: list[str], labels: dict[str, int]) -> list[list[str]]:
    """The innermost loops holding HGMMAs (a kernel's K loops): bodies of conditional backward
    branches (unconditional ones are Triton's partition dispatch and ptxas's mbarrier retry stubs)."""
    loops = [(labels[m.group(1)], end) for end, ln in enumerate(lines)
             if (m := re.match(r"@!?P\d+\s+BRA `\((\.L_x_\d+)\)", ln)) and labels.get(m.group(1), end + 1) <= end]
    loops = [(a, b) for a, b in loops if any("HGMMA" in ln for ln in lines[a:b + 1])]
    return [lines[a:b + 1] for a, b in loops
            if not any(a <= a2 and b2 <= b and (a2, b2) != (a, b) for a2, b2 in loops)]


def ws_summary(lines: list[str], labels: dict[str, int]) -> dict:
    """What the warp-specialised kernel depends on: registers moved by setmaxnreg, no spills, no write
    to a running wgmma's A registers, and in each consumer's K loop one full wgmma wait and no
    CTA-wide barrier (``BAR.SYNC 0x..`` without a thread count; ``BAR.SYNC id, 0x80`` is one
    warpgroup's, which does not couple the consumers)."""
    def barriers(body: list[str]) -> list[str]:
        return [_unpredicated(ln).rstrip(" ;") for ln in body if _unpredicated(ln).startswith("BAR.")]
    return {"instructions": len(lines), "setmaxnreg": sum("SETMAXREG" in ln for ln in lines),
            "spills": sum(ln.split()[0] in ("STL", "LDL") or " STL" in ln or " LDL" in ln for ln in lines),
            "a_register_hazards": len(a_register_hazards(lines)), "tma_loads": sum("UTMALDG" in ln for ln in lines),
            "hinted_tma_loads": sum("UTMALDG" in ln and "desc[" in ln for ln in lines), "atomics": atomics(lines), **cluster_counts(lines),
            "loops": [{"hgmma": sum("HGMMA" in ln for ln in body),
                       "wait_all": sum("WARPGROUP.DEPBAR.LE gsb0, 0x0" in ln for ln in body),
                       "cta_barriers": sum(not re.search(r"0x\w+, 0x\w+$", ln) for ln in barriers(body))}
                      for body in mma_loops(lines, labels)]}


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


def atomics(lines: list[str]) -> int:
    return sum(ln.split()[0].startswith(("ATOM", "RED")) or " ATOM" in ln or " RED" in ln for ln in lines)


def cluster_counts(lines: list[str]) -> dict[str, int]:
    """barrier.cluster.arrive / .wait, st.async to a peer's shared memory, GPU-scope memory barriers."""
    ops = [ln.split()[0] for ln in lines]
    return {"cluster_arrives": ops.count("UCGABAR_ARV"),
            "cluster_waits": sum(op.startswith("UCGABAR_WAIT") for op in ops),
            "async_shared_stores": sum(op.startswith("STAS") for op in ops),
            "gpu_membars": sum(op in ("MEMBAR.ALL.GPU", "MEMBAR.SC.GPU") for op in ops)}


def summary(lines: list[str]) -> dict[str, int]:
    return {"instructions": len(lines),
            "a_register_hazards": len(a_register_hazards(lines)),
            "spill_stores": sum("STL" in ln for ln in lines),
            "hgmma": sum("HGMMA" in ln for ln in lines),
            "hmul2": sum(ln.split()[0].startswith("HMUL2") or " HMUL2" in ln for ln in lines),
            "wait_all": sum("WARPGROUP.DEPBAR.LE gsb0, 0x0" in ln for ln in lines),
            "tma_loads": sum("UTMALDG" in ln for ln in lines),
            # a TMA load with an L2 cache policy names it as a last operand, desc[URn]
            "hinted_tma_loads": sum("UTMALDG" in ln and "desc[" in ln for ln in lines),
            "shared_stores": sum(ln.split()[0].startswith(("STS", "STSM")) or " STS" in ln for ln in lines),
            "atomics": atomics(lines),
            **cluster_counts(lines),
            # griddepcontrol.launch_dependents / .wait (programmatic dependent launch)
            "pdl_triggers": sum(ln.split()[0] == "PREEXIT" for ln in lines),
            "pdl_waits": sum(ln.split()[0] == "ACQBULK" for ln in lines)}


def push_summary(lines: list[str]) -> dict:
    """``summary`` and, for a pushed output, its global stores and loads: the tile's stores (two
    ranks' slots, no other output), the table and epoch loads (the epoch's volatile: .STRONG)."""
    stores = [ln.split()[0] for ln in (_unpredicated(ln) for ln in lines) if ln.startswith("STG")]
    loads = [ln.split()[0] for ln in (_unpredicated(ln) for ln in lines) if ln.startswith("LDG")]
    return {**summary(lines), "global_stores": stores, "global_loads": loads}


if __name__ == "__main__":
    args = sys.argv[1:]
    kt = int(next((v[3:] for v in args if v.startswith("kt=")), 1))
    if args[0] == "ws":   # ws BLOCK_N BLOCK_T [nc=2] [kc=1] [stages=3] [split] [pdl] [silu] [kt=..]
        opt = {key: int(v.split("=")[1]) for key in ("nc", "kc", "stages") for v in args if v.startswith(key + "=")}
        nc, kc = opt.get("nc", 2), opt.get("kc", 1)
        cfg = WgmmaTConfig(int(args[1]), int(args[2]), stages=opt.get("stages", 3), k_tiles=kt, consumers=nc * kc,
                           k_phases=kc)
        s = ws_summary(*sass_ws(cfg, silu="silu" in args, split="split" in args, pdl="pdl" in args,
                                m=max(8, cfg.block_t), defer="defer" in args,
                                cluster=int(next((v[8:] for v in args if v.startswith("cluster=")), 1)),
                                stream_w="stream" in args))
        print(json.dumps(s))
    else:
        lines = sass_t(WgmmaTConfig(int(args[0]), int(args[1]), k_tiles=kt), "split" in args, silu="silu" in args,
                       defer="defer" in args, cluster=int(next((v[8:] for v in args if v.startswith("cluster=")), 1)),
                       push="push" in args, stream_w="stream" in args)
        print(json.dumps(push_summary(lines) if "push" in args else summary(lines)))
