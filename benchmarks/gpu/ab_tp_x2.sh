#!/usr/bin/env bash
# This tree against another (ROOT_A, default .abmain: `git archive main | tar -x -C .abmain`) on
# the 13B AWQ batch-1 decode step and graph at TP=1 and TP=2 (tp_suite.py --sizes SIZES, default
# "1 2"), RUNS rounds (default 2), the trees alternating. With TESTS set (pytest -k expression), this
# tree's wgmma_t GPU tests run first. ROOTS ("name:dir ...", default "tree:. base:ROOT_A") names
# other trees to time in turn, e.g. one per patch. carry: [".raycarry", ".abmain"] (and each ROOTS
# dir); ~1 minute a tree and size.
source benchmarks/gpu/env.sh
A=${ROOT_A:-.abmain}
if [ -n "$TESTS" ]; then
  timeout 200 python -m pytest -q -m gpu tests/test_awq_wgmma_t.py -x -k "$TESTS" > "$OUT/tests.log" 2>&1
  tail -2 "$OUT/tests.log"
fi
for r in $(seq 1 "${RUNS:-2}"); do
  for t in ${ROOTS:-tree:. base:$A}; do
    (cd "${t#*:}/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 120 python tp_suite.py \
       --sizes ${SIZES:-1 2} --num-prompts 0 --skip-correctness > "$OUT/tp_${t%%:*}_run$r.log" 2>&1)
    grep -E "^latency|^graph|failed" "$OUT/tp_${t%%:*}_run$r.log" | sed "s/^/${t%%:*} run$r: /" | cut -c1-140
  done
done
