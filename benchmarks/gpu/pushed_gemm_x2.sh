#!/usr/bin/env bash
# The row-parallel GEMMs pushing their outputs into the fused all-reduce's slots (session 21), on
# 2 GPUs: the 2-GPU all-reduce test (pushed GEMM + norm against the unpushed pair, bit for bit,
# eager and in graph replays), then tp_suite's TP=2 correctness check (greedy tokens against TP=1),
# then the 13B AWQ batch-1 step and graph at TP=1 and TP=2 with and without the pushes
# (PAGEDAWQ_DISABLE_PUSHED_GEMMS=1), RUNS rounds (default 1). Stops at the first failure.
# carry: [".raycarry"]; ~8 minutes.
source benchmarks/gpu/env.sh
timeout 200 python -m pytest -q tests/test_one_shot_allreduce.py -k "all_gpus or pushed" -x > "$OUT/test_allreduce.log" 2>&1
tail -2 "$OUT/test_allreduce.log"; grep -q " passed" "$OUT/test_allreduce.log" && ! grep -q "failed" "$OUT/test_allreduce.log" || exit 1
(cd benchmarks && timeout 240 python tp_suite.py --sizes 2 --num-prompts 0 > "$OUT/tp_check.log" 2>&1) || { tail -20 "$OUT/tp_check.log"; exit 1; }
grep -iE "^correct|greedy|^latency|^graph" "$OUT/tp_check.log" | cut -c1-160
SIZES="1 2" RUNS=${RUNS:-1} TP_TIMEOUT=110 VARIANTS='nopush|-|PAGEDAWQ_DISABLE_PUSHED_GEMMS=1' bash benchmarks/gpu/tp2_variants_x2.sh
