#!/usr/bin/env bash
# Session 29, call 2: fewer attention KV splits at batch 1 on the H200: the decode kernel alone
# (attention.py --sweep, decode rows), then the 13B at TP=1 and TP=2 (tree, kv16, w2), TP=2 again.
P=pagedawq/kernels/paged_attention.py
export VARIANTS="kv16|$P|s/^MAX_KV_SPLITS = 32/MAX_KV_SPLITS = 16/
w2|$P|s/wanted = triton.cdiv(4 \* num_sms/wanted = triton.cdiv(2 * num_sms/"
source benchmarks/gpu/env.sh
(cd benchmarks && timeout 150 python attention.py --sections decode --sweep > "$OUT/attention.log" 2>&1)
grep -E '"case": "decode B=1' "$OUT/attention.log" | cut -c1-230
SIZES="1 2" RUNS=1 bash benchmarks/gpu/tp2_variants_x2.sh
OUT=/tmp/out_r2 SIZES=2 RUNS=1 bash benchmarks/gpu/tp2_variants_x2.sh
