"""GPU benchmark of the Triton attention kernels and fused ops (needs CUDA).

Decode attention is memory-bound: its figure of merit is the KV-cache bytes it must read over its
time, compared with the card's measured device-to-device copy bandwidth. Prefill is compared with
torch's flash SDPA on contiguous tensors (same math, no paging); fused ops with their torch
references. Times are medians of ``triton.testing.do_bench`` (CUDA events, L2 flushed before each
call). Eager decode calls are bound by the host's launch cost at small batches, so decode is also
timed replayed from a CUDA graph (``graph_ms``; its GB/s and %copy use that time), as the engine
runs it. Each case checks its output against a reference before it is timed.

    python benchmarks/attention.py [--out results.json] [--sweep] [--sections decode prefill ops]

``--sweep`` also times alternative tile shapes / split counts (used to pick the defaults).
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from pagedawq.attention.metadata import AttentionMetadata
from pagedawq.attention.torch_backend import paged_attention_reference
from pagedawq.kernels import fused_ops, reference
from pagedawq.kernels.cache_ops import write_kv_cache
from pagedawq.kernels.graph_timing import capture_round_robin
from pagedawq.kernels.paged_attention import choose_num_kv_splits, decode_attention, prefill_attention

ROWS: list[dict] = []
DEVICE = "cuda"


def bench_ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def record(name: str, ms: float, *, gbytes: float | None = None, tflop: float | None = None, **extra) -> dict:
    row = {"case": name, "ms": round(ms, 4), **extra}
    if gbytes is not None:
        row["GB/s"] = round(gbytes / (ms * 1e-3), 1)
    if tflop is not None:
        row["TFLOP/s"] = round(tflop / (ms * 1e-3), 1)
    ROWS.append(row)
    print(json.dumps(row), flush=True)
    return row


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float("nan") if out.isnan().any() else ((out - ref).norm() / ref.norm()).item()


def copy_bandwidth() -> float:
    """Device-to-device copy of 1 GiB, counting bytes read plus bytes written (GB/s)."""
    src = torch.randn(1 << 28, device=DEVICE)
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src))
    return record("copy 1 GiB (read+write)", ms, gbytes=2 * src.numel() * 4 / 1e9)["GB/s"]


def paged_batch(seq_lens: list[int], query_lens: list[int], num_kv_heads: int, head_dim: int, block_size: int,
                dtype: torch.dtype, gen: torch.Generator) -> tuple[torch.Tensor, AttentionMetadata]:
    """A random cache holding every sequence's context in shuffled physical blocks."""
    blocks = [-(-s // block_size) for s in seq_lens]
    num_blocks = sum(blocks)
    perm = torch.randperm(num_blocks, generator=gen, device=DEVICE).int()
    block_tables = torch.zeros(len(seq_lens), max(blocks), dtype=torch.int32, device=DEVICE)
    start = 0
    for i, n in enumerate(blocks):
        block_tables[i, :n] = perm[start:start + n]
        start += n
    kv_cache = torch.randn(2, num_blocks, block_size, num_kv_heads, head_dim, generator=gen, device=DEVICE,
                           dtype=torch.float32).to(dtype)
    starts = [0]
    for q in query_lens:
        starts.append(starts[-1] + q)
    md = AttentionMetadata(
        slot_mapping=torch.full((starts[-1],), -1, dtype=torch.int64, device=DEVICE),
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=DEVICE),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE),
        block_tables=block_tables, max_query_len=max(query_lens), max_seq_len=max(seq_lens),
        query_lens_cpu=list(query_lens), seq_lens_cpu=list(seq_lens))
    return kv_cache, md


def check_subset(out: torch.Tensor, q: torch.Tensor, kv_cache: torch.Tensor, md: AttentionMetadata, scale: float,
                 num_seqs: int = 2) -> float:
    """Error of the first ``num_seqs`` sequences' output against the float32 torch reference."""
    n_tok = md.query_lens_cpu[:num_seqs]
    sub = AttentionMetadata(md.slot_mapping[:sum(n_tok)], md.query_start_loc[:num_seqs + 1], md.seq_lens[:num_seqs],
                            md.block_tables[:num_seqs], max(n_tok), max(md.seq_lens_cpu[:num_seqs]),
                            n_tok, md.seq_lens_cpu[:num_seqs])
    ref = paged_attention_reference(q[:sum(n_tok)].float(), kv_cache.float(), sub, scale)
    return rel_err(out[:sum(n_tok)], ref)


