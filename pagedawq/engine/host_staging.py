"""One host-to-device transfer per dtype for a step's integer inputs.

A step needs token ids, positions, KV slots, logit rows, query offsets, context lengths and block
tables on the device. Seven pageable ``tensor.to(device)`` copies cost tens of microseconds of
host time each, which at batch 1 is a visible share of a ~3 ms decode step. Here the parts of one
dtype are packed (numpy) into a pinned buffer and sent in one asynchronous copy; the device
tensors handed out are views of that one transfer.

Pinned buffers are reused, so each of the two alternating buffers of a dtype first waits for the
copy that last read it (an event): ranks that do not sample never otherwise synchronize with the
GPU and could get a step ahead of their own copies.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class HostStaging:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pinned = device.type == "cuda"
        self._buffers: dict[torch.dtype, list[torch.Tensor | None]] = {}
        self._events: dict[torch.dtype, list[torch.cuda.Event | None]] = {}
        self._turn: dict[torch.dtype, int] = {}

    def upload(self, parts: Sequence[np.ndarray], dtype: torch.dtype) -> list[torch.Tensor]:
        """Device copies of ``parts`` (flat or 2-D integer arrays), in one transfer; shapes kept."""
        np_dtype = np.int64 if dtype == torch.int64 else np.int32
        flat = np.concatenate([np.ascontiguousarray(p, dtype=np_dtype).reshape(-1) for p in parts])
        host = torch.from_numpy(flat)
        if self.pinned:
            host, event = self._stage(host, dtype)
            dev = host.to(self.device, non_blocking=True)
            event.record()
        else:
            dev = host.to(self.device)
        out, offset = [], 0
        for p in parts:
            n = int(np.prod(p.shape))
            out.append(dev[offset:offset + n].view(p.shape))
            offset += n
        return out

    def _stage(self, host: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.cuda.Event]:
        """``host`` copied into the next pinned buffer of ``dtype``, and that buffer's event."""
        buffers = self._buffers.setdefault(dtype, [None, None])
        events = self._events.setdefault(dtype, [None, None])
        turn = self._turn[dtype] = self._turn.get(dtype, 1) ^ 1
        if events[turn] is not None:
            events[turn].synchronize()
        buf = buffers[turn]
        if buf is None or buf.numel() < host.numel():
            buf = buffers[turn] = torch.empty(max(host.numel(), 1 << 14), dtype=dtype, pin_memory=True)
        staged = buf[:host.numel()]
        staged.copy_(host)
        if events[turn] is None:
            events[turn] = torch.cuda.Event()
        return staged, events[turn]
