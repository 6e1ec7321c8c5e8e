"""Does a small decode kernel start slower after a weight stream has evicted L2, and does streaming
with an evict-first hint keep what it needs there?

In a batch-1 decode step each layer streams ~80-165 MB of weights (13B at TP=2 / TP=1) through a
50-60 MB L2. Everything else a kernel touches at its start (its code, its launch parameters, the
norm weights, the block table, the rotary table, the activations written by the kernel before)
may be evicted by the stream before its next use, and then sits on the kernel's start-up chain as a
DRAM trip. This probe measures that cost for the small kernels of a decode layer. Each kernel K is
replayed in a CUDA graph of ``PAIRS`` pairs [X, K], and K costs (graph[X, K] - graph[X]) / PAIRS,
where X is:
- ``sleep``: ``torch.cuda._sleep``, no memory traffic (K's code and data stay in L2);
- ``stream``: a read of 256 MB with the default cache policy (it evicts L2, as the weights do);
- ``stream_ef``: the same read with ``eviction_policy="evict_first"``.
If ``stream`` costs K clearly more than ``sleep`` and ``stream_ef`` recovers it, the weight loads
of the GEMMs are worth an evict-first hint.

With ``--head-mb H`` two more columns model a decode step after that hint: the pairs
[``stream_ef``, K] and, once a graph, a read of H MB like the LM head's (cuBLAS, default policy:
``ef+head``) or the same read evict-first (``ef+head_ef``). Each K node's launch parameters, like
those of a decode graph's kernels, are used once a replay. If ``ef+head`` costs K more than
``ef+head_ef``, the LM head's stream evicts what the next step's kernels start with.

    python benchmarks/experiments/l2_cold_start_probe.py [--head-mb 328]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pagedawq.attention.metadata import AttentionMetadata  # noqa: E402
from pagedawq.kernels.awq_gemm import awq_gemm, repack_for_wgmma_t  # noqa: E402
from pagedawq.kernels.fused_ops import fused_add_rms_norm  # noqa: E402
from pagedawq.kernels.graph_timing import capture_round_robin, replay_times_us  # noqa: E402
from pagedawq.kernels.paged_attention import decode_attention  # noqa: E402
from pagedawq.quant.pack import pack_awq_gemm, quantize_weight  # noqa: E402

STREAM_BLOCK = 2048


@triton.jit
def _stream_kernel(src_ptr, out_ptr, per_program, BLOCK: tl.constexpr, EVICT_FIRST: tl.constexpr):
    """Sum a contiguous slice of ``src`` (one value a program), as a GEMM streams its weights."""
    base = tl.program_id(0).to(tl.int64) * per_program
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(0, per_program, BLOCK):
        offs = base + i + tl.arange(0, BLOCK)
        if EVICT_FIRST:
            v = tl.load(src_ptr + offs, eviction_policy="evict_first")
        else:
            v = tl.load(src_ptr + offs)
        acc += v.to(tl.float32)
    tl.store(out_ptr + tl.program_id(0), tl.sum(acc, 0))


@triton.jit
def _tiny_kernel(x_ptr, y_ptr):
    tl.store(y_ptr, tl.load(x_ptr) + 1.0)


def stream_fn(mb: int, evict_first: bool):
    n = mb * 2**20 // 2
    programs = 1024
    per_program = n // programs // STREAM_BLOCK * STREAM_BLOCK
    src = torch.randn(programs * per_program, device="cuda", dtype=torch.float16)
    out = torch.empty(programs, device="cuda", dtype=torch.float32)

    def run() -> None:
        _stream_kernel[(programs,)](src, out, per_program, BLOCK=STREAM_BLOCK, EVICT_FIRST=evict_first, num_warps=8)
    return run


def kernels(args) -> dict:
    """The small kernels of a 13B/TP=2 decode layer, each a callable (batch 1)."""
    dev = "cuda"
    x1 = torch.zeros(1, device=dev)
    y1 = torch.zeros(1, device=dev)
    hidden = 5120
    h = torch.randn(1, hidden, device=dev, dtype=torch.float16)
    res = torch.randn(1, hidden, device=dev, dtype=torch.float16)
    gamma = torch.rand(hidden, device=dev, dtype=torch.float16) + 0.5
    # decode attention: 20 query heads = 20 KV heads (13B at TP=2), head 128, blocks of 16
    heads, dim, block, ctx = 20, 128, 16, args.context
    nblocks = 4096
    kv = torch.randn(2, nblocks, block, heads, dim, device=dev, dtype=torch.float16)
    blocks_per_seq = -(-ctx // block)
    table = torch.randperm(nblocks, device=dev)[:blocks_per_seq].to(torch.int32).view(1, -1)
    md = AttentionMetadata(
        slot_mapping=torch.tensor([int(table[0, -1]) * block + (ctx - 1) % block], device=dev),
        query_start_loc=torch.tensor([0, 1], dtype=torch.int32, device=dev),
        seq_lens=torch.tensor([ctx], dtype=torch.int32, device=dev), block_tables=table,
        max_query_len=1, max_seq_len=ctx, query_lens_cpu=[1], seq_lens_cpu=[ctx], graph_capture=True)
    q = torch.randn(1, heads, dim, device=dev, dtype=torch.float16)
    attn_out = torch.empty_like(q)
    # AWQ GEMM, 13B/TP=2 o (K 2560 -> N 5120), rotating over copies (always read from DRAM)
    k, n = 2560, 5120
    w = torch.randn(n, k, device=dev)
    packed = pack_awq_gemm(*quantize_weight(w, group_size=128))
    copies = [packed] + [tuple(t.clone() for t in packed) for _ in range(15)]
    repacked = [repack_for_wgmma_t(*c) for c in copies]
    xg = torch.randn(1, k, device=dev, dtype=torch.float16)
    outg = torch.empty(1, n, device=dev, dtype=torch.float16)
    turn = [0]

    def gemm() -> None:   # each call of the graph's capture picks the next copy
        i = turn[0] % len(copies)
        turn[0] += 1
        awq_gemm(xg, *copies[i], out=outg, repacked=repacked[i])

    return {
        "tiny": lambda: _tiny_kernel[(1,)](x1, y1),
        "add_rms_norm": lambda: fused_add_rms_norm(h, res, gamma, 1e-5),
        "decode_attention": lambda: decode_attention(q, kv, md, dim ** -0.5, out=attn_out),
        "awq_gemm_o": gemm,
    }


def graph_us(fns: list, replays: int) -> float:
    """Median µs of a replay of a graph of ``fns`` called in order."""
    graph = capture_round_robin(fns, len(fns))
    t = statistics.median(replay_times_us(graph, 1, replays))
    del graph
    return t


def cost_us(x, k, tail, pairs: int, replays: int) -> float:
    """K's µs a call between the X calls: graph [X, K] x pairs (+ tail) less graph [X] x pairs (+ tail)."""
    end = [tail] if tail is not None else []
    return (graph_us([x, k] * pairs + end, replays) - graph_us([x] * pairs + end, replays)) / pairs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--replays", type=int, default=30)
    p.add_argument("--stream-mb", type=int, default=256)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--head-mb", type=int, default=0, help="add the ef+head columns with a read this large")
    args = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, L2 {torch.cuda.get_device_properties(0).L2_cache_size / 2**20:.0f} MiB, "
          f"{args.pairs} pairs a graph, stream {args.stream_mb} MB", flush=True)
    sleep_cycles = 200_000   # ~100 µs at ~2 GHz, about the stream's time
    stream_ef = stream_fn(args.stream_mb, True)
    # column -> (X between the calls, a read once a graph or None)
    xs = {"sleep": (lambda: torch.cuda._sleep(sleep_cycles), None), "stream": (stream_fn(args.stream_mb, False), None),
          "stream_ef": (stream_ef, None)}
    if args.head_mb:
        xs["ef+head"] = (stream_ef, stream_fn(args.head_mb, False))
        xs["ef+head_ef"] = (stream_ef, stream_fn(args.head_mb, True))
    try:   # what the evict-first hint compiles to
        ptx = _stream_kernel.warmup(torch.empty(1, device="cuda", dtype=torch.float16), torch.empty(1, device="cuda"),
                                    STREAM_BLOCK, BLOCK=STREAM_BLOCK, EVICT_FIRST=True, num_warps=8,
                                    grid=(1,)).asm["ptx"]
        print("stream_ef PTX:", sorted({ln.split()[0] for ln in ptx.splitlines() if "evict" in ln}), flush=True)
    except Exception as e:   # a probe: report and go on
        print(f"stream_ef PTX not shown: {type(e).__name__}: {e}", flush=True)
    ks = kernels(args)
    for name, k in ks.items():
        k()
    torch.cuda.synchronize()
    alone = {name: graph_us([k] * args.pairs, args.replays) / args.pairs for name, k in ks.items()}
    rows: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for xname, (x, tail) in xs.items():
            for name, k in ks.items():
                rows.setdefault((xname, name), []).append(cost_us(x, k, tail, args.pairs, args.replays))
        print(f"round {r + 1} done", flush=True)
    print(f"\n{'kernel':18} {'alone':>7} " + " ".join(f"{x:>16}" for x in xs))
    for name in ks:
        cells = [f"{statistics.median(rows[(x, name)]):7.2f} ({min(rows[(x, name)]):5.2f})" for x in xs]
        print(f"{name:18} {alone[name]:7.2f} " + " ".join(f"{c:>16}" for c in cells))
    print("\nµs a call: median over rounds (min); 'alone' = back to back, no X between")


if __name__ == "__main__":
    main()
