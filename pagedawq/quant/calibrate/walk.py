"""Model walking: which architectures are supported, and how one decoder layer is run in isolation.

AWQ never needs the whole model on the device. The inputs of the first decoder layer are captured
once (by stopping the HF forward at that layer), then each layer is moved to the device, run over
the calibration activations in chunks, and moved back. Running a layer needs the keyword arguments
the HF model passes it (``position_embeddings=(cos, sin)`` from ``model.model.rotary_emb`` and the
attention mask in transformers v5; ``position_ids`` / ``cache_position`` in 4.x), so they are
captured with a ``forward_pre_hook`` instead of being rebuilt here: that keeps working when
transformers moves things around between versions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from pagedawq.quant.calibrate.errors import UnsupportedArchitectureError

_TOKENS_PER_CHUNK = 8192  # activations per forward call: bounds the attention/MLP temporaries


@dataclass(frozen=True)
class ScaleGroup:
    """Linears that read the same input, and where AWQ's per-channel scales for them are folded.

    ``prev`` (a norm or a linear, relative to the decoder layer) produces that input; the scales
    multiply the linears' input columns and divide ``prev``'s output. ``inspect`` is the module
    whose output the scale search compares against full precision; ``inspect_takes_layer_kwargs``
    says whether it must be called with the layer's keyword arguments (attention does).
    """

    prev: str
    linears: tuple[str, ...]
    inspect: str
    inspect_takes_layer_kwargs: bool = False

    def foldable(self, layer: nn.Module) -> bool:
        """Whether ``prev``'s output channels are exactly the linears' input channels.

        Not so for v_proj -> o_proj under grouped-query attention: v has fewer output channels than
        o has inputs (each kv head is shared by several query heads), so no exact per-channel fold
        exists (AutoAWQ skips the group the same way).
        """
        prev = layer.get_submodule(self.prev)
        if isinstance(prev, nn.Linear):
            return all(layer.get_submodule(n).in_features == prev.out_features for n in self.linears)
        return True


_LLAMA_LIKE_GROUPS = (
    ScaleGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
               "self_attn", inspect_takes_layer_kwargs=True),
    ScaleGroup("self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj"),
    ScaleGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
    ScaleGroup("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"),
)

# HF class name -> the scaling groups of one of its decoder layers.
SUPPORTED_ARCHITECTURES: dict[str, tuple[ScaleGroup, ...]] = {
    "LlamaForCausalLM": _LLAMA_LIKE_GROUPS,
    "MistralForCausalLM": _LLAMA_LIKE_GROUPS,
    "Qwen2ForCausalLM": _LLAMA_LIKE_GROUPS,
}
# Query/key projections feed q·k, whose error the per-layer output MSE does not reflect: AWQ does
# not clip them.
NO_CLIP_SUFFIXES = ("q_proj", "k_proj")
LAYERS_PREFIX = "model.layers"


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json; pass a Hugging Face model directory")
    return json.loads(path.read_text())


def scale_groups_for(config: dict[str, Any]) -> tuple[ScaleGroup, ...]:
    """The scaling groups of the model's architecture, or a clear refusal."""
    archs = config.get("architectures") or []
    supported = ", ".join(SUPPORTED_ARCHITECTURES)
    for arch in archs:
        if arch in SUPPORTED_ARCHITECTURES:
            break
    else:
        raise UnsupportedArchitectureError(
            f"AWQ calibration supports {supported}; this model is {', '.join(archs) or 'unspecified'} "
            "(config.json 'architectures')")
    if len(set(config.get("layer_types") or [])) > 1:
        raise UnsupportedArchitectureError(
            "models mixing sliding-window and full-attention layers are not supported "
            "(config.json 'layer_types'); supported: " + supported)
    return SUPPORTED_ARCHITECTURES[arch]


def load_model(model_dir: Path, dtype: torch.dtype) -> nn.Module:
    """The HF model on CPU in ``dtype``, in eval mode (decoder layers are moved to the device later)."""
    import transformers
    from transformers import AutoModelForCausalLM

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in 4.56
    model = AutoModelForCausalLM.from_pretrained(model_dir, **{dtype_kw: dtype})
    return model.eval()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return model.get_submodule(LAYERS_PREFIX)


class _StopForward(Exception):
    """Raised by the capture hook once layer 0 has been reached."""


