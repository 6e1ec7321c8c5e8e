"""Small-M AWQ GEMM with warp-synchronous mma.sync (mma_v2) instead of wgmma: a candidate for M <= 16.

Session 10's measurements say the "wgmma_t" kernels at M = 1 are not limited by DRAM: the same GEMM
with its weights resident in L2 runs about as long (13B/TP2 o 5.59 against 5.57 us; 7B down 11.8
against 12.5), while a kernel that only streams the bytes takes 4.3 / 10.1 us. What bounds them is
each warpgroup's serial chain a step: unpack all K tiles, issue the wgmmas, wait for all of them
(the wait is forced: ptxas reuses a running wgmma's A registers). mma.sync reads its registers when
it issues, so there is no such wait: ptxas may schedule the next tile's unpack beside the running
MMA, as Marlin does.

Two kernels: ``awq_mma_v2_kernel`` is ``awq_wgmma_t_kernel`` (same TMA ring, repacked weights,
split-K epilogue) with the wgmma step replaced by m16n8k16 mma_v2 per K tile, x as the register B
operand loaded from the stage; ``awq_mma_v2_direct_kernel`` has no shared memory at all (each
thread loads its 16 bytes of a K tile straight into registers, 4 tiles ahead). Run: correctness
against float64 at M = 1, 4, 16 and timing against ``awq_gemm``'s choice.

Outcome (H100, session 10, results/mma_v2_{tma,direct}_h100_session10_2026-11-26.log): both right
first time, neither faster. The ring kernel ran 0.92-1.06x the wgmma one at M = 1-4, the direct one
0.77-1.02x at M = 1-4 and 0.3-0.6x at 16 (155 registers a thread, x re-loaded by every warp). ncu
(results/ncu_down_m1_h100_session10_2026-11-26.log): all of them issue an instruction every
4.3-4.9 cycles a warp with about two warps a scheduler; what they have in common, the unpack's
instruction count, is what bounds them. Session 10 cut that instead (``awq_wgmma_t.UNPACK_UNSCALED``).

    PYTHONPATH=. python benchmarks/experiments/mma_v2_small_m.py            # on the H100
    PYTHONPATH=/tmp/triton36:. python benchmarks/experiments/mma_v2_small_m.py --compile   # sm_90, no GPU
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2
from triton.experimental.gluon.language.nvidia.hopper import mbarrier

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pagedawq.kernels.awq_configs import WgmmaTConfig, k_tiles_per_step  # noqa: E402
from pagedawq.kernels.awq_wgmma_t import (_griddep, _load_weights, _load_x, _unpack_a, _unpack_buf,  # noqa: E402
                                          _write_tile,
                                          descriptors, k_slices, split_k_buffers, words_layout)
from pagedawq.kernels.pdl import pdl_launch  # noqa: E402


@gluon.jit
def _mma_v2_step(x_buf, w_bufs, z_bufs, s, acc, G: gl.constexpr, a_layout: gl.constexpr, b_layout: gl.constexpr,
                 W_LAYOUT: gl.constexpr, num_warps: gl.constexpr):
    KT: gl.constexpr = x_buf.shape[0]
    BT: gl.constexpr = x_buf.shape[1]
    xs = x_buf.reshape([KT * BT, x_buf.shape[2]])   # K tile j: rows j*BT ..
    for j in gl.static_range(KT):
        a = _unpack_buf(w_bufs, z_bufs, s, j, G, a_layout, W_LAYOUT, num_warps)
        b = xs.slice(j * BT, BT).permute((1, 0)).load(b_layout)
        acc = mma_v2(a, b, acc)
    return acc


@gluon.jit(do_not_specialize=["M", "split_k"])
def awq_mma_v2_kernel(x_desc, w_desc, zs_desc, out_ptr, ws_ptr, cnt_ptr, M, N, K, stride_om, split_k,
                      G: gl.constexpr, W_LAYOUT: gl.constexpr, STAGES: gl.constexpr, SPLIT: gl.constexpr,
                      PDL: gl.constexpr, SILU: gl.constexpr, num_warps: gl.constexpr):
    KT: gl.constexpr = x_desc.block_type.shape[0]
    BT: gl.constexpr = x_desc.block_type.shape[1]
    BK: gl.constexpr = x_desc.block_type.shape[2]
    BANDS: gl.constexpr = w_desc.block_type.shape[1]
    BN: gl.constexpr = 16 * BANDS
    R: gl.constexpr = zs_desc.block_type.shape[0]
    pid_n = gl.program_id(0)
    pid_t = gl.program_id(1)
    pid_s = gl.program_id(2)
    off_t = pid_t * BT

    x_bufs = gl.allocate_shared_memory(gl.float16, [STAGES, KT, BT, BK], x_desc.layout)
    w_bufs = gl.allocate_shared_memory(gl.int32, [STAGES, KT, BANDS, 128], w_desc.layout)
    z_bufs = gl.allocate_shared_memory(gl.int32, [STAGES, R, BN], zs_desc.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(bars.index(i), count=1)

    k_steps = K // (BK * KT)
    per_split = gl.cdiv(k_steps, split_k)
    kt_lo = pid_s * per_split * KT
    n_steps = gl.minimum(per_split, k_steps - pid_s * per_split)
    for i in gl.static_range(STAGES):
        if i < n_steps:
            _load_weights(i, kt_lo + i * KT, x_desc, w_desc, zs_desc, w_bufs, z_bufs, bars, pid_n, G)
    if PDL:
        _griddep("wait")
    for i in gl.static_range(STAGES):
        if i < n_steps:
            _load_x(i, kt_lo + i * KT, x_desc, x_bufs, bars, off_t)

    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, 8])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_layout, k_width=2)
    b_layout: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma_layout, k_width=2)
    acc = gl.zeros([BN, BT], dtype=gl.float32, layout=mma_layout)

    for i in range(n_steps):
        s = i % STAGES
        mbarrier.wait(bars.index(s), (i // STAGES) & 1)
        acc = _mma_v2_step(x_bufs.index(s), w_bufs, z_bufs, s, acc, G, a_layout, b_layout, W_LAYOUT, num_warps)
        ni = i + STAGES
        if ni < n_steps:
            _load_weights(s, kt_lo + ni * KT, x_desc, w_desc, zs_desc, w_bufs, z_bufs, bars, pid_n, G)
            _load_x(s, kt_lo + ni * KT, x_desc, x_bufs, bars, off_t)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(i))
    if PDL:
        _griddep("launch_dependents")
    _write_tile(acc, out_ptr, ws_ptr, cnt_ptr, M, N, stride_om, split_k, pid_n, pid_t, pid_s, off_t, mma_layout,
                SPLIT, SILU, num_warps)


@gluon.jit
def _w_tile(words_ptr, zs_ptr, kt, kt_hi, pid_n, N, G: gl.constexpr, w_layout: gl.constexpr,
            z_layout: gl.constexpr, BANDS: gl.constexpr):
    """The words of K tile ``kt`` of this program's BANDS bands (one 16-byte load a thread) and their
    zero/scale row, straight into registers; zeros past ``kt_hi`` (prefetches past the last tile)."""
    ok = kt < kt_hi
    rb = gl.arange(0, BANDS, layout=gl.SliceLayout(1, w_layout))
    rc = gl.arange(0, 128, layout=gl.SliceLayout(0, w_layout))
    wq = gl.load(words_ptr + ((kt * (N // 16) + pid_n * BANDS + rb) * 128)[:, None] + rc[None, :], mask=ok, other=0)
    rn = gl.arange(0, 16 * BANDS, layout=z_layout)
    zs = gl.load(zs_ptr + ((kt * 64) // G) * N + pid_n * 16 * BANDS + rn, mask=ok, other=0)
    return wq, zs


@gluon.jit
def _x_tile(x_ptr, kt, kt_hi, M, stride_xm, off_t, b_layout: gl.constexpr, BT: gl.constexpr):
    """x [64 k, BT tokens] of K tile ``kt`` as mma's B operand (zeros past ``kt_hi`` and M)."""
    rk = gl.arange(0, 64, layout=gl.SliceLayout(1, b_layout))
    rt = off_t + gl.arange(0, BT, layout=gl.SliceLayout(0, b_layout))
    return gl.load(x_ptr + rt[None, :] * stride_xm + (kt * 64 + rk)[:, None], mask=(kt < kt_hi) & (rt < M)[None, :],
                   other=0.0)


