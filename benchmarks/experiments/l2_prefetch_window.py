"""Does bringing a GEMM's weights into L2 during the kernels before it shorten a decode step?

A decode GEMM at M = 1 follows kernels that read almost nothing from DRAM (attention, norms,
all-reduces). Here a spin kernel of W us stands for them. Each iteration of a CUDA graph is
[spin W] [GEMM] over weight copies in rotation (more bytes than L2), every kernel launched with
PDL as in the engine (so the baseline already has the GEMM's own ring prefetch during the spin),
and the variants add, before the spin:
  pf B      ``prefetch_l2`` below (prefetch.global.L2::evict_last, budget B MB) in the chain;
  pf B n    the same without the evict_last hint;
  side      a kernel that loads every byte of the weights, on a second stream forked off the
            chain (a graph branch), so that the chain does not wait for it.
Printed: microseconds an iteration, whole (spin included), and the spin alone.

Outcome (H100, session 10, results/l2_prefetch_window_h100_session10_2026-11-26.log): no variant
shortened an iteration; larger budgets lengthened it (prefetch instructions hold the chain), and
the forked load kernel took SMs from the chain. A first version with one
``cp.async.bulk.prefetch.L2`` program held the next kernel back ~25 us (one SM's TMA unit
generates the requests one after another). A GEMM at M = 1 also ran about as long with its weights
resident in L2 (13B/TP2 o 5.59 vs 5.57 us): the small-M kernels are not bound by DRAM.

    PYTHONPATH=. python benchmarks/experiments/l2_prefetch_window.py
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait, globaltimer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernels import Layer, graph_time_us  # noqa: E402
from stream_floor import _stream_kernel  # noqa: E402

from pagedawq.kernels.awq_gemm import awq_gemm  # noqa: E402
from pagedawq.kernels.pdl import pdl_launch  # noqa: E402

LINE_BYTES = 128    # what one prefetch.global.L2 brings in
LINE = tl.constexpr(LINE_BYTES)
SLICES = 64         # equal slices of each tensor, the first part of each prefetched
BLOCK = 128         # lines a program requests at a time (one a thread)
MAX_TENSORS = 2     # weights and their zero/scale rows


def slice_plan(nbytes: int, budget: int, slices: int = SLICES) -> tuple[int, int]:
    """(slice stride, bytes prefetched from each slice's start), both multiples of ``LINE_BYTES``, for a
    tensor of ``nbytes`` bytes and at most ``budget`` bytes prefetched."""
    stride = -(-nbytes // (slices * LINE_BYTES)) * LINE_BYTES
    return stride, min(stride, budget // slices // LINE_BYTES * LINE_BYTES)


@triton.jit
def _prefetch_lines(base, nbytes, stride, length, lane, lanes, BLOCK: tl.constexpr, EVICT_LAST: tl.constexpr):
    """Lane ``lane`` of ``lanes`` requests lines lane, lane + lanes, ... of the ``length`` first bytes
    of every ``stride``-byte slice of ``[base, base + nbytes)``, one ``prefetch.global.L2`` each."""
    if length > 0:
        per = length // LINE
        slices = tl.cdiv(nbytes, stride)
        total = per * slices
        for i0 in range(0, total, lanes * BLOCK):
            i = i0 + lane * BLOCK + tl.arange(0, BLOCK)
            off = (i // per) * stride + (i % per) * LINE
            ok = (i < total) & (off < nbytes)
            addr = (base + tl.where(ok, off, 0)).to(tl.int64, bitcast=False)
            if EVICT_LAST:
                tl.inline_asm_elementwise("{ .reg .pred p; setp.ne.u32 p, $2, 0; @p prefetch.global.L2::evict_last [$1]; "
                                          "mov.u32 $0, 0; }", "=r,l,r", [addr, ok.to(tl.int32)], dtype=tl.int32,
                                          is_pure=False, pack=1)
            else:
                tl.inline_asm_elementwise("{ .reg .pred p; setp.ne.u32 p, $2, 0; @p prefetch.global.L2 [$1]; "
                                          "mov.u32 $0, 0; }", "=r,l,r", [addr, ok.to(tl.int32)], dtype=tl.int32,
                                          is_pure=False, pack=1)


@triton.jit
def _l2_prefetch_kernel(a_ptr, a_bytes, a_stride, a_len, b_ptr, b_bytes, b_stride, b_len,
                        BLOCK: tl.constexpr, EVICT_LAST: tl.constexpr, PDL: tl.constexpr):
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    lane, lanes = tl.program_id(0), tl.num_programs(0)
    _prefetch_lines(a_ptr, a_bytes, a_stride, a_len, lane, lanes, BLOCK, EVICT_LAST)
    _prefetch_lines(b_ptr, b_bytes, b_stride, b_len, lane, lanes, BLOCK, EVICT_LAST)
    if PDL:
        tl.extra.cuda.gdc_wait()


def prefetch_l2(tensors: Sequence[torch.Tensor], budget: int, num_tokens: int, evict_last: bool = True) -> None:
    """Request up to ``budget`` bytes of ``tensors`` (contiguous, at most two) into L2, split between
    them in proportion to their sizes: ``prefetch.global.L2`` of the first part of each of SLICES
    equal slices of each tensor, from one program an SM, launched with PDL (let the next kernel
    start, issue, then wait for the kernel before)."""
    launch = pdl_launch(tensors[0].device, num_tokens)
    if not launch["PDL"]:
        return
    if len(tensors) > MAX_TENSORS or not all(t.is_contiguous() for t in tensors):
        raise ValueError(f"prefetch_l2 takes at most {MAX_TENSORS} contiguous tensors")
    sizes = [t.numel() * t.element_size() for t in tensors]
    args = []
    for t, nbytes in zip(tensors, sizes):
        args += [t.view(torch.int8).view(-1), nbytes, *slice_plan(nbytes, budget * nbytes // sum(sizes))]
    while len(args) < 4 * MAX_TENSORS:
        args += [args[0], 0, LINE_BYTES, 0]
    programs = torch.cuda.get_device_properties(tensors[0].device).multi_processor_count
    _l2_prefetch_kernel[(programs,)](*args, BLOCK=BLOCK, EVICT_LAST=evict_last, num_warps=BLOCK // 32, **launch)


LAYERS = [("13b/tp2 o", 2560, 5120), ("13b/tp2 qkv", 5120, 7680), ("13b/tp2 gate_up", 5120, 13824),
          ("7b o", 4096, 4096), ("7b qkv", 4096, 12288), ("7b gate_up", 4096, 22016), ("7b down", 11008, 4096)]
WINDOWS_US = [3, 6, 9]
VARIANTS = [("base", 0, True), ("pf 8", 8, True), ("pf 16", 16, True), ("pf 24", 24, True), ("pf 16 n", 16, False),
            ("side", -1, True)]
TOUCH_PROGRAMS = 528


@triton.jit
def _spin_kernel(out, ns):
    gdc_launch_dependents()
    gdc_wait()
    t0 = globaltimer()
    t = t0
    while t - t0 < ns:
        t = globaltimer()
    tl.store(out, t - t0)


def main() -> None:
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    sink = torch.empty(1, dtype=torch.int64, device="cuda")
    sink32 = torch.empty(TOUCH_PROGRAMS, dtype=torch.int32, device="cuda")
    side = torch.cuda.Stream()
    print(f"{'layer':<18}{'MB':>6}{'win':>5}{'spin':>7}" + "".join(f"{v[0]:>9}" for v in VARIANTS))
    for name, k, n in LAYERS:
        layer = Layer(k, n, seed=k + n)
        x = layer.x(1)
        out = torch.empty(1, n, dtype=torch.float16, device="cuda")
        for win in WINDOWS_US:
            def spin(ns: int = win * 1000) -> None:
                _spin_kernel[(1,)](sink, ns, launch_pdl=True)

            def touch(r) -> None:
                main_stream = torch.cuda.current_stream()
                side.wait_stream(main_stream)
                with torch.cuda.stream(side):
                    for t in r:
                        _stream_kernel[(TOUCH_PROGRAMS,)](t, sink32, -(-t.numel() // TOUCH_PROGRAMS), t.numel(),
                                                          BLOCK=1024, UNROLL=4, num_warps=8)
                return main_stream

            t_spin = graph_time_us([spin] * 8, 5, 20)
            row = []
            for _, budget, evict_last in VARIANTS:
                fns = []
                for w, r in zip(layer.int4, layer.repacked):
                    def it(w=w, r=r, b=budget * 1_000_000, el=evict_last) -> None:
                        joined = None
                        if b > 0:
                            prefetch_l2(r, b, 1, evict_last=el)
                        elif b < 0:
                            joined = touch(r)
                        spin()
                        awq_gemm(x, *w, out=out, repacked=r)
                        if joined is not None:
                            joined.wait_stream(side)
                    fns.append(it)
                row.append(graph_time_us(fns, 5, 20))
            print(f"{name:<18}{layer.bytes(0) / 1e6:6.1f}{win:5d}{t_spin:7.2f}" + "".join(f"{t:9.2f}" for t in row),
                  flush=True)
        del layer
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
