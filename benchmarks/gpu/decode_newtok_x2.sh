#!/usr/bin/env bash
# A change to the attention kernels: this tree's attention, CUDA-graph and engine GPU tests, then its
# 13B AWQ batch-1 step and graph at TP=1 and TP=2 against main's (.abmain: `git archive main
# pagedawq tests benchmarks | tar -x -C .abmain`), RUNS rounds (default 2), the trees alternating.
# Session 23 ran it for the decode kernel attending to the new token from registers (not kept);
# session 24 for the query row taken as the sequence index (kept).
# carry: [".raycarry", ".abmain"]; ~8 minutes.
source benchmarks/gpu/env.sh
timeout 280 python -m pytest -q tests/test_attention_kernels.py tests/test_cuda_graphs.py tests/test_gpu_engine.py \
  > "$OUT/gpu_tests.log" 2>&1
tail -1 "$OUT/gpu_tests.log"; grep "^FAILED" "$OUT/gpu_tests.log"
RUNS=${RUNS:-2} ROOTS="tree:. main:.abmain" bash benchmarks/gpu/ab_tp_x2.sh
