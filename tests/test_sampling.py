"""Sampling semantics: seeds, filters, penalties, stop conditions (as vLLM defines them)."""
from __future__ import annotations

import pytest
import torch

from pagedawq import LLM, SamplingParams
from pagedawq.engine.sampler import RequestSamplingState, Sampler, _filter


@pytest.fixture(scope="module")
def tiny_llm(tiny_llama_dir):
    llm = LLM(str(tiny_llama_dir), device="cpu", dtype="float32", skip_tokenizer_init=True,
              kv_cache_memory_bytes=16 * 2**20)
    yield llm
    llm.close()


def ids(*xs):
    return {"prompt_token_ids": list(xs)}


def test_seeded_sampling_independent_of_batch(tiny_llm):
    target = ids(5, 6, 7, 8)
    p = SamplingParams(temperature=1.0, seed=1234, max_tokens=16, ignore_eos=True)
    alone = tiny_llm.generate([target], p, use_tqdm=False)[0].outputs[0].token_ids
    others = [ids(9, 10), ids(11, 12, 13), ids(14)]
    mixed = tiny_llm.generate(others[:2] + [target] + others[2:],
                              [SamplingParams(temperature=0.7, max_tokens=5), SamplingParams(temperature=1, seed=9),
                               p, SamplingParams(temperature=0, max_tokens=30)], use_tqdm=False)
    assert mixed[2].outputs[0].token_ids == alone
    again = tiny_llm.generate([target], p, use_tqdm=False)[0].outputs[0].token_ids
    assert again == alone
    different = tiny_llm.generate([target], SamplingParams(temperature=1.0, seed=99, max_tokens=16, ignore_eos=True),
                                  use_tqdm=False)[0].outputs[0].token_ids
    assert different != alone


def test_top_k_1_and_tiny_top_p_are_greedy(tiny_llm):
    prompt = ids(3, 4, 5)
    greedy = tiny_llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
                               use_tqdm=False)[0].outputs[0].token_ids
    for params in (SamplingParams(temperature=1.5, top_k=1, max_tokens=12, ignore_eos=True, seed=1),
                   SamplingParams(temperature=1.5, top_p=1e-6, max_tokens=12, ignore_eos=True, seed=2),
                   SamplingParams(temperature=1.5, min_p=1.0, max_tokens=12, ignore_eos=True, seed=3)):
        assert tiny_llm.generate([prompt], params, use_tqdm=False)[0].outputs[0].token_ids == greedy


def test_filter_keeps_exactly_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]]))
    out = _filter(logits.clone(), torch.tensor([4, 2]), torch.tensor([0.7, 1.0]), torch.tensor([0.0, 0.0]))
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False]   # 0.5 + 0.3 covers 0.7
    assert torch.isfinite(out[1]).sum() == 2                                 # top-k 2
    out = _filter(logits[:1].clone(), torch.tensor([4]), torch.tensor([1.0]), torch.tensor([0.35]))
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False]    # min_p: >= 0.175


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1, 0.0])
    state = RequestSamplingState.create(SamplingParams(temperature=1.0, seed=0), [1], torch.device("cpu"))
    counts = torch.zeros(4)
    sampler = Sampler()
    for _ in range(3000):
        tok = sampler(probs.log().unsqueeze(0), [state]).token_ids[0]
        counts[tok] += 1
    freq = counts / counts.sum()
    assert counts[3] == 0
    assert torch.allclose(freq, probs, atol=0.03)


def test_penalties_match_their_definitions():
    logits = torch.tensor([[2.0, -1.0, 0.5, 1.0]])
    params = SamplingParams(temperature=0, repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    state = RequestSamplingState(params, prompt_token_ids=[1], output_token_ids=[0, 0, 2])
    from pagedawq.engine.sampler import _apply_penalties
    out = _apply_penalties(logits.clone(), [state])[0]
    # token 0: seen (output x2): 2/2 - 0.25*2 - 0.5; token 1: in prompt: -1*2; token 2: 0.5/2 - 0.25 - 0.5
    assert torch.allclose(out, torch.tensor([1.0 - 0.5 - 0.5, -2.0, 0.25 - 0.75, 1.0]))


def test_stop_string_is_cut_from_text(default_llm):
    prompt = "The capital of France is"
    base = default_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=24), use_tqdm=False)[0].outputs[0]
    stop = base.text[8:12]
    cut = default_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=24, stop=[stop]),
                               use_tqdm=False)[0].outputs[0]
    assert cut.finish_reason == "stop" and cut.stop_reason == stop
    assert cut.text == base.text[: base.text.index(stop)]
    kept = default_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=24, stop=stop,
                                                       include_stop_str_in_output=True), use_tqdm=False)[0].outputs[0]
    assert kept.text == base.text[: base.text.index(stop) + len(stop)]


def test_stop_token_ids_max_tokens_min_tokens_ignore_eos(default_llm, default_tokenizer):
    prompt = "1, 2, 3, 4, 5,"
    base = default_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=20), use_tqdm=False)[0].outputs[0]
    assert base.finish_reason == "length" and len(base.token_ids) == 20
    stop_id = base.token_ids[4]
    first = base.token_ids.index(stop_id)
    out = default_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=20, stop_token_ids=[stop_id]),
                               use_tqdm=False)[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop_id
    assert out.token_ids == base.token_ids[: first + 1]
    # min_tokens suppresses the stop token until enough tokens exist.
    out = default_llm.generate(prompt, SamplingParams(temperature=0, max_tokens=20, min_tokens=first + 2,
                                                      stop_token_ids=[stop_id]), use_tqdm=False)[0].outputs[0]
    assert len(out.token_ids) >= first + 2 and stop_id not in out.token_ids[: first + 1]
    # A chat answer ends with EOS; ignore_eos runs to max_tokens.
    chat = [{"role": "user", "content": "Say hi."}]
    ended = default_llm.chat(chat, SamplingParams(temperature=0, max_tokens=200), use_tqdm=False)[0].outputs[0]
    assert ended.finish_reason == "stop" and ended.token_ids[-1] == default_tokenizer.eos_token_id
    assert ended.stop_reason is None and "<|im_end|>" not in ended.text
    forced = default_llm.chat(chat, SamplingParams(temperature=0, max_tokens=len(ended.token_ids) + 5, ignore_eos=True),
                              use_tqdm=False)[0].outputs[0]
    assert forced.finish_reason == "length" and len(forced.token_ids) == len(ended.token_ids) + 5
