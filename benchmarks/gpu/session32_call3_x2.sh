#!/usr/bin/env bash
# Session 32, call 3 (nvidia-h200-x2, needs_h200; carry .raycarry): call 1 found rank 1's 13B TP=2
# graph (PDL off) ~0.3 us slower to start each kernel than rank 0's. Rank 0's host thread spins in an
# event wait for the step's tokens while rank 1's blocks in recv: does an idle host slow its GPU?
# 1. the machine: NUMA, GPU topology, CPU idle states;
# 2. PDL-off TP=2 traces, the launch gaps on both ranks (trace_steps.py --gaps): main; main with 8
#    busy CPU processes beside it; the workers spinning in a non-blocking recv (patches/worker_spin_recv.patch);
# 3. the default TP=2 step and graph of the same three.
set -u
source benchmarks/gpu/env.sh
lscpu | grep -iE "numa|socket|model name|^cpu\(s\)"; nvidia-smi topo -m | head -5
cat /sys/devices/system/cpu/cpuidle/current_driver 2>&1; ls /sys/devices/system/cpu/cpu0/cpuidle 2>&1 | head
burn() { for i in $(seq 8); do python -c 'while True: pass' & done; }
gaps() {   # TAG TREE [env]: PDL-off traces of TREE at TP=2 and their launch gaps
  (cd "$2" && env PAGEDAWQ_DISABLE_PDL=1 SIZES=2 CARDS= OUT="$OUT/$1" bash benchmarks/gpu/tp2_layer_traces_x2.sh > "$OUT/$1.log" 2>&1)
  python benchmarks/trace_steps.py --gaps "$OUT/$1"/traces/tp2/rank*.json.gz --top 4 | sed "s/^/$1 /" | cut -c1-140
  grep "step period" "$OUT/$1.log" | sed "s/^/$1 /"
}
variant_tree /tmp/variant_spin pagedawq/engine/executor/step_channel.py patch:benchmarks/gpu/patches/worker_spin_recv.patch
gaps main .
burn; gaps burn .; kill $(jobs -p) 2>/dev/null; wait 2>/dev/null
gaps spin /tmp/variant_spin
VARIANTS="spin|pagedawq/engine/executor/step_channel.py|patch:benchmarks/gpu/patches/worker_spin_recv.patch" \
  bash benchmarks/gpu/tp2_variants_x2.sh
burn; (cd benchmarks && timeout 120 python tp_suite.py --sizes 2 --skip-correctness --num-prompts 0 > "$OUT/tp2_burn.log" 2>&1)
kill $(jobs -p) 2>/dev/null; wait 2>/dev/null
grep -E "^latency|^graph|failed" "$OUT/tp2_burn.log" | sed "s/^/burn: /" | cut -c1-130
