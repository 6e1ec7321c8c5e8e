#!/usr/bin/env bash
# Session 30, call 1 (nvidia-h200-x2 with needs_h200; carry .raycarry and .abmain = c924dd4): decode
# splits merged inside the decode kernel (the last split of each sequence and KV head merges them).
# The attention GPU tests and the engine's fp32 and graph tests, the decode kernels at batch 1 with each merge
# (attention.py --reduce-kernel), then this tree against .abmain on the 13B batch-1 step and graph
# at TP=1 and TP=2 (ab_tp_x2.sh, RUNS rounds, default 2).
# The tree was main with gpu/patches/decode_merge_splits_in_kernel.patch applied (lost; not merged).
source benchmarks/gpu/env.sh
E=tests/test_gpu_engine.py
timeout 200 python -m pytest -q -m gpu tests/test_attention_kernels.py $E::test_fp32_gpu_engine_matches_transformers \
  $E::test_triton_path_equals_torch_path_and_graphs_equal_eager $E::test_decode_graphs_of_every_context_bucket_equal_eager -x > "$OUT/tests.log" 2>&1
tail -2 "$OUT/tests.log"; S=$(tail -1 "$OUT/tests.log"); [[ $S == *" passed"* && $S != *failed* && $S != *error* ]] || { grep -E "^E |Error" "$OUT/tests.log" | head -20; exit 1; }
(cd benchmarks && timeout 110 python attention.py --sections decode --reduce-kernel > "$OUT/attention.log" 2>&1)
grep -E "^decode" "$OUT/attention.log" | cut -c1-118
TESTS= RUNS=${RUNS:-2} SIZES="1 2" bash benchmarks/gpu/ab_tp_x2.sh
