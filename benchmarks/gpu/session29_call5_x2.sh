#!/usr/bin/env bash
# Session 29, call 5: tp_suite's TP=2 correctness check of this tree (greedy tokens against TP=1),
# then the batch-1 graph of each context bucket timed alone (graph_buckets_probe.py as it then was:
# each bucket's graph at the context the timed generation left, 159 tokens).
source benchmarks/gpu/env.sh
(cd benchmarks && timeout 300 python tp_suite.py --sizes 2 --num-prompts 0 > "$OUT/tp_check.log" 2>&1)
grep -iE "^correct|^latency|^graph" "$OUT/tp_check.log" | cut -c1-160
timeout 170 python benchmarks/experiments/graph_buckets_probe.py > "$OUT/probe.log" 2>&1; grep -v Warn "$OUT/probe.log" | tail -12
