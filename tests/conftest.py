"""Shared fixtures: the default model (dequantized SmolLM2), its transformers twin, and tiny
random-weight models of each supported architecture written as real HF checkpoints."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run in its CPU interpreter here; it must be chosen before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama3_rope": ("LlamaConfig", "LlamaForCausalLM",
                    {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                     "rope_theta": 500000.0}),
    "llama_bias_tied": ("LlamaConfig", "LlamaForCausalLM",
                        {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": False}),
}


def hf_greedy(model, prompt_ids: list[int], n: int) -> list[int]:
    """transformers' greedy continuation of ``prompt_ids`` (n tokens, no EOS stop): the oracle
    the engine's greedy tokens are compared with."""
    ids = torch.tensor([prompt_ids], device=model.device)
    out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def make_tiny_model(path: Path, arch: str = "llama", seed: int = 0, **overrides) -> Path:
    """A 2-layer random-weight model of ``arch`` saved as an HF directory (float32 safetensors)."""
    import transformers
    cfg_name, model_name, extra = TINY_ARCHS[arch]
    kwargs = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  initializer_range=0.2, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)
    kwargs.update(extra)
    kwargs.update(overrides)
    config = getattr(transformers, cfg_name)(**kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).float().eval()
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from pagedawq.models.default_model import ensure_default_model_dir
    return ensure_default_model_dir()


@pytest.fixture(scope="session")
def hf_default_model(default_model_dir):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def default_tokenizer(default_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(default_model_dir)


@pytest.fixture(scope="session")
def default_llm(default_model_dir):
    from pagedawq import LLM
    llm = LLM(str(default_model_dir), dtype="float32", device="cpu", max_model_len=2048,
              kv_cache_memory_bytes=256 * 2**20)
    yield llm
    llm.close()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_llama"), "llama")


@pytest.fixture(scope="session")
def gqa_model(tmp_path_factory) -> tuple[Path, Path]:
    """A random GQA Llama for the tensor-parallel tests, in fp32 and as an RTN AWQ g32 checkpoint:
    head_dim 32, 4 query / 2 KV heads (TP=2 splits the KV heads), 128 wide (g32 shards whole groups)."""
    base = tmp_path_factory.mktemp("tp")
    fp = make_tiny_model(base / "fp", "llama", hidden_size=128, intermediate_size=256, num_attention_heads=4,
                         num_key_value_heads=2)
    awq, _ = make_rtn_awq_checkpoint(fp, base / "awq", 32)
    return fp, awq


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


QUANTIZED_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_rtn_awq_checkpoint(src: Path, dst: Path, group_size: int) -> tuple[Path, dict[str, torch.Tensor]]:
    """Round-to-nearest int4 copy of an HF float checkpoint in the AutoAWQ GEMM layout (independent
    of the calibrator). Returns the directory and the dequantized float weights it encodes."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from pagedawq.quant.pack import dequantize_awq, pack_awq_gemm, quantize_weight

    dst.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(src / "model.safetensors"))
    out, dequantized = {}, {}
    for name, w in tensors.items():
        module = name.rsplit(".", 2)[-2] if name.endswith(".weight") else ""
        if module in QUANTIZED_LINEARS:
            base = name[: -len(".weight")]
            qweight, qzeros, scales = pack_awq_gemm(*quantize_weight(w.float(), 4, group_size))
            out.update({f"{base}.qweight": qweight, f"{base}.qzeros": qzeros, f"{base}.scales": scales})
            dequantized[name] = dequantize_awq(qweight, qzeros, scales, torch.float32).t().contiguous()
        else:
            out[name] = w.to(torch.float16)
    save_file(out, str(dst / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True,
                                  "version": "gemm"}
    (dst / "config.json").write_text(json.dumps(cfg))
    for extra in src.iterdir():
        if extra.name not in ("model.safetensors", "config.json") and extra.is_file():
            shutil.copy(extra, dst / extra.name)
    return dst, dequantized
