#!/usr/bin/env bash
# Session 32, call 1 (nvidia-h200-x2, needs_h200; carry .raycarry): issue 6's rank skew.
# 1. rank_devices_x2.sh: does rank 1 hold tensors, or a context, on GPU 0?
# 2. TP=2 traces without the pushed GEMMs: does the o/down skew go with the pushes?
# 3. TP=2 traces without PDL: are rank 1's kernels slower in isolation, or do they start earlier and wait?
set -u
bash benchmarks/gpu/rank_devices_x2.sh
echo "=== no pushed GEMMs"
PAGEDAWQ_DISABLE_PUSHED_GEMMS=1 SIZES=2 CARDS= OUT="$OUT/nopush" bash benchmarks/gpu/tp2_layer_traces_x2.sh
echo "=== no PDL"
PAGEDAWQ_DISABLE_PDL=1 SIZES=2 CARDS= OUT="$OUT/nopdl" bash benchmarks/gpu/tp2_layer_traces_x2.sh
