"""``POST /v1/chat/completions``: the tokenizer's chat template turns the messages into one prompt
(as ``LLM.chat`` does), then it is a completion with chat-shaped answers."""
from __future__ import annotations

from typing import AsyncIterator

from pagedawq.entrypoints.openai.protocol import APIError, ChatCompletionRequest
from pagedawq.entrypoints.openai.serving import (ChoiceTracker, OpenAIServing, Prompt, engine_error,
                                                 finish_reason, merge_streams, usage)
from pagedawq.entrypoints.openai.sse import DONE, sse_event
from pagedawq.errors import PagedAWQError
from pagedawq.outputs import CompletionOutput, RequestOutput


def _token_info(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def chat_logprobs(comp: CompletionOutput, start: int, end: int, top_n: int) -> dict | None:
    """``{"content": [...]}`` for tokens ``[start, end)``, each with its ``top_n`` most likely tokens."""
    if comp.logprobs is None:
        return None
    content = []
    for token_id, entry in zip(comp.token_ids[start:end], comp.logprobs[start:end]):
        sampled = entry[token_id]
        top = sorted((lp for lp in entry.values() if lp.rank is not None and lp.rank <= top_n), key=lambda lp: lp.rank)
        content.append({**_token_info(sampled.decoded_token or "", sampled.logprob),
                        "top_logprobs": [_token_info(lp.decoded_token or "", lp.logprob) for lp in top]})
    return {"content": content}


class ChatServing(OpenAIServing):
    id_prefix = "chatcmpl"

    def render(self, request: ChatCompletionRequest) -> Prompt:
        tokenizer = self.engine.tokenizer
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise APIError(400, "this model has no chat template; use /v1/completions", param="messages")
        conversation = [{"role": m.role, "content": m.text()} for m in request.messages]
        try:
            ids = tokenizer.apply_chat_template(conversation, tokenize=True,
                                                add_generation_prompt=request.add_generation_prompt)
        except Exception as e:   # jinja raises its own types (TemplateError, ...) for unsupported chats
            raise APIError(400, f"the chat template cannot render these messages: {e}", param="messages") from e
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        ids = list(ids)
        return self.process_prompt({"prompt_token_ids": ids, "prompt": tokenizer.decode(ids, skip_special_tokens=False)},
                                   "messages")

    def prepare(self, request: ChatCompletionRequest):
        model = self.check_model(request.model)
        prompt = self.render(request)
        self.check_context(prompt, request.max_new_tokens, "messages")
        params = self.make_params(request, request.max_new_tokens, request.num_logprobs)
        request_id = self.new_id()
        return model, request_id, params, self.admit(request_id, [prompt], params)

    def response(self, request: ChatCompletionRequest, model: str, request_id: str, outputs: list[RequestOutput]
                 ) -> dict:
        (out,) = outputs
        choices = [{"index": comp.index, "message": {"role": "assistant", "content": comp.text},
                    "logprobs": chat_logprobs(comp, 0, len(comp.token_ids), request.top_logprobs or 0),
                    "finish_reason": finish_reason(comp), "stop_reason": comp.stop_reason}
                   for comp in out.outputs]
        return {"id": request_id, "object": "chat.completion", "created": self.created(), "model": model,
                "choices": choices, "usage": usage([out])}

    async def stream(self, request: ChatCompletionRequest, model: str, request_id: str, params, streams
                     ) -> AsyncIterator[bytes]:
        """SSE chunks: a role chunk per choice, content deltas, a finish_reason, [usage], [DONE]."""
        base = {"id": request_id, "object": "chat.completion.chunk", "created": self.created(), "model": model}
        if request.include_usage:
            base["usage"] = None
        trackers = [ChoiceTracker(params) for _ in range(request.n)]
        top_n = request.top_logprobs or 0
        latest = None
        try:
            yield sse_event({**base, "choices": [{"index": j, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}
                                                 for j in range(request.n)]})
            async for _, out in merge_streams(streams):
                latest = out
                choices = []
                for comp in out.outputs:
                    delta = trackers[comp.index].advance(comp)
                    if delta is None:
                        continue
                    text, start, end = delta
                    choices.append({"index": comp.index, "delta": {"content": text} if text else {},
                                    "logprobs": chat_logprobs(comp, start, end, top_n),
                                    "finish_reason": finish_reason(comp),
                                    "stop_reason": comp.stop_reason if comp.finish_reason else None})
                if choices:
                    yield sse_event({**base, "choices": choices})
            if request.include_usage and latest is not None:
                yield sse_event({**base, "choices": [], "usage": usage([latest])})
        except (PagedAWQError, APIError) as e:
            err = e if isinstance(e, APIError) else engine_error(e)
            yield sse_event(err.body())
        yield DONE
