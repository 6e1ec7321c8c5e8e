"""Triton kernels that scatter new keys/values into the paged KV cache.

Same function as ``pagedawq.attention.torch_backend.write_kv_cache``, but one launch with no
host work: the torch version needs a boolean gather (and a device->host sync on ``valid.all()``)
to drop padding slots, while here each program reads its slot and returns early on -1. That
makes the write safe to capture in a CUDA graph, where padded tokens carry slot -1.

``rotary_embedding_write_kv_cache`` also applies the rotary embedding to q and k first, in the
same pass (one launch per layer instead of two; the cached keys are bit-identical to rotating,
then writing).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from pagedawq.kernels.fused_ops import rotary_cos_sin, rotary_embedding, rotate_heads, row_warps
from pagedawq.kernels.pdl import pdl_launch, pdl_start


@triton.jit
def _write_kv_cache_kernel(
    k_ptr, v_ptr, cache_ptr, slot_mapping_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_c_kv, stride_c_block, stride_c_slot, stride_c_head,
    NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    HEADS_PAD: tl.constexpr, DIM_PAD: tl.constexpr, PAGE_SIZE: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    block = slot // PAGE_SIZE
    offset = slot % PAGE_SIZE
    heads = tl.arange(0, HEADS_PAD)
    dims = tl.arange(0, DIM_PAD)
    mask = (heads[:, None] < NUM_KV_HEADS) & (dims[None, :] < HEAD_DIM)
    dst = cache_ptr + block * stride_c_block + offset * stride_c_slot \
        + heads[:, None] * stride_c_head + dims[None, :]
    k = tl.load(k_ptr + token * stride_kt + heads[:, None] * stride_kh + dims[None, :], mask=mask)
    v = tl.load(v_ptr + token * stride_vt + heads[:, None] * stride_vh + dims[None, :], mask=mask)
    tl.store(dst, k.to(cache_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + stride_c_kv, v.to(cache_ptr.dtype.element_ty), mask=mask)


def write_kv_cache(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Write ``k, v [T, Hkv, D]`` into ``kv_cache [2, num_blocks, block_size, Hkv, D]`` at ``slot_mapping [T]``.

    Slots equal to -1 are skipped. ``k``/``v`` may be strided views (e.g. slices of a fused QKV
    output) as long as their last dimension is contiguous; values are cast to the cache dtype.
    """
    num_tokens = k.shape[0]
    if num_tokens == 0:
        return
    _, _, page_size, num_kv_heads, head_dim = kv_cache.shape
    if k.shape[1:] != (num_kv_heads, head_dim) or v.shape != k.shape:
        raise ValueError(f"k {tuple(k.shape)} / v {tuple(v.shape)} do not match the cache's "
                         f"[{num_kv_heads}, {head_dim}] heads")
    if k.stride(-1) != 1:
        k = k.contiguous()
    if v.stride(-1) != 1:
        v = v.contiguous()
    if kv_cache.stride(-1) != 1:
        raise ValueError("kv_cache must have a contiguous head dimension")
    _write_kv_cache_kernel[(num_tokens,)](
        k, v, kv_cache, slot_mapping,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim,
        HEADS_PAD=triton.next_power_of_2(num_kv_heads), DIM_PAD=triton.next_power_of_2(head_dim),
        PAGE_SIZE=page_size,
    )


