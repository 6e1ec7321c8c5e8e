"""Is a small-M AWQ GEMM bound by DRAM or by its SMs? Each layer's time with its weights streamed
from DRAM (calls rotating over copies >= 4x L2, as ``kernels.py`` and a decode step do) against
the same calls on one copy that stays resident in L2.

If the L2-resident call is about as slow, the kernel's own pace bounds it (its programs' step
chain, and how the programs are placed on the SMs); if it is much faster, the DRAM stream does and
only more bytes in flight pay. (H100, session 17: 2-18% faster in L2 on the 7B and 13B/TP2 layers.) ``--config`` adds "wgmma_t" configs (as
``ncu_gemm.py --config``) next to ``awq_gemm``'s choice, and ``--variant`` the rule's config of
each row with some fields replaced (e.g. ``k_tiles=8`` or ``stages=3,k_tiles=8``); with ``--with-tail``
those launch as ``awq_gemm`` would split a part-filled last wave off them (``ws_wave_tail``). Layers whose
weights exceed half of L2 are skipped for the resident column.

    python benchmarks/gemm_residency.py [--ms 1 16] [--config 64,8,4,2,4 ...] [--variant k_tiles=8 ...]
    python benchmarks/gemm_residency.py --fit 4096 7680   # awq_gemm at M = 1 over K = 1024-16384

``--fit N``: for each N, ``awq_gemm``'s time at M = 1 (from DRAM) over a range of K, and the
least-squares line time = fixed + bytes / rate: the fixed part is what each call pays whatever its
size (launch, the wait for the previous kernel, the first data, the reduction and the tail), the
rate what its stream reaches once running. (Session 17's 3.1-4.0 us came from timings that also
charged each call an eighth of a graph replay's own launch and drain, ~1 us; ``kernels.graph_time_us``
has timed the marginal call since session 42.)
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch
from kernels import Layer, graph_time_us
from ncu_gemm import CONFIG_FIELDS, parse_config

from pagedawq.kernels import clusters
from pagedawq.kernels.awq_configs import wgmma_t_config, ws_wave_tail
from pagedawq.kernels.awq_gemm import _counters, _launch_with_tail, awq_gemm, wgmma_t_module
from pagedawq.kernels.awq_wgmma_t import output_tiles, wgmma_t_gemm

LAYERS = [("7b down", 11008, 4096), ("7b o", 4096, 4096), ("7b qkv", 4096, 12288), ("7b gate_up", 4096, 22016),
          ("13b/tp2 qkv", 5120, 7680), ("13b/tp2 down", 6912, 5120), ("13b/tp2 o", 2560, 5120),
          ("13b/tp2 gate_up", 5120, 13824)]


def parse_variant(text: str) -> dict[str, int]:
    """``field=value[,field=value]`` -> the WgmmaTConfig fields to replace in the rule's config."""
    return {f: int(v) for f, v in (item.split("=") for item in text.split(","))}


def row_times(layer: Layer, m: int, cfg, tail: tuple | None = None) -> tuple[float, float]:
    """(µs from DRAM, µs resident in L2) of one config (None: awq_gemm's choice) at M = m; with
    ``tail`` (``ws_wave_tail``'s plan for cfg), cfg's whole waves and the rest as awq_gemm splits them."""
    x = layer.x(m)
    out = torch.empty(m, layer.n, dtype=torch.float16, device="cuda")
    if cfg is None:
        fns = [lambda w=w, r=r: awq_gemm(x, *w, out=out, repacked=r) for w, r in zip(layer.int4, layer.repacked)]
    elif tail is not None:
        module = wgmma_t_module()
        fns = [lambda p=p: _launch_with_tail(module, x, p, out, cfg, *tail, False) for p in layer.repacked]
    else:
        cnt = _counters(x.device, output_tiles(m, layer.n, cfg))
        fns = [lambda p=p: wgmma_t_gemm(x, *p, cfg, out, cnt) for p in layer.repacked]
    fns[0]()
    err = layer.rel_err(m, out)
    if err > 2e-3:
        raise AssertionError(f"{cfg}: relative error {err:.1e}")
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    resident = graph_time_us([fns[0]] * 8) if layer.bytes(m) < l2 // 2 else float("nan")
    return graph_time_us(fns), resident


