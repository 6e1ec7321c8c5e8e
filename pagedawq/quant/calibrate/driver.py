"""The per-layer AWQ loop: statistics, scale search and fold, clip search, quantization.

Layers are handled one at a time on the device, in order, and each layer is calibrated on the
outputs of the already *quantized* layers before it, so that later layers learn to work with the
errors of earlier ones. Peak device memory is one decoder layer plus the calibration activations.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from pagedawq.quant.calibrate.clip_search import apply_clip, search_clip
from pagedawq.quant.calibrate.errors import NonFiniteError
from pagedawq.quant.calibrate.rtn import WeightQuant, quantize_linear
from pagedawq.quant.calibrate.scale_search import fold_scales, search_scales
from pagedawq.quant.calibrate.walk import (LAYERS_PREFIX, NO_CLIP_SUFFIXES, ScaleGroup,
                                           capture_first_layer_inputs, collect_input_stats,
                                           decoder_layers, run_layer)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationOptions:
    wq: WeightQuant
    duo_scaling: bool = True
    clip: bool = True
    modules_to_not_convert: tuple[str, ...] = ()

    def converts(self, full_name: str) -> bool:
        """Whether the linear ``full_name`` is quantized (substring match, as vLLM and AutoAWQ do)."""
        return not any(key in full_name for key in self.modules_to_not_convert)


def quantized_linear_names(layer: nn.Module, prefix: str, options: CalibrationOptions) -> list[str]:
    return [name for name, m in layer.named_modules()
            if isinstance(m, nn.Linear) and options.converts(f"{prefix}.{name}")]


@torch.no_grad()
def calibrate_layer(layer: nn.Module, prefix: str, x: torch.Tensor, layer_kwargs: dict[str, Any],
                    groups: tuple[ScaleGroup, ...], options: CalibrationOptions) -> dict[str, torch.Tensor]:
    """AWQ one decoder layer in place (its weights end up dequantized); return its checkpoint tensors."""
    quantized = quantized_linear_names(layer, prefix, options)
    stats = collect_input_stats(layer, x, layer_kwargs, groups)
    for group in groups:
        if not group.foldable(layer) or not all(n in quantized for n in group.linears):
            continue
        result = search_scales(layer, group, stats[group.prev], layer_kwargs, options.wq,
                               options.duo_scaling, where=prefix)
        gain = 100.0 * (1 - result.best_loss / result.rtn_loss) if result.rtn_loss > 0 else 0.0
        logger.info("%s %s -> %s: output MSE RTN %.4g, AWQ %.4g (-%.1f%%, ratio %s)", prefix, group.prev,
                    "/".join(n.rsplit(".", 1)[-1] for n in group.linears), result.rtn_loss,
                    result.best_loss, gain, result.ratio)
        if result.ratio is not None:
            fold_scales(layer, group, result.scales)
            stats[group.prev].rescale(result.scales)
    if options.clip:
        for group in groups:
            for name in group.linears:
                if name in quantized and not name.endswith(NO_CLIP_SUFFIXES):
                    linear = layer.get_submodule(name)
                    apply_clip(linear, search_clip(linear.weight, stats[group.prev], options.wq,
                                                   where=f"{prefix}.{name}"))
    tensors: dict[str, torch.Tensor] = {}
    for name in quantized:
        for key, t in quantize_linear(layer.get_submodule(name), options.wq).items():
            tensors[f"{prefix}.{name}.{key}"] = t
    for pname, p in layer.named_parameters():
        if pname.rsplit(".", 1)[0] in quantized:
            continue
        p.copy_(p.half())  # the checkpoint keeps it in fp16: later layers must see the same values
        tensors[f"{prefix}.{pname}"] = p.detach().to("cpu", torch.float16)
    return tensors


def non_layer_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Embeddings, final norm and (untied) lm_head in fp16; a tied lm_head is left out, as HF does."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == embed.data_ptr()
    out = {}
    for name, t in model.state_dict().items():
        if name.startswith(LAYERS_PREFIX + ".") or (tied and name == "lm_head.weight"):
            continue
        out[name] = t.detach().to("cpu", torch.float16)
    return out


@torch.no_grad()
def calibrate_model(model: nn.Module, blocks: torch.Tensor, groups: tuple[ScaleGroup, ...],
                    options: CalibrationOptions, device: torch.device) -> dict[str, torch.Tensor]:
    """AWQ every decoder layer of ``model`` (CPU-resident) on calibration ``blocks [n, seq]``.

    Returns all checkpoint tensors by HF name; the model is left holding the dequantized weights.
    """
    x, layer_kwargs = capture_first_layer_inputs(model, blocks, device)
    tensors: dict[str, torch.Tensor] = {}
    layers = decoder_layers(model)
    for i, layer in enumerate(tqdm(layers, desc="AWQ", unit="layer")):
        prefix = f"{LAYERS_PREFIX}.{i}"
        layer.to(device)
        tensors.update(calibrate_layer(layer, prefix, x, layer_kwargs, groups, options))
        x = run_layer(layer, x, layer_kwargs)
        if not torch.isfinite(x).all():
            raise NonFiniteError(f"{prefix}: NaN/inf in the quantized layer's output")
        layer.to("cpu")
    tensors.update(non_layer_tensors(model))
    return tensors
