"""The batches the engine runs at start-up so that no request compiles a kernel.

Triton compiles a kernel variant the first time a process launches it: one per config the AWQ
GEMMs pick for a token count, per Triton specialization of that count (1, a multiple of 16,
other), per PDL use. On the 13B shape that is 33-35 variants a GEMM between 1 and 8192 tokens.
Before this warm-up they were compiled inside requests, in the time to first token of the first
request of each new prefill size. A 1000-prompt run of the 13B on a machine with an empty Triton
cache gave 16.2-16.9 req/s, against 19.5-20.1 with the cache filled (session 36, 2×H200).

Each variant needs one launch, not a model's worth: every decoder layer has the same shapes, so
the warm-up runs its batches through the first two layers only (``first_layers``: the second
covers the path from one layer to the next and into the final norm). On the 13B shape (H100) its
~100 GEMM forwards (~180k tokens through 2 of 40 layers) cost about one 8192-token forward of the
whole model, as the profile run does; the ~40 attention batches are a few tokens each. Compiling
the variants takes longer on a fresh machine (the 13B on an H100: 48 variants in 43 s); Triton's
disk cache makes later start-ups load them instead (1.1 s).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Hashable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from pagedawq.kernels.jit_compiles import int_specialization
from pagedawq.kernels.pdl import MAX_TOKENS, use_pdl

logger = logging.getLogger(__name__)

# Every count up to here gets its own forward: the attention kernel's tile (query rows x heads
# <= 16) and the PDL launch change within it, and such forwards cost next to nothing.
ALL_COUNTS_UP_TO = 2 * MAX_TOKENS
# The attention batches: numbers of sequences and the last sequence's new tokens (the others have
# one, as decodes beside a prompt chunk), covering what the attention kernels specialize on: the
# number of sequences (1, a multiple of 16, other), the query tile (all single tokens: the decode
# kernel; a short chunk: small tiles; a long one: large) and PDL (<= 16 tokens or more).
SEQUENCE_COUNTS = (1, 2, 16, 17)
LAST_QUERY_LENS = (1, 2, 64)


@dataclass(frozen=True)
class WarmupBatch:
    """One warm-up forward: each sequence's new tokens, and the width of its block table, a kernel
    argument that Triton specializes on like any int (1, a multiple of 16, other)."""
    lens: tuple[int, ...]
    table_blocks: int


def _representative_layers(model: nn.Module) -> list[nn.Module]:
    """One linear layer of each kind and shape (every decoder layer repeats the same few)."""
    seen: dict[tuple, nn.Module] = {}
    for module in model.modules():
        method = getattr(module, "linear_method", None)
        if method is None:
            continue
        shapes = tuple((name, tuple(p.shape)) for name, p in module.named_parameters(recurse=False))
        seen.setdefault((type(module), type(method), shapes), module)
    return list(seen.values())


def token_signature(layers: list[nn.Module], num_tokens: int, device: torch.device) -> Hashable:
    """What decides the kernels a forward of ``num_tokens`` tokens compiles: the count's Triton
    specialization and PDL use, and each linear layer's ``LinearMethod.launch_signature``."""
    return (int_specialization(num_tokens), use_pdl(device, num_tokens),
            tuple(layer.linear_method.launch_signature(layer, num_tokens, device) for layer in layers))


def prefill_token_counts(model: nn.Module, max_tokens: int, device: torch.device) -> list[int]:
    """The token counts whose forwards compile every kernel variant a batch of 1..``max_tokens``
    tokens can launch: each count up to ``ALL_COUNTS_UP_TO``, then the smallest count of each
    ``token_signature``."""
    layers = _representative_layers(model)
    counts: dict[Hashable, int] = {}
    for m in range(1, max_tokens + 1):
        key = m if m <= ALL_COUNTS_UP_TO else token_signature(layers, m, device)
        counts.setdefault(key, m)
    return sorted(counts.values())


def _table_widths(needed: int) -> list[int]:
    """A block-table width of each of Triton's int classes that holds ``needed`` blocks."""
    widths = {needed, -(-needed // 16) * 16}
    if needed == 1 or needed % 16 == 0:
        widths.add(needed + 1)
    return sorted(widths)


def warmup_batches(counts: list[int], max_model_len: int, block_size: int) -> Iterator[WarmupBatch]:
    """The warm-up forwards: one sequence of each count in ``counts`` (several where a count exceeds
    ``max_model_len``), then the attention batches (``SEQUENCE_COUNTS`` x ``LAST_QUERY_LENS``) at
    block-table widths of each class."""
    for m in counts:
        lens = (max_model_len,) * (m // max_model_len) + ((m % max_model_len,) if m % max_model_len else ())
        yield WarmupBatch(lens, -(-max(lens) // block_size))
    for seqs in SEQUENCE_COUNTS:
        for last in LAST_QUERY_LENS:
            lens = (1,) * (seqs - 1) + (min(last, max_model_len),)
            for width in _table_widths(-(-max(lens) // block_size)):
                yield WarmupBatch(lens, width)


def _layer_stack(model: nn.Module) -> tuple[nn.Module, str] | None:
    """The module holding the model's decoder layers as an ``nn.ModuleList`` named ``layers``, and
    that name (the Llama family's ``model.layers``), or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers":
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            return parent, name.rsplit(".", 1)[-1]
    return None


@contextlib.contextmanager
def first_layers(model: nn.Module, count: int) -> Iterator[bool]:
    """Run ``model`` with only its first ``count`` decoder layers while open; yields whether it
    could (False: the model has no ``layers`` list and runs whole)."""
    stack = _layer_stack(model)
    if stack is None:
        yield False
        return
    parent, name = stack
    layers = getattr(parent, name)
    setattr(parent, name, layers[:count])
    try:
        yield True
    finally:
        setattr(parent, name, layers)


# Engines of this process in their start-up (warm-up and graph captures), whose compiles are due.
_STARTING_UP = [0]


@contextlib.contextmanager
def starting_up() -> Iterator[None]:
    """Marks an engine's start-up compiles, which another engine of the same process, already
    serving and watching for compiles, should not report as late."""
    _STARTING_UP[0] += 1
    try:
        yield
    finally:
        _STARTING_UP[0] -= 1


def warn_late_compile(kernel: str, module: str, variant: str) -> None:
    """What the engine does with a compile after its start-up (``JitCompiles(on_compile=...)``, open
    from then on): a warning for a pagedawq kernel, whose variant a request then waited for because
    the warm-up's batches miss its launch signature. Not for other code's kernels in the same
    process, nor during another engine's start-up."""
    if module.startswith("pagedawq.") and not _STARTING_UP[0]:
        logger.warning("kernel variant compiled in a request, after the start-up warm-up (a request waited "
                       "for it; the warm-up misses its launch signature): %s", variant[:500])
