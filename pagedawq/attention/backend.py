"""Attention backends: how a layer writes new K/V into the paged cache and attends over it.

Every backend computes the same function (see ``metadata.py``); the torch one is the CPU path
and the reference, the Triton one is the GPU fast path. Backends are looked up by name so the
model code never imports a kernel.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch

from pagedawq.attention.metadata import AttentionMetadata
from pagedawq.kernels import ops


@dataclass(frozen=True)
class Rope:
    """The rotary embedding a layer's q and k still need (neox layout): token positions and the
    ``[max_position, D]`` cos/sin table. Handed to the backend so that it can rotate and write the
    keys to the cache in one pass."""
    positions: torch.Tensor
    cos_sin_cache: torch.Tensor

    def apply(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated ``q [T, Hq, D]``, ``k [T, Hkv, D]`` (in place on GPU)."""
        return ops.rotary_embedding(self.positions, q, k, self.cos_sin_cache, q.shape[-1])


class AttentionBackend(ABC):
    def __init__(self, max_model_len: int) -> None:
        self.max_model_len = max_model_len

    @abstractmethod
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                metadata: AttentionMetadata, scale: float, rope: Rope | None = None) -> torch.Tensor:
        """Rotate q and k by ``rope`` if given, write ``k, v [T, Hkv, D]`` into ``kv_cache`` at
        ``metadata.slot_mapping``, then return causal attention of ``q [T, Hq, D]`` over each
        sequence's cached context, ``[T, Hq, D]``."""

    def decode_graph_contexts(self, num_seqs: int, num_q_heads: int, num_kv_heads: int) -> tuple[int, ...]:
        """Context-length bounds, ascending and ending at ``max_model_len``, at which a decode graph
        of ``num_seqs`` sequences gets a capture of its own: a step replays the graph of the
        smallest bound that holds its longest sequence. One bound (one graph a batch size) unless a
        backend sizes its kernels by the context (the Triton one)."""
        return (self.max_model_len,)


_BACKENDS: dict[str, Callable[[int], AttentionBackend]] = {}


def register_backend(name: str) -> Callable:
    def wrap(factory: Callable[[int], AttentionBackend]) -> Callable[[int], AttentionBackend]:
        _BACKENDS[name] = factory
        return factory
    return wrap


def get_backend(name: str, max_model_len: int) -> AttentionBackend:
    # Importing the modules registers the backends they define.
    from pagedawq.attention import torch_backend  # noqa: F401
    if name == "triton":
        from pagedawq.attention import triton_backend  # noqa: F401
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose from {sorted(_BACKENDS)}")
    return _BACKENDS[name](max_model_len)
