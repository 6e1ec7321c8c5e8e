#!/usr/bin/env bash
# Session 32, call 6 (nvidia-h200-x2, needs_h200; carry .raycarry). Nothing runs on either GPU when
# the engine idles, and a kernel spinning beside a graph does not slow its launches (call 5). Is
# rank 1's 0.3 us a kernel the profiler's? The driver starts rank 0's profiler first.
# 1. the TP=2 step and graph unprofiled, PDL on and off (against the PDL-off traces' 2240 us period);
# 2. PDL-off traces with rank 0's profiler started 2 s after rank 1's: whose launches are slow now?
set -u
source benchmarks/gpu/env.sh
VARIANTS="nopdl|-|PAGEDAWQ_DISABLE_PDL=1" bash benchmarks/gpu/tp2_variants_x2.sh
variant_tree /tmp/variant_late0 pagedawq/engine/worker.py \
  's/^        self.profiler = torch.profiler.profile(activities=activities)/        time.sleep(2.0 if self.rank == 0 else 0.0)\n&/'
grep -n "time.sleep(2.0" /tmp/variant_late0/pagedawq/engine/worker.py
(cd /tmp/variant_late0 && PAGEDAWQ_DISABLE_PDL=1 SIZES=2 CARDS= OUT="$OUT/late0" bash benchmarks/gpu/tp2_layer_traces_x2.sh > "$OUT/late0.log" 2>&1)
python benchmarks/trace_steps.py --gaps "$OUT"/late0/traces/tp2/rank*.json.gz --top 3 | cut -c1-140
grep "step period" "$OUT/late0.log"
