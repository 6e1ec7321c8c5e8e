#!/usr/bin/env bash
# Issue 7, call 2 of 2: per-token kernel time and rank 0's all-reduce share at TP=2 and TP=4 on the
# Llama-2-70B shape (AWQ). carry: [".raycarry"]; about 5 minutes.
source benchmarks/gpu/env.sh
cd benchmarks
timeout 400 python decode_profile.py --model llama-2-70b --quantization awq --tp 2 4 --no-table > "$OUT/profile.log" 2>&1
grep -E "us/token|rank 0" "$OUT/profile.log"
