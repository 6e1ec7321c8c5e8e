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
                    EVEN_N: tl.constexpr, USE_ASM: tl.constexpr, INTERPRET: tl.constexpr,
                    RED_CHUNK: tl.constexpr):
    """``out[M, N] = x[M, K] @ W`` for one (BLOCK_M, BLOCK_N) tile and one K slice (program_id 1).

    Needs BLOCK_K | G and G | K (so K tiles never straddle a group and K needs no mask); N8 = N/8.
    With SPLIT (split_k > 1), ``ws_ptr`` is an fp32 [split_k, M, N] workspace and ``cnt_ptr`` one
    int32 per output tile, zero on entry and left zero on exit. split_k is a run-time value so that
    one compiled kernel serves every split; the last program sums the slices RED_CHUNK at a time.
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
            # Fixed order (the sum does not depend on who came last). RED_CHUNK slices are loaded
            # at once (about 64 values a thread): one L2 round trip per chunk instead of one per
            # few slices.
            # (A [RED_CHUNK, BLOCK_M, BLOCK_N] load summed over its first axis puts the slices across
            # lanes: ~1000 SASS instructions of shuffles and shared memory at 16 x 64.)
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for sb in range(0, split_k, RED_CHUNK):
                for j in tl.static_range(RED_CHUNK):
                    more = (rm * 0 + sb + j < split_k)[:, None]   # a tensor: the interpreter rejects scalar masks
                    total += tl.load(ws_ptrs + (sb + j) * M * N, mask=out_mask & more, other=0.0,
                                     cache_modifier=".cg")
            tl.store(out_ptrs, total.to(out_ptr.dtype.element_ty), mask=out_mask)
            tl.atomic_xchg(cnt_ptr + tile, 0)


@triton.jit
def awq_dequant_kernel(qw_ptr, qz_ptr, s_ptr, w_ptr, K, N, N8,
                       G: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, USE_ASM: tl.constexpr):
    """``w[K, N] = (q - z) * s`` in w's dtype, rounded once from the exact product. USE_ASM (scales
    in w's dtype) multiplies in packed 16-bit arithmetic: q - z is a small integer, so the 16-bit
    product is the exact one rounded once, bit-identical to the fp32 route."""
    rk = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    rj = tl.program_id(1) * (BLOCK_N // 8) + tl.arange(0, BLOCK_N // 8)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    k_mask = rk < K
    mask = k_mask[:, None] & (rj < N8)[None, :]
    g = rk // G
    qw = tl.load(qw_ptr + rk[:, None] * N8 + rj[None, :], mask=mask, other=0)
    zw = tl.load(qz_ptr + g[:, None] * N8 + rj[None, :], mask=mask, other=0)
    w = dequant_tile(qw, zw, s_ptr, g[:, None] * N + 8 * rj[None, :], mask, True,
                     w_ptr.dtype.element_ty, USE_ASM)
    tl.store(w_ptr + rk[:, None] * N + rn[None, :], w, mask=k_mask[:, None] & (rn < N)[None, :])


# ---------------------------------------------------------------------------------------------
# GEMV path (M <= 4 rows per program): no tensor cores, no shared memory in the main loop.
#
# ``awq_gemm_kernel`` at small M is bound by the trip of the dequantized tile through shared
# memory into the mma layout (benchmarks/notes/awq_gemm.md, run 4). For a handful of rows the
# tensor cores buy nothing, so this kernel keeps everything in registers: a program streams a
# [BLOCK_K, BLOCK_N / 8] slab of packed words per K tile as U loads of [R, BN8] words (rows
# k0 + r U + u, u < U), each thread holding VEC consecutive words of a row (one vector load);
# it unpacks them in registers, multiplies by the activation rows with fp32 FMAs chained over
# its U rows, and scales the chain's sum once per tile. Lanes and warps split the R rows of a
# tile, summed once at the end of the program. The next tile's words (and zeros, and with
# PREFETCH_S its scales) are loaded before the current tile is computed. Split-K over programs
# as in ``awq_gemm_kernel`` (deterministic workspace + arrival counter).
#
# Unpacking without int-to-float conversions (I2F is a quarter-rate instruction): a nibble at bit
# offset p <= 16 becomes the fp32 number 2^23 + q 2^p with one LOP3, ``(w & 0xF << p) |
# 0x4B000000`` (2^23's exponent, the nibble inside the 23-bit mantissa), the zero point the same
# way, and one FADD gives the exact (q - z) 2^p. Nibbles 5-7 (bits 20-31) are shifted down by 12
# first (one SHF per word), so columns 0..7 sit at p = 0, 16, 4, 8, 8, 12, 12, 16. The power of
# two is undone once at the end of the program: per weight ~1.1 integer ops + 1 FADD + M FFMA.
#
# Layouts (why the code is written out per row u instead of as one [U, R, BN8] tensor): every
# tensor here is at most 2-D, so Triton's default layouts agree between versions. With a 3-D
# or 4-D tile, the order of its non-contiguous dimensions is a tie that Triton 3.9 breaks one way
# (U inside each thread, as intended) and Triton 3.6 the other (U across lanes and warps: shared
# memory and shuffles in the loop, 255 registers and spills), seen in the sm_90 SASS of both.
# The activations are loaded as [R, 1] per (row, u): a load of fewer elements than threads is
# rematerialized in the layout its user needs (each thread loads its own values, L1 hits).
# ---------------------------------------------------------------------------------------------

@triton.jit
def _magic_f32(word, c: tl.constexpr, magic):
    """fp32 ``2^23 + q 2^p`` (exact) for the code q of column c (0..7) of each packed word.

    Column c sits in nibble i = AWQ_ORDER.index(c) = 4 (c % 2) + c // 2; p = 4i for i < 5, else
    4i - 12. ``magic`` is 0x4B000000 passed at run time: as a register operand it leaves the
    LOP3's immediate slot to the nibble mask (with two constants ptxas re-materializes the mask
    with a MOV per LOP3)."""
    if (c % 2) * 4 + c // 2 < 5:
        v = word & (0xF << (4 * ((c % 2) * 4 + c // 2)))
    else:
        v = (word >> 12) & (0xF << (4 * ((c % 2) * 4 + c // 2) - 12))
    return (v | magic).to(tl.float32, bitcast=True)


@triton.jit
def _scale_f32(pair, HI: tl.constexpr, SDT: tl.constexpr):
    """fp32 value of the low (HI false) or high 16-bit scale of an int32 holding two of them."""
    if HI:
        pair = pair >> 16
    return pair.to(tl.int16).to(SDT, bitcast=True).to(tl.float32)


@triton.jit
def _ld(ptrs, mask, EVEN_N: tl.constexpr):
    """Load; without EVEN_N, masked (no fill: garbage past N reaches only unstored outputs)."""
    if EVEN_N:
        return tl.load(ptrs)
    else:
        return tl.load(ptrs, mask=mask)


@triton.jit
def _gemv_scales(s_ptrs, row_off, kt, j_mask, G: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_N: tl.constexpr):
    """K tile ``kt``'s scales as four int32 [BN8] (pair p: the scales of columns 2p, 2p + 1)."""
    sp = s_ptrs + (kt * BLOCK_K // G) * (row_off * 4)
    return (_ld(sp + 0, j_mask, EVEN_N), _ld(sp + 1, j_mask, EVEN_N), _ld(sp + 2, j_mask, EVEN_N),
            _ld(sp + 3, j_mask, EVEN_N))


@triton.jit
def _gemv_words(w_ptrs, z_ptrs, s_ptrs, row_off, kt, j_mask, G: tl.constexpr, BLOCK_K: tl.constexpr,
                U: tl.constexpr, SCALES: tl.constexpr, EVEN_N: tl.constexpr):
    """K tile ``kt`` (clamped into range by the caller: no predicates, no fill): its words as U
    tensors [R, BN8] (row k0 + r U + u; the unused ones repeat u = 0), its group's zero words
    [BN8] and, with SCALES, its scales as four int32 [BN8] (pair p: columns 2p, 2p + 1)."""
    k0 = kt * BLOCK_K
    g = k0 // G
    m2 = j_mask[None, :]

    w0 = _ld(w_ptrs + k0 * row_off, m2, EVEN_N)
    w1, w2, w3, w4, w5, w6, w7 = w0, w0, w0, w0, w0, w0, w0
    if U > 1:
        w1 = _ld(w_ptrs + (k0 + 1) * row_off, m2, EVEN_N)
    if U > 2:
        w2 = _ld(w_ptrs + (k0 + 2) * row_off, m2, EVEN_N)
        w3 = _ld(w_ptrs + (k0 + 3) * row_off, m2, EVEN_N)
    if U > 4:
        w4 = _ld(w_ptrs + (k0 + 4) * row_off, m2, EVEN_N)
        w5 = _ld(w_ptrs + (k0 + 5) * row_off, m2, EVEN_N)
        w6 = _ld(w_ptrs + (k0 + 6) * row_off, m2, EVEN_N)
        w7 = _ld(w_ptrs + (k0 + 7) * row_off, m2, EVEN_N)
    zw = _ld(z_ptrs + g * row_off, j_mask, EVEN_N)
    if SCALES:
        s0, s1, s2, s3 = _gemv_scales(s_ptrs, row_off, kt, j_mask, G, BLOCK_K, EVEN_N)
    else:
        s0, s1, s2, s3 = zw, zw, zw, zw
    return w0, w1, w2, w3, w4, w5, w6, w7, zw, s0, s1, s2, s3


@triton.jit
def _gemv_x(x_ptrs, rr, row, rows, stride_xm, k0, U: tl.constexpr):
    """Activation row ``row`` (of ``rows`` valid) at k0 + r U + u, u < U: U fp32 tensors [R, 1]
    (zero past M; the unused ones repeat u = 0)."""
    p = x_ptrs + row * stride_xm + k0
    m = (rr * 0 + row) < rows   # a tensor: the interpreter rejects scalar masks
    x0 = tl.load(p, mask=m, other=0.0).to(tl.float32)

    x1, x2, x3, x4, x5, x6, x7 = x0, x0, x0, x0, x0, x0, x0
    if U > 1:
        x1 = tl.load(p + 1, mask=m, other=0.0).to(tl.float32)
    if U > 2:
        x2 = tl.load(p + 2, mask=m, other=0.0).to(tl.float32)
        x3 = tl.load(p + 3, mask=m, other=0.0).to(tl.float32)
    if U > 4:
        x4 = tl.load(p + 4, mask=m, other=0.0).to(tl.float32)
        x5 = tl.load(p + 5, mask=m, other=0.0).to(tl.float32)
        x6 = tl.load(p + 6, mask=m, other=0.0).to(tl.float32)
        x7 = tl.load(p + 7, mask=m, other=0.0).to(tl.float32)
    return x0, x1, x2, x3, x4, x5, x6, x7


@triton.jit
def _chain(d0, d1, d2, d3, d4, d5, d6, d7, x0, x1, x2, x3, x4, x5, x6, x7, U: tl.constexpr):
    """sum_u x_u d_u as one FMA chain (Triton's reductions are trees: for U = 8, 4 FMUL + 4 FFMA
    + 3 FADD instead of 1 FMUL + 7 FFMA)."""
    acc = x0 * d0
    if U > 1:
        acc = x1 * d1 + acc
    if U > 2:
        acc = x2 * d2 + acc
        acc = x3 * d3 + acc
    if U > 4:
        acc = x4 * d4 + acc
        acc = x5 * d5 + acc
        acc = x6 * d6 + acc
        acc = x7 * d7 + acc
    return acc


@triton.jit
def _gemv_column(w0, w1, w2, w3, w4, w5, w6, w7, zw, sp,
                 xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7, xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7,
                 xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7, xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7,
                 a0, a1, a2, a3, magic,
                 c: tl.constexpr, U: tl.constexpr, BLOCK_M: tl.constexpr, SDT: tl.constexpr):
    """Add column c's tile partials ``sum_k x[m, k] (q - z)[k, n] s[n] 2^p`` ([R, BN8]) to the
    accumulators of the BLOCK_M rows (the unused ones pass through). ``sp``: the int32 holding the
    scales of columns (c & ~1, c | 1)."""
    zf = _magic_f32(zw, c, magic)[None, :]
    d0 = _magic_f32(w0, c, magic) - zf                 # exact (q - z) 2^p

    d1, d2, d3, d4, d5, d6, d7 = d0, d0, d0, d0, d0, d0, d0
    if U > 1:
        d1 = _magic_f32(w1, c, magic) - zf
    if U > 2:
        d2 = _magic_f32(w2, c, magic) - zf
        d3 = _magic_f32(w3, c, magic) - zf
    if U > 4:
        d4 = _magic_f32(w4, c, magic) - zf
        d5 = _magic_f32(w5, c, magic) - zf
        d6 = _magic_f32(w6, c, magic) - zf
        d7 = _magic_f32(w7, c, magic) - zf
    sc = _scale_f32(sp, c % 2 == 1, SDT)[None, :]
    a0 += _chain(d0, d1, d2, d3, d4, d5, d6, d7, xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7, U) * sc
    if BLOCK_M > 1:
        a1 += _chain(d0, d1, d2, d3, d4, d5, d6, d7, xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7, U) * sc
    if BLOCK_M > 2:
        a2 += _chain(d0, d1, d2, d3, d4, d5, d6, d7, xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7, U) * sc
        a3 += _chain(d0, d1, d2, d3, d4, d5, d6, d7, xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7, U) * sc
    return a0, a1, a2, a3


@triton.jit
def _gemv_row_out(a0, a1, a2, a3, a4, a5, a6, a7, row, M, out_ptr, stride_om, ws_ptr, rn, pid_s, N,
                  SPLIT: tl.constexpr, EVEN_N: tl.constexpr):
    """Row ``row`` of the program's output tile: sum the R rows of each column's accumulator, undo
    the 2^p (p = 0, 16, 4, 8, 8, 12, 12, 16), interleave to column order, store to ``out`` (no
    split) or to this K slice's workspace row."""
    y = _interleave8(tl.sum(a0, axis=0)[None, :],
                     (tl.sum(a1, axis=0) * (1.0 / 65536.0))[None, :],
                     (tl.sum(a2, axis=0) * (1.0 / 16.0))[None, :],
                     (tl.sum(a3, axis=0) * (1.0 / 256.0))[None, :],
                     (tl.sum(a4, axis=0) * (1.0 / 256.0))[None, :],
                     (tl.sum(a5, axis=0) * (1.0 / 4096.0))[None, :],
                     (tl.sum(a6, axis=0) * (1.0 / 4096.0))[None, :],
                     (tl.sum(a7, axis=0) * (1.0 / 65536.0))[None, :])     # [1, BN]
    mask = (rn * 0 + row) < M
    if not EVEN_N:
        mask = mask & (rn < N)
    if SPLIT:
        tl.store(ws_ptr + (pid_s * M + row) * N + rn, y, mask=mask)
    else:
        tl.store(out_ptr + row * stride_om + rn, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gemv_tile(w0, w1, w2, w3, w4, w5, w6, w7, zw, s0, s1, s2, s3, x_ptrs, rr, m0, M, stride_xm, kt,
               a00, a01, a02, a03, a04, a05, a06, a07, a10, a11, a12, a13, a14, a15, a16, a17,
               a20, a21, a22, a23, a24, a25, a26, a27, a30, a31, a32, a33, a34, a35, a36, a37, magic,
               BLOCK_K: tl.constexpr, U: tl.constexpr, BLOCK_M: tl.constexpr, SDT: tl.constexpr):
    """Add K tile ``kt`` (its words, zero words and scale pairs given) to the accumulators of the
    BLOCK_M rows: the activations of the tile, then the eight columns of every word."""
    k0 = kt * BLOCK_K
    xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7 = _gemv_x(x_ptrs, rr, 0, M - m0, stride_xm, k0, U)
    xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7 = xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7
    xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7 = xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7
    xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7 = xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7
    if BLOCK_M > 1:
        xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7 = _gemv_x(x_ptrs, rr, 1, M - m0, stride_xm, k0, U)
    if BLOCK_M > 2:
        xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7 = _gemv_x(x_ptrs, rr, 2, M - m0, stride_xm, k0, U)
        xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7 = _gemv_x(x_ptrs, rr, 3, M - m0, stride_xm, k0, U)

    a00, a10, a20, a30 = _gemv_column(
        w0, w1, w2, w3, w4, w5, w6, w7, zw, s0,
        xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7, xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7,
        xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7, xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7,
        a00, a10, a20, a30, magic, 0, U, BLOCK_M, SDT)
    a01, a11, a21, a31 = _gemv_column(
        w0, w1, w2, w3, w4, w5, w6, w7, zw, s0,
        xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7, xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7,
        xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7, xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7,
        a01, a11, a21, a31, magic, 1, U, BLOCK_M, SDT)
    a02, a12, a22, a32 = _gemv_column(
        w0, w1, w2, w3, w4, w5, w6, w7, zw, s1,
        xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7, xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7,
        xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7, xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7,
        a02, a12, a22, a32, magic, 2, U, BLOCK_M, SDT)
    a03, a13, a23, a33 = _gemv_column(
        w0, w1, w2, w3, w4, w5, w6, w7, zw, s1,
        xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7, xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7,
        xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7, xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7,
        a03, a13, a23, a33, magic, 3, U, BLOCK_M, SDT)
    a04, a14, a24, a34 = _gemv_column(
        w0, w1, w2, w3, w4, w5, w6, w7, zw, s2,
        xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7, xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7,
        xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7, xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7,
        a04, a14, a24, a34, magic, 4, U, BLOCK_M, SDT)
    a05, a15, a25, a35 = _gemv_column(
        w0, w1, w2, w3, w4, w5, w6, w7, zw, s2,
        xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7, xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7,
        xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7, xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7,
        a05, a15, a25, a35, magic, 5, U, BLOCK_M, SDT)
    a06, a16, a26, a36 = _gemv_column(
        w0, w1, w2, w3, w4, w5, w6, w7, zw, s3,
        xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7, xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7,
        xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7, xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7,
        a06, a16, a26, a36, magic, 6, U, BLOCK_M, SDT)
    a07, a17, a27, a37 = _gemv_column(
        w0, w1, w2, w3, w4, w5, w6, w7, zw, s3,
        xa0, xa1, xa2, xa3, xa4, xa5, xa6, xa7, xb0, xb1, xb2, xb3, xb4, xb5, xb6, xb7,
        xc0, xc1, xc2, xc3, xc4, xc5, xc6, xc7, xd0, xd1, xd2, xd3, xd4, xd5, xd6, xd7,
        a07, a17, a27, a37, magic, 7, U, BLOCK_M, SDT)
    return (a00, a01, a02, a03, a04, a05, a06, a07, a10, a11, a12, a13, a14, a15, a16, a17,
            a20, a21, a22, a23, a24, a25, a26, a27, a30, a31, a32, a33, a34, a35, a36, a37)


@triton.jit(do_not_specialize=["M", "N8", "split_k", "magic"])
def awq_gemv_kernel(x_ptr, qw_ptr, qz_ptr, s_ptr, out_ptr, ws_ptr, cnt_ptr,
                    M, N8, K, stride_xm, stride_om, split_k, magic,
                    G: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    R: tl.constexpr, VEC: tl.constexpr, PREFETCH_S: tl.constexpr,
                    SPLIT: tl.constexpr, EVEN_N: tl.constexpr):
    """``out[M, N] = x[M, K] @ W`` for BLOCK_M (1, 2 or 4) rows (program_id 2 steps over row
    blocks), BLOCK_N columns (program_id 0) and one K slice (program_id 1).

    U = BLOCK_K / R in {1, 2, 4, 8}; needs BLOCK_K | G and BLOCK_K | K. ``N8`` is not specialized,
    so the word alignment that allows VEC-wide loads is stated through ``(N8 // VEC) * VEC`` (the
    host picks VEC | N8). ``magic`` = 0x4B000000 (see ``_magic_f32``). Split-K as in
    ``awq_gemm_kernel``: fp32 workspace [split_k, M, N], one counter per (row block, column tile),
    zero on entry and on exit; the last program of a tile sums the slices in a fixed order.
    The next tile's words (and, with PREFETCH_S, scales) are prefetched into registers (a loop
    pipelined through shared memory instead was 5-25% slower on every layer, H100 2026-11-26).
    """
    U: tl.constexpr = BLOCK_K // R
    BN8: tl.constexpr = BLOCK_N // 8
    SDT = s_ptr.dtype.element_ty
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_m = tl.program_id(2)
    row_off = (N8 // VEC) * VEC    # == N8, with its divisibility by VEC visible to the compiler
    N = row_off * 8

    rj = pid_n * BN8 + tl.arange(0, BN8)
    j_mask = rj < row_off
    rr = tl.arange(0, R)[:, None]                      # [R, 1]: tile row r U + u

    k_tiles = K // BLOCK_K
    per_split = tl.cdiv(k_tiles, split_k)
    kt_lo = pid_s * per_split
    kt_hi = tl.minimum(kt_lo + per_split, k_tiles)

    w_ptrs = qw_ptr + (rr * U) * row_off + rj[None, :]
    z_ptrs = qz_ptr + rj
    s_ptrs = s_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + rj * 4   # scale pairs of word j
    m0 = pid_m * BLOCK_M
    x_ptrs = x_ptr + m0 * stride_xm + rr * U

    zero = tl.zeros((R, BN8), dtype=tl.float32)
    a00, a01, a02, a03, a04, a05, a06, a07 = zero, zero, zero, zero, zero, zero, zero, zero
    a10, a11, a12, a13, a14, a15, a16, a17 = zero, zero, zero, zero, zero, zero, zero, zero
    a20, a21, a22, a23, a24, a25, a26, a27 = zero, zero, zero, zero, zero, zero, zero, zero
    a30, a31, a32, a33, a34, a35, a36, a37 = zero, zero, zero, zero, zero, zero, zero, zero

    # The last iteration prefetches its own tile again (clamped rather than masked); an empty K
    # slice (the host avoids them) reads one in-range tile and computes nothing with it.
    last = tl.maximum(kt_hi - 1, 0)
    w0, w1, w2, w3, w4, w5, w6, w7, zw, s0, s1, s2, s3 = _gemv_words(
        w_ptrs, z_ptrs, s_ptrs, row_off, tl.minimum(kt_lo, last), j_mask, G, BLOCK_K, U, PREFETCH_S, EVEN_N)
    for kt in range(kt_lo, kt_hi):
        nw0, nw1, nw2, nw3, nw4, nw5, nw6, nw7, nzw, n0, n1, n2, n3 = _gemv_words(
            w_ptrs, z_ptrs, s_ptrs, row_off, tl.minimum(kt + 1, last), j_mask, G, BLOCK_K, U, PREFETCH_S, EVEN_N)
        if not PREFETCH_S:
            s0, s1, s2, s3 = _gemv_scales(s_ptrs, row_off, kt, j_mask, G, BLOCK_K, EVEN_N)
        (a00, a01, a02, a03, a04, a05, a06, a07, a10, a11, a12, a13, a14, a15, a16, a17,
         a20, a21, a22, a23, a24, a25, a26, a27, a30, a31, a32, a33, a34, a35, a36, a37) = _gemv_tile(
            w0, w1, w2, w3, w4, w5, w6, w7, zw, s0, s1, s2, s3, x_ptrs, rr, m0, M, stride_xm, kt,
            a00, a01, a02, a03, a04, a05, a06, a07, a10, a11, a12, a13, a14, a15, a16, a17,
            a20, a21, a22, a23, a24, a25, a26, a27, a30, a31, a32, a33, a34, a35, a36, a37, magic,
            BLOCK_K, U, BLOCK_M, SDT)
        w0, w1, w2, w3, w4, w5, w6, w7, zw = nw0, nw1, nw2, nw3, nw4, nw5, nw6, nw7, nzw
        if PREFETCH_S:
            s0, s1, s2, s3 = n0, n1, n2, n3

    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N))[None, :]    # [1, BN]
    _gemv_row_out(a00, a01, a02, a03, a04, a05, a06, a07, m0, M, out_ptr, stride_om, ws_ptr, rn, pid_s, N,
                  SPLIT, EVEN_N)
    if BLOCK_M > 1:
        _gemv_row_out(a10, a11, a12, a13, a14, a15, a16, a17, m0 + 1, M, out_ptr, stride_om, ws_ptr, rn, pid_s,
                      N, SPLIT, EVEN_N)
    if BLOCK_M > 2:
        _gemv_row_out(a20, a21, a22, a23, a24, a25, a26, a27, m0 + 2, M, out_ptr, stride_om, ws_ptr, rn, pid_s,
                      N, SPLIT, EVEN_N)
        _gemv_row_out(a30, a31, a32, a33, a34, a35, a36, a37, m0 + 3, M, out_ptr, stride_om, ws_ptr, rn, pid_s,
                      N, SPLIT, EVEN_N)
    if SPLIT:
        # Every thread's partials are issued before one thread's release of the counter.
        tl.debug_barrier()
        tile = pid_m * tl.num_programs(0) + pid_n
        arrived = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if arrived == split_k - 1:
            # Fixed order (the sum does not depend on who came last), 32 / BLOCK_M slices' loads
            # issued at once (64 values a thread at BLOCK_N 256): one L2 round trip per chunk.
            CHUNK: tl.constexpr = 32 // BLOCK_M
            rm = m0 + tl.arange(0, BLOCK_M)
            mask = (rm < M)[:, None]
            if not EVEN_N:
                mask = mask & (rn < N)
            ws_ptrs = ws_ptr + rm[:, None] * N + rn
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for sb in range(0, split_k, CHUNK):
                for j in tl.static_range(CHUNK):
                    more = (rm * 0 + sb + j < split_k)[:, None]   # a tensor: the interpreter rejects scalar masks
                    total += tl.load(ws_ptrs + (sb + j) * M * N, mask=mask & more, other=0.0, cache_modifier=".cg")
            tl.store(out_ptr + rm[:, None] * stride_om + rn, total.to(out_ptr.dtype.element_ty), mask=mask)
            tl.atomic_xchg(cnt_ptr + tile, 0)
