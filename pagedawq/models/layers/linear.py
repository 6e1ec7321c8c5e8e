"""Tensor-parallel linear layers whose weights come from a pluggable :class:`LinearMethod`.

The layers only know *how to shard* (column-parallel splits output features, row-parallel splits
input features and all-reduces the result); the method decides the tensors. Each parameter says
which of its dims are input/output features and whether they are packed, so one loader shards a
dense ``weight [N, K]`` and AWQ's ``qweight [K, N/8]`` / ``scales [K/G, N]`` alike.
"""
from __future__ import annotations

import torch
from torch import nn

from pagedawq.distributed.parallel_state import all_reduce, all_reduce_push_target, get_tp_rank, get_tp_size
from pagedawq.kernels.one_shot_allreduce import PushedOutput
from pagedawq.kernels.split_k import SplitKPartials
from pagedawq.quant.base import QuantConfig, set_weight_attrs
from pagedawq.quant.unquantized import UnquantizedLinearMethod


def _packed_units(param: torch.Tensor, dim: int, size: int) -> int:
    """Convert a count of features along ``dim`` into a count of ``param`` elements."""
    if getattr(param, "packed_dim", None) == dim:
        return size // param.packed_factor
    return size


def _copy_into(param: torch.Tensor, loaded: torch.Tensor) -> None:
    if param.shape != loaded.shape:
        raise ValueError(f"checkpoint tensor of shape {tuple(loaded.shape)} does not fit parameter "
                         f"of shape {tuple(param.shape)}")
    param.data.copy_(loaded.to(param.dtype))


