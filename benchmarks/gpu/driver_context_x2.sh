#!/usr/bin/env bash
# Issue 6's rank skew, the lead after session 32: the slow rank (0.42 us between its graph's kernels,
# PDL off, against 0.10) was always the one whose GPU was NOT the benchmark driver's cuda:0, where the
# driver then held an idle CUDA context (benchmarks/common.py's now() synchronised; since session 32
# it does so only in a process with GPU work of its own). Does a second, idle context on a GPU make it
# start kernels faster? carry .raycarry; ~5 minutes.
# 1. graph_gap_probe.py: every case, with the two where another process holds an idle context beside;
# 2. PDL-off TP=2 traces and their launch gaps with idle contexts (experiments/idle_contexts.py) on
#    no GPU (no driver context now: both ranks slow?), on GPU 0 only (the old runs), on both;
# 3. the 13B step and graph at TP=2 then TP=1 (TP=2 first: the TP=1 engine gives the driver a
#    context) with no idle context, then with one on both GPUs.
set -u
source benchmarks/gpu/env.sh
python benchmarks/experiments/graph_gap_probe.py
gaps() {   # TAG
  PAGEDAWQ_DISABLE_PDL=1 SIZES=2 CARDS= OUT="$OUT/$1" timeout 110 bash benchmarks/gpu/tp2_layer_traces_x2.sh > "$OUT/$1.log" 2>&1
  python benchmarks/trace_steps.py --gaps "$OUT/$1"/traces/tp2/rank*.json.gz --top 2 | sed "s/^/$1 /" | cut -c1-140
  grep "step period" "$OUT/$1.log" | sed "s/^/$1 /"
}
speed() {   # TAG
  (cd benchmarks && timeout 130 python tp_suite.py --sizes 2 1 --skip-correctness --num-prompts 0 > "$OUT/speed_$1.log" 2>&1)
  grep -E "^latency|^graph|failed" "$OUT/speed_$1.log" | sed "s/^/$1: /" | cut -c1-130
}
beside() {   # DEVICES...: idle contexts on those GPUs until the next call (none: stop them)
  [ -n "${sidecar:-}" ] && { kill $sidecar; wait $sidecar 2>/dev/null; sidecar=; }
  [ $# -eq 0 ] && return
  python benchmarks/experiments/idle_contexts.py --devices "$@" > "$OUT/idle_contexts.log" 2>&1 &
  sidecar=$!
  sleep 15; cat "$OUT/idle_contexts.log"
}
(sleep 45; nvidia-smi --query-compute-apps=pid,process_name,gpu_bus_id --format=csv > "$OUT/apps_none.csv") &
gaps none
wait %1 2>/dev/null; cat "$OUT/apps_none.csv"   # the ranks alone, no driver context
speed none
beside 0; gaps gpu0
beside 0 1; gaps both; speed both
beside
