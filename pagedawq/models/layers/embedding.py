"""Token embedding and LM head with the vocabulary split across tensor-parallel ranks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagedawq.distributed.parallel_state import (all_gather, all_reduce, embedding_rms_norm, get_tp_rank, get_tp_size,
                                                 greedy_tokens)
from pagedawq.models.layers.norm import RMSNorm
from pagedawq.quant.base import set_weight_attrs


class VocabParallelEmbedding(nn.Module):
    """Each rank holds rows ``[rank * per_rank, (rank + 1) * per_rank)`` of the (padded) vocabulary;
    lookups of other ranks' ids give zeros, and an all-reduce assembles the full embedding."""

    def __init__(self, vocab_size: int, hidden_size: int, params_dtype: torch.dtype) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_size()
        self.per_rank = -(-vocab_size // self.tp_size)
        self.start = self.tp_rank * self.per_rank
        self.real_rows = max(0, min(self.per_rank, vocab_size - self.start))   # the rest pads the last rank
        self.weight = nn.Parameter(torch.empty(self.per_rank, hidden_size, dtype=params_dtype), requires_grad=False)
        set_weight_attrs(self.weight, dict(weight_loader=self.weight_loader))

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard_id=None) -> None:
        if loaded.shape[0] != self.vocab_size:
            raise ValueError(f"embedding has {loaded.shape[0]} rows, the config says vocab_size={self.vocab_size}")
        rows = loaded[self.start:self.start + self.per_rank]
        param.data.zero_()
        param.data[: rows.shape[0]].copy_(rows.to(param.dtype))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(input_ids, self.weight)
        local = input_ids - self.start
        outside = (local < 0) | (local >= self.per_rank)
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        out.masked_fill_(outside.unsqueeze(-1), 0)
        return all_reduce(out)

    def embed_and_rms_norm(self, input_ids: torch.Tensor, norm: RMSNorm) -> tuple[torch.Tensor, torch.Tensor]:
        """``(norm(h), h)`` for ``h = self(input_ids)``: the embedding and the first decoder layer's
        input norm. At TP > 1 one kernel does the masked lookup, the all-reduce and the norm where the
        symmetric-memory all-reduce takes the batch (``parallel_state.embedding_rms_norm``): at the head
        of a batch-1 decode step it stands for nine small kernels (H100, 13B at TP=2)."""
        if self.tp_size > 1:
            fused = embedding_rms_norm(input_ids, self.weight, self.start, norm.weight, norm.eps)
            if fused is not None:
                return fused
        h = self(input_ids)
        return norm(h), h


class ParallelLMHead(VocabParallelEmbedding):
    """Logits over this rank's vocabulary slice, gathered to the full vocabulary."""

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = all_gather(F.linear(hidden, self.weight), dim=-1)
        return logits[..., : self.vocab_size]

    def greedy_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """``compute_logits(hidden).float().argmax(-1)``, the same on every rank, without gathering
        the logits: each rank's best over its slice (padding rows left out) meets the others'
        (``parallel_state.greedy_tokens``)."""
        return greedy_tokens(F.linear(hidden, self.weight[:self.real_rows]), self.start)
