#!/usr/bin/env bash
# Tensor-parallel greedy rows without the logits all-gather and the token broadcast (session 18,
# pagedawq/kernels/greedy_exchange.py): the two-GPU test of the symmetric-memory kernels, TP=2
# against TP=1 greedy tokens (tp_suite.py's correctness check), then the 13B batch-1 step and
# graph of this tree and .abmain (main) at TP=1 and TP=2, RUNS rounds alternating.
# carry: [".raycarry", ".abmain"]. Two GPUs, ~6 minutes.
source benchmarks/gpu/env.sh
timeout 150 python -m pytest -q -rf --tb=short tests/test_one_shot_allreduce.py -k all_gpus > "$OUT/tests.log" 2>&1
tail -2 "$OUT/tests.log"
(cd benchmarks && timeout 200 python tp_suite.py --sizes 2 --num-prompts 0 > "$OUT/tp_check.log" 2>&1)
grep -E "correctness|latency|graph|greedy|symmetric|failed|rror" "$OUT/tp_check.log" | cut -c1-160
for r in $(seq 1 "${RUNS:-1}"); do
  for t in "tree:." "base:.abmain"; do
    (cd "${t#*:}/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 120 python tp_suite.py \
       --sizes 1 2 --num-prompts 0 --skip-correctness > "$OUT/tp_${t%%:*}_run$r.log" 2>&1)
    grep -E "^latency|^graph|failed" "$OUT/tp_${t%%:*}_run$r.log" | sed "s/^/${t%%:*} run$r: /" | cut -c1-140
  done
done
