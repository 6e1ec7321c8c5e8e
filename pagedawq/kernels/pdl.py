"""Programmatic dependent launch (PDL, Hopper and later): overlap each kernel's start with the one before it.

At batch 1 a decode step is a chain of short kernels (norm -> qkv GEMM -> rotary/cache write ->
attention -> o GEMM -> add + norm -> gate_up GEMM -> SiLU -> down GEMM) in a CUDA graph, and each
launch waits for the previous kernel to finish before its blocks are even scheduled. With PDL a
kernel launched with the attribute (Triton's ``launch_pdl``, ``pdl_launch``) may be scheduled
once every block of the kernel before it has signalled ``griddepcontrol.launch_dependents``, and
then calls ``griddepcontrol.wait``, which returns once that kernel has finished and its writes are
visible:

* the small kernels (norms, SiLU, rotary + cache write, attention) do both at their start
  (``pdl_start``): their launch latency hides behind the kernel before them;
* the AWQ "wgmma_t" GEMM requests its first pipeline stages'
  weights before its wait (the weights do not depend on the previous kernel; x does), and signals
  its dependents only after its main loop: letting back-to-back GEMMs overlap whole made them
  slower in the kernel sweep (H200, 2026-11-26: e.g. 7B gate_up at M = 1 19.2 -> 24.3 us, M = 64
  31.8 -> 40.5 us).

Only launches of up to ``MAX_TOKENS`` tokens (rows, sequences) use it (``use_pdl``): the decode
steps of small batches, where launch latency is a large share of each kernel. Larger ones are
launched plainly: their grids are sized to fill each SM evenly, which blocks placed while the
kernel before still runs can undo (H100, 7B AWQ decode, benchmarks/RESULTS.md "Session 7":
with PDL at every size, batch 1 +5 to +12%, batch 16 -9 to +4%, batch 64 -2 to -9%; as here,
batch 1 +16%, batch 16 +4%, batch 64 +1%).

A kernel launched with the attribute must wait before it touches memory the previous kernels
write; every kernel launched so here does. Kernels launched without it (torch's, cuBLAS) wait for
the previous kernel to finish as always. CUDA graphs keep the dependency as a programmatic edge.
``PAGEDAWQ_DISABLE_PDL=1`` launches everything plainly, for A/B runs (read once per process and
device: ``pdl_enabled.cache_clear()`` re-reads it).
"""
from __future__ import annotations

from functools import lru_cache

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from pagedawq.kernels.interpreter import compiled_sm90


@lru_cache(maxsize=None)
def pdl_enabled(device: torch.device) -> bool:
    """Whether kernels on ``device`` use PDL: a CUDA GPU of compute capability 9 or later, not under
    the Triton interpreter, and not turned off by ``PAGEDAWQ_DISABLE_PDL=1``."""
    return compiled_sm90(device, "PAGEDAWQ_DISABLE_PDL")


MAX_TOKENS = 16


def use_pdl(device: torch.device, tokens: int) -> bool:
    """Whether a launch over ``tokens`` tokens on ``device`` uses PDL (its kernel's ``PDL`` argument)."""
    return tokens <= MAX_TOKENS and pdl_enabled(device)


def launch_options(pdl: bool) -> dict:
    """Launch keywords of a Triton kernel that starts with ``pdl_start(PDL)``."""
    return {"launch_pdl": True} if pdl else {}


def pdl_launch(device: torch.device, tokens: int) -> dict:
    """The ``PDL`` argument and the launch keywords of a kernel over ``tokens`` tokens on ``device``."""
    pdl = use_pdl(device, tokens)
    return {"PDL": pdl, **launch_options(pdl)}


@triton.jit
def pdl_start(PDL: tl.constexpr):
    """First statement of a kernel launched with ``pdl_launch``'s keywords, where ``PDL`` (``pdl_enabled`` of
    its device): let the next kernel be scheduled, then wait for the previous one."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()


@triton.jit
def pdl_trigger(PDL: tl.constexpr):
    """First statement, instead of ``pdl_start``, of a kernel launched with ``pdl_launch``'s keywords
    that polls for its inputs itself and must not wait for the previous kernel to finish: only lets
    the next kernel be scheduled."""
    if PDL:
        gdc_launch_dependents()
