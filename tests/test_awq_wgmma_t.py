"""The transposed Hopper AWQ kernel (pagedawq.kernels.awq_wgmma_t): its load-time repack and its numbers.

Without a GPU: ``repack`` checked against the checkpoint layout by decoding every word the way the
kernel's register layout reads it, and the kernel compiled for sm_90 (tests/wgmma_sass.py) with
asynchronous wgmmas, no spills. On an H100/H200: every configuration against the float64 product
(fresh random inputs, NaN-poisoned outputs, M not a multiple of the tile, groups 64 and 128).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from pagedawq.quant.pack import dequantize_awq, pack_awq_gemm, quantize_weight, unpack_int4

gluon_hopper = pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")
from pagedawq.kernels.awq_configs import WgmmaTConfig as TConfig  # noqa: E402
from pagedawq.kernels.awq_wgmma_t import BAND_WORDS, repack, silu_channel_order, unrepack  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
hopper = pytest.mark.skipif(not HOPPER, reason="needs a Hopper GPU (sm_90)")


def _layer(k: int, n: int, group: int, seed: int, device: str = "cpu"):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    w = torch.randn(n, k, generator=gen) * (1 + torch.rand(n, 1, generator=gen))
    codes, scales, zeros = quantize_weight(w, group_size=group)
    return tuple(t.to(device) for t in pack_awq_gemm(codes, scales, zeros))


def _decode_words(words: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """Codes [K, N] as the kernel reads ``words``: lane l, word r = 2*k3 + n3 of band b and K tile t,
    nibble i + 4*k0 -> row 16b + 8*n3 + (l >> 2), k = 64t + k0 + 2*(l & 3) + 8*k3 + 16*i."""
    w = words.view(k // 64, n // 16, 32, 4).to(torch.int64) & 0xFFFFFFFF
    codes = torch.empty(k, n, dtype=torch.int64)
    t, b, lane, r = torch.meshgrid(*(torch.arange(s) for s in w.shape), indexing="ij")
    for i in range(4):
        for k0 in range(2):
            rows = 16 * b + 8 * (r & 1) + (lane >> 2)
            cols = 64 * t + k0 + 2 * (lane & 3) + 8 * (r >> 1) + 16 * i
            codes[cols.flatten(), rows.flatten()] = ((w >> (4 * (i + 4 * k0))) & 0xF).flatten()
    return codes


@pytest.mark.parametrize("k,n,group", [(128, 64, 64), (256, 192, 128), (576, 1536, 64)])
def test_repack_puts_every_code_where_the_kernel_reads_it(k, n, group):
    qweight, qzeros, scales = _layer(k, n, group, seed=k + n)
    words, zs = repack(qweight, qzeros, scales)
    assert words.shape == (k // 64 * n // 16, BAND_WORDS) and words.dtype == torch.int32
    assert torch.equal(_decode_words(words, k, n), unpack_int4(qweight).to(torch.int64))
    # zero/scale word: fp16 (1024 + z) in the low half, the fp16 scale in the high half
    lo = (zs & 0xFFFF).to(torch.int16).view(torch.float16)
    hi = ((zs >> 16) & 0xFFFF).to(torch.int16).view(torch.float16)
    assert torch.equal(lo.float(), unpack_int4(qzeros).float() + 1024)
    assert torch.equal(hi, scales)


def test_silu_channel_order_pairs_each_gate_with_its_up_channel_in_one_band():
    order = silu_channel_order(64)     # gate 0-31, up 32-63
    band, r = torch.meshgrid(torch.arange(4), torch.arange(8), indexing="ij")
    # rows r and r + 8 of band b (held by one thread of the accumulator) -> gate / up of channel 8b + r
    assert torch.equal(order[16 * band + r], 8 * band + r)
    assert torch.equal(order[16 * band + 8 + r], 32 + 8 * band + r)
    assert sorted(order.tolist()) == list(range(64))
    with pytest.raises(ValueError, match="N % 16"):
        silu_channel_order(40)


@pytest.mark.parametrize("k,n,group", [(128, 64, 64), (576, 3072, 64)])
def test_repack_in_silu_channel_order(k, n, group):
    qweight, qzeros, scales = _layer(k, n, group, seed=k + n)
    order = silu_channel_order(n)
    words, zs = repack(qweight, qzeros, scales, order)
    assert torch.equal(_decode_words(words, k, n), unpack_int4(qweight).to(torch.int64)[:, order])
    assert torch.equal(((zs >> 16) & 0xFFFF).to(torch.int16).view(torch.float16), scales[:, order])
    lo = (zs & 0xFFFF).to(torch.int16).view(torch.float16)
    assert torch.equal(lo.float(), unpack_int4(qzeros).float()[:, order] + 1024)


@pytest.mark.parametrize("k,n,group", [(128, 64, 64), (2112, 192, 64), (640, 1536, 128)])
@pytest.mark.parametrize("silu", [False, True])
def test_unrepack_rebuilds_the_checkpoint_tensors_bit_for_bit(k, n, group, silu):
    """2112 rows: two chunks of 1024 and a part-filled third."""
    layer = _layer(k, n, group, seed=k + n + silu)
    order = silu_channel_order(n) if silu else None
    rebuilt = unrepack(*repack(*layer, order), order)
    for got, want in zip(rebuilt, layer):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_a_layer_kept_only_repacked_is_rebuilt_for_the_other_paths(monkeypatch, caplog):
    """The linear method frees a Hopper layer's checkpoint tensors (meta tensors stay): x that the
    wgmma_t kernel cannot take (here: not on Hopper) runs on the other paths with the tensors
    rebuilt from the repacked copy, the plain and the gate/up (silu channel order) one, and the
    slowness is said once."""
    from pagedawq.kernels import awq_gemm as mod
    from pagedawq.kernels import ops
    monkeypatch.setattr(mod, "_REBUILT", [])
    layer = _layer(128, 128, 64, seed=5)
    meta = tuple(torch.empty_like(t, device="meta") for t in layer)
    x = torch.randn(3, 128, generator=torch.Generator().manual_seed(5)).half()
    with caplog.at_level("WARNING", logger="pagedawq.kernels.awq_gemm"):
        got = mod.awq_gemm(x, *meta, repacked=repack(*layer))
        silu = mod.awq_gemm_silu_and_mul(x, *meta, repack(*layer, silu_channel_order(128)))
    assert torch.equal(got, mod.awq_gemm(x, *layer))
    assert torch.equal(silu, ops.silu_and_mul(mod.awq_gemm(x, *layer)))
    assert caplog.text.count("rebuilt in the checkpoint layout") == 1
    with pytest.raises(ValueError, match="only in the wgmma_t layout"):
        mod.awq_gemm(x, *meta)


def test_repack_refuses_shapes_the_kernel_cannot_tile():
    qweight, qzeros, scales = _layer(96, 64, 32, seed=1)
    with pytest.raises(ValueError, match="K % 64"):
        repack(qweight, qzeros, scales)


@pytest.mark.parametrize("block_n,block_t,split,kt,silu,defer", [
    (64, 16, False, 1, False, False), (128, 64, False, 1, False, False), (64, 256, False, 2, False, False),
    (64, 32, True, 4, False, False), (128, 128, False, 2, False, False), (128, 8, True, 4, False, False),
    (64, 8, True, 4, True, False), (128, 128, False, 2, True, False), (64, 8, True, 4, False, True)])
def test_kernel_compiles_for_sm90_with_the_weights_in_registers(block_n, block_t, split, kt, silu, defer):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tests.wgmma_sass", str(block_n), str(block_t),
                           *(["split"] if split else []), *(["defer"] if defer else []), *(["silu"] if silu else []),
                           f"kt={kt}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    assert s["spill_stores"] == 0
    # the loop body's 4 HGMMAs a K tile and 64 channels, then one full wait before the next step's
    # unpack, and nothing writing a running wgmma's A registers (ptxas does not keep them from being reused)
    assert s["hgmma"] == 4 * kt * block_n // 64 and s["wait_all"] == 1
    assert s["a_register_hazards"] == 0
    # up to 64 tokens the tiles hold q - z and each group's product is scaled in fp32 after the
    # wgmmas (awq_wgmma_t.GROUP_SCALE_MAX_T): no fp16 multiply by the scale in the unpack
    assert (s["hmul2"] == 0) == (block_t <= 64)
    assert s["tma_loads"] == 3 * (4 + 1)   # x, words, zero/scale: one box each a step (4-step prologue + loop)
    assert (s["atomics"] > 0) == (split and not defer)   # deferred partials: no arrival counter
    # programmatic dependent launch: the wait for the previous kernel (ptxas may copy it into the
    # prologue's branches), and the signal to the next one after the main loop
    assert s["pdl_waits"] >= 1 and s["pdl_triggers"] >= 1


@pytest.mark.parametrize("block_t,cluster,silu", [(8, 4, False), (16, 8, False), (32, 2, False), (8, 4, True)])
def test_kernel_sums_split_k_in_a_cluster_through_distributed_shared_memory(block_t, cluster, silu):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tests.wgmma_sass", "64", str(block_t), "kt=4", f"cluster={cluster}",
                           *(["silu"] if silu else [])], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    assert s["spill_stores"] == 0 and s["a_register_hazards"] == 0
    # no arrival counter and no memory barrier: one cluster barrier (arrive at the start, wait before
    # the first push), and each thread's partials pushed to their owners, two fp32 a st.async
    assert s["atomics"] == 0 and s["gpu_membars"] == 0
    assert s["cluster_arrives"] == 1 and s["cluster_waits"] == 1
    assert s["async_shared_stores"] == 64 * block_t // 128 // 2


@pytest.mark.parametrize("block_t,cluster", [(8, 4), (8, 1), (16, 2)])
def test_kernel_pushes_its_output_into_every_ranks_slot(block_t, cluster):
    """With a push target (2 ranks) the tile goes to both ranks' receive slots and nowhere else:
    plain global stores in pairs (one a rank), no atomics, and one volatile load, the call's epoch."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tests.wgmma_sass", "64", str(block_t), "kt=4", f"cluster={cluster}",
                           "push"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    assert s["spill_stores"] == 0 and s["a_register_hazards"] == 0 and s["atomics"] == 0
    assert s["global_stores"] and len(s["global_stores"]) % 2 == 0
    assert all(op.startswith("STG.E") for op in s["global_stores"])
    assert sum(".STRONG.SYS" in op for op in s["global_loads"]) == 1


