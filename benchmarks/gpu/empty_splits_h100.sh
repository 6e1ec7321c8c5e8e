#!/usr/bin/env bash
# Session 39 (lost, not merged): empty decode splits store only their log-sum-exp and return before
# loading q, and the reduce ignores their slots (patches/empty_splits_return_early.patch, on
# bb5825b). The patched tree's attention GPU tests, then the 13B at TP=1, batch-1 latency at 32
# and 1024 tokens, the patched tree against this one, ROUNDS rounds (default 2). As run in session
# 39 the patch was the working tree and this tree was carried as .abmain; the same comparison.
# nvidia-h100-x1; ~5 minutes on a fresh machine.
set -u
source benchmarks/gpu/env.sh
variant_tree /tmp/empty_splits pagedawq/kernels/paged_attention.py \
  patch:benchmarks/gpu/patches/empty_splits_return_early.patch || exit 1
(cd /tmp/empty_splits && timeout 200 python -m pytest -q tests/test_attention_kernels.py -k "gpu or empty_splits" \
  > "$OUT/tests.log" 2>&1)
tail -2 "$OUT/tests.log"
for r in $(seq 1 "${ROUNDS:-2}"); do
  for entry in "patch:/tmp/empty_splits" "main:$PWD"; do
    tree_suite "${entry%%:*}" "${entry#*:}" 170 "${entry%%:*}_$r" --sizes 1 --skip-correctness --num-prompts 0 \
      --latency-input-lens 32 1024
  done
done
