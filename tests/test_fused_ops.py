"""Triton fused ops (``pagedawq.kernels.fused_ops``) vs. their torch references.

Without CUDA the kernels run in Triton's CPU interpreter (its float32 -> bfloat16 conversion
truncates instead of rounding, hence the one-ulp bfloat16 tolerance); with CUDA the same checks
run at model-sized shapes and through the ``pagedawq.kernels.ops`` dispatch.
"""
from __future__ import annotations

import pytest
import torch

from pagedawq.kernels import ops, reference
from pagedawq.kernels.split_k import SplitKPartials
from tests.triton_interpreter import interpret_without_cuda

CUDA = interpret_without_cuda("pagedawq.kernels.fused_ops")
DEVICE = "cuda" if CUDA else "cpu"

from pagedawq.kernels import fused_ops  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOLERANCE = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape and out.dtype == ref.dtype
    out, ref = out.double().cpu(), ref.double().cpu()
    assert not out.isnan().any()
    return ((out - ref).norm() / ref.norm()).item()


def randn(*shape: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=gen).to(dtype=dtype, device=DEVICE)


def _poison_allocator() -> None:
    """Leave a freed NaN block in the CUDA caching allocator, so an unwritten output shows as NaN."""
    if CUDA:
        del_me = torch.full((1 << 22,), float("nan"), device=DEVICE)
        del del_me