def graph_ms(fns: list) -> float:
    """Per-call time of ``fns`` replayed from one CUDA graph: no launch overhead, as the engine's decode runs."""
    return bench_ms(capture_round_robin(fns, len(fns)).replay) / len(fns)


def bench_decode(name: str, batch: int, ctx: int, num_q_heads: int, num_kv_heads: int, copy_gbs: float,
                 variants: list[dict], head_dim: int = 128, block_size: int = 16, dtype=torch.float16) -> None:
    """Eager time (do_bench, two Python launches) and CUDA-graph time of one decode step.

    The graph replays the step over several independent caches (>= 256 MB in all) so that each
    call reads its KV from HBM, not from the 50 MB L2 the previous call left warm.
    """
    gen = torch.Generator(device=DEVICE).manual_seed(batch * ctx + num_kv_heads)
    kv_bytes = 2 * batch * ctx * num_kv_heads * head_dim * torch.finfo(dtype).bits // 8
    copies = max(1, min(8, -(-(256 << 20) // kv_bytes)))
    steps = []
    for _ in range(copies):
        kv_cache, md = paged_batch([ctx] * batch, [1] * batch, num_kv_heads, head_dim, block_size, dtype, gen)
        q = torch.randn(batch, num_q_heads, head_dim, generator=gen, device=DEVICE).to(dtype)
        steps.append((q, kv_cache, md, torch.empty_like(q)))
    q, kv_cache, md, out = steps[0]
    scale = head_dim ** -0.5
    default_splits = choose_num_kv_splits(batch, num_kv_heads, ctx)
    for v in [{}] + variants:
        v = {"num_kv_splits": default_splits, **v}
        out.fill_(float("nan"))
        decode_attention(q, kv_cache, md, scale, out, **v)
        err = check_subset(out, q, kv_cache, md, scale)
        ms = bench_ms(lambda: decode_attention(q, kv_cache, md, scale, out, **v))
        g_ms = graph_ms([lambda s=s: decode_attention(*s[:3], scale, s[3], **v) for s in steps])
        gbs = kv_bytes / 1e9 / (g_ms * 1e-3)
        label = ",".join(f"{k}={val}" for k, val in v.items())
        record(f"{name} [{label}]", ms, err=f"{err:.1e}", graph_ms=round(g_ms, 4),
               host_us=round(host_us_per_call(lambda: decode_attention(q, kv_cache, md, scale, out, **v)), 1),
               **{"GB/s": round(gbs, 1), "%copy": round(100 * gbs / copy_gbs, 1)})


def host_us_per_call(fn, calls: int = 100) -> float:
    """Host time of one eager call (Python + launches): what CUDA graphs remove from a decode step."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def bench_prefill(name: str, q_len: int, ctx: int, num_q_heads: int, head_dim: int, variants: list[dict],
                  block_size: int = 16, dtype=torch.float16, compare_sdpa: bool = True,
                  num_kv_heads: int | None = None) -> None:
    num_kv_heads = num_kv_heads or num_q_heads
    gen = torch.Generator(device=DEVICE).manual_seed(q_len + ctx)
    seq_len = q_len + ctx
    kv_cache, md = paged_batch([seq_len], [q_len], num_kv_heads, head_dim, block_size, dtype, gen)
    q = torch.randn(q_len, num_q_heads, head_dim, generator=gen, device=DEVICE).to(dtype)
    out = torch.empty_like(q)
    scale = head_dim ** -0.5
    # Causal work: query j sees ctx + j + 1 keys; 2 matmuls of 2 flops per multiply-add.
    tflop = 4 * num_q_heads * head_dim * (q_len * ctx + q_len * (q_len + 1) / 2) / 1e12
    ref = paged_attention_reference(q.float(), kv_cache.float(), md, scale)
    for v in [{}] + variants:
        out.fill_(float("nan"))
        prefill_attention(q, kv_cache, md, scale, out, **v)
        err = rel_err(out, ref)
        ms = bench_ms(lambda: prefill_attention(q, kv_cache, md, scale, out, **v))
        label = ",".join(f"{k}={val}" for k, val in v.items()) or "default"
        record(f"{name} [{label}]", ms, tflop=tflop, err=f"{err:.1e}")
    if compare_sdpa:
        # The same K/V, gathered into contiguous [1, Hq, S, D] tensors (KV heads repeated) for flash SDPA.
        group = num_q_heads // num_kv_heads
        k, v = (kv_cache[i, md.block_tables[0].long()].flatten(0, 1)[:seq_len].transpose(0, 1)
                .repeat_interleave(group, 0)[None].contiguous() for i in (0, 1))
        qs = q.transpose(0, 1)[None]
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            o = F.scaled_dot_product_attention(qs, k, v, is_causal=True, scale=scale)
            err = rel_err(o[0].transpose(0, 1), ref)
            ms = bench_ms(lambda: F.scaled_dot_product_attention(qs, k, v, is_causal=True, scale=scale))
        record(f"{name} [torch SDPA flash, contiguous]", ms, tflop=tflop, err=f"{err:.1e}")


def bench_cache_write(num_tokens: int, num_kv_heads: int, head_dim: int, block_size: int = 16) -> None:
    gen = torch.Generator(device=DEVICE).manual_seed(num_tokens)
    kv_cache = torch.empty(2, num_tokens // block_size + 1, block_size, num_kv_heads, head_dim,
                           dtype=torch.float16, device=DEVICE)
    k = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen, device=DEVICE).half()
    v = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen, device=DEVICE).half()
    slots = torch.randperm(kv_cache[0].numel() // (num_kv_heads * head_dim), generator=gen, device=DEVICE)[:num_tokens]
    write_kv_cache(k, v, kv_cache, slots)
    flat = kv_cache.view(2, -1, num_kv_heads, head_dim)
    assert torch.equal(flat[0, slots], k) and torch.equal(flat[1, slots], v)
    ms = bench_ms(lambda: write_kv_cache(k, v, kv_cache, slots))
    record(f"write_kv_cache T={num_tokens} Hkv={num_kv_heads} D={head_dim}", ms, gbytes=4 * k.numel() * 2 / 1e9)


def bench_fused_ops(tokens: int = 4096, hidden: int = 4096, inter: int = 11008, heads: int = 32, head_dim: int = 128,
                    dtype=torch.float16) -> None:
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE).to(dtype)

    x, r, w = rnd(tokens, hidden), rnd(tokens, hidden), rnd(hidden)
    act = rnd(tokens, 2 * inter)
    qkv = rnd(tokens, 3 * heads * head_dim)
    q, k = qkv[:, :heads * head_dim], qkv[:, heads * head_dim:2 * heads * head_dim]
    angles = torch.rand(8192, head_dim // 2, generator=gen, device=DEVICE) * 2 * math.pi
    cos_sin = torch.cat([angles.cos(), angles.sin()], dim=1)  # a rotation: repeated calls keep norms
    positions = torch.randint(0, 8192, (tokens,), generator=gen, device=DEVICE)
    elt = x.element_size()
    cases = [
        ("rms_norm", lambda m: m.rms_norm(x, w, 1e-5), 2 * x.numel() * elt),
        ("fused_add_rms_norm", lambda m: m.fused_add_rms_norm(x, r, w, 1e-5), 4 * x.numel() * elt),
        ("rotary_embedding", lambda m: m.rotary_embedding(positions, q, k, cos_sin, head_dim),
         4 * q.numel() * elt + tokens * head_dim * 4),
        ("silu_and_mul", lambda m: m.silu_and_mul(act), 3 * act.numel() // 2 * elt),
    ]
    for name, fn, nbytes in cases:
        # The reference first: rotary_embedding's Triton version works in place.
        ref, ours = fn(reference), fn(fused_ops)
        ref, ours = (ref, ours) if isinstance(ref, tuple) else ((ref,), (ours,))
        err = max(rel_err(a, b) for a, b in zip(ours, ref))
        for impl, mod in (("triton", fused_ops), ("torch ref", reference)):
            ms = bench_ms(lambda: fn(mod))
            record(f"{name} [{impl}] T={tokens}", ms, gbytes=nbytes / 1e9, err=f"{err:.1e}" if impl == "triton" else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write all rows as JSON here")
    parser.add_argument("--sweep", action="store_true", help="also time alternative tile shapes / split counts")
    parser.add_argument("--sections", nargs="+", default=["decode", "prefill", "ops"],
                        choices=["decode", "prefill", "ops"])
    parser.add_argument("--decode-block-n", nargs="+", type=int, default=[], metavar="N",
                        help="also time every decode row with these key tiles (BLOCK_N; the default is"
                             " paged_attention.decode_block_n's), the 13B rows also at their graphs' split count")
    args = parser.parse_args()
    sweep = args.sweep
    tiles = [dict(block_n=b) for b in args.decode_block_n]

    def decode_variants(sweep_only: list[dict]) -> list[dict]:
        """A decode row's variants: ``sweep_only`` with ``--sweep``, then the ``--decode-block-n`` tiles."""
        return (sweep_only if sweep else []) + tiles

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    copy_gbs = copy_bandwidth()
    if "decode" in args.sections:
        bench_decode("decode B=64 ctx=2048 32q/32kv", 64, 2048, 32, 32, copy_gbs,
                     decode_variants([dict(block_n=128, num_stages=3), dict(num_kv_splits=2)]))
        bench_decode("decode B=8 ctx=4096 32q/32kv", 8, 4096, 32, 32, copy_gbs,
                     decode_variants([dict(num_kv_splits=s) for s in (1, 4, 8)]))
        for ctx in (2048, 8192):
            bench_decode(f"decode B=1 ctx={ctx} 32q/32kv", 1, ctx, 32, 32, copy_gbs,
                         decode_variants([dict(num_kv_splits=s) for s in (4, 16, 32)]))
        # The 13B at TP=2 and TP=1 in a batch-1 decode of short contexts: the engine's decode graphs
        # take their split count from max_model_len (27 and 14 at 4096; session 23: fewer splits do
        # not shorten the graphs).
        for heads, graph_splits in ((20, 27), (40, 14)):
            bench_decode(f"decode B=1 ctx=128 {heads}q/{heads}kv (13B, graphs: {graph_splits} splits)", 1, 128, heads,
                         heads, copy_gbs, ([dict(num_kv_splits=s) for s in (2, 4, graph_splits)] if sweep else [])
                         + ([dict(num_kv_splits=graph_splits, **t) for t in [{}] + tiles] if tiles else []))
        bench_decode("decode B=64 ctx=2048 32q/8kv", 64, 2048, 32, 8, copy_gbs,
                     decode_variants([dict(num_kv_splits=2)]))
        bench_decode("decode B=1 ctx=8192 32q/8kv", 1, 8192, 32, 8, copy_gbs,
                     decode_variants([dict(num_kv_splits=s) for s in (8, 16, 64)]))
        bench_decode("decode B=32 ctx=1024 9q/3kv D64 (default model)", 32, 1024, 9, 3, copy_gbs,
                     decode_variants([]), head_dim=64)
    if "prefill" in args.sections:
        bench_prefill("prefill 2048 tok 32 heads D128", 2048, 0, 32, 128, [
            dict(block_m=128, num_warps=8), dict(block_n=128), dict(num_stages=3), dict(block_n=128, num_stages=3),
            dict(block_n=32, num_stages=3), dict(block_m=128, block_n=128, num_warps=8, num_stages=3)] if sweep else [])
        bench_prefill("chunked prefill 512 tok + 3584 cached", 512, 3584, 32, 128, [], compare_sdpa=False)
        bench_prefill("prefill 2048 tok 9q/3kv D64 (default model)", 2048, 0, 9, 64, [
            dict(block_m=128), dict(block_n=128), dict(block_m=128, block_n=128)] if sweep else [],
            num_kv_heads=3)
    if "ops" in args.sections:
        bench_cache_write(2048, 32, 128)
        bench_fused_ops()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(ROWS, f, indent=1)
    print("\n" + f"{'case':72s} {'ms':>8s} {'graph_ms':>8s} {'GB/s':>7s} {'%copy':>6s} {'TFLOP/s':>7s} {'err':>7s}")
    for row in ROWS:
        print(f"{row['case'][:72]:72s} {row['ms']:8.4f} {row.get('graph_ms', ''):>8} {row.get('GB/s', ''):>7} "
              f"{row.get('%copy', ''):>6} {row.get('TFLOP/s', ''):>7} {row.get('err', ''):>7}")


if __name__ == "__main__":
    main()
