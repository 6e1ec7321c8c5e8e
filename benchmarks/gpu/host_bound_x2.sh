#!/usr/bin/env bash
# Is the 13B batch-1 step bound by the hosts? Each process's host time in the decode loop
# (probe/host_probe.py: rank 0's wait for the previous step's tokens, each rank's launch, the
# driver's wait for rank 0's reply and its own work) while tp_suite.py times the step and the graph:
# TP=1 of this tree once, then TP=2 of this tree and of .abmain (ROOT_A), RUNS rounds (default 2).
# A rank-0 wait near zero means the device waits for the hosts (session 24: ~0.9 ms, device-bound).
# carry: [".raycarry", ".abmain"]; ~1 minute a run.
source benchmarks/gpu/env.sh
A=${ROOT_A:-.abmain}
probe_run() {   # probe_run TAG ROOT SIZE
  local dir=$OUT/probe_$1
  (cd "$2/benchmarks" && HOST_PROBE_DIR=$dir PYTHONPATH="$(cd .. && pwd):$ROOT_DIR/benchmarks/gpu/probe:$PYTHONPATH" \
     timeout 150 python tp_suite.py --sizes "$3" --num-prompts 0 --skip-correctness > "$OUT/tp_$1.log" 2>&1)
  grep -E "^latency|^graph|failed|Error" "$OUT/tp_$1.log" | sed "s/^/$1: /" | cut -c1-140
  python benchmarks/gpu/probe/host_probe.py "$dir" | sed "s/^/$1   /"
}
ROOT_DIR=$PWD
probe_run tree_tp1 . 1
for r in $(seq 1 "${RUNS:-2}"); do
  probe_run tree_tp2_run$r . 2
  probe_run base_tp2_run$r "$A" 2
done
