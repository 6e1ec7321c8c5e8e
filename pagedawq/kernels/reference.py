"""Plain-torch definitions of the small fused ops: the CPU path and the reference for Triton.

Each op computes in float32 and returns the input dtype, as the GPU kernels do.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (out * weight.float()).to(x.dtype)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual = x + residual``; return ``(rms_norm(residual), residual)``."""
    residual = (x.float() + residual.float()).to(x.dtype)
    return rms_norm(residual, weight, eps), residual


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor,
                     head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Neox-style rotary embedding (HF Llama's ``rotate_half``) on ``q [T, Hq*D]``, ``k [T, Hkv*D]``.

    ``cos_sin_cache [max_position, D]`` holds cos in its first D/2 columns and sin in the rest.
    """
    cos, sin = cos_sin_cache[positions.long()].float().chunk(2, dim=-1)  # [T, D/2] each

    def rotate(x: torch.Tensor) -> torch.Tensor:
        xs = x.float().view(x.shape[0], -1, head_size)
        x1, x2 = xs[..., : head_size // 2], xs[..., head_size // 2:]
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).view_as(x).to(x.dtype)

    return rotate(q), rotate(k)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(x[..., :I]) * x[..., I:]`` for ``x [..., 2I]`` (the fused gate_up output)."""
    gate, up = x.float().chunk(2, dim=-1)
    return (F.silu(gate) * up).to(x.dtype)
