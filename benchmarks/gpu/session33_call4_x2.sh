#!/usr/bin/env bash
# Session 33, call 4 (nvidia-h200-x2 with needs_h200; carry .raycarry and .abmain = 0280919): decode
# graphs bounded by 128 tokens unsplit, one 128-key tile a program and no reduce kernel
# (patches/decode_unsplit_128.patch: triton_backend.UNSPLIT_DECODE_CONTEXT), with 4 warps and 8,
# against main on the 13B batch-1 step at TP=2 and TP=1; then the candidate's CUDA-graph GPU tests
# and its TP=2 tokens. ~7 min. (As run, the patch was the call's working tree on 0280919.)
set -u
source benchmarks/gpu/env.sh
variant_tree /tmp/u128w4 pagedawq/attention/triton_backend.py patch:benchmarks/gpu/patches/decode_unsplit_128.patch
rm -rf /tmp/u128w8 && cp -r /tmp/u128w4 /tmp/u128w8
sed -i 's/^UNSPLIT_DECODE_WARPS = 4/UNSPLIT_DECODE_WARPS = 8/' /tmp/u128w8/pagedawq/attention/triton_backend.py
for r in 1 2; do
  for t in main:.abmain u128w4:/tmp/u128w4 u128w8:/tmp/u128w8; do
    [ "$r" = 2 ] && [ "${t%%:*}" = u128w8 ] && continue
    (cd "${t#*:}/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 100 python tp_suite.py \
       --sizes 2 1 --num-prompts 0 --skip-correctness > "$OUT/tp_${t%%:*}_run$r.log" 2>&1)
    grep -E "^latency|^graph|failed|Error" "$OUT/tp_${t%%:*}_run$r.log" | sed "s/^/${t%%:*} run$r: /" | cut -c1-130
  done
done
(cd /tmp/u128w4 && timeout 100 python -m pytest -q -m gpu tests/test_gpu_engine.py -k graph > "$OUT/gpu_tests.log" 2>&1)
tail -1 "$OUT/gpu_tests.log"
(cd /tmp/u128w4/benchmarks && PYTHONPATH=/tmp/u128w4:$PYTHONPATH timeout 100 python tp_suite.py --sizes 2 --num-prompts 0 \
   > "$OUT/tp_check.log" 2>&1)
grep -E "^correct|failed|Error" "$OUT/tp_check.log"
