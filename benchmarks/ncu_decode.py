"""One batch-1 decode attention step with the rotary inside, as the 13B decode graphs run it, for
Nsight Compute to profile one launch of the decode kernel.

At batch 1 attention costs ~6.5 µs a layer in the 13B graphs (RESULTS.md session 23, a variant
without it), far above what its bytes take; ncu's warp-state samples say what its programs wait
for. For example (on the GPU machine; ``benchmarks/gpu/decode_stalls_h100.sh`` runs this):

    ncu --clock-control none --kernel-name regex:_decode_kernel --launch-skip 3 --launch-count 1 \\
        --section SourceCounters --section WarpStateStats python benchmarks/ncu_decode.py --heads 20 --splits 27
"""
from __future__ import annotations

import argparse

import torch
from attention import paged_batch

from pagedawq.attention.torch_backend import paged_attention_reference
from pagedawq.kernels.paged_attention import DecodeRotary, decode_attention
from pagedawq.kernels.reference import rotary_embedding
from pagedawq.models.layers.rotary import RotaryEmbedding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=20, help="query = KV heads (13B: 40, at TP=2 20)")
    parser.add_argument("--ctx", type=int, default=128, help="context length, the new token included")
    parser.add_argument("--splits", type=int, default=27, help="the decode graphs' split count (TP=2: 27, TP=1: 14)")
    parser.add_argument("--block-n", type=int, default=None, help="key tile (default: decode_block_n's)")
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    head_dim, block_size = 128, 16
    gen = torch.Generator(device="cuda").manual_seed(0)
    kv_cache, md = paged_batch([args.ctx], [1], args.heads, head_dim, block_size, torch.float16, gen)
    new = args.ctx - 1
    md.slot_mapping.fill_(int(md.block_tables[0, new // block_size]) * block_size + new % block_size)
    qkv = torch.randn(1, 3 * args.heads * head_dim, generator=gen, device="cuda").half()
    q, k, v = qkv.view(1, 3 * args.heads, head_dim).split(args.heads, dim=1)
    cos_sin = RotaryEmbedding(head_dim, 4096, {"rope_theta": 10000.0}).cos_sin_cache.cuda()
    positions = torch.tensor([new], device="cuda")
    rotary = DecodeRotary(positions, cos_sin, k, v)
    out = torch.empty(1, args.heads, head_dim, dtype=torch.float16, device="cuda")
    scale = head_dim ** -0.5
    for _ in range(args.runs):
        decode_attention(q, kv_cache, md, scale, out, num_kv_splits=args.splits, block_n=args.block_n, rotary=rotary)
    torch.cuda.synchronize()
    q_rot, k_rot = rotary_embedding(positions, q.reshape(1, -1).float().clone(), k.reshape(1, -1).float().clone(),
                                    cos_sin, head_dim)
    ref = paged_attention_reference(q_rot.view(1, args.heads, head_dim), kv_cache.float(), md, scale)
    err = ((out.double() - ref.double()).norm() / ref.double().norm()).item()
    print(f"decode {args.heads} heads, context {args.ctx}, {args.splits} splits: rel err {err:.1e} against the reference")


if __name__ == "__main__":
    main()