def test_only_one_token_tile_unsplit_or_clustered_pushes():
    from pagedawq.kernels.awq_configs import wgmma_t_config
    from pagedawq.kernels.awq_wgmma_t import can_push
    for n, k in ((5120, 2560), (5120, 6912), (8192, 1024), (8192, 3584), (4096, 5504)):   # 13B/TP2, 70B/TP8, 7B/TP2
        for m in (1, 8, 16):
            assert can_push(m, k, 128, wgmma_t_config(m, n, k, 132, False)), (n, k, m)
    one = TConfig(64, 8, stages=2, split_k=1, k_tiles=4)
    assert can_push(8, 4096, 128, one) and not can_push(9, 4096, 128, one)     # two token tiles
    assert not can_push(1, 4096, 128, replace(one, split_k=3))                  # slices summed through the workspace
    assert can_push(1, 4096, 128, replace(one, split_k=4))                      # ... or as a cluster
    assert not can_push(1, 4096, 128, replace(one, consumers=2, k_phases=2))    # warp-specialised
    from pagedawq.kernels.awq_wgmma_t import wgmma_t_gemm_pushed
    from pagedawq.kernels.one_shot_allreduce import PushTarget
    words, zs = repack(*_layer(256, 128, 64, seed=3))
    target = PushTarget(torch.zeros(5, dtype=torch.int64), 0, 2, 1024)
    with pytest.raises(ValueError, match="cannot push the output of 9 tokens"):
        wgmma_t_gemm_pushed(torch.zeros(9, 256, dtype=torch.float16), words, zs, one, target)
    with pytest.raises(ValueError, match="exceed the receive slots"):
        wgmma_t_gemm_pushed(torch.zeros(8, 256, dtype=torch.float16), words, zs, replace(one, block_t=16),
                            PushTarget(target.table, 0, 2, 1000))


@pytest.mark.parametrize("block_n,block_t,kt,nc,kc,stages,split,silu,defer", [
    (64, 256, 1, 2, 1, 3, False, False, False), (64, 128, 2, 2, 1, 3, False, True, False),
    (64, 8, 4, 1, 2, 8, True, False, False), (64, 64, 2, 2, 2, 6, True, True, False),
    (64, 64, 2, 1, 2, 8, True, False, True)])
