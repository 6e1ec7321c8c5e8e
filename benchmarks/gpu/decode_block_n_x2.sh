#!/usr/bin/env bash
# The decode kernel's key tile (BLOCK_N, default 64 on a GPU) in the 13B AWQ batch-1 decode graphs
# at TP=1 and TP=2 (issue 6, session 23): this tree against two variants, 32 and 16 keys a tile.
# Why: at 64 keys the kernel takes 255 registers a thread (2 programs an SM), at 16 it takes 128,
# and at the graphs' 27 / 14 splits a 16-key tile spreads a 160-token context over 10 programs a
# head instead of 3. carry: [".raycarry"]; ~4-5 minutes.
TP_TIMEOUT=140 SIZES="1 2" RUNS=${RUNS:-1} VARIANTS="bn32|pagedawq/kernels/paged_attention.py|s/block_n = 64 if q.is_cuda else 16/block_n = 32 if q.is_cuda else 16/
bn16|pagedawq/kernels/paged_attention.py|s/block_n = 64 if q.is_cuda else 16/block_n = 16 if q.is_cuda else 16/" \
  bash benchmarks/gpu/tp2_variants_x2.sh
