"""The engine core: requests in, one scheduled forward per ``step()``, RequestOutputs out.

The offline ``LLM`` and the async server front both drive this class; nothing else schedules.
"""
from __future__ import annotations

import itertools
import json
import logging
import time
from typing import Any, Union

from pagedawq.config import EngineConfig, build_engine_config
from pagedawq.engine.detokenizer import IncrementalDetokenizer
from pagedawq.engine.executor.base import create_executor
from pagedawq.engine.model_runner import ModelRunnerOutput
from pagedawq.engine.output_processor import ParentRequest, SequenceState, make_logprob_entry
from pagedawq.engine.request import Request, RequestStatus
from pagedawq.engine.sampler import uses_token_history
from pagedawq.engine.scheduler import Scheduler, SchedulerOutput
from pagedawq.errors import (InsufficientKVCacheError, InvalidPromptError, InvalidSamplingParamsError,
                             ModelFilesError, PromptTooLongError)
from pagedawq.outputs import RequestOutput
from pagedawq.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

PromptType = Union[str, list[int], dict[str, Any]]


def load_tokenizer(path):
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:   # transformers raises many types (OSError, ValueError, ...)
        raise ModelFilesError(f"cannot load a tokenizer from {path}: {e}; pass tokenizer=PATH or "
                              "skip_tokenizer_init=True with token-id prompts") from e


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.tokenizer = load_tokenizer(config.model.tokenizer) if config.model.tokenizer else None
        self.eos_token_id, self.generation_stop_ids = self._stop_ids()
        start = time.perf_counter()
        self.executor = create_executor(config)
        try:
            num_blocks = self.executor.determine_num_blocks()
            self._check_kv_capacity(num_blocks)
            self.executor.initialize_cache(num_blocks)
        except BaseException:
            self.executor.shutdown()
            raise
        config.cache.num_blocks = num_blocks
        self.scheduler = Scheduler(config.scheduler, config.cache)
        self.parents: dict[str, ParentRequest] = {}
        self._child_to_parent: dict[str, tuple[ParentRequest, SequenceState]] = {}
        self._ids = itertools.count()
        self._in_flight: tuple[SchedulerOutput, Any] | None = None
        logger.info("engine ready in %.1f s: %s on %s (%s), %d KV blocks of %d tokens", time.perf_counter() - start,
                    config.model.architecture, config.device, config.model.dtype, num_blocks, config.cache.block_size)

    @property
    def async_scheduling(self) -> bool:
        """Whether steps are launched before the previous step's tokens reach the host (the
        config's decision, which every rank's runner reads too)."""
        return self.config.async_scheduling

    @classmethod
    def from_args(cls, model: str | None = None, **kwargs: Any) -> "LLMEngine":
        return cls(build_engine_config(model, **kwargs))

    # ---- setup helpers ----------------------------------------------------------------------
    def _stop_ids(self) -> tuple[int | None, set[int]]:
        hf = self.config.model.hf_config
        eos = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        declared = hf.get("eos_token_id")
        gen_path = self.config.model.path / "generation_config.json"
        if gen_path.is_file():
            try:
                declared = json.loads(gen_path.read_text()).get("eos_token_id", declared)
            except (OSError, json.JSONDecodeError):
                logger.warning("ignoring unreadable %s", gen_path)
        declared = [declared] if isinstance(declared, int) else list(declared or [])
        if eos is None and declared:
            eos = declared[0]
        return eos, {t for t in declared if t != eos}

    def _check_kv_capacity(self, num_blocks: int) -> None:
        block = self.config.cache.block_size
        needed = -(-self.config.scheduler.max_model_len // block)
        if num_blocks < needed:
            raise InsufficientKVCacheError(
                f"the KV cache holds {num_blocks} blocks ({num_blocks * block} tokens) but one sequence of "
                f"max_model_len={self.config.scheduler.max_model_len} needs {needed} blocks; lower max_model_len, "
                "or give the cache more memory (gpu_memory_utilization / kv_cache_memory_bytes)")

    # ---- requests ---------------------------------------------------------------------------
    def new_request_id(self) -> str:
        return str(next(self._ids))

    def process_prompt(self, prompt: PromptType) -> tuple[str | None, list[int]]:
        """Validate a prompt and return ``(text or None, token ids)``; raises before any work."""
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                text, ids = prompt.get("prompt"), prompt["prompt_token_ids"]
            elif "prompt" in prompt:
                return self.process_prompt(prompt["prompt"])
            else:
                raise InvalidPromptError(f"a prompt dict needs 'prompt' or 'prompt_token_ids', got keys {sorted(prompt)}")
        elif isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidPromptError("text prompts need a tokenizer (the engine was built with "
                                         "skip_tokenizer_init=True): pass {'prompt_token_ids': [...]}")
            text, ids = prompt, self.tokenizer(prompt).input_ids
        elif isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            text, ids = None, list(prompt)
        else:
            raise InvalidPromptError(f"a prompt is a str, a list of token ids or a dict, got {type(prompt).__name__}")
        if not isinstance(ids, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise InvalidPromptError("prompt_token_ids must be a list of integers")
        if not ids:
            raise InvalidPromptError("the prompt is empty: give at least one token")
        vocab = self.config.model.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise InvalidPromptError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        limit = self.config.scheduler.max_model_len
        if len(ids) >= limit:
            raise PromptTooLongError(f"the prompt has {len(ids)} tokens but max_model_len is {limit}, which must "
                                     "leave room for at least one generated token: shorten the prompt or raise "
                                     "max_model_len")
        return text, list(ids)

    def prepare_params(self, params: SamplingParams) -> SamplingParams:
        if not isinstance(params, SamplingParams):
            raise InvalidSamplingParamsError(f"expected SamplingParams, got {type(params).__name__}")
        if params.stop and self.tokenizer is None:
            raise InvalidSamplingParamsError("stop strings need a tokenizer (skip_tokenizer_init=True was set)")
        vocab = self.config.model.vocab_size
        if any(t >= vocab for t in params.stop_token_ids):
            raise InvalidSamplingParamsError(f"stop_token_ids must be < vocab size {vocab}")
        if params.logprobs is not None and params.logprobs > vocab:
            raise InvalidSamplingParamsError(f"logprobs={params.logprobs} exceeds the vocabulary size {vocab}")
        from dataclasses import replace
        return replace(params, eos_token_id=self.eos_token_id,
                       all_stop_token_ids=set(params.stop_token_ids) | self.generation_stop_ids)

    def add_request(self, request_id: str, prompt: PromptType, params: SamplingParams,
                    arrival_time: float | None = None) -> None:
        """Validate, then queue one request (``params.n`` sequences sharing its prompt blocks)."""
        text, ids = self.process_prompt(prompt)
        self.add_processed_request(request_id, text, ids, self.prepare_params(params), arrival_time)

    def add_processed_request(self, request_id: str, text: str | None, ids: list[int], params: SamplingParams,
                              arrival_time: float | None = None) -> None:
        if request_id in self.parents:
            raise ValueError(f"request id {request_id!r} is already in use")
        parent = ParentRequest(request_id, text, ids)
        for i in range(params.n):
            child_params = params.child(i)
            req = Request(f"{request_id}#{i}" if params.n > 1 else request_id, ids, child_params,
                          self.config.scheduler.max_model_len, arrival_time)
            detok = None
            if self.tokenizer is not None:
                detok = IncrementalDetokenizer(self.tokenizer, ids, params.skip_special_tokens, params.stop,
                                               params.include_stop_str_in_output)
            seq = SequenceState(req, detok, [] if params.logprobs is not None else None,
                                0.0 if params.logprobs is not None else None)
            parent.seqs.append(seq)
            self._child_to_parent[req.request_id] = (parent, seq)
            self.scheduler.add_request(req)
        self.parents[request_id] = parent

    def abort_request(self, request_ids: str | list[str]) -> None:
        for rid in [request_ids] if isinstance(request_ids, str) else request_ids:
            parent = self.parents.pop(rid, None)
            if parent is None:
                continue
            for seq in parent.seqs:
                self._child_to_parent.pop(seq.request.request_id, None)
                self.scheduler.finish_requests([seq.request.request_id], RequestStatus.FINISHED_ABORTED)

    def has_unfinished_requests(self) -> bool:
        return bool(self.parents)

    def get_num_unfinished_requests(self) -> int:
        return len(self.parents)

    # ---- the step ---------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule, run one forward, sample, and return outputs of requests that progressed.

        With asynchronous scheduling the forward is launched and the outputs returned are those of
        the previous step, whose tokens arrive while this one runs: the host's work (scheduling,
        inputs, detokenization) overlaps the device's instead of alternating with it."""
        sched = self.scheduler.schedule()
        has_work = not (sched.is_empty and not sched.finished_request_ids)
        if not self.async_scheduling:
            return self._process(sched, self.executor.execute_model(sched)) if has_work else []
        outputs: list[RequestOutput] = []
        if has_work and self._in_flight is not None and self._reads_token_history(sched):
            outputs = self._finish_in_flight()   # penalties / min_tokens need the previous token first
        launched = self.executor.launch_model(sched) if has_work else None
        outputs += self._finish_in_flight()
        if launched is not None:
            self._in_flight = (sched, launched)
        return outputs

    def _finish_in_flight(self) -> list[RequestOutput]:
        in_flight, self._in_flight = self._in_flight, None
        return self._process(in_flight[0], in_flight[1].result()) if in_flight is not None else []

    def _reads_token_history(self, sched: SchedulerOutput) -> bool:
        requests = self.scheduler.requests
        return any(seq.sample and seq.request_id in requests
                   and uses_token_history(requests[seq.request_id].sampling_params) for seq in sched.seqs)

    def _process(self, sched: SchedulerOutput, result: ModelRunnerOutput) -> list[RequestOutput]:
        """Hand a finished step's tokens to the scheduler and the requests' outputs."""
        sampled = dict(zip(result.request_ids, result.token_ids))
        lps = dict(zip(result.request_ids, result.logprobs))
        advanced = self.scheduler.update(sched, sampled)
        touched: dict[str, ParentRequest] = {}
        for req in advanced:
            parent, seq = self._child_to_parent[req.request_id]
            self._process_token(req, seq, lps.get(req.request_id))
            touched[parent.request_id] = parent
        outputs = []
        for parent in touched.values():
            outputs.append(parent.to_output())
            if parent.finished:
                del self.parents[parent.request_id]
                for seq in parent.seqs:
                    self._child_to_parent.pop(seq.request.request_id, None)
        return outputs

    def _process_token(self, req: Request, seq: SequenceState, lp) -> None:
        token = req.output_token_ids[-1]
        if lp is not None and seq.logprobs is not None:
            seq.logprobs.append(make_logprob_entry(self.tokenizer, token, lp))
            seq.cumulative_logprob += lp.sampled_logprob
        stop_str = None
        if seq.detokenizer is not None:
            check = len(req.output_token_ids) >= req.sampling_params.min_tokens
            stop_str = seq.detokenizer.add_token(token, check)
        if stop_str is not None:
            if not req.status.finished:
                self.scheduler.finish_requests([req.request_id], RequestStatus.FINISHED_STOPPED)
            req.status, req.stop_reason = RequestStatus.FINISHED_STOPPED, stop_str
        if req.status.finished:
            seq.finish_reason, seq.stop_reason = req.status.finish_reason, req.stop_reason

    def start_profile(self) -> None:
        """Start torch.profiler on every rank (vLLM's ``LLM.start_profile``)."""
        self.executor.collective_rpc("start_profile")

    def stop_profile(self, trace_dir: str | None = None) -> list[dict]:
        """Stop profiling; per rank: ``device_time_us`` (sum of kernel times), ``kernel_time_us``
        (by kernel name) and a ``table`` of the top ops. With ``trace_dir``, each rank also writes
        ``rank<N>.json`` (Chrome trace)."""
        return self.executor.collective_rpc("stop_profile", (trace_dir,))

    def time_decode_graph(self, batch: int, replays: int = 50, context_len: int | None = None) -> list[dict]:
        """Per rank: the GPU time of the captured decode graph of ``batch`` sequences (and the context
        bucket of ``context_len`` tokens, by default the last step's) replayed alone
        (``Worker.time_decode_graph``), to set against the wall time of a step."""
        return self.executor.collective_rpc("time_decode_graph", (batch, replays, context_len))

    def stats(self) -> dict[str, float]:
        kv = self.scheduler.kv
        return {"num_running": len(self.scheduler.running), "num_waiting": len(self.scheduler.waiting),
                "kv_cache_usage": kv.usage, "prefix_cache_queries": kv.num_queries,
                "prefix_cache_hits": kv.num_hits, "num_preemptions": self.scheduler.num_preemptions}

    def shutdown(self) -> None:
        executor, self.executor = getattr(self, "executor", None), None
        if executor is not None:
            executor.shutdown()