@gluon.jit(do_not_specialize=["M", "split_k"])
def awq_mma_v2_direct_kernel(x_ptr, words_ptr, zs_ptr, out_ptr, ws_ptr, cnt_ptr, M, N, K, stride_xm, stride_om,
                             split_k, G: gl.constexpr, W_LAYOUT: gl.constexpr, BANDS: gl.constexpr,
                             BT: gl.constexpr, SPLIT: gl.constexpr, PDL: gl.constexpr, num_warps: gl.constexpr):
    """No shared memory, TMA or barriers: each warp streams its band's words with one 16-byte load
    a thread a K tile, the next 4 tiles' loads in flight while 4 are unpacked and multiplied
    (mma_v2: no wait), and many programs an SM hide the latency."""
    pid_n = gl.program_id(0)
    pid_t = gl.program_id(1)
    pid_s = gl.program_id(2)
    off_t = pid_t * BT
    k_tiles = K // 64
    per_split = gl.cdiv(k_tiles, split_k)
    kt_lo = pid_s * per_split
    kt_hi = gl.minimum(kt_lo + per_split, k_tiles)

    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, 8])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_layout, k_width=2)
    b_layout: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma_layout, k_width=2)
    w_layout: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [num_warps, 1], [1, 0])
    z_layout: gl.constexpr = gl.SliceLayout(1, W_LAYOUT)
    acc = gl.zeros([16 * BANDS, BT], dtype=gl.float32, layout=mma_layout)

    # the weights do not depend on the previous kernel: the first tiles are requested before the wait
    w0, z0 = _w_tile(words_ptr, zs_ptr, kt_lo, kt_hi, pid_n, N, G, w_layout, z_layout, BANDS)
    w1, z1 = _w_tile(words_ptr, zs_ptr, kt_lo + 1, kt_hi, pid_n, N, G, w_layout, z_layout, BANDS)
    w2, z2 = _w_tile(words_ptr, zs_ptr, kt_lo + 2, kt_hi, pid_n, N, G, w_layout, z_layout, BANDS)
    w3, z3 = _w_tile(words_ptr, zs_ptr, kt_lo + 3, kt_hi, pid_n, N, G, w_layout, z_layout, BANDS)
    if PDL:
        _griddep("wait")
    x0 = _x_tile(x_ptr, kt_lo, kt_hi, M, stride_xm, off_t, b_layout, BT)
    x1 = _x_tile(x_ptr, kt_lo + 1, kt_hi, M, stride_xm, off_t, b_layout, BT)
    x2 = _x_tile(x_ptr, kt_lo + 2, kt_hi, M, stride_xm, off_t, b_layout, BT)
    x3 = _x_tile(x_ptr, kt_lo + 3, kt_hi, M, stride_xm, off_t, b_layout, BT)
    for kt in range(kt_lo + 4, kt_hi + 4, 4):
        w4, z4 = _w_tile(words_ptr, zs_ptr, kt, kt_hi, pid_n, N, G, w_layout, z_layout, BANDS)
        w5, z5 = _w_tile(words_ptr, zs_ptr, kt + 1, kt_hi, pid_n, N, G, w_layout, z_layout, BANDS)
        w6, z6 = _w_tile(words_ptr, zs_ptr, kt + 2, kt_hi, pid_n, N, G, w_layout, z_layout, BANDS)
        w7, z7 = _w_tile(words_ptr, zs_ptr, kt + 3, kt_hi, pid_n, N, G, w_layout, z_layout, BANDS)
        x4 = _x_tile(x_ptr, kt, kt_hi, M, stride_xm, off_t, b_layout, BT)
        x5 = _x_tile(x_ptr, kt + 1, kt_hi, M, stride_xm, off_t, b_layout, BT)
        x6 = _x_tile(x_ptr, kt + 2, kt_hi, M, stride_xm, off_t, b_layout, BT)
        x7 = _x_tile(x_ptr, kt + 3, kt_hi, M, stride_xm, off_t, b_layout, BT)
        # tiles past kt_hi are zeros in both operands and add nothing
        acc = mma_v2(_unpack_a(w0, z0, a_layout, W_LAYOUT), x0, acc)
        acc = mma_v2(_unpack_a(w1, z1, a_layout, W_LAYOUT), x1, acc)
        acc = mma_v2(_unpack_a(w2, z2, a_layout, W_LAYOUT), x2, acc)
        acc = mma_v2(_unpack_a(w3, z3, a_layout, W_LAYOUT), x3, acc)
        w0, z0, x0, w1, z1, x1, w2, z2, x2, w3, z3, x3 = w4, z4, x4, w5, z5, x5, w6, z6, x6, w7, z7, x7
    if PDL:
        _griddep("launch_dependents")
    _write_tile(acc, out_ptr, ws_ptr, cnt_ptr, M, N, stride_om, split_k, pid_n, pid_t, pid_s, off_t, mma_layout,
                SPLIT, False, num_warps)


