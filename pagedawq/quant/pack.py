"""AutoAWQ "GEMM" checkpoint layout: int4 packing, unpacking and dequantization.

The on-disk format that AutoAWQ, transformers and vLLM read, for a linear layer y = x @ W with
W of shape [K (in), N (out)]:

* ``qweight`` int32 ``[K, N/8]``: eight 4-bit codes per int32, along N;
* ``qzeros``  int32 ``[K/G, N/8]``: the per-group zero points, packed the same way;
* ``scales``  fp16  ``[K/G, N]``;
* ``W[k, n] = (q[k, n] - z[k // G, n]) * s[k // G, n]``.

Within one int32 the nibble at bit offset 4*i holds column ``8*j + AWQ_ORDER[i]`` (AutoAWQ's
interleaving, chosen for its CUDA dequantizer). Everything here is plain torch so that it is both
the CPU path and the reference the Triton kernels are tested against.
"""
from __future__ import annotations

import torch

PACK_FACTOR = 8  # int4 codes per int32
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # column placed in nibble i
# Inverse: bit shift at which column c (0..7 within a pack) lives.
AWQ_SHIFTS = tuple(4 * AWQ_ORDER.index(c) for c in range(PACK_FACTOR))


def pack_int4(codes: torch.Tensor, check_range: bool = True) -> torch.Tensor:
    """Pack integer codes in [0, 15] of shape [R, N] into int32 [R, N/8] in AWQ order.
    ``check_range=False`` for codes in range by construction (masked to 4 bits): the check reads the
    codes back to the host, which a CUDA graph capture does not allow."""
    if codes.dim() != 2 or codes.shape[1] % PACK_FACTOR:
        raise ValueError(f"pack_int4 needs a 2-D tensor whose last dim is a multiple of 8, got {tuple(codes.shape)}")
    c = codes.to(torch.int64)
    if check_range and c.numel() and (int(c.min()) < 0 or int(c.max()) > 15):
        raise ValueError("int4 codes must lie in [0, 15]")
    c = c.view(c.shape[0], -1, PACK_FACTOR)
    packed = torch.zeros(c.shape[:2], dtype=torch.int64, device=codes.device)
    for nibble, col in enumerate(AWQ_ORDER):
        packed |= c[:, :, col] << (4 * nibble)
    # Reinterpret the low 32 bits as signed int32 (the checkpoint dtype).
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)
    return packed.to(torch.int32)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: int32 [R, N/8] -> int32 codes [R, N] in [0, 15]."""
    if packed.dtype != torch.int32:
        raise TypeError(f"packed int4 tensors are int32, got {packed.dtype}")
    shifts = torch.tensor(AWQ_SHIFTS, dtype=torch.int32, device=packed.device)
    codes = (packed.unsqueeze(-1) >> shifts) & 0xF
    return codes.reshape(packed.shape[0], -1)


def group_size_of(qweight: torch.Tensor, scales: torch.Tensor) -> int:
    """Infer the group size from the shapes of a GEMM-layout layer."""
    k, n_groups = qweight.shape[0], scales.shape[0]
    if n_groups == 0 or k % n_groups:
        raise ValueError(f"scales rows ({n_groups}) do not divide the input dimension ({k})")
    return k // n_groups


def dequantize_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """Dequantize a GEMM-layout layer to W [K, N] (so that y = x @ W)."""
    g = group_size_of(qweight, scales)
    dtype = dtype or scales.dtype
    q = unpack_int4(qweight)
    z = unpack_int4(qzeros).repeat_interleave(g, dim=0)
    s = scales.to(dtype).repeat_interleave(g, dim=0)
    return (q - z).to(dtype) * s


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """``w [N, K]`` as float32 rows of one quantization group each: ``[N * K / G, G]``."""
    k = w.shape[1]
    g = k if group_size == -1 else group_size
    if g <= 0 or k % g:
        raise ValueError(f"group size {group_size} does not divide the input dimension {k}")
    return w.detach().float().reshape(-1, g)


def _scales_zeros(wg: torch.Tensor, w_bit: int, zero_point: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group scale and (float) zero point. Symmetric quantization (``zero_point=False``) uses a
    fixed zero of 2**(w_bit-1), so both modes fit the same checkpoint layout."""
    qmax = 2**w_bit - 1
    if zero_point:
        wmin, wmax = torch.aminmax(wg, dim=1, keepdim=True)
        scales = (wmax - wmin).clamp_(min=1e-5).div_(qmax)
        zeros = torch.round(wmin / scales).neg_().clamp_(0, qmax)
    else:
        scales = wg.abs().amax(dim=1, keepdim=True).clamp_(min=1e-5).div_(2 ** (w_bit - 1) - 1)
        zeros = torch.full_like(scales, 2 ** (w_bit - 1))
    return scales, zeros


def quantize_weight(w: torch.Tensor, w_bit: int = 4, group_size: int = 128, zero_point: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest quantization of a torch-layout weight ``w [N, K]`` in groups along K.

    Returns ``(codes [N, K] int32, scales [N, K/G] float, zeros [N, K/G] int32)`` with
    ``w ≈ (codes - zeros) * scales``.
    """
    n, k = w.shape
    wg = _grouped(w, group_size)
    scales, zeros = _scales_zeros(wg, w_bit, zero_point)
    codes = torch.div(wg, scales).round_().add_(zeros).clamp_(0, 2**w_bit - 1)
    return (codes.to(torch.int32).reshape(n, k), scales.reshape(n, -1), zeros.to(torch.int32).reshape(n, -1))


def fake_quantize(w: torch.Tensor, w_bit: int = 4, group_size: int = 128, zero_point: bool = True) -> torch.Tensor:
    """Quantize then dequantize ``w [N, K]`` (what the int4 model will compute with), in a few
    in-place passes: the calibration search calls this hundreds of times per layer."""
    wg = _grouped(w, group_size)
    scales, zeros = _scales_zeros(wg, w_bit, zero_point)
    q = torch.div(wg, scales).round_().add_(zeros).clamp_(0, 2**w_bit - 1)
    return q.sub_(zeros).mul_(scales).reshape(w.shape).to(w.dtype)


def pack_awq_gemm(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Torch-layout quantized weight -> GEMM checkpoint tensors ``(qweight, qzeros, scales fp16)``.

    Takes ``codes [N, K]``, ``scales [N, K/G]``, ``zeros [N, K/G]`` as returned by
    :func:`quantize_weight` and transposes them to the input-major checkpoint layout.
    """
    qweight = pack_int4(codes.t().contiguous())
    qzeros = pack_int4(zeros.t().contiguous())
    return qweight, qzeros, scales.t().contiguous().to(torch.float16)
