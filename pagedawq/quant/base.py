"""The seam between model code and weight formats.

Models build their linear layers with a :class:`LinearMethod` obtained from a :class:`QuantConfig`;
they never mention quantization. A method creates the layer's parameters (tagging each with how
it is laid out, so one loader shards dense and packed weights alike), may repack them after
loading, and computes ``y = x @ W^T (+ b)`` (or, for a gate/up layer, ``silu(gate) * up`` of it).

Parameter attributes (set with :func:`set_weight_attrs`):
  ``input_dim`` / ``output_dim``: which tensor dim runs along the layer's input / output features;
  ``packed_dim`` / ``packed_factor``: the dim along which several codes share one element, and
  how many; ``weight_loader``: the callable that copies a checkpoint tensor (or one shard of a
  fused layer) into the parameter.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from pagedawq.kernels import ops
from pagedawq.kernels.one_shot_allreduce import PushedOutput, PushTarget
from pagedawq.kernels.split_k import SplitKPartials


def set_weight_attrs(param: torch.Tensor, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        if hasattr(param, key):
            raise AttributeError(f"parameter already has attribute {key!r}")
        setattr(param, key, value)


class LinearMethod(ABC):
    """How one linear layer stores its weight and multiplies by it."""

    @abstractmethod
    def create_weights(self, layer: nn.Module, input_size_per_partition: int,
                       output_partition_sizes: list[int], input_size: int, output_size: int,
                       params_dtype: torch.dtype, weight_loader: Callable) -> None:
        """Register the parameters on ``layer``. ``output_partition_sizes`` lists this rank's
        output features of each fused sub-layer (e.g. q, k, v)."""

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        """Repack or convert loaded parameters for the compute kernel (default: nothing)."""

    @abstractmethod
    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``x @ W^T + bias`` for ``x`` of shape [..., in_features]."""

    def apply_silu_and_mul(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
                           ) -> torch.Tensor:
        """``silu(gate) * up`` of a gate/up layer's output ``[gate | up] = x @ W^T + bias`` (a method
        may do both in one kernel; ``layer.feeds_silu_and_mul`` tells it so at load time)."""
        return ops.silu_and_mul(self.apply(layer, x, bias))

    def apply_pushed(self, layer: nn.Module, x: torch.Tensor, push: PushTarget) -> PushedOutput | None:
        """``x @ W^T`` of a row-parallel layer pushed by its kernel into the receive slots of the
        fused all-reduce + residual add + RMSNorm after it (``one_shot_allreduce.PushTarget``), or
        None where this method's kernel cannot (the default): the layer then computes the output."""
        return None

    def launch_signature(self, layer: nn.Module, num_tokens: int, device: torch.device) -> Hashable:
        """What decides the compiled kernels this method launches for ``num_tokens`` rows of x on
        ``layer``: token counts of one signature run the same compiled kernels (the engine's warm-up
        runs one count of each, ``pagedawq.engine.warmup``). The default, for methods that compile
        nothing per token count (torch matmul), is None."""
        return None

    def apply_split_k_partials(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor | SplitKPartials:
        """``x @ W^T`` for a consumer that adds split-K partials itself (the fused residual add +
        RMSNorm after a row-parallel layer on one rank): a method whose kernel splits K may return
        its slices' partials (``pagedawq.kernels.split_k``) and skip its own reduction."""
        return self.apply(layer, x)


class QuantConfig(ABC):
    """A weight format read from a checkpoint's ``quantization_config``."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_config(cls, config: dict[str, Any]) -> "QuantConfig":
        """Build and validate from the HF ``quantization_config`` dict."""

    @abstractmethod
    def get_linear_method(self, prefix: str) -> LinearMethod:
        """The method for the linear layer named ``prefix`` (e.g. ``model.layers.0.mlp.down_proj``)."""

    def check_input_split(self, prefix: str, input_size: int, input_size_per_partition: int) -> None:
        """Raise a clear error where the linear layer ``prefix`` cannot keep ``input_size_per_partition``
        of its ``input_size`` input features on each rank in this format. The engine asks this for
        every layer before any rank builds the model, so a bad set-up fails in the caller rather
        than inside a worker. Default: any split."""

    def supported_dtypes(self) -> list[torch.dtype]:
        return [torch.float16, torch.bfloat16, torch.float32]
