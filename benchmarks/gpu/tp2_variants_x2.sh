#!/usr/bin/env bash
# The 13B AWQ batch-1 decode step and graph at TP=2 (tp_suite.py --sizes SIZES, default 2) for this
# tree and for variants of it, each run RUNS times (default 1) in turn; with TRACE=1 first a Chrome
# trace of this tree at TP=2, summarised by trace_steps.py (exposed time a kernel). One variant a
# line of VARIANTS: "name|file|sed expression" (a copy of the tree with the file edited, or with
# "cp:PATH" / "patch:PATH" for the expression: env.sh's variant_tree) or "name|-|VAR=value ..."
# (this tree under those environment variables).
# TP_TIMEOUT: seconds a run (default 120). carry: [".raycarry"].
source benchmarks/gpu/env.sh
if [ -n "$TRACE" ]; then
  (cd benchmarks && timeout 150 python decode_profile.py --tp 2 --output-len 64 --trace-dir "$OUT/traces" \
     > "$OUT/profile.log" 2>&1 && python trace_steps.py "$OUT"/traces/tp2/rank0.json --top 10 > "$OUT/trace_steps.log" 2>&1)
  cat "$OUT/trace_steps.log"; gzip "$OUT"/traces/tp2/rank0.json; rm -f "$OUT"/traces/tp2/rank1.json
fi
roots=("tree:.")
declare -A envs
while IFS='|' read -r name file expr; do
  [ -z "$name" ] && continue
  if [ "$file" = "-" ]; then envs[$name]=$expr; roots+=("$name:."); continue; fi
  variant_tree "/tmp/variant_$name" "$file" "$expr" && roots+=("$name:/tmp/variant_$name")
done <<< "$VARIANTS"
for r in $(seq 1 "${RUNS:-1}"); do
  for entry in "${roots[@]}"; do
    name=${entry%%:*}
    (cd "${entry#*:}/benchmarks" && env ${envs[$name]} PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout ${TP_TIMEOUT:-120} \
       python tp_suite.py --sizes ${SIZES:-2} --skip-correctness --num-prompts 0 > "$OUT/tp2_${name}_run$r.log" 2>&1)
    grep -E "^latency|^graph|failed" "$OUT/tp2_${name}_run$r.log" | sed "s/^/$name run$r: /" | cut -c1-130
  done
done
