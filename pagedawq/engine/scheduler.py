"""Continuous batching: which requests compute how many tokens in the next forward.

Every step fills a token budget: first the running requests (a decode token each, or the next
chunk of a long prefill), then waiting requests in arrival order (prefix-cache hits skipped,
long prompts chunked). When the KV pool runs dry, the most recently started running request is
preempted: its blocks are freed and it is recomputed later from its tokens, which gives the same
greedy output.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from pagedawq.config import CacheConfig, SchedulerConfig
from pagedawq.engine.kv_cache import KVCacheManager
from pagedawq.engine.request import Request, RequestStatus
from pagedawq.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class NewRequestData:
    """What a worker needs once per request to sample it (kept until the request finishes)."""
    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams


# In ScheduledSeq.token_ids: the token the previous step is sampling for this request. The worker
# substitutes it on the device (asynchronous scheduling: the host does not know it yet).
PENDING_TOKEN = -1


@dataclass
class ScheduledSeq:
    request_id: str
    token_ids: list[int]     # the tokens whose K/V this step computes (PENDING_TOKEN: see above)
    start_pos: int           # position of token_ids[0] (= tokens already cached)
    block_ids: list[int]     # the request's whole block table
    sample: bool             # this chunk reaches the end of the known tokens: sample the next one


@dataclass
class SchedulerOutput:
    """One step's batch. Small and plain, since with tensor parallelism every rank receives it."""
    seqs: list[ScheduledSeq] = field(default_factory=list)
    new_requests: list[NewRequestData] = field(default_factory=list)
    finished_request_ids: list[str] = field(default_factory=list)
    num_preempted: int = 0

    @property
    def num_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.seqs)

    @property
    def is_empty(self) -> bool:
        return not self.seqs


class Scheduler:
    def __init__(self, scheduler_config: SchedulerConfig, cache_config: CacheConfig) -> None:
        self.config = scheduler_config
        self.kv = KVCacheManager(cache_config.num_blocks, cache_config.block_size, cache_config.enable_prefix_caching)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self._known_to_workers: set[str] = set()
        self._finished_since_last_step: list[str] = []
        self.num_preemptions = 0

    # ---- queue management -------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def finish_requests(self, request_ids, status: RequestStatus) -> None:
        """End requests from outside the step loop (abort, stop string); frees their blocks."""
        for rid in request_ids:
            request = self.requests.get(rid)
            if request is None or request.status.finished:
                continue
            if request.status == RequestStatus.RUNNING:
                self.running.remove(request)
            else:
                self.waiting.remove(request)
            request.status = status
            self._free(request)

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.running)

    def _free(self, request: Request) -> None:
        self.kv.free(request)
        del self.requests[request.request_id]
        if request.request_id in self._known_to_workers:
            self._known_to_workers.discard(request.request_id)
            self._finished_since_last_step.append(request.request_id)

    # ---- one step ---------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput(finished_request_ids=self._finished_since_last_step)
        self._finished_since_last_step = []
        budget = self.config.max_num_batched_tokens
        scheduled: list[Request] = []
        preempted = False

        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            num_new = min(request.num_tokens + request.num_pending - request.num_computed_tokens, budget)
            if num_new <= 0 or len(request.output_token_ids) + request.num_pending >= request.max_tokens:
                i += 1   # its pending token is its last (or nothing to compute): it is not scheduled
                continue
            while self.kv.allocate_slots(request, num_new) is None:
                victim = self.running.pop()
                self._preempt(victim)
                out.num_preempted += 1
                preempted = True
                if victim is request:
                    break
            else:
                scheduled.append(request)
                self._add_seq(out, request, num_new)
                budget -= num_new
                i += 1
                continue
            break

        while self.waiting and budget > 0 and not preempted and len(self.running) < self.config.max_num_seqs:
            request = self.waiting[0]
            if request.num_pending:
                break   # preempted with a token still being sampled: its ids are not complete yet
            hits, num_cached = self.kv.get_computed_blocks(request)
            num_new = min(request.num_tokens - num_cached, budget)
            if self.kv.allocate_slots(request, num_new, hits) is None:
                break
            self.waiting.popleft()
            if request.num_cached_tokens < 0:
                request.num_cached_tokens = num_cached
            request.num_computed_tokens = num_cached
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            self._add_seq(out, request, num_new)
            budget -= num_new
        return out

    def _add_seq(self, out: SchedulerOutput, request: Request, num_new: int) -> None:
        """Schedule ``num_new`` tokens of ``request``; they count as computed from now on (the step
        that computes them is launched before the next schedule)."""
        start = request.num_computed_tokens
        end = start + num_new
        if request.request_id not in self._known_to_workers:
            self._known_to_workers.add(request.request_id)
            out.new_requests.append(NewRequestData(request.request_id, request.prompt_token_ids,
                                                   request.sampling_params))
        known = request.num_tokens
        token_ids = request.token_slice(start, min(end, known)) + [PENDING_TOKEN] * (end - max(start, known))
        sample = end == known + request.num_pending
        out.seqs.append(ScheduledSeq(
            request_id=request.request_id,
            token_ids=token_ids,
            start_pos=start,
            block_ids=self.kv.block_ids(request.request_id),
            sample=sample))
        request.num_computed_tokens = end
        if sample:
            request.num_pending += 1

    def _preempt(self, request: Request) -> None:
        logger.debug("preempting %s (KV cache full); it will be recomputed", request.request_id)
        self.kv.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def update(self, out: SchedulerOutput, sampled: dict[str, int]) -> list[Request]:
        """Append the tokens a step sampled and retire requests that hit a stop condition. Returns
        the requests that got a new token. (A request preempted after the step was launched still
        gets its token: it was sampled from valid KV, and the recompute includes it.)"""
        advanced = []
        for seq in out.seqs:
            request = self.requests.get(seq.request_id)
            if request is None or not seq.sample:
                continue   # finished (or aborted) meanwhile, or a prefill chunk
            request.num_pending -= 1
            request.append_token(sampled[seq.request_id])
            advanced.append(request)
            if request.check_stop():
                if request in self.running:
                    self.running.remove(request)
                else:
                    self.waiting.remove(request)
                self._free(request)
        return advanced
