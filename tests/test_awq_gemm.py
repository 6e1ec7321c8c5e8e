"""AWQ int4 Triton GEMM (pagedawq.kernels.awq_gemm) against the float64 product with the
dequantized weight.

Without CUDA the kernels run in Triton's CPU interpreter on small shapes, every path (the GEMV
path too, which is chosen automatically only on CUDA) and both dequantizer modes forced through
``path=`` / ``config=``. ``TRITON_INTERPRET`` must be set before
triton is first imported: ``triton.jit`` reads it at decoration time, triton.language's own jitted
helpers (``tl.zeros``...) included. If an earlier test module imported triton without it, these
tests run in a fresh subprocess instead (``test_interpreter_suite_in_fresh_process``). With CUDA
the same checks run compiled at full Llama shapes (``gpu`` marker), plus the PTX dequantizer
against the plain-Triton one, bit for bit.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.triton_interpreter import interpret_without_cuda

STALE_TRITON = (not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
                and "triton" in sys.modules)
HAS_CUDA = interpret_without_cuda("pagedawq.kernels.awq_kernels", "pagedawq.kernels.awq_gemm")

from pagedawq.kernels import awq_gemm as awq_mod  # noqa: E402
from pagedawq.kernels.awq_configs import (GEMV_M_MAX, GemmConfig, GemvConfig, choose, gemv_config,  # noqa: E402
                                          gemv_params, get_config, select_path, SMALL_M_MAX, LARGE_M_MIN)
from pagedawq.kernels.awq_gemm import awq_dequantize, awq_gemm, gemm_fused  # noqa: E402
from pagedawq.quant.pack import dequantize_awq, pack_awq_gemm, quantize_weight  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}
gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
cpu = pytest.mark.skipif(STALE_TRITON, reason="triton was imported before TRITON_INTERPRET was set: "
                                              "test_interpreter_suite_in_fresh_process runs these")


def make_layer(k: int, n: int, group: int, seed: int, zero_point: bool = True, device: str = DEVICE):
    """Random AWQ layer (qweight, qzeros, scales fp16) from a random fp weight, varied zero points."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    w = torch.randn(n, k, generator=gen) * (1 + torch.rand(n, 1, generator=gen))
    codes, scales, zeros = quantize_weight(w, group_size=group, zero_point=zero_point)
    return tuple(t.to(device) for t in pack_awq_gemm(codes, scales, zeros))


def make_x(m: int, k: int, dtype: torch.dtype, seed: int, device: str = DEVICE) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    return (torch.randn(m, k, generator=gen) + 0.1).to(dtype).to(device)


def rel_err(out: torch.Tensor, x: torch.Tensor, layer) -> float:
    # fp16/bf16 activations: W as the checkpoint's fp16 arithmetic rounds it; fp32: W exactly.
    w = dequantize_awq(*layer, dtype=torch.float32 if x.dtype == torch.float32 else None)
    ref = x.double() @ w.double()
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) outputs remain"
    return ((out.double() - ref).norm() / ref.norm()).item()


def run(x, layer, **kw) -> torch.Tensor:
    m, n = x.shape[0], layer[0].shape[1] * 8
    out = torch.full((m, n), float("nan"), dtype=x.dtype, device=x.device)
    res = awq_gemm(x, *layer, out=out, **kw)
    assert res.data_ptr() == out.data_ptr()
    return out


# ---------------------------------------------------------------- CPU interpreter, small shapes

SPLITK_CASES = [
    # m, k, n, group, dtype, config
    (1, 256, 128, 128, torch.float16, GemmConfig(16, 64, 64, split_k=3)),
    (5, 256, 96, 64, torch.bfloat16, GemmConfig(16, 64, 64, split_k=2)),      # N not a multiple of BLOCK_N
    (16, 128, 64, 32, torch.float16, GemmConfig(16, 32, 32, split_k=4)),
    (7, 192, 64, 192, torch.float16, GemmConfig(16, 64, 64, split_k=2)),      # per-channel (G = K)
    (9, 256, 80, 128, torch.bfloat16, GemmConfig(16, 32, 128, split_k=1)),
    (3, 128, 64, 64, torch.float16, GemmConfig(16, 64, 64, split_k=8)),       # more splits than K tiles
    (24, 128, 48, 64, torch.float16, GemmConfig(32, 32, 64, split_k=2, scale_w=True)),
    (4, 512, 64, 128, torch.float16, GemmConfig(16, 64, 64, split_k=2)),                   # BLOCK_K < G
    (6, 384, 64, 64, torch.bfloat16, GemmConfig(16, 32, 64, split_k=1, scale_w=True)),
    (5, 1024, 64, 64, torch.float16, GemmConfig(16, 64, 64, split_k=16)),   # 2 reduction chunks of 8
    (2, 512, 64, 64, torch.float16, GemmConfig(16, 256, 64, split_k=4, num_warps=2)),   # chunk 1: the loop
]