# Small shapes for the interpreter; (hidden, heads) of the default model and of Llama-7B on GPU.
SHAPES = [(5, 576), (3, 100)] if not CUDA else [(5, 576), (3, 100), (300, 4096), (1, 8192)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,hidden", SHAPES)
def test_rms_norm(dtype, rows, hidden):
    gen = torch.Generator().manual_seed(rows + hidden)
    x, w = randn(rows, hidden, dtype=dtype, gen=gen), randn(hidden, dtype=dtype, gen=gen)
    ref = reference.rms_norm(x, w, 1e-5)
    _poison_allocator()
    assert rel_err(fused_ops.rms_norm(x, w, 1e-5), ref) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,hidden", SHAPES)
def test_fused_add_rms_norm(dtype, rows, hidden):
    gen = torch.Generator().manual_seed(rows * hidden)
    # A strided x (a column slice) checks that row strides are honoured.
    x = randn(rows, hidden + 8, dtype=dtype, gen=gen)[:, 8:]
    residual, w = randn(rows, hidden, dtype=dtype, gen=gen), randn(hidden, dtype=dtype, gen=gen)
    x_before, residual_before = x.clone(), residual.clone()
    ref_out, ref_residual = reference.fused_add_rms_norm(x, residual, w, 1e-6)
    _poison_allocator()
    out, new_residual = fused_ops.fused_add_rms_norm(x, residual, w, 1e-6)
    assert rel_err(out, ref_out) < TOLERANCE[dtype]
    assert rel_err(new_residual, ref_residual) < TOLERANCE[dtype]
    assert torch.equal(x, x_before) and torch.equal(residual, residual_before)  # inputs untouched


# (the interpreter's float32 -> bfloat16 conversion truncates: bit equality in bfloat16 on CUDA only)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16] if CUDA else [torch.float16])
@pytest.mark.parametrize("splits", [2, 4])
@pytest.mark.parametrize("rows,hidden", SHAPES)
def test_fused_add_rms_norm_adds_split_k_partials_as_the_gemm_would(dtype, splits, rows, hidden):
    """A GEMM's split-K partials (SplitKPartials) handed to the norm: the same bits as the norm of
    their sum rounded once (what the GEMM's own reduction stores), on the kernel and on the
    reference path; and a clear error where they do not fit the residual."""
    gen = torch.Generator().manual_seed(rows + hidden + splits)
    parts = SplitKPartials(randn(splits, rows, hidden, dtype=torch.float32, gen=gen), dtype)
    summed = parts.total()
    assert summed.dtype == dtype and summed.shape == (rows, hidden)
    ref = torch.zeros(rows, hidden, dtype=torch.float32, device=DEVICE)
    for s in range(splits):
        ref = ref + parts.slices[s]
    assert torch.equal(summed, ref.to(dtype))
    residual, w = randn(rows, hidden, dtype=dtype, gen=gen), randn(hidden, dtype=dtype, gen=gen)
    _poison_allocator()
    out, new_residual = fused_ops.fused_add_rms_norm(parts, residual, w, 1e-6)
    ref_out, ref_residual = fused_ops.fused_add_rms_norm(summed, residual, w, 1e-6)
    assert torch.equal(out, ref_out) and torch.equal(new_residual, ref_residual)
    host_out, host_residual = reference.fused_add_rms_norm(summed.cpu(), residual.cpu(), w.cpu(), 1e-6)
    with_ops = ops.fused_add_rms_norm(SplitKPartials(parts.slices.cpu(), dtype), residual.cpu(), w.cpu(), 1e-6)
    assert torch.equal(with_ops[0], host_out) and torch.equal(with_ops[1], host_residual)
    with pytest.raises(ValueError, match="do not fit the residual"):
        fused_ops.fused_add_rms_norm(parts, residual[:, :-1], w, 1e-6)


def test_split_k_partials_must_be_float32_slices():
    with pytest.raises(ValueError, match="float32"):
        SplitKPartials(torch.zeros(2, 3, 4, dtype=torch.float16), torch.float16)
    with pytest.raises(ValueError, match=r"\[S, M, N\]"):
        SplitKPartials(torch.zeros(3, 4), torch.float16)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_q_heads,num_kv_heads,head_size", [(9, 3, 64), (4, 1, 128), (3, 3, 48)])
def test_rotary_embedding_in_place_on_qkv_views(dtype, num_q_heads, num_kv_heads, head_size):
    gen = torch.Generator().manual_seed(num_q_heads + head_size)
    num_tokens, max_position = 7 if not CUDA else 513, 300
    qkv = randn(num_tokens, (num_q_heads + 2 * num_kv_heads) * head_size, dtype=dtype, gen=gen)
    q, k, v = qkv.split([num_q_heads * head_size, num_kv_heads * head_size, num_kv_heads * head_size], dim=1)
    v_before = v.clone()
    cos_sin_cache = randn(max_position, head_size, dtype=torch.float32, gen=gen)
    positions = torch.randint(0, max_position, (num_tokens,), generator=gen).to(DEVICE)
    ref_q, ref_k = reference.rotary_embedding(positions, q, k, cos_sin_cache, head_size)
    out_q, out_k = fused_ops.rotary_embedding(positions, q, k, cos_sin_cache, head_size)
    assert out_q.data_ptr() == q.data_ptr() and out_k.data_ptr() == k.data_ptr()
    assert rel_err(out_q, ref_q) < TOLERANCE[dtype]
    assert rel_err(out_k, ref_k) < TOLERANCE[dtype]
    assert torch.equal(v, v_before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rotary_embedding_three_dim_and_non_contiguous_rows(dtype):
    gen = torch.Generator().manual_seed(2)
    cos_sin_cache = randn(64, 64, dtype=torch.float32, gen=gen)
    positions = torch.randint(0, 64, (6,), generator=gen).to(DEVICE)
    q = randn(6, 4, 64, dtype=dtype, gen=gen)                  # [T, H, D]
    k = randn(2, 6, 64, dtype=dtype, gen=gen).transpose(0, 1)  # rows with gaps: copied and written back
    ref_q, ref_k = reference.rotary_embedding(positions, q, k, cos_sin_cache, 64)
    out_q, out_k = fused_ops.rotary_embedding(positions, q, k, cos_sin_cache, 64)
    assert out_q is q and out_k is k
    assert rel_err(q, ref_q) < TOLERANCE[dtype] and rel_err(k, ref_k) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 2 * 1536), (2, 3, 2 * 100)] + ([(1000, 2 * 11008)] if CUDA else []))
def test_silu_and_mul(dtype, shape):
    gen = torch.Generator().manual_seed(shape[-1])
    x = randn(*shape, dtype=dtype, gen=gen)
    ref = reference.silu_and_mul(x)
    _poison_allocator()
    assert rel_err(fused_ops.silu_and_mul(x), ref) < TOLERANCE[dtype]


@pytest.mark.gpu
@requires_cuda
def test_ops_dispatch_to_triton_on_cuda(monkeypatch):
    gen = torch.Generator().manual_seed(9)
    x, w = randn(8, 576, dtype=torch.float16, gen=gen), randn(576, dtype=torch.float16, gen=gen)
    calls = []
    monkeypatch.setattr(fused_ops, "rms_norm", lambda *a: calls.append(a) or reference.rms_norm(*a))
    ops.rms_norm(x, w, 1e-5)
    assert len(calls) == 1
    monkeypatch.setenv("PAGEDAWQ_DISABLE_TRITON", "1")
    ops.rms_norm(x, w, 1e-5)
    assert len(calls) == 1