def line(points: list[tuple[float, float]]) -> str:
    """The least-squares ``fixed us + bytes / GB/s`` through (MB, us) points."""
    xs, ys = torch.tensor([p[0] for p in points]), torch.tensor([p[1] for p in points])
    slope = float(((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum())
    return f"{float(ys.mean()) - slope * float(xs.mean()):.2f} us + bytes / {1e3 / slope:.0f} GB/s"


def fit(ns: list[int], ks: list[int]) -> None:
    """awq_gemm and fp16 cuBLAS at M = 1 over ``ks``, and each one's line (see the module docstring)."""
    print(f"{'N':>6}{'K':>7}{'AWQ MB':>8}{'AWQ us':>8}{'fp16 MB':>8}{'cuBLAS us':>10}")
    for n in ns:
        awq, ref = [], []
        for k in ks:
            layer = Layer(k, n, seed=k + n)
            x = layer.x(1)
            out = torch.empty(1, n, dtype=torch.float16, device="cuda")
            awq.append((layer.bytes(1) / 1e6, row_times(layer, 1, None)[0]))
            ref.append((k * n * 2 / 1e6, graph_time_us([lambda w=w: torch.matmul(x, w, out=out) for w in layer.fp16])))
            print(f"{n:>6}{k:>7}{awq[-1][0]:>8.1f}{awq[-1][1]:>8.2f}{ref[-1][0]:>8.1f}{ref[-1][1]:>10.2f}", flush=True)
            del layer
            torch.cuda.empty_cache()
        print(f"N={n}: awq_gemm {line(awq)}; cuBLAS {line(ref)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ms", type=int, nargs="+", default=[1, 16])
    p.add_argument("--config", type=parse_config, nargs="*", default=[])
    p.add_argument("--variant", type=parse_variant, nargs="*", default=[])
    p.add_argument("--layers", nargs="*", default=None, help="names from LAYERS (default: all)")
    p.add_argument("--shapes", nargs="*", default=None, metavar="K,N", help="these shapes instead of LAYERS")
    p.add_argument("--fit", type=int, nargs="*", default=None, metavar="N",
                   help="fit fixed + bytes / rate over --fit-ks for these N instead of the layer table")
    p.add_argument("--fit-ks", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--with-tail", action="store_true",
                   help="launch each --config / --variant as awq_gemm would split it (ws_wave_tail), where it does")
    p.add_argument("--cluster-policy", choices=sorted(clusters.SCHEDULING_POLICIES), default=clusters.SCHEDULING_POLICY,
                   help="how the driver places the CTAs of a clustered split-K launch")
    args = p.parse_args()
    clusters.SCHEDULING_POLICY = args.cluster_policy
    if args.fit:
        fit(args.fit, args.fit_ks)
        return
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"{'layer':<14}{'M':>4} {'config':<44}{'DRAM us':>9}{'L2 us':>8}{'L2/DRAM':>9}{'DRAM GB/s':>10}")
    layers = [(f"{k}x{n}", k, n) for k, n in (map(int, sh.split(",")) for sh in args.shapes)] if args.shapes \
        else LAYERS
    for name, k, n in layers:
        if args.layers and name not in args.layers:
            continue
        layer = Layer(k, n, seed=k + n)
        for m in args.ms:
            variants = [replace(wgmma_t_config(m, n, k, sms), **v) for v in args.variant]
            for cfg in [None, *args.config, *variants]:
                if cfg is not None and n % cfg.cta_channels:
                    continue
                tail = ws_wave_tail(m, n, k, sms, cfg) if args.with_tail and cfg is not None else None
                dram, res = row_times(layer, m, cfg, tail)
                label = "awq_gemm" if cfg is None else ",".join(str(getattr(cfg, f)) for f in CONFIG_FIELDS)
                if tail is not None:
                    label += f" +{n - tail[0]} ch split {tail[1].split_k}"
                print(f"{name:<14}{m:>4} {label:<44}{dram:>9.2f}{res:>8.2f}{res / dram:>9.2f}"
                      f"{layer.bytes(m) / dram / 1e3:>10.0f}", flush=True)
            layer._ref.clear()
        del layer
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
