#!/usr/bin/env bash
# Session 35, call 2: issue 6 on 2×H200 after session 34's memory fixes (the profiling forward on
# SDPA's fused kernels, one rotary table a model): TP=2 tokens against TP=1, batch-1 latency (mean
# and median step) and 1000 x 512/128 throughput at both sizes, then ROUNDS more latency rounds of
# both sizes for the spread of the ratio. carry: [".raycarry"]; nvidia-h200-x2 with needs_h200;
# ~9 minutes.
set -u
source benchmarks/gpu/env.sh
cd benchmarks
timeout 330 python tp_suite.py --tp 2 --num-prompts 1000 > "$OUT/tp2.log" 2>&1
grep -E "^kv cache|^latency|^graph|^throughput|^correct|failed" "$OUT/tp2.log" | cut -c1-160
for r in $(seq 1 "${ROUNDS:-2}"); do
  timeout 110 python tp_suite.py --tp 2 --skip-correctness --num-prompts 0 > "$OUT/tp2_round$r.log" 2>&1
  grep -E "^latency|^graph|failed" "$OUT/tp2_round$r.log" | cut -c1-160 | sed "s/^/round $r: /"
done
