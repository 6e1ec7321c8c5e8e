"""AWQ int4 weights (AutoAWQ GEMM layout) as a pluggable linear method.

On CUDA the layer runs the Triton int4 GEMM; elsewhere it dequantizes once at load time and
multiplies in the activation dtype (the CPU path, and numerically the reference for the kernel).
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Callable

import torch
from torch import nn

from pagedawq.errors import PagedAWQError
from pagedawq.kernels.one_shot_allreduce import PushedOutput, PushTarget
from pagedawq.kernels.split_k import SplitKPartials
from pagedawq.quant.base import LinearMethod, QuantConfig, set_weight_attrs
from pagedawq.quant.pack import PACK_FACTOR, dequantize_awq


class AWQConfigError(PagedAWQError, ValueError):
    """A checkpoint's AWQ quantization_config, or a layer's shape, that this engine cannot run."""


class AWQConfig(QuantConfig):
    name = "awq"

    def __init__(self, weight_bits: int, group_size: int, zero_point: bool,
                 modules_to_not_convert: list[str] | None = None) -> None:
        if weight_bits != 4:
            raise AWQConfigError(f"only 4-bit AWQ is supported, the checkpoint says bits={weight_bits}")
        if group_size != -1 and group_size <= 0:
            raise AWQConfigError(f"AWQ group_size must be positive or -1, got {group_size}")
        self.weight_bits = weight_bits
        self.group_size = group_size
        self.zero_point = zero_point
        self.modules_to_not_convert = list(modules_to_not_convert or [])

    def __repr__(self) -> str:
        return (f"AWQConfig(bits={self.weight_bits}, group_size={self.group_size}, "
                f"zero_point={self.zero_point}, modules_to_not_convert={self.modules_to_not_convert})")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "AWQConfig":
        method = str(config.get("quant_method", "awq")).lower()
        if method != "awq":
            raise AWQConfigError(f"expected quant_method 'awq', got {method!r}")
        version = str(config.get("version", "gemm")).lower()
        if version != "gemm":
            raise AWQConfigError(f"AWQ version {version!r} is not supported (only the 'gemm' layout); "
                                 "re-export the checkpoint with version='gemm'")
        bits = config.get("bits", config.get("w_bit"))
        group = config.get("group_size", config.get("q_group_size"))
        if bits is None or group is None:
            raise AWQConfigError(f"AWQ quantization_config needs 'bits' and 'group_size', got {config}")
        return cls(int(bits), int(group), bool(config.get("zero_point", True)),
                   config.get("modules_to_not_convert"))

    def get_linear_method(self, prefix: str) -> LinearMethod:
        from pagedawq.quant.unquantized import UnquantizedLinearMethod
        if any(name and name in prefix for name in self.modules_to_not_convert):
            return UnquantizedLinearMethod()
        return AWQLinearMethod(self)

    def check_input_split(self, prefix: str, input_size: int, input_size_per_partition: int) -> None:
        if isinstance(self.get_linear_method(prefix), AWQLinearMethod):
            _groups_per_rank(self.group_size, input_size, input_size_per_partition, prefix)

    def supported_dtypes(self) -> list[torch.dtype]:
        return [torch.float16, torch.bfloat16, torch.float32]


def _groups_per_rank(group_size: int, input_size: int, input_size_per_partition: int, prefix: str) -> int:
    """How many quantization groups a rank's slice of a layer's input features holds. It must be a
    whole number: each group has one row of scales and zeros, which cannot be cut between ranks.
    Per-channel weights (group -1) have one row for the whole input, which every rank keeps."""
    if group_size == -1:
        return 1
    if input_size_per_partition % group_size:
        raise AWQConfigError(
            f"AWQ group_size {group_size} does not divide {prefix or 'this layer'}'s input features "
            f"per rank ({input_size_per_partition} of {input_size}); use a group size that divides it "
            "or a tensor_parallel_size that splits the layer into whole groups")
    return input_size_per_partition // group_size


def _keep_only_shapes(layer: nn.Module) -> None:
    """Free a repacked layer's checkpoint tensors, so its weights are held once: kept beside the
    repacked copy they doubled the weight memory (a 70B AWQ model, 36 GiB of weights, ran out of
    memory on one 80 GB H100). Meta tensors of the same shapes stay for the code that reads
    shapes; a call that a path other than "wgmma_t" serves rebuilds the tensors
    (``awq_gemm.checkpoint_tensors``)."""
    for name in ("qweight", "qzeros", "scales"):
        t = getattr(layer, name)
        setattr(layer, name, nn.Parameter(torch.empty_like(t, device="meta"), requires_grad=False))


def _layer_shape(layer: nn.Module) -> tuple[int, int, int]:
    """(N, K, group size) of an AWQ layer's shard, from its checkpoint tensors' shapes (meta
    tensors where the weights are held repacked)."""
    k = layer.qweight.shape[0]
    return layer.qweight.shape[1] * PACK_FACTOR, k, k // layer.scales.shape[0]


class AWQLinearMethod(LinearMethod):
    def __init__(self, config: AWQConfig) -> None:
        self.config = config

    def create_weights(self, layer: nn.Module, input_size_per_partition: int,
                       output_partition_sizes: list[int], input_size: int, output_size: int,
                       params_dtype: torch.dtype, weight_loader: Callable) -> None:
        n_groups = _groups_per_rank(self.config.group_size, input_size, input_size_per_partition,
                                    getattr(layer, "prefix", ""))
        for size in output_partition_sizes:
            if size % PACK_FACTOR:
                raise AWQConfigError(f"AWQ output features must be multiples of {PACK_FACTOR}, got {size}")
        out = sum(output_partition_sizes)
        # Per-channel scales (group -1) cover the whole input: every rank keeps the full row.
        shard_input = self.config.group_size != -1
        packed = dict(output_dim=1, packed_dim=1, packed_factor=PACK_FACTOR, weight_loader=weight_loader)
        qweight = nn.Parameter(torch.empty(input_size_per_partition, out // PACK_FACTOR, dtype=torch.int32),
                               requires_grad=False)
        set_weight_attrs(qweight, dict(input_dim=0, **packed))
        qzeros = nn.Parameter(torch.empty(n_groups, out // PACK_FACTOR, dtype=torch.int32), requires_grad=False)
        set_weight_attrs(qzeros, dict(input_dim=0 if shard_input else None, **packed))
        scales = nn.Parameter(torch.empty(n_groups, out, dtype=params_dtype), requires_grad=False)
        set_weight_attrs(scales, dict(input_dim=0 if shard_input else None, output_dim=1,
                                      weight_loader=weight_loader))
        layer.register_parameter("qweight", qweight)
        layer.register_parameter("qzeros", qzeros)
        layer.register_parameter("scales", scales)

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        if layer.qweight.device.type != "cuda":
            # CPU: dequantize once; the int4 tensors stay for inspection and re-export.
            layer.dequantized_weight = dequantize_awq(layer.qweight.data, layer.qzeros.data,
                                                      layer.scales.data, layer.scales.dtype)
            return
        # Hopper: the weights in the transposed kernel's register layout, which serves every call
        # of an fp16 model. A gate/up layer whose output only feeds silu_and_mul gets them with the
        # channels ordered for the fused epilogue (which adds no bias).
        from pagedawq.kernels.awq_gemm import repack_for_wgmma_t
        fused = getattr(layer, "feeds_silu_and_mul", False) and getattr(layer, "bias", None) is None
        repacked = repack_for_wgmma_t(layer.qweight.data, layer.qzeros.data, layer.scales.data, silu_and_mul=fused)
        layer.wgmma_t_weights, layer.wgmma_t_silu_weights = (None, repacked) if fused else (repacked, None)
        if repacked is not None:
            _keep_only_shapes(layer)

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if x.is_cuda:
            from pagedawq.kernels.awq_gemm import awq_gemm, checkpoint_tensors
            weights = layer.qweight, layer.qzeros, layer.scales
            if layer.wgmma_t_silu_weights is not None:   # a gate/up layer called without its activation
                weights = checkpoint_tensors(*weights, layer.wgmma_t_silu_weights, silu_and_mul=True)
            y = awq_gemm(x2, *weights, repacked=layer.wgmma_t_weights)
        else:
            y = x2 @ layer.dequantized_weight.to(x.dtype)
        if bias is not None:
            y = y + bias
        return y.reshape(*shape[:-1], y.shape[-1])

    def apply_split_k_partials(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor | SplitKPartials:
        repacked = getattr(layer, "wgmma_t_weights", None)
        if not x.is_cuda or x.dim() != 2 or repacked is None:
            return self.apply(layer, x)
        from pagedawq.kernels.awq_gemm import awq_gemm_split_k_partials
        return awq_gemm_split_k_partials(x, layer.qweight, layer.qzeros, layer.scales, repacked)

    def apply_pushed(self, layer: nn.Module, x: torch.Tensor, push: PushTarget) -> PushedOutput | None:
        repacked = getattr(layer, "wgmma_t_weights", None)
        if not x.is_cuda or x.dim() != 2 or repacked is None:
            return None
        from pagedawq.kernels.awq_gemm import awq_gemm_pushed
        return awq_gemm_pushed(x, layer.qweight, layer.qzeros, layer.scales, repacked, push)

    def launch_signature(self, layer: nn.Module, num_tokens: int, device: torch.device) -> Hashable:
        if device.type != "cuda":
            return None   # dequantized weight @ x: nothing compiled
        from pagedawq.kernels.awq_gemm import launch_signature
        n, k, group = _layer_shape(layer)
        silu = getattr(layer, "wgmma_t_silu_weights", None) is not None
        wgmma_t = silu or getattr(layer, "wgmma_t_weights", None) is not None
        return launch_signature(num_tokens, n, k, group, device, wgmma_t, silu)

    def apply_silu_and_mul(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
                           ) -> torch.Tensor:
        repacked = getattr(layer, "wgmma_t_silu_weights", None)
        if not x.is_cuda or bias is not None or repacked is None:
            return super().apply_silu_and_mul(layer, x, bias)
        from pagedawq.kernels.awq_gemm import awq_gemm_silu_and_mul
        shape = x.shape
        y = awq_gemm_silu_and_mul(x.reshape(-1, shape[-1]), layer.qweight, layer.qzeros, layer.scales, repacked)
        return y.reshape(*shape[:-1], y.shape[-1])


def awq_gemv_shapes(model: nn.Module) -> set[tuple[int, int, int]]:
    """(N, K, group) of every AWQ linear layer of ``model`` (this rank's shards) that runs the GEMV
    path at small M: the shapes whose launch configuration ``gemv_autotune`` can tune. Layers
    repacked for the "wgmma_t" path (Hopper, fp16) never do."""
    return {_layer_shape(m) for m in model.modules() if isinstance(getattr(m, "linear_method", None), AWQLinearMethod)
            and getattr(m, "wgmma_t_weights", None) is None and getattr(m, "wgmma_t_silu_weights", None) is None}
