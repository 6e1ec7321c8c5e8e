"""Weight sources: sharded safetensors with an index, and a .gguf file given as the model."""
from __future__ import annotations

import pytest
import torch

from pagedawq import LLM, SamplingParams
from pagedawq.errors import ModelFilesError

GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)


def greedy(path, prompts, **kw):
    with LLM(str(path), device="cpu", dtype="float32", kv_cache_memory_bytes=16 * 2**20, **kw) as llm:
        return [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY, use_tqdm=False)]


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path, tiny_llama_dir):
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="100KB")
    shards = sorted(sharded.glob("*.safetensors"))
    assert len(shards) > 2 and (sharded / "model.safetensors.index.json").is_file()
    prompts = [{"prompt_token_ids": [5, 6, 7, 8]}, {"prompt_token_ids": list(range(10, 50))}]
    assert greedy(sharded, prompts, skip_tokenizer_init=True) == greedy(tiny_llama_dir, prompts, skip_tokenizer_init=True)
    shards[1].unlink()
    with pytest.raises(ModelFilesError, match="missing weight shards"):
        greedy(sharded, prompts, skip_tokenizer_init=True)


def test_gguf_file_as_model(tmp_path, monkeypatch, default_llm):
    from pagedawq.models.default_model import default_gguf_path
    monkeypatch.setenv("PAGEDAWQ_CACHE", str(tmp_path))
    prompts = ["The capital of France is"]
    got = greedy(default_gguf_path(), prompts, max_model_len=256)
    assert list(tmp_path.glob("gguf/*/config.json"))
    expected = [o.outputs[0].token_ids for o in default_llm.generate(prompts, GREEDY, use_tqdm=False)]
    assert got == expected
