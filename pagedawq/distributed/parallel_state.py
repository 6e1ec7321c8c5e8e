"""Tensor-parallel rank, size and process group of this process.

A process that never calls :func:`init_tensor_parallel` is rank 0 of a group of 1, so single-device
code paths need no special cases.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pagedawq.kernels import greedy_exchange, ops
from pagedawq.kernels.one_shot_allreduce import PushedOutput, PushTarget
from pagedawq.kernels.split_k import SplitKPartials

logger = logging.getLogger(__name__)


@dataclass
class _TPState:
    rank: int = 0
    size: int = 1
    group: object | None = None
    small_allreduce: object | None = None   # SymmMemAllReduce, when it is available


_state = _TPState()


def init_tensor_parallel(rank: int, world_size: int, init_method: str, backend: str) -> None:
    """Join the tensor-parallel group (NCCL on GPU, gloo on CPU); every rank calls this."""
    if world_size > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
        _state.group = dist.group.WORLD
    _state.rank, _state.size = rank, world_size
    logger.debug("tensor-parallel rank %d/%d (%s)", rank, world_size, backend)


def enable_fast_small_allreduce(device: torch.device, dtype: torch.dtype) -> None:
    """On CUDA with several ranks, route small all-reduces of ``dtype`` through symmetric memory
    when this machine supports it (collective: every rank calls it)."""
    if _state.size > 1 and device.type == "cuda":
        from pagedawq.distributed.symm_mem_allreduce import try_create
        _state.small_allreduce = try_create(_state.group, device, dtype)


def destroy_tensor_parallel() -> None:
    _state.small_allreduce = None
    if _state.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
    _state.rank, _state.size, _state.group = 0, 1, None


def get_tp_rank() -> int:
    return _state.rank


def get_tp_size() -> int:
    return _state.size


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over the tensor-parallel ranks (in place); a no-op on one rank."""
    if _state.size > 1:
        fast = _state.small_allreduce
        if fast is not None and fast.can_reduce(x):
            return fast(x)
        dist.all_reduce(x, group=_state.group)
    return x


def all_reduce_push_target(x: torch.Tensor, output_size: int) -> PushTarget | None:
    """Where a row-parallel GEMM of input ``x`` [rows, K] and ``output_size`` outputs may push its
    output for the fused all-reduce + residual add + RMSNorm after it (``RowParallelLinear``): the
    symmetric-memory all-reduce's slots where that fused kernel takes such an output, else None.
    Each rank decides for itself: a rank whose GEMM did not push pushes in the fused kernel, and
    the peers receive the same values either way."""
    fast = _state.small_allreduce
    if fast is None or x.dim() != 2:
        return None
    return fast.push_target(x.shape[0], output_size, x.dtype)


def all_reduce_add_rms_norm(x: torch.Tensor | SplitKPartials | PushedOutput, residual: torch.Tensor,
                            weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual' = all_reduce(x) + residual``; returns ``(rms_norm(residual') * weight, residual')``.

    What follows every row-parallel layer of a transformer block, in one kernel where the
    symmetric-memory all-reduce can fuse it (decode-sized x on CUDA), else the all-reduce and then
    the fused add + RMSNorm. On one rank x may be a GEMM's split-K partials, which that norm adds;
    on several an output its GEMM pushed into the fused kernel's receive slots
    (``all_reduce_push_target``)."""
    if isinstance(x, PushedOutput):
        return _state.small_allreduce.pushed_add_rms_norm(x, residual, weight, eps)
    if _state.size == 1:
        return ops.fused_add_rms_norm(x, residual, weight, eps)
    if isinstance(x, SplitKPartials):
        x = x.total()
    fast = _state.small_allreduce
    if fast is not None and fast.can_fuse_add_rms_norm(x):
        return fast.add_rms_norm(x, residual, weight, eps)
    return ops.fused_add_rms_norm(all_reduce(x), residual, weight, eps)


def embedding_rms_norm(ids: torch.Tensor, shard: torch.Tensor, vocab_start: int, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(rms_norm(h) * weight, h)`` for ``h`` the vocabulary-parallel embedding of ``ids`` (this rank's
    ``shard`` holds the token ids from ``vocab_start``) in one kernel, where the symmetric-memory
    all-reduce can fuse it (decode-sized batches on CUDA, several ranks); else None, and the caller
    looks up, all-reduces and normalizes apart. At batch 1 that one kernel stands for the masked
    lookup's seven small kernels, the all-reduce and the first norm at the head of every decode step."""
    fast = _state.small_allreduce
    if fast is None or not fast.can_fuse_embedding_rms_norm(ids.shape[0], shard):   # (None on one rank)
        return None
    return fast.embedding_rms_norm(ids, shard, vocab_start, weight, eps)


def broadcast_from_rank0(x: torch.Tensor) -> torch.Tensor:
    """Overwrite ``x`` on every rank with rank 0's ``x`` (in place); a no-op on one rank."""
    if _state.size > 1:
        dist.broadcast(x, src=0, group=_state.group)
    return x


def greedy_tokens(logits: torch.Tensor, start: int) -> torch.Tensor:
    """The greedy token (int64 [rows]) of each row of vocabulary-parallel ``logits`` [rows, V_rank]
    (this rank's columns are tokens ``start ..``): what the argmax of the all-gathered logits gives,
    the same on every rank, without gathering them. Each rank's best (logit, token) meets the
    others' in the symmetric-memory exchange where it runs, else in a MAX all-reduce
    (``pagedawq.kernels.greedy_exchange``). On one GPU it is one argmax kernel."""
    if _state.size == 1 and logits.is_cuda:
        return greedy_exchange.greedy_rows(logits, start)
    fast = _state.small_allreduce
    if fast is not None and fast.can_exchange_greedy(logits):
        return fast.greedy_tokens(logits, start)
    keys = greedy_exchange.row_keys(logits, start)
    if _state.size > 1:
        dist.all_reduce(keys, op=dist.ReduceOp.MAX, group=_state.group)
    return greedy_exchange.tokens_of_keys(keys)


def all_gather(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Concatenate every rank's ``x`` along ``dim``; a no-op on one rank."""
    if _state.size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_state.size)]
    dist.all_gather(parts, x.contiguous(), group=_state.group)
    return torch.cat(parts, dim=dim)
