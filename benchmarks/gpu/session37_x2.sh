#!/usr/bin/env bash
# Session 37: issue 6 on 2×H200 with the start-up warm-up (no kernel compiled in a timed run):
# TP=2 tokens against TP=1, batch-1 latency and 1000 x 512/128 throughput at both sizes, the kernels
# compiled in the TP=1 run and each size's start-up time. Every earlier throughput number was taken
# with kernels compiling inside the run (RESULTS.md "Session 36"). carry: [".raycarry"];
# nvidia-h200-x2 with needs_h200; ~9 minutes on a fresh machine (each engine compiles its variants).
set -u
source benchmarks/gpu/env.sh
cd benchmarks
timeout 570 python tp_suite.py --tp 2 --num-prompts 1000 > "$OUT/tp2.log" 2>&1
tr '\r' '\n' < "$OUT/tp2.log" | grep -E "^kv cache|^latency|^graph|^throughput|^correct|failed|Error" | cut -c1-170
