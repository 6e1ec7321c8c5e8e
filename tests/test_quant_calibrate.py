"""End to end AWQ on tiny Llamas: the checkpoint, its fidelity, quality against RTN, and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from pagedawq.models.default_model import ensure_default_model_dir
from pagedawq.quant import quantize
from pagedawq.quant.calibrate.driver import CalibrationOptions, calibrate_model
from pagedawq.quant.calibrate.errors import (CalibrationDataError, NonFiniteError, OutputExistsError,
                                             QuantizeOptionError, UnsupportedArchitectureError)
from pagedawq.quant.calibrate.rtn import WeightQuant, rtn_quantize_model
from pagedawq.quant.calibrate.walk import SUPPORTED_ARCHITECTURES, load_model
from pagedawq.quant.checkpoint import (awq_quantization_config, checkpoint_config, load_dequantized, read_tensors,
                                       write_checkpoint)
from pagedawq.quant.cli import main as cli_main
from tests.conftest import hf_greedy

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CALIB = DATA / "wikitext2-valid.txt"
FAST = dict(group_size=32, calib_data=str(CALIB), n_samples=4, seq_len=64, device="cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(ensure_default_model_dir())


def save_tiny_llama(path: Path, tokenizer, *, kv_heads: int = 4, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=16,
                         max_position_embeddings=256, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a few salient hidden channels, as trained LLMs have
        model.model.embed_tokens.weight[:, :3] *= 10
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny") / "model", tokenizer)


@pytest.fixture(scope="module")
def tiny_awq(tmp_path_factory, tiny_dir) -> Path:
    return quantize(tiny_dir, tmp_path_factory.mktemp("out") / "awq", **FAST)


@pytest.fixture(scope="module")
def eval_ids(tokenizer) -> torch.Tensor:
    text = (DATA / "wikitext2-raw-test.txt").read_text()[:4000]
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[:, :256]


def test_checkpoint_layout_and_config(tiny_awq, tiny_dir):
    names = {p.name for p in tiny_awq.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names
    assert not [n for n in names if "tmp" in n]
    config = json.loads((tiny_awq / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "awq", "bits": 4, "group_size": 32,
                                             "zero_point": True, "version": "gemm", "modules_to_not_convert": None}
    assert config["torch_dtype"] == "float16" and config["architectures"] == ["LlamaForCausalLM"]
    with safe_open(tiny_awq / "model.safetensors", "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert "lm_head.weight" not in tensors  # tied embeddings
    shapes = {"q_proj": (64, 64), "k_proj": (64, 64), "v_proj": (64, 64), "o_proj": (64, 64),
              "gate_proj": (64, 128), "up_proj": (64, 128), "down_proj": (128, 64)}
    for layer in range(2):
        for name, (k, n) in shapes.items():
            mod = "self_attn" if name[0] in "qkvo" else "mlp"
            base = f"model.layers.{layer}.{mod}.{name}"
            assert tensors[f"{base}.qweight"].dtype == torch.int32 and tensors[f"{base}.qweight"].shape == (k, n // 8)
            assert tensors[f"{base}.qzeros"].dtype == torch.int32 and tensors[f"{base}.qzeros"].shape == (k // 32, n // 8)
            assert tensors[f"{base}.scales"].dtype == torch.float16 and tensors[f"{base}.scales"].shape == (k // 32, n)
            assert f"{base}.weight" not in tensors
        assert tensors[f"model.layers.{layer}.input_layernorm.weight"].dtype == torch.float16
    assert tensors["model.embed_tokens.weight"].dtype == torch.float16
    assert len(tensors) == 2 * (7 * 3 + 2) + 2


def test_dequantized_checkpoint_tracks_the_fp_model(tiny_awq, tiny_dir, eval_ids):
    fp = load_model(tiny_dir, torch.float32)
    q = load_dequantized(tiny_awq)
    with torch.no_grad():
        ref, got = fp(eval_ids).logits, q(eval_ids).logits
    rel = ((got - ref) ** 2).mean() / (ref ** 2).mean()
    assert 0 < rel < 0.05


@pytest.mark.parametrize("arch", ["MistralForCausalLM", "Qwen2ForCausalLM"])
def test_other_supported_architectures(arch, tmp_path, tokenizer, eval_ids):
    import transformers

    config_cls = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    torch.manual_seed(0)
    config = config_cls(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256)
    fp = getattr(transformers, arch)(config).eval()
    with torch.no_grad():  # non-zero biases, so that folding v -> o must rescale them
        for name, p in fp.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    fp.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    path = quantize(tmp_path / "model", tmp_path / "awq", **FAST)
    tensors = read_tensors(path)
    if arch == "Qwen2ForCausalLM":  # q/k/v carry biases, kept in fp16 beside the packed weight
        assert tensors["model.layers.1.self_attn.v_proj.bias"].dtype == torch.float16
    with torch.no_grad():
        ref, got = fp(eval_ids).logits, load_dequantized(path)(eval_ids).logits
    assert 0 < ((got - ref) ** 2).mean() / (ref ** 2).mean() < 0.05


def test_checkpoint_encodes_exactly_the_calibrated_model(tiny_dir, tokenizer, tmp_path, eval_ids):
    model = load_model(tiny_dir, torch.float32)
    blocks = eval_ids[:, :128].view(2, 64)
    tensors = calibrate_model(model, blocks, SUPPORTED_ARCHITECTURES["LlamaForCausalLM"],
                              CalibrationOptions(WeightQuant(4, 32, True)), torch.device("cpu"))
    with torch.no_grad():
        for p in (model.model.embed_tokens.weight, model.model.norm.weight):
            p.copy_(p.half())
    config = checkpoint_config(json.loads((tiny_dir / "config.json").read_text()),
                               awq_quantization_config(4, 32, True, None))
    path = write_checkpoint(tmp_path / "ckpt", tensors, config, tiny_dir)
    with torch.no_grad():
        assert torch.allclose(model(eval_ids).logits, load_dequantized(path)(eval_ids).logits, atol=1e-5)


def test_engine_serves_the_checkpoint_like_its_dequantized_twin(tiny_awq):
    from pagedawq import LLM, SamplingParams

    ref = load_dequantized(tiny_awq)
    prompts = [[5, 6, 7, 8], list(range(100, 130))]
    with LLM(str(tiny_awq), device="cpu", dtype="float32", kv_cache_memory_bytes=8 * 2**20) as llm:
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                            SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    for p, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_greedy(ref, p, 8)


def test_self_calibration_with_the_engine(tmp_path, tiny_dir):
    """calib_data="self": the engine samples the calibration text from the model itself."""
    path = quantize(tiny_dir, tmp_path / "self", **{**FAST, "calib_data": "self", "n_samples": 2, "seq_len": 32})
    assert "model.layers.1.mlp.down_proj.qweight" in read_tensors(path)


def test_sharded_checkpoint_round_trips(tmp_path, tiny_dir):
    tensors = {f"t{i}": torch.full((100,), i, dtype=torch.float16) for i in range(5)}
    path = write_checkpoint(tmp_path / "sharded", tensors, {"architectures": ["LlamaForCausalLM"]}, tiny_dir,
                            max_shard_bytes=450)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert index["metadata"]["total_size"] == 5 * 200
    back = read_tensors(path)
    assert all(torch.equal(back[k], v) for k, v in tensors.items())


def test_overwrite_is_refused_then_allowed_atomically(tiny_awq, tiny_dir):
    with pytest.raises(OutputExistsError, match="overwrite"):
        quantize(tiny_dir, tiny_awq, **FAST)
    before = (tiny_awq / "model.safetensors").read_bytes()
    quantize(tiny_dir, tiny_awq, **{**FAST, "clip": False}, overwrite=True)
    assert (tiny_awq / "model.safetensors").read_bytes() != before
    assert [p.name for p in tiny_awq.parent.iterdir()] == ["awq"]  # no temp or backup dirs left


def test_modules_to_not_convert_stay_fp16(tmp_path, tiny_dir):
    path = quantize(tiny_dir, tmp_path / "skip", **FAST, modules_to_not_convert=["down_proj"])
    tensors = read_tensors(path)
    assert tensors["model.layers.0.mlp.down_proj.weight"].dtype == torch.float16
    assert "model.layers.0.mlp.down_proj.qweight" not in tensors
    assert "model.layers.0.mlp.up_proj.qweight" in tensors
    assert json.loads((path / "config.json").read_text())["quantization_config"]["modules_to_not_convert"] == ["down_proj"]


def last_layer_output(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = []
    handle = model.model.layers[-1].register_forward_hook(lambda _m, _a, y: out.append(y[0] if isinstance(y, tuple) else y))
    with torch.no_grad():
        model(ids)
    handle.remove()
    return out[0]


def test_awq_beats_rtn_on_real_weights(tmp_path, tokenizer, eval_ids):
    """Two real SmolLM2 layers: AWQ's error at the last layer's output is below round-to-nearest's.

    (The layer output is what AWQ minimises; logits of a 2-layer truncation mean little.)
    """
    full = load_model(ensure_default_model_dir(), torch.float32)
    config = full.config
    config.num_hidden_layers = 2
    small = LlamaForCausalLM(config)
    small.load_state_dict(full.state_dict(), strict=False)
    del full
    small.save_pretrained(tmp_path / "smol2")
    tokenizer.save_pretrained(tmp_path / "smol2")
    awq = quantize(tmp_path / "smol2", tmp_path / "awq", group_size=64, calib_data=str(CALIB), n_samples=4,
                   seq_len=128, device="cpu")
    ref = last_layer_output(load_model(tmp_path / "smol2", torch.float32), eval_ids)
    rtn = rtn_quantize_model(load_model(tmp_path / "smol2", torch.float32), WeightQuant(4, 64, True))
    err_rtn = ((last_layer_output(rtn, eval_ids) - ref) ** 2).mean()
    err_awq = ((last_layer_output(load_dequantized(awq), eval_ids) - ref) ** 2).mean()
    assert err_awq < 0.9 * err_rtn


# ---- bad input -------------------------------------------------------------------------------

def test_unsupported_architecture(tmp_path):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(UnsupportedArchitectureError, match="LlamaForCausalLM.*GPT2LMHeadModel"):
        quantize(tmp_path / "gpt2", tmp_path / "out", **FAST)


def test_group_size_must_divide_smollm2_inputs(tmp_path):
    with pytest.raises(QuantizeOptionError, match=r"group_size=128 does not divide the input dimension 576.*\[32, 64, -1\]"):
        quantize(None, tmp_path / "out", group_size=128, calib_data=str(CALIB))


@pytest.mark.parametrize("kwargs, match", [
    ({"version": "gemv"}, "only 'gemm'"),
    ({"w_bit": 3}, "w_bit=3"),
    ({"group_size": 48}, "group_size=48"),
])
def test_bad_options(tmp_path, tiny_dir, kwargs, match):
    with pytest.raises(QuantizeOptionError, match=match):
        quantize(tiny_dir, tmp_path / "out", **{**FAST, **kwargs})
    assert not (tmp_path / "out").exists()


def test_calibration_text_too_short(tmp_path, tiny_dir):
    with pytest.raises(CalibrationDataError, match=r"has \d+ tokens but n_samples x seq_len = 4 x 64 = 256"):
        quantize(tiny_dir, tmp_path / "out", **{**FAST, "calib_data": ["just a few words"]})


def test_missing_inputs(tmp_path, tiny_dir):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        quantize(tmp_path, tmp_path / "out", **FAST)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        quantize(tiny_dir, tmp_path / "out", **{**FAST, "calib_data": str(tmp_path / "nope.txt")})


def test_nan_in_a_layer_is_reported_with_its_name(tmp_path, tokenizer):
    path = save_tiny_llama(tmp_path / "nan", tokenizer)
    model = load_model(path, torch.float32)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 3] = float("nan")
    model.save_pretrained(path)
    with pytest.raises(NonFiniteError, match="model.layers.1"):
        quantize(path, tmp_path / "out", **FAST)


def test_cli_quantizes_and_reports_errors(tmp_path, tiny_dir, capsys):
    out = tmp_path / "cli"
    assert cli_main([str(tiny_dir), str(out), "--group-size", "-1", "--calib-data", str(CALIB),
                     "--n-samples", "2", "--seq-len", "64", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["group_size"] == -1
    assert read_tensors(out)["model.layers.0.mlp.down_proj.scales"].shape == (1, 64)
    with pytest.raises(SystemExit) as exc:
        cli_main([str(tiny_dir), str(out), "--version", "marlin"])
    assert "only 'gemm'" in str(exc.value.code)
