#!/usr/bin/env bash
# A/B of the working tree against main on one machine, one call: optional GPU tests (TESTS="pytest
# args"), then 7B e2e decode (fp16 and AWQ, batch 1/16/64) for this tree, main, this tree, ...
# (ROUNDS, default 2 of this tree and 1 of main between them).
# carry: [".abmain"], built with: rm -rf .abmain && mkdir .abmain && git archive main | tar -x -C .abmain
# (.abmain/ listed in .git/info/exclude).
source benchmarks/gpu/env.sh
if [ -n "$TESTS" ]; then
  timeout 200 python -m pytest -q -rf --tb=short $TESTS > "$OUT/tests.log" 2>&1
  grep -E "passed|failed|^E  " "$OUT/tests.log" | head -20
fi
e2e_decode tree1 .
for r in $(seq 2 "${ROUNDS:-2}"); do e2e_decode "main$((r - 1))" .abmain; e2e_decode "tree$r" .; done
