#!/usr/bin/env bash
# Issue 6's one sized idea (notes/tensor_parallel.md, session 33): the o GEMM merges the split-KV
# decode's partials into its x tiles, so the reduce kernel is not launched. The prototype, wired into
# the engine, is patches/fold_reduce.patch (on main at session 33's end: awq_wgmma_t FOLD,
# decode_attention(merge_splits=False) -> DecodePartials, the AWQ o_proj taking them;
# PAGEDAWQ_DISABLE_DECODE_FOLD=1 turns it off). One H200 (nvidia-h200; any Hopper), nothing to carry,
# ~7 minutes:
# 1. its GPU tests: the folded GEMM against reduce + GEMM and float64 (x's buffer poisoned); the
#    engine with and without it against the dequantized reference; the decode graphs of every bucket;
# 2. experiments/fold_reduce_probe.py: 40 layers of decode -> [reduce] -> o at 13B head counts (20 a
#    rank at TP=2, 40 at TP=1), contexts 100 and 400, with and without, rounds alternating;
# 3. the 13B batch-1 step at TP=1, with and without, two rounds alternating.
# If it wins at TP=1: fold_reduce_x2.sh for TP=2 (tokens and the ratio).
set -u
source benchmarks/gpu/env.sh
variant_tree /tmp/fold pagedawq/kernels/awq_wgmma_t.py patch:benchmarks/gpu/patches/fold_reduce.patch || exit 1
cd /tmp/fold
export PYTHONPATH=/tmp/fold:$PYTHONPATH
timeout 300 python -m pytest -q tests/test_awq_wgmma_t.py tests/test_attention_kernels.py tests/test_gpu_engine.py \
  -k "merging_decode or merges_decode or unmerged or merges_the_decode or every_context_bucket" > "$OUT/fold_tests.log" 2>&1
tail -3 "$OUT/fold_tests.log"
timeout 240 python benchmarks/experiments/fold_reduce_probe.py 2>&1 | tee "$OUT/fold_probe.log" | grep -v Warn
cd benchmarks
for r in 1 2; do
  for v in fold:0 reduce:1; do
    PAGEDAWQ_DISABLE_DECODE_FOLD=${v#*:} timeout 100 python tp_suite.py --sizes 1 --skip-correctness --num-prompts 0 \
      > "$OUT/tp1_${v%%:*}_run$r.log" 2>&1
    grep -E "^latency|^graph|failed|Error" "$OUT/tp1_${v%%:*}_run$r.log" | sed "s/^/${v%%:*} run$r: /" | cut -c1-130
  done
done
