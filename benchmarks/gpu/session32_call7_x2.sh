#!/usr/bin/env bash
# Session 32, call 7 (nvidia-h200-x2, needs_h200; carry .raycarry). Rank 1's launch gaps (0.42 us
# against rank 0's 0.10, PDL off) stay when rank 1's profiler starts first (call 6). Rank or ordinal,
# Ray or not? PDL-off TP=2 traces and their launch gaps:
# 1. the multiprocessing executor (no Ray);
# 2. Ray with the ranks on swapped ordinals (rank 0 on cuda:1, rank 1 on cuda:0).
set -u
source benchmarks/gpu/env.sh
gaps() {   # TAG TREE [PROFILE_ARGS]
  (cd "$2" && PROFILE_ARGS="${3:-}" PAGEDAWQ_DISABLE_PDL=1 SIZES=2 CARDS= OUT="$OUT/$1" bash benchmarks/gpu/tp2_layer_traces_x2.sh > "$OUT/$1.log" 2>&1)
  python benchmarks/trace_steps.py --gaps "$OUT/$1"/traces/tp2/rank*.json.gz --top 3 | sed "s/^/$1 /" | cut -c1-140
  grep "step period" "$OUT/$1.log" | sed "s/^/$1 /"
  python -c "import sys; sys.path.insert(0, 'benchmarks'); import trace_steps as t
for p in sys.argv[1:]: print(p, 'device', t.kernels(p)[0]['args'].get('device'))" "$OUT/$1"/traces/tp2/rank*.json.gz
  grep -h "Error" "$OUT/$1/profile_tp2.log" | head -4
}
gaps mp . "--backend mp"
variant_tree /tmp/variant_swap pagedawq/engine/executor/ray.py \
  's/local_rank = _assigned_gpu_index() if config.device == "cuda" else 0/local_rank = 1 - rank if config.device == "cuda" else 0/'
gaps swap /tmp/variant_swap
