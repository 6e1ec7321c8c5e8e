#!/usr/bin/env bash
# Issue 7, call 1 of 2: Llama-2-70B shape, AWQ, TP=1 (fits one 80 GB card) against TP=4: greedy
# correctness, batch-1 latency and throughput (1000 x 512/128). carry: [".raycarry"]; up to 10 minutes
# (TP=1 throughput alone may take ~4: lower --num-prompts if the call runs out).
source benchmarks/gpu/env.sh
cd benchmarks
timeout 570 python tp_suite.py --model llama-2-70b --tp 4 --num-prompts 1000 > "$OUT/tp4.log" 2>&1
grep -E "^latency|^throughput|^correct|failed" "$OUT/tp4.log"
