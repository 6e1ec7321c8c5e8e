"""CUDA graphs for decode steps (one captured forward per padded batch size) and for the prefill
of one short prompt (one per padded token count).

A decode step of a small model is dominated by launching a few hundred small kernels; replaying a
captured graph launches them all at once. Each graph reads its inputs from static buffers, so a
step sends its token ids, positions, slots, context lengths and block tables there (one copy into
an ``InputArena``), pads the batch to the next captured size (padding rows write nothing and
attend to nothing), and replays.

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
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pagedawq.attention.metadata import AttentionMetadata, forward_context
from pagedawq.engine.host_staging import ArenaPack, DeviceStep, InputArena, StepArrays

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


def _token_fields(tokens: int) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """The token-level inputs of a graph's ``InputArena`` (``_pack_tokens`` fills them)."""
    return [(name, torch.int64, (tokens,)) for name in ("input_ids", "positions", "slot_mapping")]


def _pack_tokens(pack: ArenaPack, step: StepArrays) -> None:
    """A step's token-level inputs into a graph's pack; padding tokens get slot -1 (no KV write)."""
    n = step.num_tokens
    pack["input_ids"][:n] = step.input_ids
    pack["positions"][:n] = step.positions
    pack["slot_mapping"][:n] = step.slot_mapping
    pack["slot_mapping"][n:] = -1


def _replay_rows(captured: tuple[torch.cuda.CUDAGraph, torch.Tensor], rows: int) -> torch.Tensor:
    """Replay a captured (graph, output) pair; the output's first ``rows`` rows (the rest is padding)."""
    graph, out = captured
    graph.replay()
    return out[:rows]


