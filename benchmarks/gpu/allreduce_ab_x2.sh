#!/usr/bin/env bash
# The one-shot all-reduce whose data is its own signal (session 15) against the tree at ROOT_A
# (default .abmain: the version with flags), on 2 GPUs: the all-reduce tests (the two-GPU one
# included), allreduce.py per size for both trees, this tree's TP=2 greedy tokens against TP=1,
# then the 13B AWQ batch-1 step and graph at TP=1 and TP=2 (tp_suite.py) of both trees, alternated
# RUNS times (default 2). carry: [".raycarry", ".abmain"]; about 7-8 minutes.
source benchmarks/gpu/env.sh
A=${ROOT_A:-.abmain}
timeout 200 python -m pytest -q tests/test_one_shot_allreduce.py > "$OUT/tests.log" 2>&1; tail -3 "$OUT/tests.log"
run_tree() {   # run_tree NAME DIR TIMEOUT SCRIPT ARGS...: SCRIPT of the tree at DIR with its package first
  local name=$1 dir=$2 limit=$3; shift 3
  (cd "$dir/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout "$limit" python "$@")
}
for t in tree:. main:$A; do
  run_tree "${t%%:*}" "${t#*:}" 120 allreduce.py --world-size 2 > "$OUT/allreduce_${t%%:*}.log" 2>&1
  grep -E "^ +[0-9]+ " "$OUT/allreduce_${t%%:*}.log" | head -5 | sed "s/^/${t%%:*} /"
done
run_tree tree . 200 tp_suite.py --tp 2 --num-prompts 0 > "$OUT/tp_tree_check.log" 2>&1
grep -E "^correct|^latency|^graph|failed|FAIL|mismatch" "$OUT/tp_tree_check.log" | sed "s/^/tree check: /" | cut -c1-160
for r in $(seq 1 "${RUNS:-2}"); do
  for t in main:$A tree:.; do
    run_tree "${t%%:*}" "${t#*:}" 150 tp_suite.py --tp 2 --num-prompts 0 --skip-correctness \
      > "$OUT/tp_${t%%:*}_run$r.log" 2>&1
    grep -E "^latency|^graph|failed" "$OUT/tp_${t%%:*}_run$r.log" | sed "s/^/${t%%:*} run$r: /" | cut -c1-150
  done
done
