"""The attention layer: reshapes heads and hands off to the engine's attention backend.

The layer owns a reference to its slice of the paged KV cache (set by the model runner once the
cache is allocated). Before that — during the memory-profiling forward — it has no cache and
attends causally within each sequence's new tokens only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagedawq.attention.backend import AttentionBackend, Rope
from pagedawq.attention.metadata import AttentionMetadata, get_attention_metadata


def attention_without_cache(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, metadata: AttentionMetadata,
                            scale: float) -> torch.Tensor:
    """Causal self-attention within each sequence's new tokens (a whole prompt per sequence): the
    memory-profiling forward's attention, which must not cost more memory than the real prefill (a
    Triton kernel that keeps no scores), or the KV cache is made smaller by the difference. So SDPA
    gets 4-D inputs with k and v expanded to the query heads, which its fused kernels take (flash in
    16 bits; on CUDA memory-efficient in fp32). With 3-D inputs and ``enable_gqa`` it ran its math
    kernel, which holds the [heads, T, T] scores: the profile of a 70B at TP=1 (64 heads, 4096
    tokens, 2 GiB of fp16 scores a copy) peaked at 10.4 GiB."""
    out = torch.empty_like(q)
    group = q.shape[1] // k.shape[1]
    start = 0
    for q_len in metadata.query_lens_cpu:
        sl = slice(start, start + q_len)
        qi = q[sl].transpose(0, 1).unsqueeze(0)
        ki, vi = (t[sl].repeat_interleave(group, dim=1).transpose(0, 1).unsqueeze(0) for t in (k, v))
        out[sl] = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True, scale=scale)[0].transpose(0, 1)
        start += q_len
    return out


class Attention(nn.Module):
    def __init__(self, num_heads: int, head_dim: int, num_kv_heads: int, scale: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.num_kv_heads, self.scale = num_heads, head_dim, num_kv_heads, scale
        self.kv_cache: torch.Tensor | None = None
        self.backend: AttentionBackend | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope: Rope | None = None) -> torch.Tensor:
        """Attention of ``q [T, Hq*D]`` over the cached context after writing ``k, v [T, Hkv*D]``;
        with ``rope``, q and k are rotated first (by the backend, fused with the cache write)."""
        tokens = q.shape[0]
        q = q.view(tokens, self.num_heads, self.head_dim)
        k = k.view(tokens, self.num_kv_heads, self.head_dim)
        v = v.view(tokens, self.num_kv_heads, self.head_dim)
        metadata = get_attention_metadata()
        if self.kv_cache is None:
            if rope is not None:
                q, k = rope.apply(q, k)
            out = attention_without_cache(q, k, v, metadata, self.scale)
        else:
            out = self.backend.forward(q, k, v, self.kv_cache, metadata, self.scale, rope)
        return out.reshape(tokens, self.num_heads * self.head_dim)