class DecodeGraphs:
    """Decode graphs, one per padded batch size (``capture_sizes``) and context bucket. Their input
    buffers are views of one ``InputArena``: ``stage`` packs a step there in one copy, ``replay``
    runs its graph.

    ``graph_contexts(batch size)`` gives the context-length bounds at which that batch size is
    captured (``AttentionBackend.decode_graph_contexts``; by default ``max_model_len`` alone): a
    step replays the graph of the smallest bound that holds its longest sequence, so a kernel whose
    grid follows the context (split-KV attention) is sized for the bucket, not for the longest
    context the engine allows."""

    def __init__(self, model: nn.Module, device: torch.device, max_num_seqs: int, max_model_len: int,
                 block_size: int, graph_contexts: Callable[[int], Sequence[int]] | None = None) -> None:
        self.model = model
        self.sizes = capture_sizes(max_num_seqs)
        max_bs = self.sizes[-1]
        self.max_blocks = -(-max_model_len // block_size)
        self.max_model_len = max_model_len
        self.contexts = {bs: tuple(graph_contexts(bs)) if graph_contexts else (max_model_len,) for bs in self.sizes}
        for bs, bounds in self.contexts.items():
            if list(bounds) != sorted(set(bounds)) or bounds[-1] != max_model_len:
                raise ValueError(f"decode graph contexts of batch {bs} must ascend to max_model_len="
                                 f"{max_model_len}, got {bounds}")
        self.inputs = InputArena([*_token_fields(max_bs), ("seq_lens", torch.int32, (max_bs,)),
                                  ("block_tables", torch.int32, (max_bs, self.max_blocks))], device)
        views = self.inputs.views
        self.input_ids, self.positions = views["input_ids"], views["positions"]
        self.slot_mapping, self.seq_lens, self.block_tables = views["slot_mapping"], views["seq_lens"], views["block_tables"]
        self.slot_mapping.fill_(-1)   # the captures' warm-up forwards write nothing to the KV cache
        self.query_start_loc = torch.arange(max_bs + 1, dtype=torch.int32, device=device)
        # (padded batch size, context bound) -> (graph, its output)
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = None   # the captured graphs' memory pool (the prefill graphs share it)

    def _metadata(self, bs: int, context: int) -> AttentionMetadata:
        return AttentionMetadata(slot_mapping=self.slot_mapping[:bs], query_start_loc=self.query_start_loc[:bs + 1],
                                 seq_lens=self.seq_lens[:bs], block_tables=self.block_tables[:bs], max_query_len=1,
                                 max_seq_len=context, query_lens_cpu=[1] * bs,
                                 seq_lens_cpu=[context] * bs, graph_capture=True)

    @torch.inference_mode()
    def capture(self) -> None:
        start = time.perf_counter()
        pool = None
        for bs in reversed(self.sizes):   # largest first, so smaller graphs reuse its memory pool
            for context in reversed(self.contexts[bs]):
                graph, out = capture_forward(self.model, self.input_ids[:bs], self.positions[:bs],
                                             self._metadata(bs, context), pool)
                pool = graph.pool()
                self.graphs[bs, context] = (graph, out)
        self.pool = pool
        torch.cuda.synchronize()
        short = {bs: bounds[:-1] for bs, bounds in self.contexts.items() if len(bounds) > 1}
        logger.info("captured %d decode CUDA graphs (batch sizes %s; shorter context bounds %s) in %.1f s",
                    len(self.graphs), self.sizes, short or "none", time.perf_counter() - start)

    def can_run(self, step: StepArrays) -> bool:
        return max(step.query_lens) == 1 and len(step.query_lens) <= self.sizes[-1]

    def padded_size(self, num_seqs: int) -> int:
        """The captured batch size a step of ``num_seqs`` sequences is padded to."""
        return next(s for s in self.sizes if s >= num_seqs)

    def graph_for(self, num_seqs: int, max_seq_len: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """The graph (and its output) that a decode step of ``num_seqs`` sequences, the longest
        ``max_seq_len`` tokens, replays."""
        bs = self.padded_size(num_seqs)
        return self.graphs[bs, next(c for c in self.contexts[bs] if c >= max_seq_len)]

    def stage(self, step: StepArrays) -> DeviceStep:
        """Send a decode step's inputs into the graphs' buffers, padded to the next captured size
        (padding rows: slot -1, context 0, so they write nothing and attend to nothing)."""
        n = step.num_tokens
        pack = self.inputs.pack(last_rows=self.padded_size(n))
        _pack_tokens(pack, step)
        pack["seq_lens"][:n] = step.seq_lens
        pack["block_tables"][:n, :step.block_table.shape[1]] = step.block_table
        self.inputs.upload(pack)
        return DeviceStep(self.input_ids[:n], self.positions[:n],
                          step.metadata(self.slot_mapping[:n], self.query_start_loc[:n + 1], self.seq_lens[:n],
                                        self.block_tables[:n]))

    def replay(self, staged: DeviceStep) -> torch.Tensor:
        """Replay the graph of the staged step's padded size and context bucket; its hidden rows."""
        n = staged.input_ids.shape[0]
        return _replay_rows(self.graph_for(n, staged.metadata.max_seq_len), n)


# Padded token counts of the single-sequence prefills replayed from graphs.
PREFILL_GRAPH_TOKENS = (16, 32, 64)


class PrefillGraphs:
    """Graphs of one sequence's prefill of 16, 32 or 64 new tokens (``PREFILL_GRAPH_TOKENS``), with
    any context before them. ``PAGEDAWQ_DISABLE_PREFILL_GRAPHS=1`` runs such prefills eagerly. Their
    input buffers are views of one ``InputArena``, as the decode graphs'."""

    def __init__(self, model: nn.Module, device: torch.device, max_model_len: int, block_size: int,
                 max_tokens: int) -> None:
        self.model = model
        # up to the longest step, and no size past the first that holds the longest prompt
        self.sizes = [t for i, t in enumerate(PREFILL_GRAPH_TOKENS)
                      if t <= max_tokens and (i == 0 or PREFILL_GRAPH_TOKENS[i - 1] < max_model_len)]
        self.max_blocks = -(-max_model_len // block_size)
        self.max_model_len = max_model_len
        top = self.sizes[-1] if self.sizes else 0
        self.inputs = InputArena([*_token_fields(top), ("query_start_loc", torch.int32, (2,)),
                                  ("seq_lens", torch.int32, (1,)), ("block_tables", torch.int32, (1, self.max_blocks))],
                                 device)
        views = self.inputs.views
        self.input_ids, self.positions, self.slot_mapping = views["input_ids"], views["positions"], views["slot_mapping"]
        self.query_start_loc, self.seq_lens, self.block_tables = (views["query_start_loc"], views["seq_lens"],
                                                                  views["block_tables"])
        self.slot_mapping.fill_(-1)   # the captures' warm-up forwards write nothing to the KV cache
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

    def can_run(self, step: StepArrays) -> bool:
        """One sequence with 2 to the largest size of new tokens (1 is a decode step)."""
        return bool(self.graphs) and len(step.query_lens) == 1 and 1 < step.query_lens[0] <= self.sizes[-1]

    def stage(self, step: StepArrays) -> DeviceStep:
        """Send the prefill's inputs into the graphs' buffers; the padded tokens after its ``n`` get
        slot -1 (they write nothing) and lie past ``query_start_loc[1]`` (nothing attends to them)."""
        n = step.num_tokens
        pack = self.inputs.pack()
        _pack_tokens(pack, step)
        pack["query_start_loc"][1] = n
        pack["seq_lens"][0] = step.seq_lens[0]
        pack["block_tables"][:, :step.block_table.shape[1]] = step.block_table
        self.inputs.upload(pack)
        return DeviceStep(self.input_ids[:n], self.positions[:n],
                          step.metadata(self.slot_mapping[:n], self.query_start_loc, self.seq_lens, self.block_tables))

    def replay(self, staged: DeviceStep) -> torch.Tensor:
        """Replay the graph of the smallest captured size that holds the staged prefill; its rows."""
        n = staged.input_ids.shape[0]
        return _replay_rows(self.graphs[min(size for size in self.graphs if size >= n)], n)
