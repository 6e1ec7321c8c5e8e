"""HF ``architectures`` names -> native model classes."""
from __future__ import annotations

from typing import Any

from torch import nn

from pagedawq.errors import UnsupportedModelError
from pagedawq.models.llama import LlamaForCausalLM, Qwen2ForCausalLM

MODEL_REGISTRY: dict[str, type[nn.Module]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": Qwen2ForCausalLM,
}


def check_architecture(hf_config: dict[str, Any]) -> str:
    """The first architecture of the config that is implemented here, or a clear error."""
    archs = hf_config.get("architectures") or []
    for arch in archs:
        if arch in MODEL_REGISTRY:
            return arch
    raise UnsupportedModelError(f"model architecture {archs or '(none in config.json)'} is not supported; "
                                f"supported architectures: {sorted(MODEL_REGISTRY)}")


def get_model_class(architecture: str) -> type[nn.Module]:
    return MODEL_REGISTRY[architecture]
