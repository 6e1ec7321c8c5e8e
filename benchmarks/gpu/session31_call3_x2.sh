#!/usr/bin/env bash
# Session 31, call 3 (nvidia-h200-x2 with needs_h200; carry .raycarry): does rank 1's slower GEMMs at
# TP=2 (call 1's traces) follow the card or the rank? Both ranks' layer medians (trace_steps.py
# --segments) with the GPUs in order and swapped (CUDA_VISIBLE_DEVICES=1,0), NCCL's init lines naming
# each rank's card; then main's TP=1 and TP=2 step and graph on this machine.
source benchmarks/gpu/env.sh
cd benchmarks
export NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT
for order in 0,1 1,0; do
  CUDA_VISIBLE_DEVICES=$order timeout 110 python decode_profile.py --tp 2 --output-len 48 --trace-dir "$OUT/traces_$order" \
    > "$OUT/profile_$order.log" 2>&1
  echo "== CUDA_VISIBLE_DEVICES=$order"
  grep -E "busId" "$OUT/profile_$order.log" | sed 's/.*NCCL INFO//' | cut -c1-140 | sort -u | head -6
  grep -h "us/token wall" "$OUT/profile_$order.log" | cut -c1-130
  for r in "$OUT"/traces_$order/tp2/rank*.json; do
    python trace_steps.py "$r" --segments _ --skip 2 > "$OUT/seg.tmp" 2>&1; head -5 "$OUT/seg.tmp" | cut -c1-200
    rm -f "$r"
  done
done
unset NCCL_DEBUG NCCL_DEBUG_SUBSYS
timeout 200 python tp_suite.py --sizes 1 2 --skip-correctness --num-prompts 0 > "$OUT/tp_suite.log" 2>&1
grep -E "^latency|^graph|failed" "$OUT/tp_suite.log" | cut -c1-130
