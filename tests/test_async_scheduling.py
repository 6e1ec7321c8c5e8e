"""Asynchronous scheduling (step n+1 launched before step n's tokens reach the host) changes no
output: greedy and seeded sampling, logprobs, chunked prefill, preemption, prefix caching, n > 1,
stop tokens and strings, penalties and min_tokens (which make the engine wait), and aborts that leave
no KV block behind. On CPU the "launch" runs at once, but the scheduling, the pending-token
placeholders and their substitution from the previous step's device tensor are the GPU's."""
from __future__ import annotations

import random

import pytest

from pagedawq import SamplingParams
from tests.test_engine_scheduling import make_llm, prompts, tokens

GREEDY = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)


def both(path, ps, params, **kw):
    """Outputs with async scheduling off and on (asserting the engine really ran it)."""
    outs = []
    for mode in (False, True):
        with make_llm(path, async_scheduling=mode, **kw) as llm:
            assert llm.llm_engine.async_scheduling is mode
            outs.append(llm.generate(ps, params, use_tqdm=False))
    return outs


def test_default_is_off_on_cpu(tiny_llama_dir):
    with make_llm(tiny_llama_dir) as llm:
        assert llm.llm_engine.async_scheduling is False


@pytest.mark.parametrize("tp", [1, 4])
def test_default_is_decided_once_in_the_config(tiny_llama_dir, monkeypatch, tp):
    """On for CUDA at every TP size. The engine and every rank's runner read this one field (a
    runner deciding for itself once left the non-zero ranks without the shared tokens at TP=4)."""
    import torch

    from pagedawq.config import build_engine_config
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert build_engine_config(str(tiny_llama_dir), device="cuda", tensor_parallel_size=tp,
                               skip_tokenizer_init=True).async_scheduling is True
    assert build_engine_config(str(tiny_llama_dir), device="cuda", tensor_parallel_size=tp, skip_tokenizer_init=True,
                               async_scheduling=False).async_scheduling is False


def test_greedy_batch_identical(tiny_llama_dir):
    ps = prompts(12, shared_prefix=40)
    sync, asyn = both(tiny_llama_dir, ps, GREEDY)
    assert tokens(asyn) == tokens(sync)
    assert all(len(t) == 20 for t in tokens(asyn))


@pytest.mark.parametrize("kw", [dict(max_num_batched_tokens=7), dict(kv_cache_memory_bytes=20 * 2 * 2 * 16 * 2 * 16 * 4),
                                dict(enable_prefix_caching=False)],
                         ids=["chunked-prefill", "preemption", "no-prefix-cache"])
def test_scheduling_variants_identical(tiny_llama_dir, kw):
    ps = prompts(12, seed=3, shared_prefix=40)
    sync, asyn = both(tiny_llama_dir, ps, GREEDY, **kw)
    assert tokens(asyn) == tokens(sync)


def test_seeded_sampling_logprobs_and_n_identical(tiny_llama_dir):
    ps = prompts(6, seed=5)
    params = [SamplingParams(temperature=0.8, top_p=0.9, seed=i, max_tokens=15, ignore_eos=True, logprobs=3, n=2)
              for i in range(len(ps))]
    sync, asyn = both(tiny_llama_dir, ps, params)
    for a, b in zip(sync, asyn):
        assert [o.token_ids for o in a.outputs] == [o.token_ids for o in b.outputs]
        for oa, ob in zip(a.outputs, b.outputs):
            assert oa.cumulative_logprob == pytest.approx(ob.cumulative_logprob, abs=1e-5)


def test_stops_max_tokens_penalties_and_min_tokens_identical(tiny_llama_dir):
    ps = prompts(10, seed=7)
    ref = tokens(both(tiny_llama_dir, ps[:1], GREEDY)[0])[0]
    params = []
    for i in range(len(ps)):
        kind = i % 5
        if kind == 0:
            params.append(SamplingParams(temperature=0, max_tokens=1 + i, ignore_eos=True))
        elif kind == 1:
            params.append(SamplingParams(temperature=0, max_tokens=30, stop_token_ids=[ref[3]]))
        elif kind == 2:
            params.append(SamplingParams(temperature=0, max_tokens=25, repetition_penalty=1.3,
                                         frequency_penalty=0.5, ignore_eos=True))
        elif kind == 3:
            params.append(SamplingParams(temperature=0, max_tokens=12, min_tokens=8, stop_token_ids=[ref[2]]))
        else:
            params.append(SamplingParams(temperature=1.0, seed=i, max_tokens=18, presence_penalty=0.7,
                                         ignore_eos=True))
    sync, asyn = both(tiny_llama_dir, ps, params)
    assert tokens(asyn) == tokens(sync)
    assert [o.outputs[0].finish_reason for o in asyn] == [o.outputs[0].finish_reason for o in sync]


def test_random_aborts_leave_no_blocks(tiny_llama_dir):
    rng = random.Random(0)
    with make_llm(tiny_llama_dir, async_scheduling=True, max_num_batched_tokens=64) as llm:
        eng = llm.llm_engine
        live = []
        for i in range(120):
            rid = f"r{i}"
            n = rng.randint(1, 50)
            eng.add_request(rid, {"prompt_token_ids": [rng.randint(3, 500) for _ in range(n)]},
                            SamplingParams(temperature=0, max_tokens=rng.randint(1, 20), ignore_eos=True))
            live.append(rid)
            for _ in range(rng.randint(0, 3)):
                eng.step()
            if rng.random() < 0.3 and live:
                eng.abort_request(live.pop(rng.randrange(len(live))))
        while eng.has_unfinished_requests():
            eng.step()
        # What is left in flight only tells the workers which requests ended; it drains.
        for _ in range(3):
            assert eng._in_flight is None or eng._in_flight[0].is_empty
            eng.step()
        assert eng._in_flight is None
        assert eng.scheduler.kv.pool.num_free_blocks == eng.config.cache.num_blocks
