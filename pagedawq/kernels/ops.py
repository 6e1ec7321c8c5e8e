"""One entry point per small op: Triton kernels on CUDA, the torch reference elsewhere.

Model layers call these and never import a kernel directly. Setting ``PAGEDAWQ_DISABLE_TRITON=1``
forces the reference path everywhere (for debugging and A/B comparisons).
"""
from __future__ import annotations

import os

import torch

from pagedawq.kernels import reference
from pagedawq.kernels.split_k import SplitKPartials


def use_triton(x: torch.Tensor) -> bool:
    return x.is_cuda and os.environ.get("PAGEDAWQ_DISABLE_TRITON", "0") != "1"


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if use_triton(x):
        from pagedawq.kernels import fused_ops
        return fused_ops.rms_norm(x, weight, eps)
    return reference.rms_norm(x, weight, eps)


def fused_add_rms_norm(x: torch.Tensor | SplitKPartials, residual: torch.Tensor, weight: torch.Tensor, eps: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """x may be a GEMM's split-K partials (``pagedawq.kernels.split_k``), added in the same pass on CUDA."""
    if use_triton(residual):
        from pagedawq.kernels import fused_ops
        return fused_ops.fused_add_rms_norm(x, residual, weight, eps)
    return reference.fused_add_rms_norm(x.total() if isinstance(x, SplitKPartials) else x, residual, weight, eps)


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor,
                     head_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if use_triton(q):
        from pagedawq.kernels import fused_ops
        return fused_ops.rotary_embedding(positions, q, k, cos_sin_cache, head_size)
    return reference.rotary_embedding(positions, q, k, cos_sin_cache, head_size)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    if use_triton(x):
        from pagedawq.kernels import fused_ops
        return fused_ops.silu_and_mul(x)
    return reference.silu_and_mul(x)
