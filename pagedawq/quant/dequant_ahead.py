"""Prefill-sized AWQ products: dequantize the next linear's weight while this one's GEMM runs.

At large M the AWQ product is "dequantize W, then a cuBLAS GEMM" (``awq_gemm`` path "dequant").
The dequantization is memory-bound (~90 us for a 4096 x 22016 layer on an H100) and the GEMM
compute-bound (250 us at 1024 tokens, 1 ms at 4096), so run back to back they add up to 0.7-0.9x of
fp16 speed, but on two streams the dequantization of linear i+1 hides under the GEMM of linear i.

The linears of a forward run in a fixed order. The order is learned from the first large-M forward
(layer ids as they are called, until one repeats); afterwards each large-M call checks that it is
the layer the previous call predicted. If it is, it waits for the prefetched weight; if not (a
different model path, another model in the process), it dequantizes synchronously and nothing is
lost but the overlap. Two weight buffers per device and dtype alternate: the side stream writes
buffer B only after the main stream's GEMM that last read B (an event), and the main stream reads
it only after the side stream's write (another event).
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

from pagedawq.kernels.awq_gemm import awq_dequantize, uses_dequant_path


class _Slot:
    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.free = torch.cuda.Event()     # recorded on the main stream after the last GEMM reading it
        self.ready = torch.cuda.Event()    # recorded on the side stream after it was filled
        self.owner: int | None = None      # id of the layer whose weight it holds (when ready)

    def view(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The buffer as ``layer``'s dense weight [K, N] in x's dtype (grown when too small)."""
        k, n = layer.qweight.shape[0], layer.qweight.shape[1] * 8
        if self.buffer is None or self.buffer.numel() < k * n:
            self.buffer = torch.empty(k * n, dtype=x.dtype, device=x.device)
        return self.buffer[:k * n].view(k, n)


class DequantAhead:
    """Per model: the learned order of its AWQ linears and the double-buffered prefetch."""

    def __init__(self) -> None:
        self.order: list[int] = []
        self.position: dict[int, int] = {}
        self.layers: dict[int, weakref.ref] = {}   # weak: the layers own the config that owns this
        self.learned = False
        self.expected: int | None = None    # id of the layer the last call prefetched
        self.slots: dict[tuple[torch.device, torch.dtype], list[_Slot]] = {}
        self.turn: dict[tuple[torch.device, torch.dtype], int] = {}
        self.stream: dict[torch.device, torch.cuda.Stream] = {}

    def matmul(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``x @ W(layer)`` for an M that takes the dequantize path, overlapping the next layer's
        dequantization with this GEMM."""
        key = id(layer)
        self._learn(key, layer)
        main = torch.cuda.current_stream(x.device)
        slots = self._slots(x)
        slot = next((s for s in slots if s.owner == key), None) if self.expected == key else None
        if slot is not None:
            main.wait_event(slot.ready)
            w = slot.view(layer, x)
        else:
            slot = self._take_slot(x)
            main.wait_event(slot.free)
            main.wait_event(slot.ready)   # a prefetch nobody used may still be writing it
            w = awq_dequantize(layer.qweight, layer.qzeros, layer.scales, x.dtype, out=slot.view(layer, x))
        slot.owner = None
        self.expected = None
        nxt = self._next(key)
        if nxt is not None and uses_dequant_path(x, nxt.qweight, nxt.scales):
            self._prefetch(nxt, x, other_than=slot)
        out = torch.matmul(x, w)
        slot.free.record(main)
        return out

    def _learn(self, key: int, layer: nn.Module) -> None:
        if self.learned:
            return
        if key in self.position:
            self.learned = True
            return
        self.position[key] = len(self.order)
        self.order.append(key)
        self.layers[key] = weakref.ref(layer)

    def _next(self, key: int) -> nn.Module | None:
        if not self.learned:
            return None
        i = self.position.get(key)
        if i is None or i + 1 >= len(self.order):
            return None   # the last linear of a forward: the next call may be anything
        return self.layers[self.order[i + 1]]()

    def _slots(self, x: torch.Tensor) -> list[_Slot]:
        k = (x.device, x.dtype)
        if k not in self.slots:
            self.slots[k] = [_Slot(), _Slot()]
            self.turn[k] = 0
        return self.slots[k]

    def _take_slot(self, x: torch.Tensor, other_than: _Slot | None = None) -> _Slot:
        k = (x.device, x.dtype)
        slots = self.slots[k]
        self.turn[k] ^= 1
        slot = slots[self.turn[k]]
        if slot is other_than:
            self.turn[k] ^= 1
            slot = slots[self.turn[k]]
        return slot

    def _prefetch(self, layer: nn.Module, x: torch.Tensor, other_than: _Slot) -> None:
        slot = self._take_slot(x, other_than)
        stream = self.stream.setdefault(x.device, torch.cuda.Stream(x.device))
        w = slot.view(layer, x)   # allocated (if at all) on the main stream, outside the side stream
        w.record_stream(stream)
        with torch.cuda.stream(stream):
            stream.wait_event(slot.free)
            awq_dequantize(layer.qweight, layer.qzeros, layer.scales, x.dtype, out=w)
            slot.ready.record(stream)
        slot.owner = id(layer)
        self.expected = id(layer)
