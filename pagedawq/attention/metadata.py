"""What one forward pass tells every attention layer about the batch.

A batch is a flat list of tokens from several sequences: sequence ``i`` contributes
``query_start_loc[i+1] - query_start_loc[i]`` new tokens (a prefill chunk, or 1 for decode) that
sit at the end of its ``seq_lens[i]`` tokens of context (cached prefix + new tokens). Keys and
values of every token live in a paged cache; ``block_tables[i, j]`` is the physical block that
holds the sequence's tokens ``[j*block_size, (j+1)*block_size)``, and ``slot_mapping[t]`` is where
the new token ``t`` is written (``block * block_size + offset``; -1 means "padding, write nothing").

KV cache layout, per layer: ``kv_cache [2, num_blocks, block_size, num_kv_heads, head_dim]``
(index 0 keys, 1 values).
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor      # int64 [num_tokens]
    query_start_loc: torch.Tensor   # int32 [num_seqs + 1]
    seq_lens: torch.Tensor          # int32 [num_seqs]
    block_tables: torch.Tensor      # int32 [num_seqs, max_blocks_per_seq]
    max_query_len: int
    max_seq_len: int
    # Host copies, so the torch reference backend can loop without device syncs.
    query_lens_cpu: list[int]
    seq_lens_cpu: list[int]
    # Set while capturing a CUDA graph: kernels must then size their grids from static bounds
    # (batch size, and max_seq_len: the bound of the graph's context bucket), never from the lengths
    # of the batch (seq_lens_cpu holds the bound too).
    graph_capture: bool = False
    # What a backend derives from this batch once and reuses in every layer (the torch backend's
    # gather indices and masks): one forward, one batch, so no invalidation is needed.
    backend_state: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_cpu)

    @property
    def query_starts_cpu(self) -> list[int]:
        """Host copy of ``query_start_loc[:-1]`` (from ``query_lens_cpu``: no device sync)."""
        return [0, *itertools.accumulate(self.query_lens_cpu)][:-1]

    @property
    def is_decode_only(self) -> bool:
        return self.max_query_len == 1


_current: AttentionMetadata | None = None


@contextlib.contextmanager
def forward_context(metadata: AttentionMetadata | None) -> Iterator[None]:
    """Make ``metadata`` visible to the attention layers for the duration of one forward."""
    global _current
    previous, _current = _current, metadata
    try:
        yield
    finally:
        _current = previous


def get_attention_metadata() -> AttentionMetadata:
    if _current is None:
        raise RuntimeError("attention layers were called outside forward_context(); "
                           "the model runner must set the batch's AttentionMetadata")
    return _current
