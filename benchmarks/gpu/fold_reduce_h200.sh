#!/usr/bin/env bash
# Issue 6's one sized idea (notes/tensor_parallel.md, session 33): the o GEMM merging the split-KV
# decode's partials into its x tiles, so the reduce kernel is not launched. The prototype is
# patches/fold_reduce.patch (on main at session 33's end: awq_wgmma_t FOLD, decode_attention
# (merge_splits=False), tests, experiments/fold_reduce_probe.py). One H200 (nvidia-h200; any Hopper
# runs it), nothing to carry; ~4 minutes:
# 1. its GPU tests: the folded GEMM against the reduce + GEMM and float64, x's buffer poisoned;
# 2. fold_reduce_probe.py: 40 layers of decode -> [reduce] -> o at 13B shapes (20 heads a rank at TP=2,
#    40 at TP=1), batch 1, contexts 100 and 400, with and without the fold, rounds alternating.
# Worth wiring into the engine only if the folded layer is faster at both head counts.
set -u
source benchmarks/gpu/env.sh
variant_tree /tmp/fold pagedawq/kernels/awq_wgmma_t.py patch:benchmarks/gpu/patches/fold_reduce.patch || exit 1
cd /tmp/fold
timeout 300 python -m pytest -q tests/test_awq_wgmma_t.py tests/test_attention_kernels.py \
  -k "merging_decode or merges_decode or unmerged" > "$OUT/fold_tests.log" 2>&1; tail -3 "$OUT/fold_tests.log"
PYTHONPATH=/tmp/fold:$PYTHONPATH timeout 300 python benchmarks/experiments/fold_reduce_probe.py 2>&1 | tee "$OUT/fold_probe.log" \
  | grep -v Warn