@cpu
@pytest.mark.parametrize("m,k,n,group,dtype,cfg", SPLITK_CASES)
def test_splitk_path(m, k, n, group, dtype, cfg):
    layer = make_layer(k, n, group, seed=m * 7 + k)
    x = make_x(m, k, dtype, seed=m + n)
    out = run(x, layer, path="splitk", config=cfg)
    assert rel_err(out, x, layer) < TOL[dtype]


TC_CASES = [
    (40, 128, 64, 32, torch.float16, GemmConfig(32, 32, 32, scale_w=True)),
    (40, 128, 72, 128, torch.bfloat16, GemmConfig(16, 32, 64, split_k=2, scale_w=True)),
    (70, 128, 96, 64, torch.float16, GemmConfig(32, 64, 64, scale_w=False, group_m=2)),
    (33, 256, 64, 256, torch.bfloat16, GemmConfig(32, 32, 64, split_k=2, scale_w=False)),
]


@cpu
@pytest.mark.parametrize("m,k,n,group,dtype,cfg", TC_CASES)
def test_tc_path(m, k, n, group, dtype, cfg):
    layer = make_layer(k, n, group, seed=m + 3 * n)
    x = make_x(m, k, dtype, seed=k)
    out = run(x, layer, path="tc", config=cfg)
    assert rel_err(out, x, layer) < TOL[dtype]


@cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dequant_path_and_kernel(dtype):
    layer = make_layer(96, 40, 32, seed=11)
    x = make_x(6, 96, dtype, seed=5)
    out = run(x, layer, path="dequant")
    assert rel_err(out, x, layer) < TOL.get(dtype, 1e-5)
    w = awq_dequantize(*layer, dtype=torch.float16)
    assert torch.equal(w, dequantize_awq(*layer))  # one rounding of the exact (q - z) * s, like the reference
    # Scales in the output dtype: the packed 16-bit (PTX) route on GPU. (The CPU interpreter's
    # float32 -> bfloat16 conversion does not round to nearest, so bf16 is exact only compiled.)
    if dtype == torch.float16 or (dtype == torch.bfloat16 and layer[0].is_cuda):
        layer16 = (layer[0], layer[1], layer[2].to(dtype))
        assert torch.equal(awq_dequantize(*layer16, dtype=dtype), dequantize_awq(*layer16))


@cpu
def test_scales_dtype_differs_from_x():
    """bf16 activations with the checkpoint's fp16 scales, through both dequantizer modes."""
    layer = make_layer(128, 64, 64, seed=3)
    x = make_x(4, 128, torch.bfloat16, seed=4)
    for scale_w in (False, True):
        out = run(x, layer, path="splitk", config=GemmConfig(16, 32, 64, split_k=2, scale_w=scale_w))
        assert rel_err(out, x, layer) < TOL[torch.bfloat16]


@cpu
def test_symmetric_quantization_and_strided_x():
    layer = make_layer(128, 32, 32, seed=8, zero_point=False)
    base = make_x(5, 200, torch.float16, seed=9)
    x = base[:, 40:168]  # row stride 200, unit column stride
    out = run(x, layer, path="splitk", config=GemmConfig(16, 32, 32, split_k=2))
    assert rel_err(out, x.contiguous(), layer) < TOL[torch.float16]


@cpu
def test_default_selection_runs_every_regime():
    layer = make_layer(128, 64, 64, seed=21)
    for m in (1, SMALL_M_MAX, SMALL_M_MAX + 1, LARGE_M_MIN):  # no tuned entry: heuristics
        x = make_x(m, 128, torch.float16, seed=m)
        out = run(x, layer)
        assert rel_err(out, x, layer) < TOL[torch.float16], m
    assert [select_path(m) for m in (1, SMALL_M_MAX, SMALL_M_MAX + 1, LARGE_M_MIN - 1, LARGE_M_MIN)] == [
        "splitk", "splitk", "tc", "tc", "dequant"]


