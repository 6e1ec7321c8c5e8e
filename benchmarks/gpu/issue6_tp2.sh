#!/usr/bin/env bash
# Issue 6 on 2 GPUs: Llama-2-13B shape (AWQ), TP=1 vs TP=2 with the engine's defaults (asynchronous
# scheduling, one-shot all-reduce): correctness, batch-1 latency, throughput 1000 x 512/128, and TP=2
# latency again with NCCL only. carry: [".raycarry"]; about 6 minutes.
source benchmarks/gpu/env.sh
cd benchmarks
timeout 330 python tp_suite.py --tp 2 --num-prompts 1000 --compare-allreduce > "$OUT/tp2.log" 2>&1
grep -E "^latency|^throughput|^correct|failed|^\[" "$OUT/tp2.log"
