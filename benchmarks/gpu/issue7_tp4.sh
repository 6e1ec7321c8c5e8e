#!/usr/bin/env bash
# Issue 7: Llama-2-70B shape, AWQ, at TP=1 (fits one 80 GB card), 2 and 4: correctness, batch-1
# latency, throughput, and rank 0's all-reduce share. carry: [".raycarry"]; about 9 minutes.
source benchmarks/gpu/env.sh
cd benchmarks
timeout 330 python tp_suite.py --model llama-2-70b --tp 4 --num-prompts 1000 > "$OUT/tp4.log" 2>&1
grep -E "^latency|^throughput|^correct|failed" "$OUT/tp4.log"
timeout 220 python decode_profile.py --model llama-2-70b --quantization awq --tp 2 4 --no-table > "$OUT/profile.log" 2>&1
grep -E "us/token|rank 0" "$OUT/profile.log"
