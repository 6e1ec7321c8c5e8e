"""The Hopper "wgmma" path of awq_gemm (pagedawq.kernels.awq_wgmma).

Gluon kernels have no CPU interpreter. Without a GPU these tests compile the kernel for sm_90 with
the installed Triton and check the structure its speed depends on (tests/wgmma_sass.py), and check
when awq_gemm chooses the path. On an H100/H200 they check its numbers against the float64 product
(fresh random inputs, NaN-poisoned outputs, M not a multiple of the tile, group sizes 64 and 128).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from pagedawq.kernels.awq_configs import (WGMMA_CANDIDATES, WGMMA_M_MAX, WGMMA_M_MIN, WGMMA_N_MIN, WgmmaConfig,
                                          choose, wgmma_config, wgmma_split)
from pagedawq.quant.pack import dequantize_awq, pack_awq_gemm, quantize_weight

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
hopper = pytest.mark.skipif(not HOPPER, reason="needs a Hopper GPU (sm_90)")


def _gluon_importable() -> bool:
    try:
        return importlib.util.find_spec("triton.experimental.gluon.language.nvidia.hopper") is not None
    except ImportError:   # a parent package is missing
        return False


@pytest.mark.skipif(not _gluon_importable(), reason="this Triton has no Gluon for Hopper")
@pytest.mark.parametrize("cfg,split", [(c, False) for c in WGMMA_CANDIDATES] + [(WGMMA_CANDIDATES[1], True)])
def test_kernel_compiles_for_sm90_with_the_mma_overlapping_the_unpack(cfg, split):
    # A fresh process: an earlier test may have set TRITON_INTERPRET, under which nothing compiles.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tests.wgmma_sass", "w", str(cfg.block_m), str(cfg.block_n),
                           *(["split"] if split else [])], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    assert s["spill_stores"] == 0
    # Tile 0 and the loop body: 4 (BLOCK_K / 16) HGMMAs each, each group followed by a wait that
    # leaves it in flight while the next tile unpacks; one full wait after the loop.
    assert s["hgmma"] == 8 and s["wait_one_in_flight"] == 2 and s["wait_all"] == 1
    assert s["tma_loads"] > 0
    assert (s["atomics"] > 0) == split    # the split-K arrival counter


def test_choice_of_path_and_tiles():
    sms = 132
    for m in (WGMMA_M_MIN, 200, 256, WGMMA_M_MAX):
        assert choose(m, 12288, 4096, 128, sms, True, True)[0] == "wgmma"
        assert choose(m, 12288, 4096, 128, sms, True, False)[0] != "wgmma"   # not usable: never chosen
        assert choose(m, 4096, 4096, 128, sms, True, True)[0] != "wgmma"     # narrow, short K
        assert choose(m, 4096, 11008, 128, sms, True, True)[0] == "wgmma"    # narrow, long K: split-K
    assert choose(WGMMA_M_MIN - 1, 22016, 4096, 128, sms, True, True)[0] != "wgmma"
    assert choose(WGMMA_M_MAX + 1, 22016, 4096, 128, sms, True, True)[0] == "dequant"
    assert choose(1, 22016, 4096, 128, sms, True, True)[0] == "gemv"
    assert WGMMA_N_MIN > 4096
    # The tiles the H100 sweep found fastest (kernels.py --wgmma, 2026-11-26): 256 columns unless
    # 128 fill the waves of 132 SMs better.
    best = {(128, 12288): 128, (256, 12288): 256, (512, 12288): 128, (128, 22016): 256, (256, 22016): 128,
            (512, 22016): 256, (128, 13824): 128, (256, 13824): 256, (512, 13824): 256}
    for (m, n), block_n in best.items():
        cfg = wgmma_config(m, n, 4096, sms)
        assert (cfg.block_m, cfg.block_n) == (128, block_n), (m, n)
    assert wgmma_config(64, 12288, 4096, sms).block_n == 128
    assert wgmma_config(256, 12416, 4096, sms).block_n == 128    # N not a multiple of 256
    assert WgmmaConfig(128, 256).num_warps == 8
    # Split-K on narrow long-K layers only: about two programs per SM, at most 4 slices of >= 8 K
    # tiles (the best of 1/2/4 at every M of the 11008 x 4096 layer on the sweep).
    assert [wgmma_config(m, 4096, 11008, sms).split_k for m in (128, 256, 512)] == [4, 4, 2]
    assert all(wgmma_config(m, 22016, 4096, sms).split_k == 1 for m in (128, 256, 512))
    assert wgmma_split(300, 11008, sms) == 1 and wgmma_split(1, 1024, sms) == 2   # 16 K tiles: 2 slices


def test_forced_path_off_hopper_is_a_clear_error():
    if HOPPER:
        pytest.skip("runs where the path is unavailable")
    from pagedawq.kernels.awq_gemm import awq_gemm, wgmma_usable
    codes, scales, zeros = quantize_weight(torch.randn(128, 128), group_size=64)
    layer = pack_awq_gemm(codes, scales, zeros)
    x = torch.randn(64, 128, dtype=torch.float16)
    assert not wgmma_usable(x, layer[0], layer[2], 64)
    with pytest.raises(ValueError, match="wgmma path needs Hopper"):
        awq_gemm(x, *layer, path="wgmma")


def _layer(k: int, n: int, group: int, seed: int):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    w = torch.randn(n, k, generator=gen) * (1 + torch.rand(n, 1, generator=gen))
    codes, scales, zeros = quantize_weight(w, group_size=group)
    return tuple(t.cuda() for t in pack_awq_gemm(codes, scales, zeros))


def _rel_err(out: torch.Tensor, x: torch.Tensor, layer) -> float:
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) outputs remain"
    ref = x.double() @ dequantize_awq(*layer).double()
    return ((out.double() - ref).norm() / ref.norm()).item()


@hopper
@pytest.mark.gpu
@pytest.mark.parametrize("k,n,group", [(4096, 12288, 128), (4096, 22016, 128), (11008, 4096, 128),
                                       (5120, 13824, 64), (576, 1536, 64)])
def test_gpu_every_config_matches_float64(k, n, group):
    from pagedawq.kernels import awq_gemm as awq_mod
    from pagedawq.kernels.awq_gemm import awq_gemm
    layer = _layer(k, n, group, seed=k + n)
    failed = []   # every (M, config) is tried, and all failures reported together
    configs = [*WGMMA_CANDIDATES, WgmmaConfig(128, 128, split_k=3), WgmmaConfig(64, 128, split_k=2)]
    for m in (64, 100, 128, 300, 512):
        x = (torch.randn(m, k, device="cuda") + 0.1).half()
        for cfg in configs:
            if n % cfg.block_n:
                continue
            out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
            try:
                awq_gemm(x, *layer, out=out, path="wgmma", config=cfg)
                if cfg.split_k > 1:   # deterministic: the slices are summed in a fixed order
                    assert torch.equal(awq_gemm(x, *layer, path="wgmma", config=cfg), out)
                torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001 - collected into the report
                failed.append((m, cfg.block_m, cfg.block_n, f"{type(e).__name__}: {str(e)[:200]}"))
                continue
            nan_rows = torch.isnan(out).any(dim=1).nonzero().flatten().tolist()
            err = _rel_err(out.nan_to_num(), x, layer)
            if nan_rows or err > 2e-3:
                failed.append((m, cfg.block_m, cfg.block_n, f"rel err {err:.1e}, NaN rows {nan_rows[:4]}.."
                               f"{nan_rows[-2:]} ({len(nan_rows)})"))
    assert not failed, "\n".join(map(str, failed))
    assert int(awq_mod._COUNTERS[x.device].abs().sum()) == 0   # every split-K counter reset


@hopper
@pytest.mark.gpu
def test_gpu_default_choice_and_cuda_graph():
    from pagedawq.kernels.awq_gemm import awq_gemm, wgmma_usable
    layer = _layer(4096, 22016, 128, seed=7)
    x = torch.randn(256, 4096, device="cuda", dtype=torch.float16)
    assert wgmma_usable(x, layer[0], layer[2], 128)
    out = torch.full((256, 22016), float("nan"), dtype=torch.float16, device="cuda")
    awq_gemm(x, *layer, out=out)
    assert _rel_err(out, x, layer) < 2e-3
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        awq_gemm(x, *layer, out=out)
    out.fill_(float("nan"))
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert _rel_err(out, x, layer) < 2e-3
    # Not taken where it does not apply: bf16, or M outside its range.
    assert not wgmma_usable(x.bfloat16(), layer[0], layer[2], 128)
    assert not wgmma_usable(x[:WGMMA_M_MIN - 1], layer[0], layer[2], 128)