@cpu
def test_split_k_is_deterministic_and_leaves_counters_zero():
    layer = make_layer(256, 64, 32, seed=13)
    x = make_x(3, 256, torch.float16, seed=14)
    cfg = GemmConfig(16, 32, 32, split_k=5)
    a = run(x, layer, path="splitk", config=cfg)
    b = run(x, layer, path="splitk", config=cfg)
    assert torch.equal(a, b)
    assert int(awq_mod._COUNTERS[x.device].abs().sum()) == 0


@cpu
def test_configs_respect_group_size():
    for group in (32, 64, 128, 4096):
        for m in (1, 20, 100, 200):
            path = select_path(m)
            if path == "dequant":
                continue
            cfg = get_config(path, m, 11008, 4096, group, 132)
            assert group % cfg.block_k == 0 and cfg.split_k >= 1


@cpu
def test_wgmma_t_build_failure_falls_back_once_with_a_warning(monkeypatch, caplog):
    """A Triton whose Gluon API the wgmma_t kernel does not build with: the automatic choice logs a
    warning, computes the product on the other paths, and stops choosing wgmma_t; a forced path raises."""

    class BrokenGluon:
        BUILD_ERRORS = (AttributeError,)
        calls = 0

        @staticmethod
        def supports(*args):
            return True

        @staticmethod
        def output_tiles(*args):
            return 1

        @classmethod
        def wgmma_t_gemm(cls, *args):
            cls.calls += 1
            raise AttributeError("module 'tma' has no attribute 'async_load'")
    monkeypatch.setattr(awq_mod, "wgmma_t_module", lambda: BrokenGluon)
    monkeypatch.setattr(awq_mod, "_BUILD_ERROR", [])
    monkeypatch.setattr(awq_mod, "wgmma_t_usable", lambda *a: not awq_mod._BUILD_ERROR)
    layer = make_layer(128, 64, 64, seed=9)
    repacked = (torch.zeros(1, dtype=torch.int32), torch.zeros(1, dtype=torch.int32))   # never read
    x = make_x(128, 128, torch.float16, seed=9)
    with caplog.at_level("WARNING", logger="pagedawq.kernels.awq_gemm"):
        out = run(x, layer, repacked=repacked)
    assert rel_err(out, x, layer) < TOL[torch.float16]
    assert "does not build" in caplog.text and "async_load" in caplog.text
    run(x, layer, repacked=repacked)
    assert BrokenGluon.calls == 1          # not chosen again
    with pytest.raises(AttributeError):   # an explicit request is not rerouted
        run(x, layer, path="wgmma_t", repacked=repacked)


@cpu
def test_rejects_bad_inputs():
    layer = make_layer(64, 32, 32, seed=1)
    with pytest.raises(ValueError):
        awq_gemm(make_x(2, 32, torch.float16, seed=0), *layer)  # K mismatch
    with pytest.raises(ValueError):
        awq_gemm(make_x(2, 64, torch.float16, seed=0), *layer, path="nope")
    with pytest.raises(TypeError):
        awq_gemm(make_x(2, 64, torch.float16, seed=0), *layer, path="splitk", config=GemvConfig())
    with pytest.raises(ValueError):
        awq_gemm(make_x(2, 64, torch.float16, seed=0), *layer, out=torch.empty(2, 31, dtype=torch.float16))
    assert awq_gemm(make_x(0, 64, torch.float16, seed=0), *layer).shape == (0, 32)


# ---------------------------------------------------------------- GEMV path, CPU interpreter

