#!/usr/bin/env bash
# Session 32, call 5 (nvidia-h200-x2, needs_h200; carry .raycarry). Call 4 (graph_gap_probe.py, all
# cases) found no ordinal or peer-access effect on a graph's launch gaps. Does a kernel spinning on
# another stream slow them, and is anything running on either GPU while the TP=2 engine is idle?
source benchmarks/gpu/env.sh
for c in 0 1; do python benchmarks/experiments/graph_gap_probe.py --child 0 0 1 $c; done
timeout 200 python benchmarks/experiments/idle_gpu_probe.py 2>&1 | grep -E "GPU|Error|error" | cut -c1-200
