"""Round-to-nearest quantization of a layer's linears into AutoAWQ GEMM checkpoint tensors.

This is the last step of AWQ (after scaling and clipping) and, applied alone, the RTN baseline.
The linear's weight is replaced by the dequantized checkpoint tensors, so that everything computed
afterwards (the next layer's calibration inputs, an RTN evaluation) sees exactly the function the
int4 checkpoint encodes, fp16 scale rounding included.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pagedawq.quant.calibrate.walk import decoder_layers
from pagedawq.quant.pack import dequantize_awq, fake_quantize, pack_awq_gemm, quantize_weight


@dataclass(frozen=True)
class WeightQuant:
    """How weights are rounded: bits, group size along the input (-1: one group per row), zero point."""

    w_bit: int = 4
    group_size: int = 128
    zero_point: bool = True

    def group_len(self, in_features: int) -> int:
        return in_features if self.group_size == -1 else self.group_size

    def fake(self, w: torch.Tensor) -> torch.Tensor:
        """Quantize-dequantize ``w [out, in]`` (used inside the searches)."""
        return fake_quantize(w, self.w_bit, self.group_size, self.zero_point)


@torch.no_grad()
def quantize_linear(linear: nn.Linear, wq: WeightQuant) -> dict[str, torch.Tensor]:
    """Quantize ``linear`` in place; return its checkpoint tensors (``qweight``, ``qzeros``, ``scales``
    and ``bias`` if any), on CPU."""
    codes, scales, zeros = quantize_weight(linear.weight.float(), wq.w_bit, wq.group_size, wq.zero_point)
    qweight, qzeros, scales16 = pack_awq_gemm(codes, scales, zeros)
    linear.weight.copy_(dequantize_awq(qweight, qzeros, scales16, torch.float32).t())
    tensors = {"qweight": qweight.cpu(), "qzeros": qzeros.cpu(), "scales": scales16.cpu()}
    if linear.bias is not None:
        linear.bias.copy_(linear.bias.half())  # the checkpoint stores it in fp16
        tensors["bias"] = linear.bias.detach().to("cpu", torch.float16)
    return tensors


@torch.no_grad()
def rtn_quantize_model(model: nn.Module, wq: WeightQuant) -> nn.Module:
    """The RTN baseline, in place: what a round-to-nearest checkpoint in the same format encodes.

    Every decoder-layer linear is quantized (no scaling, no clipping); all other parameters are
    rounded to fp16, as the checkpoint stores them.
    """
    quantized = set()
    for layer in decoder_layers(model):
        for m in layer.modules():
            if isinstance(m, nn.Linear):
                quantize_linear(m, wq)
                quantized.add(id(m.weight))
    for p in model.parameters():
        if id(p) not in quantized:
            p.copy_(p.half())
    return model
