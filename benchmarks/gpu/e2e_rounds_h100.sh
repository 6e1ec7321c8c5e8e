#!/usr/bin/env bash
# Decode A/B of this tree against another (.abmain: main, or any commit), alternating ROUNDS times
# (default 3 each): 7B fp16 and AWQ at batch 1/16/64 (e2e_suite.py), then each tree's batch-1 decode
# graph timed alone with PDL on (decode_profile.py --breakdown): the steadier of the two measures.
# carry: [".abmain"], built with: rm -rf .abmain && mkdir .abmain && git archive REV | tar -x -C .abmain
source benchmarks/gpu/env.sh
run() {  # $1: tag, $2: repository root
  (cd "$2/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 125 python e2e_suite.py --sections decode > "$OUT/e2e_$1.log" 2>&1)
  grep -E "awq batch|fp16 batch 1 |failed" "$OUT/e2e_$1.log" | sed "s/^/$1 /"
}
for r in $(seq 1 "${ROUNDS:-3}"); do run "tree$r" .; run "main$r" .abmain; done
for t in tree main; do
  root=.; [ $t = main ] && root=.abmain
  (cd $root/benchmarks && PYTHONPATH=$(cd .. && pwd) timeout 120 python decode_profile.py --model llama-2-7b \
     --output-len 32 --breakdown --no-table > $OUT/breakdown_$t.log 2>&1)
  grep -E "graph alone" $OUT/breakdown_$t.log | sed "s/^/$t /"
done
