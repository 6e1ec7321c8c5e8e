#!/usr/bin/env bash
# Issue 4's short rows with and without session 35's L2 evict-first hint, on one H100
# (nvidia-h100-x1; nothing to carry): `kernels.py --quick` (7B gate_up and down, 70B/TP8 qkv at
# M = 1-1024 against fp16 cuBLAS) and the 7B e2e decode (`e2e_suite.py --sections decode`: AWQ / fp16
# at batch 1, 16, 64), each with the hint (the default) and with PAGEDAWQ_DISABLE_L2_HINTS=1, hint
# first, ROUNDS (default 1) rounds (~8 minutes a round cold, less warm). Each side has its own
# Triton cache (STREAM_W is a constexpr: the two sides compile different variants anyway).
# The rows to read: 7B down at M <= 16 (2.82-2.87x, target 3.0x), gate_up at 1024 (0.86-1.03x,
# target 0.95x), e2e batch 1 (2.60-2.98x, target 2.5x).
set -u
source benchmarks/gpu/env.sh
for r in $(seq 1 "${ROUNDS:-1}"); do
  for side in hint nohint; do
    (export TRITON_CACHE_DIR=/tmp/tc_$side
     [ $side = nohint ] && export PAGEDAWQ_DISABLE_L2_HINTS=1
     cd benchmarks && timeout 200 python kernels.py --quick > "$OUT/kernels_${side}_r$r.log" 2>&1)
    sed -n '/^model /,$p' "$OUT/kernels_${side}_r$r.log" | awk -v tag="$side r$r:" \
      '$2 ~ /^(down|gate_up)$/ && ($5 == 1 || $5 == 4 || $5 == 16 || $5 == 1024) {print tag, $1, $2, $5, $7, $8, $9}'
    grep -E "failed|Error" "$OUT/kernels_${side}_r$r.log" | head -3
    (export TRITON_CACHE_DIR=/tmp/tc_$side
     [ $side = nohint ] && export PAGEDAWQ_DISABLE_L2_HINTS=1
     e2e_decode "${side}_r$r" .)
  done
done
