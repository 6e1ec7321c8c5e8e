#!/usr/bin/env bash
# Session 39: issue 6's batch-1 latency at both TP sizes after prompts of 32 (vLLM's
# benchmark_latency default, the length every earlier record used), 512 (the throughput run's) and
# 2048 tokens, then 32 again (drift within the run), each with its decode graph replayed alone. The
# ratio's dependence on the context: attention's work halves at TP=2, its fixed cost does not.
# carry: [".raycarry"]; nvidia-h200-x2 with needs_h200; ~5 minutes on a fresh machine.
set -u
source benchmarks/gpu/env.sh
cd benchmarks
for size in 1 2; do
  timeout 280 python tp_suite.py --sizes $size --skip-correctness --num-prompts 0 \
    --latency-input-lens ${LENS:-32 512 2048 32} > "$OUT/tp$size.log" 2>&1
  tr '\r' '\n' < "$OUT/tp$size.log" | grep -E "^kv cache|^latency|^graph|failed|Error" | cut -c1-170
done
