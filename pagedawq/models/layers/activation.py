"""SwiGLU's gate: ``silu(gate) * up`` on the fused gate_up projection's output."""
from __future__ import annotations

import torch
from torch import nn

from pagedawq.kernels import ops


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.silu_and_mul(x)
