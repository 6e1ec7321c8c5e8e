"""Triton kernels for AWQ int4 weights in the AutoAWQ GEMM layout (see ``pagedawq.quant.pack``).

Two kernels, both reading the checkpoint tensors as they are (no repacking):

* ``awq_gemm_kernel``: ``out = x @ W`` with W dequantized tile by tile in registers and fed to
  ``tl.dot`` (fp32 accumulation). One kernel serves the memory-bound small-M regime (BLOCK_M = 16,
  split-K so that the whole GPU streams the weight once) and the tensor-core regime (larger tiles,
  grouped tile order for L2 reuse). Split-K partials go to an fp32 workspace; the last program of
  each output tile (found with an atomic counter that it then resets) sums them in a fixed order,
  so a call is one launch and its result is deterministic.
* ``awq_dequant_kernel``: W to a dense fp16/bf16/fp32 matrix, for the large-M path that hands the
  product to cuBLAS.

Dequantization. Within an int32, AWQ puts columns (0, 1) of its group of eight in bits (0-3,
16-19), columns (2, 3) in bits (4-7, 20-23), and so on. ``(w >> 4i) & 0x000F000F | 0x64006400``
is therefore two fp16 numbers ``1024 + q`` for columns (2i, 2i+1), in one LOP3 (bf16 uses
``0x4300``, i.e. ``128 + q``); subtracting the zero point built the same way from ``qzeros`` gives
the exact integer ``q - z`` in packed half2 arithmetic. The PTX for this runs through
``tl.inline_asm_elementwise``: 11 instructions per 8 weights (15 with the per-element scale),
where the plain Triton version needs several per weight and the int-to-float conversions it
emits are slow. The plain version is kept for the CPU interpreter (which cannot run PTX) and as
the dequant kernel's arithmetic; both produce bit-identical tiles.

Where the scale is applied (``SCALE_W``): either on each weight in the dot dtype before the dot
(W exactly as ``dequantize_awq`` rounds it, the accumulator chains through ``tl.dot``), or on
the fp32 product of each K tile (``acc += dot(x, q - z) * s``, valid because a K tile never
straddles a group): fewer multiplies per weight, and activations in bf16 with fp16 scales lose
nothing to a bf16 scale.
"""
from __future__ import annotations

import triton
import triton.language as tl


def _unpack_asm(magic: int, kind: str, scaled: bool) -> str:
    """PTX: int32 word $8 -> 8 16-bit outputs $0..$7 = (q - z) [* s] for columns 0..7.

    Inputs: $8 the weight word, $9..$12 the zero pairs (magic + z of columns 2p, 2p+1, from
    ``_ZERO_PAIRS_*``), and if ``scaled`` $13..$16 the scale pairs (same column pairs).
    """
    magic2 = f"0x{magic:04x}{magic:04x}"
    lines = ["{", ".reg .b32 w, v;"]
    for p in range(4):
        src = "$8"
        if p:
            lines.append(f"shr.u32 w, $8, {4 * p};")
            src = "w"
        lines.append(f"lop3.b32 v, {src}, 0x000f000f, {magic2}, 0xea;")
        lines.append(f"sub.{kind} v, v, ${9 + p};")
        if scaled:
            lines.append(f"mul.{kind} v, v, ${13 + p};")
        lines.append(f"mov.b32 {{${2 * p}, ${2 * p + 1}}}, v;")
    lines.append("}")
    return "\n".join(lines)


def _zero_pairs_asm(magic: int) -> str:
    """PTX: zero word $4 -> four int32 $0..$3, each two 16-bit (magic + z) for columns 2p, 2p+1."""
    magic2 = f"0x{magic:04x}{magic:04x}"
    lines = ["{", ".reg .b32 w;", f"lop3.b32 $0, $4, 0x000f000f, {magic2}, 0xea;"]
    for p in range(1, 4):
        lines.append(f"shr.u32 w, $4, {4 * p};")
        lines.append(f"lop3.b32 ${p}, w, 0x000f000f, {magic2}, 0xea;")
    lines.append("}")
    return "\n".join(lines)


