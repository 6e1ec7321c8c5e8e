"""The GPU attention backend: Triton rotary + cache write, then Triton paged attention.

Computes the same function as the torch backend (see ``metadata.py``) with two or three kernel
launches per layer (the rotary embedding rides on the cache write; in decode steps both ride on
the attention kernel, so one or two) and no host synchronization, so it can be captured in a
CUDA graph.
"""
from __future__ import annotations

import torch
import triton

from pagedawq.attention.backend import AttentionBackend, Rope, register_backend
from pagedawq.attention.metadata import AttentionMetadata
from pagedawq.kernels.cache_ops import rotary_embedding_write_kv_cache, write_kv_cache
from pagedawq.kernels.paged_attention import (DecodeRotary, choose_num_kv_splits, decode_attention,
                                              decode_block_n, paged_attention, rotary_fusable)

# Context bounds below max_model_len with decode graphs of their own (``decode_graph_contexts``).
SHORT_DECODE_GRAPH_CONTEXTS = (128, 256, 512)


@register_backend("triton")
class TritonAttentionBackend(AttentionBackend):
    """Triton paged attention.

    Decode batches split each context into ``choose_num_kv_splits(...)`` pieces. Eagerly the split
    count follows the batch's ``max_seq_len``. While a CUDA graph is captured
    (``metadata.graph_capture``) it follows the bound of the graph's context bucket, which
    ``max_seq_len`` then holds (``graph_kv_splits``), not the batch's lengths: the grid is valid
    at every replay.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                metadata: AttentionMetadata, scale: float, rope: Rope | None = None) -> torch.Tensor:
        num_kv_splits = None
        if metadata.is_decode_only and metadata.graph_capture:
            num_kv_splits = self.graph_kv_splits(metadata.num_seqs, q.shape[1], kv_cache.shape[3],
                                                 metadata.max_seq_len)
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

    def graph_kv_splits(self, num_seqs: int, num_q_heads: int, num_kv_heads: int, bound: int) -> int:
        """KV splits of a decode graph for contexts of up to ``bound`` tokens: the ``max_model_len``
        graph's count, but no more splits than ``bound`` has key tiles.

        The ``max_model_len`` graph splits every context as if it could be that long: at batch 1
        of the 13B at TP=2 into 27 splits a head, of which a 159-token context fills 5 with one
        32-key tile each. The empty programs still load and rotate q and write a partial, and the
        reduce reads all 27. With as many splits as the bound has tiles, a context within the
        bound still gives each program at most one tile (the same chain of loads), without the
        empty programs. Fewer, longer splits would lengthen that chain: 4 splits for contexts up
        to 512 made the 13B batch-1 graph at a 159-token context 75 us slower on an H200 (2.77
        against 2.70 ms; session 29)."""
        full = choose_num_kv_splits(num_seqs, num_kv_heads, self.max_model_len)
        tile = decode_block_n(num_q_heads // num_kv_heads, full)
        return max(1, min(full, triton.cdiv(bound, tile)))

    def decode_graph_contexts(self, num_seqs: int, num_q_heads: int, num_kv_heads: int) -> tuple[int, ...]:
        """``max_model_len``, and below it each of ``SHORT_DECODE_GRAPH_CONTEXTS`` whose split count
        (``graph_kv_splits``) differs from the next larger bound's."""
        bounds = [self.max_model_len]
        splits = self.graph_kv_splits(num_seqs, num_q_heads, num_kv_heads, self.max_model_len)
        for bound in sorted((b for b in SHORT_DECODE_GRAPH_CONTEXTS if b < self.max_model_len), reverse=True):
            bound_splits = self.graph_kv_splits(num_seqs, num_q_heads, num_kv_heads, bound)
            if bound_splits != splits:
                bounds.insert(0, bound)
                splits = bound_splits
        return tuple(bounds)