def test_warp_specialised_kernel_compiles_for_sm90_without_coupling_its_consumers(block_n, block_t, kt, nc, kc, stages,
                                                                                   split, silu, defer):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tests.wgmma_sass", "ws", str(block_n), str(block_t), f"kt={kt}",
                           f"nc={nc}", f"kc={kc}", f"stages={stages}", *(["split", "pdl"] if split else []),
                           *(["defer"] if defer else []), *(["silu"] if silu else [])], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    assert s["spills"] == 0 and s["a_register_hazards"] == 0
    assert (s["atomics"] > 0) == (split and not defer)
    assert s["setmaxnreg"] > 0    # registers moved from the TMA warp to the consumers
    # the producer's boxes: x and each channel group's words + zero/scale rows, for the first
    # `stages` steps (unrolled) and in its loop
    assert s["tma_loads"] == (stages + 1) * (1 + 2 * nc)
    # a K loop per consumer, each a step's HGMMAs (4 a K tile and 64 channels), one full wait, and
    # no CTA-wide barrier: the warpgroups drift apart (what the plain kernel with two warpgroups lacked)
    assert s["loops"] == [{"hgmma": 4 * kt * block_n // 64, "wait_all": 1, "cta_barriers": 0}] * (nc * kc)


@pytest.mark.parametrize("args", [["64", "8", "split", "kt=4", "cluster=4"], ["64", "64", "kt=2"],
                                  ["ws", "64", "8", "nc=1", "kc=2", "stages=8", "kt=4", "split", "pdl"]])
def test_weights_read_once_stream_with_an_l2_evict_first_hint(args):
    """``STREAM_W`` (a launch of one token tile): the loads of the words and the zero/scale rows carry
    an L2 evict-first policy in the SASS (``desc[URn]``), x's do not; without it none does
    (pagedawq/kernels/l2_hints.py)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    counts = {}
    for stream in (True, False):
        proc = subprocess.run([sys.executable, "-m", "tests.wgmma_sass", *args, *(["stream"] if stream else [])],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        s = json.loads(proc.stdout.strip().splitlines()[-1])
        counts[stream] = (s["tma_loads"], s["hinted_tma_loads"])
    (loads, hinted), (loads_plain, hinted_plain) = counts[True], counts[False]
    assert loads == loads_plain and hinted_plain == 0
    x_loads = loads // 3   # x, words, zero/scale: one box each a step (one channel group in the ws case)
    assert hinted == loads - x_loads


@pytest.mark.parametrize("block_t,kt,kc,stages", [(8, 4, 2, 8), (64, 2, 2, 6), (32, 2, 2, 4), (128, 2, 2, 4)])
def test_warp_specialised_kernel_sums_split_k_in_a_cluster(block_t, kt, kc, stages):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "tests.wgmma_sass", "ws", "64", str(block_t), f"kt={kt}", "nc=1",
                           f"kc={kc}", f"stages={stages}", "pdl", "cluster=2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    assert s["spills"] == 0 and s["a_register_hazards"] == 0
    assert s["atomics"] == 0 and s["gpu_membars"] == 0
    # every partition (the kc consumers and the producer, a full warpgroup here) arrives on the
    # cluster barrier once: a warp that never arrives would hang the cluster's wait
    assert s["cluster_arrives"] == kc + 1 and s["cluster_waits"] == 1
    assert s["async_shared_stores"] == 64 * block_t // 128 // 2
    assert s["loops"] == [{"hgmma": 4 * kt, "wait_all": 1, "cta_barriers": 0}] * kc


def test_split_k_slices_sum_as_a_cluster_where_it_was_measured_to_pay():
    from pagedawq.kernels.awq_wgmma_t import CLUSTER_MAX_T, cluster_reduces
    assert cluster_reduces(4, 64, 8, False) and cluster_reduces(2, 64, CLUSTER_MAX_T, False)
    assert cluster_reduces(8, 64, 16, False) and not cluster_reduces(16, 64, 16, False)   # not portable
    assert not cluster_reduces(3, 64, 8, False)      # 64 channels do not split in three chunks
    assert not cluster_reduces(4, 64, 128, False)    # large token tiles: the global workspace
    assert cluster_reduces(4, 64, 8, True)            # the SiLU epilogue: chunks of whole 16-row bands
    assert not cluster_reduces(8, 64, 8, True)        # 8-row chunks would split the gate/up pairs
    assert not cluster_reduces(1, 64, 8, False)


def test_split_k_launch_clusters_or_falls_back_to_the_workspace(monkeypatch):
    """``launch_split_k`` (both kernels' launch): clustered launches put the slices in clusters along
    axis 0 and return the summed output; otherwise, or where the device cannot give the cluster
    memory, the slices take the grid's next axis with a workspace, handed over with split_k_partials."""
    from pagedawq.kernels import awq_wgmma_t
    from pagedawq.kernels.split_k import SplitKPartials
    launches, clustered = [], []

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, **kw: launches.append((grid, args, kw))

    def launch_clustered(kernel, grid, cluster, extra, device, *args, **kw):
        clustered.append((grid, cluster, kw["CLUSTER"]))
        return cluster != 8   # 8: "the device cannot give that memory"

    monkeypatch.setattr(awq_wgmma_t, "launch_clustered", launch_clustered)
    cfg = TConfig(64, 8, split_k=4)
    x, zs = torch.zeros(3, 256), torch.zeros(2, 128, dtype=torch.int32)
    out, counters = torch.zeros(3, 128), torch.zeros(2, dtype=torch.int32)

    def launch(tiles, split, is_clustered, partials=False):
        return awq_wgmma_t.launch_split_k(Kernel(), tiles, split, is_clustered, cfg, x, ("xd", "wd", "zd"), zs, out,
                                          counters, partials, G=64)
    assert launch((2, 1), 4, True) is out and clustered[-1] == ((2, 1, 1), 4, 4) and not launches
    assert launch((2,), 8, True) is out and clustered[-1] == ((2, 1), 8, 8)       # refused: the workspace
    grid, args, kw = launches[-1]
    assert grid == (2, 8) and args[:4] == ("xd", "wd", "zd", out) and args[5] is counters and not kw["DEFER"]
    assert args[4].shape == (8, 3, 128) and args[6:] == (3, 128, 256, 128, 8) and kw["G"] == 64
    parts = launch((2, 1), 4, False, partials=True)
    assert isinstance(parts, SplitKPartials) and launches[-1][0] == (2, 1, 4) and launches[-1][2]["DEFER"]
    assert launch((2, 1), 1, False, partials=True) is out and launches[-1][1][4] is out   # no split: no workspace


def test_tiles_the_kernel_cannot_run_are_refused():
    from pagedawq.kernels.awq_wgmma_t import wgmma_t_gemm
    x = torch.zeros(8, 256, dtype=torch.float16)
    for n, cfg in ((256, TConfig(128, 256)),   # 256 fp32 accumulators a thread
                   (256, TConfig(256, 8)),     # more channels than one warpgroup's two m64 wgmmas
                   (192, TConfig(128, 8))):    # N not a multiple of BLOCK_N
        words, zs = repack(*_layer(256, n, 64, seed=2))
        with pytest.raises(ValueError, match="BLOCK_N"):
            wgmma_t_gemm(x, words, zs, cfg, torch.empty(8, n, dtype=torch.float16))
    words, zs = repack(*_layer(256, 192, 64, seed=2))
    for cfg, match in ((TConfig(64, 128, consumers=3), "2 or 4 consumers"),
                       (TConfig(64, 8, stages=3, consumers=2, k_phases=2), "multiple of the K phases"),
                       (TConfig(64, 128, consumers=2), "channels must divide N = 192")):   # a CTA of 128
        with pytest.raises(ValueError, match=match):
            wgmma_t_gemm(x, words, zs, cfg, torch.empty(8, 192, dtype=torch.float16))


def test_config_choice():
    from pagedawq.kernels.awq_configs import WGMMA_T_M_MIN, one_warpgroup_config, wgmma_t_config
    sms = 132
    assert WGMMA_T_M_MIN == 1
    # up to 256 tokens: one warpgroup of 64 channels and the smallest token tile that holds M up to
    # 128; above, the warp-specialised kernel (two consumer warpgroups)
    assert [(c.block_n, c.block_t, c.consumers) for c in (wgmma_t_config(m, 22016, 4096, sms)
                                                          for m in (2, 8, 9, 33, 100, 256, 300, 2048, 4096))] == \
        [(64, 8, 1), (64, 8, 1), (64, 16, 1), (64, 64, 1), (64, 128, 1), (64, 128, 1), (128, 128, 2), (128, 128, 2),
         (128, 128, 2)]
    # its tile: consumers of 128 channels x 128 tokens where that fills the GPU as well as 64 x 128 does
    # (padding and the last wave counted): qkv at 512 tokens has 192 CTAs of 256 x 128 (1.45 waves)
    # or 384 of 128 x 128 (2.9); down at 512 64 or 128
    assert [(c.block_n, c.block_t) for c in (wgmma_t_config(m, 12288, 4096, sms) for m in (300, 512, 1024, 4096))] \
        == [(64, 128), (64, 128), (128, 128), (128, 128)]
    assert [wgmma_t_config(m, 4096, 11008, sms).block_n for m in (512, 1024)] == [64, 128]
    assert (lambda c: (c.block_n, c.block_t, c.k_tiles))(wgmma_t_config(512, 4480, 4096, sms)) == (64, 256, 1)  # N % 256
    assert [(c.stages, c.k_tiles, c.split_k) for c in (wgmma_t_config(m, 4096, 4096, sms) for m in (512, 1024))] == \
        [(3, 2, 1), (3, 2, 1)]
    # narrow layers (70B/TP8 qkv, 8192 x 1280: 40 CTAs of 128 x 128 at 512 tokens): split-K to about a wave
    assert [(c.consumers, c.block_t, c.split_k) for c in (wgmma_t_config(m, 1280, 8192, sms) for m in (300, 512, 1024))] \
        == [(2, 128, 4), (2, 128, 3), (2, 128, 1)]
    c = wgmma_t_config(2048, 4032, 4096, sms)    # N not a multiple of the CTA's 128 channels: one warpgroup
    assert (c.block_n, c.block_t, c.consumers) == (64, 256, 1)
    # one warpgroup: split-K to two programs per SM at M <= 128 (one above; halved at 128-token
    # tiles), at most 4 slices of >= 8 K tiles
    assert one_warpgroup_config(16, 12288, 4096, sms).split_k == 2       # 192 tiles
    assert one_warpgroup_config(16, 22016, 4096, sms).split_k == 1       # 344 tiles
    assert one_warpgroup_config(16, 4096, 11008, sms).split_k == 4       # 64 tiles: capped at 4
    assert one_warpgroup_config(128, 4096, 11008, sms).split_k == 4      # 64 tiles: halving would leave < 1 per SM
    assert wgmma_t_config(128, 12288, 4096, sms).split_k == 1     # 192 tiles: 2, halved (a program per SM left)
    assert one_warpgroup_config(128, 4096, 4096, sms).split_k == 2       # 64 tiles: 4, halved (slices < 32 K tiles)
    assert one_warpgroup_config(1, 1280, 8192, sms).split_k == 12        # 20 tiles: up to 16 slices of >= 10 K tiles
    # up to 32 tokens a split of 3 (120 or 128 tiles) becomes 2, which sums as a cluster; 64 tokens keep 3
    assert [one_warpgroup_config(m, 7680, 5120, sms).split_k for m in (1, 16, 32, 64)] == [2, 2, 2, 3]
    assert one_warpgroup_config(16, 8192, 3584, sms).split_k == 2        # 70B/TP8 down: 128 tiles
    from pagedawq.kernels.awq_wgmma_t import cluster_reduces
    assert all(cluster_reduces(one_warpgroup_config(m, n, k, sms).split_k, 64, 16, False)
               for m in (1, 16) for n, k in ((7680, 5120), (8192, 3584), (4096, 11008), (12288, 4096)))
    assert one_warpgroup_config(1, 8192, 1024, sms).split_k == 1         # 16 K tiles: no slices of >= 10
    assert one_warpgroup_config(16, 1024, 512, sms).split_k == 1         # 8 K tiles: no split
    assert [(c.stages, c.k_tiles) for c in (one_warpgroup_config(m, 4096, 4096, sms) for m in (8, 32, 64, 128))] == \
        [(2, 4), (2, 4), (2, 2), (2, 2)]
    assert (lambda c: (c.stages, c.k_tiles))(wgmma_t_config(512, 4032, 4096, sms)) == (3, 1)   # 64 x 256


def test_a_part_filled_last_wave_goes_to_a_second_launch_of_smaller_tiles_or_k_slices():
    from pagedawq.kernels.awq_configs import _ws_wave_time, wgmma_t_config, ws_wave_tail
    sms = 132
    cfg = wgmma_t_config(1024, 22016, 4096, sms)   # 7B gate_up: 688 CTAs of 256 x 128, 5.2 waves run as 6
    assert (cfg.cta_channels, cfg.block_t, cfg.split_k) == (256, 128, 1)
    n_main, tail = ws_wave_tail(1024, 22016, 4096, sms, cfg)
    assert n_main == 82 * 256      # 82 channel tiles x 8 token tiles = 656 CTAs: 5 waves (less 4 CTAs)
    assert (tail.block_n, tail.block_t, tail.consumers, tail.split_k) == (64, 128, 2, 2)   # 128 CTAs
    one_cta = _ws_wave_time(1024, 256, 4096, sms, cfg)
    assert _ws_wave_time(1024, 22016, 4096, sms, cfg) == 6 * one_cta
    assert _ws_wave_time(1024, 22016 - n_main, 4096, sms, tail) == pytest.approx(one_cta / 4 / 0.9)
    # at 2048 tokens the last 1024 channels need no K slices: 64 x 128 tiles are a wave
    n_main, tail = ws_wave_tail(2048, 22016, 4096, sms, wgmma_t_config(2048, 22016, 4096, sms))
    assert n_main == 82 * 256 and (tail.cta_channels, tail.split_k) == (128, 1)
    # none: a last wave 91% full (7B qkv: 384 CTAs), exactly whole waves, no whole wave (13B down at
    # 512 tokens: 80 CTAs), a split config, the small-M kernels
    for m, n, k in ((1024, 12288, 4096), (2048, 4096, 11008), (512, 5120, 13824), (256, 22016, 4096),
                    (16, 4096, 11008)):
        assert ws_wave_tail(m, n, k, sms, wgmma_t_config(m, n, k, sms)) is None, (m, n, k)
    assert ws_wave_tail(1024, 1280, 8192, 132, wgmma_t_config(1024, 1280, 8192, sms)) is None
    assert ws_wave_tail(1024, 22016, 4096, sms, replace(cfg, split_k=2)) is None


def test_channel_slices_are_the_repacked_layer_cut_at_a_channel():
    from pagedawq.kernels.awq_wgmma_t import channel_slices
    words, zs = repack(*_layer(128, 384, 64, seed=5))
    (w0, z0), (w1, z1) = channel_slices(words, zs, 256)
    assert w0.shape == (2, 16, BAND_WORDS) and w1.shape == (2, 8, BAND_WORDS)
    assert w1.stride() == (24 * BAND_WORDS, BAND_WORDS, 1)       # views: TMA takes the strides
    assert torch.equal(torch.cat([w0, w1], 1).flatten(), words.flatten())
    assert torch.equal(torch.cat([z0, z1], 1), zs) and z1.data_ptr() == zs.data_ptr() + 256 * 4
    for bad in (64, 0, 384):
        with pytest.raises(ValueError, match="multiple of 128 inside"):
            channel_slices(words, zs, bad)


def test_small_m_config_choice():
    """At 33-64 tokens, layers of at most two 64-channel tiles an SM get the warp-specialised kernel
    with two K phases: one channel group a CTA (two where one would need more CTAs than SMs), split-K
    up to a CTA an SM with >= 2 steps a consumer, as many ring slots as fit up to 8. At 65-128 tokens
    only one channel group whose K slices sum as a cluster (2, 4 or 8 of them)."""
    from pagedawq.kernels.awq_configs import SMEM_BYTES, k_tiles_per_step, wgmma_t_config, ws_smem_bytes
    sms = 132

    def shape(c):
        return c.block_t, c.channel_groups, c.k_phases, c.split_k, c.k_tiles, c.stages
    assert shape(wgmma_t_config(64, 4096, 11008, sms)) == (64, 1, 2, 2, 2, 8)     # down: 64 tiles, 2 slices
    assert shape(wgmma_t_config(33, 4096, 4096, sms)) == (64, 1, 2, 2, 2, 8)     # o
    assert shape(wgmma_t_config(64, 12288, 4096, sms)) == (64, 2, 2, 1, 2, 6)    # qkv: 192 tiles -> 96 CTAs
    assert shape(wgmma_t_config(64, 1280, 8192, sms)) == (64, 1, 2, 6, 2, 8)     # 20 tiles: 6 slices of 4+ steps
    assert shape(wgmma_t_config(64, 1536, 576, sms)) == (64, 1, 2, 2, 2, 8)      # SmolLM2 gate_up: 9 K tiles, run 1 a step
    assert wgmma_t_config(64, 22016, 4096, sms).consumers == 1   # 344 tiles: one-warpgroup programs fill the GPU
    assert shape(wgmma_t_config(65, 4096, 11008, sms)) == (128, 1, 2, 2, 2, 4)     # down at 65-128 tokens
    assert shape(wgmma_t_config(128, 4096, 4096, sms)) == (128, 1, 2, 2, 2, 4)     # o
    assert wgmma_t_config(128, 12288, 4096, sms).consumers == 1    # qkv: two channel groups, no cluster
    assert wgmma_t_config(128, 5120, 6912, sms).consumers == 1     # 13B/TP2 down: 80 tiles, no split
    assert wgmma_t_config(129, 4096, 11008, sms).consumers == 1    # above 128 tokens
    from pagedawq.kernels.awq_configs import WS_SMALL_CLUSTER_SIZES
    from pagedawq.kernels.clusters import CLUSTER_SIZES
    assert WS_SMALL_CLUSTER_SIZES == CLUSTER_SIZES   # the pure-Python rule mirrors what clusters.py launches
    assert wgmma_t_config(64, 1024, 192, sms).consumers == 1     # 3 K tiles: not two steps a consumer
    # up to 32 tokens one warpgroup (faster alone at 17-32; at 1-16 faster alone, slower in decode) ...
    assert [wgmma_t_config(m, 4096, 11008, sms).consumers for m in (1, 16, 32)] == [1, 1, 1]
    # ... but a gate/up pair with the SiLU epilogue takes K phases at 1-16 tokens where its CTAs,
    # unsplit, fill >= 80% of the SMs: 13B/TP2 (216 tiles -> 108 CTAs of two channel groups),
    # 70B/TP8 (112 of one); not 7B (344 tiles: one-warpgroup programs fill the GPU), nor 32 tokens,
    # nor the same shape without the epilogue (13B qkv at TP=1, 240 tiles, lost 0.10 ms a step)
    assert [shape(wgmma_t_config(m, 13824, 5120, sms, True)) for m in (1, 16)] == [(8, 2, 2, 1, 4, 8),
                                                                                 (16, 2, 2, 1, 4, 8)]
    assert shape(wgmma_t_config(1, 7168, 8192, sms, True))[:4] == (8, 1, 2, 1)
    assert wgmma_t_config(1, 22016, 4096, sms, True).consumers == 1
    assert wgmma_t_config(32, 13824, 5120, sms, True).consumers == 1
    assert wgmma_t_config(1, 13824, 5120, sms).consumers == 1
    assert wgmma_t_config(1, 15360, 5120, sms).consumers == 1
    for m, n, k in ((64, 12288, 4096), (64, 4096, 11008), (64, 8192, 8192), (128, 4096, 11008)):   # the ring fits
        c = wgmma_t_config(m, n, k, sms)
        assert ws_smem_bytes(c, k_tiles_per_step(k, 64, c), 64) <= SMEM_BYTES


def test_fast_memory_decode_tiles():
    """On a GPU whose memory is faster than the H100's (by name: the H200), the 8-token tile wants
    three one-warpgroup programs an SM and no K-phase gate/up: the two changes timed on 2 x H200
    (13B/TP=2 qkv from 2 to 4 K slices, gate_up back to one warpgroup, split 2). Other tiles, and
    every tile on other GPUs, keep the H100 rule."""
    from pagedawq.kernels.awq_configs import has_fast_memory, wgmma_t_config
    assert has_fast_memory("NVIDIA H200") and has_fast_memory("NVIDIA H200 NVL")
    assert has_fast_memory("NVIDIA GH200 480GB")   # 4.0-4.9 TB/s: also faster than the H100
    assert not has_fast_memory("NVIDIA H100 80GB HBM3") and not has_fast_memory("NVIDIA A100-SXM4-80GB")
    sms = 132

    def shape(c):
        return c.block_t, c.consumers, c.split_k

    assert shape(wgmma_t_config(1, 7680, 5120, sms, fast_memory=True)) == (8, 1, 4)          # 13B/TP2 qkv
    assert shape(wgmma_t_config(1, 7680, 5120, sms)) == (8, 1, 2)
    assert shape(wgmma_t_config(8, 13824, 5120, sms, True, fast_memory=True)) == (8, 1, 2)    # gate_up
    assert shape(wgmma_t_config(8, 13824, 5120, sms, True)) == (8, 4, 1)
    for m, n, k, silu in ((1, 5120, 2560, False), (1, 5120, 6912, False), (1, 15360, 5120, False),   # o, down, TP=1
                          (16, 7680, 5120, False), (16, 13824, 5120, True), (64, 4096, 11008, False)):
        assert wgmma_t_config(m, n, k, sms, silu, fast_memory=True) == wgmma_t_config(m, n, k, sms, silu)


def test_forced_path_without_repacked_weights_is_a_clear_error():
    from pagedawq.kernels.awq_gemm import awq_gemm
    layer = _layer(128, 128, 64, seed=3)
    x = torch.randn(64, 128, dtype=torch.float16)
    with pytest.raises(ValueError, match="repacked weights"):
        awq_gemm(x, *layer, path="wgmma_t")


def test_hazard_check_flags_a_write_to_a_running_wgmmas_a_registers():
    from tests.wgmma_sass import a_register_hazards
    hgmma, wait = "HGMMA.64x16x16.F32 R24, R40, gdesc[UR8], R24 ;", "WARPGROUP.DEPBAR.LE gsb0, 0x0 ;"
    write = "LOP3.LUT R41, R2, 0xf000f, R3, 0xea, !PT ;"
    assert a_register_hazards([hgmma, write, wait]) == [write]
    assert a_register_hazards([hgmma, "LDS.128 R38, [R4] ;", wait]) == ["LDS.128 R38, [R4] ;"]   # R38..R41
    assert a_register_hazards([hgmma, wait, write]) == []
    assert a_register_hazards([hgmma, "LOP3.LUT R44, R2, 0xf, R3, 0xea, !PT ;", wait]) == []


def _rel_err(out: torch.Tensor, x: torch.Tensor, layer) -> float:
    ref = x.double() @ dequantize_awq(*layer).double()
    return ((out.double() - ref).norm() / ref.norm()).item()


CONFIGS = [TConfig(64, 8, stages=8), TConfig(64, 16, stages=2, k_tiles=4), TConfig(64, 32, stages=8, split_k=4),
           TConfig(128, 64), TConfig(64, 64, stages=2, split_k=3, k_tiles=2), TConfig(64, 128, stages=3),
           TConfig(64, 128, stages=2, k_tiles=2), TConfig(128, 128), TConfig(64, 256, stages=3),
           TConfig(64, 256, stages=2, k_tiles=2), TConfig(128, 32, split_k=2, k_tiles=4),
           # split-K summed by clusters of 2, 4 and 8 K slices; at 128-token tiles (above
           # CLUSTER_MAX_T) the slices meet in global memory
           TConfig(64, 8, stages=2, split_k=4, k_tiles=4), TConfig(64, 16, stages=2, split_k=8, k_tiles=4),
           TConfig(64, 128, stages=2, split_k=2),
           # warp-specialised (awq_wgmma_t_ws): two consumer warpgroups of BLOCK_N channels a CTA ...
           TConfig(64, 256, stages=3, consumers=2), TConfig(64, 128, stages=3, k_tiles=2, consumers=2),
           TConfig(128, 128, stages=3, k_tiles=2, consumers=2), TConfig(64, 64, stages=3, k_tiles=4, consumers=2),
           # ... with K phases (consumers of one channel group taking turns over K) and split-K
           TConfig(64, 8, stages=8, split_k=2, k_tiles=4, consumers=2, k_phases=2),
           TConfig(64, 64, stages=6, split_k=2, k_tiles=2, consumers=2, k_phases=2),
           TConfig(64, 128, stages=4, split_k=2, k_tiles=2, consumers=2, k_phases=2),
           TConfig(64, 16, stages=8, k_tiles=4, consumers=4, k_phases=2),
           TConfig(64, 8, stages=8, k_tiles=4, consumers=4, k_phases=2),   # unsplit at 1-16 tokens (gate_up, decode)
           TConfig(64, 64, stages=6, split_k=3, k_tiles=2, consumers=4, k_phases=2),
           TConfig(64, 32, stages=4, split_k=2, k_tiles=2, consumers=4, k_phases=4),
           TConfig(128, 64, stages=3, split_k=2, k_tiles=2, consumers=2)]


@hopper
@pytest.mark.gpu
@pytest.mark.parametrize("k,n,group", [(4096, 12288, 128), (11008, 4096, 128), (5120, 13824, 64), (576, 1536, 64)])
def test_gpu_every_config_matches_float64(k, n, group):
    from pagedawq.kernels.awq_gemm import _counters
    from pagedawq.kernels.split_k import SplitKPartials
    from pagedawq.kernels.awq_wgmma_t import output_tiles, wgmma_t_gemm
    layer = _layer(k, n, group, seed=k + n, device="cuda")
    words, zs = repack(*layer)
    failed = []
    for m in (1, 5, 16, 33, 64, 100, 128, 300, 512, 1024, 2100):
        x = (torch.randn(m, k, device="cuda") + 0.1).half()
        for cfg in CONFIGS:
            if n % cfg.cta_channels or (m > 1024 and cfg.consumers == 1):
                continue
            out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
            counters = _counters(x.device, output_tiles(m, n, cfg))
            try:
                wgmma_t_gemm(x, words, zs, cfg, out, counters)
                if cfg.split_k > 1:
                    assert torch.equal(wgmma_t_gemm(x, words, zs, cfg, torch.empty_like(out), counters), out)
                    # the partials left to the consumer add up to the same bits
                    parts = wgmma_t_gemm(x, words, zs, cfg, torch.empty_like(out), counters, split_k_partials=True)
                    assert isinstance(parts, SplitKPartials) or parts.shape == out.shape
                    assert torch.equal(parts.total() if isinstance(parts, SplitKPartials) else parts, out)
                torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001 - collected into the report
                failed.append((m, cfg, f"{type(e).__name__}: {str(e)[:300]}"))
                continue
            nan_rows = torch.isnan(out).any(dim=1).nonzero().flatten().tolist()
            err = _rel_err(out.nan_to_num(), x, layer)
            if nan_rows or err > 2e-3:
                failed.append((m, cfg, f"rel err {err:.1e}, NaN rows {nan_rows[:4]}..{nan_rows[-2:]} ({len(nan_rows)})"))
    assert not failed, "\n".join(map(str, failed))
    assert int(_counters(torch.device("cuda", torch.cuda.current_device()), 1).abs().sum()) == 0


@hopper
@pytest.mark.gpu
def test_gpu_awq_gemm_takes_the_path_with_repacked_weights_and_in_a_cuda_graph():
    from pagedawq.kernels.awq_gemm import awq_gemm, repack_for_wgmma_t, wgmma_t_usable
    layer = _layer(4096, 4096, 128, seed=11, device="cuda")
    repacked = repack_for_wgmma_t(*layer)
    assert repacked is not None
    for m in (1, 3, 16, 64, 200):
        x = torch.randn(m, 4096, device="cuda", dtype=torch.float16)
        assert wgmma_t_usable(x, 4096, 4096, 128, torch.float16)
        out = torch.full((m, 4096), float("nan"), dtype=torch.float16, device="cuda")
        awq_gemm(x, *layer, out=out, repacked=repacked)
        assert _rel_err(out, x, layer) < 2e-3
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            awq_gemm(x, *layer, out=out, repacked=repacked)
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert _rel_err(out, x, layer) < 2e-3


@hopper
@pytest.mark.gpu
@pytest.mark.parametrize("k,n,group", [(5120, 13824, 64), (8192, 7168, 128)])
def test_gpu_decode_gate_up_with_k_phases_and_the_silu_epilogue(k, n, group):
    """13B/TP=2 and 70B/TP=8 gate_up at 1-16 tokens: the K-phase kernel unsplit (two channel groups,
    one) with the SiLU epilogue, against the activation after the plain GEMM, also from a CUDA graph."""
    from pagedawq.kernels import ops
    from pagedawq.kernels.awq_configs import wgmma_t_config
    from pagedawq.kernels.awq_gemm import awq_gemm, awq_gemm_silu_and_mul, repack_for_wgmma_t
    layer = _layer(k, n, group, seed=13, device="cuda")
    repacked = repack_for_wgmma_t(*layer, silu_and_mul=True)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for m in (1, 5, 16):
        assert wgmma_t_config(m, n, k, sms, True).k_phases == 2
        x = ((torch.randn(m, k, device="cuda") + 0.1) / 8).half()
        awq_gemm_silu_and_mul(x, *layer, repacked)   # compiled outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = awq_gemm_silu_and_mul(x, *layer, repacked)
        for _ in range(2):
            x.copy_((torch.randn_like(x) + 0.1) / 8)
            graph.replay()
            torch.cuda.synchronize()
            expected = ops.silu_and_mul(awq_gemm(x, *layer)).double()
            assert ((out.double() - expected).norm() / expected.norm()).item() < 2e-3, m


@hopper
@pytest.mark.gpu
def test_gpu_split_k_partials_for_the_norm_after_a_row_parallel_layer():
    """awq_gemm_split_k_partials: a split-K launch whose slices do not sum as a cluster (7B down at
    256 tokens) hands over its partials, which the fused add + RMSNorm turns into the same bits as
    after awq_gemm, also in a CUDA graph; one whose slices do (1-16 tokens: one warpgroup a program;
    64-128: the K-phase kernel), or without split-K (a wide layer), returns the output itself."""
    from pagedawq.kernels import fused_ops
    from pagedawq.kernels.awq_gemm import awq_gemm, awq_gemm_split_k_partials, repack_for_wgmma_t
    from pagedawq.kernels.split_k import SplitKPartials
    down, wide = _layer(11008, 4096, 128, seed=3, device="cuda"), _layer(4096, 22016, 128, seed=4, device="cuda")
    weight = torch.rand(4096, device="cuda").half() + 0.5
    for m in (1, 16, 64, 128, 256):
        x = torch.randn(m, 11008, device="cuda", dtype=torch.float16) * 0.1
        residual = torch.randn(m, 4096, device="cuda", dtype=torch.float16)
        repacked = repack_for_wgmma_t(*down)
        parts = awq_gemm_split_k_partials(x, *down, repacked)
        summed = awq_gemm(x, *down, repacked=repacked)
        if m <= 128:
            assert isinstance(parts, torch.Tensor) and torch.equal(parts, summed)
        else:
            assert isinstance(parts, SplitKPartials) and parts.slices.shape[0] > 1
        want = fused_ops.fused_add_rms_norm(summed, residual, weight, 1e-5)
        got = fused_ops.fused_add_rms_norm(parts, residual, weight, 1e-5)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), m
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            in_graph = fused_ops.fused_add_rms_norm(awq_gemm_split_k_partials(x, *down, repacked), residual, weight,
                                                    1e-5)
        in_graph[0].fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(in_graph[0], want[0]), m
    x = torch.randn(64, 4096, device="cuda", dtype=torch.float16)
    out = awq_gemm_split_k_partials(x, *wide, repack_for_wgmma_t(*wide))
    assert isinstance(out, torch.Tensor) and _rel_err(out, x, wide) < 2e-3


@hopper
@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 16])
def test_gpu_pdl_chain_reads_each_input_after_the_kernel_before_wrote_it(m):
    """norm -> GEMM -> norm -> ... in a CUDA graph: the norms let the next kernel start early and the
    GEMMs are launched with PDL (pagedawq.kernels.pdl), so each GEMM must still read the x its norm
    wrote in this replay; the buffers hold the previous replay's values, which would show."""
    from pagedawq.kernels import fused_ops
    from pagedawq.kernels.awq_gemm import awq_gemm, repack_for_wgmma_t
    from pagedawq.kernels.pdl import use_pdl
    assert use_pdl(torch.device("cuda"), m)
    layer = _layer(4096, 4096, 128, seed=5, device="cuda")
    repacked = repack_for_wgmma_t(*layer)
    weight = torch.rand(4096, device="cuda").half() + 0.5
    h0 = torch.empty(m, 4096, device="cuda", dtype=torch.float16)

    def chain() -> list[torch.Tensor]:
        hs = [h0]
        for _ in range(6):
            hs.append(awq_gemm(fused_ops.rms_norm(hs[-1], weight, 1e-5), *layer, repacked=repacked))
        return hs

    h0.normal_()
    chain()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        hs = chain()
    for seed in range(3):
        torch.manual_seed(seed)
        h0.normal_()
        graph.replay()
        torch.cuda.synchronize()
        for i in range(6):
            assert _rel_err(hs[i + 1], fused_ops.rms_norm(hs[i], weight, 1e-5), layer) < 2e-3, (seed, i)


