#!/usr/bin/env bash
# TP=2 batch-1 step of this tree against main (ROOT_A, default .abmain), alternating RUNS times
# (default 2), then a profiled TP=2 generation of this tree (Chrome traces to $OUT/trace.tgz).
# carry: [".raycarry", ".abmain"]; about 4-5 minutes.
source benchmarks/gpu/env.sh
A=${ROOT_A:-.abmain}
suite() {  # suite TAG ROOT [ARGS...]
  local tag=$1 root=$2; shift 2
  (cd "$root/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 90 python tp_suite.py --sizes 2 \
     --num-prompts 0 --skip-correctness "$@" > "$OUT/tp_$tag.log" 2>&1)
  grep -E "^latency|^graph|failed" "$OUT/tp_$tag.log" | sed "s/^/$tag: /" | cut -c1-170
}
for r in $(seq 1 "${RUNS:-2}"); do suite "tree$r" .; suite "main$r" "$A"; done
suite tree_mp . --distributed-executor-backend mp
(cd benchmarks && timeout 120 python decode_profile.py --tp 2 --output-len 64 --no-table --trace-dir /tmp/trace \
   > "$OUT/profile.log" 2>&1); grep -E "us/token|rank 0" "$OUT/profile.log" | cut -c1-200
tar -czf "$OUT/trace.tgz" -C /tmp trace && ls -la "$OUT"
