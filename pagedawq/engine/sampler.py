"""Batched token sampling: penalties, temperature, top-k / top-p / min-p, seeded generators, logprobs.

Sampling uses the exponential race (argmax of ``p / E`` with ``E ~ Exp(1)``, equivalent to drawing
from ``p``): a request with a seed draws its ``E`` from its own generator, so its samples do not
depend on which other requests share the batch. Logprobs are those of the raw model distribution
(before penalties and temperature), as in vLLM.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from pagedawq.sampling_params import SamplingParams


@dataclass
class RequestSamplingState:
    """What the sampler remembers about one request between steps."""
    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None

    @classmethod
    def create(cls, params: SamplingParams, prompt_token_ids: list[int], device: torch.device) -> "RequestSamplingState":
        gen = None
        if params.seed is not None:
            gen = torch.Generator(device=device)
            gen.manual_seed(params.seed)
        return cls(params, list(prompt_token_ids), [], gen)


@dataclass
class TokenLogprobs:
    """Logprob of the sampled token and its rank, plus the top-N alternatives."""
    sampled_logprob: float
    sampled_rank: int
    top_token_ids: list[int]
    top_logprobs: list[float]


@dataclass
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[TokenLogprobs | None]


def uses_token_history(params: SamplingParams) -> bool:
    """Whether sampling this request reads its earlier output tokens on the host (penalties, the
    ``min_tokens`` ban): such a step must not be launched before the previous step's tokens are in."""
    return bool(params.repetition_penalty != 1.0 or params.presence_penalty or params.frequency_penalty
                or params.min_tokens)


def argmax_of_raw_logits(params: SamplingParams) -> bool:
    """Whether a request's next token is the argmax of its raw logits (greedy, no penalty, no
    ``min_tokens`` ban, no logprobs): with tensor parallelism such rows need no gathered logits
    (``ModelRunner``, ``greedy_tokens``)."""
    return params.greedy and params.logprobs is None and not uses_token_history(params)


def _apply_penalties(logits: torch.Tensor, states: list[RequestSamplingState]) -> torch.Tensor:
    rows = [i for i, s in enumerate(states)
            if s.params.repetition_penalty != 1.0 or s.params.presence_penalty or s.params.frequency_penalty]
    if not rows:
        return logits
    logits = logits.clone()   # the caller's logits (and raw log-probabilities) stay unpenalized
    vocab, device = logits.shape[1], logits.device
    for i in rows:
        p = states[i].params
        out_ids = torch.tensor(states[i].output_token_ids, dtype=torch.long, device=device)
        counts = torch.zeros(vocab, device=device).index_add_(0, out_ids, torch.ones_like(out_ids, dtype=torch.float))
        row = logits[i]
        if p.repetition_penalty != 1.0:
            seen = counts > 0
            prompt_ids = torch.tensor(states[i].prompt_token_ids, dtype=torch.long, device=device)
            seen[prompt_ids[prompt_ids < vocab]] = True
            penalized = torch.where(row > 0, row / p.repetition_penalty, row * p.repetition_penalty)
            row = torch.where(seen, penalized, row)
        row = row - p.frequency_penalty * counts - p.presence_penalty * (counts > 0).float()
        logits[i] = row
    return logits


def _mask_stop_tokens_before_min(logits: torch.Tensor, states: list[RequestSamplingState]) -> None:
    for i, s in enumerate(states):
        p = s.params
        if len(s.output_token_ids) < p.min_tokens:
            banned = set(p.all_stop_token_ids)
            if p.eos_token_id is not None and not p.ignore_eos:
                banned.add(p.eos_token_id)
            banned = [t for t in banned if t < logits.shape[1]]
            if banned:
                logits[i, banned] = float("-inf")


def _filter(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Set logits outside each row's top-k / top-p nucleus / min-p floor to -inf."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(logits.shape[1], device=logits.device).expand_as(sorted_logits)
    drop = ranks >= top_k.unsqueeze(1)
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs           # mass of strictly more likely tokens
    drop |= before > top_p.unsqueeze(1)
    drop |= probs < min_p.unsqueeze(1) * probs[:, :1]
    drop[:, 0] = False                               # always keep the most likely token
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, sorted_logits)


@functools.lru_cache(maxsize=None)
def _copy_stream(device: torch.device) -> torch.cuda.Stream:
    """The stream that copies samples to the host, one a device."""
    return torch.cuda.Stream(device)


def _to_host(t: torch.Tensor) -> torch.Tensor:
    """A pinned host copy of CUDA tensor ``t``, enqueued now on the current stream."""
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host


