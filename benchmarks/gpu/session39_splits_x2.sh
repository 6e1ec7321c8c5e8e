#!/usr/bin/env bash
# Session 39: TP=2's split count above 512 tokens. The max_model_len decode graph gives the 13B at
# TP=2 27 splits a head (20 heads a rank; TP=1: 14), 9 of them empty at a 1024-1152-token context,
# where the TP=2 / TP=1 ratio was 0.653 (0.634-0.646 around it). This tree against a copy with
# MAX_KV_SPLITS = 16 (TP=1's 14 unchanged; the 128-512 buckets' 4-16 unchanged), TP=2 only, batch-1
# latency at 32, 1024 and 2048 tokens, ROUNDS rounds (default 2). carry: [".raycarry"];
# nvidia-h200-x2 with needs_h200; ~5 minutes on a fresh machine.
set -u
source benchmarks/gpu/env.sh
variant_tree /tmp/splits16 pagedawq/kernels/paged_attention.py 's/^MAX_KV_SPLITS = 32$/MAX_KV_SPLITS = 16/' || exit 1
for r in $(seq 1 "${ROUNDS:-2}"); do
  for entry in "tree:$PWD" "splits16:/tmp/splits16"; do
    tree_suite "${entry%%:*}" "${entry#*:}" 150 "${entry%%:*}_$r" --sizes 2 --skip-correctness --num-prompts 0 \
      --latency-input-lens 32 1024 2048
  done
done
