#!/usr/bin/env bash
# Issue 6: TP=2 vs TP=1 on the Llama-2-13B shape (AWQ), with the engine's default scheduling and with
# asynchronous scheduling on every size. carry: [".raycarry"]; about 8 minutes.
source benchmarks/gpu/env.sh
cd benchmarks
timeout 280 python tp_suite.py --tp 2 --num-prompts 1000 > "$OUT/tp2.log" 2>&1
grep -E "^latency|^throughput|^correct|failed" "$OUT/tp2.log"
timeout 200 python tp_suite.py --tp 2 --num-prompts 0 --async-scheduling > "$OUT/tp2_async.log" 2>&1
grep -E "^latency|^correct|failed" "$OUT/tp2_async.log"
