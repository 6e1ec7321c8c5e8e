"""RMSNorm with the residual add fused in (one pass over the hidden state on GPU), and optionally
the tensor-parallel all-reduce of its input (one kernel for all three where the fast all-reduce
can take it)."""
from __future__ import annotations

import torch
from torch import nn

from pagedawq.distributed.parallel_state import all_reduce_add_rms_norm
from pagedawq.kernels import ops
from pagedawq.quant.base import set_weight_attrs


def _load_whole(param: torch.Tensor, loaded: torch.Tensor, shard_id=None) -> None:
    if param.shape != loaded.shape:
        raise ValueError(f"checkpoint tensor of shape {tuple(loaded.shape)} does not fit {tuple(param.shape)}")
    param.data.copy_(loaded.to(param.dtype))


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float, params_dtype: torch.dtype) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(hidden_size, dtype=params_dtype), requires_grad=False)
        set_weight_attrs(self.weight, dict(weight_loader=_load_whole))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None, all_reduce_x: bool = False):
        """``norm(x)``, or with a residual ``(norm(x + residual), x + residual)``. ``all_reduce_x``:
        x holds this rank's partial sums of a row-parallel layer (``reduce_results=False``), to be
        summed over the ranks first; only with a residual."""
        if residual is None:
            if all_reduce_x:
                raise ValueError("all_reduce_x needs a residual")
            return ops.rms_norm(x, self.weight, self.eps)
        if all_reduce_x:
            return all_reduce_add_rms_norm(x, residual, self.weight, self.eps)
        return ops.fused_add_rms_norm(x, residual, self.weight, self.eps)
