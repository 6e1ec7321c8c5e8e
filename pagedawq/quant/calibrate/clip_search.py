"""AWQ's weight clipping search: per (output row, quantization group), the clipping range to keep.

Clamping a group's weights to ±(1 - k/20)·max|w| (k = 0..9, as AutoAWQ) trades the error of the
few clipped outliers for a finer rounding step on everything else. Each group's candidate is
judged by the error of its partial dot products over the calibration inputs,
``E[(x_g · (q_g - w_g))²] = Δ_g · G_g · Δ_gᵀ / n`` with ``G_g`` the group's diagonal block of
the input Gram matrix. That is exactly the error over *all* calibration tokens (AutoAWQ samples
512 of them) at a cost independent of their number. k = 0 (no clipping) is a candidate, so
clipping never increases this error.
"""
from __future__ import annotations

import torch

from pagedawq.quant.calibrate.errors import NonFiniteError
from pagedawq.quant.calibrate.rtn import WeightQuant
from pagedawq.quant.calibrate.walk import InputStats

N_GRID = 20
MAX_SHRINK = 0.5
_ROWS_PER_BATCH = 1024  # output rows searched at once: bounds the float64 temporaries


@torch.no_grad()
def search_clip(weight: torch.Tensor, stats: InputStats, wq: WeightQuant, where: str) -> torch.Tensor:
    """Best clipping bound per (row, group): ``[out, n_groups, 1]`` float32."""
    out_features, in_features = weight.shape
    g = wq.group_len(in_features)
    n_groups = in_features // g
    gram = stats.gram.to(weight.device)
    blocks = torch.stack([gram[i * g:(i + 1) * g, i * g:(i + 1) * g] for i in range(n_groups)])
    best_all = []
    for start in range(0, out_features, _ROWS_PER_BATCH):
        w = weight[start:start + _ROWS_PER_BATCH].float().reshape(-1, n_groups, g)
        org_max = w.abs().amax(dim=-1, keepdim=True)
        best_max = org_max.clone()
        best_err = torch.full(org_max.shape, float("inf"), dtype=torch.float64, device=w.device)
        for k in range(int(MAX_SHRINK * N_GRID)):
            max_val = org_max * (1 - k / N_GRID)
            clipped = torch.clamp(w, -max_val, max_val)
            delta = (wq.fake(clipped.reshape(w.shape[0], -1)).reshape(w.shape) - w).double()
            err = (torch.einsum("rgk,gkl->rgl", delta, blocks) * delta).sum(-1, keepdim=True)
            if not torch.isfinite(err).all():
                raise NonFiniteError(f"{where}: NaN/inf while searching the clipping range")
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_max = torch.where(better, max_val, best_max)
        best_all.append(best_max)
    return torch.cat(best_all, dim=0)


@torch.no_grad()
def apply_clip(linear: torch.nn.Linear, max_val: torch.Tensor) -> None:
    """Clamp each (row, group) of ``linear.weight`` to ±max_val."""
    w = linear.weight
    grouped = w.float().reshape(max_val.shape[0], max_val.shape[1], -1)
    m = max_val.to(w.device)
    linear.weight.copy_(torch.clamp(grouped, -m, m).reshape(w.shape))
