"""Continuous batching end to end on a tiny model: chunked prefill, preemption and prefix caching
change nothing in the greedy output; nothing leaks; outputs stay in input order."""
from __future__ import annotations

import random

import pytest
import torch

from pagedawq import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)


def prompts(n: int, seed: int = 0, shared_prefix: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    prefix = torch.randint(3, 512, (shared_prefix,), generator=gen).tolist()
    return [{"prompt_token_ids": prefix + torch.randint(3, 512, (int(k),), generator=gen).tolist()}
            for k in torch.randint(1, 60, (n,), generator=gen)]


def tokens(outs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outs]


def make_llm(path, **kw) -> LLM:
    kw.setdefault("kv_cache_memory_bytes", 16 * 2**20)
    return LLM(str(path), device="cpu", dtype="float32", skip_tokenizer_init=True, **kw)


@pytest.fixture(scope="module")
def reference(tiny_llama_dir):
    llm = make_llm(tiny_llama_dir, enable_prefix_caching=False)
    ps = prompts(12, shared_prefix=40)
    outs = llm.generate(ps, GREEDY, use_tqdm=False)
    yield ps, tokens(outs), llm
    llm.close()


def test_outputs_in_input_order_and_complete(reference):
    ps, ref, _ = reference
    assert len(ref) == len(ps) and all(len(t) == 20 for t in ref)
    # One at a time gives the same tokens as the batch.
    _, _, llm = reference
    for p, t in zip(ps[:3], ref[:3]):
        assert tokens(llm.generate([p], GREEDY, use_tqdm=False))[0] == t


def test_chunked_prefill_gives_same_output(reference, tiny_llama_dir):
    ps, ref, _ = reference
    with make_llm(tiny_llama_dir, max_num_batched_tokens=7, enable_prefix_caching=False) as llm:
        assert tokens(llm.generate(ps, GREEDY, use_tqdm=False)) == ref


def test_preemption_recomputes_to_the_same_output(reference, tiny_llama_dir):
    ps, ref, _ = reference
    # 256-token max_model_len needs 16 blocks of 16; give the pool 20 so 12 requests must preempt.
    block_bytes = 2 * 2 * 16 * 2 * 16 * 4   # K+V, layers, block, kv heads, head dim, float32
    with make_llm(tiny_llama_dir, kv_cache_memory_bytes=20 * block_bytes, enable_prefix_caching=False) as llm:
        assert tokens(llm.generate(ps, GREEDY, use_tqdm=False)) == ref
        engine = llm.llm_engine
        assert engine.scheduler.num_preemptions > 0
        assert engine.scheduler.kv.num_free_blocks == engine.scheduler.kv.num_blocks


def test_prefix_cache_hits_are_reported_and_change_nothing(reference, tiny_llama_dir):
    ps, ref, _ = reference
    with make_llm(tiny_llama_dir, enable_prefix_caching=True) as llm:
        first = llm.generate(ps, GREEDY, use_tqdm=False)
        second = llm.generate(ps, GREEDY, use_tqdm=False)
        assert tokens(first) == ref and tokens(second) == ref
        assert sum(o.num_cached_tokens for o in first) > 0            # shared 40-token prefix
        assert all(o.num_cached_tokens >= 32 for o in second)
        assert llm.llm_engine.stats()["prefix_cache_hits"] > 0


def test_n_samples_share_prompt_blocks(tiny_llama_dir):
    with make_llm(tiny_llama_dir) as llm:
        p = {"prompt_token_ids": list(range(10, 60))}   # 3 full blocks of 16
        out = llm.generate([p], SamplingParams(n=4, temperature=1.0, seed=7, max_tokens=8, ignore_eos=True),
                           use_tqdm=False)[0]
        assert [o.index for o in out.outputs] == [0, 1, 2, 3]
        assert len({tuple(o.token_ids) for o in out.outputs}) > 1   # distinct seeds, distinct samples
        # The first child computes the prompt; the other three reuse its 3 full blocks.
        assert llm.llm_engine.stats()["prefix_cache_hits"] == 3 * 48


def test_random_stream_with_aborts_leaves_no_blocks(tiny_llama_dir):
    rng = random.Random(0)
    with make_llm(tiny_llama_dir, max_num_batched_tokens=64, kv_cache_memory_bytes=40 * 2 * 2 * 16 * 2 * 16 * 4) as llm:
        engine = llm.llm_engine
        ps = prompts(200, seed=5, shared_prefix=20)
        live: set[str] = set()
        done = 0
        for i, p in enumerate(ps):
            engine.add_request(str(i), p, SamplingParams(temperature=rng.choice([0, 1.0]), max_tokens=rng.randrange(1, 10),
                                                        ignore_eos=True))
            live.add(str(i))
            if rng.random() < 0.5:
                for out in engine.step():
                    if out.finished:
                        live.discard(out.request_id)
                        done += 1
            if rng.random() < 0.15 and live:
                victim = rng.choice(sorted(live))
                engine.abort_request(victim)
                live.discard(victim)
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    live.discard(out.request_id)
                    done += 1
        assert not live and done > 100
        assert engine.scheduler.kv.num_free_blocks == engine.scheduler.kv.num_blocks
        assert not engine.scheduler.requests and not engine.parents


def test_warm_up_forward_writes_no_kv_and_changes_no_output(reference, tiny_llama_dir):
    """The start-up warm-up (run on CUDA to compile short-prefill kernels) is a forward that
    leaves the KV cache untouched."""
    ps, ref, llm = reference
    runner = llm.llm_engine.executor.worker.runner
    before = [c.clone() for c in runner.kv_caches]
    runner.warm_up()
    assert all(torch.equal(a, b) for a, b in zip(before, runner.kv_caches))
    assert tokens(llm.generate(ps[:2], GREEDY, use_tqdm=False)) == ref[:2]
