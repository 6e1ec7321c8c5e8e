#!/usr/bin/env bash
# Session 29, call 1: H200 decode-tile candidates on the 13B at TP=1 and TP=2, then TP=2 again.
F=pagedawq/kernels/awq_configs.py
export VARIANTS="p6|$F|s/^FAST_MEMORY_PROGRAMS_PER_SM = 3/FAST_MEMORY_PROGRAMS_PER_SM = 6/
p6m8|$F|s/^FAST_MEMORY_PROGRAMS_PER_SM = 3/FAST_MEMORY_PROGRAMS_PER_SM = 6/;s/^WGMMA_MAX_SPLIT = 4 /WGMMA_MAX_SPLIT = 8 /
kv16|pagedawq/kernels/paged_attention.py|s/^MAX_KV_SPLITS = 32/MAX_KV_SPLITS = 16/"
SIZES="1 2" RUNS=1 bash benchmarks/gpu/tp2_variants_x2.sh
OUT=/tmp/out_r2 SIZES=2 RUNS=1 bash benchmarks/gpu/tp2_variants_x2.sh
