"""The AutoAWQ GEMM packing against an independent, loop-by-loop reference.

The reference follows AutoAWQ's description of ``WQLinear_GEMM.from_linear``: for output column
block j, the int32 ``packed[r, j]`` ORs in ``codes[r, 8j + order[i]] << 4i`` for nibble i with
order = [0, 2, 4, 6, 1, 3, 5, 7]; weights are ``(q - z) * s`` per input group.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pagedawq.quant.pack import (dequantize_awq, fake_quantize, pack_awq_gemm, pack_int4, quantize_weight,
                                 unpack_int4)

ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def reference_pack(codes: np.ndarray) -> np.ndarray:
    rows, cols = codes.shape
    out = np.zeros((rows, cols // 8), dtype=np.uint32)
    for r in range(rows):
        for j in range(cols // 8):
            word = 0
            for i in range(8):
                word |= int(codes[r, 8 * j + ORDER[i]]) << (4 * i)
            out[r, j] = word
    return out.view(np.int32)


def reference_unpack(packed: np.ndarray) -> np.ndarray:
    rows, words = packed.shape
    u = packed.view(np.uint32)
    out = np.zeros((rows, words * 8), dtype=np.int64)
    for r in range(rows):
        for j in range(words):
            for i in range(8):
                out[r, 8 * j + ORDER[i]] = (int(u[r, j]) >> (4 * i)) & 0xF
    return out


@pytest.fixture
def codes() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    c = torch.randint(0, 16, (6, 32), generator=g, dtype=torch.int32)
    c[0, :8] = 15  # all-ones word: exercises the int32 sign bit
    return c


def test_pack_matches_reference_bit_exact(codes):
    expected = reference_pack(codes.numpy())
    assert np.array_equal(pack_int4(codes).numpy(), expected)
    assert pack_int4(codes)[0, 0].item() == -1  # 0xFFFFFFFF as signed int32


def test_unpack_matches_reference_and_round_trips(codes):
    packed = pack_int4(codes)
    assert np.array_equal(unpack_int4(packed).numpy(), reference_unpack(packed.numpy()))
    assert torch.equal(unpack_int4(packed), codes)


def test_dequantize_is_q_minus_z_times_s():
    g = torch.Generator().manual_seed(1)
    k, n, group = 8, 16, 4
    q = torch.randint(0, 16, (k, n), generator=g, dtype=torch.int32)
    z = torch.randint(0, 16, (k // group, n), generator=g, dtype=torch.int32)
    s = (torch.rand(k // group, n, generator=g) + 0.01).half()
    w = dequantize_awq(pack_int4(q), pack_int4(z), s, torch.float32)
    for row in range(k):
        for col in range(n):
            expected = (int(q[row, col]) - int(z[row // group, col])) * float(s[row // group, col])
            assert w[row, col].item() == pytest.approx(expected, rel=0, abs=0)


@pytest.mark.parametrize("group_size", [32, 64, -1])
def test_checkpoint_tensors_encode_the_fake_quantized_weight(group_size):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(24, 128, generator=g)
    codes, scales, zeros = quantize_weight(w, 4, group_size)
    qweight, qzeros, scales16 = pack_awq_gemm(codes, scales, zeros)
    groups = 1 if group_size == -1 else 128 // group_size
    assert qweight.shape == (128, 3) and qweight.dtype == torch.int32
    assert qzeros.shape == (groups, 3) and scales16.shape == (groups, 24) and scales16.dtype == torch.float16
    deq = dequantize_awq(qweight, qzeros, scales16, torch.float32).t()
    # Same codes; only the scales differ, by their fp16 rounding.
    assert torch.allclose(deq, fake_quantize(w, 4, group_size), rtol=2e-3, atol=1e-4)
    assert (deq - w).abs().max() <= scales.max() * 0.51
