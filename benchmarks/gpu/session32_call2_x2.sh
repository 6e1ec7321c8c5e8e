#!/usr/bin/env bash
# Session 32, call 2 (nvidia-h200-x2, needs_h200; carry .raycarry), on call 1's warm machine: call 1's
# PDL-off traces did not come back (too many files), so again, with the median gap between each pair
# of consecutive kernels on each rank (then done inline; trace_steps.py --gaps since). The traces are
# benchmarks/results/session32_h200x2_call2_rank{0,1}.json.gz.
PAGEDAWQ_DISABLE_PDL=1 SIZES=2 CARDS= bash benchmarks/gpu/tp2_layer_traces_x2.sh > $OUT/nopdl.log 2>&1
python benchmarks/trace_steps.py --gaps $OUT/traces/tp2/rank*.json.gz --top 10
mkdir -p $OUT/keep; mv $OUT/traces/tp2/*.gz $OUT/keep/