class LinearBase(nn.Module):
    def __init__(self, quant_config: QuantConfig | None, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.linear_method = quant_config.get_linear_method(prefix) if quant_config else UnquantizedLinearMethod()
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_size()

    def _make_bias(self, size: int, dtype: torch.dtype, shard_output: bool) -> None:
        bias = nn.Parameter(torch.empty(size, dtype=dtype), requires_grad=False)
        set_weight_attrs(bias, dict(output_dim=0 if shard_output else None, weight_loader=self.weight_loader))
        self.register_parameter("bias", bias)


class ColumnParallelLinear(LinearBase):
    """``y = x W^T`` with the output features split across ranks (no communication).

    ``output_sizes`` lists the full output features of each fused sub-layer; shard ids passed to
    :meth:`weight_loader` index that list.
    """

    def __init__(self, input_size: int, output_sizes: list[int], *, bias: bool, params_dtype: torch.dtype,
                 quant_config: QuantConfig | None = None, prefix: str = "") -> None:
        super().__init__(quant_config, prefix)
        for size in output_sizes:
            if size % self.tp_size:
                raise ValueError(f"{prefix}: {size} output features do not split over {self.tp_size} ranks")
        self.input_size = input_size
        self.output_partition_sizes = [s // self.tp_size for s in output_sizes]
        self.linear_method.create_weights(self, input_size, self.output_partition_sizes, input_size,
                                          sum(output_sizes), params_dtype, self.weight_loader)
        if bias:
            self._make_bias(sum(self.output_partition_sizes), params_dtype, shard_output=True)
        else:
            self.bias = None

    def shard_location(self, shard_id) -> tuple[int, int, int]:
        """(offset in this rank's param, size, offset in the loaded tensor), in features."""
        offset = sum(self.output_partition_sizes[:shard_id])
        size = self.output_partition_sizes[shard_id]
        return offset, size, self.tp_rank * size

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard_id=None) -> None:
        dim = getattr(param, "output_dim", None)
        if dim is None:
            _copy_into(param, loaded)
            return
        if shard_id is None:
            size = param.shape[dim]
            _copy_into(param, loaded.narrow(dim, self.tp_rank * size, size))
            return
        offset, size, src_offset = self.shard_location(shard_id)
        offset, size, src_offset = (_packed_units(param, dim, v) for v in (offset, size, src_offset))
        _copy_into(param.data.narrow(dim, offset, size), loaded.narrow(dim, src_offset, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_method.apply(self, x, self.bias)


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several same-input projections in one matmul (Llama's gate_proj + up_proj).

    ``feeds_silu_and_mul``: the layer is a gate/up pair whose output the model only ever passes to
    ``silu_and_mul`` (it calls ``forward_silu_and_mul``), which lets the linear method compute both
    in one kernel, with the weights prepared for it at load time."""

    def __init__(self, input_size: int, output_sizes: list[int], *, bias: bool, params_dtype: torch.dtype,
                 quant_config: QuantConfig | None = None, prefix: str = "", feeds_silu_and_mul: bool = False) -> None:
        if feeds_silu_and_mul and (len(output_sizes) != 2 or output_sizes[0] != output_sizes[1]):
            raise ValueError(f"{prefix}: a gate/up pair has two equal output sizes, got {output_sizes}")
        self.feeds_silu_and_mul = feeds_silu_and_mul
        super().__init__(input_size, output_sizes, bias=bias, params_dtype=params_dtype,
                         quant_config=quant_config, prefix=prefix)

    def forward_silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        """``silu(gate) * up`` of ``forward(x) = [gate | up]``."""
        return self.linear_method.apply_silu_and_mul(self, x, self.bias)


class QKVParallelLinear(ColumnParallelLinear):
    """q, k and v projections in one matmul. With more ranks than KV heads, each KV head is
    replicated on ``tp_size // num_kv_heads`` ranks."""

    SHARDS = ("q", "k", "v")

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, *, bias: bool,
                 params_dtype: torch.dtype, quant_config: QuantConfig | None = None, prefix: str = "") -> None:
        tp = get_tp_size()
        if num_heads % tp:
            raise ValueError(f"{num_heads} attention heads do not split over {tp} ranks")
        self.num_heads = num_heads // tp
        self.num_kv_heads = max(1, num_kv_heads // tp)
        self.kv_replicas = max(1, tp // num_kv_heads)
        self.head_dim = head_dim
        q, kv = self.num_heads * head_dim * tp, self.num_kv_heads * head_dim * tp
        super().__init__(hidden_size, [q, kv, kv], bias=bias, params_dtype=params_dtype,
                         quant_config=quant_config, prefix=prefix)

    def shard_location(self, shard_id) -> tuple[int, int, int]:
        index = self.SHARDS.index(shard_id)
        offset = sum(self.output_partition_sizes[:index])
        size = self.output_partition_sizes[index]
        rank = self.tp_rank if shard_id == "q" else self.tp_rank // self.kv_replicas
        return offset, size, rank * size


class RowParallelLinear(LinearBase):
    """``y = x W^T`` with the input features split across ranks; partial sums are all-reduced.

    ``reduce_results=False`` returns each rank's partial sums instead, for a consumer that reduces
    them itself (the RMSNorm after a transformer block's o/down projection fuses the all-reduce
    with its residual add); only without a bias, which belongs after the reduction. On one rank
    those partial sums may be the split-K partials of the GEMM (``SplitKPartials``, which that
    RMSNorm adds too); on several, at decode sizes, already pushed by the GEMM into that
    all-reduce's receive slots (``PushedOutput``)."""

    def __init__(self, input_size: int, output_size: int, *, bias: bool, params_dtype: torch.dtype,
                 quant_config: QuantConfig | None = None, prefix: str = "", reduce_results: bool = True) -> None:
        super().__init__(quant_config, prefix)
        if input_size % self.tp_size:
            raise ValueError(f"{prefix}: {input_size} input features do not split over {self.tp_size} ranks")
        if bias and not reduce_results:
            raise ValueError(f"{prefix}: a bias needs reduce_results=True (it is added after the all-reduce)")
        self.reduce_results = reduce_results
        self.output_size = output_size
        self.input_size_per_partition = input_size // self.tp_size
        self.linear_method.create_weights(self, self.input_size_per_partition, [output_size], input_size,
                                          output_size, params_dtype, self.weight_loader)
        if bias:
            self._make_bias(output_size, params_dtype, shard_output=False)
        else:
            self.bias = None

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard_id=None) -> None:
        dim = getattr(param, "input_dim", None)
        if dim is None:
            _copy_into(param, loaded)
            return
        size = param.shape[dim]
        _copy_into(param, loaded.narrow(dim, self.tp_rank * size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor | SplitKPartials | PushedOutput:
        if not self.reduce_results:
            if self.tp_size == 1:
                return self.linear_method.apply_split_k_partials(self, x)
            push = all_reduce_push_target(x, self.output_size)
            pushed = None if push is None else self.linear_method.apply_pushed(self, x, push)
            return pushed if pushed is not None else self.linear_method.apply(self, x)
        y = self.linear_method.apply(self, x)
        y = all_reduce(y)
        return y if self.bias is None else y + self.bias
