"""Experiment (issue 4, mid M): the AWQ weight as the *left* MMA operand, ``out^T = W^T x^T``.

Hopper's wgmma reads its left operand from registers and only the right one from shared memory.
The tc path of ``awq_gemm`` dequantizes W (the right operand) in registers, so every K tile goes
registers -> shared memory -> wgmma and the MMA waits for that round trip. Swapping the operands
puts the dequantized W where wgmma can take it from registers, and the small activation tile x^T
(M <= 256 columns, wgmma's N) in shared memory through the normal load pipeline. Each element
(n, k) of the W^T tile loads its own packed word ``qweight[k, n // 8]`` (eight columns share one
word, so a warp's loads hit few distinct words) and shifts out its nibble: the dequant is then an
elementwise chain from a load, which Triton can lay out directly in the MMA operand layout.

    python benchmarks/experiments/swap_ab.py            # GPU: times vs cuBLAS and the tc path
    python benchmarks/experiments/swap_ab.py --check    # correctness only (CPU with TRITON_INTERPRET=1)
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from pagedawq.kernels.awq_gemm import awq_dequantize, awq_gemm  # noqa: E402
from pagedawq.quant.pack import pack_awq_gemm, quantize_weight  # noqa: E402


@triton.jit(do_not_specialize=["M"])
def swap_kernel(x_ptr, qw_ptr, qz_ptr, s_ptr, out_ptr, ws_ptr, M, N, N8, K, stride_xm, stride_om,
                G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                SPLIT: tl.constexpr, MAGIC: tl.constexpr, COMPACT: tl.constexpr, INTERPRET: tl.constexpr):
    DT = x_ptr.dtype.element_ty
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_s = tl.program_id(2)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.arange(0, BLOCK_K)
    n_mask = rn < N
    m_mask = rm < M
    shift = 16 * (rn % 2) + 4 * ((rn % 8) // 2)
    rj = pid_n * (BLOCK_N // 8) + tl.arange(0, BLOCK_N // 8)
    if COMPACT:   # each word once: [BLOCK_N / 8, BLOCK_K], expanded to eight rows in registers
        w_ptrs = qw_ptr + rk[None, :] * N8 + rj[:, None]
    else:         # each element loads its own word: [BLOCK_N, BLOCK_K]
        w_ptrs = qw_ptr + rk[None, :] * N8 + (rn // 8)[:, None]
    x_ptrs = x_ptr + rm[None, :] * stride_xm + rk[:, None]
    k_tiles = K // BLOCK_K
    per = tl.cdiv(k_tiles, SPLIT)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for kt in range(pid_s * per, tl.minimum(pid_s * per + per, k_tiles)):
        k0 = kt * BLOCK_K
        g = k0 // G
        if COMPACT:
            wc = tl.load(w_ptrs + k0 * N8, mask=(rj < N8)[:, None], other=0)
            words = tl.reshape(tl.broadcast_to(wc[:, None, :], (BLOCK_N // 8, 8, BLOCK_K)), (BLOCK_N, BLOCK_K))
        else:
            words = tl.load(w_ptrs + k0 * N8, mask=n_mask[:, None], other=0)
        zw = tl.load(qz_ptr + g * N8 + rn // 8, mask=n_mask, other=0)
        s = tl.load(s_ptr + g * N + rn, mask=n_mask, other=0.0).to(DT)
        if INTERPRET:
            q = ((words >> shift[:, None]) & 0xF).to(tl.float32)
            z = ((zw >> shift) & 0xF).to(tl.float32)
            w = ((q - z[:, None]) * s[:, None].to(tl.float32)).to(DT)
        else:
            # (code | MAGIC) read as a 16-bit float is exactly MAGIC_value + code.
            q = (((words >> shift[:, None]) & 0xF) | MAGIC).to(tl.int16).to(DT, bitcast=True)
            z = (((zw >> shift) & 0xF) | MAGIC).to(tl.int16).to(DT, bitcast=True)
            w = (q - z[:, None]) * s[:, None]
        xt = tl.load(x_ptrs + k0, mask=m_mask[None, :], other=0.0)
        if INTERPRET:
            acc = tl.dot(w.to(tl.float32), xt.to(tl.float32), acc)
        else:
            acc = tl.dot(w, xt, acc)
    mask = n_mask[:, None] & m_mask[None, :]
    if SPLIT == 1:
        tl.store(out_ptr + rm[None, :] * stride_om + rn[:, None], acc.to(DT), mask=mask)
    else:
        tl.store(ws_ptr + pid_s * M * N + rm[None, :] * N + rn[:, None], acc, mask=mask)


def swap_gemm(x, qw, qz, sc, bn, bm, bk, split, warps, stages, out=None, compact=False):
    m, k = x.shape
    n8 = qw.shape[1]
    n = n8 * 8
    group = k // sc.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device) if out is None else out
    ws = torch.empty(split, m, n, dtype=torch.float32, device=x.device) if split > 1 else out
    magic = 0x6400 if x.dtype == torch.float16 else 0x4300
    grid = (triton.cdiv(n, bn), triton.cdiv(m, bm), split)
    swap_kernel[grid](x, qw, qz, sc, out, ws, m, n, n8, k, x.stride(0), out.stride(0), G=group, BLOCK_N=bn,
                      BLOCK_M=bm, BLOCK_K=bk, SPLIT=split, MAGIC=magic, COMPACT=compact,
                      INTERPRET=os.environ.get("TRITON_INTERPRET") == "1", num_warps=warps, num_stages=stages)
    if split > 1:
        torch.sum(ws, dim=0, out=out)
    return out


def make_layer(k, n, group, device, seed):
    gen = torch.Generator(device=device).manual_seed(seed)
    codes, scales, zeros = quantize_weight(torch.randn(n, k, device=device, generator=gen) * 0.02, group_size=group)
    return pack_awq_gemm(codes, scales.half(), zeros)


def check(device):
    for (k, n, m, group, dt, cfg) in [(256, 384, 16, 64, torch.float16, (64, 16, 64, 1)),
                                      (256, 200, 5, 128, torch.float16, (64, 16, 64, 2)),
                                      (512, 256, 33, 64, torch.bfloat16, (128, 32, 64, 1))]:
        qw, qz, sc = make_layer(k, n, group, device, k + n)
        x = torch.randn(m, k, device=device, dtype=dt)
        ref = x.double() @ awq_dequantize(qw, qz, sc, torch.float32).double()
        out = torch.full((m, n), float("nan"), dtype=dt, device=device)
        swap_gemm(x, qw, qz, sc, *cfg, warps=4, stages=2, out=out, compact=True)
        err = ((out.double() - ref).norm() / ref.norm()).item()
        print(f"K={k} N={n} M={m} G={group} {dt}: rel err {err:.1e}")
        assert err < 1e-2


def graph_us(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    times = []
    for _ in range(10):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); b.synchronize()
        times.append(a.elapsed_time(b) * 1000 / reps)
    return sorted(times)[len(times) // 2]


def configs(m):
    bms = [m] if m <= 128 else [128, 256]
    for bn, bm, bk, warps, stages in itertools.product((64, 128), bms, (64, 128), (4, 8), (3, 4)):
        if bn == 64 and warps == 8:
            continue
        yield bn, bm, bk, warps, stages


def bench():
    shapes = [("qkv", 4096, 12288), ("o", 4096, 4096), ("gate_up", 4096, 22016), ("down", 11008, 4096)]
    print(f"{torch.cuda.get_device_name()}  triton {triton.__version__}", flush=True)
    print(f"{'layer':<8}{'M':>5}{'cuBLAS':>9}{'awq_gemm':>10}{'swap best':>11}  {'cfg (bn,bm,bk,split,w,st)':<28}"
          f"{'x cuBLAS':>9}{'x awq':>7}", flush=True)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for name, k, n in shapes:
        layers = [make_layer(k, n, 128, "cuda", i) for i in range(3)]
        dense = [awq_dequantize(*l, torch.float16) for l in layers]
        for m in (16, 32, 64, 128, 256, 512, 1024):
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            out = torch.empty(m, n, device="cuda", dtype=torch.float16)
            t_ref = graph_us(lambda: [torch.matmul(x, w, out=out) for w in dense])
            t_awq = graph_us(lambda: [awq_gemm(x, *l, out=out) for l in layers])
            ref = x.float() @ dense[0].float()
            best = (float("inf"), None)
            for bn, bm, bk, warps, stages in configs(m):
                tiles = triton.cdiv(n, bn) * triton.cdiv(m, bm)
                split = max(1, min(8, sms // tiles)) if tiles < sms else 1
                while split > 1 and (k // bk) % split:
                    split -= 1
                try:
                    o = swap_gemm(x, *layers[0], bn, bm, bk, split, warps, stages, compact=True)
                    if not ((o.float() - ref).norm() / ref.norm()).item() < 5e-3:
                        print(f"  wrong result {name} M={m} {(bn, bm, bk, split, warps, stages)}", flush=True)
                        continue
                    t = graph_us(lambda: [swap_gemm(x, *l, bn, bm, bk, split, warps, stages, out=out, compact=True)
                                          for l in layers], 5)
                except Exception:   # out of shared memory / registers
                    continue
                if t < best[0]:
                    best = (t, (bn, bm, bk, split, warps, stages))
            t = best[0] / 3
            print(f"{name:<8}{m:>5}{t_ref / 3:>9.1f}{t_awq / 3:>10.1f}{t:>11.1f}  {str(best[1]):<28}"
                  f"{t_ref / 3 / t:>9.2f}{t_awq / 3 / t:>7.2f}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    if args.check or not torch.cuda.is_available():
        check("cuda" if torch.cuda.is_available() else "cpu")
    else:
        check("cuda")
        bench()
