#!/usr/bin/env bash
# The decode splits merged in thread-block clusters: each split pushes its partial into the first
# CTA's shared memory and that CTA writes the output; no reduce kernel. PATCH (default
# patches/decode_splits_in_clusters_v2.patch, session 40: clusters at 2 and 4 splits only, in a
# kernel of their own so that the unclustered kernel's SASS is unchanged; the 13B batch-1 graph
# splits 4 ways at contexts up to 128, 8 up to 256; patches/decode_splits_in_clusters.patch is
# session 39's, at 2, 4 and 8 splits: RESULTS.md "Session 40").
#   STEP=check (nvidia-h100-x1, ~7 minutes): the patched tree's attention, CUDA-graph and engine
#     GPU tests, the clustered kernel's own test first under 120 s (a wrong byte count would hang),
#     then the rest under 420 s (360 s in session 40);
#   STEP=buckets (nvidia-h100-x1, ~6 minutes): each bucket's pace and graph on the 13B at TP=1
#     (experiments/decode_bucket_pace.py) at batch 1 (4, 8, 14 splits), 4 (4 splits) and 8 (2):
#     the patch, this tree and the patch's reduce path (PAGEDAWQ_DISABLE_DECODE_CLUSTERS=1), ROUNDS
#     (default 2) in alternating order;
#   STEP=ab SIZES="1" (nvidia-h100-x1) or SIZES="1 2" (nvidia-h200-x2 with needs_h200, carry
#     .raycarry; ~4 minutes cold): batch-1 latency at 32 and 1024 tokens, the patch against this
#     tree, ROUNDS rounds (default 1) alternating;
#   STEP=tokens (x2, after STEP=ab on the warm machine): the patched tree's TP=2 tokens against TP=1.
set -u
source benchmarks/gpu/env.sh
variant_tree /tmp/clusters pagedawq/kernels/paged_attention.py \
  "patch:${PATCH:-benchmarks/gpu/patches/decode_splits_in_clusters_v2.patch}" || exit 1
if [ "${STEP:-check}" = check ]; then
  # first the clustered kernel's own test alone, briefly: a wrong byte count hangs the first CTA
  (cd /tmp/clusters && timeout 120 python -m pytest -q -x tests/test_attention_kernels.py -k merged_in_clusters \
     > "$OUT/canary.log" 2>&1; echo "exit $?" >> "$OUT/canary.log")
  grep -E "passed|failed|error|exit" "$OUT/canary.log" | tail -3
  grep -q "exit 0" "$OUT/canary.log" || exit 1
  (cd /tmp/clusters && timeout 420 python -m pytest -q -x tests/test_attention_kernels.py tests/test_cuda_graphs.py \
     tests/test_gpu_engine.py > "$OUT/tests.log" 2>&1; echo "exit $?" >> "$OUT/tests.log")
  grep -E "passed|failed|error|exit" "$OUT/tests.log" | tail -4
  exit 0
fi
if [ "${STEP}" = buckets ]; then
  pace() {   # NAME DIR [VAR=value]
    (cd "$2" && env TRITON_CACHE_DIR="/tmp/tc_${2//\//_}" PYTHONPATH="$2" ${3:-} timeout 200 \
       python benchmarks/experiments/decode_bucket_pace.py --label "$1" --input-lens 32 160 900 --batches 1 4 8 \
       > "$OUT/pace_$1_$r.log" 2>&1)
    grep -E "bounds|prompt|Error" "$OUT/pace_$1_$r.log" | cut -c1-160
  }
  for r in $(seq 1 "${ROUNDS:-2}"); do
    runs=("clusters /tmp/clusters" "main $PWD" "reduce /tmp/clusters PAGEDAWQ_DISABLE_DECODE_CLUSTERS=1")
    [ $((r % 2)) = 0 ] && runs=("${runs[2]}" "${runs[1]}" "${runs[0]}")
    for entry in "${runs[@]}"; do pace $entry; done
  done
  exit 0
fi
if [ "${STEP}" = tokens ]; then
  tree_suite clusters /tmp/clusters 300 clusters_tokens --tp 2 --sizes 2 --num-prompts 0 --latency-input-lens 32
  exit 0
fi
for r in $(seq 1 "${ROUNDS:-1}"); do
  for size in ${SIZES:-1}; do
    for entry in "clusters:/tmp/clusters" "main:$PWD"; do
      tree_suite "${entry%%:*}" "${entry#*:}" 200 "${entry%%:*}_tp${size}_$r" --sizes "$size" --skip-correctness \
        --num-prompts 0 --latency-input-lens 32 1024
    done
  done
done
