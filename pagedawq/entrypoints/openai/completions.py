"""``POST /v1/completions``: one engine request per prompt; choice ``i * n + j`` is sample ``j`` of
prompt ``i`` (OpenAI's numbering)."""
from __future__ import annotations

from typing import AsyncIterator

from pagedawq.entrypoints.openai.protocol import APIError, CompletionRequest
from pagedawq.entrypoints.openai.serving import (ChoiceTracker, OpenAIServing, Prompt, engine_error,
                                                 finish_reason, merge_streams, usage)
from pagedawq.entrypoints.openai.sse import DONE, sse_event
from pagedawq.errors import PagedAWQError
from pagedawq.outputs import CompletionOutput, RequestOutput


def completion_logprobs(comp: CompletionOutput, start: int, end: int, text_offset: int) -> dict | None:
    """OpenAI's legacy logprobs object for tokens ``[start, end)``; offsets start at ``text_offset``."""
    if comp.logprobs is None:
        return None
    tokens, token_logprobs, top, offsets = [], [], [], []
    for token_id, entry in zip(comp.token_ids[start:end], comp.logprobs[start:end]):
        sampled = entry[token_id]
        token = sampled.decoded_token or ""
        tokens.append(token)
        token_logprobs.append(sampled.logprob)
        top.append({(lp.decoded_token or ""): lp.logprob for lp in entry.values()})
        offsets.append(text_offset)
        text_offset += len(token)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}


class CompletionServing(OpenAIServing):
    id_prefix = "cmpl"

    def prepare(self, request: CompletionRequest):
        """Validate everything and queue the prompts; returns what the answer needs."""
        model = self.check_model(request.model)
        raw_prompts = request.prompts()
        prompts: list[Prompt] = []
        for i, raw in enumerate(raw_prompts):
            param = "prompt" if len(raw_prompts) == 1 else f"prompt.{i}"
            prompt = self.process_prompt(raw, param)
            self.check_context(prompt, request.max_tokens, "prompt")
            prompts.append(prompt)
        params = self.make_params(request, request.max_tokens, request.logprobs)
        request_id = self.new_id()
        return model, request_id, params, self.admit(request_id, prompts, params)

    def response(self, request: CompletionRequest, model: str, request_id: str, outputs: list[RequestOutput]) -> dict:
        choices = []
        for i, out in enumerate(outputs):
            for comp in out.outputs:
                choices.append({"index": i * request.n + comp.index, "text": comp.text,
                                "logprobs": completion_logprobs(comp, 0, len(comp.token_ids), 0),
                                "finish_reason": finish_reason(comp), "stop_reason": comp.stop_reason})
        return {"id": request_id, "object": "text_completion", "created": self.created(), "model": model,
                "choices": choices, "usage": usage(outputs)}

    async def stream(self, request: CompletionRequest, model: str, request_id: str, params, streams
                     ) -> AsyncIterator[bytes]:
        """SSE chunks; the caller's response closes this generator on disconnect (aborting streams)."""
        created = self.created()
        trackers = [[ChoiceTracker(params) for _ in range(request.n)] for _ in streams]
        offsets = [[0] * request.n for _ in streams]
        latest: dict[int, RequestOutput] = {}
        base = {"id": request_id, "object": "text_completion", "created": created, "model": model}
        if request.include_usage:
            base["usage"] = None
        try:
            async for i, out in merge_streams(streams):
                latest[i] = out
                choices = []
                for comp in out.outputs:
                    delta = trackers[i][comp.index].advance(comp)
                    if delta is None:
                        continue
                    text, start, end = delta
                    lp = completion_logprobs(comp, start, end, offsets[i][comp.index])
                    offsets[i][comp.index] += sum(len(t) for t in lp["tokens"]) if lp else 0
                    choices.append({"index": i * request.n + comp.index, "text": text, "logprobs": lp,
                                    "finish_reason": finish_reason(comp),
                                    "stop_reason": comp.stop_reason if comp.finish_reason else None})
                if choices:
                    yield sse_event({**base, "choices": choices})
            if request.include_usage:
                yield sse_event({**base, "choices": [], "usage": usage([latest[i] for i in sorted(latest)])})
        except (PagedAWQError, APIError) as e:
            err = e if isinstance(e, APIError) else engine_error(e)
            yield sse_event(err.body())
        yield DONE
