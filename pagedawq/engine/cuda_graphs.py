"""CUDA graphs for decode steps (one captured forward per padded batch size) and for the prefill
of one short prompt (one per padded token count).

A decode step of a small model is dominated by launching a few hundred small kernels; replaying a
captured graph launches them all at once. Each graph reads its inputs from static buffers, so a
step copies its token ids, positions, slots, context lengths and block tables in, pads the batch
to the next captured size (padding rows write nothing and attend to nothing), and replays.

A short prompt's prefill is launch-bound the same way: a 13B forward is ~400 launches, ~50 ms of
host time on an H100 machine for a 32-token prompt whose kernels take ~5 ms (profiled, session
15), and at TP > 1 every rank's launches meet in each all-reduce. ``PrefillGraphs`` replays the
prefill of one sequence of up to ``PREFILL_GRAPH_TOKENS[-1]`` new tokens (after any cached
prefix): the padded tokens write nothing to the KV cache and the attention kernel skips them.
"""
from __future__ import annotations

import logging
import os
import time

import torch
from torch import nn

from pagedawq.attention.metadata import AttentionMetadata, forward_context

logger = logging.getLogger(__name__)


def capture_forward(model: nn.Module, input_ids: torch.Tensor, positions: torch.Tensor, metadata: AttentionMetadata,
                    pool) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """One forward on the static buffers captured as a graph (in memory pool ``pool``, if any), after
    two eager runs that compile and autotune outside the capture; returns it and its output."""
    with forward_context(metadata):
        for _ in range(2):
            model(input_ids, positions)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            out = model(input_ids, positions)
    return graph, out


def capture_sizes(max_num_seqs: int) -> list[int]:
    sizes = [1, 2, 4, 8] + list(range(16, 257, 16))
    return [s for s in sizes if s <= max(1, max_num_seqs)] or [1]


class _StaticTokens:
    """The token-level static buffers every captured forward reads (``input_ids``, ``positions``,
    ``slot_mapping``, set by the subclass) and their filling before a replay."""
    input_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor

    def _stage_tokens(self, sizes: list[int], input_ids: torch.Tensor, positions: torch.Tensor,
                      slot_mapping: torch.Tensor) -> int:
        """Copy a batch's tokens in and pad them to the next of ``sizes`` (padding slots -1: they
        write nothing to the KV cache); returns that size."""
        n = input_ids.shape[0]
        padded = next(s for s in sizes if s >= n)
        self.input_ids[:n].copy_(input_ids)
        self.positions[:n].copy_(positions)
        self.slot_mapping[:n].copy_(slot_mapping)
        self.slot_mapping[n:padded].fill_(-1)
        return padded


