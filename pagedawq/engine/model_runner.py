"""Turns a SchedulerOutput into flat tensors, runs one forward, samples (rank 0).

Model-agnostic: it knows the batch layout (see ``attention/metadata.py``) and the model's entry
points, ``model(input_ids, positions) -> hidden``, ``model.compute_logits(hidden)`` and, on a GPU or
with tensor parallelism, ``model.greedy_tokens(hidden)`` (the argmax rows in one kernel, without
gathering the logits).
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pagedawq.attention.backend import get_backend
from pagedawq.attention.metadata import AttentionMetadata, forward_context
from pagedawq.config import EngineConfig
from pagedawq.distributed.parallel_state import broadcast_from_rank0, get_tp_size
from pagedawq.engine.cuda_graphs import DecodeGraphs, PrefillGraphs
from pagedawq.engine.host_staging import DeviceStep, HostStaging, StepArrays
from pagedawq.engine.sampler import DeviceSample, RequestSamplingState, Sampler, TokenLogprobs, argmax_of_raw_logits
from pagedawq.engine.scheduler import PENDING_TOKEN, SchedulerOutput
from pagedawq.engine.warmup import (WarmupBatch, first_layers, prefill_token_counts, starting_up, warmup_batches,
                                   warn_late_compile)
from pagedawq.kernels.jit_compiles import JitCompiles
from pagedawq.models.layers.attention import Attention

logger = logging.getLogger(__name__)


@dataclass
class ModelRunnerOutput:
    request_ids: list[str]
    token_ids: list[int]
    logprobs: list[TokenLogprobs | None]


class PendingOutput:
    """A launched step whose tokens are still on their way to the host."""

    def __init__(self, request_ids: list[str], sample: DeviceSample | None) -> None:
        self.request_ids = request_ids
        self.sample = sample

    def result(self) -> ModelRunnerOutput:
        if self.sample is None:
            return ModelRunnerOutput([], [], [])
        out = self.sample.to_host()
        return ModelRunnerOutput(self.request_ids, out.token_ids, out.logprobs)


@dataclass
class BatchInputs:
    staged: DeviceStep
    graphs: DecodeGraphs | PrefillGraphs | None   # the graphs that replay this step, or None: eager
    logits_indices: slice | torch.Tensor           # the hidden rows to sample
    sample_request_ids: list[str]


def _as_slice(indices: list[int]) -> slice | None:
    """``indices`` as a slice when they are consecutive (every decode row, a prefill's last token),
    which indexes on the device without uploading them; else None."""
    if not indices:
        return slice(0, 0)
    if all(b == a + 1 for a, b in zip(indices, indices[1:])):
        return slice(indices[0], indices[-1] + 1)
    return None


class ModelRunner:
    def __init__(self, config: EngineConfig, model: nn.Module, device: torch.device, is_driver: bool) -> None:
        self.config = config
        self.model = model
        self.device = device
        self.staging = HostStaging(device)
        self.is_driver = is_driver
        self.block_size = config.cache.block_size
        self.sampler = Sampler()
        self.states: dict[str, RequestSamplingState] = {}
        # The last step's sampled tokens, on the device, and each request's row in them: a step
        # launched before the host has seen them reads its pending input tokens from here.
        self.last_sampled = torch.zeros(0, dtype=torch.long, device=device)
        self.last_sampled_rows: dict[str, int] = {}
        # With tensor parallelism and asynchronous scheduling every rank needs those tokens (for
        # its embedding lookup), so rank 0 broadcasts them on the device after each sample.
        self.share_sampled_tokens = get_tp_size() > 1 and config.async_scheduling
        # A batch whose every row takes the argmax of its raw logits gets its tokens from
        # ``model.greedy_tokens``, not the sampler: with tensor parallelism on every rank from the
        # ranks' best (logit, token) pairs, no logits gathered, no tokens broadcast; on one GPU from
        # one argmax kernel. Every rank tracks which requests those are.
        self.greedy_path = get_tp_size() > 1 or device.type == "cuda"
        self.argmax_requests: set[str] = set()
        self.attn_layers = [m for m in model.modules() if isinstance(m, Attention)]
        self.kv_caches: list[torch.Tensor] = []
        self.graphs: DecodeGraphs | None = None
        self.prefill_graphs: PrefillGraphs | None = None
        self._late_compiles = contextlib.ExitStack()   # holds the compile watch after start-up

    # ---- KV cache ---------------------------------------------------------------------------
    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        layer = self.attn_layers[0]
        return (2, num_blocks, self.block_size, layer.num_kv_heads, layer.head_dim)

    def bytes_per_block(self) -> int:
        elem = torch.tensor([], dtype=self.config.model.dtype).element_size()
        per_layer = 2 * self.block_size * self.attn_layers[0].num_kv_heads * self.attn_layers[0].head_dim * elem
        return per_layer * len(self.attn_layers)

    def bind_kv_cache(self, num_blocks: int) -> None:
        backend = get_backend(self.config.resolved_attention_backend, self.config.scheduler.max_model_len)
        shape = self.kv_cache_shape(num_blocks)
        # Zeroed, not empty: padded reads of unused slots must never meet NaN bit patterns.
        self.kv_caches = [torch.zeros(shape, dtype=self.config.model.dtype, device=self.device)
                          for _ in self.attn_layers]
        for layer, cache in zip(self.attn_layers, self.kv_caches):
            layer.kv_cache, layer.backend = cache, backend
        if self.device.type != "cuda":
            return
        with starting_up():
            self.warm_up()
            if self.config.enforce_eager:   # variants compile in requests, by choice: nothing to watch
                return
            self._capture_graphs(backend)
        # from here on a compile is one the warm-up missed, and a request waits for it
        self._late_compiles.enter_context(JitCompiles(on_compile=warn_late_compile))

    def close(self) -> None:
        """Stop watching for compiles (the engine is shutting down)."""
        self._late_compiles.close()

    def _capture_graphs(self, backend) -> None:
        """Capture the decode graphs (per batch size and context bucket) and the short-prefill graphs."""
        if self.config.resolved_attention_backend != "triton":
            logger.warning("CUDA graphs need the triton attention backend; running eagerly")
            return
        sched = self.config.scheduler
        heads = self.attn_layers[0].num_heads, self.attn_layers[0].num_kv_heads
        self.graphs = DecodeGraphs(self.model, self.device, sched.max_num_seqs, sched.max_model_len,
                                   self.block_size, lambda bs: backend.decode_graph_contexts(bs, *heads))
        self.graphs.capture()
        if PrefillGraphs.enabled():
            self.prefill_graphs = PrefillGraphs(self.model, self.device, sched.max_model_len, self.block_size,
                                                sched.max_num_batched_tokens)
            self.prefill_graphs.capture(self.graphs.pool)

    # ---- inputs -----------------------------------------------------------------------------
    def prepare_inputs(self, sched: SchedulerOutput) -> BatchInputs:
        """The step's inputs on the device: in a graph's own buffers when a graph will run it (one
        copy), else in one upload per dtype; the tokens the previous step sampled copied in on the
        device; the rows to sample as a slice of the hidden states where they are contiguous."""
        bs = self.block_size
        input_ids, positions, slots, query_lens, seq_lens, logits_idx, sample_ids = [], [], [], [], [], [], []
        max_blocks = max(len(s.block_ids) for s in sched.seqs)
        block_table = np.zeros((len(sched.seqs), max_blocks), dtype=np.int32)
        pending_at, pending_rows = [], []   # where a token the previous step sampled goes, and its row there
        for i, seq in enumerate(sched.seqs):
            n = len(seq.token_ids)
            if seq.token_ids[-1] == PENDING_TOKEN:
                pending_at.append(len(input_ids) + n - 1)
                pending_rows.append(self._pending_row(seq.request_id))
            input_ids.extend(seq.token_ids)
            pos = range(seq.start_pos, seq.start_pos + n)
            positions.extend(pos)
            slots.extend(seq.block_ids[p // bs] * bs + p % bs for p in pos)
            query_lens.append(n)
            seq_lens.append(seq.start_pos + n)
            block_table[i, :len(seq.block_ids)] = seq.block_ids
            if seq.sample:
                logits_idx.append(len(input_ids) - 1)
                sample_ids.append(seq.request_id)
        step = StepArrays(*(np.asarray(v, dtype=np.int64) for v in (input_ids, positions, slots)),
                          query_lens=query_lens, seq_lens=seq_lens, block_table=block_table)
        graphs = next((g for g in (self.graphs, self.prefill_graphs) if g is not None and g.can_run(step)), None)
        staged = graphs.stage(step) if graphs is not None else self.staging.upload_step(step)
        at, rows, logits_rows = _as_slice(pending_at), _as_slice(pending_rows), _as_slice(logits_idx)
        scattered = at is None or rows is None   # their indices go to the device, in one more upload
        parts = ([pending_at, pending_rows] if scattered else []) + ([logits_idx] if logits_rows is None else [])
        if parts:
            uploaded = self.staging.upload([np.asarray(p, dtype=np.int64) for p in parts], torch.int64)
            if scattered:
                at, rows = uploaded[:2]
            if logits_rows is None:
                logits_rows = uploaded[-1]
        if pending_at:
            staged.input_ids[at] = self.last_sampled[rows]
        return BatchInputs(staged, graphs, logits_rows, sample_ids)

    def _pending_row(self, request_id: str) -> int:
        """Row of ``request_id`` in the previous step's sampled tokens (which stay on the device)."""
        row = self.last_sampled_rows.get(request_id)
        if row is None:
            raise RuntimeError(f"request {request_id} expects a token from the previous step, which did not "
                               "sample it (the scheduler and the runner disagree)")
        return row

    def _update_states(self, sched: SchedulerOutput) -> None:
        for rid in sched.finished_request_ids:
            self.states.pop(rid, None)
            self.argmax_requests.discard(rid)
        if self.greedy_path:
            self.argmax_requests.update(new.request_id for new in sched.new_requests
                                        if argmax_of_raw_logits(new.sampling_params))
        if self.is_driver:
            for new in sched.new_requests:
                self.states[new.request_id] = RequestSamplingState.create(
                    new.sampling_params, new.prompt_token_ids, self.device)

    # ---- forward ----------------------------------------------------------------------------
    def execute(self, sched: SchedulerOutput) -> ModelRunnerOutput | None:
        """Run one step and wait for its tokens (rank 0); other ranks return None."""
        pending = self.launch(sched)
        return pending.result() if pending is not None else None

    @torch.inference_mode()
    def launch(self, sched: SchedulerOutput) -> PendingOutput | None:
        """Enqueue one step on the device and return without waiting for it (rank 0; other ranks
        return None). The sampled tokens stay on the device as the next step's pending inputs."""
        self._update_states(sched)
        if sched.is_empty:
            return PendingOutput([], None) if self.is_driver else None
        batch = self.prepare_inputs(sched)
        staged = batch.staged
        if batch.graphs is not None:
            hidden = batch.graphs.replay(staged)
        else:
            with forward_context(staged.metadata):
                hidden = self.model(staged.input_ids, staged.positions)
        if not batch.sample_request_ids:
            return PendingOutput([], None) if self.is_driver else None
        self.last_sampled_rows = {rid: i for i, rid in enumerate(batch.sample_request_ids)}
        if self.greedy_path and self.argmax_requests.issuperset(batch.sample_request_ids):
            self.last_sampled = self.model.greedy_tokens(hidden[batch.logits_indices])
            if not self.is_driver:
                return None
            states = [self.states[rid] for rid in batch.sample_request_ids]
            return PendingOutput(batch.sample_request_ids, DeviceSample(states, self.last_sampled, None))
        logits = self.model.compute_logits(hidden[batch.logits_indices])
        if not self.is_driver:
            if self.share_sampled_tokens:
                self.last_sampled = broadcast_from_rank0(
                    torch.empty(len(batch.sample_request_ids), dtype=torch.long, device=self.device))
            return None
        sample = self.sampler.sample(logits, [self.states[rid] for rid in batch.sample_request_ids])
        self.last_sampled = sample.tokens
        if self.share_sampled_tokens:
            broadcast_from_rank0(sample.tokens)
        return PendingOutput(batch.sample_request_ids, sample)

    @torch.inference_mode()
    def profile_run(self) -> None:
        """A forward of the largest batch the scheduler can form, without a KV cache, so the
        worker can measure peak activation memory."""
        cfg = self.config.scheduler
        total = cfg.max_num_batched_tokens
        lens = [cfg.max_model_len] * (total // cfg.max_model_len)
        if total % cfg.max_model_len:
            lens.append(total % cfg.max_model_len)
        self._dummy_forward(lens, num_logits=min(cfg.max_num_seqs, total))

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Compile now every kernel variant a batch of up to ``max_num_batched_tokens`` tokens can
        launch (``pagedawq.engine.warmup``: one forward of each launch signature, through the
        first two layers), the logits and the tensor-parallel greedy exchange, so that no request
        pays for a compilation in its time to first token. Every rank runs the same forwards.
        With ``enforce_eager`` (a quick start, as in vLLM) only a short prefill chunk and the greedy
        exchange: the other variants compile in the requests that first need them."""
        sched = self.config.scheduler
        if self.config.enforce_eager:
            batches = [WarmupBatch((2,), 1)]
        else:
            counts = prefill_token_counts(self.model, sched.max_num_batched_tokens, self.device)
            batches = list(warmup_batches(counts, sched.max_model_len, self.block_size))
        start = time.perf_counter()
        with JitCompiles() as compiled, first_layers(self.model, 2):
            # a bar only in the user's process (TP=1): the ranks of TP > 1 are Ray workers
            for batch in tqdm(batches, desc="Compiling kernels", disable=get_tp_size() > 1, leave=False):
                self._dummy_forward(list(batch.lens), num_logits=len(batch.lens), table_blocks=batch.table_blocks)
        logger.info("warm-up: %d batches of 1-%d tokens compiled %d kernel variants in %.1f s", len(batches),
                    max(sum(b.lens) for b in batches), len(compiled.kernels), time.perf_counter() - start)

    def _dummy_forward(self, lens: list[int], num_logits: int, table_blocks: int | None = None) -> None:
        """A forward of sequences of ``lens`` new tokens that writes nothing to the KV cache;
        ``table_blocks``: the block table's width (default: the blocks the longest one needs)."""
        total = sum(lens)
        positions = torch.cat([torch.arange(n) for n in lens]).to(self.device)
        qsl = torch.zeros(len(lens) + 1, dtype=torch.int32)
        qsl[1:] = torch.tensor(lens).cumsum(0)
        metadata = AttentionMetadata(
            slot_mapping=torch.full((total,), -1, dtype=torch.int64, device=self.device),
            query_start_loc=qsl.to(self.device), seq_lens=torch.tensor(lens, dtype=torch.int32, device=self.device),
            # every block of every sequence is block 0: reads stay inside the cache (nothing is written)
            block_tables=torch.zeros(len(lens), table_blocks or -(-max(lens) // self.block_size),
                                     dtype=torch.int32, device=self.device),
            max_query_len=max(lens), max_seq_len=max(lens), query_lens_cpu=lens, seq_lens_cpu=lens)
        input_ids = torch.zeros(total, dtype=torch.long, device=self.device)
        with forward_context(metadata):
            hidden = self.model(input_ids, positions)
        self.model.compute_logits(hidden[:num_logits]).float().softmax(-1)
        if self.greedy_path:
            self.model.greedy_tokens(hidden[:num_logits])
