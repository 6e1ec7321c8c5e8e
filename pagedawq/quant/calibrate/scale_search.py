"""AWQ's activation-aware scale search for one scaling group, and the exact fold of its result.

Salient input channels (large mean |x|) lose the most to rounding; multiplying them by s > 1 in
the weight, and dividing the producer's output by s, keeps the fp function unchanged while
shrinking their relative rounding error. The scales are ``s = x_mean^r / w_mean^(1-r)`` ("duo
scaling", as AutoAWQ; ``w_mean`` is the per-input-channel mean of |W| normalised within each
quantization group) or ``x_mean^r``, for r on a 20-point grid in [0, 1); the candidate whose
quantized group gives the smallest output MSE of ``group.inspect`` wins. The unscaled (plain RTN)
candidate is always measured too, both for the log and so that the search can never make a block
worse than RTN on the calibration set.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from pagedawq.quant.calibrate.errors import NonFiniteError
from pagedawq.quant.calibrate.rtn import WeightQuant
from pagedawq.quant.calibrate.walk import InputStats, ScaleGroup, forward_chunks

logger = logging.getLogger(__name__)

N_GRID = 20


@dataclass(frozen=True)
class ScaleResult:
    scales: torch.Tensor  # [in_features], float32; all ones if no candidate beat RTN
    ratio: float | None  # the winning exponent, None when the unscaled weights won
    rtn_loss: float
    best_loss: float


def weight_magnitude(weight: torch.Tensor, wq: WeightQuant) -> torch.Tensor:
    """Mean over output rows of |W| / max|W| within each quantization group: [in_features]."""
    w = weight.float().abs()
    g = wq.group_len(w.shape[1])
    grouped = w.reshape(-1, g)
    normalized = grouped / (grouped.amax(dim=1, keepdim=True) + 1e-6)
    return normalized.reshape(w.shape).mean(0)


def candidate_scales(x_mean: torch.Tensor, w_mean: torch.Tensor, ratio: float, duo_scaling: bool) -> torch.Tensor:
    """Scales for exponent ``ratio``, normalised so that max·min = 1 (keeps weights in range)."""
    if duo_scaling:
        s = x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)
    else:
        s = x_mean.pow(ratio)
    s = s.clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def _gram_loss(linear: nn.Linear, original: torch.Tensor, stats: InputStats) -> Callable[[], float]:
    """Output MSE of a lone linear from the input Gram matrix: trace(ΔW G ΔWᵀ) / (n · out)."""
    def loss() -> float:
        delta = (linear.weight.double() - original.double())
        return float(((delta @ stats.gram) * delta).sum()) / (stats.n_tokens * delta.shape[0])
    return loss


def _block_loss(module: nn.Module, x: torch.Tensor, kwargs: dict[str, Any]) -> Callable[[], float]:
    """Output MSE of a block (attention, MLP) against its output with the current fp weights."""
    target = torch.cat([y for _, y in forward_chunks(module, x, kwargs)], dim=0)

    def loss() -> float:
        total = 0.0
        for rows, y in forward_chunks(module, x, kwargs):
            total += float((y.float() - target[rows].float()).pow(2).sum(dtype=torch.float64))
        return total / target.numel()
    return loss


@torch.no_grad()
def search_scales(layer: nn.Module, group: ScaleGroup, stats: InputStats, layer_kwargs: dict[str, Any],
                  wq: WeightQuant, duo_scaling: bool, where: str) -> ScaleResult:
    """Grid-search the scales of ``group``; the layer's weights are left as they were."""
    linears = [layer.get_submodule(n) for n in group.linears]
    originals = [lin.weight.detach().clone() for lin in linears]
    x_mean = stats.abs_mean.to(originals[0].device)
    if not torch.isfinite(x_mean).all():
        raise NonFiniteError(f"{where}: NaN/inf in the input activations of {group.linears}")
    w_mean = weight_magnitude(torch.cat(originals, dim=0), wq)

    if group.inspect in group.linears:
        measure = _gram_loss(linears[0], originals[0], stats)
    else:
        assert stats.full is not None, "collect_input_stats keeps block inputs"
        kwargs = layer_kwargs if group.inspect_takes_layer_kwargs else {}
        measure = _block_loss(layer.get_submodule(group.inspect), stats.full, kwargs)

    def loss_with(scales: torch.Tensor) -> float:
        for lin, w0 in zip(linears, originals):
            w = w0.float() * scales
            lin.weight.copy_(wq.fake(w) / scales)
        value = measure()
        if not math.isfinite(value):
            raise NonFiniteError(f"{where}: NaN/inf output while searching scales for {group.linears}")
        return value

    history: list[float] = []
    try:
        ones = torch.ones_like(x_mean)
        rtn_loss = best_loss = loss_with(ones)
        best_scales, best_ratio = ones, None
        for i in range(N_GRID):
            ratio = i / N_GRID
            scales = candidate_scales(x_mean, w_mean, ratio, duo_scaling)
            if not torch.isfinite(scales).all():
                raise NonFiniteError(f"{where}: NaN/inf scales for {group.linears} at ratio {ratio}")
            value = loss_with(scales)
            history.append(value)
            if value < best_loss:
                best_loss, best_scales, best_ratio = value, scales, ratio
    finally:
        for lin, w0 in zip(linears, originals):
            lin.weight.copy_(w0)
    logger.debug("%s %s: losses over the ratio grid %s", where, group.prev, history)
    return ScaleResult(best_scales.float(), best_ratio, rtn_loss, best_loss)


@torch.no_grad()
def fold_scales(layer: nn.Module, group: ScaleGroup, scales: torch.Tensor) -> None:
    """Divide ``group.prev``'s output channels by ``scales`` and multiply the linears' inputs by them.

    Exact in real arithmetic: the layer computes the same function afterwards.
    """
    prev = layer.get_submodule(group.prev)
    s = scales.to(prev.weight.device, torch.float32)
    if isinstance(prev, nn.Linear):
        prev.weight.copy_(prev.weight.float() / s.view(-1, 1))
    elif prev.weight.dim() == 1:
        prev.weight.copy_(prev.weight.float() / s)
    else:
        raise TypeError(f"cannot fold scales into {type(prev).__name__} ({group.prev})")
    if getattr(prev, "bias", None) is not None:
        prev.bias.copy_(prev.bias.float() / s)
    for name in group.linears:
        lin = layer.get_submodule(name)
        lin.weight.copy_(lin.weight.float() * s.view(1, -1))
