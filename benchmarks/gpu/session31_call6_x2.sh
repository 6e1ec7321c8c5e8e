#!/usr/bin/env bash
# Session 31, call 6 (nvidia-h200-x2 with needs_h200; carry .raycarry): is rank 1's slower layer (calls 1
# and 3) a cost of rank 1, or where the ranks settle (the rank that waits in an all-reduce has its next
# kernels further ahead)? Both ranks' layer medians (trace_steps.py --segments) of this tree with one
# rank held back ~20 us (torch.cuda._sleep(40000) before each decode graph replay): rank 0, then rank 1.
# If holding rank 0 back moves the slower decode/o/down to rank 0, it is where they settle. HOLD: the
# ranks to hold back in turn (default "0 1"; call 7 reran HOLD=0, whose output call 6 cut off).
source benchmarks/gpu/env.sh
for r in ${HOLD:-0 1}; do
  variant_tree /tmp/hold$r pagedawq/engine/cuda_graphs.py \
    '0,/^        graph.replay()$/s//        if torch.distributed.is_initialized() and torch.distributed.get_rank() == '$r': torch.cuda._sleep(40000)\n        graph.replay()/' || exit 1
  (cd /tmp/hold$r/benchmarks && PYTHONPATH=/tmp/hold$r:$PYTHONPATH timeout 110 python decode_profile.py --tp 2 --output-len 48 \
     --trace-dir "$OUT/traces_hold$r" > "$OUT/profile_hold$r.log" 2>&1)
  echo "== rank $r held back"; grep -h "us/token wall" "$OUT/profile_hold$r.log" | cut -c1-130
  for t in "$OUT"/traces_hold$r/tp2/rank*.json; do
    python benchmarks/trace_steps.py "$t" --segments _ --skip 2 > "$OUT/segments.tmp" 2>&1
    head -5 "$OUT/segments.tmp" | cut -c1-200; rm -f "$t"
  done
done
rm -f "$OUT/segments.tmp"
