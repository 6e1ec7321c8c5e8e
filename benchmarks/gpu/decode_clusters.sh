#!/usr/bin/env bash
# Session 39's candidate, not yet run on a GPU: the decode splits merged in thread-block clusters
# (patches/decode_splits_in_clusters.patch, on 20811ca): at 2, 4 or 8 splits (the 128 and 256
# context buckets at batch 1) each split pushes its partial into the first CTA's shared memory
# and that CTA writes the output; no reduce kernel. Its ceiling: the reduce costs the 13B TP=1
# step 50 µs (RESULTS.md "Session 39", call 9).
#   STEP=check (nvidia-h100-x1, ~6 minutes): the patched tree's attention, CUDA-graph and engine
#     GPU tests, the clustered kernel's own test first under 120 s (a wrong byte count would hang),
#     then the rest under 420 s (the engine tests took 223 s in session 38);
#   STEP=ab SIZES="1" (nvidia-h100-x1) or SIZES="1 2" (nvidia-h200-x2 with needs_h200, carry
#     .raycarry; ~6 minutes): batch-1 latency at 32 and 1024 tokens, the patch against this tree,
#     ROUNDS rounds (default 1) alternating (4 cold trees at SIZES="1 2" take ~8 minutes);
#   STEP=buckets (nvidia-h100-x1, ~6 minutes): the 32-token latency times steps at contexts 64-128,
#     one split, no cluster; here each bucket's pace and graph (experiments/decode_bucket_pace.py):
#     the patch, this tree and the patch's reduce path, ROUNDS (default 2) in alternating order;
#   STEP=tokens (x2, after STEP=ab on the warm machine): the patched tree's TP=2 tokens against TP=1.
set -u
source benchmarks/gpu/env.sh
variant_tree /tmp/clusters pagedawq/kernels/paged_attention.py \
  patch:benchmarks/gpu/patches/decode_splits_in_clusters.patch || exit 1
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
  # pace and graph of each bucket (experiments/decode_bucket_pace.py, 13B TP=1): the patch, this
  # tree, the patch with PAGEDAWQ_DISABLE_DECODE_CLUSTERS=1 (its reduce path), then the reverse order
  pace() {   # NAME DIR [VAR=value]
    (cd "$2" && env TRITON_CACHE_DIR="/tmp/tc_${2//\//_}" PYTHONPATH="$2" ${3:-} timeout 200 \
       python benchmarks/experiments/decode_bucket_pace.py --label "$1" > "$OUT/pace_$1_$r.log" 2>&1)
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
