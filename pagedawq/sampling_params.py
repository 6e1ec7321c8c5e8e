"""How to sample one request's continuation (vLLM's ``SamplingParams``, same names and meanings)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pagedawq.errors import InvalidSamplingParamsError

_GREEDY_EPS = 1e-5


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    seed: int | None = None
    max_tokens: int | None = 16
    min_tokens: int = 0
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    # Filled in by the engine, not by users: the tokenizer's EOS and the generation config's extra
    # stop ids (e.g. Llama-3's <|eot_id|>).
    eos_token_id: int | None = field(default=None, repr=False)
    all_stop_token_ids: set[int] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        self._validate()
        if self.temperature < _GREEDY_EPS:
            # Greedy: the filters would not change the argmax; drop them so the sampler skips work.
            self.temperature, self.top_p, self.top_k, self.min_p = 0.0, 1.0, -1, 0.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def _validate(self) -> None:
        def fail(msg: str) -> None:
            raise InvalidSamplingParamsError(msg)

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if not is_int(self.n) or self.n < 1:
            fail(f"n must be an integer >= 1, got {self.n!r}")
        for name in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty",
                     "repetition_penalty"):
            value = getattr(self, name)
            if not is_num(value) or value != value:
                fail(f"{name} must be a number, got {value!r}")
        if self.temperature < 0:
            fail(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            fail(f"top_p must be in (0, 1], got {self.top_p}")
        if not is_int(self.top_k) or not (self.top_k == -1 or self.top_k >= 1):
            fail(f"top_k must be -1 (disabled) or an integer >= 1, got {self.top_k!r}")
        if not 0 <= self.min_p <= 1:
            fail(f"min_p must be in [0, 1], got {self.min_p}")
        if self.seed is not None and not is_int(self.seed):
            fail(f"seed must be an integer or None, got {self.seed!r}")
        if self.max_tokens is not None and (not is_int(self.max_tokens) or self.max_tokens < 1):
            fail(f"max_tokens must be an integer >= 1 (or None for 'up to max_model_len'), got {self.max_tokens!r}")
        if not is_int(self.min_tokens) or self.min_tokens < 0:
            fail(f"min_tokens must be an integer >= 0, got {self.min_tokens!r}")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            fail(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})")
        if self.logprobs is not None and (not is_int(self.logprobs) or self.logprobs < 0):
            fail(f"logprobs must be an integer >= 0 or None, got {self.logprobs!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                fail(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if self.repetition_penalty <= 0:
            fail(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not all(isinstance(s, str) and s for s in self.stop):
            fail(f"stop must be a non-empty string or a list of non-empty strings, got {self.stop!r}")
        if not all(is_int(t) and t >= 0 for t in self.stop_token_ids):
            fail(f"stop_token_ids must be non-negative integers, got {self.stop_token_ids!r}")

    def child(self, index: int) -> "SamplingParams":
        """Params of the ``index``-th of ``n`` samples: one sequence each, distinct seeds."""
        from dataclasses import replace
        seed = None if self.seed is None else self.seed + index
        return replace(self, n=1, seed=seed, all_stop_token_ids=set(self.all_stop_token_ids))
