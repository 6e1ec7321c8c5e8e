"""The Llama family (Llama-2/3, SmolLM2, Mistral, Qwen2) as one native implementation.

The variants differ only in configuration: Qwen2 has biases on q/k/v, Llama's ``attention_bias``
puts them on o_proj too, ``mlp_bias`` on the MLP; embeddings may be tied to the LM head. Weights
arrive with HF names; q/k/v and gate/up are fused on load (``packed_modules_mapping``).
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch
from torch import nn

from pagedawq.config import hf_head_dim, hf_num_kv_heads
from pagedawq.models.layers.attention import Attention
from pagedawq.models.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from pagedawq.models.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from pagedawq.models.layers.norm import RMSNorm
from pagedawq.models.layers.rotary import RotaryEmbedding
from pagedawq.quant.base import QuantConfig


class LlamaAttention(nn.Module):
    def __init__(self, cfg: dict[str, Any], quant_config: QuantConfig | None, dtype: torch.dtype, prefix: str,
                 qkv_bias: bool, o_bias: bool, rotary_emb: RotaryEmbedding) -> None:
        super().__init__()
        hidden = cfg["hidden_size"]
        num_heads = cfg["num_attention_heads"]
        num_kv_heads = hf_num_kv_heads(cfg)
        head_dim = hf_head_dim(cfg)
        self.qkv_proj = QKVParallelLinear(hidden, head_dim, num_heads, num_kv_heads, bias=qkv_bias,
                                          params_dtype=dtype, quant_config=quant_config,
                                          prefix=f"{prefix}.qkv_proj")
        # Without a bias the all-reduce is left to post_attention_layernorm, which fuses it.
        self.o_proj = RowParallelLinear(num_heads * head_dim, hidden, bias=o_bias, params_dtype=dtype,
                                        quant_config=quant_config, prefix=f"{prefix}.o_proj", reduce_results=o_bias)
        self.q_size = self.qkv_proj.num_heads * head_dim
        self.kv_size = self.qkv_proj.num_kv_heads * head_dim
        self.rotary_emb = rotary_emb
        self.attn = Attention(self.qkv_proj.num_heads, head_dim, self.qkv_proj.num_kv_heads, head_dim ** -0.5)

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        # q, k, v stay strided views of the fused output: the rotary + cache-write and attention
        # kernels take row strides, and copies would cost three launches per layer at batch > 1.
        q, k, v = self.qkv_proj(hidden).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        return self.o_proj(self.attn(q, k, v, self.rotary_emb.rope(positions)))


class LlamaMLP(nn.Module):
    def __init__(self, cfg: dict[str, Any], quant_config: QuantConfig | None, dtype: torch.dtype, prefix: str) -> None:
        super().__init__()
        if cfg.get("hidden_act", "silu") != "silu":
            from pagedawq.errors import UnsupportedModelError
            raise UnsupportedModelError(f"hidden_act {cfg.get('hidden_act')!r} is not supported (only 'silu')")
        hidden, inter, bias = cfg["hidden_size"], cfg["intermediate_size"], bool(cfg.get("mlp_bias", False))
        self.gate_up_proj = MergedColumnParallelLinear(hidden, [inter, inter], bias=bias, params_dtype=dtype,
                                                       quant_config=quant_config, prefix=f"{prefix}.gate_up_proj",
                                                       feeds_silu_and_mul=True)
        # Without a bias the all-reduce is left to the next norm (next layer's input_layernorm or
        # the final norm), which fuses it.
        self.down_proj = RowParallelLinear(inter, hidden, bias=bias, params_dtype=dtype,
                                           quant_config=quant_config, prefix=f"{prefix}.down_proj", reduce_results=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.gate_up_proj.forward_silu_and_mul(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: dict[str, Any], quant_config: QuantConfig | None, dtype: torch.dtype, prefix: str,
                 qkv_bias: bool, o_bias: bool, rotary_emb: RotaryEmbedding) -> None:
        super().__init__()
        eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.self_attn = LlamaAttention(cfg, quant_config, dtype, f"{prefix}.self_attn", qkv_bias, o_bias, rotary_emb)
        self.mlp = LlamaMLP(cfg, quant_config, dtype, f"{prefix}.mlp")
        self.input_layernorm = RMSNorm(cfg["hidden_size"], eps, dtype)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], eps, dtype)

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor, residual: torch.Tensor,
                input_normed: bool = False):
        """``hidden`` is the previous layer's MLP output, which holds partial sums when its down
        projection left the all-reduce to this layer's input_layernorm (likewise the MLP output
        returned here). In the first layer (``input_normed``) it is already that norm of the
        embedding ``residual``: the model computes the two together (``LlamaModel.forward``)."""
        if not input_normed:
            hidden, residual = self.input_layernorm(hidden, residual, all_reduce_x=self.mlp_output_partial)
        hidden = self.self_attn(positions, hidden)
        hidden, residual = self.post_attention_layernorm(
            hidden, residual, all_reduce_x=not self.self_attn.o_proj.reduce_results)
        return self.mlp(hidden), residual

    @property
    def mlp_output_partial(self) -> bool:
        """Whether the MLP returns partial sums (every layer of a model is built alike)."""
        return not self.mlp.down_proj.reduce_results


class LlamaModel(nn.Module):
    def __init__(self, cfg: dict[str, Any], quant_config: QuantConfig | None, dtype: torch.dtype,
                 qkv_bias: bool, o_bias: bool) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(cfg["vocab_size"], cfg["hidden_size"], dtype)
        # One cos/sin table for every layer: a table per layer took 64 MiB each at Llama-3's 131072
        # positions (2 GiB of an 8B model's GPU memory, 5 GiB of a 70B's on every rank).
        rotary_emb = RotaryEmbedding(hf_head_dim(cfg), cfg.get("max_position_embeddings", 2048), cfg)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(cfg, quant_config, dtype, f"model.layers.{i}", qkv_bias, o_bias, rotary_emb)
            for i in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], float(cfg.get("rms_norm_eps", 1e-6)), dtype)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # The embedding and the first layer's input norm: one kernel with the all-reduce at TP > 1
        # in decode steps (``VocabParallelEmbedding.embed_and_rms_norm``).
        hidden, residual = self.embed_tokens.embed_and_rms_norm(input_ids, self.layers[0].input_layernorm)
        for i, layer in enumerate(self.layers):
            hidden, residual = layer(positions, hidden, residual, input_normed=i == 0)
        partial = bool(self.layers) and self.layers[-1].mlp_output_partial
        hidden, _ = self.norm(hidden, residual, all_reduce_x=partial)
        return hidden


class LlamaForCausalLM(nn.Module):
    # checkpoint module name -> (fused module name, shard id)
    packed_modules_mapping = {
        "q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    }
    qkv_bias_default = False

    def __init__(self, cfg: dict[str, Any], quant_config: QuantConfig | None, dtype: torch.dtype) -> None:
        super().__init__()
        attention_bias = bool(cfg.get("attention_bias", False))
        qkv_bias = attention_bias or self.qkv_bias_default
        self.model = LlamaModel(cfg, quant_config, dtype, qkv_bias=qkv_bias, o_bias=attention_bias)
        self.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", False))
        self.lm_head = ParallelLMHead(cfg["vocab_size"], cfg["hidden_size"], dtype)
        if self.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @classmethod
    def linear_input_splits(cls, cfg: dict[str, Any], tp_size: int) -> Iterator[tuple[str, int, int]]:
        """(name, input features, input features a rank keeps) of every linear layer at ``tp_size``
        ranks: the row-parallel o_proj and down_proj split their inputs, the others keep them whole.
        The engine checks these against the weight format before any rank builds the model."""
        hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
        attn_out = cfg["num_attention_heads"] * hf_head_dim(cfg)
        for i in range(cfg["num_hidden_layers"]):
            yield f"model.layers.{i}.self_attn.qkv_proj", hidden, hidden
            yield f"model.layers.{i}.self_attn.o_proj", attn_out, attn_out // tp_size
            yield f"model.layers.{i}.mlp.gate_up_proj", hidden, hidden
            yield f"model.layers.{i}.mlp.down_proj", inter, inter // tp_size

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head.compute_logits(hidden)

    def greedy_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """The argmax of ``compute_logits(hidden)`` a row, without gathering vocabulary-parallel logits."""
        return self.lm_head.greedy_tokens(hidden)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Copy HF-named checkpoint tensors into the fused, sharded parameters; returns the names
        of the parameters that were filled."""
        params = dict(self.named_parameters(remove_duplicate=False))
        loaded: set[str] = set()
        for name, tensor in weights:
            if "rotary_emb.inv_freq" in name:
                continue
            if self.tie_word_embeddings and name.startswith("lm_head."):
                continue
            shard_id = None
            parts = name.split(".")
            for i, part in enumerate(parts):
                if part in self.packed_modules_mapping:
                    fused, shard_id = self.packed_modules_mapping[part]
                    parts[i] = fused
                    break
            target = ".".join(parts)
            if target not in params:
                from pagedawq.errors import ModelFilesError
                raise ModelFilesError(f"checkpoint tensor {name!r} matches no parameter of the model "
                                      "(wrong architecture or quantization for this checkpoint?)")
            param = params[target]
            param.weight_loader(param, tensor, shard_id) if shard_id is not None else param.weight_loader(param, tensor)
            loaded.add(target)
        if self.tie_word_embeddings and "model.embed_tokens.weight" in loaded:
            loaded.add("lm_head.weight")
        return loaded


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Qwen2: Llama with biases on the q/k/v projections (and none on o_proj)."""
    qkv_bias_default = True