GEMV_CASES = [
    # m, k, n, group, dtype, config (None: the heuristic)
    (1, 256, 256, 128, torch.float16, GemvConfig(256, 64, split_k=3)),
    (2, 256, 192, 64, torch.bfloat16, GemvConfig(128, 64, split_k=2)),                   # N % BLOCK_N != 0
    (3, 128, 96, 32, torch.float16, GemvConfig(64, 32, split_k=4, vec=4, num_warps=1)),  # VEC 4
    (4, 192, 64, -1, torch.float16, GemvConfig(64, 64, split_k=3, vec=4, num_warps=2)),  # per-channel (G = K)
    (1, 384, 72, 128, torch.bfloat16, GemvConfig(64, 128, split_k=2, num_warps=2)),      # N/8 odd: VEC 1
    (2, 128, 80, 32, torch.float16, GemvConfig(128, 32, split_k=1, vec=4)),              # no split; VEC 2
    (4, 256, 128, 64, torch.float16, GemvConfig(128, 64, split_k=8, prefetch_scales=False)),  # splits > K tiles
    (3, 512, 64, 128, torch.bfloat16, GemvConfig(64, 64, split_k=4, vec=4, num_warps=1)),
    (6, 128, 64, 64, torch.float16, GemvConfig(64, 64, split_k=2)),                      # row blocks of 4 + 2
    (1, 128, 48, 32, torch.float16, None),
    # more K slices than the reduction loads at once (32 / rows per program): two chunks
    (1, 2048, 64, 32, torch.bfloat16, GemvConfig(64, 32, split_k=64, vec=4, num_warps=1)),
    (4, 1024, 64, 32, torch.float16, GemvConfig(64, 32, split_k=16, vec=4, num_warps=1)),
]


@cpu
@pytest.mark.parametrize("m,k,n,group,dtype,cfg", GEMV_CASES)
def test_gemv_path(m, k, n, group, dtype, cfg):
    layer = make_layer(k, n, group, seed=m * 11 + k + n)
    x = make_x(m, k, dtype, seed=3 * m + n)
    out = run(x, layer, path="gemv", config=cfg)
    assert rel_err(out, x, layer) < TOL[dtype]


@cpu
def test_gemv_fresh_random_inputs():
    """A new seed every run (printed on failure): M 1-4, every group size, any N multiple of 8."""
    seed = int.from_bytes(os.urandom(4), "little")
    gen = torch.Generator().manual_seed(seed)
    for _ in range(3):
        m = int(torch.randint(1, 5, (1,), generator=gen))
        group = [32, 64, 128, -1][int(torch.randint(0, 4, (1,), generator=gen))]
        k = 128 * int(torch.randint(1, 4, (1,), generator=gen))
        n = 8 * int(torch.randint(1, 25, (1,), generator=gen))
        dtype = [torch.float16, torch.bfloat16][int(torch.randint(0, 2, (1,), generator=gen))]
        cfg = GemvConfig(block_n=[64, 128][int(torch.randint(0, 2, (1,), generator=gen))],
                         split_k=int(torch.randint(1, 5, (1,), generator=gen)),
                         vec=[1, 2, 4][int(torch.randint(0, 3, (1,), generator=gen))], num_warps=2,
                         prefetch_scales=bool(torch.randint(0, 2, (1,), generator=gen)))
        layer = make_layer(k, n, group, seed=int(torch.randint(0, 2**31, (1,), generator=gen)))
        x = make_x(m, k, dtype, seed=int(torch.randint(0, 2**31, (1,), generator=gen)))
        out = run(x, layer, path="gemv", config=cfg)
        assert rel_err(out, x, layer) < TOL[dtype], (seed, m, k, n, group, dtype, cfg)


@cpu
def test_gemv_is_deterministic_and_leaves_counters_zero():
    layer = make_layer(512, 64, 64, seed=31)
    x = make_x(3, 512, torch.float16, seed=32)
    cfg = GemvConfig(64, 64, split_k=7, vec=4, num_warps=1)
    a = run(x, layer, path="gemv", config=cfg)
    b = run(x, layer, path="gemv", config=cfg)
    assert torch.equal(a, b)
    assert int(awq_mod._COUNTERS[x.device].abs().sum()) == 0
    ref = run(x, layer, path="splitk", config=GemmConfig(16, 64, 64, split_k=2))
    assert ((a.double() - ref.double()).norm() / ref.double().norm()).item() < 1e-3


