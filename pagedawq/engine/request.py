"""One sequence being generated, and its scheduling state.

``num_computed_tokens`` is the single scheduling variable: tokens ``[0, num_computed_tokens)`` have
their keys/values in the cache, or are being computed by a step already handed to the workers.
Prefill, chunked prefill, decode and recompute after preemption are all "compute the next tokens
up to ``num_tokens + num_pending``", where ``num_pending`` counts tokens that a launched step is
sampling and whose ids the host does not know yet (asynchronous scheduling).
"""
from __future__ import annotations

import enum
import time

from pagedawq.sampling_params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"

    @property
    def finished(self) -> bool:
        return self in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH, RequestStatus.FINISHED_ABORTED)

    @property
    def finish_reason(self) -> str | None:
        return self.value if self.finished else None


class Request:
    def __init__(self, request_id: str, prompt_token_ids: list[int], sampling_params: SamplingParams,
                 max_model_len: int, arrival_time: float | None = None) -> None:
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.sampling_params = sampling_params
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.status = RequestStatus.WAITING
        self.num_computed_tokens = 0
        self.num_pending = 0             # sampled by a launched step, not yet appended
        self.num_cached_tokens = -1      # prompt tokens found in the prefix cache at first schedule
        self.stop_reason: int | str | None = None
        self.num_preemptions = 0
        limit = max_model_len - len(self.prompt_token_ids)
        self.max_tokens = min(sampling_params.max_tokens or limit, limit)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def token_slice(self, start: int, end: int) -> list[int]:
        p = len(self.prompt_token_ids)
        if end <= p:
            return self.prompt_token_ids[start:end]
        if start >= p:
            return self.output_token_ids[start - p:end - p]
        return self.prompt_token_ids[start:] + self.output_token_ids[:end - p]

    def append_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)

    def check_stop(self) -> bool:
        """Stop on a stop token (after ``min_tokens``) or at the length limit; sets the status."""
        params, n_out = self.sampling_params, len(self.output_token_ids)
        last = self.output_token_ids[-1]
        if n_out >= params.min_tokens:
            if not params.ignore_eos and last == params.eos_token_id:
                self.status = RequestStatus.FINISHED_STOPPED
                return True
            if last in params.all_stop_token_ids:
                self.status, self.stop_reason = RequestStatus.FINISHED_STOPPED, last
                return True
        if n_out >= self.max_tokens:
            self.status = RequestStatus.FINISHED_LENGTH
            return True
        return False
