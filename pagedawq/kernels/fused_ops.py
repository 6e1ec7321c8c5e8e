"""Triton versions of the small ops in ``pagedawq.kernels.reference``.

Each op is one memory-bound pass: the torch references upcast to float32 and launch several
elementwise kernels (and materialize float32 intermediates); these read every input once, compute
in float32 in registers and write the result in the input dtype, matching the references'
rounding points. ``pagedawq.kernels.ops`` dispatches here for CUDA tensors.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagedawq.kernels.pdl import pdl_launch, pdl_start
from pagedawq.kernels.split_k import SplitKPartials


def row_warps(block: int) -> int:
    """Warps for a program that owns one row of ``block`` elements (about 8 elements a thread)."""
    return max(1, min(16, block // 256))


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a 2-D ``[rows, last_dim]`` tensor whose last dimension is contiguous (a view if possible)."""
    rows = x.reshape(-1, x.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


@triton.jit
def _rms_norm_kernel(x_ptr, residual_ptr, residual_out_ptr, weight_ptr, out_ptr,
                     stride_x, stride_r, stride_ro, stride_o, hidden, eps, stride_split,
                     BLOCK: tl.constexpr, ADD_RESIDUAL: tl.constexpr, PDL: tl.constexpr, SPLITS: tl.constexpr = 0):
    """One row. ``SPLITS`` > 0: x is a GEMM's float32 split-K partials (``SplitKPartials``), added in
    slice order and rounded to the output dtype as the GEMM's own reduction does."""
    cols = tl.arange(0, BLOCK)
    mask = cols < hidden
    # the norm weight is no kernel's output: its load (from DRAM at batch 1, where the weight
    # stream has evicted it since the last step) overlaps the wait for the kernel before
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    pdl_start(PDL)
    row = tl.program_id(0).to(tl.int64)
    if SPLITS > 0:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for s in tl.static_range(SPLITS):
            acc += tl.load(x_ptr + s * stride_split + row * stride_x + cols, mask=mask, other=0.0)
        x = acc.to(out_ptr.dtype.element_ty)
    else:
        x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if ADD_RESIDUAL:
        r = tl.load(residual_ptr + row * stride_r + cols, mask=mask, other=0.0)
        # The new residual is rounded to the input dtype before it is normalized, as in the reference.
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(residual_out_ptr + row * stride_ro + cols, x, mask=mask)
    xf = x.to(tl.float32)
    inv_rms = tl.math.rsqrt(tl.sum(xf * xf, 0) / hidden + eps)
    tl.store(out_ptr + row * stride_o + cols, (xf * inv_rms * w).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``x * rsqrt(mean(x^2) + eps) * weight`` over the last dimension, in float32, returned in ``x.dtype``."""
    rows = _as_rows(x)
    out = torch.empty(rows.shape, dtype=x.dtype, device=x.device)
    if rows.numel() == 0:
        return out.view(x.shape)
    hidden = rows.shape[1]
    block = triton.next_power_of_2(hidden)
    _rms_norm_kernel[(rows.shape[0],)](
        rows, rows, rows, weight, out, rows.stride(0), 0, 0, out.stride(0), hidden, eps, 0,
        BLOCK=block, ADD_RESIDUAL=False, num_warps=row_warps(block), **pdl_launch(x.device, rows.shape[0]))
    return out.view(x.shape)


def fused_add_rms_norm(x: torch.Tensor | SplitKPartials, residual: torch.Tensor, weight: torch.Tensor, eps: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual = x + residual``; return ``(rms_norm(residual), residual)`` from one pass. x may be
    a GEMM's split-K partials [S, M, N] (added first, in the pass).

    Inputs are not modified; both results are new tensors in x's dtype, of residual's shape.
    """
    partials = x.slices if isinstance(x, SplitKPartials) else None
    dtype = x.dtype
    res_rows = _as_rows(residual)
    rows = _as_rows(x) if partials is None else partials[0]
    if partials is not None and (rows.shape != res_rows.shape or partials.stride(-1) != 1):
        raise ValueError(f"split-K partials {tuple(partials.shape)} do not fit the residual {tuple(residual.shape)}")
    out = torch.empty(res_rows.shape, dtype=dtype, device=residual.device)
    residual_out = torch.empty(res_rows.shape, dtype=dtype, device=residual.device)
    if res_rows.numel() == 0:
        return out.view(residual.shape), residual_out.view(residual.shape)
    hidden = res_rows.shape[1]
    block = triton.next_power_of_2(hidden)
    _rms_norm_kernel[(res_rows.shape[0],)](
        rows if partials is None else partials, res_rows, residual_out, weight, out,
        rows.stride(0), res_rows.stride(0), residual_out.stride(0), out.stride(0), hidden, eps,
        0 if partials is None else partials.stride(0), BLOCK=block, ADD_RESIDUAL=True,
        SPLITS=0 if partials is None else partials.shape[0], num_warps=row_warps(block),
        **pdl_launch(residual.device, res_rows.shape[0]))
    return out.view(residual.shape), residual_out.view(residual.shape)


@triton.jit
def rotate_halves(x1, x2, cos, sin):
    """Neox rotary of a head's halves ``x1, x2`` by ``cos, sin`` (float32, broadcastable), in float32
    and rounded to x's dtype: the roundings every rotary here shares (the rotary kernels and the
    decode attention kernel's, which must give the same bits). The fused multiply-adds are spelled
    out because the compiler contracts ``a * b - c * d`` as it likes, kernel by kernel: left to it,
    a float32 decode with the rotary inside differed from the cache-write kernel + decode on an
    H100 (2026-11-27, ``test_decode_with_rotary_inside_equals_rotary_write_then_decode``)."""
    x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
    return tl.fma(x1f, cos, -(x2f * sin)).to(x1.dtype), tl.fma(x2f, cos, x1f * sin).to(x1.dtype)


@triton.jit
def rotate_heads(x_ptr, row, stride_row, num_heads, cos, sin,
                 HEAD_SIZE: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr, HEADS_PAD: tl.constexpr):
    """Rotate the heads of row ``row`` in place; returns the rotated halves ([HEADS_PAD, HALF_PAD],
    in x's dtype) and their mask, for a caller that also writes them elsewhere (the KV cache)."""
    heads = tl.arange(0, HEADS_PAD)
    cols = tl.arange(0, HALF_PAD)
    mask = (heads[:, None] < num_heads) & (cols[None, :] < HALF)
    ptr = x_ptr + row * stride_row + heads[:, None] * HEAD_SIZE + cols[None, :]
    r1, r2 = rotate_halves(tl.load(ptr, mask=mask, other=0.0), tl.load(ptr + HALF, mask=mask, other=0.0),
                           cos[None, :], sin[None, :])
    tl.store(ptr, r1, mask=mask)
    tl.store(ptr + HALF, r2, mask=mask)
    return r1, r2, mask


@triton.jit
def rotary_cos_sin(positions_ptr, row, cos_sin_ptr, stride_cs, HALF: tl.constexpr, HALF_PAD: tl.constexpr):
    """cos and sin ([HALF_PAD] float32) of the position of token ``row``."""
    pos = tl.load(positions_ptr + row).to(tl.int64)
    cols = tl.arange(0, HALF_PAD)
    cos = tl.load(cos_sin_ptr + pos * stride_cs + cols, mask=cols < HALF, other=0.0).to(tl.float32)
    sin = tl.load(cos_sin_ptr + pos * stride_cs + HALF + cols, mask=cols < HALF, other=0.0).to(tl.float32)
    return cos, sin


@triton.jit
def _rotary_kernel(positions_ptr, q_ptr, k_ptr, cos_sin_ptr, stride_q, stride_k, stride_cs,
                   num_q_heads, num_k_heads,
                   HEAD_SIZE: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
                   Q_HEADS_PAD: tl.constexpr, K_HEADS_PAD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cos, sin = rotary_cos_sin(positions_ptr, row, cos_sin_ptr, stride_cs, HALF, HALF_PAD)
    rotate_heads(q_ptr, row, stride_q, num_q_heads, cos, sin, HEAD_SIZE, HALF, HALF_PAD, Q_HEADS_PAD)
    rotate_heads(k_ptr, row, stride_k, num_k_heads, cos, sin, HEAD_SIZE, HALF, HALF_PAD, K_HEADS_PAD)


def _rows_view(x: torch.Tensor) -> torch.Tensor | None:
    """``x [T, ...]`` as ``[T, rest]`` sharing its storage, or None if its rows are not contiguous."""
    flat = x.view(x.shape[0], -1) if x.dim() > 2 and x[0].is_contiguous() else x
    return flat if flat.dim() == 2 and flat.stride(1) == 1 else None


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor,
                     head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Neox-style rotary embedding applied **in place** to ``q [T, Hq*D]`` and ``k [T, Hkv*D]``; returns them.

    ``q``/``k`` may be row-strided views (slices of a fused QKV output) or ``[T, H, D]`` tensors.
    ``cos_sin_cache [max_position, D]`` holds cos in its first D/2 columns and sin in the rest.
    """
    q_rows, k_rows = _rows_view(q), _rows_view(k)
    if q_rows is None or k_rows is None:
        # Rows with gaps inside: rotate contiguous copies, then write back in place.
        qc, kc = q.contiguous(), k.contiguous()
        rotary_embedding(positions, qc, kc, cos_sin_cache, head_size)
        q.copy_(qc)
        k.copy_(kc)
        return q, k
    num_tokens = q_rows.shape[0]
    if num_tokens == 0:
        return q, k
    half = head_size // 2
    num_q_heads, num_k_heads = q_rows.shape[1] // head_size, k_rows.shape[1] // head_size
    q_heads_pad, k_heads_pad = triton.next_power_of_2(num_q_heads), triton.next_power_of_2(num_k_heads)
    half_pad = triton.next_power_of_2(half)
    _rotary_kernel[(num_tokens,)](
        positions, q_rows, k_rows, cos_sin_cache, q_rows.stride(0), k_rows.stride(0), cos_sin_cache.stride(0),
        num_q_heads, num_k_heads, HEAD_SIZE=head_size, HALF=half, HALF_PAD=half_pad,
        Q_HEADS_PAD=q_heads_pad, K_HEADS_PAD=k_heads_pad,
        num_warps=row_warps(q_heads_pad * half_pad * 2))
    return q, k


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_o, inter, BLOCK: tl.constexpr, PDL: tl.constexpr):
    pdl_start(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inter
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + inter + cols, mask=mask, other=0.0).to(tl.float32)
    out = gate / (1.0 + tl.exp(-gate)) * up
    tl.store(out_ptr + row * stride_o + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(x[..., :I]) * x[..., I:]`` for ``x [..., 2I]``, computed in float32, returned in ``x.dtype``."""
    rows = _as_rows(x)
    inter = rows.shape[1] // 2
    out = torch.empty((rows.shape[0], inter), dtype=x.dtype, device=x.device)
    if out.numel() > 0:
        block = min(1024, triton.next_power_of_2(inter))
        _silu_and_mul_kernel[(rows.shape[0], triton.cdiv(inter, block))](
            rows, out, rows.stride(0), out.stride(0), inter, BLOCK=block, num_warps=row_warps(block),
            **pdl_launch(x.device, rows.shape[0]))
    return out.view(*x.shape[:-1], inter)
