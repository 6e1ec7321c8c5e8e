#!/usr/bin/env bash
# The decode splits merged in thread-block clusters (paged_attention.decode_clusters, merged in
# session 40; at 4 splits only since session 41): on Hopper each split pushes its partial into the
# first CTA's shared memory and that CTA writes the output; no reduce kernel. PAGEDAWQ_DISABLE_DECODE_CLUSTERS=1 gives
# the same build on the reduce path, the control of every A/B here. With PATCH=path the steps run
# on a copy of this tree with that patch applied instead (session 39's
# patches/decode_splits_in_clusters.patch: clusters at 2, 4 and 8 splits, run in session 40).
#   STEP=check (nvidia-h100-x1, ~7 minutes): the attention, CUDA-graph and engine GPU tests, the
#     clustered kernel's own test first under 120 s (a wrong byte count would hang), then the rest
#     under 420 s (360 s in session 40);
#   STEP=buckets (nvidia-h100-x1, ~5 minutes): each bucket's pace and graph on the 13B at TP=1
#     (experiments/decode_bucket_pace.py) at batch 1 (4, 8 and 14 splits), 4 (4 splits) and 8 (2),
#     clusters on and off, ROUNDS (default 2) in alternating order;
#   STEP=ab SIZES="1" (nvidia-h100-x1) or SIZES="1 2" (nvidia-h200-x2 with needs_h200, carry
#     .raycarry; ~4 minutes cold): batch-1 latency at 32 and 1024 tokens, clusters on and off,
#     ROUNDS rounds (default 1) alternating;
#   STEP=tokens (x2): TP=2 tokens against TP=1, then batch-1 latency at 32 tokens.
set -u
source benchmarks/gpu/env.sh
tree=$PWD
if [ -n "${PATCH:-}" ]; then
  variant_tree /tmp/clusters pagedawq/kernels/paged_attention.py "patch:$PATCH" || exit 1
  tree=/tmp/clusters
fi
off=PAGEDAWQ_DISABLE_DECODE_CLUSTERS=1
case "${STEP:-check}" in
check)
  (cd "$tree" && timeout 120 python -m pytest -q -x tests/test_attention_kernels.py -k merged_in_clusters \
     > "$OUT/canary.log" 2>&1; echo "exit $?" >> "$OUT/canary.log")
  grep -E "passed|failed|error|exit" "$OUT/canary.log" | tail -3
  grep -q "exit 0" "$OUT/canary.log" || exit 1
  (cd "$tree" && timeout 420 python -m pytest -q -x tests/test_attention_kernels.py tests/test_cuda_graphs.py \
     tests/test_gpu_engine.py > "$OUT/tests.log" 2>&1; echo "exit $?" >> "$OUT/tests.log")
  grep -E "passed|failed|error|exit" "$OUT/tests.log" | tail -4 ;;
buckets)
  pace() {   # NAME [VAR=value]
    (cd "$tree" && env TRITON_CACHE_DIR=/tmp/tc_clusters PYTHONPATH="$tree" ${2:-} timeout 200 \
       python benchmarks/experiments/decode_bucket_pace.py --label "$1" --input-lens 32 160 900 --batches 1 4 8 \
       > "$OUT/pace_$1_$r.log" 2>&1)
    grep -E "bounds|prompt|Error" "$OUT/pace_$1_$r.log" | cut -c1-160
  }
  for r in $(seq 1 "${ROUNDS:-2}"); do
    if [ $((r % 2)) = 1 ]; then pace clusters; pace reduce $off; else pace reduce $off; pace clusters; fi
  done ;;
ab)
  for r in $(seq 1 "${ROUNDS:-1}"); do
    for size in ${SIZES:-1}; do
      tree_suite clusters "$tree" 200 "clusters_tp${size}_$r" --sizes "$size" --skip-correctness \
        --num-prompts 0 --latency-input-lens 32 1024
      (export $off; tree_suite reduce "$tree" 200 "reduce_tp${size}_$r" --sizes "$size" --skip-correctness \
        --num-prompts 0 --latency-input-lens 32 1024)
    done
  done ;;
tokens)
  tree_suite clusters "$tree" 300 clusters_tokens --tp 2 --sizes 2 --num-prompts 0 --latency-input-lens 32 ;;
esac
