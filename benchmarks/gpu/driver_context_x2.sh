#!/usr/bin/env bash
# Issue 6's rank skew, the lead after session 32: the slow rank (0.42 us between its graph's kernels,
# PDL off, against 0.10) was always the one whose GPU was NOT the benchmark driver's cuda:0, where the
# driver then held an idle CUDA context (benchmarks/common.py's now() synchronised; since session 32
# it does so only in a process with GPU work of its own). Does a second, idle context on a GPU make it
# start kernels faster? carry .raycarry; ~8 minutes.
# 1. graph_gap_probe.py on cuda:0 and cuda:1, alone and with another process's idle context beside;
# 2. PDL-off TP=2 traces and their launch gaps, then the 13B step at TP=2 and TP=1 (TP=2 first: the
#    TP=1 engine gives the driver a context), each
#    - as is (no driver context now: both ranks slow?),
#    - with idle contexts on both GPUs from another process (experiments/idle_contexts.py),
#    - with each rank holding a second idle context itself (patches/rank_second_context.patch).
set -u
source benchmarks/gpu/env.sh
timeout 120 python benchmarks/experiments/graph_gap_probe.py --cases 0 1 8 9
gaps() {   # TAG TREE
  (cd "$2" && PAGEDAWQ_DISABLE_PDL=1 SIZES=2 CARDS= OUT="$OUT/$1" timeout 110 bash benchmarks/gpu/tp2_layer_traces_x2.sh > "$OUT/$1.log" 2>&1)
  python benchmarks/trace_steps.py --gaps "$OUT/$1"/traces/tp2/rank*.json.gz --top 2 | sed "s/^/$1 /" | cut -c1-140
  grep "step period" "$OUT/$1.log" | sed "s/^/$1 /"
}
speed() {   # TAG TREE
  (cd "$2/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 130 python tp_suite.py --sizes 2 1 \
     --skip-correctness --num-prompts 0 > "$OUT/speed_$1.log" 2>&1)
  grep -E "^latency|^graph|failed|Error" "$OUT/speed_$1.log" | sed "s/^/$1: /" | cut -c1-130
}
(sleep 45; nvidia-smi --query-compute-apps=pid,process_name,gpu_bus_id --format=csv > "$OUT/apps_none.csv") &
apps=$!
gaps none .
wait $apps; cat "$OUT/apps_none.csv"   # the ranks alone, no driver context
speed none .
python benchmarks/experiments/idle_contexts.py > "$OUT/idle_contexts.log" 2>&1 &
sidecar=$!
sleep 15; cat "$OUT/idle_contexts.log"
gaps both .
speed both .
kill $sidecar; wait $sidecar 2>/dev/null
variant_tree /tmp/variant_ctx pagedawq/engine/worker.py patch:benchmarks/gpu/patches/rank_second_context.patch
gaps own_ctx /tmp/variant_ctx
speed own_ctx /tmp/variant_ctx
