"""Experiment (issues 4 and 5, mid M): an AWQ GEMM whose W unpack overlaps the tensor cores (Gluon).

The tc path of ``awq_gemm`` is issue-bound at M = 64-256 because, per K tile, it unpacks W into
shared memory and then waits for the wgmma that reads it before unpacking the next tile (Triton
emits ``WARPGROUP.DEPBAR.LE gsb0, 0`` right after each dot whose B operand came from registers;
see notes/awq_gemm.md, session 3). Gluon exposes the asynchrony directly, so this kernel:

* brings each K tile of x and of the packed words in with TMA, ``STAGES`` tiles ahead;
* unpacks tile k (the PTX unpack of ``awq_kernels``: zero point and scale in packed fp16) into one
  of two shared-memory W buffers while the wgmma of tile k-1, on the other buffer, is still running;
* issues wgmma k asynchronously and then waits until only it is outstanding (``num_outstanding=1``):
  the MMA of one tile overlaps the unpack of the next.

Restrictions of the experiment: fp16 activations and scales, N a multiple of BLOCK_N, BLOCK_K
dividing the group size, Hopper only (no CPU interpreter for Gluon). Written against Triton 3.6 (the
GPU machine's; Gluon's API moves between releases): to compile-check it on a machine without a GPU,
``pip install --target /tmp/triton36 --no-deps triton==3.6.0`` and run ``--compile`` with
``PYTHONPATH=/tmp/triton36``. Compiled that way (2026-11-26), every configuration below keeps its
wgmma asynchronous (``WARPGROUP.DEPBAR.LE gsb0, 0x1`` after each tile's four HGMMAs, the next
tile's unpack before it), with no spills.

    python benchmarks/experiments/gluon_w4a16.py              # GPU: correctness, then time vs cuBLAS and the tc path
    python benchmarks/experiments/gluon_w4a16.py --compile    # no GPU: compile for sm_90, print the loop's structure
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                               warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from pagedawq.kernels.awq_kernels import (_CONSTRAINTS_SCALED, _F16X8, _UNPACK_F16_SCALED,  # noqa: E402
                                          _ZERO_PAIRS_F16)

ZERO_PAIRS = gl.constexpr(_ZERO_PAIRS_F16.value)
UNPACK = gl.constexpr(_UNPACK_F16_SCALED.value)
CONSTRAINTS = gl.constexpr(_CONSTRAINTS_SCALED.value)
F16X8 = gl.constexpr(_F16X8.value)


@gluon.jit
def _interleave8(o0, o1, o2, o3, o4, o5, o6, o7):
    """Eight [R, C] planes (column c of each group of eight) -> [R, 8C] in natural column order
    (each join adds a minor, in-thread dimension: a register renaming, as in awq_kernels)."""
    t = gl.join(gl.join(gl.join(o0, o4), gl.join(o2, o6)), gl.join(gl.join(o1, o5), gl.join(o3, o7)))
    return gl.reshape(t, [o0.shape[0], 8 * o0.shape[1]])


@gluon.jit
def _step(kt, acc, use_acc, x_desc, qw_desc, qz_ptr, s_ptr, a_bufs, q_bufs, b_bufs, bars, jj, off_m, off_j,
          N, N8, k_tiles, G: gl.constexpr, STAGES: gl.constexpr, q_layout: gl.constexpr):
    """K tile ``kt``: unpack its W into a shared buffer while wgmma kt-1 runs, issue wgmma kt, wait
    for kt-1, and refill the stage kt-1 used with tile kt + STAGES - 1."""
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[1]
    tile_bytes: gl.constexpr = x_desc.block_type.nbytes + qw_desc.block_type.nbytes
    s = kt % STAGES
    mbarrier.wait(bars.index(s), (kt // STAGES) & 1)
    qw = q_bufs.index(s).load(q_layout)
    g = (kt * BLOCK_K) // G
    zw = gl.load(qz_ptr + g * N8 + jj)
    z0, z1, z2, z3 = gl.inline_asm_elementwise(ZERO_PAIRS, "=r,=r,=r,=r,r", [zw],
                                               dtype=(gl.int32, gl.int32, gl.int32, gl.int32),
                                               is_pure=True, pack=1)
    sp = s_ptr.to(gl.pointer_type(gl.int32), bitcast=True) + (g * N + 8 * jj) // 2
    s0 = gl.load(sp)
    s1 = gl.load(sp + 1)
    s2 = gl.load(sp + 2)
    s3 = gl.load(sp + 3)
    o = gl.inline_asm_elementwise(UNPACK, CONSTRAINTS,
                                  [qw, z0[None, :], z1[None, :], z2[None, :], z3[None, :],
                                   s0[None, :], s1[None, :], s2[None, :], s3[None, :]],
                                  dtype=F16X8, is_pure=True, pack=1)
    w = _interleave8(o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7])
    b = b_bufs.index(kt % 2)
    b.store(w)          # its previous reader, wgmma kt-2, finished at the previous step's wait
    fence_async_shared()
    acc = warpgroup_mma(a_bufs.index(s), b, acc, use_acc=use_acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc, ))
    nk = kt + STAGES - 1
    if nk < k_tiles:
        ns = nk % STAGES
        mbarrier.expect(bars.index(ns), tile_bytes)
        tma.async_copy_global_to_shared(x_desc, [off_m, nk * BLOCK_K], bars.index(ns), a_bufs.index(ns))
        tma.async_copy_global_to_shared(qw_desc, [nk * BLOCK_K, off_j], bars.index(ns), q_bufs.index(ns))
    return acc


@gluon.jit
def w4a16_kernel(x_desc, qw_desc, qz_ptr, s_ptr, out_ptr, M, N, K, stride_om,
                 G: gl.constexpr, B_LAYOUT: gl.constexpr, STAGES: gl.constexpr, num_warps: gl.constexpr):
    BLOCK_M: gl.constexpr = x_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = x_desc.block_type.shape[1]
    BN8: gl.constexpr = qw_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = 8 * BN8
    pid_m = gl.program_id(0)
    pid_n = gl.program_id(1)
    off_m = pid_m * BLOCK_M
    off_j = pid_n * BN8
    N8 = N // 8

    a_bufs = gl.allocate_shared_memory(gl.float16, [STAGES, BLOCK_M, BLOCK_K], x_desc.layout)
    q_bufs = gl.allocate_shared_memory(gl.int32, [STAGES, BLOCK_K, BN8], qw_desc.layout)
    b_bufs = gl.allocate_shared_memory(gl.float16, [2, BLOCK_K, BLOCK_N], B_LAYOUT)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(bars.index(i), count=1)

    k_tiles = K // BLOCK_K    # >= 1 (K >= BLOCK_K)
    tile_bytes: gl.constexpr = x_desc.block_type.nbytes + qw_desc.block_type.nbytes
    for i in gl.static_range(STAGES - 1):
        if i < k_tiles:
            mbarrier.expect(bars.index(i), tile_bytes)
            tma.async_copy_global_to_shared(x_desc, [off_m, i * BLOCK_K], bars.index(i), a_bufs.index(i))
            tma.async_copy_global_to_shared(qw_desc, [i * BLOCK_K, off_j], bars.index(i), q_bufs.index(i))

    # One thread per packed word and row chunk: the 8 fp16 it unpacks are 8 adjacent columns.
    q_layout: gl.constexpr = gl.BlockedLayout([1, 1], [32 // BN8, BN8], [num_warps, 1], [1, 0])
    cols: gl.constexpr = gl.SliceLayout(0, q_layout)
    jj = off_j + gl.arange(0, BN8, layout=cols)
    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, BLOCK_N, 16])
    acc = gl.zeros([BLOCK_M, BLOCK_N], dtype=gl.float32, layout=mma_layout)

    # Tile 0 outside the loop (use_acc=False): with the accumulator defined only by wgmmas between
    # the first wgmma and the last wait, ptxas keeps them asynchronous (a zero-initialised
    # accumulator reaching the final wait on the zero-trip path made it serialize every wgmma).
    acc = _step(0, acc, False, x_desc, qw_desc, qz_ptr, s_ptr, a_bufs, q_bufs, b_bufs, bars, jj, off_m, off_j,
                N, N8, k_tiles, G, STAGES, q_layout)
    for kt in range(1, k_tiles):
        acc = _step(kt, acc, True, x_desc, qw_desc, qz_ptr, s_ptr, a_bufs, q_bufs, b_bufs, bars, jj, off_m, off_j,
                    N, N8, k_tiles, G, STAGES, q_layout)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(i))

    out_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    res = gl.convert_layout(acc.to(gl.float16), out_layout)
    rm = off_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, out_layout))
    rn = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, out_layout))
    gl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], res, mask=(rm < M)[:, None])


def layouts(block_m: int, block_n: int, block_k: int):
    return (gl.NVMMASharedLayout.get_default_for([block_m, block_k], gl.float16),
            gl.NVMMASharedLayout.get_default_for([block_k, block_n // 8], gl.int32),
            gl.NVMMASharedLayout.get_default_for([block_k, block_n], gl.float16))


def w4a16(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
          block_m: int = 64, block_n: int = 128, block_k: int = 64, stages: int = 3, num_warps: int = 4,
          out: torch.Tensor | None = None) -> torch.Tensor:
    m, k = x.shape
    n = qweight.shape[1] * 8
    group = k // scales.shape[0]
    assert x.dtype == scales.dtype == torch.float16 and n % block_n == 0 and group % block_k == 0
    assert block_m == 16 * num_warps, "one 16-row wgmma slice per warp"
    out = torch.empty(m, n, dtype=torch.float16, device=x.device) if out is None else out
    a_l, q_l, b_l = layouts(block_m, block_n, block_k)
    x_desc = TensorDescriptor.from_tensor(x, [block_m, block_k], a_l)
    qw_desc = TensorDescriptor.from_tensor(qweight, [block_k, block_n // 8], q_l)
    grid = (triton.cdiv(m, block_m), n // block_n)
    w4a16_kernel[grid](x_desc, qw_desc, qzeros, scales, out, m, n, k, out.stride(0), G=group, B_LAYOUT=b_l,
                       STAGES=stages, num_warps=num_warps)
    return out


def compile_only(block_m: int, block_n: int, block_k: int, stages: int, num_warps: int) -> None:
    """Compile for sm_90 without a GPU and print where the loop waits for its wgmma."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    a_l, q_l, b_l = layouts(block_m, block_n, block_k)
    x = torch.zeros(256, 4096, dtype=torch.float16)
    qw = torch.zeros(4096, 512, dtype=torch.int32)

    def desc_sig(t, block, layout):
        return native_specialize_impl(BaseBackend, TensorDescriptor.from_tensor(t, block, layout), False, True, True)[0]
    sig = {"x_desc": desc_sig(x, [block_m, block_k], a_l), "qw_desc": desc_sig(qw, [block_k, block_n // 8], q_l),
           "qz_ptr": "*i32", "s_ptr": "*fp16", "out_ptr": "*fp16", "M": "i32", "N": "i32", "K": "i32",
           "stride_om": "i32", "G": "constexpr", "B_LAYOUT": "constexpr", "STAGES": "constexpr",
           "num_warps": "constexpr"}
    src = GluonASTSource(w4a16_kernel, sig, constexprs={"G": 128, "B_LAYOUT": b_l, "STAGES": stages,
                                                        "num_warps": num_warps})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        nvdisasm = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
        sass = subprocess.run([nvdisasm, "-c", path], capture_output=True, text=True, check=True).stdout
    lines = [ln.split("*/", 1)[1].strip() for ln in sass.splitlines() if "*/" in ln and ";" in ln]
    print(f"{len(lines)} instructions, {sum('STL' in ln for ln in lines)} spill stores")
    for i, ln in enumerate(lines):
        if any(t in ln for t in ("HGMMA", "WARPGROUP", "BAR.SYNC", "SYNCS", "BRA", "UTMALDG")):
            print(f"{i:5d}  {ln[:90]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compile", action="store_true", help="compile for sm_90 only (no GPU needed)")
    p.add_argument("--block", type=int, nargs=3, default=[64, 128, 64], metavar=("M", "N", "K"))
    p.add_argument("--stages", type=int, default=3)
    p.add_argument("--num-warps", type=int, default=4)
    args = p.parse_args()
    if args.compile:
        compile_only(*args.block, args.stages, args.num_warps)
        return
    run_gpu()


def run_gpu() -> None:
    """Correctness against the float64 product, then per-call time (CUDA graph over rotating weight
    copies, as benchmarks/kernels.py) against cuBLAS fp16 and awq_gemm's own choice."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from kernels import Layer, graph_time_us  # noqa: E402 - the kernel benchmark's helpers

    from pagedawq.kernels.awq_gemm import awq_gemm
    configs = [(64, 128, 64, 3, 4), (128, 128, 64, 3, 8), (64, 256, 64, 3, 4), (128, 256, 64, 3, 8)]
    print(f"device: {torch.cuda.get_device_name()}, triton {triton.__version__}")
    print(f"{'K':>6}{'N':>7}{'M':>5}{'cuBLAS us':>10}{'awq_gemm us':>12}{'gluon us':>9} {'config':<22}{'x cuBLAS':>9}"
          f"{'x awq_gemm':>11}{'rel err':>9}")
    for k, n in [(4096, 12288), (4096, 22016), (11008, 4096), (4096, 4096)]:
        layer = Layer(k, n, seed=k + n)
        for m in (64, 128, 256, 512, 1024, 4096):   # mid M (tc path) and large M (dequant + cuBLAS)
            x = layer.x(m)
            out = torch.empty(m, n, dtype=torch.float16, device="cuda")
            ref = (x.double() @ layer.w16.double())
            t_ref = graph_time_us([lambda w=w: torch.matmul(x, w, out=out) for w in layer.fp16], 5, 20)
            t_awq = graph_time_us([lambda w=w: awq_gemm(x, *w, out=out) for w in layer.int4], 5, 20)
            best = None
            for cfg in configs:
                bm, bn, bk, st, nw = cfg
                if n % bn:
                    continue
                try:
                    got = w4a16(x, *layer.int4[0], bm, bn, bk, st, nw, out=torch.full_like(out, float("nan")))
                    err = ((got.double() - ref).norm() / ref.norm()).item()
                    t = graph_time_us([lambda w=w: w4a16(x, *w, bm, bn, bk, st, nw, out=out) for w in layer.int4], 5, 20)
                except Exception as e:  # noqa: BLE001 - report and try the next configuration
                    print(f"  {cfg} failed: {str(e).splitlines()[0][:150]}")
                    continue
                if best is None or t < best[0]:
                    best = (t, cfg, err)
            if best is not None:
                t, cfg, err = best
                print(f"{k:>6}{n:>7}{m:>5}{t_ref:>10.1f}{t_awq:>12.1f}{t:>9.1f} {str(cfg):<22}{t_ref / t:>9.2f}"
                      f"{t_awq / t:>11.2f}{err:>9.1e}")
        del layer
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