def mma_v2_direct_gemm(x, words, zs, cfg: WgmmaTConfig, out, counters=None):
    """cfg.block_n channels a program (64: one band a warp), cfg.block_t tokens, cfg.split_k slices."""
    m, k = x.shape
    n = zs.shape[1]
    group = k // zs.shape[0]
    split = k_slices(k, 1, cfg)
    ws, counters = split_k_buffers(x, n, split, cfg, out, zs, counters)
    grid = (n // cfg.block_n, triton.cdiv(m, cfg.block_t), split)
    awq_mma_v2_direct_kernel[grid](x, words, zs, out, ws, counters, m, n, k, x.stride(0), out.stride(0), split,
                                   G=group, W_LAYOUT=words_layout(cfg.block_n), BANDS=cfg.block_n // 16,
                                   BT=cfg.block_t, SPLIT=split > 1, num_warps=4, **pdl_launch(x.device, m))
    return out


def mma_v2_gemm(x, words, zs, cfg: WgmmaTConfig, out, counters=None):
    m, k = x.shape
    n = zs.shape[1]
    group = k // zs.shape[0]
    kt = k_tiles_per_step(k, group, cfg)
    split = k_slices(k, kt, cfg)
    ws, counters = split_k_buffers(x, n, split, cfg, out, zs, counters)
    x_desc, w_desc, zs_desc = descriptors(x, words, zs, cfg, kt)
    grid = (n // cfg.block_n, triton.cdiv(m, cfg.block_t), split)
    awq_mma_v2_kernel[grid](x_desc, w_desc, zs_desc, out, ws, counters, m, n, k, out.stride(0), split,
                            G=group, W_LAYOUT=words_layout(cfg.block_n), STAGES=cfg.stages, SPLIT=split > 1,
                            SILU=False, num_warps=4, **pdl_launch(x.device, m))
    return out


LAYERS = [("13b/tp2 o", 2560, 5120), ("13b/tp2 qkv", 5120, 7680), ("13b/tp2 gate_up", 5120, 13824),
          ("13b/tp2 down", 6912, 5120), ("7b o", 4096, 4096), ("7b qkv", 4096, 12288), ("7b gate_up", 4096, 22016),
          ("7b down", 11008, 4096)]


def configs(m: int, n: int):
    """(kernel, config) pairs to time: the TMA-ring kernel at 64/128 channels, 1-4 K slices and a few
    pipeline depths; the direct kernel at 64 channels and 1-16 K slices."""
    bt = 8 if m <= 8 else 16
    ring = [(mma_v2_gemm, WgmmaTConfig(block_n, bt, stages=stages, split_k=split, k_tiles=kt))
            for block_n in (64, 128) if n % block_n == 0 for split in (1, 2, 4)
            for stages, kt in ((4, 4), (8, 4), (4, 2), (8, 2), (8, 1))]
    return ring + [(mma_v2_direct_gemm, WgmmaTConfig(64, bt, split_k=split)) for split in (1, 2, 3, 4, 6, 8, 12, 16)]


def run() -> None:
    from kernels import Layer, graph_time_us
    from pagedawq.kernels.awq_gemm import _counters, awq_gemm
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print(f"{'layer':<18}{'M':>4}{'current':>9}{'direct':>9} {'config':<16}{'x cur':>7}{'err':>9}  (top 3)")
    for name, k, n in LAYERS:
        layer = Layer(k, n, seed=k + n)
        for m in (1, 4, 16):
            x = layer.x(m)
            out = torch.empty(m, n, dtype=torch.float16, device="cuda")
            t_cur = graph_time_us([lambda w=w, r=r: awq_gemm(x, *w, out=out, repacked=r)
                                   for w, r in zip(layer.int4, layer.repacked)], 5, 20)
            res = []
            for kernel, cfg in configs(m, n):
                cnt = _counters(x.device, (n // cfg.block_n) * triton.cdiv(m, cfg.block_t))
                err = 0.0
                try:
                    for _ in range(2):
                        poisoned = torch.full_like(out, float("nan"))
                        kernel(x, *layer.repacked[0], cfg, poisoned, cnt)
                        err = max(err, layer.rel_err(m, poisoned.nan_to_num(1e4)))
                    t = graph_time_us([lambda r=r, c=cfg, f=kernel: f(x, *r, c, out, cnt) for r in layer.repacked],
                                      5, 20)
                except Exception as e:   # noqa: BLE001 - an experiment: report and go on
                    print(f"  {cfg}: {type(e).__name__}: {str(e)[:200]}")
                    continue
                res.append((t, cfg, err))
            res.sort(key=lambda r: r[0])
            for t, cfg, err in res[:3]:
                label = f"{cfg.block_n}x{cfg.block_t}/{cfg.split_k}/s{cfg.stages}/k{cfg.k_tiles}"
                print(f"{name:<18}{m:>4}{t_cur:>9.2f}{t:>9.2f} {label:<16}{t_cur / t:>7.2f}{err:>9.1e}", flush=True)
        layer._ref.clear()
        del layer
        torch.cuda.empty_cache()


def compile_only() -> None:
    """Build the kernels for sm_90 without a GPU (Triton 3.6) and print their SASS size and spills."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from tests.wgmma_sass import _SCALARS, _descs, disassemble
    for bt in (8, 16):
        sig = {"x_ptr": "*fp16", "words_ptr": "*i32", "zs_ptr": "*i32", "out_ptr": "*fp16", "ws_ptr": "*fp32",
               "cnt_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32", "stride_xm": "i32", "stride_om": "i32",
               "split_k": "i32"}
        constexprs = {"G": 128, "W_LAYOUT": words_layout(64), "BANDS": 4, "BT": bt, "SPLIT": True, "PDL": True,
                      "num_warps": 4}
        sig.update({k: "constexpr" for k in constexprs})
        c = triton.compile(GluonASTSource(awq_mma_v2_direct_kernel, sig, constexprs=constexprs),
                           target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        lines = disassemble(c)
        ops = {op: sum(ln.split()[0].startswith(op) or f" {op}" in ln for ln in lines)
               for op in ("HMMA", "LDG", "LDS", "STL", "BAR", "SHF", "LOP3", "HADD2", "HMUL2")}
        print(f"direct 64x{bt}: {len(lines)} SASS instructions, {ops}")
    for block_n, bt, kt, stages in ((64, 8, 4, 4), (64, 16, 2, 8), (128, 8, 4, 4)):
        cfg = WgmmaTConfig(block_n, bt, stages=stages, k_tiles=kt)
        sig = {"x_desc": None, "w_desc": None, "zs_desc": None, **_SCALARS}
        sig.update(_descs(cfg, 128))
        constexprs = {"G": 128, "W_LAYOUT": words_layout(block_n), "STAGES": stages, "SPLIT": True, "PDL": True,
                      "SILU": False, "num_warps": 4}
        sig = {**{k: v for k, v in sig.items() if k not in constexprs}, **{k: "constexpr" for k in constexprs}}
        src = GluonASTSource(awq_mma_v2_kernel, sig, constexprs=constexprs)
        c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        lines = disassemble(c)
        print(f"{block_n}x{bt} kt{kt} s{stages}: {len(lines)} SASS instructions, "
              f"HMMA {sum('HMMA' in ln for ln in lines)}, spills {sum('STL' in ln for ln in lines)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    compile_only() if args.compile else run()
