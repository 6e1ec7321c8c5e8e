"""Units of the AWQ search: exact scale folding, Gram-based losses, scale and clip searches."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from pagedawq.quant.calibrate.clip_search import apply_clip, search_clip
from pagedawq.quant.calibrate.errors import NonFiniteError
from pagedawq.quant.calibrate.rtn import WeightQuant
from pagedawq.quant.calibrate.scale_search import fold_scales, search_scales, weight_magnitude
from pagedawq.quant.calibrate.walk import SUPPORTED_ARCHITECTURES, InputStats, collect_input_stats, run_layer

GROUPS = SUPPORTED_ARCHITECTURES["LlamaForCausalLM"]
WQ = WeightQuant(4, 32, True)


def make_layer(kv_heads: int, seed: int = 0, bias: bool = False):
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=kv_heads,
                         head_dim=16, num_hidden_layers=1, attention_bias=bias, attn_implementation="sdpa")
    layer = LlamaDecoderLayer(config, layer_idx=0).eval()
    with torch.no_grad():  # non-trivial norms and biases, a few salient input channels as in real models
        layer.input_layernorm.weight.uniform_(0.5, 1.5)
        layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
        for name, p in layer.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    x = torch.randn(3, 16, 64)
    x[..., :4] *= 20
    pos = torch.arange(16).unsqueeze(0)
    kwargs = {"position_embeddings": LlamaRotaryEmbedding(config)(x, pos), "attention_mask": None,
              "position_ids": pos}
    return layer, x, kwargs


@pytest.mark.parametrize("kv_heads, bias", [(4, False), (4, True), (2, False)])
def test_fold_scales_keeps_the_fp_function(kv_heads, bias):
    layer, x, kwargs = make_layer(kv_heads, bias=bias)
    before = run_layer(layer, x, kwargs)
    folded = 0
    for i, group in enumerate(GROUPS):
        if group.foldable(layer):
            scales = torch.rand(layer.get_submodule(group.linears[0]).in_features, generator=torch.Generator().manual_seed(i)) * 4 + 0.25
            fold_scales(layer, group, scales)
            folded += 1
    assert folded == (4 if kv_heads == 4 else 3)  # v -> o only without GQA
    after = run_layer(layer, x, kwargs)
    assert torch.allclose(before, after, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(layer.input_layernorm.weight, torch.ones(64))


def test_input_stats_rescale_matches_stats_of_scaled_input():
    layer, x, kwargs = make_layer(4)
    stats = collect_input_stats(layer, x, kwargs, GROUPS)
    s = torch.rand(64) + 0.5
    group = GROUPS[2]  # post_attention_layernorm -> gate/up
    fold_scales(layer, group, s)
    stats[group.prev].rescale(s)
    fresh = collect_input_stats(layer, x, kwargs, GROUPS)[group.prev]
    assert torch.allclose(stats[group.prev].abs_mean, fresh.abs_mean, rtol=1e-5)
    assert torch.allclose(stats[group.prev].gram, fresh.gram, rtol=1e-4, atol=1e-6)
    assert fresh.n_tokens == 3 * 16


@pytest.mark.parametrize("group_index", [0, 3])  # a block search (attention) and a Gram search (down_proj)
def test_search_scales_never_worse_than_rtn_and_restores_weights(group_index):
    layer, x, kwargs = make_layer(4)
    group = GROUPS[group_index]
    stats = collect_input_stats(layer, x, kwargs, GROUPS)[group.prev]
    weights = {n: layer.get_submodule(n).weight.clone() for n in group.linears}
    result = search_scales(layer, group, stats, kwargs, WQ, duo_scaling=True, where="layer0")
    assert result.best_loss <= result.rtn_loss
    assert result.best_loss < result.rtn_loss  # salient channels exist: scaling must help
    assert result.scales.shape == (layer.get_submodule(group.linears[0]).in_features,)
    assert all(torch.equal(layer.get_submodule(n).weight, w) for n, w in weights.items())


def test_gram_loss_equals_direct_output_mse():
    layer, x, kwargs = make_layer(4)
    group = GROUPS[3]
    stats = collect_input_stats(layer, x, kwargs, GROUPS)[group.prev]
    down = layer.mlp.down_proj
    inputs = []
    handle = down.register_forward_hook(lambda _m, args, _y: inputs.append(args[0]))
    run_layer(layer, x, kwargs)
    handle.remove()
    h = torch.cat(inputs)
    result = search_scales(layer, group, stats, kwargs, WQ, duo_scaling=True, where="layer0")
    direct = ((h @ WQ.fake(down.weight).t() - h @ down.weight.t()) ** 2).mean().item()
    assert result.rtn_loss == pytest.approx(direct, rel=1e-4)


def test_weight_magnitude_is_group_normalized():
    w = torch.tensor([[1.0, -2.0, 4.0, 8.0], [3.0, 3.0, 1.0, -1.0]])
    got = weight_magnitude(w, WeightQuant(4, 2, True))
    expected = torch.tensor([(0.5 + 1.0) / 2, (1.0 + 1.0) / 2, (0.5 + 1.0) / 2, (1.0 + 1.0) / 2])
    assert torch.allclose(got, expected, atol=1e-5)


def test_clip_search_reduces_the_error_over_the_calibration_tokens():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(16, 64, generator=g)
    w[:, 5] *= 8  # outliers that clipping can trade away
    x = torch.randn(256, 64, generator=g)
    gram = (x.t() @ x).double()
    stats = InputStats(x.abs().mean(0), gram, x.shape[0])
    linear = torch.nn.Linear(64, 16, bias=False)
    with torch.no_grad():
        linear.weight.copy_(w)
    max_val = search_clip(linear.weight, stats, WQ, where="test")
    assert max_val.shape == (16, 2, 1)
    apply_clip(linear, max_val)
    err_rtn = ((x @ WQ.fake(w).t() - x @ w.t()) ** 2).mean()
    err_clip = ((x @ WQ.fake(linear.weight).t() - x @ w.t()) ** 2).mean()
    assert err_clip < err_rtn
    assert (linear.weight.abs() <= w.abs() + 1e-7).all()


def test_search_raises_naming_the_layer_on_nan():
    layer, x, kwargs = make_layer(4)
    group = GROUPS[2]
    stats = collect_input_stats(layer, x, kwargs, GROUPS)[group.prev]
    with torch.no_grad():
        layer.mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="model.layers.7"):
        search_scales(layer, group, stats, kwargs, WQ, duo_scaling=True, where="model.layers.7")
