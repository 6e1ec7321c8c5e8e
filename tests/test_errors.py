"""Bad input gets a specific, actionable error before any work starts; the engine stays usable."""
from __future__ import annotations

import json

import pytest

from pagedawq import LLM, SamplingParams
from pagedawq.config import ConfigError
from pagedawq.errors import (InsufficientKVCacheError, InsufficientMemoryError, InvalidPromptError,
                             InvalidSamplingParamsError, ModelFilesError, PromptTooLongError, UnsupportedModelError)


def tiny(path, **kw):
    kw.setdefault("kv_cache_memory_bytes", 8 * 2**20)
    return LLM(str(path), device="cpu", dtype="float32", skip_tokenizer_init=True, **kw)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-0.1), "temperature"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(top_k=0), "top_k"), (dict(min_p=2.0), "min_p"), (dict(n=0), "n must"), (dict(max_tokens=0), "max_tokens"),
    (dict(max_tokens=4, min_tokens=5), "min_tokens"), (dict(logprobs=-1), "logprobs"), (dict(stop=[""]), "stop"),
    (dict(presence_penalty=3.0), "presence_penalty"), (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(seed="1"), "seed"), (dict(temperature=float("nan")), "temperature"), (dict(stop_token_ids=[-1]), "stop_token_ids"),
])
def test_invalid_sampling_params(kwargs, match):
    with pytest.raises(InvalidSamplingParamsError, match=match):
        SamplingParams(**kwargs)


def test_missing_and_corrupt_model_files(tmp_path, tiny_llama_dir):
    with pytest.raises(ModelFilesError, match="neither a local directory"):
        LLM(str(tmp_path / "nope"), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFilesError, match="config.json"):
        LLM(str(tmp_path / "empty"), device="cpu")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_llama_dir / "config.json").read_text())
    with pytest.raises(ModelFilesError, match="safetensors"):
        tiny(no_weights)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((tiny_llama_dir / "config.json").read_text())
    data = (tiny_llama_dir / "model.safetensors").read_bytes()
    (corrupt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFilesError, match="cannot read weights"):
        tiny(corrupt)
    with pytest.raises(ModelFilesError, match="tokenizer"):
        LLM(str(tiny_llama_dir), device="cpu", kv_cache_memory_bytes=8 * 2**20)   # tiny model has no tokenizer


def test_unknown_architecture_and_bad_engine_args(tmp_path, tiny_llama_dir):
    bad = tmp_path / "gpt2"
    bad.mkdir()
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match="supported architectures.*LlamaForCausalLM"):
        tiny(bad)
    with pytest.raises(ConfigError, match="quantization_config"):
        tiny(tiny_llama_dir, quantization="awq")
    with pytest.raises(ConfigError, match="unknown quantization"):
        tiny(tiny_llama_dir, quantization="gptq")
    with pytest.raises(ConfigError, match="block_size"):
        tiny(tiny_llama_dir, block_size=7)
    with pytest.raises(ConfigError, match="max_model_len"):
        tiny(tiny_llama_dir, max_model_len=100_000)
    with pytest.raises(UnsupportedModelError, match="attention heads"):
        tiny(tiny_llama_dir, tensor_parallel_size=3)


def test_wrong_awq_quant_config(tmp_path, tiny_llama_dir):
    from pagedawq.quant.awq import AWQConfigError
    bad = tmp_path / "bad_awq"
    bad.mkdir()
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 3, "group_size": 64, "version": "gemm"}
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AWQConfigError, match="only 4-bit"):
        tiny(bad)
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemv"}
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AWQConfigError, match="gemm"):
        tiny(bad)


def test_too_little_kv_memory(tiny_llama_dir):
    with pytest.raises(InsufficientKVCacheError, match="max_model_len=256 needs 16 blocks"):
        tiny(tiny_llama_dir, kv_cache_memory_bytes=4096)


def test_weights_larger_than_the_free_gpu_memory_are_refused_before_any_allocation(tiny_llama_dir, monkeypatch):
    """The check counts the weights exactly (those of the model loaded on the CPU): one byte less
    free memory is refused with the sizes and the fixes, before the model is built on the GPU."""
    import torch

    from pagedawq.config import build_engine_config
    from pagedawq.models import loader
    from pagedawq.models.registry import get_model_class
    config = build_engine_config(str(tiny_llama_dir), device="cpu", dtype="float32", skip_tokenizer_init=True).model
    need = loader.weight_bytes(loader.load_model(config, "cpu"))
    cls = get_model_class(config.architecture)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (need, 80 * 2**30))
    loader.check_weights_fit(cls, config, torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (need - 1, 80 * 2**30))
    with pytest.raises(InsufficientMemoryError, match=r"weights take 0.0 GiB in torch.float32, but cuda:0 has "
                                                      r"0.0 GiB free of 80.0 GiB: use an AWQ checkpoint"):
        loader.load_model(config, "cuda:0")


def test_bad_prompts_fail_before_any_work_and_engine_stays_usable(tiny_llama_dir):
    with tiny(tiny_llama_dir) as llm:
        good = {"prompt_token_ids": [5, 6, 7]}
        p = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
        cases = [
            ({"prompt_token_ids": []}, InvalidPromptError, "empty"),
            ({"prompt_token_ids": list(range(256))}, PromptTooLongError, "max_model_len is 256"),
            ({"prompt_token_ids": [5, 100_000]}, InvalidPromptError, "outside the vocabulary"),
            ("text without a tokenizer", InvalidPromptError, "tokenizer"),
            (3.14, InvalidPromptError, "a prompt is"),
        ]
        for bad, exc, match in cases:
            with pytest.raises(exc, match=match):
                llm.generate([good, bad], p, use_tqdm=False)
            assert not llm.llm_engine.has_unfinished_requests()
        with pytest.raises(InvalidSamplingParamsError, match="2 SamplingParams for 1 prompts"):
            llm.generate([good], [p, p], use_tqdm=False)
        with pytest.raises(InvalidSamplingParamsError, match="stop strings need a tokenizer"):
            llm.generate([good], SamplingParams(stop=["x"]), use_tqdm=False)
        out = llm.generate([good], p, use_tqdm=False)
        assert len(out[0].outputs[0].token_ids) == 4
        assert llm.llm_engine.scheduler.kv.num_free_blocks == llm.llm_engine.scheduler.kv.num_blocks


def test_long_max_tokens_is_clamped_to_the_context(tiny_llama_dir):
    with tiny(tiny_llama_dir) as llm:
        out = llm.generate([{"prompt_token_ids": list(range(3, 253))}],
                           SamplingParams(temperature=0, max_tokens=100, ignore_eos=True), use_tqdm=False)[0]
        assert len(out.outputs[0].token_ids) == 6 and out.outputs[0].finish_reason == "length"