class DeviceSample:
    """A step's sampled tokens (and logprobs) on their way to the host.

    The copies to host memory are enqueued when the sample is taken, so waiting for them later
    (``to_host``) waits only for this step, not for work launched after it: the engine can launch
    the next step before it reads this one's tokens. On a GPU they run on a side stream: on the
    step's own stream the next step's input upload would wait behind them (~3 µs of a decode step's
    device chain, session 21 traces)."""

    def __init__(self, states: list[RequestSamplingState], tokens: torch.Tensor, lp) -> None:
        self.states = states
        self.tokens = tokens                      # device: the next step's inputs read it there
        on_device = [tokens]
        if lp is not None:
            rows, *tensors = lp
            self._rows = rows
            on_device += tensors
        self._event = None
        if tokens.device.type != "cuda":
            self._host = on_device
            return
        stream = _copy_stream(tokens.device)
        stream.wait_stream(torch.cuda.current_stream(tokens.device))
        with torch.cuda.stream(stream):
            self._host = [_to_host(t) for t in on_device]
            self._event = torch.cuda.Event()
            self._event.record(stream)
        for t in on_device:   # not handed out again before the copies have read them
            t.record_stream(stream)

    def to_host(self) -> SamplerOutput:
        """Wait for this step's tokens; append them to the requests' sampling states."""
        if self._event is not None:
            self._event.synchronize()
        token_list = self._host[0].tolist()
        logprobs: list[TokenLogprobs | None] = [None] * len(self.states)
        if len(self._host) > 1:
            sampled, ranks, top_vals, top_ids = (t.tolist() for t in self._host[1:])
            for j, i in enumerate(self._rows):
                n = self.states[i].params.logprobs
                logprobs[i] = TokenLogprobs(sampled[j], ranks[j], top_ids[j][:n], top_vals[j][:n])
        for state, token in zip(self.states, token_list):
            state.output_token_ids.append(token)
        return SamplerOutput(token_list, logprobs)


class Sampler:
    def __call__(self, logits: torch.Tensor, states: list[RequestSamplingState]) -> SamplerOutput:
        return self.sample(logits, states).to_host()

    def sample(self, logits: torch.Tensor, states: list[RequestSamplingState]) -> DeviceSample:
        """Sample on the device; the host learns the tokens from the result's ``to_host()``."""
        logits = logits.float()
        want_logprobs = [s.params.logprobs is not None for s in states]
        raw_logprobs = logits.log_softmax(dim=-1) if any(want_logprobs) else None
        logits = _apply_penalties(logits, states)
        _mask_stop_tokens_before_min(logits, states)

        tokens = logits.argmax(dim=-1)
        random_rows = [i for i, s in enumerate(states) if not s.params.greedy]
        if random_rows:
            idx = torch.tensor(random_rows, device=logits.device)
            params = [states[i].params for i in random_rows]
            dev = logits.device
            temp = torch.tensor([p.temperature for p in params], device=dev)
            scaled = logits[idx] / temp.unsqueeze(1)
            vocab = logits.shape[1]
            top_k = torch.tensor([p.top_k if p.top_k > 0 else vocab for p in params], device=dev)
            top_p = torch.tensor([p.top_p for p in params], device=dev)
            min_p = torch.tensor([p.min_p for p in params], device=dev)
            if any(p.top_k > 0 or p.top_p < 1 or p.min_p > 0 for p in params):
                scaled = _filter(scaled, top_k, top_p, min_p)
            probs = scaled.softmax(dim=-1)
            noise = torch.empty_like(probs).exponential_()
            for j, i in enumerate(random_rows):
                gen = states[i].generator
                if gen is not None:
                    noise[j].exponential_(generator=gen)
            tokens[idx] = (probs / noise).argmax(dim=-1)

        lp = None
        if raw_logprobs is not None:
            rows = [i for i, w in enumerate(want_logprobs) if w]
            idx = torch.tensor(rows, device=logits.device)
            sel = raw_logprobs[idx]
            sampled = sel.gather(1, tokens[idx].unsqueeze(1)).squeeze(1)
            ranks = (sel > sampled[:, None]).sum(dim=1) + 1
            k = max(states[i].params.logprobs for i in rows)
            top_vals, top_ids = sel.topk(k, dim=-1) if k > 0 else (sel[:, :0], sel[:, :0].long())
            lp = (rows, sampled, ranks, top_vals, top_ids)
        return DeviceSample(states, tokens, lp)
