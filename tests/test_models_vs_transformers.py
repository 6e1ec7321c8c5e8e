"""Greedy tokens identical to transformers on the same weights; logprobs close."""
from __future__ import annotations

import pytest
import torch

from pagedawq import LLM, SamplingParams
from tests.conftest import TINY_ARCHS, make_tiny_model

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Translate to French: I like apples.",
    "Water boils at a temperature of",
    "1, 2, 3, 4, 5,",
    "The most important thing about machine learning is",
]


def hf_greedy(model, ids: list[int], n: int) -> tuple[list[int], torch.Tensor]:
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=0, eos_token_id=None)
    logits = torch.stack(out.logits, dim=1)[0]   # [n, V]
    return out.sequences[0, len(ids):].tolist(), logits.float().log_softmax(-1)


def test_default_model_greedy_and_logprobs_match_transformers(default_llm, hf_default_model, default_tokenizer):
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True, logprobs=5)
    outs = default_llm.generate(PROMPTS, params, use_tqdm=False)
    assert [o.prompt for o in outs] == PROMPTS
    for prompt, out in zip(PROMPTS, outs):
        ids = default_tokenizer(prompt).input_ids
        assert out.prompt_token_ids == ids
        ref_tokens, ref_logprobs = hf_greedy(hf_default_model, ids, 32)
        got = out.outputs[0]
        assert got.token_ids == ref_tokens, prompt
        assert got.text == default_tokenizer.decode(ref_tokens, skip_special_tokens=True)
        assert len(got.logprobs) == 32
        for step, entry in enumerate(got.logprobs):
            top = torch.topk(ref_logprobs[step], 5)
            assert set(top.indices.tolist()) <= set(entry), (prompt, step)
            for tid, val in zip(top.indices.tolist(), top.values.tolist()):
                assert abs(entry[tid].logprob - val) < 2e-3
            assert entry[got.token_ids[step]].rank == 1


@pytest.mark.parametrize("arch", sorted(TINY_ARCHS))
def test_tiny_random_models_match_transformers(arch, tmp_path):
    import transformers
    path = make_tiny_model(tmp_path, arch)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 512, (n,), generator=gen).tolist() for n in (1, 7, 33, 70)]
    llm = LLM(str(path), device="cpu", dtype="float32", skip_tokenizer_init=True, kv_cache_memory_bytes=16 * 2**20)
    try:
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                            SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=3), use_tqdm=False)
        # every layer rotates with one cos/sin table (one a layer took 64 MiB each at 131072 positions)
        model = llm.llm_engine.executor.worker.runner.model
        assert len({id(b) for n, b in model.named_buffers(remove_duplicate=False) if n.endswith("cos_sin_cache")}) == 1
    finally:
        llm.close()
    for p, out in zip(prompts, outs):
        ref_tokens, ref_lp = hf_greedy(hf, p, 24)
        assert out.outputs[0].token_ids == ref_tokens
        for step, entry in enumerate(out.outputs[0].logprobs):
            tok = ref_tokens[step]
            assert abs(entry[tok].logprob - ref_lp[step, tok].item()) < 1e-3
