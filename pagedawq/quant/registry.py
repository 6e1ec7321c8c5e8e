"""Quantization methods by name (the ``quantization=`` argument and ``quant_method`` in configs)."""
from __future__ import annotations

from typing import Any

from pagedawq.quant.awq import AWQConfig
from pagedawq.quant.base import QuantConfig

QUANT_CONFIGS: dict[str, type[QuantConfig]] = {"awq": AWQConfig}


def resolve_quant_config(requested: str | None, hf_config: dict[str, Any]) -> QuantConfig | None:
    """Pick the quantization of a checkpoint: what the user asked for, checked against what the
    checkpoint's ``quantization_config`` declares (auto-detected when ``requested`` is None)."""
    declared = hf_config.get("quantization_config")
    declared_method = str(declared.get("quant_method", "")).lower() if isinstance(declared, dict) else None
    if requested is None:
        if declared_method is None:
            return None
        requested = declared_method
    requested = requested.lower()
    if requested not in QUANT_CONFIGS:
        raise ValueError(f"unknown quantization {requested!r}; supported: {sorted(QUANT_CONFIGS)}")
    if declared_method is None:
        raise ValueError(f"quantization={requested!r} was requested but the model's config.json has no "
                         "quantization_config: pass quantization=None for a float checkpoint, or quantize "
                         "it first (python -m pagedawq.quant MODEL OUTPUT_DIR)")
    if declared_method != requested:
        raise ValueError(f"quantization={requested!r} was requested but the checkpoint is "
                         f"{declared_method!r}-quantized")
    return QUANT_CONFIGS[requested].from_config(declared)
