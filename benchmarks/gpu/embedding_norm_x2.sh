#!/usr/bin/env bash
# Session 24: the TP>1 embedding fused with the first layer's all-reduce + RMSNorm
# (`VocabParallelEmbedding.embed_and_rms_norm`). In one short call: the 2-GPU all-reduce test (the
# fused lookup against the masked lookup, all-reduce and norm, bit for bit), this tree against
# .abmain (main) on the 13B TP=2 step and graph (SIZES, RUNS: default "2", 1), then tp_suite's
# TP=2 correctness check (greedy tokens against TP=1) and this tree's TP=2 latency once more.
# carry: [".raycarry", ".abmain"]; ~6 minutes.
source benchmarks/gpu/env.sh
timeout 150 python -m pytest -q tests/test_one_shot_allreduce.py -k all_gpus -x > "$OUT/tests.log" 2>&1
tail -1 "$OUT/tests.log"; grep -q " passed" "$OUT/tests.log" && ! grep -q "failed" "$OUT/tests.log" || { tail -30 "$OUT/tests.log"; exit 1; }
TESTS= RUNS=${RUNS:-1} SIZES=${SIZES:-2} ROOTS="tree:. main:.abmain" bash benchmarks/gpu/ab_tp_x2.sh
(cd benchmarks && timeout 200 python tp_suite.py --sizes 2 --num-prompts 0 > "$OUT/tp_check.log" 2>&1)
grep -E "^correct|^latency|^graph" "$OUT/tp_check.log" | cut -c1-170
