"""One host-to-device transfer per dtype for a step's integer inputs.

A step needs token ids, positions, KV slots, logit rows, query offsets, context lengths and block
tables on the device. Seven pageable ``tensor.to(device)`` copies cost tens of microseconds of
host time each, which at batch 1 is a visible share of a ~3 ms decode step. Here the parts of one
dtype are packed (numpy) into one pinned tensor and sent in one asynchronous copy; the device
tensors handed out are views of that one transfer. The pinned tensor comes from PyTorch's caching
host allocator, which does not hand the block out again before the copy that reads it has run
(the same mechanism the sampler's copies back to the host use).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class HostStaging:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pinned = device.type == "cuda"

    def upload(self, parts: Sequence[np.ndarray], dtype: torch.dtype) -> list[torch.Tensor]:
        """Device copies of ``parts`` (flat or 2-D integer arrays), in one transfer; shapes kept."""
        np_dtype = np.int64 if dtype == torch.int64 else np.int32
        flat = np.concatenate([np.ascontiguousarray(p, dtype=np_dtype).reshape(-1) for p in parts])
        host = torch.from_numpy(flat)
        dev = host.pin_memory().to(self.device, non_blocking=True) if self.pinned else host
        out, offset = [], 0
        for p in parts:
            n = int(np.prod(p.shape))
            out.append(dev[offset:offset + n].view(p.shape))
            offset += n
        return out
