"""Triton kernel that scatters new keys/values into the paged KV cache.

Same function as ``pagedawq.attention.torch_backend.write_kv_cache``, but one launch with no
host work: the torch version needs a boolean gather (and a device->host sync on ``valid.all()``)
to drop padding slots, while here each program reads its slot and returns early on -1. That
makes the write safe to capture in a CUDA graph, where padded tokens carry slot -1.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


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
