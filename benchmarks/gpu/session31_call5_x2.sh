#!/usr/bin/env bash
# Session 31, call 5 (nvidia-h200-x2 with needs_h200; carry .raycarry): main's 13B batch-1 step and
# graph at TP=1 and TP=2 on one machine, two rounds (the ratio of the day).
RUNS=2 SIZES="1 2" bash benchmarks/gpu/tp2_variants_x2.sh
