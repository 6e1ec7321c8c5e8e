#!/usr/bin/env bash
# The o-GEMM split merge (patches/fold_reduce.patch, see fold_reduce_h200.sh) at TP=2: nvidia-h200-x2
# with needs_h200, carry .raycarry; ~7 minutes. TP=2 greedy tokens against TP=1 with the patch (whose
# tp_suite.py check model has 128-wide heads, so that the fold runs in it, pushed at TP=2), then
# the 13B batch-1 step at TP=2 and TP=1 with and without it (PAGEDAWQ_DISABLE_DECODE_FOLD=1), RUNS
# rounds (default 2) alternating.
set -u
source benchmarks/gpu/env.sh
variant_tree /tmp/fold pagedawq/kernels/awq_wgmma_t.py patch:benchmarks/gpu/patches/fold_reduce.patch || exit 1
cd /tmp/fold/benchmarks
export PYTHONPATH=/tmp/fold:$PYTHONPATH
timeout 120 python tp_suite.py --sizes 2 --num-prompts 0 > "$OUT/tp2_check.log" 2>&1
grep -E "^correct|^latency|failed|Error" "$OUT/tp2_check.log" | cut -c1-150
for r in $(seq 1 "${RUNS:-2}"); do
  for v in fold:0 reduce:1; do
    PAGEDAWQ_DISABLE_DECODE_FOLD=${v#*:} timeout 120 python tp_suite.py --sizes 2 1 --skip-correctness --num-prompts 0 \
      > "$OUT/tp_${v%%:*}_run$r.log" 2>&1
    grep -E "^latency|^graph|failed|Error" "$OUT/tp_${v%%:*}_run$r.log" | sed "s/^/${v%%:*} run$r: /" | cut -c1-130
  done
done