class DecodeGraphs(_StaticTokens):
    def __init__(self, model: nn.Module, device: torch.device, max_num_seqs: int, max_model_len: int,
                 block_size: int) -> None:
        self.model = model
        self.sizes = capture_sizes(max_num_seqs)
        max_bs = self.sizes[-1]
        self.max_blocks = -(-max_model_len // block_size)
        self.max_model_len = max_model_len
        self.input_ids = torch.zeros(max_bs, dtype=torch.long, device=device)
        self.positions = torch.zeros(max_bs, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((max_bs,), -1, dtype=torch.int64, device=device)
        self.seq_lens = torch.zeros(max_bs, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(max_bs, self.max_blocks, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(max_bs + 1, dtype=torch.int32, device=device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None   # the captured graphs' memory pool (the prefill graphs share it)

    def _metadata(self, bs: int) -> AttentionMetadata:
        return AttentionMetadata(slot_mapping=self.slot_mapping[:bs], query_start_loc=self.query_start_loc[:bs + 1],
                                 seq_lens=self.seq_lens[:bs], block_tables=self.block_tables[:bs], max_query_len=1,
                                 max_seq_len=self.max_model_len, query_lens_cpu=[1] * bs,
                                 seq_lens_cpu=[self.max_model_len] * bs, graph_capture=True)

    @torch.inference_mode()
    def capture(self) -> None:
        start = time.perf_counter()
        pool = None
        for bs in reversed(self.sizes):   # largest first, so smaller graphs reuse its memory pool
            graph, out = capture_forward(self.model, self.input_ids[:bs], self.positions[:bs], self._metadata(bs), pool)
            pool = graph.pool()
            self.graphs[bs] = (graph, out)
        self.pool = pool
        torch.cuda.synchronize()
        logger.info("captured %d decode CUDA graphs (batch sizes %s) in %.1f s", len(self.sizes), self.sizes,
                    time.perf_counter() - start)

    def can_run(self, num_seqs: int, metadata: AttentionMetadata) -> bool:
        return metadata.is_decode_only and num_seqs <= self.sizes[-1]

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: AttentionMetadata) -> torch.Tensor:
        n = input_ids.shape[0]
        bs = self._stage_tokens(self.sizes, input_ids, positions, metadata.slot_mapping)
        self.seq_lens[:n].copy_(metadata.seq_lens)
        self.seq_lens[n:bs].zero_()
        width = metadata.block_tables.shape[1]
        self.block_tables[:n, :width].copy_(metadata.block_tables)
        graph, out = self.graphs[bs]
        graph.replay()
        return out[:n]


# Padded token counts of the single-sequence prefills replayed from graphs.
PREFILL_GRAPH_TOKENS = (16, 32, 64)


class PrefillGraphs(_StaticTokens):
    """Graphs of one sequence's prefill of 16, 32 or 64 new tokens (``PREFILL_GRAPH_TOKENS``), with
    any context before them. ``PAGEDAWQ_DISABLE_PREFILL_GRAPHS=1`` runs such prefills eagerly."""

    def __init__(self, model: nn.Module, device: torch.device, max_model_len: int, block_size: int,
                 max_tokens: int) -> None:
        self.model = model
        # up to the longest step, and no size past the first that holds the longest prompt
        self.sizes = [t for i, t in enumerate(PREFILL_GRAPH_TOKENS)
                      if t <= max_tokens and (i == 0 or PREFILL_GRAPH_TOKENS[i - 1] < max_model_len)]
        self.max_blocks = -(-max_model_len // block_size)
        self.max_model_len = max_model_len
        top = self.sizes[-1] if self.sizes else 0
        self.input_ids = torch.zeros(top, dtype=torch.long, device=device)
        self.positions = torch.zeros(top, dtype=torch.long, device=device)
        self.slot_mapping = torch.full((top,), -1, dtype=torch.int64, device=device)
        self.query_start_loc = torch.tensor([0, top], dtype=torch.int32, device=device)
        self.seq_lens = torch.full((1,), top, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(1, self.max_blocks, dtype=torch.int32, device=device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    @staticmethod
    def enabled() -> bool:
        return os.environ.get("PAGEDAWQ_DISABLE_PREFILL_GRAPHS", "0") != "1"

    def _metadata(self, tokens: int) -> AttentionMetadata:
        # Static bounds for the kernels' grids and tiles: ``tokens`` new tokens, any context.
        return AttentionMetadata(slot_mapping=self.slot_mapping[:tokens], query_start_loc=self.query_start_loc,
                                 seq_lens=self.seq_lens, block_tables=self.block_tables, max_query_len=tokens,
                                 max_seq_len=self.max_model_len, query_lens_cpu=[tokens],
                                 seq_lens_cpu=[self.max_model_len], graph_capture=True)

    @torch.inference_mode()
    def capture(self, pool=None) -> None:
        """Capture every size, in the memory pool ``pool`` if given (the decode graphs')."""
        start = time.perf_counter()
        for tokens in reversed(self.sizes):
            self.query_start_loc[1] = tokens
            self.seq_lens[0] = tokens
            graph, out = capture_forward(self.model, self.input_ids[:tokens], self.positions[:tokens],
                                         self._metadata(tokens), pool)
            pool = graph.pool()
            self.graphs[tokens] = (graph, out)
        torch.cuda.synchronize()
        logger.info("captured %d prefill CUDA graphs (%s new tokens of one sequence) in %.1f s", len(self.sizes),
                    self.sizes, time.perf_counter() - start)

    def can_run(self, metadata: AttentionMetadata) -> bool:
        """One sequence with 2 to the largest size of new tokens (1 is a decode step)."""
        return bool(self.graphs) and metadata.num_seqs == 1 and 1 < metadata.max_query_len <= self.sizes[-1]

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: AttentionMetadata) -> torch.Tensor:
        n = input_ids.shape[0]
        tokens = self._stage_tokens(self.sizes, input_ids, positions, metadata.slot_mapping)
        self.query_start_loc[1:].copy_(metadata.query_start_loc[1:])
        self.seq_lens.copy_(metadata.seq_lens)
        width = metadata.block_tables.shape[1]
        self.block_tables[:, :width].copy_(metadata.block_tables)
        graph, out = self.graphs[tokens]
        graph.replay()
        return out[:n]
