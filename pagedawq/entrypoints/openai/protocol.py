"""Request schemas of the OpenAI API (plus vLLM's sampling extensions) and the error body.

Bodies are validated with ``model_validate_json`` in strict mode: a string where a number belongs
is an error, not a silent conversion, and unknown fields are rejected the way OpenAI rejects them,
so a client never believes an option took effect when it was ignored. Range checks that
``SamplingParams`` would also make are repeated here so the error can name the offending field.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pagedawq.sampling_params import SamplingParams

MAX_N = 16          # sequences per prompt
MAX_LOGPROBS = 20   # top-N alternatives per token
MAX_STOP = 16       # stop strings per request
MAX_PROMPTS = 64    # prompts in one completions request


class APIError(Exception):
    """An error the client caused or must know about, rendered as OpenAI's error JSON."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _is_union_tag(part: int | str) -> bool:
    """pydantic puts the tried type (``str``, ``list[constrained-int]``, ``TextPart``) into the
    location of errors inside a union; field names are lowercase identifiers."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none") or not part.isidentifier()
                                      or part[:1].isupper())


def _split_loc(loc: tuple) -> tuple[str | None, str | None]:
    """``(field path before any union tag, the tag)``, e.g. ``("messages.0.content", "str")``."""
    for i, part in enumerate(loc):
        if _is_union_tag(part):
            return ".".join(map(str, loc[:i])) or None, str(part)
    return ".".join(map(str, loc)) or None, None


def validation_error(e: ValidationError) -> APIError:
    """The first pydantic error as a 400 naming its field (``messages.0.content``); for a value that
    matches no member of a union, what each member said."""
    errors = e.errors(include_url=False)
    first = errors[0]
    param, tag = _split_loc(first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = f"Unrecognized request argument supplied: {param}"
    elif tag is not None:
        tried = {}
        for err in errors:
            p, t = _split_loc(err["loc"])
            if p == param and t is not None:
                tried.setdefault(t, err["msg"])
        msg = f"{param}: matches none of the allowed types (" + "; ".join(f"as {t}: {m}" for t, m in tried.items()) + ")"
        return APIError(400, msg, param=param, code="invalid_type")
    elif param:
        msg = f"{param}: {msg}"
    return APIError(400, msg, param=param, code=first["type"])


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


NonNegInt = Annotated[int, Field(ge=0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class SamplingRequest(_Strict):
    """Fields shared by completions and chat completions."""
    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # vLLM's extensions (used by its benchmarks, e.g. ignore_eos for fixed output lengths).
    top_k: int = Field(-1, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    min_tokens: NonNegInt = 0
    ignore_eos: bool = False
    stop_token_ids: list[NonNegInt] | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    @model_validator(mode="after")
    def _stream_options_need_stream(self):
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if self.top_k == 0:
            raise ValueError("top_k must be -1 (disabled) or >= 1")
        return self

    def sampling_params(self, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
        return SamplingParams(
            n=self.n, temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p, top_k=self.top_k, min_p=self.min_p, seed=self.seed,
            max_tokens=max_tokens, min_tokens=self.min_tokens, stop=self.stop, stop_token_ids=self.stop_token_ids,
            ignore_eos=self.ignore_eos, logprobs=logprobs, presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty, repetition_penalty=self.repetition_penalty,
            skip_special_tokens=self.skip_special_tokens,
            include_stop_str_in_output=self.include_stop_str_in_output)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


TokenIds = Annotated[list[NonNegInt], Field(min_length=1)]


class CompletionRequest(SamplingRequest):
    """``POST /v1/completions``. ``prompt``: a string, token ids, or a list of either."""
    prompt: str | TokenIds | Annotated[list[Union[str, TokenIds]], Field(min_length=1, max_length=MAX_PROMPTS)]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: Literal[False] = False
    best_of: int | None = None
    suffix: None = None

    @model_validator(mode="after")
    def _best_of_is_n(self):
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of other than n is not supported")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompt field as a list of prompts."""
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]
        return list(self.prompt)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingRequest):
    """``POST /v1/chat/completions``. The chat template of the model's tokenizer renders ``messages``."""
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    add_generation_prompt: bool = True   # vLLM extension

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def num_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None