@torch.no_grad()
def capture_first_layer_inputs(model: nn.Module, blocks: torch.Tensor, device: torch.device
                               ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Hidden states entering decoder layer 0 for every block, and the layer's keyword arguments.

    Each block is sent alone (batch 1), so the captured kwargs (rotary cos/sin, mask) have batch
    dimension 1 and broadcast over any chunk of samples later. Only the embedding and rotary
    modules visit the device.
    """
    base = model.get_submodule(LAYERS_PREFIX.rsplit(".", 1)[0])
    on_device = [m for m in (base.get_input_embeddings(), getattr(base, "rotary_emb", None)) if m is not None]
    for m in on_device:
        m.to(device)
    hidden: list[torch.Tensor] = []
    layer_kwargs: dict[str, Any] = {}

    def hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        hidden.append(args[0] if args else kwargs["hidden_states"])
        if not layer_kwargs:
            layer_kwargs.update((k, v) for k, v in kwargs.items() if k != "hidden_states")
        raise _StopForward

    handle = decoder_layers(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for block in blocks:
            try:
                base(input_ids=block.unsqueeze(0).to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
        for m in on_device:
            m.to("cpu")
    for key in ("past_key_value", "past_key_values", "cache"):
        if key in layer_kwargs:
            layer_kwargs[key] = None
    if "use_cache" in layer_kwargs:
        layer_kwargs["use_cache"] = False
    return torch.cat(hidden, dim=0), layer_kwargs


def chunk_size(seq_len: int) -> int:
    """Samples per forward call."""
    return max(1, _TOKENS_PER_CHUNK // seq_len)


def first_output(out: Any) -> torch.Tensor:
    """Hidden states from a module output (decoder layers return tuples in transformers 4.x)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def forward_chunks(module: nn.Module, x: torch.Tensor, kwargs: dict[str, Any] | None = None
                   ) -> Iterator[tuple[slice, torch.Tensor]]:
    """``module`` applied to ``x [n, seq, hidden]`` a few samples at a time: yields (rows, output)."""
    step = chunk_size(x.shape[1])
    for start in range(0, x.shape[0], step):
        rows = slice(start, min(start + step, x.shape[0]))
        yield rows, first_output(module(x[rows], **(kwargs or {})))


@torch.no_grad()
def run_layer(layer: nn.Module, x: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """The decoder layer's output for all samples (same shape as ``x``)."""
    out = torch.empty_like(x)
    for rows, y in forward_chunks(layer, x, kwargs):
        out[rows] = y
    return out


@dataclass
class InputStats:
    """What the searches need to know about one linear input (``n`` tokens, ``c`` channels).

    ``abs_mean`` [c] drives the scale candidates; ``gram`` = XᵀX [c, c] (float64) gives the exact
    output MSE of any weight change ΔW of a linear reading X as trace(ΔW·G·ΔWᵀ)/(n·out), without
    touching the activations again; ``full`` keeps X itself only where a whole block (attention,
    MLP) must be re-run during the scale search.
    """

    abs_mean: torch.Tensor
    gram: torch.Tensor
    n_tokens: int
    full: torch.Tensor | None = None

    def rescale(self, scales: torch.Tensor) -> None:
        """The statistics of X / s, after scales s were folded into the producer of X."""
        s = scales.to(self.gram)
        self.abs_mean = self.abs_mean / scales.to(self.abs_mean)
        self.gram = self.gram / s.view(-1, 1) / s.view(1, -1)
        self.full = None  # only the scale search, which runs before folding, needs X itself


class _StatsCollector:
    """Forward hook accumulating :class:`InputStats` of one linear's input across chunks."""

    def __init__(self, keep_full: bool) -> None:
        self.keep_full = keep_full
        self.abs_sum: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None
        self.n_tokens = 0
        self.parts: list[torch.Tensor] = []

    def __call__(self, _module: nn.Module, args: tuple, _output: Any) -> None:
        x = args[0]
        flat = x.reshape(-1, x.shape[-1]).float()
        gram = (flat.t() @ flat).double()
        abs_sum = flat.abs().sum(0, dtype=torch.float64)
        self.gram = gram if self.gram is None else self.gram + gram
        self.abs_sum = abs_sum if self.abs_sum is None else self.abs_sum + abs_sum
        self.n_tokens += flat.shape[0]
        if self.keep_full:
            self.parts.append(x.detach())

    def result(self) -> InputStats:
        full = torch.cat(self.parts, dim=0) if self.keep_full else None
        return InputStats((self.abs_sum / self.n_tokens).float(), self.gram, self.n_tokens, full)


@torch.no_grad()
def collect_input_stats(layer: nn.Module, x: torch.Tensor, kwargs: dict[str, Any],
                        groups: tuple[ScaleGroup, ...]) -> dict[str, InputStats]:
    """Run the layer once and return the statistics of each group's shared input (keyed by group.prev)."""
    collectors = {g.prev: _StatsCollector(keep_full=g.inspect not in g.linears)
                  for g in groups}
    handles = [layer.get_submodule(g.linears[0]).register_forward_hook(collectors[g.prev]) for g in groups]
    try:
        for _ in forward_chunks(layer, x, kwargs):
            pass
    finally:
        for h in handles:
            h.remove()
    return {prev: c.result() for prev, c in collectors.items()}
