#!/usr/bin/env bash
# Issue 4's short rows with and without session 35's L2 evict-first hint, on one H100
# (nvidia-h100-x1; nothing to carry), each side with the hint (the default) and with
# PAGEDAWQ_DISABLE_L2_HINTS=1, hint first, each with its own Triton cache. Two calls:
# STEP=kernels (~5 minutes): `kernels.py --quick` (7B gate_up and down, 70B/TP8 qkv at M = 1-1024
#   against fp16 cuBLAS). The rows to read: 7B down at M <= 16 (2.82-2.87x, target 3.0x), gate_up
#   at 1024 (0.86-1.03x, target 0.95x).
# STEP=e2e (~8 minutes cold): the 7B e2e decode (`e2e_suite.py --sections decode`: AWQ / fp16 at
#   batch 1, 16, 64; 2.60-2.98x at batch 1, target 2.5x). Since session 36 each LLM compiles its
#   kernel variants at start-up, hence the longer limit.
set -u
source benchmarks/gpu/env.sh
for side in hint nohint; do
  (export TRITON_CACHE_DIR=/tmp/tc_$side
   if [ $side = nohint ]; then export PAGEDAWQ_DISABLE_L2_HINTS=1; fi
   if [ "${STEP:-kernels}" = kernels ]; then
     (cd benchmarks && timeout 270 python kernels.py --quick > "$OUT/kernels_$side.log" 2>&1)
     sed -n '/^model /,$p' "$OUT/kernels_$side.log" | awk -v tag="$side:" \
       '$2 ~ /^(down|gate_up)$/ && ($5 == 1 || $5 == 4 || $5 == 16 || $5 == 1024) {print tag, $1, $2, $5, $7, $8, $9}'
     grep -E "failed|Error" "$OUT/kernels_$side.log" | head -3
   else
     E2E_LIMIT=270 e2e_decode "$side" .
   fi)
done