_F16_MAGIC, _BF16_MAGIC = 0x6400, 0x4300  # 1024.0 in fp16, 128.0 in bf16: integers q < 16 add exactly
_UNPACK_F16 = tl.constexpr(_unpack_asm(_F16_MAGIC, "f16x2", False))
_UNPACK_F16_SCALED = tl.constexpr(_unpack_asm(_F16_MAGIC, "f16x2", True))
_UNPACK_BF16 = tl.constexpr(_unpack_asm(_BF16_MAGIC, "bf16x2", False))
_UNPACK_BF16_SCALED = tl.constexpr(_unpack_asm(_BF16_MAGIC, "bf16x2", True))
_ZERO_PAIRS_F16 = tl.constexpr(_zero_pairs_asm(_F16_MAGIC))
_ZERO_PAIRS_BF16 = tl.constexpr(_zero_pairs_asm(_BF16_MAGIC))
_F16X8 = tl.constexpr((tl.float16, ) * 8)  # dtypes of the eight outputs
_BF16X8 = tl.constexpr((tl.bfloat16, ) * 8)
_CONSTRAINTS = tl.constexpr("=h,=h,=h,=h,=h,=h,=h,=h," + ",".join(["r"] * 5))
_CONSTRAINTS_SCALED = tl.constexpr("=h,=h,=h,=h,=h,=h,=h,=h," + ",".join(["r"] * 9))


@triton.jit
def _interleave8(o0, o1, o2, o3, o4, o5, o6, o7):
    """Eight [R, C] tiles (column c of each group of eight) -> [R, 8C] in natural column order.

    ``join`` adds a minor dimension held inside each thread, so this is a register renaming,
    not a shuffle: index 8j + 4a + 2b + c comes from the join nesting below.
    """
    t = tl.join(tl.join(tl.join(o0, o4), tl.join(o2, o6)), tl.join(tl.join(o1, o5), tl.join(o3, o7)))
    return tl.reshape(t, (o0.shape[0], 8 * o0.shape[1]))


