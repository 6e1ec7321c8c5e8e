"""``awq_gemm``: y = x @ W for AWQ int4 weights in the AutoAWQ GEMM checkpoint layout.

The linear method (``pagedawq.quant.awq``) calls this on CUDA with the checkpoint tensors as
loaded and, on Hopper, the same weights repacked at load time for the "wgmma_t" path
(``repack_for_wgmma_t``), which then serves every M. A Hopper layer keeps its weights once, in the
repacked copy: its checkpoint tensors are then meta tensors (shapes only), and a call that another
path serves rebuilds them from the copy (``checkpoint_tensors``). The kernels are in ``awq_kernels``,
``awq_wgmma_t`` and ``awq_wgmma_t_ws``, the path and tile choice in ``awq_configs``. Under
``TRITON_INTERPRET=1`` the Triton kernels run on CPU tensors (the tests), with plain Triton
arithmetic in place of the PTX dequantizer (``PAGEDAWQ_AWQ_PLAIN_DEQUANT=1`` forces that
arithmetic on CUDA too, for A/B comparisons); the Gluon kernel of the "wgmma_t" path has no
interpreter and runs on Hopper only.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Hashable
from dataclasses import replace
from functools import lru_cache

import torch
import triton

from pagedawq.kernels.awq_configs import (DEFAULT_SMS, WGMMA_T_M_MIN, GemmConfig, GemvConfig,
                                          WgmmaTConfig, choose, fit_block_k, get_config, gemv_block_m, gemv_config,
                                          gemv_params, has_fast_memory, nonempty_split, reduction_chunk, wgmma_t_config,
                                          ws_wave_tail)
from pagedawq.kernels import ops
from pagedawq.kernels.awq_kernels import awq_dequant_kernel, awq_gemm_kernel, awq_gemv_kernel
from pagedawq.kernels.interpreter import interpreting
from pagedawq.kernels.jit_compiles import int_specialization
from pagedawq.kernels.one_shot_allreduce import PushedOutput, PushTarget
from pagedawq.kernels.pdl import use_pdl
from pagedawq.kernels.split_k import SplitKPartials
from pagedawq.quant.pack import PACK_FACTOR, group_size_of

PATHS = ("gemv", "splitk", "tc", "wgmma_t", "dequant")

logger = logging.getLogger(__name__)

# Split-K arrival counters, one per output tile, per device. Zero between launches: the last
# program of each tile resets its counter. Kernels using them must not run concurrently on
# two streams of one device, and the first (eager) call of a shape allocates them, so warm up
# before capturing a CUDA graph, as graph capture requires anyway.
_COUNTERS: dict[torch.device, torch.Tensor] = {}


@lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return DEFAULT_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


@lru_cache(maxsize=None)
def _fast_memory(device: torch.device) -> bool:
    return device.type == "cuda" and has_fast_memory(torch.cuda.get_device_name(device))


def _counters(device: torch.device, n: int) -> torch.Tensor:
    buf = _COUNTERS.get(device)
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 4096), dtype=torch.int32, device=device)
        _COUNTERS[device] = buf
    return buf


def _check(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> int:
    if x.dim() != 2:
        raise ValueError(f"awq_gemm takes x of shape [M, K], got {tuple(x.shape)}")
    if qweight.dtype != torch.int32 or qzeros.dtype != torch.int32:
        raise TypeError("qweight and qzeros must be int32 (packed int4)")
    k, n8 = qweight.shape
    if x.shape[1] != k:
        raise ValueError(f"x has {x.shape[1]} input features, qweight {k}")
    group = group_size_of(qweight, scales)
    if qzeros.shape != (k // group, n8) or scales.shape[1] != n8 * PACK_FACTOR:
        raise ValueError(f"inconsistent AWQ tensors: qweight {tuple(qweight.shape)}, qzeros "
                         f"{tuple(qzeros.shape)}, scales {tuple(scales.shape)}")
    for t in (qweight, qzeros, scales):
        if not t.is_contiguous():
            raise ValueError("qweight, qzeros and scales must be contiguous")
    return group


def _ptx_dequant(t: torch.Tensor) -> bool:
    """Whether the PTX unpack can run for tensors on ``t``'s device (CUDA, compiled, not turned off
    with PAGEDAWQ_AWQ_PLAIN_DEQUANT=1)."""
    return (t.is_cuda and not interpreting() and torch.version.hip is None
            and os.environ.get("PAGEDAWQ_AWQ_PLAIN_DEQUANT", "0") != "1")


@lru_cache(maxsize=1)
def wgmma_t_module():
    """``awq_wgmma_t`` (the transposed Hopper kernel and its load-time ``repack``), or None where
    this Triton has no Gluon for Hopper (the path is then skipped)."""
    try:
        from pagedawq.kernels import awq_wgmma_t
    except ImportError as e:
        logger.info("AWQ wgmma_t path unavailable (%s)", e)
        return None
    return awq_wgmma_t


# Set when the Gluon kernel failed to build: Gluon is experimental and its API moves between
# Triton releases (the kernel is known to build with 3.6 and 3.9), so a Triton it does not build
# with turns the path off, with a warning, instead of failing the model's forward.
_BUILD_ERROR: list[str] = []
# Set once a call rebuilt a layer's checkpoint tensors from its repacked copy (``checkpoint_tensors``).
_REBUILT: list[bool] = []


def wgmma_t_usable(x: torch.Tensor, n: int, k: int, group: int, scales_dtype: torch.dtype) -> bool:
    """Whether the "wgmma_t" path may be chosen for this x and an [K, N] layer whose weights were
    repacked for it (``repack_for_wgmma_t``; PAGEDAWQ_DISABLE_WGMMA_T=1 at load time leaves them
    unrepacked, for A/B comparisons)."""
    module = _wgmma_t_module_for(x.shape[0], x.device)
    return module is not None and module.supports(x, n, k, group, scales_dtype)


def _wgmma_t_module_for(m: int, device: torch.device):
    """``wgmma_t_module()`` where the "wgmma_t" path may serve ``m`` tokens on ``device`` whatever
    the layer (enough tokens, CUDA, compiled, its kernel built), else None."""
    if m < WGMMA_T_M_MIN or device.type != "cuda" or interpreting() or _BUILD_ERROR:
        return None
    return wgmma_t_module()


def repack_for_wgmma_t(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, *,
                       silu_and_mul: bool = False) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The layer's weights repacked for the "wgmma_t" path (``awq_wgmma_t.repack``), or None where
    that path cannot run them (not Hopper, not fp16 scales, shapes it does not tile, no Gluon, or
    PAGEDAWQ_DISABLE_WGMMA_T=1): ``awq_gemm(..., repacked=...)`` then takes the other paths. With
    ``silu_and_mul`` the layer is a gate/up pair and the copy is for ``awq_gemm_silu_and_mul``
    (channels in ``silu_channel_order``)."""
    k, n8 = qweight.shape
    n = n8 * PACK_FACTOR
    module = wgmma_t_module()
    if (module is None or os.environ.get("PAGEDAWQ_DISABLE_WGMMA_T", "0") == "1"
            or not module.supports_layer(qweight.device, n, k, k // scales.shape[0], scales.dtype)):
        return None
    return module.repack(qweight, qzeros, scales, module.silu_channel_order(n) if silu_and_mul else None)


def awq_gemm_silu_and_mul(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                          repacked: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """``silu(x @ W_gate) * (x @ W_up)`` [M, N/2] for a gate/up layer ``W = [W_gate | W_up]`` [K, N]:
    one kernel where ``repacked`` (``repack_for_wgmma_t(..., silu_and_mul=True)``) serves x (the
    "wgmma_t" path, its epilogue doing the activation), else ``awq_gemm`` then ``silu_and_mul``."""
    fused = _wgmma_t_if_usable(x, qweight, qzeros, scales, repacked, silu_and_mul=True)
    if fused is not None:
        return fused
    return ops.silu_and_mul(awq_gemm(x, *checkpoint_tensors(qweight, qzeros, scales, repacked, silu_and_mul=True)))


def awq_gemm_split_k_partials(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                              repacked: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor | SplitKPartials:
    """``x @ W`` for a consumer that can add split-K partials (``pagedawq.kernels.split_k``): where
    the "wgmma_t" path serves x with split-K whose slices do not sum as a cluster
    (``awq_wgmma_t.cluster_reduces``), its K slices' partials, which spares the GEMM its reduction;
    otherwise ``awq_gemm``'s output."""
    out = _wgmma_t_if_usable(x, qweight, qzeros, scales, repacked, split_k_partials=True)
    return out if out is not None else awq_gemm(x, qweight, qzeros, scales, repacked=repacked)


def awq_gemm_pushed(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                    repacked: tuple[torch.Tensor, torch.Tensor] | None, push: PushTarget) -> PushedOutput | None:
    """``x @ W`` of a row-parallel layer pushed straight into the receive slots of the fused
    all-reduce + residual add + RMSNorm after it (``awq_wgmma_t.wgmma_t_gemm_pushed``), where the
    "wgmma_t" path serves x in one launch of its default config that can push (``can_push``: the
    decode sizes); else None, and the caller computes the output itself."""
    return _wgmma_t_if_usable(x, qweight, qzeros, scales, repacked, push=push)


def checkpoint_tensors(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                       repacked: tuple[torch.Tensor, torch.Tensor] | None, silu_and_mul: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The layer's AutoAWQ tensors, for the paths other than "wgmma_t". Where the layer keeps its
    weights only in the repacked copy (meta checkpoint tensors), they are rebuilt from it for this
    call (``awq_wgmma_t.unrepack``; ``silu_and_mul``: the copy is in ``silu_channel_order``). That
    is slow, and is said once: the model reaches it only for x the kernel cannot take (not fp16)
    or after the kernel failed to build."""
    if not qweight.is_meta:
        return qweight, qzeros, scales
    module = wgmma_t_module()
    if repacked is None or module is None:
        raise ValueError("this AWQ layer keeps its weights only in the wgmma_t layout; pass them as repacked=")
    if not _REBUILT:
        _REBUILT.append(True)
        logger.warning("AWQ layers whose weights are kept once, in the wgmma_t layout, are rebuilt in the "
                       "checkpoint layout for each call the wgmma_t kernel does not serve (slow); load with "
                       "PAGEDAWQ_DISABLE_WGMMA_T=1 to run every call on the other paths")
    order = module.silu_channel_order(repacked[1].shape[1], repacked[1].device) if silu_and_mul else None
    return module.unrepack(*repacked, order)


def _wgmma_t_if_usable(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                       repacked: tuple[torch.Tensor, torch.Tensor] | None, silu_and_mul: bool = False,
                       split_k_partials: bool = False, push: PushTarget | None = None
                       ) -> torch.Tensor | SplitKPartials | PushedOutput | None:
    """The "wgmma_t" launch of the variants above with its default config, or None where that path
    does not serve x (no repacked weights, ``wgmma_t_usable`` false, or its kernel does not build,
    which turns the path off with a warning; with ``push``, a config that cannot push): the caller
    then computes the product otherwise."""
    group = _check(x, qweight, qzeros, scales)
    m, k = x.shape
    n = qweight.shape[1] * PACK_FACTOR
    if repacked is None or not wgmma_t_usable(x, n, k, group, scales.dtype):
        return None
    module = wgmma_t_module()
    try:
        if push is not None:
            return _push_wgmma_t(module, x, n, group, repacked, push)
        out = torch.empty((m, n // 2 if silu_and_mul else n), dtype=x.dtype, device=x.device)
        return _launch_wgmma_t(module, x, n, repacked, out, None, silu_and_mul, split_k_partials)
    except module.BUILD_ERRORS as e:
        _disable_wgmma_t(e)
        return None


def _push_wgmma_t(module, x: torch.Tensor, n: int, group: int, repacked: tuple[torch.Tensor, torch.Tensor],
                  push: PushTarget) -> PushedOutput | None:
    """The pushing launch with the shape's default config, where that is one launch that can push."""
    m, k = x.shape
    config, tail = wgmma_t_plan(m, n, k, x.device)
    if tail is not None or not module.can_push(m, k, group, config):
        return None
    return module.wgmma_t_gemm_pushed(x, *repacked, config, push)


def wgmma_t_plan(m: int, n: int, k: int, device: torch.device, silu_and_mul: bool = False
                 ) -> tuple[WgmmaTConfig, tuple[int, WgmmaTConfig] | None]:
    """The default config of the "wgmma_t" path for ``m`` tokens on a [K, N] layer, and where its
    last wave would be part-filled, that wave's split (``ws_wave_tail``: channels of the first
    launch, config of the second), else None."""
    sms = _sm_count(device)
    config = wgmma_t_config(m, n, k, sms, silu_and_mul, _fast_memory(device))
    return config, ws_wave_tail(m, n, k, sms, config)


def launch_signature(m: int, n: int, k: int, group: int, device: torch.device, wgmma_t: bool,
                     silu_and_mul: bool = False) -> Hashable:
    """What decides the compiled kernels that ``awq_gemm`` and its variants (silu, split-K
    partials, push) launch for ``m`` tokens on a [K, N] layer: its path and configs, the token
    count's Triton specialization and the hints that depend on it. Two token counts of one
    signature launch the same compiled kernels, so a warm-up that runs one count of each compiles
    every variant the layer will need (``pagedawq.engine.warmup``). ``wgmma_t``: the layer holds
    weights repacked for that path."""
    token = (int_specialization(m), use_pdl(device, m))
    module = _wgmma_t_module_for(m, device) if wgmma_t else None
    if module is not None:
        config, tail = wgmma_t_plan(m, n, k, device, silu_and_mul)
        return "wgmma_t", config, tail, module.streams_weights(m, config), token
    gemv = device.type == "cuda" and not interpreting()
    return choose(m, n, k, group, _sm_count(device), gemv), token


def default_path(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group: int,
                 repacked: tuple[torch.Tensor, torch.Tensor] | None = None, config=None) -> tuple[str, object]:
    """The path (and configuration, None where the path picks its own) ``awq_gemm`` takes for x on
    this layer when no ``path`` is given: "wgmma_t" where the layer was repacked for it, else
    ``awq_configs.choose``."""
    m, k = x.shape
    n = qweight.shape[1] * PACK_FACTOR
    if repacked is not None and config is None and wgmma_t_usable(x, n, k, group, scales.dtype):
        return "wgmma_t", None
    # A GemmConfig without a path keeps its fused kernel: the GEMV path is never picked for it.
    use_gemv = x.is_cuda and not interpreting() and not isinstance(config, GemmConfig)
    path, auto = choose(m, n, k, group, _sm_count(x.device), use_gemv)
    return path, config or auto


# (BLOCK_K, BLOCK_N, num_warps) of the PTX dequant kernel.
DEQUANT_TILE = (16, 512, 4)   # best on every Llama-7B/8B layer, H100 2026-11-26 (kernels.py --dequant)


def awq_dequantize(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """W [K, N] in ``dtype`` (default: the scales' dtype), as ``pack.dequantize_awq`` computes it."""
    k, n8 = qweight.shape
    n = n8 * PACK_FACTOR
    group = group_size_of(qweight, scales)
    w = torch.empty((k, n), dtype=dtype or scales.dtype, device=qweight.device)
    use_asm = w.dtype == scales.dtype and w.dtype in (torch.float16, torch.bfloat16) and _ptx_dequant(qweight)
    bk, bn, warps = DEQUANT_TILE if use_asm else (32, 256, 4)
    grid = (triton.cdiv(k, bk), triton.cdiv(n, bn))
    awq_dequant_kernel[grid](qweight, qzeros, scales, w, k, n, n8, G=group, BLOCK_K=bk, BLOCK_N=bn,
                             USE_ASM=use_asm, num_warps=warps)
    return w


def gemm_fused(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
               cfg: GemmConfig, out: torch.Tensor, use_asm: bool | None = None) -> torch.Tensor:
    """Launch ``awq_gemm_kernel`` with an explicit configuration (the tuner and tests use this)."""
    m, k = x.shape
    n8 = qweight.shape[1]
    n = n8 * PACK_FACTOR
    group = k // scales.shape[0]
    if k % cfg.block_k or group % cfg.block_k:
        raise ValueError(f"BLOCK_K {cfg.block_k} must divide the group size {group}")
    interpret = interpreting()
    if use_asm is None:
        use_asm = _ptx_dequant(x)
    if cfg.scale_w and scales.dtype != x.dtype:
        scales = scales.to(x.dtype)  # the per-weight scale is applied in the dot dtype
    tiles_m, tiles_n = triton.cdiv(m, cfg.block_m), triton.cdiv(n, cfg.block_n)
    if cfg.split_k > 1:
        ws = torch.empty((cfg.split_k, m, n), dtype=torch.float32, device=x.device)
        cnt = _counters(x.device, tiles_m * tiles_n)
    else:
        ws, cnt = out, qzeros  # never touched without split-K
    awq_gemm_kernel[(tiles_m * tiles_n, cfg.split_k)](
        x, qweight, qzeros, scales, out, ws, cnt, m, n, n8, k, x.stride(0), out.stride(0), cfg.split_k,
        G=group, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, SPLIT=cfg.split_k > 1,
        GROUP_M=cfg.group_m, SCALE_W=cfg.scale_w, EVEN_N=n % cfg.block_n == 0, USE_ASM=use_asm,
        INTERPRET=interpret, RED_CHUNK=reduction_chunk(cfg), num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out


def gemv(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
         cfg: GemvConfig, out: torch.Tensor) -> torch.Tensor:
    """Launch ``awq_gemv_kernel`` (the "gemv" path, small M) with ``cfg`` as ``gemv_params``
    adapts it to the shape.

    Rows go ``gemv_block_m(M)`` (<= 4) at a time, one grid row block each (a larger M reads the
    weight once per block). Split-K partials go to an fp32 workspace [split, M, N] allocated per
    call like the "splitk" path's (torch's caching allocator; under CUDA graph capture, the graph's
    pool) and the shared per-device arrival counters: sizes depend only on shapes, no host sync.
    """
    m, k = x.shape
    n8 = qweight.shape[1]
    n = n8 * PACK_FACTOR
    group = k // scales.shape[0]
    vec, bn, bk, rows = gemv_params(cfg, n8, k, group)
    bm = gemv_block_m(m)
    tiles_m, tiles_n = triton.cdiv(m, bm), triton.cdiv(n, bn)
    k_tiles = k // bk
    split = nonempty_split(k_tiles, cfg.split_k)
    if split > 1:
        ws = torch.empty((split, m, n), dtype=torch.float32, device=x.device)
        cnt = _counters(x.device, tiles_m * tiles_n)
    else:
        ws, cnt = out, qzeros  # never touched without split-K
    launch = {} if cfg.maxnreg is None else {"maxnreg": cfg.maxnreg}
    awq_gemv_kernel[(tiles_n, split, tiles_m)](
        x, qweight, qzeros, scales, out, ws, cnt, m, n8, k, x.stride(0), out.stride(0), split, 0x4B000000,
        G=group, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, R=rows, VEC=vec, PREFETCH_S=cfg.prefetch_scales,
        SPLIT=split > 1, EVEN_N=n % bn == 0, num_warps=cfg.num_warps, **launch)
    return out


def awq_gemm(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, *,
             out: torch.Tensor | None = None, path: str | None = None,
             config: GemmConfig | GemvConfig | WgmmaTConfig | None = None,
             repacked: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``x [M, K] @ W`` with W the AWQ int4 weight; returns (or fills ``out``) [M, N] in x's dtype.

    x is fp16 or bf16 (fp32 goes through the dequantize path); scales may be of either 16-bit
    type whatever x's is. ``repacked``: the layer's ``repack_for_wgmma_t`` tensors, made at load
    time on Hopper; with them the "wgmma_t" path is taken for M in its range. ``path`` (one of
    ``PATHS``) and ``config`` (a ``GemvConfig`` for "gemv", a ``WgmmaTConfig`` for "wgmma_t", else a
    ``GemmConfig``) override the choice made from M and the shape (``awq_configs``; "gemv" is
    chosen automatically only on CUDA, for M <= ``GEMV_M_MAX``).
    """
    group = _check(x, qweight, qzeros, scales)
    m, k = x.shape
    n = qweight.shape[1] * PACK_FACTOR
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    elif out.shape != (m, n) or out.dtype != x.dtype or out.stride(1) != 1:
        raise ValueError(f"out must be a row-major [{m}, {n}] {x.dtype} tensor")
    if m == 0:
        return out
    if x.stride(1) != 1:
        x = x.contiguous()
    if path is not None and path not in PATHS:
        raise ValueError(f"unknown awq_gemm path {path!r}; expected one of {PATHS}")
    if x.dtype not in (torch.float16, torch.bfloat16):
        path = "dequant"
    chosen = path is None
    if chosen:
        path, config = default_path(x, qweight, scales, group, repacked, config)
    if path == "wgmma_t":
        return _wgmma_t(x, qweight, qzeros, scales, group, out, config, repacked, chosen)
    if isinstance(config, WgmmaTConfig):
        raise TypeError(f"a WgmmaTConfig is for path='wgmma_t', not {path!r}")
    qweight, qzeros, scales = checkpoint_tensors(qweight, qzeros, scales, repacked)
    if path == "dequant":
        return torch.matmul(x, awq_dequantize(qweight, qzeros, scales, x.dtype), out=out)
    if path == "gemv":
        if not isinstance(config, GemvConfig):
            config = gemv_config(m, n, k, group, _sm_count(x.device))
        return gemv(x, qweight, qzeros, scales, config, out)
    if isinstance(config, GemvConfig):
        raise TypeError(f"a GemvConfig is for path='gemv', not {path!r}")
    if config is None:
        config = get_config(path, m, n, k, group, _sm_count(x.device))
    elif group % config.block_k:
        config = replace(config, block_k=fit_block_k(config.block_k, group))
    return gemm_fused(x, qweight, qzeros, scales, config, out)


def _wgmma_t(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group: int,
             out: torch.Tensor, config, repacked, chosen: bool) -> torch.Tensor:
    """The "wgmma_t" path (an automatic choice has checked that it is usable). If its Gluon kernel
    does not build with this Triton: an explicit ``path`` raises; an automatic choice turns the path
    off with a warning and computes the product on the other paths."""
    k = x.shape[1]
    n = qweight.shape[1] * PACK_FACTOR
    module = wgmma_t_module()
    if not chosen and (repacked is None or module is None or not module.supports(x, n, k, group, scales.dtype)):
        raise ValueError("the wgmma_t path needs the layer's repacked weights (repack_for_wgmma_t), Hopper, "
                         "fp16 x and scales, N % 64 == 0, K and the group size multiples of 64, 16-byte aligned "
                         "rows of x, and Triton with Gluon")
    try:
        return _launch_wgmma_t(module, x, n, repacked, out, config)
    except module.BUILD_ERRORS as e:
        if not chosen:
            raise
        _disable_wgmma_t(e)
        return awq_gemm(x, qweight, qzeros, scales, out=out, repacked=repacked)


def _launch_wgmma_t(module, x: torch.Tensor, n: int, repacked: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor,
                    config: WgmmaTConfig | None, silu_and_mul: bool = False, split_k_partials: bool = False
                    ) -> torch.Tensor | SplitKPartials:
    """``module.wgmma_t_gemm`` for x on a layer of N outputs, with ``config`` (default:
    ``wgmma_t_config``'s for the shape, and where its last wave would be part-filled, that wave's
    channels in a second launch: ``ws_wave_tail``) and, for split-K, the device's arrival counters."""
    m, k = x.shape
    if not isinstance(config, WgmmaTConfig):
        config, tail = wgmma_t_plan(m, n, k, x.device, silu_and_mul)
        if tail is not None:
            return _launch_with_tail(module, x, repacked, out, config, *tail, silu_and_mul)
    counters = _counters(x.device, module.output_tiles(m, n, config)) if config.split_k > 1 else None
    return module.wgmma_t_gemm(x, *repacked, config, out, counters, silu_and_mul, split_k_partials)


def _launch_with_tail(module, x: torch.Tensor, repacked: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor,
                      config: WgmmaTConfig, n_main: int, tail_config: WgmmaTConfig, silu_and_mul: bool) -> torch.Tensor:
    """Two launches (``awq_configs.ws_wave_tail``): channels ``[0, n_main)`` in whole waves with
    ``config``, the rest with ``tail_config`` (smaller tiles or K slices). Both write the summed
    output, so a caller that asked for split-K partials gets the output tensor."""
    main, rest = module.channel_slices(*repacked, n_main)
    cut = n_main // 2 if silu_and_mul else n_main
    module.wgmma_t_gemm(x, *main, config, out[:, :cut], None, silu_and_mul)
    counters = _counters(x.device, module.output_tiles(x.shape[0], rest[1].shape[1], tail_config))
    module.wgmma_t_gemm(x, *rest, tail_config, out[:, cut:], counters, silu_and_mul)
    return out


def _disable_wgmma_t(error: Exception) -> None:
    """The Gluon kernel did not build with this Triton: stop choosing its path, and say so once."""
    _BUILD_ERROR.append(f"{type(error).__name__}: {error}")
    logger.warning("the AWQ wgmma_t kernel does not build with Triton %s (%s); using the other paths",
                   triton.__version__, _BUILD_ERROR[0].splitlines()[0][:300])
