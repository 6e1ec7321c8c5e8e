#!/usr/bin/env bash
# A change to the TP=2 decode path, checked and then timed against another tree, in one call:
# GPU tests (TEST_FILES, default the all-reduce and fused-op tests; pytest -k TESTS, default
# "all_gpus or pushed or vocab"), tp_suite's TP=2 correctness check (greedy tokens against TP=1;
# CHECK=0 skips it), then this tree against ROOT_A (default .abmain) on the 13B step and graph at
# TP=1 and TP=2 (ab_tp_x2.sh, RUNS rounds, default 2). Stops at the first failure.
# carry: [".raycarry", ".abmain"]; ~9-10 minutes.
source benchmarks/gpu/env.sh
timeout 240 python -m pytest -q ${TEST_FILES:-tests/test_one_shot_allreduce.py tests/test_fused_ops.py} \
  -k "${TESTS:-all_gpus or pushed or vocab}" -x > "$OUT/tests.log" 2>&1
tail -2 "$OUT/tests.log"; grep -q " passed" "$OUT/tests.log" && ! grep -q "failed" "$OUT/tests.log" || exit 1
[ "${CHECK:-1}" = 0 ] || {
# Judged by its two correctness lines, not its exit status: on a cold machine the run (~170 s of
# correctness, ~65 s of latency) can outlast the limit in Ray's shutdown (session 22, call 1).
(cd benchmarks && timeout 330 python tp_suite.py --sizes 2 --num-prompts 0 > "$OUT/tp_check.log" 2>&1)
grep -iE "^correct" "$OUT/tp_check.log" | cut -c1-160
[ "$(grep -cE '^correctness: .* for ([0-9]+)/\1 prompts' "$OUT/tp_check.log")" -ge 2 ] || { tail -20 "$OUT/tp_check.log"; exit 1; }
}
TESTS= RUNS=${RUNS:-2} SIZES="1 2" bash benchmarks/gpu/ab_tp_x2.sh