@triton.jit
def _nibble(word, c: tl.constexpr):
    """Code of column c (0..7) of each packed int32: it sits in nibble AWQ_ORDER.index(c)."""
    return (word >> (16 * (c % 2) + 4 * (c // 2))) & 0xF


@triton.jit
def _column(qw, zw, s_ptr, s_offs, s_mask, c: tl.constexpr, SCALED: tl.constexpr, DT: tl.constexpr):
    d = (_nibble(qw, c) - _nibble(zw, c)).to(tl.float32)
    if SCALED:
        d = d * tl.load(s_ptr + s_offs + c, mask=s_mask).to(tl.float32)
    return d.to(DT)


@triton.jit
def dequant_tile(qw, zw, s_ptr, s_offs, s_mask, SCALED: tl.constexpr, DT: tl.constexpr,
                 USE_ASM: tl.constexpr):
    """Packed words ``qw [R, C]`` -> weights ``[R, 8C]`` of dtype DT.

    ``zw`` ([1, C] or [R, C]) holds the matching packed zero points; with SCALED the tile is
    ``(q - z) * s`` where the scale of the column 8j (+c) is at ``s_ptr + s_offs + c`` (``s_offs``
    shaped like ``zw``, even; ``s_mask`` its mask or None: masked columns come out undefined),
    else the exact integers ``q - z``.
    """
    if USE_ASM:
        if DT == tl.bfloat16:
            z0, z1, z2, z3 = tl.inline_asm_elementwise(_ZERO_PAIRS_BF16, "=r,=r,=r,=r,r", [zw],
                                                       dtype=(tl.int32, tl.int32, tl.int32, tl.int32),
                                                       is_pure=True, pack=1)
        else:
            z0, z1, z2, z3 = tl.inline_asm_elementwise(_ZERO_PAIRS_F16, "=r,=r,=r,=r,r", [zw],
                                                       dtype=(tl.int32, tl.int32, tl.int32, tl.int32),
                                                       is_pure=True, pack=1)
        if SCALED:
            # The scales of columns (2p, 2p+1) as one int32 (they are adjacent 16-bit values).
            sp = s_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + s_offs // 2
            s0 = tl.load(sp, mask=s_mask)
            s1 = tl.load(sp + 1, mask=s_mask)
            s2 = tl.load(sp + 2, mask=s_mask)
            s3 = tl.load(sp + 3, mask=s_mask)
            if DT == tl.bfloat16:
                o = tl.inline_asm_elementwise(_UNPACK_BF16_SCALED, _CONSTRAINTS_SCALED,
                                              [qw, z0, z1, z2, z3, s0, s1, s2, s3], dtype=_BF16X8,
                                              is_pure=True, pack=1)
            else:
                o = tl.inline_asm_elementwise(_UNPACK_F16_SCALED, _CONSTRAINTS_SCALED,
                                              [qw, z0, z1, z2, z3, s0, s1, s2, s3], dtype=_F16X8,
                                              is_pure=True, pack=1)
        else:
            if DT == tl.bfloat16:
                o = tl.inline_asm_elementwise(_UNPACK_BF16, _CONSTRAINTS, [qw, z0, z1, z2, z3], dtype=_BF16X8, is_pure=True, pack=1)
            else:
                o = tl.inline_asm_elementwise(_UNPACK_F16, _CONSTRAINTS, [qw, z0, z1, z2, z3], dtype=_F16X8, is_pure=True, pack=1)
        return _interleave8(o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7])
    else:
        return _interleave8(_column(qw, zw, s_ptr, s_offs, s_mask, 0, SCALED, DT),
                            _column(qw, zw, s_ptr, s_offs, s_mask, 1, SCALED, DT),
                            _column(qw, zw, s_ptr, s_offs, s_mask, 2, SCALED, DT),
                            _column(qw, zw, s_ptr, s_offs, s_mask, 3, SCALED, DT),
                            _column(qw, zw, s_ptr, s_offs, s_mask, 4, SCALED, DT),
                            _column(qw, zw, s_ptr, s_offs, s_mask, 5, SCALED, DT),
                            _column(qw, zw, s_ptr, s_offs, s_mask, 6, SCALED, DT),
                            _column(qw, zw, s_ptr, s_offs, s_mask, 7, SCALED, DT))


@triton.jit
def _dot(a, b, acc, INTERPRET: tl.constexpr):
    if INTERPRET:
        # The CPU interpreter computes 16-bit (bf16 at least) dots wrongly; the values are exact in fp32.
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    else:
        return tl.dot(a, b, acc)


@triton.jit(do_not_specialize=["M", "split_k"])
def awq_gemm_kernel(x_ptr, qw_ptr, qz_ptr, s_ptr, out_ptr, ws_ptr, cnt_ptr,
                    M, N, N8, K, stride_xm, stride_om, split_k,
                    G: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    SPLIT: tl.constexpr, GROUP_M: tl.constexpr, SCALE_W: tl.constexpr,
                    EVEN_N: tl.constexpr, USE_ASM: tl.constexpr, INTERPRET: tl.constexpr):
    """``out[M, N] = x[M, K] @ W`` for one (BLOCK_M, BLOCK_N) tile and one K slice (program_id 1).

    Needs BLOCK_K | G and G | K (so K tiles never straddle a group and K needs no mask); N8 = N/8.
    With SPLIT (split_k > 1), ``ws_ptr`` is an fp32 [split_k, M, N] workspace and ``cnt_ptr`` one
    int32 per output tile, zero on entry and left zero on exit. split_k is a run-time value so that
    one compiled kernel serves every split.
    """
    DT = x_ptr.dtype.element_ty
    pid = tl.program_id(0)
    pid_s = tl.program_id(1)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped order: GROUP_M row tiles share each weight tile while it is in L2.
    width = GROUP_M * num_pid_n
    first_m = (pid // width) * GROUP_M
    group_rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % group_rows
    pid_n = (pid % width) // group_rows

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rj = pid_n * (BLOCK_N // 8) + tl.arange(0, BLOCK_N // 8)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    m_mask = rm < M
    if EVEN_N:
        j_mask = None
        n_mask = None
    else:
        j_mask = rj < N8
        n_mask = rn < N

    k_tiles = K // BLOCK_K
    per_split = tl.cdiv(k_tiles, split_k)
    kt_lo = pid_s * per_split
    kt_hi = tl.minimum(kt_lo + per_split, k_tiles)

    x_ptrs = x_ptr + rm[:, None] * stride_xm + rk[None, :]
    qw_ptrs = qw_ptr + rk[:, None] * N8 + rj[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kt in range(kt_lo, kt_hi):
        k0 = kt * BLOCK_K
        g = k0 // G
        x = tl.load(x_ptrs + k0, mask=m_mask[:, None], other=0.0)
        if EVEN_N:
            qw = tl.load(qw_ptrs + k0 * N8)
            zw = tl.load(qz_ptr + g * N8 + rj)
        else:
            qw = tl.load(qw_ptrs + k0 * N8, mask=j_mask[None, :], other=0)
            zw = tl.load(qz_ptr + g * N8 + rj, mask=j_mask, other=0)
        if SCALE_W:
            if EVEN_N:
                w = dequant_tile(qw, zw[None, :], s_ptr, (g * N + 8 * rj)[None, :], None, True, DT, USE_ASM)
            else:
                w = dequant_tile(qw, zw[None, :], s_ptr, (g * N + 8 * rj)[None, :], j_mask[None, :], True, DT,
                                 USE_ASM)
            acc = _dot(x, w, acc, INTERPRET)
        else:
            w = dequant_tile(qw, zw[None, :], s_ptr, None, None, False, DT, USE_ASM)
            if EVEN_N:
                s = tl.load(s_ptr + g * N + rn).to(tl.float32)
            else:
                s = tl.load(s_ptr + g * N + rn, mask=n_mask, other=0.0).to(tl.float32)
            acc += _dot(x, w, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), INTERPRET) * s[None, :]

    if EVEN_N:
        out_mask = m_mask[:, None]
    else:
        out_mask = m_mask[:, None] & n_mask[None, :]
    out_ptrs = out_ptr + rm[:, None] * stride_om + rn[None, :]
    if not SPLIT:
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        ws_ptrs = ws_ptr + rm[:, None] * N + rn[None, :]
        tl.store(ws_ptrs + pid_s * M * N, acc, mask=out_mask)
        # Every thread's partial is issued before one thread's release of the counter.
        tl.debug_barrier()
        tile = pid_m * num_pid_n + pid_n
        arrived = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if arrived == split_k - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for s in range(split_k):  # fixed order: the sum does not depend on who came last
                total += tl.load(ws_ptrs + s * M * N, mask=out_mask, other=0.0, cache_modifier=".cg")
            tl.store(out_ptrs, total.to(out_ptr.dtype.element_ty), mask=out_mask)
            tl.atomic_xchg(cnt_ptr + tile, 0)


@triton.jit
def awq_dequant_kernel(qw_ptr, qz_ptr, s_ptr, w_ptr, K, N, N8,
                       G: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """``w[K, N] = (q - z) * s`` in w's dtype, rounded once from the exact fp32 product."""
    rk = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    rj = tl.program_id(1) * (BLOCK_N // 8) + tl.arange(0, BLOCK_N // 8)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    k_mask = rk < K
    mask = k_mask[:, None] & (rj < N8)[None, :]
    g = rk // G
    qw = tl.load(qw_ptr + rk[:, None] * N8 + rj[None, :], mask=mask, other=0)
    zw = tl.load(qz_ptr + g[:, None] * N8 + rj[None, :], mask=mask, other=0)
    w = dequant_tile(qw, zw, s_ptr, g[:, None] * N + 8 * rj[None, :], mask, True,
                     w_ptr.dtype.element_ty, False)
    tl.store(w_ptr + rk[:, None] * N + rn[None, :], w, mask=k_mask[:, None] & (rn < N)[None, :])
