"""An AWQ int4 GEMM for Hopper computed transposed, with the weights as wgmma's register operand.

``out^T [N, M] = W^T [N, K] @ x^T [K, M]``: the output channels are wgmma's M side (64 rows a
warpgroup) and the tokens its N side (any multiple of 8 up to 256). Why:

* The unpacked weights never touch shared memory. wgmma takes its A operand from registers; each
  warpgroup unpacks its 64 rows of W^T straight into the registers the instruction reads, so a K
  tile costs no shared-memory store of W, no fence and no CTA-wide barrier between the unpack and
  the MMA. (The kernel this replaced, sessions 4-5, had W as the B operand: it needed all three,
  and its shared-memory traffic, ~140 bytes a cycle at 128 x 256 tiles, exceeded the SM's 128.)
* Small token counts waste nothing: a 32-token batch is one m64n32k16 wgmma per warpgroup and K
  step instead of a 64- or 128-row tile mostly of padding, so the kernel can stream the weights at
  M = 16-128 as well as compute at M = 512.

For the register layout the weights are repacked once, at load time (``repack``), from the
AutoAWQ checkpoint layout; the checkpoint on disk is unchanged. Each thread reads its 32 codes of a
K tile (2 rows x 16 k) as one 16-byte word group, and the zero point and scale of a (group, column)
come as one int32 (fp16 ``1024 + z`` | fp16 ``s``). The unpack is the PTX of ``awq_kernels``
(``(w >> 4i) & 0x000F000F | 0x64006400`` = two fp16 ``1024 + q``, minus ``1024 + z``, times s):
exactly ``pack.dequantize_awq`` rounded to fp16. At token tiles up to ``GROUP_SCALE_MAX_T`` (64), where
the unpack's instructions bound the kernel, the tiles hold the exact ``q - z`` instead (one shift
and no multiply a word, ``UNPACK_UNSCALED``) and each group's product is scaled in fp32 after its
wgmmas (``_mma_step``), as ``awq_kernels`` does with ``SCALE_W`` off.

x, the packed words and the zero/scale rows come by TMA, one 3-D box each per pipeline step of 1, 2
or 4 K tiles, ``STAGES`` steps ahead (every TMA instruction costs a CTA barrier that Triton's
membar pass puts before it: one box per step and operand, not per K tile). Each
wgmma is waited for before the next tile is unpacked (see ``_step``: its A registers would be
overwritten while it runs), so a program's unpack and its MMA alternate; a program is one
warpgroup, and the two to four programs that share an SM keep its tensor cores busy in turn.
Split-K: at token tiles up to ``CLUSTER_MAX_T`` the K slices of a tile are one thread-block
cluster and sum their fp32 partials through distributed shared memory (``_cluster_sum_tile``,
``pagedawq.kernels.clusters``); otherwise as in ``awq_kernels`` (partials in a global workspace;
the last slice of a tile to arrive, found with an atomic counter that it then resets, sums them in
slice order: deterministic, the same bits either way), or, with ``split_k_partials``, the partials
handed to the consumer (``pagedawq.kernels.split_k``).

Measured on the H100 (benchmarks/notes/awq_gemm.md, session 6): 1.1-1.9x the previous choice of
``awq_gemm`` at M = 2-2048 on the Llama-2-7B and 13B/TP=2 layers. Gluon has no CPU interpreter:
the CPU tests check ``repack`` against the checkpoint layout and compile the kernel for sm_90.
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from pagedawq.kernels.awq_configs import CLUSTER_MAX_T, WgmmaTConfig, k_tiles_per_step, nonempty_split
from pagedawq.kernels import l2_hints
from pagedawq.kernels.awq_kernels import _CONSTRAINTS_SCALED, _F16X8, _UNPACK_F16_SCALED
from pagedawq.kernels.one_shot_allreduce import PushedOutput, PushTarget
from pagedawq.kernels.clusters import (CLUSTER_SIZES, arrive_cluster, init_push_barrier, launch_clustered,
                                       load_shared, push_pairs, smem_address, wait_for_bytes, wait_for_cluster)
from pagedawq.kernels.pdl import pdl_launch
from pagedawq.kernels.split_k import SplitKPartials
from pagedawq.quant.pack import PACK_FACTOR, pack_int4, unpack_int4

UNPACK = gl.constexpr(_UNPACK_F16_SCALED.value)
CONSTRAINTS = gl.constexpr(_CONSTRAINTS_SCALED.value)
F16X8 = gl.constexpr(_F16X8.value)
# q - z without the scale, for steps whose product is scaled per group in fp32 (``_mma_step``). The
# odd nibbles need no shift: masked in place they read as fp16 1024 + 16q, and
# fma((1024 + 16q), 1/16, -(64 + z)) is q - z exactly (every value a small integer), so a word costs
# one shift, four lop3, two sub and two fma instead of three shifts, four lop3, four sub and four mul.
# Inputs: $8 the word, $9 the zero pair (1024 + z), $10 the pair -(64 + z).
UNPACK_UNSCALED = gl.constexpr("""{
.reg .b32 w, v, h;
mov.b32 h, 0x2c002c00;
lop3.b32 v, $8, 0x000f000f, 0x64006400, 0xea;
sub.f16x2 v, v, $9;
mov.b32 {$0, $1}, v;
lop3.b32 v, $8, 0x00f000f0, 0x64006400, 0xea;
fma.rn.f16x2 v, v, h, $10;
mov.b32 {$2, $3}, v;
shr.u32 w, $8, 8;
lop3.b32 v, w, 0x000f000f, 0x64006400, 0xea;
sub.f16x2 v, v, $9;
mov.b32 {$4, $5}, v;
lop3.b32 v, w, 0x00f000f0, 0x64006400, 0xea;
fma.rn.f16x2 v, v, h, $10;
mov.b32 {$6, $7}, v;
}""")
CONSTRAINTS_UNSCALED = gl.constexpr("=h,=h,=h,=h,=h,=h,=h,=h,r,r,r")
# Token tiles up to which a step's product is scaled per group in fp32 after its wgmmas instead of
# each weight before them: a separate accumulator per group in the step (4-32 registers a thread
# at 8-64 tokens), and two fp16 instructions a weight pair fewer in the unpack, which is what
# bounds a small-M program (H100, ncu, 7B down at M = 1: a warp issues every 4.3 cycles, two warps
# a scheduler, the SM busy 74% of the kernel while DRAM runs at half its bandwidth). Measured on
# the H100 (session 10): 7B down 0.94x the time at M = 1, 0.95x at 64, gate_up 0.98x / 0.91x; the
# batch-1 decode graph 0.96x.
GROUP_SCALE_MAX_T = gl.constexpr(64)
# The TMA load and the CTA barrier were renamed between Triton 3.6 (the GPU image) and 3.9 (the CPU
# wheel); same operations.
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
l2_hints.install()   # the kernels here mark their weight streams for an L2 evict-first hint (STREAM_W)
_cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier
# What a Triton whose Gluon API differs from the one this kernel is written for raises when it
# builds the kernel (a renamed builtin, a changed signature, a compilation error); awq_gemm then
# stops choosing this path.
BUILD_ERRORS = (triton.CompilationError, AttributeError, TypeError, ImportError)

BLOCK_K = 64
BAND = 16          # rows of W^T per warp (one wgmma row slice)
BAND_WORDS = 128   # int32 words of one band and K tile: 16 rows x 64 k x 4 bits


def silu_channel_order(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The output channels of a gate/up layer ``[gate (N/2) | up (N/2)]`` in the order that lets the
    kernel's epilogue compute ``silu(gate) * up``: in 16-row band b, rows 0-7 are gate channels
    8b .. 8b + 7 and rows 8-15 the up channels of the same index (one thread of wgmma's accumulator
    holds rows r and r + 8 of a band), so band b yields output channels 8b .. 8b + 7."""
    if n % BAND:
        raise ValueError(f"a gate/up pair needs N % {BAND} == 0, got N={n}")
    half = torch.arange(n // 2, device=device).view(-1, 8)
    return torch.stack([half, half + n // 2], dim=1).flatten()


def repack(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
           channel_order: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """AutoAWQ GEMM tensors -> (words [K/64 * N/16, 128] int32, zero/scale [K/G, N] int32), the
    output channels in ``channel_order`` if given (e.g. ``silu_channel_order``).

    Word r of lane l of band b (rows 16b..16b+15) and K tile t holds, in nibble i + 4*k0, the code
    of row n = 16b + 8*n3 + (l >> 2) and k = 64t + k0 + 2*(l & 3) + 8*k3 + 16*i, where r = 2*k3 + n3:
    the pairs (k, k+1) of one row that wgmma's A fragment keeps in one register come out of one
    ``(w >> 4i) & 0x000F000F`` (see the module docstring).
    """
    k, n8 = qweight.shape
    n = n8 * PACK_FACTOR
    if k % BLOCK_K or n % BAND:
        raise ValueError(f"repack needs K % {BLOCK_K} == 0 and N % {BAND} == 0, got K={k}, N={n}")
    words = torch.empty(k // 64 * (n // 16), BAND_WORDS, dtype=torch.int32, device=qweight.device)
    rows = 1024   # K rows per chunk: bounds the temporaries (the 70B layers are loaded on a full GPU)
    order = None if channel_order is None else channel_order.to(qweight.device)
    for r0 in range(0, k, rows):
        q = unpack_int4(qweight[r0:r0 + rows]).to(torch.uint8)
        if order is not None:
            q = q[:, order]
        kc = q.shape[0]
        # k = 64t + 32k5 + 16k4 + 8k3 + 4k2 + 2k1 + k0 ; n = 16b + 8n3 + 4n2 + 2n1 + n0
        q = q.view(kc // 64, 2, 2, 2, 2, 2, 2, n // 16, 2, 2, 2, 2)
        # -> [t, b, (lane: n2 n1 n0 k2 k1), (r: k3 n3), (nibble: k0 k5 k4)]
        q = q.permute(0, 7, 9, 10, 11, 4, 5, 3, 8, 6, 1, 2).reshape(-1, BAND_WORDS, 8)
        chunk = words[r0 // 64 * (n // 16):(r0 + kc) // 64 * (n // 16)]
        chunk.copy_(q[..., 0])
        for nibble in range(1, 8):
            chunk |= q[..., nibble].to(torch.int32) << (4 * nibble)   # wraps into the sign bit at 7
    z, s = unpack_int4(qzeros), scales
    if order is not None:
        z, s = z[:, order], s[:, order]
    z = (z.to(torch.float16) + 1024).view(torch.int16).to(torch.int32)   # exact below 2048
    s = s.to(torch.float16).view(torch.int16).to(torch.int32)
    return words, ((z & 0xFFFF) | (s << 16)).contiguous()


def unrepack(words: torch.Tensor, zs: torch.Tensor, channel_order: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inverse of ``repack``: the AutoAWQ GEMM tensors (qweight, qzeros, fp16 scales) of a layer
    held only in the kernel's layout, bit for bit (``channel_order``: the order it was repacked in).
    The linear method keeps a Hopper layer's weights once, repacked; a call that another path serves
    rebuilds the checkpoint tensors from them here, inside CUDA graph captures too (no host reads)."""
    n = zs.shape[1]
    k = words.shape[0] // (n // BAND) * BLOCK_K
    qweight = torch.empty(k, n // PACK_FACTOR, dtype=torch.int32, device=words.device)
    inverse = None
    if channel_order is not None:   # order[inverse] = 0 .. N-1, without a host copy or a sort
        inverse = torch.empty_like(channel_order)
        inverse[channel_order] = torch.arange(n, device=channel_order.device)
        inverse = inverse.to(words.device)
    rows = 1024   # K rows per chunk, as in repack
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=words.device)
    for r0 in range(0, k, rows):
        kc = min(rows, k - r0)
        chunk = words[r0 // 64 * (n // 16):(r0 + kc) // 64 * (n // 16)]
        q = ((chunk.unsqueeze(-1) >> shifts) & 0xF).to(torch.uint8)   # [rows, 128, nibble]
        # [t, b, (n2 n1 n0 k2 k1), (k3 n3), (k0 k5 k4)] -> [t, k5, k4, k3, k2, k1, k0, b, n3, n2, n1, n0]
        q = q.view(kc // 64, n // 16, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2)
        q = q.permute(0, 10, 11, 7, 5, 6, 9, 1, 8, 2, 3, 4).reshape(kc, n)
        if inverse is not None:
            q = q[:, inverse]
        qweight[r0:r0 + kc] = pack_int4(q, check_range=False)
    z = ((zs & 0xFFFF).to(torch.int16).view(torch.float16).float() - 1024).to(torch.int32)
    s = (zs >> 16).to(torch.int16).view(torch.float16)
    if inverse is not None:
        z, s = z[:, inverse], s[:, inverse]
    return qweight, pack_int4(z, check_range=False), s.contiguous()


@lru_cache(maxsize=None)
def _is_hopper(device: torch.device) -> bool:
    return torch.version.hip is None and torch.cuda.get_device_capability(device)[0] == 9


def supports_layer(device: torch.device, n: int, k: int, group: int, scales_dtype: torch.dtype) -> bool:
    """Whether this kernel can run an [K, N] layer on ``device``: Hopper, fp16 scales, N % 64 == 0,
    K and the group size multiples of 64 (checked once, when the layer is repacked)."""
    return (device.type == "cuda" and _is_hopper(device) and scales_dtype == torch.float16
            and n % 64 == 0 and k % BLOCK_K == 0 and group % BLOCK_K == 0)


def supports(x: torch.Tensor, n: int, k: int, group: int, scales_dtype: torch.dtype) -> bool:
    """``supports_layer`` for x's device, and x fp16, row-major with 16-byte aligned rows (TMA)."""
    return (supports_layer(x.device, n, k, group, scales_dtype) and x.dtype == torch.float16
            and x.stride(1) == 1 and (x.stride(0) * 2) % 16 == 0 and x.data_ptr() % 16 == 0)


@gluon.constexpr_function
def words_layout(block_n: int) -> gl.DistributedLinearLayout:
    """[BLOCK_N, 8] words (row n, column c = k1 + 2*k2 + 4*k3) as ``repack`` lays them out: each
    thread's four of a K tile are one 16-byte load. Warp w holds bands w, w + 4, ... (rows 16w +
    64r: the rows of its share of the r-th m64 wgmma)."""
    reps = [[64 << i, 0] for i in range((block_n // 64).bit_length() - 1)]
    return gl.DistributedLinearLayout(reg_bases=[[8, 0], [0, 4], *reps],
                                      lane_bases=[[0, 1], [0, 2], [1, 0], [2, 0], [4, 0]],
                                      warp_bases=[[16, 0], [32, 0]], block_bases=[], shape=[block_n, 8])


@gluon.jit
def _unpack_a(wq, zs, a_layout: gl.constexpr, w_layout: gl.constexpr, SCALED: gl.constexpr = True):
    """Packed words [BANDS, 128] + zero/scale [BN] -> W^T tile [BN, 64] fp16 in wgmma's A layout:
    s * (q - z) as ``dequantize_awq`` rounds it, or without ``SCALED`` the exact q - z."""
    BANDS: gl.constexpr = wq.shape[0]
    BN: gl.constexpr = BANDS * 16
    # [band, (n2 n1 n0 k2 k1), (k3 n3)] -> [n, c]
    w = gl.reshape(wq, [BANDS, 2, 2, 2, 2, 2, 2, 2])
    w = gl.permute(w, (0, 7, 1, 2, 3, 6, 4, 5))
    w = gl.convert_layout(gl.reshape(w, [BN, 8]), w_layout, assert_trivial=True)
    zz = gl.inline_asm_elementwise("prmt.b32 $0, $1, $1, 0x1010;", "=r,r", [zs], dtype=gl.int32, is_pure=True,
                                   pack=1)
    if SCALED:
        ss = gl.inline_asm_elementwise("prmt.b32 $0, $1, $1, 0x3232;", "=r,r", [zs], dtype=gl.int32, is_pure=True,
                                       pack=1)
        zz = zz[:, None]
        ss = ss[:, None]
        o = gl.inline_asm_elementwise(UNPACK, CONSTRAINTS, [w, zz, zz, zz, zz, ss, ss, ss, ss], dtype=F16X8,
                                      is_pure=True, pack=1)
    else:   # -(64 + z) = 960 - (1024 + z), exact
        cc = gl.inline_asm_elementwise("{ .reg .b32 t; mov.b32 t, 0x63806380; sub.f16x2 $0, t, $1; }", "=r,r", [zz],
                                       dtype=gl.int32, is_pure=True, pack=1)
        o = gl.inline_asm_elementwise(UNPACK_UNSCALED, CONSTRAINTS_UNSCALED, [w, zz[:, None], cc[:, None]],
                                      dtype=F16X8, is_pure=True, pack=1)
    # output 2p + k0 of word c is k = k0 + 2*k1 + 4*k2 + 8*k3 + 16*p (p = k4 + 2*k5)
    t = gl.join(gl.join(gl.join(o[0], o[1]), gl.join(o[2], o[3])), gl.join(gl.join(o[4], o[5]), gl.join(o[6], o[7])))
    t = gl.reshape(t, [BN, 2, 2, 2, 2, 2, 2])               # [n, k3, k2, k1, k0, k4, k5]
    t = gl.permute(t, (0, 6, 5, 1, 2, 3, 4))                # [n, k5, k4, k3, k2, k1, k0]
    return gl.convert_layout(gl.reshape(t, [BN, 64]), a_layout, assert_trivial=True)


@gluon.jit
def _load_weights(s, kt, x_desc, w_desc, zs_desc, w_bufs, z_bufs, bars, pid_n, G: gl.constexpr):
    """TMA of the packed words and zero/scale rows of the step's K tiles kt .. kt + KT - 1 into stage
    ``s``, on the stage's barrier, which then expects the step's x too (``_load_x``). One 3-D box per
    operand and step whatever KT: each TMA instruction costs a CTA barrier that Triton's membar pass
    puts before it."""
    BANDS: gl.constexpr = w_desc.block_type.shape[1]
    nbytes: gl.constexpr = x_desc.block_type.nbytes + w_desc.block_type.nbytes + zs_desc.block_type.nbytes
    mbarrier.expect(bars.index(s), nbytes)
    _tma_load(w_desc, [kt, pid_n * BANDS, 0], bars.index(s), w_bufs.index(s))
    _tma_load(zs_desc, [(kt * 64) // G, pid_n * 16 * BANDS], bars.index(s), z_bufs.index(s))


@gluon.jit
def _load_x(s, kt, x_desc, x_bufs, bars, off_t):
    """TMA of the step's KT tiles of x into stage ``s`` (one 3-D box)."""
    _tma_load(x_desc, [kt, off_t, 0], bars.index(s), x_bufs.index(s))


@gluon.jit
def _load_step(s, kt, x_desc, w_desc, zs_desc, x_bufs, w_bufs, z_bufs, bars, off_t, pid_n, G: gl.constexpr):
    """All of a step's operands into stage ``s``."""
    _load_weights(s, kt, x_desc, w_desc, zs_desc, w_bufs, z_bufs, bars, pid_n, G)
    _load_x(s, kt, x_desc, x_bufs, bars, off_t)


@gluon.jit
def _unpack_buf(w_bufs, z_bufs, s, j: gl.constexpr, G: gl.constexpr, a_layout: gl.constexpr,
                W_LAYOUT: gl.constexpr, num_warps: gl.constexpr, SCALED: gl.constexpr = True):
    """W^T of K tile j of stage s in wgmma's A layout (``_unpack_a``)."""
    KT: gl.constexpr = w_bufs.shape[1]
    BANDS: gl.constexpr = w_bufs.shape[2]
    words = w_bufs.index(s).reshape([KT * BANDS, 128]).slice(j * BANDS, BANDS)
    wq = words.load(gl.BlockedLayout([1, 4], [1, 32], [num_warps, 1], [1, 0]))
    BN: gl.constexpr = 16 * BANDS
    R: gl.constexpr = z_bufs.shape[1]
    zs = z_bufs.index(s).reshape([R * BN]).slice(((j * 64) // G) * BN, BN).load(gl.SliceLayout(1, W_LAYOUT))
    return _unpack_a(wq, zs, a_layout, W_LAYOUT, SCALED)


@gluon.jit
def _group_scale(z_bufs, s, g: gl.constexpr, layout: gl.constexpr):
    """The scales [BN] of group row g of stage s in fp32, in ``layout`` (a slice of the accumulator's)."""
    BN: gl.constexpr = z_bufs.shape[2]
    R: gl.constexpr = z_bufs.shape[1]
    zs = z_bufs.index(s).reshape([R * BN]).slice(g * BN, BN).load(layout)
    return (zs >> 16).to(gl.int16).to(gl.float16, bitcast=True).to(gl.float32)


@gluon.jit
def _mma_step(x_buf, w_bufs, z_bufs, b, acc, use_acc, G: gl.constexpr, a_layout: gl.constexpr,
              W_LAYOUT: gl.constexpr, num_warps: gl.constexpr, GS_MAX_T: gl.constexpr = GROUP_SCALE_MAX_T):
    """One pipeline step's product: unpack the KT K tiles of word buffer ``b`` into registers, run
    their wgmmas against ``x_buf`` [KT, BT, 64], and wait for them.

    All of a step's unpacks come before its first wgmma, and the wgmmas are waited for before the
    next step's unpack: a wgmma reads its A registers asynchronously, and ptxas reuses them for
    later unpacks while it may still run (with one wgmma left in flight across the unpack of the
    next tile, 148 of 392 configuration x shape checks on the H100 came out wrong). The unpack
    overlaps the tensor cores across warpgroups instead (programs sharing an SM, or the consumers
    of ``awq_wgmma_t_ws``); KT > 1 spreads each step's fixed cost (barrier wait, wgmma latency, TMA
    issue) over more of the weight stream.

    Token tiles up to ``GS_MAX_T`` (groups of whole K tiles): the tiles hold the exact
    q - z, each group of the step gets its own accumulator, and after the wait ``acc += s * acc_g``
    in fp32 (``use_acc`` is then moot: ``acc`` starts at zero). Otherwise the tiles hold
    s * (q - z) rounded to fp16 and chain into ``acc``."""
    KT: gl.constexpr = x_buf.shape[0]
    BT: gl.constexpr = x_buf.shape[1]
    GS: gl.constexpr = BT <= GS_MAX_T and G % 64 == 0
    xs = x_buf.reshape([KT * BT, x_buf.shape[2]])   # K tile j: rows j*BT ..
    a0 = _unpack_buf(w_bufs, z_bufs, b, 0, G, a_layout, W_LAYOUT, num_warps, not GS)
    x0 = xs.slice(0, BT).permute((1, 0))
    a1, a2, a3, x1, x2, x3 = a0, a0, a0, x0, x0, x0   # placeholders where KT < 4
    if KT >= 2:
        a1 = _unpack_buf(w_bufs, z_bufs, b, 1, G, a_layout, W_LAYOUT, num_warps, not GS)
        x1 = xs.slice(BT, BT).permute((1, 0))
    if KT == 4:
        a2 = _unpack_buf(w_bufs, z_bufs, b, 2, G, a_layout, W_LAYOUT, num_warps, not GS)
        a3 = _unpack_buf(w_bufs, z_bufs, b, 3, G, a_layout, W_LAYOUT, num_warps, not GS)
        x2 = xs.slice(2 * BT, BT).permute((1, 0))
        x3 = xs.slice(3 * BT, BT).permute((1, 0))
    if GS:
        acc = _group_scaled_mmas(a0, a1, a2, a3, x0, x1, x2, x3, acc, z_bufs, b, KT, KT * 64 // G if KT * 64 > G else 1)
    else:
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(_chain(a0, a1, a2, a3, x0, x1, x2, x3, acc, use_acc, KT), ))
    return acc


@gluon.jit
def _chain(a0, a1, a2, a3, x0, x1, x2, x3, acc, use_acc, KT: gl.constexpr):
    """The asynchronous wgmmas of KT tiles chained into ``acc`` (the caller waits for them)."""
    acc = warpgroup_mma(a0, x0, acc, use_acc=use_acc, is_async=True)
    if KT >= 2:
        acc = warpgroup_mma(a1, x1, acc, is_async=True)
    if KT == 4:
        acc = warpgroup_mma(a2, x2, acc, is_async=True)
        acc = warpgroup_mma(a3, x3, acc, is_async=True)
    return acc


@gluon.jit
def _group_scaled_mmas(a0, a1, a2, a3, x0, x1, x2, x3, acc, z_bufs, b, KT: gl.constexpr, NG: gl.constexpr):
    """``acc + sum_g s_g * (x @ (q - z))_g`` over the NG groups of a step's KT tiles (``_mma_step``):
    a fresh accumulator a group (its tiles chained), one wait, then the fp32 scaling. Tiles past KT
    are placeholders."""
    rows: gl.constexpr = gl.SliceLayout(1, acc.type.layout)
    if NG == 1:
        g0 = warpgroup_mma_wait(num_outstanding=0, deps=(_chain(a0, a1, a2, a3, x0, x1, x2, x3, acc, False, KT), ))
        acc = acc + g0 * _group_scale(z_bufs, b, 0, rows)[:, None]
    elif NG == 4:   # a group a K tile
        g0 = warpgroup_mma(a0, x0, acc, use_acc=False, is_async=True)
        g1 = warpgroup_mma(a1, x1, acc, use_acc=False, is_async=True)
        g2 = warpgroup_mma(a2, x2, acc, use_acc=False, is_async=True)
        g3 = warpgroup_mma(a3, x3, acc, use_acc=False, is_async=True)
        g0, g1, g2, g3 = warpgroup_mma_wait(num_outstanding=0, deps=(g0, g1, g2, g3))
        acc = (acc + g0 * _group_scale(z_bufs, b, 0, rows)[:, None] + g1 * _group_scale(z_bufs, b, 1, rows)[:, None]
               + g2 * _group_scale(z_bufs, b, 2, rows)[:, None] + g3 * _group_scale(z_bufs, b, 3, rows)[:, None])
    else:           # two groups: of one K tile each (KT = 2) or of two (KT = 4)
        g0 = warpgroup_mma(a0, x0, acc, use_acc=False, is_async=True)
        if KT == 4:
            g0 = warpgroup_mma(a1, x1, g0, is_async=True)
            g1 = warpgroup_mma(a2, x2, acc, use_acc=False, is_async=True)
            g1 = warpgroup_mma(a3, x3, g1, is_async=True)
        else:
            g1 = warpgroup_mma(a1, x1, acc, use_acc=False, is_async=True)
        g0, g1 = warpgroup_mma_wait(num_outstanding=0, deps=(g0, g1))
        acc = acc + g0 * _group_scale(z_bufs, b, 0, rows)[:, None] + g1 * _group_scale(z_bufs, b, 1, rows)[:, None]
    return acc


@gluon.jit
def _step(i, kt_lo, acc, use_acc, x_desc, w_desc, zs_desc, x_bufs, w_bufs, z_bufs, bars, off_t, pid_n,
          n_steps, G: gl.constexpr, STAGES: gl.constexpr, a_layout: gl.constexpr, W_LAYOUT: gl.constexpr,
          num_warps: gl.constexpr):
    """The program's i-th step: wait for its stage, ``_mma_step``, then refill the stage with step
    i + STAGES."""
    KT: gl.constexpr = x_desc.block_type.shape[0]
    s = i % STAGES
    mbarrier.wait(bars.index(s), (i // STAGES) & 1)
    acc = _mma_step(x_bufs.index(s), w_bufs, z_bufs, s, acc, use_acc, G, a_layout, W_LAYOUT, num_warps)
    ni = i + STAGES
    if ni < n_steps:
        _load_step(s, kt_lo + ni * KT, x_desc, w_desc, zs_desc, x_bufs, w_bufs, z_bufs, bars, off_t, pid_n, G)
    return acc


@gluon.jit
def mark_weight_stream():
    """Mark the calling kernel's 2nd and 3rd TMA descriptors (w and zs: read once) for the L2
    evict-first hint that ``l2_hints`` writes into the PTX. The comment is the mark (it must read
    ``l2_hints.marker(1, 2)``); the move is there to carry it and does nothing."""
    gl.inline_asm_elementwise("// pagedawq:l2-evict-first-descriptors 1 2\n\tmov.b32 $0, $1;", "=r,r",
                              [gl.program_id(0)], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit(do_not_specialize=["M", "split_k", "cluster_smem"])
def awq_wgmma_t_kernel(x_desc, w_desc, zs_desc, out_ptr, ws_ptr, cnt_ptr, M, N, K, stride_om, split_k,
                       G: gl.constexpr, W_LAYOUT: gl.constexpr, STAGES: gl.constexpr, SPLIT: gl.constexpr,
                       PDL: gl.constexpr, SILU: gl.constexpr, num_warps: gl.constexpr, DEFER: gl.constexpr = False,
                       CLUSTER: gl.constexpr = 1, cluster_smem=0, push_ptr=0, PUSH_RANK: gl.constexpr = 0,
                       PUSH_WORLD: gl.constexpr = 0, STREAM_W: gl.constexpr = False):
    """One [BLOCK_N channels, BLOCK_T tokens] tile of out^T (program ids 0, 1) over one K slice (2),
    KT K tiles a step (the host makes KT divide the number of K tiles). With ``PDL`` (the launch has
    the programmatic-dependent attribute, ``pagedawq.kernels.pdl``) the first stages' weights are
    requested before the wait for the previous kernel, x after it, and the next kernel may be
    scheduled once every program has left the main loop. With ``SILU`` the layer is a gate/up pair
    repacked in ``silu_channel_order`` and out [M, N / 2] receives ``silu(gate) * up``. ``DEFER``:
    the K slices' partials are left in the workspace for the consumer (``_write_tile``). ``CLUSTER``
    (= ``split_k``): the K slices of a tile are one cluster along axis 0 (``clusters``) and sum their
    partials through distributed shared memory at byte ``cluster_smem`` (``_cluster_sum_tile``).
    ``PUSH_WORLD`` > 0: the output goes to the receive slots of the all-reduce after a row-parallel
    layer of that many ranks (``push_ptr``: ``one_shot_allreduce.PushTarget``'s table; this is rank
    ``PUSH_RANK``), not to ``out_ptr`` (``_push_tile``). ``STREAM_W`` (one token tile: each weight
    is read once): the w and zs loads stream with an L2 evict-first hint (``mark_weight_stream``)."""
    if STREAM_W:
        mark_weight_stream()
    KT: gl.constexpr = x_desc.block_type.shape[0]
    BT: gl.constexpr = x_desc.block_type.shape[1]
    BK: gl.constexpr = x_desc.block_type.shape[2]
    BANDS: gl.constexpr = w_desc.block_type.shape[1]
    BN: gl.constexpr = 16 * BANDS
    R: gl.constexpr = zs_desc.block_type.shape[0]
    if CLUSTER > 1:
        pid_n = gl.program_id(0) // CLUSTER
        pid_s = gl.program_id(0) % CLUSTER
        init_push_barrier(smem_address(cluster_smem))
        arrive_cluster()
    else:
        pid_n = gl.program_id(0)
        pid_s = gl.program_id(2)
    pid_t = gl.program_id(1)
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
    n_steps = gl.minimum(per_split, k_steps - pid_s * per_split)    # >= 1: no empty slices
    for i in gl.static_range(STAGES):
        if i < n_steps:
            _load_weights(i, kt_lo + i * KT, x_desc, w_desc, zs_desc, w_bufs, z_bufs, bars, pid_n, G)
    if PDL:   # x (and the workspace, counters and output written below) may belong to the previous kernel
        _griddep("wait")
    for i in gl.static_range(STAGES):
        if i < n_steps:
            _load_x(i, kt_lo + i * KT, x_desc, x_bufs, bars, off_t)

    mma_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, BT, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma_layout, k_width=2)
    acc = gl.zeros([BN, BT], dtype=gl.float32, layout=mma_layout)

    for i in range(n_steps):
        acc = _step(i, kt_lo, acc, i > 0, x_desc, w_desc, zs_desc, x_bufs, w_bufs, z_bufs, bars, off_t, pid_n,
                    n_steps, G, STAGES, a_layout, W_LAYOUT, num_warps)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(i))
    if PDL:   # the next kernel may be scheduled now; it waits for this one to finish (pdl.py)
        _griddep("launch_dependents")

    if CLUSTER > 1:
        _cluster_sum_tile(acc, out_ptr, M, stride_om, pid_n, pid_s, off_t, cluster_smem, CLUSTER, SILU, mma_layout,
                          num_warps, push_ptr, PUSH_RANK, PUSH_WORLD)
    else:
        _write_tile(acc, out_ptr, ws_ptr, cnt_ptr, M, N, stride_om, split_k, pid_n, pid_t, pid_s, off_t,
                    mma_layout, SPLIT, SILU, num_warps, DEFER, push_ptr, PUSH_RANK, PUSH_WORLD)


@gluon.jit
def _cluster_sum_tile(acc, out_ptr, M, stride_om, tile_n, rank, off_t, cluster_smem, CLUSTER: gl.constexpr,
                      SILU: gl.constexpr, mma_layout: gl.constexpr, num_warps: gl.constexpr, push_ptr=0,
                      PUSH_RANK: gl.constexpr = 0, PUSH_WORLD: gl.constexpr = 0):
    """The K slices of output tile ``tile_n`` are the ``CLUSTER`` CTAs of a cluster (``rank`` = slice),
    and slice r sums channels r * BN / CLUSTER .. of the tile. Each pushes every channel's partial
    to its owner's shared memory (``push_pairs``; fp32 [slice, channel, token] after the mbarrier at
    ``cluster_smem`` that ``init_push_barrier`` set up at the kernel's start, each channel's row
    padded by two words so that the owner's reads of 32 channels hit distinct bank pairs) and may
    then exit; the owner waits for all the bytes, adds the slices in slice order from zero (the bits
    ``_write_tile``'s reduction gives) and stores its channels rounded to fp16. With ``SILU`` a chunk
    is whole 16-row bands of gate/up pairs (``silu_channel_order``), and the owner stores
    ``silu(gate) * up`` of its pairs as ``_store_out`` does. With ``PUSH_WORLD`` the owner pushes its
    channels instead (``_push_tile``; row stride ``stride_om``)."""
    BN: gl.constexpr = acc.shape[0]
    BT: gl.constexpr = acc.shape[1]
    CH: gl.constexpr = BN // CLUSTER
    ROW: gl.constexpr = BT + 2
    gl.static_assert(not SILU or PUSH_WORLD == 0, "the SiLU epilogue's output is not pushed")
    bar = smem_address(cluster_smem)
    base = bar + 16
    rn = gl.arange(0, BN, layout=gl.SliceLayout(1, mma_layout))[:, None]
    rt = gl.arange(0, BT, layout=gl.SliceLayout(0, mma_layout))[None, :]
    addr = base + ((rank * CH + rn % CH) * ROW + rt) * 4
    wait_for_cluster()   # every peer's mbarrier is initialised
    push_pairs(addr, acc, rn // CH + rt * 0, bar + addr * 0)
    OUT_CH: gl.constexpr = CH // 2 if SILU else CH
    TN: gl.constexpr = OUT_CH if OUT_CH < 32 else 32
    layout: gl.constexpr = gl.BlockedLayout([1, 1], [TN, 32 // TN], [1, num_warps], [0, 1])
    cn = gl.arange(0, OUT_CH, layout=gl.SliceLayout(1, layout))[:, None]
    ct = gl.arange(0, BT, layout=gl.SliceLayout(0, layout))[None, :]
    tok = off_t + ct
    wait_for_bytes(bar, BN * BT * 4)
    if SILU:   # output channel i of the chunk: gate row (i // 8) * 16 + i % 8 of its band, up row 8 below
        gate_row = cn // 8 * 16 + cn % 8
        g = gl.zeros([OUT_CH, BT], dtype=gl.float32, layout=layout)
        u = gl.zeros([OUT_CH, BT], dtype=gl.float32, layout=layout)
        for s in gl.static_range(CLUSTER):
            g += load_shared(base + ((s * CH + gate_row) * ROW + ct) * 4)
            u += load_shared(base + ((s * CH + gate_row + 8) * ROW + ct) * 4)
        g = g.to(gl.float16).to(gl.float32)
        u = u.to(gl.float16).to(gl.float32)
        gl.store(out_ptr + tok * stride_om + (tile_n * BN + rank * CH) // 2 + cn,
                 (g / (1.0 + gl.exp(-g)) * u).to(gl.float16), mask=tok < M)
    else:
        total = gl.zeros([CH, BT], dtype=gl.float32, layout=layout)
        for s in gl.static_range(CLUSTER):
            total += load_shared(base + ((s * CH + cn) * ROW + ct) * 4)
        if PUSH_WORLD > 0:
            _push_tile(total.to(gl.float16), tok, tile_n * BN + rank * CH + cn, tok < M, stride_om, push_ptr,
                       PUSH_RANK, PUSH_WORLD)
        else:
            gl.store(out_ptr + tok * stride_om + tile_n * BN + rank * CH + cn, total.to(gl.float16), mask=tok < M)


@gluon.jit
def _push_tile(val, rows, cols, mask, stride, push_ptr, RANK: gl.constexpr, WORLD: gl.constexpr):
    """A row-parallel layer's fp16 output tile (``val`` at ``rows * stride + cols``) stored straight
    into the receive slot of this rank, in every rank's buffer (its own included), of the next
    one-shot all-reduce call (``one_shot_allreduce.PushTarget``: ``push_ptr`` is its table), negative
    zeros made positive (they mean "empty"): what that kernel would have read and pushed itself.
    Every rank's fused all-reduce + RMSNorm receives the values as they land, without waiting for this
    GEMM to finish. The call's epoch is read here, after the wait for the previous kernel (which
    followed the last call's)."""
    val = gl.where(val.to(gl.int16, bitcast=True) == -32768, gl.zeros_like(val), val)
    epochs = gl.load(push_ptr + WORLD).to(gl.pointer_type(gl.int32))
    capacity = gl.load(push_ptr + WORLD + 1)
    epoch = gl.load(epochs, volatile=True) + 1
    slot = ((epoch & 1) * WORLD + RANK).to(gl.int64) * capacity
    for dst in gl.static_range(WORLD):
        buf = gl.load(push_ptr + dst).to(gl.pointer_type(gl.float16))
        # the slots start 16-byte aligned (as the all-reduce's pushes): said to the compiler, which
        # then stores a thread's 8 consecutive channels at once (an address loaded from memory has
        # no known alignment)
        gl.store(gl.multiple_of(buf + slot, 16) + rows * stride + cols, val, mask=mask)


def cluster_smem_bytes(block_n: int, block_t: int) -> int:
    """Shared memory ``_cluster_sum_tile`` needs past the kernel's own: the mbarrier (16 bytes) and
    the padded fp32 partials of every slice."""
    return 16 + 4 * block_n * (block_t + 2)


@gluon.jit
def _griddep(op: gl.constexpr):
    """``griddepcontrol.wait`` or ``.launch_dependents`` (programmatic dependent launch)."""
    gl.inline_asm_elementwise("griddepcontrol." + op + "; // $0", "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _write_tile(acc, out_ptr, ws_ptr, cnt_ptr, M, N, stride_om, split_k, tile_n, pid_t, pid_s, off_t,
                mma_layout: gl.constexpr, SPLIT: gl.constexpr, SILU: gl.constexpr, num_warps: gl.constexpr,
                DEFER: gl.constexpr = False, push_ptr=0, PUSH_RANK: gl.constexpr = 0, PUSH_WORLD: gl.constexpr = 0):
    """A warpgroup's fp32 tile [BN channels of tile ``tile_n``, BT tokens] to the output: stored
    (``_store_out``), or with split-K its partial to the workspace [split, M, N] and, in the last
    slice to arrive (an atomic counter per output tile, reset by that slice), the sum of the
    partials in slice order (deterministic) stored. With ``DEFER`` only the partial is stored: the
    consumer adds the slices (``pagedawq.kernels.split_k``). With ``PUSH_WORLD`` (unsplit only: the
    last slice resets the device's shared arrival counter after its store, which the all-reduce,
    not waiting for this kernel to finish, could overtake) the tile is pushed (``_push_tile``)."""
    BN: gl.constexpr = acc.shape[0]
    BT: gl.constexpr = acc.shape[1]
    out_layout: gl.constexpr = gl.BlockedLayout([8, 1], [BN // 8, 32 * 8 // BN], [1, num_warps], [0, 1])
    if PUSH_WORLD > 0:
        gl.static_assert(not SPLIT and not SILU, "only an unsplit tile without the SiLU epilogue is pushed")
        rn = tile_n * BN + gl.arange(0, BN, layout=gl.SliceLayout(1, out_layout))
        rt = off_t + gl.arange(0, BT, layout=gl.SliceLayout(0, out_layout))
        _push_tile(gl.convert_layout(acc.to(gl.float16), out_layout), rt[None, :], rn[:, None], (rt < M)[None, :],
                   stride_om, push_ptr, PUSH_RANK, PUSH_WORLD)
    elif not SPLIT:
        _store_out(acc, out_ptr, tile_n, off_t, M, stride_om, mma_layout, out_layout, SILU, num_warps)
    else:
        rn = tile_n * BN + gl.arange(0, BN, layout=gl.SliceLayout(1, out_layout))
        rt = off_t + gl.arange(0, BT, layout=gl.SliceLayout(0, out_layout))
        mask = (rt < M)[None, :]
        ws_ptrs = ws_ptr + rt[None, :] * N + rn[:, None]
        gl.store(ws_ptrs + pid_s * M * N, gl.convert_layout(acc, out_layout), mask=mask)
        if not DEFER:
            _cta_barrier()    # every thread's partial is issued before the counter's release
            tile = pid_t * (N // BN) + tile_n
            arrived = gl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
            if arrived == split_k - 1:
                total = gl.zeros([BN, BT], dtype=gl.float32, layout=out_layout)
                for s in range(split_k):
                    total += gl.load(ws_ptrs + s * M * N, mask=mask, other=0.0, cache_modifier=".cg")
                _store_out(total, out_ptr, tile_n, off_t, M, stride_om, mma_layout, out_layout, SILU, num_warps)
                gl.atomic_xchg(cnt_ptr + tile, 0)


@gluon.jit
def _store_out(val, out_ptr, pid_n, off_t, M, stride_om, mma_layout: gl.constexpr, out_layout: gl.constexpr,
               SILU: gl.constexpr, num_warps: gl.constexpr):
    """Store the fp32 tile ``val`` [BN channels, BT tokens] transposed, ``out[t, n]``, rounded to fp16:
    each thread writes 8 consecutive channels of one token (16 bytes). With ``SILU`` the channels
    are gate/up pairs in the order of ``silu_channel_order`` (rows r and r + 8 of each 16-row band,
    which one thread of wgmma's accumulator layout holds together): it stores
    ``silu(gate) * up`` [BN / 2 channels], computed in fp32 from the fp16-rounded pair as
    ``fused_ops.silu_and_mul`` does."""
    BN: gl.constexpr = val.shape[0]
    BT: gl.constexpr = val.shape[1]
    if SILU:
        h = gl.convert_layout(val, mma_layout).to(gl.float16).to(gl.float32)
        g, u = gl.split(gl.permute(gl.reshape(h, [BN // 16, 2, 8, BT]), (0, 2, 3, 1)))
        y = gl.reshape((g / (1.0 + gl.exp(-g)) * u).to(gl.float16), [BN // 2, BT])
        layout: gl.constexpr = gl.BlockedLayout([8, 1], [BN // 16, 32 * 16 // BN], [1, num_warps], [0, 1])
        rn = pid_n * (BN // 2) + gl.arange(0, BN // 2, layout=gl.SliceLayout(1, layout))
        rt = off_t + gl.arange(0, BT, layout=gl.SliceLayout(0, layout))
        gl.store(out_ptr + rt[None, :] * stride_om + rn[:, None], gl.convert_layout(y, layout),
                 mask=(rt < M)[None, :])
    else:
        rn = pid_n * BN + gl.arange(0, BN, layout=gl.SliceLayout(1, out_layout))
        rt = off_t + gl.arange(0, BT, layout=gl.SliceLayout(0, out_layout))
        gl.store(out_ptr + rt[None, :] * stride_om + rn[:, None], gl.convert_layout(val.to(gl.float16), out_layout),
                 mask=(rt < M)[None, :])


@lru_cache(maxsize=None)
def shared_layouts(cfg: WgmmaTConfig, kt: int):
    """Shared-memory layouts of a step's x tiles, packed-word tiles and zero/scale rows."""
    return (gl.NVMMASharedLayout.get_default_for([kt, cfg.block_t, BLOCK_K], gl.float16),
            gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=3),
            gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2))


def output_tiles(m: int, n: int, cfg: WgmmaTConfig) -> int:
    return triton.cdiv(m, cfg.block_t) * (n // cfg.block_n)


def k_slices(k: int, kt: int, cfg: WgmmaTConfig) -> int:
    """The K slices of a launch: ``cfg.split_k`` made nonempty for steps of ``kt`` K tiles."""
    return nonempty_split(k // (BLOCK_K * kt), cfg.split_k)


def split_k_buffers(x: torch.Tensor, n: int, split: int, cfg: WgmmaTConfig, out: torch.Tensor, zs: torch.Tensor,
                    counters: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' workspace and counter arguments for ``split`` K slices (``k_slices``): with
    split-K a fresh fp32 workspace [split, M, N] and the caller's counters (a zeroed int32 one per
    output tile), else placeholders never touched."""
    m = x.shape[0]
    if split == 1:
        return out, zs
    if counters is None or counters.numel() < output_tiles(m, n, cfg):
        raise ValueError("split-K needs a zeroed int32 counter per output tile")
    return torch.empty((split, m, n), dtype=torch.float32, device=x.device), counters


def channel_slices(words: torch.Tensor, zs: torch.Tensor, n0: int
                   ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``repack``'s tensors split at output channel ``n0`` (a multiple of 128): views (words
    [K/64, channels/16, 128], zero/scale rows [K/G, channels]) of channels ``[0, n0)`` and
    ``[n0, N)``, which ``wgmma_t_gemm`` takes as a layer of their own (TMA follows their strides)."""
    n = zs.shape[1]
    if n0 % 128 or not 0 < n0 < n:
        raise ValueError(f"a channel split point must be a multiple of 128 inside (0, {n}), got {n0}")
    w3 = words.view(-1, n // BAND, BAND_WORDS)
    return (w3[:, :n0 // BAND], zs[:, :n0]), (w3[:, n0 // BAND:], zs[:, n0:])


def descriptors(x: torch.Tensor, words: torch.Tensor, zs: torch.Tensor, cfg: WgmmaTConfig, kt: int):
    """TMA descriptors of x (a [K/64, M, 64] view: K tile t of x is x3[t], so one 3-D box [KT, BLOCK_T, 64]
    loads a step's KT tiles; TMA takes the strides as they are), the words ([K/64, N/16, 128], box
    [KT, BLOCK_N / 16, 128]: one warpgroup's) and the zero/scale rows (box [rows a step, BLOCK_N]).
    The words and zero/scale rows may be a ``channel_slices`` view."""
    m, k = x.shape
    n = zs.shape[1]
    x_l, w_l, z_l = shared_layouts(cfg, kt)
    x3 = x.as_strided((k // BLOCK_K, m, BLOCK_K), (BLOCK_K, x.stride(0), 1))
    w3 = words if words.dim() == 3 else words.view(k // BLOCK_K, n // BAND, BAND_WORDS)
    return (TensorDescriptor.from_tensor(x3, [kt, cfg.block_t, BLOCK_K], x_l),
            TensorDescriptor.from_tensor(w3, [kt, cfg.block_n // BAND, BAND_WORDS], w_l),
            TensorDescriptor.from_tensor(zs, [max(1, BLOCK_K * kt // (k // zs.shape[0])), cfg.block_n], z_l))


def can_push(m: int, k: int, group: int, cfg: WgmmaTConfig) -> bool:
    """Whether a launch of ``cfg`` over M tokens can push its output (``wgmma_t_gemm_pushed``):
    one warpgroup a CTA, one token tile (so that every tile writes row 0: ``PushTarget``), and K
    unsplit or split into a cluster (``_write_tile``)."""
    split = k_slices(k, k_tiles_per_step(k, group, cfg), cfg)
    return (cfg.consumers == 1 and m <= cfg.block_t
            and (split == 1 or cluster_reduces(split, cfg.block_n, cfg.block_t, False)))


def wgmma_t_gemm(x: torch.Tensor, words: torch.Tensor, zs: torch.Tensor, cfg: WgmmaTConfig, out: torch.Tensor,
                 counters: torch.Tensor | None = None, silu_and_mul: bool = False, split_k_partials: bool = False
                 ) -> torch.Tensor | SplitKPartials:
    """``out = x @ W`` from ``repack``'s tensors (the caller has checked ``supports``); with
    ``silu_and_mul``, W is a gate/up pair repacked in ``silu_channel_order`` and ``out [M, N / 2] =
    silu(x @ W_gate) * (x @ W_up)``. With ``split_k_partials`` a split-K launch whose slices do not
    sum as a cluster (``cluster_reduces``) returns its K slices' partials instead of filling ``out``
    (``pagedawq.kernels.split_k``; not with ``silu_and_mul``). A
    config of several consumers runs the warp-specialised kernel (``awq_wgmma_t_ws``). A row-parallel
    layer's output can go to the next all-reduce's receive slots instead: ``wgmma_t_gemm_pushed``."""
    m, k = x.shape
    n = zs.shape[1]
    if out.shape != (m, n // 2 if silu_and_mul else n):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {(m, n // 2 if silu_and_mul else n)}")
    if silu_and_mul and split_k_partials:
        raise ValueError("the SiLU epilogue needs the summed output: no split-K partials with silu_and_mul")
    if cfg.consumers > 1:
        from pagedawq.kernels.awq_wgmma_t_ws import wgmma_t_ws_gemm   # (it builds on this module)
        return wgmma_t_ws_gemm(x, words, zs, cfg, out, counters, silu_and_mul, split_k_partials)
    if n % cfg.block_n or cfg.block_n not in (64, 128) or cfg.block_n * cfg.block_t > 64 * 256:
        raise ValueError(f"BLOCK_N = {cfg.block_n} must be 64 or 128 and divide N = {n}, with BLOCK_N x BLOCK_T "
                         f"<= 64 x 256 (fp32 accumulators of one warpgroup), got BLOCK_T = {cfg.block_t}")
    descs, split, consts = _launch_args(x, words, zs, cfg, silu_and_mul)
    tiles = (n // cfg.block_n, triton.cdiv(m, cfg.block_t))
    clustered = cluster_reduces(split, cfg.block_n, cfg.block_t, silu_and_mul)
    return launch_split_k(awq_wgmma_t_kernel, tiles, split, clustered, cfg, x, descs, zs, out, counters,
                          split_k_partials, **consts)


def _launch_args(x: torch.Tensor, words: torch.Tensor, zs: torch.Tensor, cfg: WgmmaTConfig, silu_and_mul: bool
                 ) -> tuple[tuple, int, dict]:
    """What every launch of ``awq_wgmma_t_kernel`` for ``cfg`` takes: the TMA descriptors, the
    number of K slices, and the compile-time arguments and launch keywords."""
    m, k = x.shape
    group = k // zs.shape[0]
    kt = k_tiles_per_step(k, group, cfg)
    split = k_slices(k, kt, cfg)
    consts = dict(G=group, W_LAYOUT=words_layout(cfg.block_n), STAGES=cfg.stages, SPLIT=split > 1, SILU=silu_and_mul,
                  num_warps=cfg.num_warps, STREAM_W=streams_weights(m, cfg), **pdl_launch(x.device, m))
    return descriptors(x, words, zs, cfg, kt), split, consts


def streams_weights(m: int, cfg: WgmmaTConfig) -> bool:
    """Whether a launch of ``m`` tokens reads each weight once (one token tile), so that its weight
    loads should leave L2 to what the kernels around it reuse (``l2_hints``). With several token
    tiles the tiles of a channel tile share its weights through L2. PAGEDAWQ_DISABLE_L2_HINTS=1
    turns the hint off (A/B comparisons)."""
    return m <= cfg.block_t and os.environ.get("PAGEDAWQ_DISABLE_L2_HINTS", "0") != "1"


def wgmma_t_gemm_pushed(x: torch.Tensor, words: torch.Tensor, zs: torch.Tensor, cfg: WgmmaTConfig,
                        push: PushTarget) -> PushedOutput | None:
    """``x @ W`` of a row-parallel layer (``cfg`` where ``can_push``) in one launch whose tiles go to
    the receive slots of the all-reduce after it (rows ``N`` apart, ``_push_tile``); the returned
    ``PushedOutput`` stands for the output, which is never stored. None, launching nothing,
    where the device cannot give a split launch's clusters their memory (the caller then computes
    the output itself: a split summed through the workspace cannot push)."""
    m, k = x.shape
    n = zs.shape[1]
    group = k // zs.shape[0]
    if not can_push(m, k, group, cfg) or n % cfg.block_n:
        raise ValueError(f"{cfg} cannot push the output of {m} tokens (one warpgroup a CTA, one token tile, K "
                         "unsplit or summed as a cluster)")
    if m * n > push.capacity:
        raise ValueError(f"{m} x {n} outputs exceed the receive slots' {push.capacity}")
    descs, split, consts = _launch_args(x, words, zs, cfg, False)
    consts.update(push_ptr=push.table, PUSH_RANK=push.rank, PUSH_WORLD=push.world_size)
    t = push.table
    if split == 1:
        awq_wgmma_t_kernel[(n // cfg.block_n, 1, 1)](*descs, t, t, t, m, n, k, n, 1, **consts)
    elif not launch_clustered(awq_wgmma_t_kernel, (n // cfg.block_n, 1, 1), split,
                              cluster_smem_bytes(cfg.block_n, cfg.block_t), x.device, *descs, t, t, t, m, n, k, n,
                              split, CLUSTER=split, **consts):
        return None   # the device cannot give the clusters' memory: nothing launched, nothing pushed
    return PushedOutput(torch.Size((m, n)), x.dtype)


def launch_split_k(kernel, tiles: tuple[int, ...], split: int, clustered: bool, cfg: WgmmaTConfig, x: torch.Tensor,
                   descs: tuple, zs: torch.Tensor, out: torch.Tensor, counters: torch.Tensor | None,
                   split_k_partials: bool, **consts) -> torch.Tensor | SplitKPartials:
    """Launch a "wgmma_t" kernel (this module's or ``awq_wgmma_t_ws``'s: the same arguments) over
    its ``tiles`` grid with ``split`` K slices: where ``clustered`` (``cluster_reduces``) as clusters
    of the slices, which sum in distributed shared memory (``launch_clustered``; if the device
    cannot give that memory, as below); else with the slices on the grid's next axis, summed through
    a global workspace or, with ``split_k_partials``, handed over as ``SplitKPartials``."""
    m, k = x.shape
    n = zs.shape[1]
    if clustered and launch_clustered(kernel, (*tiles, 1), split, cluster_smem_bytes(cfg.block_n, cfg.block_t),
                                      x.device, *descs, out, out, zs, m, n, k, out.stride(0), split, CLUSTER=split,
                                      **consts):
        return out
    ws, counters = split_k_buffers(x, n, split, cfg, out, zs, counters)
    defer = split_k_partials and split > 1
    kernel[(*tiles, split)](*descs, out, ws, counters, m, n, k, out.stride(0), split, DEFER=defer, **consts)
    return SplitKPartials(ws, out.dtype) if defer else out


def cluster_reduces(split: int, block_n: int, block_t: int, silu_and_mul: bool, max_t: int = CLUSTER_MAX_T) -> bool:
    """Whether a launch's K slices sum their partials as a cluster (``_cluster_sum_tile``) rather than
    through a global workspace: ``split`` a portable cluster size that divides the channel tile into
    chunks of at least 8 channels (with the SiLU epilogue, of whole 16-row bands, which hold the
    gate/up pairs), token tiles up to ``max_t``. Such a launch returns the sum even where split-K
    partials were asked for: the 7B batch-1 decode graph took 1863-1867 us with o and down summed so
    against 1901-1905 with their partials handed to the norm (H100, session 12). With the SiLU
    epilogue, 13B/TP=2 gate_up (split 2) at M = 1-16 took 17.1-18.2 us against 18.6-19.9 with the
    global reduction (H100, session 13)."""
    chunk = block_n // split
    return split in CLUSTER_SIZES and chunk >= 8 and block_t <= max_t and (not silu_and_mul or chunk % 16 == 0)
