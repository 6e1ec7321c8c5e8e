"""Per user request: its n sequences' detokenizers, logprobs, and the RequestOutput built from them."""
from __future__ import annotations

from dataclasses import dataclass, field

from pagedawq.engine.detokenizer import IncrementalDetokenizer
from pagedawq.engine.request import Request
from pagedawq.engine.sampler import TokenLogprobs
from pagedawq.outputs import CompletionOutput, Logprob, RequestOutput


@dataclass
class SequenceState:
    request: Request
    detokenizer: IncrementalDetokenizer | None
    logprobs: list[dict[int, Logprob]] | None
    cumulative_logprob: float | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class ParentRequest:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    seqs: list[SequenceState] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.seqs)

    def to_output(self) -> RequestOutput:
        outs = []
        for i, s in enumerate(self.seqs):
            text = s.detokenizer.text if s.detokenizer else ""
            outs.append(CompletionOutput(index=i, text=text, token_ids=list(s.request.output_token_ids),
                                         cumulative_logprob=s.cumulative_logprob,
                                         logprobs=list(s.logprobs) if s.logprobs is not None else None,
                                         finish_reason=s.finish_reason, stop_reason=s.stop_reason))
        cached = max(0, min(s.request.num_cached_tokens for s in self.seqs))
        return RequestOutput(self.request_id, self.prompt, self.prompt_token_ids, outs, self.finished,
                             num_cached_tokens=cached)


def make_logprob_entry(tokenizer, token_id: int, lp: TokenLogprobs) -> dict[int, Logprob]:
    """vLLM's per-token logprobs dict: the sampled token plus the top-N, with ranks."""
    def decoded(t: int) -> str | None:
        return tokenizer.decode([t]) if tokenizer is not None else None

    entry = {token_id: Logprob(lp.sampled_logprob, lp.sampled_rank, decoded(token_id))}
    for rank, (t, value) in enumerate(zip(lp.top_token_ids, lp.top_logprobs), start=1):
        if t not in entry:
            entry[t] = Logprob(value, rank, decoded(t))
    return entry
