"""A GEMM output left as the fp32 partial sums of its K slices, for the consumer to add.

A split-K GEMM normally sums its slices itself: the last slice of each output tile to finish
reloads the others' partials and stores the total. At decode sizes that reduction is the tail of
the GEMM (H100, session 11: ~1.5 us a split-K GEMM, 7% of the 7B batch-1 decode step). The
row-parallel layers' outputs (o, down) only ever feed the fused residual add + RMSNorm, which reads
them once anyway, so those GEMMs can hand over their partials and the norm adds them while it
loads its input: no counter, fence or reload at the end of the GEMM.

Where the "wgmma_t" K slices sum as a thread-block cluster instead (``awq_wgmma_t.cluster_reduces``:
up to 32-token tiles in the one-warpgroup kernel, 64 in the warp-specialised K-phase kernel of one
channel group), the GEMM returns the sum even when partials were asked for: that was faster still
in decode (H100, session 12: 7B batch-1 graph 1863-1867 against 1901-1905 us; session 13: batch 64
even). Partials are handed over where the slices do not cluster (splits of 3 or 16, two channel
groups a CTA, larger token tiles).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SplitKPartials:
    """``slices`` [S, M, N] float32: slice s's partial sum of a GEMM output [M, N] in ``dtype``.

    The output is their sum in slice order in float32, rounded once to ``dtype``: what the GEMM's own
    reduction stores (``awq_wgmma_t._write_tile``), so a consumer that adds them gives the same bits
    as the GEMM would have."""
    slices: torch.Tensor
    dtype: torch.dtype

    def __post_init__(self) -> None:
        if self.slices.dim() != 3 or self.slices.dtype != torch.float32:
            raise ValueError(f"split-K partials are a float32 [S, M, N] tensor, got {self.slices.dtype} "
                             f"{tuple(self.slices.shape)}")

    @property
    def shape(self) -> torch.Size:
        return self.slices.shape[1:]

    @property
    def device(self) -> torch.device:
        return self.slices.device

    def total(self) -> torch.Tensor:
        """The output [M, N] in ``dtype`` (for consumers that cannot add the slices themselves)."""
        acc = torch.zeros(self.shape, dtype=torch.float32, device=self.device)
        for part in self.slices:
            acc += part
        return acc.to(self.dtype)
