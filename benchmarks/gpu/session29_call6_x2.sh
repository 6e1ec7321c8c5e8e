#!/usr/bin/env bash
# Session 29, call 6: the batch-1 graph of each context bucket (tile-bounded splits) against the
# max_model_len graph at contexts of 100-400 tokens, 13B TP=1 (graph_buckets_probe.py).
source benchmarks/gpu/env.sh
timeout 170 python benchmarks/experiments/graph_buckets_probe.py > "$OUT/probe.log" 2>&1; grep -v Warn "$OUT/probe.log" | tail -8
