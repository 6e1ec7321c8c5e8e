"""Paged attention in plain torch: the CPU path and the reference for the GPU kernels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pagedawq.attention.backend import AttentionBackend, register_backend
from pagedawq.attention.metadata import AttentionMetadata


def write_kv_cache(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Scatter new keys/values ``[T, Hkv, D]`` into their cache slots; slot -1 is skipped."""
    num_kv_heads, head_dim = kv_cache.shape[-2:]
    flat = kv_cache.view(2, -1, num_kv_heads, head_dim)
    valid = slot_mapping >= 0
    if not bool(valid.all()):
        k, v, slot_mapping = k[valid], v[valid], slot_mapping[valid]
    flat[0, slot_mapping] = k.to(flat.dtype)
    flat[1, slot_mapping] = v.to(flat.dtype)


def gather_context(kv_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[seq_len, Hkv, D]`` of one sequence, read through its block table."""
    block_size = kv_cache.shape[2]
    n_blocks = (seq_len + block_size - 1) // block_size
    blocks = block_table[:n_blocks].long()
    k = kv_cache[0, blocks].flatten(0, 1)[:seq_len]
    v = kv_cache[1, blocks].flatten(0, 1)[:seq_len]
    return k, v


def paged_attention_reference(q: torch.Tensor, kv_cache: torch.Tensor, metadata: AttentionMetadata,
                              scale: float) -> torch.Tensor:
    """Causal attention of each sequence's new queries over its whole cached context."""
    out = torch.empty_like(q)
    num_q_heads, num_kv_heads = q.shape[1], kv_cache.shape[3]
    group = num_q_heads // num_kv_heads
    start = 0
    for i, (q_len, seq_len) in enumerate(zip(metadata.query_lens_cpu, metadata.seq_lens_cpu)):
        if q_len == 0:
            continue
        k, v = gather_context(kv_cache, metadata.block_tables[i], seq_len)
        qi = q[start:start + q_len].transpose(0, 1)                 # [Hq, Lq, D]
        k = k.transpose(0, 1).repeat_interleave(group, dim=0)        # [Hq, Lk, D]
        v = v.transpose(0, 1).repeat_interleave(group, dim=0)
        # Query j sits at absolute position seq_len - q_len + j and sees keys up to there.
        q_pos = torch.arange(seq_len - q_len, seq_len, device=q.device)
        mask = torch.arange(seq_len, device=q.device)[None, :] <= q_pos[:, None]
        o = F.scaled_dot_product_attention(qi, k.to(qi.dtype), v.to(qi.dtype), attn_mask=mask, scale=scale)
        out[start:start + q_len] = o.transpose(0, 1)
        start += q_len
    return out


@register_backend("torch")
class TorchAttentionBackend(AttentionBackend):
    def forward(self, q, k, v, kv_cache, metadata, scale):
        write_kv_cache(k, v, kv_cache, metadata.slot_mapping)
        return paged_attention_reference(q, kv_cache, metadata, scale)
