#!/usr/bin/env bash
# Session 30, call 5 (nvidia-h200-x2 with needs_h200; carry .raycarry): Chrome traces of main's 13B
# AWQ batch-1 decode at TP=2 and TP=1 on one machine, each summarised by trace_steps.py (exposed time
# a kernel, and one step kernel by kernel: --sequence 40), for the per-layer comparison of the GEMMs
# at both sizes (notes/tensor_parallel.md session 30, "Next").
source benchmarks/gpu/env.sh
cd benchmarks
for tp in 2 1; do
  timeout 110 python decode_profile.py --tp $tp --output-len 48 --trace-dir "$OUT/traces" > "$OUT/profile_tp$tp.log" 2>&1
  python trace_steps.py "$OUT/traces/tp$tp/rank0.json" --top 8 > "$OUT/trace_steps_tp$tp.log" 2>&1
  python trace_steps.py "$OUT/traces/tp$tp/rank0.json" --sequence 40 > "$OUT/trace_sequence_tp$tp.log" 2>&1
  head -14 "$OUT/trace_steps_tp$tp.log"; gzip -f "$OUT/traces/tp$tp/rank0.json"; rm -f "$OUT/traces/tp$tp/rank1.json"
done