@triton.jit
def _rotary_write_kv_cache_kernel(
    positions_ptr, q_ptr, k_ptr, v_ptr, cos_sin_ptr, cache_ptr, slot_mapping_ptr,
    stride_q, stride_k, stride_v, stride_cs, stride_c_kv, stride_c_block, stride_c_slot, stride_c_head,
    num_q_heads, num_kv_heads,
    HEAD_SIZE: tl.constexpr, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
    Q_HEADS_PAD: tl.constexpr, KV_HEADS_PAD: tl.constexpr, PAGE_SIZE: tl.constexpr, PDL: tl.constexpr,
):
    pdl_start(PDL)
    row = tl.program_id(0).to(tl.int64)
    cos, sin = rotary_cos_sin(positions_ptr, row, cos_sin_ptr, stride_cs, HALF, HALF_PAD)
    rotate_heads(q_ptr, row, stride_q, num_q_heads, cos, sin, HEAD_SIZE, HALF, HALF_PAD, Q_HEADS_PAD)
    k1, k2, mask = rotate_heads(k_ptr, row, stride_k, num_kv_heads, cos, sin, HEAD_SIZE, HALF, HALF_PAD,
                                KV_HEADS_PAD)
    slot = tl.load(slot_mapping_ptr + row).to(tl.int64)
    if slot >= 0:
        heads = tl.arange(0, KV_HEADS_PAD)[:, None]
        cols = tl.arange(0, HALF_PAD)[None, :]
        dst = cache_ptr + (slot // PAGE_SIZE) * stride_c_block + (slot % PAGE_SIZE) * stride_c_slot \
            + heads * stride_c_head + cols
        src = v_ptr + row * stride_v + heads * HEAD_SIZE + cols
        tl.store(dst, k1.to(cache_ptr.dtype.element_ty), mask=mask)
        tl.store(dst + HALF, k2.to(cache_ptr.dtype.element_ty), mask=mask)
        tl.store(dst + stride_c_kv, tl.load(src, mask=mask).to(cache_ptr.dtype.element_ty), mask=mask)
        tl.store(dst + stride_c_kv + HALF, tl.load(src + HALF, mask=mask).to(cache_ptr.dtype.element_ty),
                 mask=mask)


def _packed_heads(x: torch.Tensor) -> bool:
    """[T, H, D] with contiguous heads inside each row (any row stride): what the fused kernel reads."""
    return x.dim() == 3 and x.stride(2) == 1 and x.stride(1) == x.shape[2]


def rotary_embedding_write_kv_cache(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                    cos_sin_cache: torch.Tensor, kv_cache: torch.Tensor,
                                    slot_mapping: torch.Tensor) -> None:
    """Rotate ``q [T, Hq, D]`` and ``k [T, Hkv, D]`` in place (neox rotary, ``cos_sin_cache
    [max_position, D]``: cos then sin), then write ``k, v`` into ``kv_cache [2, num_blocks,
    block_size, Hkv, D]`` at ``slot_mapping [T]`` (-1: skipped), in one launch.

    Same result as ``fused_ops.rotary_embedding`` followed by ``write_kv_cache``, which it falls
    back to for layouts it does not read (heads not packed within a row)."""
    num_tokens = q.shape[0]
    if num_tokens == 0:
        return
    _, _, page_size, num_kv_heads, head_dim = kv_cache.shape
    if k.shape[1:] != (num_kv_heads, head_dim) or v.shape != k.shape or q.shape[2] != head_dim:
        raise ValueError(f"q {tuple(q.shape)} / k {tuple(k.shape)} / v {tuple(v.shape)} do not match the "
                         f"cache's [{num_kv_heads}, {head_dim}] heads")
    if kv_cache.stride(-1) != 1:
        raise ValueError("kv_cache must have a contiguous head dimension")
    if not (_packed_heads(q) and _packed_heads(k) and _packed_heads(v)):
        rotary_embedding(positions, q, k, cos_sin_cache, head_dim)
        write_kv_cache(k, v, kv_cache, slot_mapping)
        return
    half = head_dim // 2
    half_pad = triton.next_power_of_2(half)
    q_heads_pad = triton.next_power_of_2(q.shape[1])
    _rotary_write_kv_cache_kernel[(num_tokens,)](
        positions, q, k, v, cos_sin_cache, kv_cache, slot_mapping,
        q.stride(0), k.stride(0), v.stride(0), cos_sin_cache.stride(0),
        kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        q.shape[1], num_kv_heads,
        HEAD_SIZE=head_dim, HALF=half, HALF_PAD=half_pad, Q_HEADS_PAD=q_heads_pad,
        KV_HEADS_PAD=triton.next_power_of_2(num_kv_heads), PAGE_SIZE=page_size,
        num_warps=row_warps(q_heads_pad * half_pad * 2), **pdl_launch(q.device, num_tokens))