@cpu
def test_gemv_selection_and_params():
    for m in range(1, GEMV_M_MAX + 1):   # on CUDA (gemv=True) small M takes the GEMV path
        assert select_path(m, gemv=True) == "gemv" and choose(m, 4096, 4096, 128, 132, True)[0] == "gemv"
        assert choose(m, 4096, 4096, 128, 132)[0] == "splitk"   # interpreter / CPU: unchanged
    assert select_path(GEMV_M_MAX + 1, gemv=True) == "splitk"
    for k, n in [(4096, 22016), (11008, 4096), (8192, 1280), (1024, 8192), (4096, 4200), (3584, 8200)]:
        for group in (32, 64, 128, k):
            for m in (1, 2, 3, 4):
                for cfg in (gemv_config(m, n, k, group, 132), GemvConfig(512, 128, vec=4, num_warps=8),
                            GemvConfig(128, 32, vec=1, num_warps=2)):
                    vec, bn, bk, rows = gemv_params(cfg, n // 8, k, group)
                    u = bk // rows
                    assert (n // 8) % vec == 0 and bn // 8 // vec <= 16 and bn % (8 * vec) == 0
                    assert group % bk == 0 and k % bk == 0 and bk < 32 * cfg.num_warps
                    assert bk % rows == 0 and u in (1, 2, 4, 8) and cfg.split_k >= 1


@pytest.mark.skipif(not STALE_TRITON, reason="the interpreter tests ran in this process")
def test_interpreter_suite_in_fresh_process():
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.abspath(__file__)],
                          env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


# ---------------------------------------------------------------- CUDA, full shapes

GPU_CASES = [(4096, 22016, 128, torch.float16), (11008, 4096, 128, torch.bfloat16),
             (4096, 12288, 32, torch.float16), (3584, 8192, 3584, torch.bfloat16)]  # last: per-channel


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("k,n,group,dtype", GPU_CASES)
def test_gpu_default_paths(k, n, group, dtype):
    layer = make_layer(k, n, group, seed=k + n)
    for m in (1, 24, 64, 512, 1024):
        x = make_x(m, k, dtype, seed=m)
        out = run(x, layer)
        assert rel_err(out, x, layer) < TOL[dtype], (m, select_path(m))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("scale_w", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_ptx_dequantizer_matches_plain_triton(scale_w, dtype):
    layer = make_layer(4096, 4096 + 64, 128, seed=5)
    x = make_x(16, 4096, dtype, seed=6)
    outs = []
    for use_asm in (True, False):
        out = torch.full((16, 4096 + 64), float("nan"), dtype=dtype, device=DEVICE)
        gemm_fused(x, *layer, GemmConfig(16, 128, 128, split_k=4, scale_w=scale_w), out, use_asm=use_asm)
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    assert rel_err(outs[0], x, layer) < TOL[dtype]


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("path", ["gemv", "splitk", "tc", "dequant"])
def test_gpu_forced_paths_odd_shapes(path):
    layer = make_layer(4096, 4096 + 8 * 13, 64, seed=17)  # N not a multiple of any BLOCK_N
    for m in (1, 31, 95, 300):
        x = make_x(m, 4096, torch.float16, seed=m)
        out = run(x, layer, path=path)
        assert rel_err(out, x, layer) < TOL[torch.float16], (path, m)


GEMV_GPU_CASES = GPU_CASES + [(4096, 4096 + 8 * 13, 64, torch.float16)]   # last: N/8 odd (VEC 1), N % 256 != 0


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("k,n,group,dtype", GEMV_GPU_CASES)
def test_gpu_gemv_full_shapes(k, n, group, dtype):
    layer = make_layer(k, n, group, seed=k + 3 * n)
    for m in (1, 2, 3, 4, 6):
        x = make_x(m, k, dtype, seed=m + 1)
        out = run(x, layer, path="gemv")
        assert rel_err(out, x, layer) < TOL[dtype], m
        again = run(x, layer, path="gemv")
        assert torch.equal(out, again), m   # deterministic split-K
    assert int(awq_mod._COUNTERS[torch.device(DEVICE, torch.cuda.current_device())].abs().sum()) == 0


@gpu
@pytest.mark.gpu
def test_gpu_gemv_is_default_and_graph_safe():
    """M <= GEMV_M_MAX picks the GEMV path on CUDA; a captured call replays with new activations."""
    k, n = 4096, 12288
    layer = make_layer(k, n, 128, seed=41)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    assert choose(1, n, k, 128, sms, True)[0] == "gemv"
    x = make_x(1, k, torch.float16, seed=42)
    out = torch.empty(1, n, dtype=torch.float16, device=DEVICE)
    expect = run(x, layer)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        awq_gemm(x, *layer, out=out)     # warm up (compile, counters) off the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        awq_gemm(x, *layer, out=out)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, expect)
    x.copy_(make_x(1, k, torch.float16, seed=43))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, run(x, layer))
