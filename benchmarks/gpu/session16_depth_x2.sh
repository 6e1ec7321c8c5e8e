#!/usr/bin/env bash
# Deeper weight pipelines for the one-warpgroup kernel's small token tiles (BLOCK_T <= 32): 3 and 4
# steps of 4 K tiles against the rule's 2, as sed variants of awq_configs.one_warpgroup_config. ncu
# (session 16) had the 13B/TP=2 qkv at M = 1 waiting mostly on its stages' data (DRAM at 50%).
# 13B AWQ batch-1 step and graph at TP=1 and TP=2 (tp_suite.py), RUNS rounds (default 2) in turn.
# carry: [".raycarry"]; about 7 minutes.
source benchmarks/gpu/env.sh
roots=("tree:.")
for st in 3 4; do
  dir=/tmp/variant_s$st
  rm -rf "$dir" && mkdir -p "$dir" && git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C "$dir"
  sed -i "s/stages, k_tiles = (2, 4) if block_t <= 32 else/stages, k_tiles = ($st, 4) if block_t <= 32 else/" \
    "$dir/pagedawq/kernels/awq_configs.py"
  grep -c "($st, 4) if block_t <= 32" "$dir/pagedawq/kernels/awq_configs.py"
  roots+=("s$st:$dir")
done
for r in $(seq 1 "${RUNS:-2}"); do
  for entry in "${roots[@]}"; do
    name=${entry%%:*}
    (cd "${entry#*:}/benchmarks" && PYTHONPATH="$(cd .. && pwd):$PYTHONPATH" timeout 110 python tp_suite.py --sizes 1 2 \
       --skip-correctness --num-prompts 0 > "$OUT/tp_${name}_run$r.log" 2>&1)
    grep -E "^latency|^graph|failed" "$OUT/tp_${name}_run$r.log" | sed "s/^/$name run$r: /" | cut -c1-130
  done
done