def _silu_and_mul_ref(x: torch.Tensor, layer) -> torch.Tensor:
    """silu(gate) * up from the float64 product rounded to fp16, in float32 (as the unfused path)."""
    h = (x.double() @ dequantize_awq(*layer).double()).half().float()
    g, u = h.chunk(2, dim=-1)
    return (g / (1 + torch.exp(-g)) * u).double()


@hopper
@pytest.mark.gpu
def test_gpu_a_last_wave_in_a_second_launch_matches_float64_plain_and_with_the_silu_epilogue():
    from pagedawq.kernels.awq_configs import wgmma_t_config, ws_wave_tail
    from pagedawq.kernels.awq_gemm import _sm_count, awq_gemm, awq_gemm_silu_and_mul, repack_for_wgmma_t
    sms = _sm_count(torch.device("cuda", torch.cuda.current_device()))
    for k, n, ms in ((4096, 22016, (1024, 1330, 2048)), (13824, 5120, (960, 1737))):
        layer = _layer(k, n, 128, seed=k + n + 2, device="cuda")
        repacked, paired = repack_for_wgmma_t(*layer), repack_for_wgmma_t(*layer, silu_and_mul=True)
        for m in ms:
            assert ws_wave_tail(m, n, k, sms, wgmma_t_config(m, n, k, sms)) is not None, (k, n, m)
            x = ((torch.randn(m, k, device="cuda") + 0.1) / 8).half()
            out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
            awq_gemm(x, *layer, out=out, repacked=repacked)
            assert not torch.isnan(out).any() and _rel_err(out, x, layer) < 2e-3, (k, n, m)
            got, ref = awq_gemm_silu_and_mul(x, *layer, paired).double(), _silu_and_mul_ref(x, layer)
            assert ((got - ref).norm() / ref.norm()).item() < 2e-3, (k, n, m)


