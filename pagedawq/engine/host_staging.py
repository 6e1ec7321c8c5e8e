"""One host-to-device transfer for a step's integer inputs.

A step needs token ids, positions, KV slots, logit rows, query offsets, context lengths and block
tables on the device. Seven pageable ``tensor.to(device)`` copies cost tens of microseconds of
host time each, which at batch 1 is a visible share of a ~3 ms decode step. Here the parts of one
dtype are packed (numpy) into one pinned tensor and sent in one asynchronous copy; the device
tensors handed out are views of that one transfer. The pinned tensor comes from PyTorch's caching
host allocator, which does not hand the block out again before the copy that reads it has run
(the same mechanism the sampler's copies back to the host use).

A step replayed from a CUDA graph goes further (``InputArena``): its values land in the graph's
own input buffers in one copy, with no device-to-device copies after it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pagedawq.attention.metadata import AttentionMetadata


@dataclass
class StepArrays:
    """A step's inputs on the host, flat over its tokens or one row per sequence (the layout of
    ``attention/metadata.py``): what the runner builds and the eager staging or a graph sends."""
    input_ids: np.ndarray      # int64 [tokens]
    positions: np.ndarray      # int64 [tokens]
    slot_mapping: np.ndarray   # int64 [tokens]
    query_lens: list[int]
    seq_lens: list[int]
    block_table: np.ndarray    # int32 [seqs, blocks]

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    def metadata(self, slot_mapping: torch.Tensor, query_start_loc: torch.Tensor, seq_lens: torch.Tensor,
                 block_tables: torch.Tensor) -> AttentionMetadata:
        """This step's metadata over its device tensors."""
        return AttentionMetadata(slot_mapping=slot_mapping, query_start_loc=query_start_loc, seq_lens=seq_lens,
                                 block_tables=block_tables, max_query_len=max(self.query_lens),
                                 max_seq_len=max(self.seq_lens), query_lens_cpu=self.query_lens,
                                 seq_lens_cpu=self.seq_lens)


@dataclass
class DeviceStep:
    """A step's inputs on the device: what a forward (eager or a graph's replay) reads."""
    input_ids: torch.Tensor
    positions: torch.Tensor
    metadata: AttentionMetadata


class HostStaging:
    """Uploads for eager steps: each call packs parts of one dtype into one transfer."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pinned = device.type == "cuda"

    def upload(self, parts: Sequence[np.ndarray], dtype: torch.dtype) -> list[torch.Tensor]:
        """Device copies of ``parts`` (flat or 2-D integer arrays), in one transfer; shapes kept.
        Each view starts on a 16-byte boundary, as a separately allocated tensor does: Triton
        specialises a pointer argument on it, so packed views at other offsets compiled a kernel
        variant per batch-size class that the start-up warm-up's tensors did not (session 37)."""
        np_dtype = np.int64 if dtype == torch.int64 else np.int32
        align = 16 // np.dtype(np_dtype).itemsize
        sizes = [int(np.prod(p.shape)) for p in parts]
        starts = np.cumsum([0] + [-(-n // align) * align for n in sizes])
        flat = np.zeros(int(starts[-1]), dtype=np_dtype)
        for p, start, n in zip(parts, starts, sizes):
            flat[start:start + n] = np.asarray(p, dtype=np_dtype).reshape(-1)
        host = torch.from_numpy(flat)
        dev = host.pin_memory().to(self.device, non_blocking=True) if self.pinned else host
        return [dev[start:start + n].view(p.shape) for p, start, n in zip(parts, starts, sizes)]

    def upload_step(self, step: StepArrays) -> DeviceStep:
        """A step's inputs for an eager forward, in one transfer per dtype."""
        qsl = np.zeros(len(step.query_lens) + 1, dtype=np.int32)
        np.cumsum(step.query_lens, out=qsl[1:])
        ids, positions, slots = self.upload([step.input_ids, step.positions, step.slot_mapping], torch.int64)
        qsl_d, seq_lens, table = self.upload([qsl, np.asarray(step.seq_lens, dtype=np.int32), step.block_table],
                                             torch.int32)
        return DeviceStep(ids, positions, step.metadata(slots, qsl_d, seq_lens, table))


# Byte alignment of each field of an ``InputArena``: Triton specialises a pointer argument on
# 16-byte divisibility, so every view starts where a separately allocated tensor would.
FIELD_ALIGN = 128
_NUMPY_DTYPES = {torch.int64: np.int64, torch.int32: np.int32}


def _nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(np.prod(shape)) * dtype.itemsize


class ArenaPack:
    """A step's values for an ``InputArena`` on the host: numpy views (``pack[name]``) of one zeroed
    byte tensor in the arena's layout (pinned for a GPU, so that the upload reads it in place),
    filled by the caller and sent by ``InputArena.upload``."""

    def __init__(self, host: torch.Tensor, arrays: dict[str, np.ndarray]) -> None:
        self.host = host
        self._arrays = arrays

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]


class InputArena:
    """Fixed device buffers that a captured graph reads, filled by one host-to-device copy a step.

    A replayed CUDA graph reads its inputs at the addresses it was captured with. Uploading a step's
    inputs to fresh device memory and then copying them into those addresses costs one device
    copy per buffer: at a batch-1 decode step two uploads and five copies, ~2 µs each on the device's
    critical path (H100 traces, session 21). Here the fixed buffers are typed views at fixed offsets
    of one device byte buffer and the host packs a step's values into the same layout, so one copy
    fills them all. The last field (a block table) is sent only up to the rows a step uses."""

    def __init__(self, fields: Sequence[tuple[str, torch.dtype, tuple[int, ...]]], device: torch.device) -> None:
        self.device = device
        self._layout: list[tuple[str, np.dtype, tuple[int, ...], int]] = []   # name, dtype, shape, byte offset
        offset = 0
        for name, dtype, shape in fields:
            np_dtype = np.dtype(_NUMPY_DTYPES[dtype])
            self._layout.append((name, np_dtype, tuple(shape), offset))
            offset += -(-_nbytes(shape, np_dtype) // FIELD_ALIGN) * FIELD_ALIGN
        self.buffer = torch.zeros(offset, dtype=torch.uint8, device=device)
        self.views: dict[str, torch.Tensor] = {
            name: self.buffer[start:start + _nbytes(shape, np_dtype)].view(dtype).view(shape)
            for (_, dtype, _), (name, np_dtype, shape, start) in zip(fields, self._layout)}

    def pack(self, last_rows: int | None = None) -> ArenaPack:
        """Zeroed host arrays in this layout; the last field holds only its first ``last_rows`` rows
        (all of them by default), and the copy stops there."""
        last, np_dtype, shape, start = self._layout[-1]
        rows = shape[0] if last_rows is None else min(last_rows, shape[0])
        host = torch.zeros(start + _nbytes((rows, *shape[1:]), np_dtype), dtype=torch.uint8,
                           pin_memory=self.device.type == "cuda")
        data = host.numpy()
        arrays = {}
        for name, field_dtype, field_shape, field_start in self._layout:
            if name == last:
                field_shape = (rows, *field_shape[1:])
            n = _nbytes(field_shape, field_dtype)
            arrays[name] = data[field_start:field_start + n].view(field_dtype).reshape(field_shape)
        return ArenaPack(host, arrays)

    def upload(self, pack: ArenaPack) -> None:
        """Send ``pack`` into the device buffers (asynchronously, in stream order on a GPU; the
        caching host allocator keeps the pinned bytes until the copy has read them)."""
        self.buffer[:pack.host.numel()].copy_(pack.host, non_blocking=True)

