"""What completions and chat completions share: model-name check, validation of prompts against the
context, admission into the engine, merged per-prompt streams and per-choice streaming deltas.

Everything that can reject a request runs before the first request reaches the engine queue, so a
bad request never touches the scheduler.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator

from pagedawq.entrypoints.async_engine import AsyncLLMEngine, EngineStoppedError, QueueFullError, RequestStream
from pagedawq.entrypoints.openai.protocol import APIError, SamplingRequest
from pagedawq.errors import EngineDeadError, InvalidPromptError, InvalidSamplingParamsError, PromptTooLongError
from pagedawq.outputs import CompletionOutput, RequestOutput
from pagedawq.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class Prompt:
    text: str | None
    token_ids: list[int]


def engine_error(e: Exception) -> APIError:
    """Map an engine-side refusal to its HTTP answer."""
    if isinstance(e, QueueFullError):
        return APIError(503, str(e), "service_unavailable_error", code="queue_full")
    if isinstance(e, EngineDeadError):
        return APIError(503, str(e), "service_unavailable_error", code="engine_dead")
    if isinstance(e, EngineStoppedError):
        return APIError(503, str(e), "service_unavailable_error", code="shutting_down")
    logger.error("request failed: %s", e, exc_info=e)
    return APIError(500, f"internal error: {type(e).__name__}: {e}", "internal_server_error")


class OpenAIServing:
    """Base of the completions and chat handlers."""

    id_prefix = "cmpl"

    def __init__(self, engine: AsyncLLMEngine, served_model_names: list[str]) -> None:
        self.engine = engine
        self.served_model_names = served_model_names

    def check_model(self, name: str | None) -> str:
        """The model name to answer with; 404 for a name this server does not serve."""
        if name is None:
            return self.served_model_names[0]
        if name not in self.served_model_names:
            raise APIError(404, f"The model `{name}` does not exist. This server serves "
                                f"{', '.join(self.served_model_names)}.", param="model", code="model_not_found")
        return name

    def process_prompt(self, prompt, param: str) -> Prompt:
        try:
            text, ids = self.engine.process_prompt(prompt)
        except PromptTooLongError as e:
            raise APIError(400, str(e), param=param, code="context_length_exceeded") from e
        except InvalidPromptError as e:
            raise APIError(400, str(e), param=param) from e
        return Prompt(text, ids)

    def check_context(self, prompt: Prompt, max_tokens: int | None, param: str) -> None:
        limit = self.engine.max_model_len
        if max_tokens is not None and len(prompt.token_ids) + max_tokens > limit:
            raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                                f"{len(prompt.token_ids) + max_tokens} tokens ({len(prompt.token_ids)} in the {param}, "
                                f"{max_tokens} in the completion). Please reduce the length of the {param} or "
                                "completion.", param=param, code="context_length_exceeded")

    def make_params(self, request: SamplingRequest, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
        try:
            return self.engine.prepare_params(request.sampling_params(max_tokens, logprobs))
        except InvalidSamplingParamsError as e:
            raise APIError(400, str(e)) from e

    def admit(self, request_id: str, prompts: list[Prompt], params: SamplingParams) -> list[RequestStream]:
        """Queue every prompt or none: a refusal part-way aborts the ones already queued."""
        streams: list[RequestStream] = []
        try:
            for i, p in enumerate(prompts):
                rid = request_id if len(prompts) == 1 else f"{request_id}-{i}"
                streams.append(self.engine.add_request(rid, p.text, p.token_ids, params))
        except Exception as e:
            abort_all(streams)
            raise engine_error(e) from e
        return streams

    def new_id(self) -> str:
        return f"{self.id_prefix}-{uuid.uuid4().hex}"

    @staticmethod
    def created() -> int:
        return int(time.time())


def abort_all(streams: list[RequestStream]) -> None:
    """Abort every unfinished stream (the cleanup of every way a request can end early)."""
    for stream in streams:
        stream.abort()


async def final_outputs(streams: list[RequestStream]) -> list[RequestOutput]:
    """Wait for every stream's finished output; aborts all of them if cancelled or one fails."""
    async def last(stream: RequestStream) -> RequestOutput:
        out = None
        async for out in stream:
            pass
        if out is None or not out.finished:
            raise EngineStoppedError(f"request {stream.request_id} ended without a finished output")
        return out

    try:
        return await asyncio.gather(*(last(s) for s in streams))
    finally:
        abort_all(streams)


async def merge_streams(streams: list[RequestStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Outputs of several streams as ``(stream index, output)``, in arrival order."""
    if len(streams) == 1:
        async for out in streams[0]:
            yield 0, out
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: RequestStream) -> None:
        try:
            async for out in stream:
                queue.put_nowait((i, out, None))
            queue.put_nowait((i, None, None))
        except Exception as e:
            queue.put_nowait((i, None, e))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            i, out, error = await queue.get()
            if error is not None:
                raise error
            if out is None:
                remaining -= 1
            else:
                yield i, out
    finally:
        for t in tasks:
            t.cancel()
        abort_all(streams)


class ChoiceTracker:
    """What of one sequence has been streamed. Text that could still become part of a stop string is
    held back (the engine cuts a matched stop string out of the text, possibly from earlier
    steps), so the streamed text always equals the non-streamed text."""

    def __init__(self, params: SamplingParams) -> None:
        longest = max((len(s) for s in params.stop), default=0)
        self.holdback = 0 if params.include_stop_str_in_output else max(0, longest - 1)
        self.sent_chars = 0
        self.sent_tokens = 0
        self.finished = False

    def advance(self, comp: CompletionOutput) -> tuple[str, int, int] | None:
        """``(new text, first new token, end token)`` to send now, or None if nothing is new."""
        if self.finished:
            return None
        done = comp.finish_reason is not None
        end_char = len(comp.text) if done else max(self.sent_chars, len(comp.text) - self.holdback)
        text = comp.text[self.sent_chars:end_char]
        start_tok, end_tok = self.sent_tokens, len(comp.token_ids)
        if not text and start_tok == end_tok and not done:
            return None
        self.sent_chars, self.sent_tokens, self.finished = end_char, end_tok, done
        return text, start_tok, end_tok


def usage(outputs: list[RequestOutput]) -> dict[str, int]:
    prompt = sum(len(o.prompt_token_ids) for o in outputs)
    completion = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(comp: CompletionOutput) -> str | None:
    """OpenAI knows "stop" and "length"; an engine-side abort surfaces as an error instead."""
    return comp.finish_reason if comp.finish_reason in ("stop", "length") else None