@hopper
@pytest.mark.gpu
@pytest.mark.parametrize("k,n,group", [(4096, 22016, 128), (5120, 13824, 64), (576, 3072, 64)])
def test_gpu_silu_epilogue_matches_the_unfused_activation(k, n, group):
    from pagedawq.kernels.awq_gemm import _counters
    from pagedawq.kernels.awq_wgmma_t import output_tiles, wgmma_t_gemm
    layer = _layer(k, n, group, seed=k + n + 1, device="cuda")
    words, zs = repack(*layer, silu_channel_order(n))
    failed = []
    for m in (1, 5, 16, 64, 300, 1024):
        # scaled so that silu(gate) * up stays inside fp16 (+-65504) for this layer's products (~100 at x ~ 1)
        x = ((torch.randn(m, k, device="cuda") + 0.1) / 8).half()
        ref = _silu_and_mul_ref(x, layer)
        for cfg in CONFIGS:
            if n % cfg.cta_channels:
                continue
            out = torch.full((m, n // 2), float("nan"), dtype=torch.float16, device="cuda")
            wgmma_t_gemm(x, words, zs, cfg, out, _counters(x.device, output_tiles(m, n, cfg)), silu_and_mul=True)
            torch.cuda.synchronize()
            err = ((out.double() - ref).norm() / ref.norm()).item()
            if torch.isnan(out).any() or err > 2e-3:
                failed.append((m, cfg, f"rel err {err:.1e}, NaN {int(torch.isnan(out).sum())}"))
    assert not failed, "\n".join(map(str, failed))


@hopper
@pytest.mark.gpu
def test_gpu_awq_gemm_silu_and_mul_in_a_cuda_graph_warp_specialised_and_unfused():
    from pagedawq.kernels import ops
    from pagedawq.kernels.awq_gemm import awq_gemm, awq_gemm_silu_and_mul, repack_for_wgmma_t
    layer = _layer(4096, 2 * 4096, 128, seed=12, device="cuda")
    repacked = repack_for_wgmma_t(*layer, silu_and_mul=True)
    assert repacked is not None
    for m in (1, 16, 200, 300, 2049):   # 300, 2049: the warp-specialised kernel's epilogue
        x = (torch.randn(m, 4096, device="cuda") / 8).half()   # silu(gate) * up inside fp16's range
        expected = ops.silu_and_mul(awq_gemm(x, *layer))
        for got in (awq_gemm_silu_and_mul(x, *layer, repacked), awq_gemm_silu_and_mul(x, *layer, None)):  # fused, unfused
            assert ((got.double() - expected.double()).norm() / expected.double().norm()).item() < 2e-3, m
        if m <= 16:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = awq_gemm_silu_and_mul(x, *layer, repacked)
            x.copy_(torch.randn_like(x) / 8)
            graph.replay()
            torch.cuda.synchronize()
            expected = ops.silu_and_mul(awq_gemm(x, *layer))
            assert ((out.double() - expected.double()).norm() / expected.double().norm()).item() < 2e-3, m
