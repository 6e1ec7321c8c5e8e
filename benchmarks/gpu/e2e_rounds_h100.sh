#!/usr/bin/env bash
# Decode A/B of this tree against another (.abmain: main, or any commit), alternating ROUNDS times
# (default 3 each): 7B fp16 and AWQ at batch 1/16/64 (e2e_suite.py), then each tree's batch-1 decode
# graph timed alone with PDL on (decode_profile.py --breakdown): the steadier of the two measures.
# carry: [".abmain"], built with: rm -rf .abmain && mkdir .abmain && git archive REV | tar -x -C .abmain
source benchmarks/gpu/env.sh
for r in $(seq 1 "${ROUNDS:-3}"); do
  e2e_decode "tree$r" . "awq batch|fp16 batch 1 |failed"
  e2e_decode "main$r" .abmain "awq batch|fp16 batch 1 |failed"
done
graph_alone tree .
graph_alone main .abmain
