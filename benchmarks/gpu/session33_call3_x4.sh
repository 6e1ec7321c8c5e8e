#!/usr/bin/env bash
# Session 33, call 3 (nvidia-h100-x4, carry .raycarry and .ab4517 = git archive 4517d9b): call 2 timed
# the 70B AWQ at TP=4 at 7.139 ms/token (graph 7.02), against 5.354 in session 28 (4517d9b). Code or
# machine? The three trees on this one machine, each a TP=4 batch-1 latency run, in turn:
# main; main without the short-context decode graphs (SHORT_DECODE_GRAPH_CONTEXTS empty: only the
# max_model_len graph, as before f3799e3); 4517d9b. Clocks and throttle reasons first. ~6 minutes.
set -u
source benchmarks/gpu/env.sh
nvidia-smi --query-gpu=index,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,clocks_throttle_reasons.active --format=csv
variant_tree /tmp/nobuckets pagedawq/attention/triton_backend.py 's/^SHORT_DECODE_GRAPH_CONTEXTS = (128, 256, 512)/SHORT_DECODE_GRAPH_CONTEXTS = ()/'
tp4() {   # TAG TREE
  (cd "$2/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 150 python tp_suite.py --model llama-2-70b \
     --tp 4 --sizes 4 --skip-correctness --num-prompts 0 > "$OUT/tp4_$1.log" 2>&1)
  grep -E "^latency|^graph|failed|Error" "$OUT/tp4_$1.log" | sed "s/^/$1: /" | cut -c1-150
}
tp4 main .
tp4 nobuckets /tmp/nobuckets
tp4 s28 .ab4517
nvidia-smi --query-gpu=index,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv
