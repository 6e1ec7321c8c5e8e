"""The GPU attention backend: Triton rotary + cache write, then Triton paged attention.

Computes the same function as the torch backend (see ``metadata.py``) with two or three kernel
launches per layer (the rotary embedding rides on the cache write; in decode steps both ride on
the attention kernel, so one or two) and no host synchronization, so it can be captured in a
CUDA graph.
"""
from __future__ import annotations

import torch

from pagedawq.attention.backend import AttentionBackend, Rope, register_backend
from pagedawq.attention.metadata import AttentionMetadata
from pagedawq.kernels.cache_ops import rotary_embedding_write_kv_cache, write_kv_cache
from pagedawq.kernels.paged_attention import (DecodeRotary, choose_num_kv_splits, decode_attention,
                                              paged_attention, rotary_fusable)


@register_backend("triton")
class TritonAttentionBackend(AttentionBackend):
    """Triton paged attention.

    Decode batches split each context into ``choose_num_kv_splits(...)`` pieces. Eagerly the split
    count follows the batch's ``max_seq_len``; while a CUDA graph is captured
    (``metadata.graph_capture``) it follows ``max_model_len``, so it depends only on the batch size
    and the decode grid is valid at every replay.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                metadata: AttentionMetadata, scale: float, rope: Rope | None = None) -> torch.Tensor:
        num_kv_splits = None
        if metadata.is_decode_only and metadata.graph_capture:
            num_kv_splits = choose_num_kv_splits(metadata.num_seqs, kv_cache.shape[3], self.max_model_len)
        if metadata.is_decode_only and rope is not None and rotary_fusable(q, k, v, kv_cache):
            # decode: the rotary and the cache write ride on the attention kernel (one launch)
            return decode_attention(q, kv_cache, metadata, scale, num_kv_splits=num_kv_splits,
                                    rotary=DecodeRotary(rope.positions, rope.cos_sin_cache, k, v))
        if rope is None:
            write_kv_cache(k, v, kv_cache, metadata.slot_mapping)
        else:
            rotary_embedding_write_kv_cache(rope.positions, q, k, v, rope.cos_sin_cache, kv_cache,
                                            metadata.slot_mapping)
        return paged_attention(q, kv_cache, metadata, scale, num_kv_splits=num_kv_splits)
