#!/usr/bin/env bash
# Session 32, call 8 (nvidia-h200-x2, needs_h200; carry .raycarry, .abmain = main). The slow launches
# follow the ordinal (call 7: rank 0 on cuda:1 is the slow one). The candidate: each rank's GPU is its
# process's cuda:0 (patches/own_gpu_first.patch, applied to 5541b54; lost, not landed). This tree: TP=2 tokens against TP=1, and the
# 13B step and graph at TP=1 and TP=2; main at TP=2; then this tree's PDL-off launch gaps.
set -u
source benchmarks/gpu/env.sh
(cd benchmarks && timeout 200 python tp_suite.py --sizes 2 1 --num-prompts 0 > "$OUT/tree.log" 2>&1)
grep -E "^latency|^graph|same|fp32|AWQ|failed|Error" "$OUT/tree.log" | cut -c1-160
(cd .abmain/benchmarks && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 100 python tp_suite.py --sizes 2 --skip-correctness \
   --num-prompts 0 > "$OUT/main.log" 2>&1)
grep -E "^latency|^graph|failed" "$OUT/main.log" | sed "s/^/main: /" | cut -c1-130
PAGEDAWQ_DISABLE_PDL=1 SIZES=2 CARDS= OUT="$OUT/gaps" timeout 100 bash benchmarks/gpu/tp2_layer_traces_x2.sh > "$OUT/gaps.log" 2>&1
python benchmarks/trace_steps.py --gaps "$OUT"/gaps/traces/tp2/rank*.json.gz --top 2 | cut -c1-140
grep "step period" "$OUT/gaps.log"
