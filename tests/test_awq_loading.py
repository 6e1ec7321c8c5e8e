"""AutoAWQ-GEMM checkpoints load into the native models (auto-detected or explicit) and compute
the function their dequantized weights define."""
from __future__ import annotations

import pytest
import torch

from pagedawq import LLM, SamplingParams
from tests.conftest import hf_greedy, make_rtn_awq_checkpoint, make_tiny_model


@pytest.mark.parametrize("arch, group", [("llama", 32), ("qwen2", 64), ("llama_bias_tied", -1)])
def test_awq_checkpoint_matches_dequantized_reference(tmp_path, arch, group):
    import transformers
    src = make_tiny_model(tmp_path / "fp", arch)
    awq_dir, deq = make_rtn_awq_checkpoint(src, tmp_path / "awq", group)
    ref = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    state = ref.state_dict()
    for name, w in deq.items():
        state[name] = w
    for name, w in state.items():    # everything else is stored in fp16 in the AWQ checkpoint
        if name not in deq:
            state[name] = w.half().float()
    ref.load_state_dict(state)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 512, (n,), generator=gen).tolist() for n in (4, 19, 40)]
    for quantization in ("awq", None):   # explicit, and auto-detected from quantization_config
        with LLM(str(awq_dir), quantization=quantization, device="cpu", dtype="float32", skip_tokenizer_init=True,
                 kv_cache_memory_bytes=8 * 2**20) as llm:
            layer = llm.llm_engine.executor.worker.runner.model.model.layers[0].self_attn.qkv_proj
            assert layer.qweight.dtype == torch.int32
            outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                                SamplingParams(temperature=0, max_tokens=12, ignore_eos=True), use_tqdm=False)
        for p, out in zip(prompts, outs):
            assert out.outputs[0].token_ids == hf_greedy(ref, p, 12)


def test_awq_group_must_divide_layer(tmp_path):
    from pagedawq.quant.awq import AWQConfigError
    src = make_tiny_model(tmp_path / "fp", "llama")
    awq_dir, _ = make_rtn_awq_checkpoint(src, tmp_path / "awq", 32)
    import json
    cfg = json.loads((awq_dir / "config.json").read_text())
    cfg["quantization_config"]["group_size"] = 48   # does not divide 64
    (awq_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AWQConfigError, match="group_size 48 does not divide"):
        LLM(str(awq_dir), device="cpu", dtype="float32", skip_tokenizer_init=True, kv_cache_memory_bytes=8 * 2**20)
