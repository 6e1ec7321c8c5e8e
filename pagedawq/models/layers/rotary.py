"""Rotary position embeddings (neox / HF Llama layout) with the Llama-3 and linear scalings.

The cos/sin table is built once in float32 for every position up to ``max_position``; the attention
layer applies it (``rope(positions)``), so that the GPU backend can fuse it with the cache write.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pagedawq.attention.backend import Rope
from pagedawq.errors import UnsupportedModelError


def rope_parameters(hf_config: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """(theta, scaling dict) from either transformers v5 ``rope_parameters`` or v4 ``rope_theta``
    + ``rope_scaling``."""
    params = hf_config.get("rope_parameters")
    if isinstance(params, dict):
        theta = float(params.get("rope_theta", hf_config.get("rope_theta", 10000.0)))
        return theta, dict(params)
    scaling = dict(hf_config.get("rope_scaling") or {})
    return float(hf_config.get("rope_theta", 10000.0)), scaling


def _llama3_inv_freq(inv_freq: torch.Tensor, s: dict[str, Any]) -> torch.Tensor:
    factor, low, high = float(s["factor"]), float(s.get("low_freq_factor", 1.0)), float(s.get("high_freq_factor", 4.0))
    old_len = float(s["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    SUPPORTED = ("default", "linear", "llama3")

    def __init__(self, head_dim: int, max_position: int, hf_config: dict[str, Any]) -> None:
        super().__init__()
        theta, scaling = rope_parameters(hf_config)
        rope_type = scaling.get("rope_type", scaling.get("type", "default")) or "default"
        if rope_type not in self.SUPPORTED:
            raise UnsupportedModelError(f"rope scaling {rope_type!r} is not supported; supported: {self.SUPPORTED}")
        if hf_config.get("partial_rotary_factor", 1.0) != 1.0:
            raise UnsupportedModelError("partial rotary embeddings are not supported")
        self.head_dim = head_dim
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        positions = torch.arange(max_position, dtype=torch.float64)
        if rope_type == "linear":
            positions = positions / float(scaling["factor"])
        elif rope_type == "llama3":
            inv_freq = _llama3_inv_freq(inv_freq, scaling)
        freqs = torch.outer(positions, inv_freq)
        cache = torch.cat((freqs.cos(), freqs.sin()), dim=-1).float()
        self.register_buffer("cos_sin_cache", cache, persistent=False)

    def rope(self, positions: torch.Tensor) -> Rope:
        """The rotation of these positions, for the attention layer to apply (with its cache write)."""
        return Rope(positions, self.cos_sin_cache)
